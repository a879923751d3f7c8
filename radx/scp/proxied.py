# -*- test-case-name: tests.test_scp_proxied -*-
"""Connections through a proxy that sends a PROXY protocol header (v1 or v2): the sender's own address, from trusted proxies only.

A load balancer such as HAProxy in TCP mode connects to radx itself, so
the TCP peer is the proxy. With ``send-proxy`` or ``send-proxy-v2`` it
first sends a header naming the connection it relays: the sender's
address and port, and the address the sender connected to. radx takes
that header only from a proxy in ``--trusted-proxy``: a connection from
anywhere else is closed at once, before a byte is read, since anyone
could write such a header. Once the header has arrived, the address it
names is the peer: ``--allow-ip`` judges it, and every log line and the
audit record name it.

Twisted's ``twisted.protocols.haproxy`` parses the two header versions;
its wrapper builds the wrapped protocol with the proxy's address before
the header has arrived, and trusts any peer. This one builds the
association's protocol only once the header has named the sender.
"""

from __future__ import annotations

import ipaddress

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import directlyProvides, providedBy

from radx.scp.factory import describe_peer, peer_ip
from radx.tcp import write_now

log = Logger(namespace="radx.scp.proxied")

# The PROXY protocol specification (haproxy.org, doc/proxy-protocol.txt):
# a v1 header is one line, "PROXY ..." and CRLF, 107 bytes at most; a v2
# header starts with a 12-byte signature, then version and command, the
# address family, and the length of what follows the 16 bytes.
V1_SIGNATURE = b"PROXY "
V1_MAXIMUM = 107
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16


class HeaderError(Exception):
    """What was received is not a PROXY header."""


def _parse_header(buffer: bytes):
    """(source, destination, the bytes after the header), or None while the header is incomplete.

    The source and destination are None for the proxy's own connection
    (v2 LOCAL, or a family other than TCP over IP; v1 UNKNOWN). Raises
    HeaderError for what is not a PROXY header.
    """
    if buffer[: len(V2_SIGNATURE)] == V2_SIGNATURE[: len(buffer)]:
        if len(buffer) < V2_FIXED:
            return None
        if buffer[12] >> 4 != 2:
            raise HeaderError("PROXY v2 signature with another version")
        size = V2_FIXED + int.from_bytes(buffer[14:16], "big")
        if len(buffer) < size:
            return None
        info = V2Parser.parse(buffer[:size])
        return _checked(info.source), _checked(info.destination), buffer[size:]
    if buffer[: len(V1_SIGNATURE)] == V1_SIGNATURE[: len(buffer)]:
        line, crlf, rest = buffer.partition(b"\r\n")
        if len(line) + 2 > V1_MAXIMUM or (not crlf and len(buffer) >= V1_MAXIMUM):
            raise HeaderError(f"PROXY v1 line longer than {V1_MAXIMUM} bytes")
        if not crlf:
            return None
        # "PROXY UNKNOWN", with or without addresses after it: the proxy's own connection.
        if line == b"PROXY UNKNOWN" or line.startswith(b"PROXY UNKNOWN "):
            return None, None, rest
        info = V1Parser.parse(line)
        return _checked(info.source), _checked(info.destination), rest
    raise HeaderError("not a PROXY header")


def _checked(address):
    """An address from the header, its IP written as Python writes it; HeaderError if it is not TCP over IP."""
    if address is None:
        return None
    if not isinstance(address, (IPv4Address, IPv6Address)):
        raise HeaderError("an address that is not TCP over IP")
    try:
        ip = ipaddress.ip_address(address.host)
    except ValueError:
        raise HeaderError("an address that is not an IP address") from None
    if (ip.version == 4) != isinstance(address, IPv4Address):
        raise HeaderError("an address of the other IP version than the header says")
    if not 0 <= address.port <= 65535:
        raise HeaderError(f"a port out of range: {address.port}")
    return type(address)("TCP", str(ip), address.port)


