"""radx.scp.proxied: PROXY headers (v1, v2, LOCAL) read from trusted proxies only, the sender as the peer.

The first classes drive a connection by hand over a StringTransport on
a clock, one byte at a time; the last one talks to a real listening
port from real sockets bound to loopback addresses (127.0.0.x).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

from twisted.internet import defer, reactor, threads
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase

from radx.scp.factory import SCPFactory, ServerConfig
from radx.scp.proxied import ProxiedFactory
from radx.tcp import write_now
from radx.testing import ImmediateThreadPool, ThreadlessReactor, associate_rq
from radx.ul.framing import PDUReader
from radx.ul.pdu import AAssociateAC
from tests.test_security_access import LogCapture, networks

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
PROXY_ADDRESS = "127.0.0.5"


def v2_header(source=None, destination=("127.0.0.2", 11112), command: int = 1) -> bytes:
    """A PROXY v2 header: command 1 is PROXY (with TCP over IPv4 or IPv6), 0 is LOCAL (no addresses)."""
    if source is None:
        return V2_SIGNATURE + bytes([0x20 | command, 0x00]) + struct.pack("!H", 0)
    source_ip = ipaddress.ip_address(source[0])
    destination_ip = ipaddress.ip_address(destination[0])
    family = 0x11 if source_ip.version == 4 else 0x21
    body = source_ip.packed + destination_ip.packed + struct.pack("!HH", source[1], destination[1])
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


def v1_header(source, destination=("127.0.0.2", 11112)) -> bytes:
    family = "TCP6" if ":" in source[0] else "TCP4"
    return f"PROXY {family} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n".encode()


REQUEST = associate_rq().encode()


class Connection:
    """One connection to a ProxiedFactory over a StringTransport."""

    def __init__(self, proxied: ProxiedFactory, peer=(PROXY_ADDRESS, 40000)) -> None:
        address = IPv4Address("TCP", *peer)
        self.protocol = proxied.buildProtocol(address)
        self.transport = None
        if self.protocol is not None:
            self.transport = StringTransport(peerAddress=address, hostAddress=IPv4Address("TCP", "127.0.0.2", 11112))
            self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        for index in range(len(data)):
            self.protocol.dataReceived(data[index : index + 1])

    def answers(self) -> list:
        return PDUReader(maximum_pdata_length=0).feed(self.transport.value())


class ProxiedTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.logs = LogCapture(self)
        self.reactor = ThreadlessReactor()

    def proxied(self, allowed=None, trusted=(PROXY_ADDRESS + "/32",)) -> ProxiedFactory:
        config = ServerConfig(output_dir=self.mktemp(), allowed_networks=networks(*allowed) if allowed else None)
        self.factory = SCPFactory(config, self.reactor, ImmediateThreadPool())
        return ProxiedFactory(self.factory, networks(*trusted), self.reactor, 5.0)


class TrustTests(ProxiedTestCase):
    def test_untrusted_peer_is_refused_before_a_byte(self):
        """A direct connection from outside --trusted-proxy: None from buildProtocol closes it, one line."""
        connection = Connection(self.proxied(), peer=("127.0.0.1", 40001))
        self.assertIsNone(connection.protocol)
        self.assertEqual(
            self.logs.matching("Refused connection"),
            [
                "Refused connection from 127.0.0.1:40001: not in --trusted-proxy,"
                " the proxies whose PROXY header radx reads"
            ],
        )

    def test_trusted_network_ipv6(self):
        proxied = self.proxied(trusted=("::1/128",))
        address = proxied.buildProtocol(IPv4Address("TCP", "127.0.0.5", 1))
        self.assertIsNone(address)
        from twisted.internet.address import IPv6Address

        self.assertIsNotNone(proxied.buildProtocol(IPv6Address("TCP", "::1", 1)))


class HeaderTests(ProxiedTestCase):
    def associate(self, header: bytes, **kwargs) -> Connection:
        connection = Connection(self.proxied(**kwargs))
        connection.send(header + REQUEST)
        return connection

    def assertAssociatedAs(self, connection: Connection, peer: str) -> None:
        [answer] = connection.answers()
        self.assertIsInstance(answer, AAssociateAC)
        self.assertEqual(connection.protocol.wrappedProtocol.peer, peer)
        self.assertEqual(len(self.logs.matching(f"Association accepted peer={peer} ")), 1, self.logs.lines())

    def test_v2_sender_is_the_peer(self):
        connection = self.associate(v2_header(("192.0.2.7", 4000)))
        self.assertAssociatedAs(connection, "192.0.2.7:4000")
        self.assertEqual(connection.protocol.getHost(), IPv4Address("TCP", "127.0.0.2", 11112))

    def test_v2_ipv6_sender(self):
        connection = self.associate(v2_header(("2001:db8::7", 4000), ("2001:db8::2", 11112)))
        self.assertAssociatedAs(connection, "[2001:db8::7]:4000")

    def test_v1_sender_is_the_peer(self):
        connection = self.associate(v1_header(("192.0.2.7", 4000)))
        self.assertAssociatedAs(connection, "192.0.2.7:4000")

    def test_v2_local_is_the_proxy_itself(self):
        """PROXY v2 LOCAL (a health check of the proxy's): the connection's own addresses stand."""
        connection = self.associate(v2_header(command=0))
        self.assertAssociatedAs(connection, f"{PROXY_ADDRESS}:40000")

    def test_v1_unknown_is_the_proxy_itself(self):
        connection = self.associate(b"PROXY UNKNOWN\r\n")
        self.assertAssociatedAs(connection, f"{PROXY_ADDRESS}:40000")

    def test_audit_record_names_the_sender(self):
        connection = self.associate(v2_header(("192.0.2.7", 4000)))
        connection.protocol.connectionLost(None)
        [audit] = self.logs.audits()
        self.assertEqual(audit["peer"], "192.0.2.7:4000")

    def test_allow_ip_judges_the_sender(self):
        """--allow-ip 192.0.2.7: that sender associates, another through the same proxy is closed."""
        allowed = self.associate(v2_header(("192.0.2.7", 4000)), allowed=("192.0.2.7/32",))
        self.assertAssociatedAs(allowed, "192.0.2.7:4000")
        refused = self.associate(v2_header(("192.0.2.8", 4001)), allowed=("192.0.2.7/32",))
        self.assertEqual(refused.answers(), [])
        self.assertTrue(refused.transport.disconnecting)
        self.assertIsNone(refused.protocol.wrappedProtocol)
        self.assertEqual(
            self.logs.matching("not in --allow-ip"), ["Refused connection from 192.0.2.8:4001: not in --allow-ip"]
        )

    def test_allow_ip_does_not_see_the_proxy(self):
        """The proxy's own address in --allow-ip admits no sender the header names."""
        refused = self.associate(v2_header(("192.0.2.8", 4001)), allowed=(PROXY_ADDRESS + "/32",))
        self.assertEqual(refused.answers(), [])
        self.assertEqual(len(self.logs.matching("Refused connection from 192.0.2.8:4001")), 1)

    def test_no_header(self):
        """A trusted proxy that sends DICOM at once: closed, one line, nothing built."""
        connection = self.associate(b"")
        self.assertEqual(connection.answers(), [])
        self.assertTrue(connection.transport.disconnected)
        self.assertEqual(
            self.logs.matching("Closing proxy="), ["Closing proxy=127.0.0.5:40000: invalid PROXY header: not a PROXY header"]
        )
        self.assertEqual(self.factory.connections, set())

    def test_malformed_v1(self):
        connection = self.associate(b"PROXY TCP4 192.0.2.7 nonsense 1 2\r\n")
        self.assertEqual(connection.answers(), [])
        self.assertEqual(len(self.logs.matching("invalid PROXY header")), 1, self.logs.lines())

    def test_v1_line_too_long(self):
        connection = self.associate(b"PROXY TCP4 " + b"1" * 200)
        self.assertTrue(connection.transport.disconnected)
        self.assertEqual(len(self.logs.matching("longer than 107 bytes")), 1, self.logs.lines())

    def test_header_timeout(self):
        """A proxy that sends nothing is closed when --artim-timeout runs out; no call is left."""
        connection = Connection(self.proxied())
        connection.send(V2_SIGNATURE[:5])
        self.reactor.advance(4.9)
        self.assertFalse(connection.transport.disconnected)
        self.reactor.advance(0.1)
        self.assertTrue(connection.transport.disconnected)
        self.assertEqual(self.logs.matching("No PROXY header"), ["No PROXY header within 5.0s, closing proxy=127.0.0.5:40000"])
        connection.protocol.connectionLost(None)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_lost_before_the_header(self):
        connection = Connection(self.proxied())
        connection.protocol.connectionLost(None)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(connection.protocol.factory.protocols, {})


def exchange(source: str, port: int, data: bytes) -> list:
    """From ``source`` (bound before connecting), send ``data``; the PDUs answered before the server closes."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(data)
        reader = PDUReader(maximum_pdata_length=0)
        pdus: list = []
        while not pdus:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return pdus
            if not chunk:
                return pdus
            pdus = reader.feed(chunk)
        return pdus


class RealSocketTests(TestCase):
    """A real listening port behind ProxiedFactory, trusting 127.0.0.5 only."""

    timeout = 60

    def setUp(self):
        self.logs = LogCapture(self)
        output_dir = self.mktemp()
        os.makedirs(output_dir)
        self.threadpool = ThreadPool(minthreads=1, maxthreads=2, name="test-storage")
        self.threadpool.start()
        self.addCleanup(self.threadpool.stop)
        self.factory = SCPFactory(ServerConfig(output_dir=output_dir, artim_timeout=5.0), reactor, self.threadpool)
        proxied = ProxiedFactory(self.factory, networks(PROXY_ADDRESS + "/32"), reactor, 5.0)
        self.listening = reactor.listenTCP(0, proxied, interface="127.0.0.1")
        self.addCleanup(self.listening.stopListening)
        self.port = self.listening.getHost().port

    @defer.inlineCallbacks
    def test_forged_header_from_an_untrusted_address(self):
        """127.0.0.1 writes a header naming 127.0.0.7: refused before it is read, no association."""
        pdus = yield threads.deferToThread(exchange, "127.0.0.1", self.port, v2_header(("127.0.0.7", 4000)) + REQUEST)
        self.assertEqual(pdus, [])
        refused = self.logs.matching("not in --trusted-proxy")
        self.assertEqual(len(refused), 1, refused)
        self.assertRegex(refused[0], r"^Refused connection from 127\.0\.0\.1:\d+: ")
        self.assertEqual(self.logs.matching("127.0.0.7"), [])
        self.assertEqual(self.factory.stats.associations, 0)

    @defer.inlineCallbacks
    def test_header_from_the_trusted_proxy(self):
        pdus = yield threads.deferToThread(exchange, PROXY_ADDRESS, self.port, v2_header(("127.0.0.7", 4000)) + REQUEST)
        self.assertIsInstance(pdus[0], AAssociateAC)
        self.assertEqual(len(self.logs.matching("Association accepted peer=127.0.0.7:4000 ")), 1, self.logs.lines())
        yield self.factory._when(lambda: not self.factory.connections)


class _WriteAtOnce(Protocol):
    """Writes as radx's protocols do (write_now) once connected, then reads what the peer got meanwhile."""

    def __init__(self, client, seen: list) -> None:
        self.client = client
        self.seen = seen

    def connectionMade(self) -> None:
        write_now(self.transport, b"A-ASSOCIATE-AC")
        try:
            self.seen.append(self.client.recv(100))
        except OSError as error:
            self.seen.append(error)
        self.transport.loseConnection()


class WriteNowTests(TestCase):
    def test_sent_before_the_reactor_turns(self):
        """Through the proxied connection, write_now still sends in the call: no reactor turn before the peer has it."""
        seen: list = []
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(client.close)
        factory = Factory.forProtocol(lambda: _WriteAtOnce(client, seen))
        proxied = ProxiedFactory(factory, networks(PROXY_ADDRESS + "/32"), reactor, 5.0)
        port = reactor.listenTCP(0, proxied, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client.bind((PROXY_ADDRESS, 0))
        client.connect(("127.0.0.1", port.getHost().port))
        client.sendall(v2_header(("192.0.2.7", 4000)))
        client.settimeout(1.0)
        done = defer.Deferred()

        def poll(left):
            if seen or not left:
                done.callback(None)
            else:
                reactor.callLater(0.01, poll, left - 1)

        poll(500)
        return done.addCallback(lambda _: self.assertEqual(seen, [b"A-ASSOCIATE-AC"]))
