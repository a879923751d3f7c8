# -*- test-case-name: tests.test_tcp -*-
"""Sending on Twisted's TCP transport without waiting for the reactor's next turn."""

from __future__ import annotations

from twisted.internet.interfaces import ISSLTransport
from twisted.internet.tcp import Connection

__all__ = ["write_now"]


def write_now(transport, data: bytes) -> None:
    """
    ``transport.write(data)``, but sent at once when nothing is queued before it.

    Twisted's TCP transport only queues a write: the bytes go out on the
    reactor's next turn, which costs one more epoll wait and two epoll_ctl
    calls (watch for writability, then stop). A request/response protocol
    pays that on every message. When the transport's buffer is empty,
    order is kept by sending straight away what the socket takes
    (``writeSomeData``, the transport's own send) and queueing the rest.

    Only for Twisted's own plain TCP connection: a TLS transport must
    encrypt in ``write`` (and one that wraps a TCP connection, as
    ``TLSMemoryBIOProtocol`` does, passes the TCP connection's attributes
    through, so duck typing would send plaintext); any other transport,
    or one whose buffer fields are not the ones looked at here, gets the
    plain write.
    """
    if (
        isinstance(transport, Connection)
        and not ISSLTransport.providedBy(transport)
        and transport.connected
        and not transport.disconnecting
        and not getattr(transport, "_writeDisconnecting", True)
        and getattr(transport, "dataBuffer", None) == b""
        and getattr(transport, "_tempDataLen", None) == 0
    ):
        sent = transport.writeSomeData(data)
        if isinstance(sent, int) and sent > 0:
            if sent == len(data):
                return
            data = data[sent:]
        # Anything else (0, a lost connection): the plain write queues it,
        # and the reactor's next write meets the same condition and reports it.
    transport.write(data)
