# -*- test-case-name: tests.test_app_channel -*-
"""The pipes between the supervisor and its workers: messages as length-prefixed frames.

A message is a tuple whose first item names it (``("ready", pid)``,
``("stats", ...)``, ``("log", ...)``), holding only what ``marshal``
writes: str, int, float, bool, None, and tuples, lists and dicts of
them. ``marshal`` because a log line goes through here for every
message a worker logs: a few microseconds each way, where JSON took
three times as long. The pipe is private to the two processes; the
values a peer sent travel inside strings.

A worker writes its frames with blocking writes under a lock, from the
reactor or a storage thread alike (L{ChannelWriter}), so that what it
sends last, before it exits, is out before it exits. The supervisor
reads them with its process protocol; the worker reads the
supervisor's with L{ChannelReader}.
"""

from __future__ import annotations

import marshal
import os
import struct
import threading
from threading import get_ident

from twisted.internet import abstract, fdesc

# A worker's descriptors: the supervisor's messages in, the worker's out,
# then the listening sockets, the first at FIRST_SOCKET.
CONTROL_IN = 0
MESSAGES_OUT = 3
FIRST_SOCKET = 4

# The counts a worker reports, in this order (radx.scp.factory.Statistics'
# fields), before the associations and the connections it has open now.
REPORTED = ("echo_requests", "store_requests", "stores_succeeded", "store_failures", "associations", "bytes_received", "catalogue_failures")

_LENGTH = struct.Struct(">I")
# No message comes near this: a longer length is a broken stream.
MAX_FRAME = 16 << 20


class ChannelError(Exception):
    """The bytes read are not frames: the process at the other end is not speaking this protocol."""


def encode(message: tuple) -> bytes:
    payload = marshal.dumps(message)
    return _LENGTH.pack(len(payload)) + payload


class FrameDecoder:
    """Bytes in, in any pieces; whole messages out."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, data: bytes) -> list:
        if self._rest:
            data = self._rest + data
        messages = []
        start = 0
        size = len(data)
        while size - start >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(data, start)
            if length > MAX_FRAME:
                raise ChannelError(f"a frame of {length} bytes, over {MAX_FRAME}")
            end = start + _LENGTH.size + length
            if end > size:
                break
            try:
                message = marshal.loads(data[start + _LENGTH.size : end])
            except (ValueError, EOFError, TypeError) as error:
                raise ChannelError(f"a frame that is not a message: {error}") from None
            if type(message) is not tuple or not message or type(message[0]) is not str:
                raise ChannelError("a frame that is not a message")
            messages.append(message)
            start = end
        self._rest = data[start:]
        return messages


class ChannelWriter:
    """
    Frames to a pipe, from any thread, in the order they are given.

    L{send} writes at once (with whatever L{send_soon} kept). L{send_soon},
    for log events: on the reactor thread, frames are kept and written
    together at most C{delay} seconds later, or once C{most} bytes wait
    (one write(2) for many lines); on another thread, at once.
    L{send_line} keeps a log line the same way: the lines kept together go
    as one ``("lines", text)`` message. A pipe whose reader has gone makes
    the writer drop everything from then on.
    """

    def __init__(self, fd: int, reactor=None, delay: float = 0.05, most: int = 32 << 10) -> None:
        self.fd = fd
        self.reactor = reactor
        self.delay = delay
        self.most = most
        self.broken = False
        self._lock = threading.Lock()
        self._kept: list[bytes] = []
        # Lines sent after every frame kept, not yet a frame of their own.
        self._lines: list[str] = []
        self._kept_bytes = 0
        self._flush_call = None
        self._io_thread = threading.get_ident()

    def send(self, message: tuple) -> None:
        frame = encode(message)
        with self._lock:
            self._close_lines()
            self._kept.append(frame)
            self._write_kept()

    def send_soon(self, message: tuple) -> None:
        payload = marshal.dumps(message)
        with self._lock:
            self._close_lines()
            self._kept.append(_LENGTH.pack(len(payload)))
            self._kept.append(payload)
            self._kept_bytes += len(payload)
            self._soon()

    def send_line(self, text: str) -> None:
        with self._lock:
            self._lines.append(text)
            self._kept_bytes += len(text)
            self._soon()

    def _soon(self) -> None:
        # Under the lock: write now, or see that a flush is due.
        if self._kept_bytes >= self.most or get_ident() != self._io_thread or self.reactor is None:
            self._write_kept()
        elif self._flush_call is None:
            self._flush_call = self.reactor.callLater(self.delay, self._flush_later)

    def _close_lines(self) -> None:
        if self._lines:
            self._kept.append(encode(("lines", "".join(self._lines))))
            self._lines = []

    def _flush_later(self) -> None:
        self._flush_call = None
        self.flush()

    def flush(self) -> None:
        with self._lock:
            self._write_kept()

    def _write_kept(self) -> None:
        self._close_lines()
        kept, self._kept, self._kept_bytes = self._kept, [], 0
        if self.broken or not kept:
            return
        view = memoryview(b"".join(kept))
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError:
            # The supervisor is gone: nobody reads what follows.
            self.broken = True


class ChannelReader(abstract.FileDescriptor):
    """The worker's end of the supervisor's pipe: each message to C{on_message}, the end to C{on_closed}."""

    def __init__(self, reactor, fd: int, on_message, on_closed) -> None:
        super().__init__(reactor)
        self.fd = fd
        self.on_message = on_message
        self.on_closed = on_closed
        self.decoder = FrameDecoder()
        fdesc.setNonBlocking(fd)
        self.connected = 1
        self.startReading()

    def fileno(self) -> int:
        return self.fd

    def doRead(self):
        return fdesc.readFromFD(self.fd, self._received)

    def _received(self, data: bytes) -> None:
        for message in self.decoder.feed(data):
            self.on_message(message)

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        try:
            os.close(self.fd)
        except OSError:
            pass
        self.on_closed()
