"""The least any Twisted server can do for bench/rawclient.py: canned answers, no DICOM.

    python bench/twisted_floor.py PORT

It reads PDU headers only and answers an A-ASSOCIATE-RQ with a fixed
A-ASSOCIATE-AC, any P-DATA-TF with a fixed C-ECHO-RSP (Success), and an
A-RELEASE-RQ with an A-RELEASE-RP, each sent at once as radx sends its
PDUs (radx.tcp.write_now). What it costs per echo and per association is
what Twisted's reactor, TCP transport and the system calls cost before a
DICOM server does any work of its own: the floor under radx's figures.
Not a DICOM implementation; rawclient.py checks nothing more than the PDU
types and the Status bytes.

A C-STORE-RQ (its command's bytes hold Command Field 0001H) gets no answer
of its own: the data set's fragments are kept, and after the last one a
thread of a Twisted ThreadPool writes them to a new file under OUTPUT and
renames it (no fsync, as storescp), then the reactor answers with a fixed
C-STORE-RSP (Success). That is the least a server of radx's shape
(reactor, storage writes on a threadpool) does per stored instance.
With ``--bare`` the thread is one worker fed by a ``queue.SimpleQueue``
and answering through ``reactor.callFromThread``: the least a hand-off
to a thread and back can be in Python.

    python bench/twisted_floor.py PORT [OUTPUT] [--bare]
"""

from __future__ import annotations

import argparse
import itertools
import os
import queue
import struct
import sys
import threading

from twisted.internet import protocol
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from radx.tcp import write_now

_HEADER = struct.Struct(">BxL")


def _pdu(pdu_type: int, body: bytes) -> bytes:
    return _HEADER.pack(pdu_type, len(body)) + body


# PS3.8 9.3: PDU types 01 (A-ASSOCIATE-RQ), 04 (P-DATA-TF) and 05 (A-RELEASE-RQ).
_ANSWERS = {
    0x01: _pdu(0x02, bytes(4)),
    # One PDV, context 1, last command fragment; (0000,0900) Status 0000H.
    0x04: _pdu(0x04, struct.pack(">LBB", 12, 1, 0x03) + struct.pack("<HHLH", 0x0000, 0x0900, 2, 0x0000)),
    0x05: _pdu(0x06, bytes(4)),
}
# PS3.7 E.1: (0000,0100) Command Field 0001H (C-STORE-RQ), implicit VR little endian.
_C_STORE_RQ = struct.pack("<HHLH", 0x0000, 0x0100, 2, 0x0001)
_C_STORE_RSP = _pdu(
    0x04,
    struct.pack(">LBB", 22, 1, 0x03)
    + struct.pack("<HHLH", 0x0000, 0x0100, 2, 0x8001)
    + struct.pack("<HHLH", 0x0000, 0x0900, 2, 0x0000),
)
_names = itertools.count()


def _write_file(directory: str, fragments: list) -> None:
    name = os.path.join(directory, f"{os.getpid()}-{next(_names)}")
    with open(name + ".part", "wb") as file:
        file.writelines(fragments)
    os.rename(name + ".part", name + ".dcm")


class Floor(protocol.Protocol):
    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        self.buffer = b""
        self.fragments: list = []

    def dataReceived(self, data: bytes) -> None:
        buffer = self.buffer + data
        while len(buffer) >= 6:
            pdu_type, length = _HEADER.unpack_from(buffer)
            if len(buffer) < 6 + length:
                break
            pdu, buffer = buffer[: 6 + length], buffer[6 + length :]
            if pdu_type == 0x04:
                self._pdata(pdu)
                continue
            answer = _ANSWERS.get(pdu_type)
            if answer is not None:
                write_now(self.transport, answer)
        self.buffer = buffer

    def _pdata(self, pdu: bytes) -> None:
        # PS3.8 9.3.5, E.2: one PDV per PDU assumed; bit 0 command, bit 1 last fragment.
        control = pdu[11]
        if control & 0x01:
            if _C_STORE_RQ not in pdu:
                write_now(self.transport, _ANSWERS[0x04])
            return
        self.fragments.append(pdu[12:])
        if control & 0x02:
            fragments, self.fragments = self.fragments, []
            self.factory.in_thread(_write_file, (self.factory.output, fragments), self._stored)

    def _stored(self, _) -> None:
        write_now(self.transport, _C_STORE_RSP)


class TwistedPool:
    """Jobs on a Twisted ThreadPool, as radx runs them."""

    def __init__(self, reactor) -> None:
        self.reactor = reactor
        self.pool = ThreadPool(minthreads=1, maxthreads=4, name="floor-storage")
        self.pool.start()
        reactor.addSystemEventTrigger("during", "shutdown", self.pool.stop)

    def __call__(self, job, args, then) -> None:
        deferToThreadPool(self.reactor, self.pool, job, *args).addCallback(then)


class BarePool:
    """Jobs on one thread fed by a SimpleQueue, answered through callFromThread."""

    def __init__(self, reactor) -> None:
        self.reactor = reactor
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._work, name="floor-bare", daemon=True).start()

    def _work(self) -> None:
        while True:
            job, args, then = self.jobs.get()
            self.reactor.callFromThread(then, job(*args))

    def __call__(self, job, args, then) -> None:
        self.jobs.put((job, args, then))


def main(argv=None) -> int:
    from twisted.internet import reactor

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("port", type=int)
    parser.add_argument("output", nargs="?", default=os.getcwd())
    parser.add_argument("--bare", action="store_true", help="a SimpleQueue thread in place of Twisted's ThreadPool")
    args = parser.parse_args(argv)
    factory = protocol.Factory.forProtocol(Floor)
    factory.output = args.output
    os.makedirs(factory.output, exist_ok=True)
    factory.in_thread = (BarePool if args.bare else TwistedPool)(reactor)
    reactor.listenTCP(args.port, factory, interface="127.0.0.1")
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
