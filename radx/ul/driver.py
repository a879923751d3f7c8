# -*- test-case-name: tests.test_driver,tests.test_scp_protocol,tests.test_scu_association -*-
"""What both roles' protocols share: carrying out the machine's effects, in order."""

from __future__ import annotations

from radx.ul.fsm import Event, Transition

__all__ = ["MachineDriver", "write_now"]


def write_now(transport, data: bytes) -> None:
    """
    ``transport.write(data)``, but sent at once when nothing is queued before it.

    Twisted's TCP transport only queues a write: the bytes go out on the
    reactor's next turn, which costs one more epoll wait and two epoll_ctl
    calls (watch for writability, then stop). A request/response protocol
    pays that on every message, a fifth of a C-ECHO's time. When the
    transport's buffer is empty, order is kept by sending straight away
    what the socket takes (``writeSomeData``, Twisted's own send) and
    queueing the rest. Any other transport (TLS, a test's), or a TCP
    transport without the buffer fields looked at, takes the plain write.
    """
    send = getattr(transport, "writeSomeData", None)
    if (
        send is not None
        and getattr(transport, "connected", False)
        and not getattr(transport, "disconnecting", True)
        and not getattr(transport, "_writeDisconnecting", True)
        and getattr(transport, "dataBuffer", None) == b""
        and getattr(transport, "_tempDataLen", None) == 0
    ):
        sent = send(data)
        if isinstance(sent, int) and sent > 0:
            if sent == len(data):
                return
            data = data[sent:]
        # Anything else (0, a lost connection): the plain write queues it,
        # and the reactor's next write meets the same condition and reports it.
    transport.write(data)


class MachineDriver:
    """
    A mixin for a protocol that holds ``machine`` (an
    :class:`~radx.ul.fsm.UpperLayer`), ``_dispatch`` (effect type to the
    method that carries it out) and a ``transport``.
    """

    def _handle(self, event: Event, **arguments) -> None:
        self._run(self.machine.handle(event, **arguments))

    def _run(self, transition: Transition) -> None:
        for effect in transition.effects:
            self._dispatch[type(effect)](effect)

    def _send_pdu(self, effect) -> None:
        write_now(self.transport, effect.pdu.encode())
