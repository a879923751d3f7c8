# -*- test-case-name: tests.test_scu_association,tests.test_scu_store -*-
"""The DIMSE operations of one association, requestor side: C-ECHO and C-STORE requests sent, responses matched.

Responses are matched to requests by Message ID. One data set is on the
wire at a time (PS3.8 E.1), streamed from its file by a push producer
(``DataSetSender``); a C-STORE made ready while the granted window is
full starts the moment a response makes room.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from radx.dimse.assembly import CommandReceived, DIMSEProtocolError
from radx.dimse.commands import CEchoRQ, CEchoRSP, CStoreRQ, CStoreRSP, DIMSEDecodeError
from radx.dimse.fragmenting import encode_command, encode_fragments, fragment_size
from radx.ul.fsm import State

# Twisted's TCP transport hands at most 128 KiB to each send(2).
_STRETCH = 128 * 1024


def _read_fully(read, size: int) -> bytes:
    """``size`` bytes from an unbuffered file's ``read``, fewer only at its end."""
    data = read(size)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = read(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _stretch(peer_maximum_length: int) -> int:
    """Data set bytes read and written at a time: as many whole fragments as one send of the transport carries."""
    size = fragment_size(peer_maximum_length)
    return max(1, _STRETCH // (size + 12)) * size


class PreparedStore:
    """
    A C-STORE ready to go: its command's PDUs encoded, its file open at
    the data set, the data set's first stretch read.
    """

    __slots__ = ("message_id", "context_id", "command", "fp", "length", "first", "sent", "response")

    def __init__(self, message_id: int, context_id: int, command: bytes, fp, length: int, first: bytes | None) -> None:
        self.message_id = message_id
        self.context_id = context_id
        self.command = command
        self.fp = fp
        self.length = length
        self.first = first
        # Fires when the data set is written; with the CStoreRSP.
        self.sent = defer.Deferred()
        self.response = defer.Deferred()


@implementer(IPushProducer)
class DataSetSender:
    """Streams a data set from a file as P-DATA-TF PDUs, as fast as the transport takes them.

    Registered as the transport's streaming producer: the transport pauses
    it when its buffer is full and resumes it when drained, so at most about
    one buffer of the data set is in memory, whatever its size.
    """

    def __init__(self, protocol, store: PreparedStore, done: defer.Deferred) -> None:
        self.message_id = store.message_id  # of the C-STORE-RQ whose data set this is
        self._protocol = protocol
        self._fp = store.fp
        self._left = store.length
        self._context_id = store.context_id
        self._size = fragment_size(protocol.peer_maximum_length)
        self._stretch = _stretch(protocol.peer_maximum_length)
        # The first stretch, read ahead (None: read it when sending).
        self._first = store.first
        # PS3.5 A.5: an odd deflated data set gets one trailing NULL byte; every
        # other data set is even (PS3.5 7.1.1), and an odd one is padded alike.
        self._pad = store.length & 1
        self._done = done
        self._paused = False
        self._stopped = False

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        protocol = self._protocol
        protocol.progressed()
        read = self._fp.read
        while not self._paused and not self._stopped:
            size = min(self._stretch, self._left)
            if self._first is not None:
                data, self._first = self._first, None
            else:
                data = _read_fully(read, size)
            if len(data) != size:
                self._finish(OSError(f"the file ended {self._left - len(data)} bytes early"))
                return
            self._left -= size
            last = self._left == 0
            if last and self._pad:
                data += b"\x00"
            # PS3.8 E.2: data set fragments; the last one of the data set says so.
            if not protocol.send_pdata(encode_fragments(self._context_id, data, self._size, command=False, ends_message=last)):
                self._finish(None)
                return
            if protocol.on_data_sent is not None:
                protocol.on_data_sent(size)
            if last:
                self._finish(None)
                return

    def stopProducing(self) -> None:
        self._finish(None)

    def _finish(self, error) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._fp.close()
        self._protocol.operations.data_set_sent(self, error)
        done, self._done = self._done, None
        if error is not None:
            done.errback(error)
        else:
            done.callback(None)


class Operations:
    """The requests of one association in flight: sent, being sent, made ready, answered."""

    def __init__(self, protocol) -> None:
        self.protocol = protocol
        self._message_id = 0
        # Message ID -> the Deferred its response fires, in the order sent.
        self.responses: dict[int, defer.Deferred] = {}
        self.sender: DataSetSender | None = None
        self._early_response = None
        # A C-STORE made ready while the window was full (queue_store): it
        # goes out as soon as a response makes room, before that response
        # is delivered, so that the peer waits for nothing radx does.
        self.queued: PreparedStore | None = None

    def next_message_id(self) -> int:
        # PS3.7 9.1.1.1.2 / E.1: Message ID is an unsigned 16-bit value.
        self._message_id = self._message_id % 0xFFFF + 1
        return self._message_id

    # Sending -------------------------------------------------------------------

    def echo(self, context_id: int) -> defer.Deferred:
        protocol = self.protocol
        message_id = self.next_message_id()
        response = self.expect(message_id)
        protocol.send_pdata(encode_command(context_id, CEchoRQ(message_id=message_id).encode(), protocol.peer_maximum_length))
        return response

    def submit(self, source, context_id: int, wait: bool) -> tuple[defer.Deferred, defer.Deferred]:
        protocol = self.protocol
        request = CStoreRQ(
            message_id=self.next_message_id(),
            affected_sop_class_uid=source.sop_class_uid,
            affected_sop_instance_uid=source.sop_instance_uid,
        )
        command = encode_command(context_id, request.encode(), protocol.peer_maximum_length)
        try:
            # Unbuffered: each stretch in one read(2), straight into its bytes.
            fp = open(source.path, "rb", buffering=0)
        except OSError as error:
            return defer.succeed(None), defer.fail(error)
        first = None
        try:
            fp.seek(source.data_set_offset)
            if wait:
                first = _read_fully(fp.read, min(_stretch(protocol.peer_maximum_length), source.data_set_length))
        except OSError as error:
            fp.close()
            return defer.succeed(None), defer.fail(error)
        store = PreparedStore(request.message_id, context_id, command, fp, source.data_set_length, first)
        if wait and not self.has_room():
            self.queued = store
        else:
            self._start(store)
        return store.sent, store.response

    def has_room(self) -> bool:
        """Whether a C-STORE may start now: no data set being sent, the window not full."""
        return self.sender is None and len(self.responses) < self.protocol.operations_window

    def _start(self, store: PreparedStore) -> None:
        """The C-STORE-RQ, then its data set, streamed."""
        protocol = self.protocol
        self.expect(store.message_id, store.response)
        protocol.send_pdata(store.command)
        done = defer.Deferred()

        def written(result):
            store.sent.callback(None)
            return result

        # The caller learns the data set is out either way; a file that
        # could not be read aborts the association (its response fails).
        done.addBoth(written).addErrback(self._sending_failed)
        self.sender = sender = DataSetSender(protocol, store, done)
        protocol.transport.registerProducer(sender, True)
        sender.resumeProducing()

    def start_queued(self) -> None:
        if self.queued is not None and self.protocol.in_transfer() and self.has_room():
            store, self.queued = self.queued, None
            self._start(store)

    def data_set_sent(self, sender, error) -> None:
        if sender is not self.sender:
            return
        self.sender = None
        protocol = self.protocol
        if protocol.transport is not None and protocol.machine.state is not State.STA1:
            protocol.transport.unregisterProducer()
        early, self._early_response = self._early_response, None
        if error is not None:
            return  # the association is aborted next (_sending_failed)
        if early is not None:
            self._respond(early)
        else:
            self.start_queued()

    def _sending_failed(self, failure) -> None:
        self.protocol.abort(f"Cannot read the file: {failure.getErrorMessage()}")

    def expect(self, message_id: int, response: defer.Deferred | None = None) -> defer.Deferred:
        """The Deferred the response to ``message_id`` fires (``response`` if given); its wait starts now."""
        response = self.responses[message_id] = response or defer.Deferred()
        self.protocol.watch()
        return response

    # Receiving -------------------------------------------------------------------

    def pdata_items(self, values) -> None:
        """A P-DATA-TF's items, as (presentation context ID, message control header, fragment) tuples."""
        protocol = self.protocol
        for context_id, message_control_header, data in values:
            try:
                events = protocol.assembler.feed(context_id, message_control_header, data)
            except (DIMSEProtocolError, DIMSEDecodeError) as error:
                protocol.invalid(f"DIMSE: {error.message}")
                return
            for event in events:
                if type(event) is CommandReceived:
                    self._command_received(event)
                    if not protocol.in_transfer():
                        return

    def _command_received(self, event: CommandReceived) -> None:
        command = event.command
        if not isinstance(command, (CEchoRSP, CStoreRSP)) or event.has_data_set:
            self.protocol.invalid(f"DIMSE: unexpected {type(command).__name__} to an SCU")
            return
        answered = command.message_id_being_responded_to
        if answered not in self.responses:
            self.protocol.invalid(f"DIMSE: a response to message {answered}, which is not outstanding")
            return
        if self.sender is not None and answered == self.sender.message_id:
            # An answer before the whole data set: PS3.8 E.1 still wants the
            # message completed, so the rest is sent before the next one.
            self._early_response = command
            return
        self._respond(command)

    def _respond(self, command) -> None:
        response = self.responses.pop(command.message_id_being_responded_to)
        if self.responses:
            self.protocol.watch()  # the next answer is due within the timeout from now
        else:
            self.protocol.unwatch()
        # The next C-STORE first: the peer is idle until it arrives.
        self.start_queued()
        response.callback(command)

    def fail(self, error, not_sent) -> None:
        """Every outstanding wait fails with ``error``; a C-STORE made ready with ``not_sent``."""
        if self.sender is not None:
            self.sender.stopProducing()
        responses, self.responses = self.responses, {}
        for waiting in responses.values():
            waiting.errback(error)
        queued, self.queued = self.queued, None
        if queued is not None:
            queued.fp.close()
            queued.response.errback(not_sent)
            queued.sent.callback(None)
