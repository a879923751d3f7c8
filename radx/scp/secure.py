# -*- test-case-name: tests.test_security_tls -*-
"""The SCP over TLS (PS3.15 B.9): the SCPFactory's associations wrapped in a TLS server connection."""

from __future__ import annotations

from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol

from radx.scp.factory import describe_peer
from radx.tls import describe_tls_failure

log = Logger(namespace="radx.scp.secure")


class _TLSConnection(TLSMemoryBIOProtocol):
    """A TLS server connection that says, in one line, why its handshake failed."""

    def connectionLost(self, reason):
        # _reason holds the TLS error that ended the connection, if one did.
        if not self._handshakeDone:
            log.info(
                "TLS handshake failed peer={peer}: {why}",
                peer=describe_peer(self.transport.getPeer()),
                why=describe_tls_failure(self._reason or reason),
            )
        super().connectionLost(reason)


class TLSServerFactory(TLSMemoryBIOFactory):
    """Wraps an SCPFactory: a peer outside --allow-ip is closed before the TLS handshake."""

    protocol = _TLSConnection
    noisy = False

    def __init__(self, certificate_options, scp_factory) -> None:
        super().__init__(certificate_options, False, scp_factory)

    def buildProtocol(self, addr):
        if not self.wrappedFactory.admits(addr):
            return None
        return super().buildProtocol(addr)