class ProxiedConnection(ProtocolWrapper):
    """
    One connection from a trusted proxy: reads the PROXY header, then is
    the transport of the protocol the wrapped factory builds for the
    sender the header names (None from it closes the connection).

    PROXY v2's LOCAL command (and v1's UNKNOWN) says the connection is
    the proxy's own, a health check typically: as the specification
    asks, the connection's real addresses stand, so the proxy is the peer.
    """

    def __init__(self, factory: ProxiedFactory) -> None:
        super().__init__(factory, None)
        self._buffer = b""
        self._source = None
        self._destination = None
        self._timer = None

    def makeConnection(self, transport) -> None:
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        self._timer = self.factory.reactor.callLater(self.factory.timeout, self._no_header)

    def logPrefix(self) -> str:
        return "ProxiedConnection"

    def _proxy(self) -> str:
        return describe_peer(self.transport.getPeer())

    def _no_header(self) -> None:
        self._timer = None
        log.info(
            "No PROXY header within {timeout}s, closing proxy={proxy}",
            timeout=self.factory.timeout,
            proxy=self._proxy(),
        )
        self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.wrappedProtocol is not None:
            self.wrappedProtocol.dataReceived(data)
            return
        if self._timer is None:
            return  # closing: the header was refused or did not come in time
        self._buffer += data
        try:
            parsed = _parse_header(self._buffer)
            if parsed is None:
                return
            source, destination, rest = parsed
        except (HeaderError, InvalidProxyHeader, ValueError) as error:
            why = str(error) or "not a valid PROXY header"
            self._refuse(f"invalid PROXY header: {why}")
            return
        self._buffer = b""
        self._timer.cancel()
        self._timer = None
        if source is None:
            log.debug("PROXY header for the proxy's own connection (LOCAL) proxy={proxy}", proxy=self._proxy())
        self._source = source
        self._destination = destination if source is not None else None
        wrapped = self.factory.wrappedFactory.buildProtocol(self.getPeer())
        if wrapped is None:
            # Refused (--allow-ip) by the wrapped factory, which said so.
            self.transport.loseConnection()
            return
        self.wrappedProtocol = wrapped
        wrapped.makeConnection(self)
        if rest:
            wrapped.dataReceived(rest)

    def _refuse(self, why: str) -> None:
        self._timer.cancel()
        self._timer = None
        log.info("Closing proxy={proxy}: {why}", proxy=self._proxy(), why=why)
        self.transport.abortConnection()

    def write(self, data: bytes) -> None:
        # A PDU leaves in the call that sends it, as on a connection without a proxy (radx.tcp).
        write_now(self.transport, data)

    def getPeer(self):
        if self._source is not None:
            return self._source
        return self.transport.getPeer()

    def getHost(self):
        if self._destination is not None:
            return self._destination
        return self.transport.getHost()

    def connectionLost(self, reason) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.wrappedProtocol is not None:
            super().connectionLost(reason)
        else:
            self.factory.unregisterProtocol(self)


class ProxiedFactory(WrappingFactory):
    """Wraps a server factory for a listener behind proxies in ``trusted`` (IPv4 and IPv6 networks)."""

    protocol = ProxiedConnection
    noisy = False

    def __init__(self, wrapped_factory, trusted, reactor, timeout: float) -> None:
        super().__init__(wrapped_factory)
        self.trusted = tuple(trusted)
        self.reactor = reactor
        # Seconds the proxy has to send its header (radx's --artim-timeout).
        self.timeout = timeout

    def buildProtocol(self, addr):
        address = peer_ip(addr)
        if address is None or not any(address in network for network in self.trusted):
            log.info(
                "Refused connection from {peer}: not in --trusted-proxy, the proxies whose PROXY header radx reads",
                peer=describe_peer(addr),
            )
            return None
        return self.protocol(self)
