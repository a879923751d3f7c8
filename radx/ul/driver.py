# -*- test-case-name: tests.test_scp_protocol,tests.test_scu_association -*-
"""What both roles' protocols share: carrying out the machine's effects, in order."""

from __future__ import annotations

from radx.ul.fsm import Event, Transition

__all__ = ["MachineDriver"]


class MachineDriver:
    """
    A mixin for a protocol that holds ``machine`` (an
    :class:`~radx.ul.fsm.UpperLayer`), ``_dispatch`` (effect type to the
    method that carries it out) and a ``transport``.
    """

    def _handle(self, event: Event, payload=None) -> None:
        self._run(self.machine.handle(event, payload))

    def _run(self, transition: Transition) -> None:
        for effect in transition.effects:
            self._dispatch[type(effect)](effect)

    def _send_pdu(self, effect) -> None:
        self._write(effect.pdu.encode())

    def _write(self, data: bytes) -> None:
        self.transport.write(data)
