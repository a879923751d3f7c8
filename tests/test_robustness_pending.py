"""Connections that never finish an A-ASSOCIATE-RQ, on real sockets on 127.0.0.1: bounded, and a real peer still served."""

from __future__ import annotations

import socket
import struct

from twisted.internet import defer, endpoints, reactor, task

from radx.scu.echo import echo
from radx.ul.framing import PDUReader
from radx.ul.pdu import AAbort
from tests.interop import ServerTestCase

PENDING = 8
CONNECTIONS = 20


def partial_request(declared: int, sent: int) -> bytes:
    """The header of an A-ASSOCIATE-RQ declaring ``declared`` bytes, and ``sent`` bytes of its body."""
    return struct.pack(">BxL", 0x01, declared) + bytes(sent)


def state(sock: socket.socket) -> bytes | None:
    """What the server sent, b"" once it closed; None while the connection is open and silent."""
    try:
        data = sock.recv(65536)
    except BlockingIOError:
        return None
    except ConnectionResetError:
        return b""
    return data


class PendingConnectionTests(ServerTestCase):
    timeout = 60

    def connect(self, data: bytes) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port))
        self.addCleanup(sock.close)
        sock.sendall(data)
        sock.setblocking(False)
        return sock

    @defer.inlineCallbacks
    def until(self, condition):
        while not condition():
            yield task.deferLater(reactor, 0.02, lambda: None)

    @defer.inlineCallbacks
    def test_oldest_closed_past_max_pending_and_a_real_peer_served(self):
        factory = self.start_server(self.server_config(max_pending=PENDING, artim_timeout=30.0))
        sockets = [self.connect(partial_request(65536, 32768)) for _ in range(CONNECTIONS)]
        closed = set()

        def oldest_closed():
            closed.update(i for i, sock in enumerate(sockets) if i not in closed and state(sock) == b"")
            return len(closed) >= CONNECTIONS - PENDING

        yield self.until(oldest_closed)
        self.assertEqual(closed, set(range(CONNECTIONS - PENDING)))
        self.assertEqual(len(factory.pending), PENDING)
        # A real peer, connecting now, is served; the newest partial ones stay open.
        results = yield echo(endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), reactor, "RADX-SCP", "ECHOSCU")
        self.assertEqual([r.status for r in results], [0])
        self.assertEqual([state(sock) for sock in sockets[-(PENDING - 1) :]], [None] * (PENDING - 1))

    @defer.inlineCallbacks
    def test_request_declaring_1_mib_is_aborted_from_its_header(self):
        factory = self.start_server()
        sock = self.connect(partial_request(1 << 20, 4096))
        answer = []

        def answered():
            data = state(sock)
            if data:
                answer.append(data)
            return bool(answer)

        yield self.until(answered)
        self.assertEqual(PDUReader().feed(answer[0]), [AAbort(0, 0)])
        [protocol] = factory.connections
        self.assertEqual(protocol.reader.buffered, 0)
