# -*- test-case-name: tests.test_scp_accepting -*-
"""One radx line when a listening port cannot take a connection because descriptors or memory ran out.

Twisted's TCP port handles accept(2) failing with EMFILE, ENFILE, ENOBUFS
or ENOMEM by itself: with EMFILE it frees a descriptor it keeps for the
purpose, accepts each waiting connection and closes it at once. It says
so only at INFO, in its own namespace, which radx's console leaves out;
so the peer saw its connection closed and radx's log said nothing. This
observer turns those events into radx's own WARN lines.
"""

from __future__ import annotations

from twisted.logger import Logger

# The namespace of twisted.internet.tcp.Port's logger, which logs its accept() errors.
_PORT_NAMESPACE = "twisted.internet.tcp.Port"

_CAUSES = {
    "EMFILE": "radx has no file descriptor left (EMFILE): raise its limit (ulimit -n, LimitNOFILE=) or lower --max-conns",
    "ENFILE": "the system has no file descriptor left (ENFILE)",
    "ENOBUFS": "the system has no buffer space left (ENOBUFS)",
    "ENOMEM": "the system has no memory left (ENOMEM)",
}


def _address(address) -> str:
    """host:port of an accept() address tuple; [host]:port for IPv6."""
    try:
        host, port = address[0], address[1]
    except (TypeError, IndexError):
        return str(address)
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


class AcceptFailureObserver:
    """A log observer that says, in radx's words, each connection Twisted's port could not take.

    A connection accepted and closed at once (EMFILE) gets one line
    naming it. A failed accept() that leaves the connection waiting is
    said at most once every ``interval`` seconds: the port's socket stays
    readable, so it repeats at every turn of the reactor.
    """

    log = Logger(namespace="radx.scp")

    def __init__(self, reactor, interval: float = 10.0) -> None:
        self.reactor = reactor
        self.interval = interval
        self._quiet_until: float | None = None

    def __call__(self, event) -> None:
        if event.get("log_namespace") != _PORT_NAMESPACE:
            return
        if "address" in event:
            # "EMFILE recovery: Closed socket from {address}"
            self.log.warn(
                "Connection from {peer} closed at once: {why}",
                peer=_address(event["address"]),
                why=_CAUSES["EMFILE"],
            )
            return
        error = event.get("acceptError")
        if error not in _CAUSES:
            return  # ECONNABORTED: the peer gave up before accept(); nothing was lost
        now = self.reactor.seconds()
        if self._quiet_until is not None and now < self._quiet_until:
            return
        self._quiet_until = now + self.interval
        self.log.warn(
            "Could not accept a connection: {why} (said at most every {interval:g}s)",
            why=_CAUSES[error],
            interval=self.interval,
        )
