# -*- test-case-name: tests.test_security_tls -*-
"""The SCP over TLS (PS3.15 B.9): the SCPFactory's associations wrapped in a TLS server connection."""

from __future__ import annotations

from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from radx.tls import describe_tls_failure

log = Logger(namespace="radx.scp.secure")


def handshake_failed(peer: str, reason) -> None:
    """
    Say, in one line, why a TLS connection ended before its handshake was
    done: the association's protocol calls this from ``connectionLost``
    when its transport never called ``handshakeCompleted``
    (``IHandshakeListener``). The reason it is given is the TLS error that
    ended the connection, if one did.
    """
    why = describe_tls_failure(reason) if reason is not None else "the connection closed before the handshake completed"
    log.info("TLS handshake failed peer={peer}: {why}", peer=peer, why=why)


class TLSServerFactory(TLSMemoryBIOFactory):
    """Wraps an SCPFactory: a peer outside --allow-ip is closed before the TLS handshake."""

    noisy = False

    def __init__(self, certificate_options, scp_factory) -> None:
        super().__init__(certificate_options, False, scp_factory)

    def buildProtocol(self, addr):
        if not self.wrappedFactory.admits(addr):
            return None
        return super().buildProtocol(addr)
