"""A peer that sends requests and never reads the responses, over TCP and TLS on 127.0.0.1: radx stops reading it."""

from __future__ import annotations

import socket

from twisted.internet import defer, endpoints, protocol, reactor, task

from radx import tls
from radx.scp.secure import TLSServerFactory
from radx.scu.echo import echo
from radx.testing import associate_rq, echo_rq_bytes
from tests.certificates import PKI
from tests.interop import ServerTestCase

# Requests the peer sends: far more responses than the socket buffers
# (made small on both sides) and radx's write buffer hold.
REQUESTS = 20000


def socket_of(transport) -> socket.socket:
    """The socket under a TCP transport, or under the TLS layer over one."""
    handle = transport.getHandle()
    while not isinstance(handle, socket.socket):
        transport = transport.transport
        handle = transport.getHandle()
    return handle


class NeverReads(protocol.Protocol):
    """Associates, then stops reading and sends C-ECHO-RQs back to back."""

    def __init__(self) -> None:
        self.associated = defer.Deferred()
        self.received = b""

    def connectionMade(self) -> None:
        socket_of(self.transport).setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.transport.write(associate_rq().encode())

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.associated is not None and len(self.received) >= 6:
            if self.received[0] != 0x02:
                raise AssertionError(f"not an A-ASSOCIATE-AC: {self.received[:6].hex()}")
            self.transport.pauseProducing()  # from here on, reads nothing
            self.transport.write(b"".join(echo_rq_bytes(message_id=i % 65535 + 1) for i in range(REQUESTS)))
            associated, self.associated = self.associated, None
            associated.callback(None)


class UnreadResponsesTests(ServerTestCase):
    timeout = 120

    @defer.inlineCallbacks
    def until(self, condition):
        while not condition():
            yield task.deferLater(reactor, 0.02, lambda: None)

    @defer.inlineCallbacks
    def check_reading_stops(self, endpoint, echo_endpoint):
        factory = self.factory
        peer = NeverReads()
        client = yield endpoints.connectProtocol(endpoint, peer)
        self.addCleanup(client.transport.abortConnection)
        yield peer.associated
        [server] = list(factory.active)
        socket_of(server.transport).setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        # Either radx stops reading, or it answers every request into its write buffer.
        yield self.until(lambda: "responses" in server._pauses or factory.stats.echo_requests == REQUESTS)
        answered = factory.stats.echo_requests
        self.assertIn("responses", server._pauses)
        self.assertLess(answered, REQUESTS)
        # Another association is served meanwhile.
        results = yield echo(echo_endpoint, reactor, "RADX-SCP", "OTHER-SCU", count=3)
        self.assertEqual([r.status for r in results], [0, 0, 0])
        self.assertEqual(factory.stats.echo_requests, answered + 3)
        # Nothing more was read from the peer meanwhile; once it reads, radx reads again.
        client.transport.resumeProducing()
        yield self.until(lambda: factory.stats.echo_requests > answered + 3 + 1000)

    def test_tcp(self):
        self.start_server(self.server_config(idle_timeout=60.0))
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        return self.check_reading_stops(endpoint, endpoint)

    def test_tls(self):
        pki = PKI(self.mktemp())
        factory = self.start_server(self.server_config(idle_timeout=60.0))
        options = tls.server_options(pki.server.cert, pki.server.key, None)
        listening = reactor.listenTCP(0, TLSServerFactory(options, factory), interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        endpoint = endpoints.wrapClientTLS(
            tls.client_options("localhost", pki.ca.cert),
            endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", listening.getHost().port),
        )
        return self.check_reading_stops(endpoint, endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", self.port))
