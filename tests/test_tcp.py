"""write_now: a PDU goes out in the call that sends it, in order with what is queued, and through TLS when there is TLS."""

from __future__ import annotations

import socket
import ssl

from twisted.internet import defer, protocol, reactor, threads
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase, TestCase

from radx import tls
from radx.tcp import write_now
from tests.certificates import PKI


class _Collect(protocol.Protocol):
    """The client: keeps every byte, fires ``done`` when the server closes."""

    def __init__(self, done: defer.Deferred) -> None:
        self.received = bytearray()
        self.done = done

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason) -> None:
        self.done.callback(bytes(self.received))


class _Serve(protocol.Protocol):
    """The server: runs ``script(transport)`` on connecting, then closes once all is sent."""

    def __init__(self, script) -> None:
        self.script = script

    def connectionMade(self) -> None:
        self.script(self.transport)
        self.transport.loseConnection()


class WriteNowTCPTests(TestCase):
    """Over a real loopback connection, with the reactor's own TCP transport."""

    def _serve(self, script):
        factory = protocol.Factory.forProtocol(lambda: _Serve(script))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def _received(self, script) -> defer.Deferred:
        done: defer.Deferred = defer.Deferred()
        creator = protocol.ClientCreator(reactor, _Collect, done)
        connecting = creator.connectTCP("127.0.0.1", self._serve(script))
        connecting.addCallback(lambda client: self.addCleanup(client.transport.loseConnection))
        return connecting.addCallback(lambda _: done)

    def test_sent_before_the_reactor_turns(self):
        """
        The bytes are in the peer's socket while the caller still holds the
        reactor: no reactor turn between the write and the send. (A plain
        ``transport.write`` only queues them, and this read times out.)
        """
        seen = []

        def script(transport):
            write_now(transport, b"A-ASSOCIATE-AC")
            seen.append(client.recv(100))

        port = self._serve(script)
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.addCleanup(client.close)
        client.settimeout(1.0)

        def check():
            self.assertEqual(seen, [b"A-ASSOCIATE-AC"])

        return self._until(lambda: seen, check)

    def _until(self, ready, check, tries: int = 500) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()

        def poll(left):
            if ready() or not left:
                d.callback(None)
            else:
                reactor.callLater(0.01, poll, left - 1)

        poll(tries)
        return d.addCallback(lambda _: check())

    @defer.inlineCallbacks
    def test_after_queued_bytes_it_queues(self):
        """Bytes already queued go first: a direct send would overtake them."""
        head = bytes(range(256)) * (32 * 1024)  # 8 MiB: more than the socket takes at once

        def script(transport):
            transport.write(head)
            write_now(transport, b"tail")

        received = yield self._received(script)
        self.assertEqual(len(received), len(head) + 4)
        self.assertTrue(received == head + b"tail")

    @defer.inlineCallbacks
    def test_what_the_socket_does_not_take_is_queued_in_order(self):
        """A write larger than one send: the rest is queued, and a later write comes after it."""
        first = bytes(range(256)) * (32 * 1024)

        def script(transport):
            write_now(transport, first)
            write_now(transport, b"second")
            write_now(transport, b"third")

        received = yield self._received(script)
        self.assertEqual(len(received), len(first) + 11)
        self.assertTrue(received == first + b"secondthird")


class WriteNowTLSTests(TestCase):
    """Over TLS the PDU goes through the TLS layer, never straight to the TCP connection under it."""

    timeout = 30

    def test_tls_transport_encrypts(self):
        pki = PKI(self.mktemp())

        def script(transport):
            write_now(transport, b"A-ASSOCIATE-AC")
            write_now(transport, b" and P-DATA-TF")

        factory = protocol.Factory.forProtocol(lambda: _Serve(script))
        options = tls.server_options(pki.server.cert, pki.server.key, None)
        port = reactor.listenTCP(0, TLSMemoryBIOFactory(options, False, factory), interface="127.0.0.1")
        self.addCleanup(port.stopListening)

        def client() -> bytes:
            context = ssl.create_default_context(cafile=pki.ca.cert)
            with socket.create_connection(("127.0.0.1", port.getHost().port), timeout=10) as raw:
                with context.wrap_socket(raw, server_hostname="localhost") as secure:
                    received = b""
                    while True:
                        try:
                            data = secure.recv(1024)
                        except ssl.SSLZeroReturnError:
                            break
                        if not data:
                            break
                        received += data
                    return received

        d = threads.deferToThread(client)
        d.addCallback(self.assertEqual, b"A-ASSOCIATE-AC and P-DATA-TF")
        return d


class WriteNowOtherTransportTests(SynchronousTestCase):
    def test_a_transport_without_the_fields_gets_a_plain_write(self):
        transport = StringTransport()
        write_now(transport, b"P-DATA-TF")
        write_now(transport, b"A-RELEASE-RQ")
        self.assertEqual(transport.value(), b"P-DATA-TFA-RELEASE-RQ")
