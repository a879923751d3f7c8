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
"""

from __future__ import annotations

import struct
import sys

from twisted.internet import protocol

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


class Floor(protocol.Protocol):
    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        buffer = self.buffer + data
        while len(buffer) >= 6:
            pdu_type, length = _HEADER.unpack_from(buffer)
            if len(buffer) < 6 + length:
                break
            buffer = buffer[6 + length :]
            answer = _ANSWERS.get(pdu_type)
            if answer is not None:
                write_now(self.transport, answer)
        self.buffer = buffer


def main(argv=None) -> int:
    from twisted.internet import reactor

    port = int((argv if argv is not None else sys.argv[1:])[0])
    reactor.listenTCP(port, protocol.Factory.forProtocol(Floor), interface="127.0.0.1")
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
