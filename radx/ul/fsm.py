# -*- test-case-name: tests.test_fsm -*-
"""The DICOM upper layer state machine of PS3.8 9.2, pure: events in, effects out.

The machine holds nothing but its state. ``handle(event, payload)`` (the
payload's type per event in ``EVENT_PAYLOADS``) looks the pair up in ``TRANSITIONS`` (PS3.8 Table 9-10, written out as a
literal table), runs the named action of PS3.8 Tables 9-6 to 9-9, and
returns the effects the action asks for, in order: PDUs to send, the ARTIM
timer to start or stop, the transport to open or close, and primitives to
hand to the local service user. The caller carries the effects out; time
and sockets live there, not here.

Both roles are described: the association-acceptor (Evt5 onward) and the
association-requestor (Evt1 onward). A local primitive that the table does
not allow in the current state is our own bug and raises
``LocalProtocolError``; every event the peer can cause has an entry in
every state where a transport connection exists.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable, Union

from radx.ul.pdu import (
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AbortReason,
    AbortSource,
    AReleaseRP,
    AReleaseRQ,
    EncodedPDUs,
    PDataTF,
)


class State(enum.Enum):
    """PS3.8 Tables 9-1 to 9-5."""

    # Members are singletons: hash by identity, in C, not by name in Python
    # (the (state, event) lookup runs for every PDU).
    __hash__ = object.__hash__

    STA1 = "Sta1"  # Idle
    STA2 = "Sta2"  # Transport connection open (Awaiting A-ASSOCIATE-RQ PDU)
    STA3 = "Sta3"  # Awaiting local A-ASSOCIATE response primitive
    STA4 = "Sta4"  # Awaiting transport connection opening to complete
    STA5 = "Sta5"  # Awaiting A-ASSOCIATE-AC or A-ASSOCIATE-RJ PDU
    STA6 = "Sta6"  # Association established and ready for data transfer
    STA7 = "Sta7"  # Awaiting A-RELEASE-RP PDU
    STA8 = "Sta8"  # Awaiting local A-RELEASE response primitive
    STA9 = "Sta9"  # Release collision requestor side; awaiting A-RELEASE response
    STA10 = "Sta10"  # Release collision acceptor side; awaiting A-RELEASE-RP PDU
    STA11 = "Sta11"  # Release collision requestor side; awaiting A-RELEASE-RP PDU
    STA12 = "Sta12"  # Release collision acceptor side; awaiting A-RELEASE response
    STA13 = "Sta13"  # Awaiting Transport Connection Close Indication


class Event(enum.Enum):
    """PS3.8 Table 9-10, the events."""

    # Members are singletons: hash by identity, in C, not by name in Python
    # (the (state, event) lookup runs for every PDU).
    __hash__ = object.__hash__

    EVT1 = "Evt1"  # A-ASSOCIATE request (local user)
    EVT2 = "Evt2"  # Transport connection confirm (local transport service)
    EVT3 = "Evt3"  # A-ASSOCIATE-AC PDU received
    EVT4 = "Evt4"  # A-ASSOCIATE-RJ PDU received
    EVT5 = "Evt5"  # Transport connection indication (local transport service)
    EVT6 = "Evt6"  # A-ASSOCIATE-RQ PDU received
    EVT7 = "Evt7"  # A-ASSOCIATE response primitive (accept)
    EVT8 = "Evt8"  # A-ASSOCIATE response primitive (reject)
    EVT9 = "Evt9"  # P-DATA request primitive
    EVT10 = "Evt10"  # P-DATA-TF PDU received
    EVT11 = "Evt11"  # A-RELEASE request primitive
    EVT12 = "Evt12"  # A-RELEASE-RQ PDU received
    EVT13 = "Evt13"  # A-RELEASE-RP PDU received
    EVT14 = "Evt14"  # A-RELEASE response primitive
    EVT15 = "Evt15"  # A-ABORT request primitive
    EVT16 = "Evt16"  # A-ABORT PDU received
    EVT17 = "Evt17"  # Transport connection closed indication
    EVT18 = "Evt18"  # ARTIM timer expired
    EVT19 = "Evt19"  # Unrecognized or invalid PDU received


# The events the local user or the local machinery raise; the rest come
# from the peer (or from the transport under the peer's control).
LOCAL_EVENTS = frozenset(
    {
        Event.EVT1,
        Event.EVT2,
        Event.EVT5,
        Event.EVT7,
        Event.EVT8,
        Event.EVT9,
        Event.EVT11,
        Event.EVT14,
        Event.EVT15,
        Event.EVT18,
    }
)

# PS3.8 9.3.1: which event each received PDU is.
PDU_EVENTS = {
    AAssociateAC: Event.EVT3,
    AAssociateRJ: Event.EVT4,
    AAssociateRQ: Event.EVT6,
    PDataTF: Event.EVT10,
    AReleaseRQ: Event.EVT12,
    AReleaseRP: Event.EVT13,
    AAbort: Event.EVT16,
}


# Effects ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendPDU:
    pdu: object


@dataclass(frozen=True, slots=True)
class StartARTIM:
    """Start the ARTIM timer, or restart it if it runs (PS3.8 9.1.5)."""


@dataclass(frozen=True, slots=True)
class StopARTIM:
    pass


@dataclass(frozen=True, slots=True)
class OpenTransport:
    """AE-1: issue a TRANSPORT CONNECT request."""


@dataclass(frozen=True, slots=True)
class CloseTransport:
    pass


@dataclass(frozen=True, slots=True)
class AssociateIndication:
    """AE-6: an acceptable A-ASSOCIATE-RQ for the local user to answer."""

    request: AAssociateRQ


@dataclass(frozen=True, slots=True)
class AssociateRejectedByProvider:
    """AE-6, otherwise branch: the provider itself rejected the request."""

    request: AAssociateRQ
    reject: AAssociateRJ


@dataclass(frozen=True, slots=True)
class AssociateAccepted:
    """AE-3: A-ASSOCIATE confirmation (accept), requestor side."""

    accept: AAssociateAC


@dataclass(frozen=True, slots=True)
class AssociateRejected:
    """AE-4: A-ASSOCIATE confirmation (reject), requestor side."""

    reject: AAssociateRJ


@dataclass(frozen=True, slots=True)
class DataIndication:
    """DT-2 and AR-6: a P-DATA indication."""

    pdata: PDataTF


@dataclass(frozen=True, slots=True)
class ReleaseIndication:
    """AR-2 and AR-8: the peer asks to release; ``collision`` for AR-8."""

    collision: bool = False


@dataclass(frozen=True, slots=True)
class ReleaseConfirmation:
    """AR-3 and AR-10."""


@dataclass(frozen=True, slots=True)
class AbortIndication:
    """AA-3, service-user source: the peer's user aborted."""

    abort: AAbort


@dataclass(frozen=True, slots=True)
class ProviderAbortIndication:
    """AA-3 (provider source), AA-4 and AA-8: an A-P-ABORT indication.

    ``reason`` is what went wrong, in words, for the log. AA-1 issues one
    too when the caller gave a reason (an invalid PDU in Sta2, a local
    abort for a timeout), so that every abort is explained exactly once.
    ``peer_violation`` is true when the peer broke the protocol (an
    invalid PDU, or one its state does not allow), not for a timeout, a
    local abort or a dropped connection.
    """

    reason: str
    peer_violation: bool = False


Effect = Union[
    SendPDU,
    StartARTIM,
    StopARTIM,
    OpenTransport,
    CloseTransport,
    AssociateIndication,
    AssociateRejectedByProvider,
    AssociateAccepted,
    AssociateRejected,
    DataIndication,
    ReleaseIndication,
    ReleaseConfirmation,
    AbortIndication,
    ProviderAbortIndication,
]


class LocalProtocolError(Exception):
    """The local side raised an event the table does not allow now: a bug."""


# PS3.8 Table 9-10. A missing (state, event) pair is a cell the standard
# leaves empty: for peer events that is only Sta1 and Sta4, where no
# transport connection exists to deliver them; for local events it is a
# local protocol error.
TRANSITIONS: dict[tuple[State, Event], str] = {
    # Evt1: A-ASSOCIATE request (local user)
    (State.STA1, Event.EVT1): "AE-1",
    # Evt2: transport connection confirm
    (State.STA4, Event.EVT2): "AE-2",
    # Evt3: A-ASSOCIATE-AC PDU
    (State.STA2, Event.EVT3): "AA-1",
    (State.STA3, Event.EVT3): "AA-8",
    (State.STA5, Event.EVT3): "AE-3",
    (State.STA6, Event.EVT3): "AA-8",
    (State.STA7, Event.EVT3): "AA-8",
    (State.STA8, Event.EVT3): "AA-8",
    (State.STA9, Event.EVT3): "AA-8",
    (State.STA10, Event.EVT3): "AA-8",
    (State.STA11, Event.EVT3): "AA-8",
    (State.STA12, Event.EVT3): "AA-8",
    (State.STA13, Event.EVT3): "AA-6",
    # Evt4: A-ASSOCIATE-RJ PDU
    (State.STA2, Event.EVT4): "AA-1",
    (State.STA3, Event.EVT4): "AA-8",
    (State.STA5, Event.EVT4): "AE-4",
    (State.STA6, Event.EVT4): "AA-8",
    (State.STA7, Event.EVT4): "AA-8",
    (State.STA8, Event.EVT4): "AA-8",
    (State.STA9, Event.EVT4): "AA-8",
    (State.STA10, Event.EVT4): "AA-8",
    (State.STA11, Event.EVT4): "AA-8",
    (State.STA12, Event.EVT4): "AA-8",
    (State.STA13, Event.EVT4): "AA-6",
    # Evt5: transport connection indication
    (State.STA1, Event.EVT5): "AE-5",
    # Evt6: A-ASSOCIATE-RQ PDU
    (State.STA2, Event.EVT6): "AE-6",
    (State.STA3, Event.EVT6): "AA-8",
    (State.STA5, Event.EVT6): "AA-8",
    (State.STA6, Event.EVT6): "AA-8",
    (State.STA7, Event.EVT6): "AA-8",
    (State.STA8, Event.EVT6): "AA-8",
    (State.STA9, Event.EVT6): "AA-8",
    (State.STA10, Event.EVT6): "AA-8",
    (State.STA11, Event.EVT6): "AA-8",
    (State.STA12, Event.EVT6): "AA-8",
    (State.STA13, Event.EVT6): "AA-7",
    # Evt7: A-ASSOCIATE response primitive (accept)
    (State.STA3, Event.EVT7): "AE-7",
    # Evt8: A-ASSOCIATE response primitive (reject)
    (State.STA3, Event.EVT8): "AE-8",
    # Evt9: P-DATA request primitive
    (State.STA6, Event.EVT9): "DT-1",
    (State.STA8, Event.EVT9): "AR-7",
    # Evt10: P-DATA-TF PDU
    (State.STA2, Event.EVT10): "AA-1",
    (State.STA3, Event.EVT10): "AA-8",
    (State.STA5, Event.EVT10): "AA-8",
    (State.STA6, Event.EVT10): "DT-2",
    (State.STA7, Event.EVT10): "AR-6",
    (State.STA8, Event.EVT10): "AA-8",
    (State.STA9, Event.EVT10): "AA-8",
    (State.STA10, Event.EVT10): "AA-8",
    (State.STA11, Event.EVT10): "AA-8",
    (State.STA12, Event.EVT10): "AA-8",
    (State.STA13, Event.EVT10): "AA-6",
    # Evt11: A-RELEASE request primitive
    (State.STA6, Event.EVT11): "AR-1",
    # Evt12: A-RELEASE-RQ PDU
    (State.STA2, Event.EVT12): "AA-1",
    (State.STA3, Event.EVT12): "AA-8",
    (State.STA5, Event.EVT12): "AA-8",
    (State.STA6, Event.EVT12): "AR-2",
    (State.STA7, Event.EVT12): "AR-8",
    (State.STA8, Event.EVT12): "AA-8",
    (State.STA9, Event.EVT12): "AA-8",
    (State.STA10, Event.EVT12): "AA-8",
    (State.STA11, Event.EVT12): "AA-8",
    (State.STA12, Event.EVT12): "AA-8",
    (State.STA13, Event.EVT12): "AA-6",
    # Evt13: A-RELEASE-RP PDU
    (State.STA2, Event.EVT13): "AA-1",
    (State.STA3, Event.EVT13): "AA-8",
    (State.STA5, Event.EVT13): "AA-8",
    (State.STA6, Event.EVT13): "AA-8",
    (State.STA7, Event.EVT13): "AR-3",
    (State.STA8, Event.EVT13): "AA-8",
    (State.STA9, Event.EVT13): "AA-8",
    (State.STA10, Event.EVT13): "AR-10",
    (State.STA11, Event.EVT13): "AR-3",
    (State.STA12, Event.EVT13): "AA-8",
    (State.STA13, Event.EVT13): "AA-6",
    # Evt14: A-RELEASE response primitive
    (State.STA8, Event.EVT14): "AR-4",
    (State.STA9, Event.EVT14): "AR-9",
    (State.STA12, Event.EVT14): "AR-4",
    # Evt15: A-ABORT request primitive
    (State.STA3, Event.EVT15): "AA-1",
    (State.STA4, Event.EVT15): "AA-2",
    (State.STA5, Event.EVT15): "AA-1",
    (State.STA6, Event.EVT15): "AA-1",
    (State.STA7, Event.EVT15): "AA-1",
    (State.STA8, Event.EVT15): "AA-1",
    (State.STA9, Event.EVT15): "AA-1",
    (State.STA10, Event.EVT15): "AA-1",
    (State.STA11, Event.EVT15): "AA-1",
    (State.STA12, Event.EVT15): "AA-1",
    # Evt16: A-ABORT PDU
    (State.STA2, Event.EVT16): "AA-2",
    (State.STA3, Event.EVT16): "AA-3",
    (State.STA5, Event.EVT16): "AA-3",
    (State.STA6, Event.EVT16): "AA-3",
    (State.STA7, Event.EVT16): "AA-3",
    (State.STA8, Event.EVT16): "AA-3",
    (State.STA9, Event.EVT16): "AA-3",
    (State.STA10, Event.EVT16): "AA-3",
    (State.STA11, Event.EVT16): "AA-3",
    (State.STA12, Event.EVT16): "AA-3",
    (State.STA13, Event.EVT16): "AA-2",
    # Evt17: transport connection closed indication
    (State.STA2, Event.EVT17): "AA-5",
    (State.STA3, Event.EVT17): "AA-4",
    (State.STA4, Event.EVT17): "AA-4",
    (State.STA5, Event.EVT17): "AA-4",
    (State.STA6, Event.EVT17): "AA-4",
    (State.STA7, Event.EVT17): "AA-4",
    (State.STA8, Event.EVT17): "AA-4",
    (State.STA9, Event.EVT17): "AA-4",
    (State.STA10, Event.EVT17): "AA-4",
    (State.STA11, Event.EVT17): "AA-4",
    (State.STA12, Event.EVT17): "AA-4",
    (State.STA13, Event.EVT17): "AR-5",
    # Evt18: ARTIM timer expired
    (State.STA2, Event.EVT18): "AA-2",
    (State.STA13, Event.EVT18): "AA-2",
    # Evt19: unrecognized or invalid PDU
    (State.STA2, Event.EVT19): "AA-1",
    (State.STA3, Event.EVT19): "AA-8",
    (State.STA5, Event.EVT19): "AA-8",
    (State.STA6, Event.EVT19): "AA-8",
    (State.STA7, Event.EVT19): "AA-8",
    (State.STA8, Event.EVT19): "AA-8",
    (State.STA9, Event.EVT19): "AA-8",
    (State.STA10, Event.EVT19): "AA-8",
    (State.STA11, Event.EVT19): "AA-8",
    (State.STA12, Event.EVT19): "AA-8",
    (State.STA13, Event.EVT19): "AA-7",
}


ProviderCheck = Callable[[AAssociateRQ], "AAssociateRJ | None"]
RequestCheck = Callable[[AAssociateRQ], "str | None"]


def _accept_everything(request: AAssociateRQ) -> None:
    return None


@dataclass
class Transition:
    """What one event did: the action taken, and the effects to carry out."""

    action: str
    previous: State
    state: State
    effects: list


class UpperLayer:
    """One association's upper layer state machine, for either role.

    ``provider_check`` is the "acceptable by service-provider" test of AE-6:
    given an A-ASSOCIATE-RQ it returns an A-ASSOCIATE-RJ to send, or None.
    ``request_check`` says why a decoded A-ASSOCIATE-RQ is nonetheless an
    invalid PDU (Evt19 instead of Evt6), or None.
    """

    def __init__(
        self,
        requestor: bool = False,
        provider_check: ProviderCheck = _accept_everything,
        request_check: RequestCheck | None = None,
    ) -> None:
        self.state = State.STA1
        self.requestor = requestor
        # The A-ASSOCIATE-RQ of Evt1, held until the transport is up (AE-2).
        self.pending_request: AAssociateRQ | None = None
        self._provider_check = provider_check
        self._request_check = request_check

    def handle(self, event: Event, payload: Payload | None = None) -> Transition:
        """One event, with the payload its type in ``EVENT_PAYLOADS`` says (a wrong one raises TypeError)."""
        expected = EVENT_PAYLOADS[event]
        if not isinstance(payload, expected):
            raise TypeError(f"{event.value} carries {_names(expected)}, not {type(payload).__name__}")
        previous = self.state
        action = TRANSITIONS.get((previous, event))
        if action is None:
            if event in LOCAL_EVENTS:
                raise LocalProtocolError(
                    f"{event.value} is not allowed in {previous.value}"
                )
            # A peer event with no transport connection (Sta1, Sta4): the
            # standard leaves the cell empty; nothing can carry it, so it is
            # ignored rather than treated as the peer's fault.
            return Transition("none", previous, previous, [])
        step = _ACTIONS[action]
        if step.choice:
            next_state, effects = step.run(self, payload)
        else:
            next_state, effects = step.next_state, step.run(self, payload)
        self.state = next_state
        return Transition(action, previous, next_state, effects)

    def receive(self, pdu) -> Transition:
        """Feed one decoded PDU from the peer."""
        event = PDU_EVENTS[type(pdu)]
        if event is Event.EVT6 and self._request_check is not None:
            invalid = self._request_check(pdu)
            if invalid is not None:
                # PS3.8 9.3.2.2: a request that breaks an item's rules is an invalid PDU.
                return self.handle(
                    Event.EVT19, InvalidPDU(AbortReason.INVALID_PDU_PARAMETER_VALUE, f"invalid PDU: {invalid}")
                )
        return self.handle(event, pdu)

    # The two cells of the data transfer hot path, answered without a
    # Transition (one per P-DATA-TF would be the largest cost of a data set).

    def pdata_received(self) -> bool:
        """
        Evt10, a P-DATA-TF PDU received: True where the table's action is
        DT-2, which only issues a P-DATA indication and stays in Sta6; the
        caller hands the PDU's items to its user at once. False elsewhere:
        the PDU goes through ``receive``.
        """
        return self.state in _DATA_INDICATION_STATES

    def can_send_pdata(self) -> bool:
        """
        Evt9, a P-DATA request: True where the table allows it (DT-1 in
        Sta6, AR-7 in Sta8), both of which only send the P-DATA-TF PDUs and
        stay in the state; the caller writes them at once. False elsewhere:
        nothing is sent.
        """
        return self.state in _PDATA_REQUEST_STATES


# The payload of each event (PS3.8 Table 9-10): the PDU a PDU event
# carries, the primitive's PDU for Evt1, Evt7, Evt8 and Evt9, a reason for
# Evt15 and Evt19, nothing for the rest.


@dataclass(frozen=True, slots=True)
class AbortRequest:
    """Evt15, an A-ABORT request by the local user; ``message`` says why, for the log (None: no indication)."""

    message: str | None = None


@dataclass(frozen=True, slots=True)
class InvalidPDU:
    """Evt19, an unrecognized or invalid PDU: the A-ABORT reason to send (PS3.8 9.3.8) and what was wrong."""

    reason: AbortReason
    message: str


Payload = Union[AAssociateRQ, AAssociateAC, AAssociateRJ, PDataTF, EncodedPDUs, AReleaseRQ, AReleaseRP, AAbort, AbortRequest, InvalidPDU]

_NONE = (type(None),)
EVENT_PAYLOADS: dict[Event, tuple[type, ...]] = {
    Event.EVT1: (AAssociateRQ,),
    Event.EVT2: _NONE,
    Event.EVT3: (AAssociateAC,),
    Event.EVT4: (AAssociateRJ,),
    Event.EVT5: _NONE,
    Event.EVT6: (AAssociateRQ,),
    Event.EVT7: (AAssociateAC,),
    Event.EVT8: (AAssociateRJ,),
    Event.EVT9: (PDataTF, EncodedPDUs),
    Event.EVT10: (PDataTF,),
    Event.EVT11: _NONE,
    Event.EVT12: (AReleaseRQ,),
    Event.EVT13: (AReleaseRP,),
    Event.EVT14: _NONE,
    Event.EVT15: (AbortRequest, type(None)),
    Event.EVT16: (AAbort,),
    Event.EVT17: _NONE,
    Event.EVT18: _NONE,
    Event.EVT19: (InvalidPDU,),
}


def _names(types: tuple[type, ...]) -> str:
    return " or ".join("nothing" if t is type(None) else t.__name__ for t in types)


# Actions: PS3.8 Tables 9-6 to 9-9. Each is declared once with the next
# state the standard gives it, and returns the effects; the two with a
# choice of next state (AE-6, AR-8) return (next state, effects).


@dataclass(frozen=True)
class _Action:
    run: Callable
    next_states: frozenset
    choice: bool

    @property
    def next_state(self) -> State:
        (state,) = self.next_states
        return state


_ACTIONS: dict[str, _Action] = {}


def _action(name: str, *next_states: State):
    def declare(run):
        _ACTIONS[name] = _Action(run, frozenset(next_states), len(next_states) > 1)
        return run

    return declare


@_action("AE-1", State.STA4)
def _ae_1(m, request):
    m.pending_request = request
    return [OpenTransport()]


@_action("AE-2", State.STA5)
def _ae_2(m, _):
    request, m.pending_request = m.pending_request, None
    return [SendPDU(request)]


@_action("AE-3", State.STA6)
def _ae_3(m, accept):
    return [AssociateAccepted(accept)]


@_action("AE-4", State.STA1)
def _ae_4(m, reject):
    return [AssociateRejected(reject), CloseTransport()]


@_action("AE-5", State.STA2)
def _ae_5(m, _):
    return [StartARTIM()]


@_action("AE-6", State.STA3, State.STA13)
def _ae_6(m, request):
    reject = m._provider_check(request)
    if reject is None:
        return State.STA3, [StopARTIM(), AssociateIndication(request)]
    return State.STA13, [
        StopARTIM(),
        AssociateRejectedByProvider(request, reject),
        SendPDU(reject),
        StartARTIM(),
    ]


@_action("AE-7", State.STA6)
def _ae_7(m, accept):
    return [SendPDU(accept)]


@_action("AE-8", State.STA13)
def _ae_8(m, reject):
    return [SendPDU(reject), StartARTIM()]


@_action("DT-1", State.STA6)
def _dt_1(m, pdus):
    return [SendPDU(pdus)]


@_action("DT-2", State.STA6)
def _dt_2(m, pdata):
    return [DataIndication(pdata)]


@_action("AR-1", State.STA7)
def _ar_1(m, _):
    return [SendPDU(AReleaseRQ())]


@_action("AR-2", State.STA8)
def _ar_2(m, _):
    return [ReleaseIndication()]


@_action("AR-3", State.STA1)
def _ar_3(m, _):
    return [ReleaseConfirmation(), CloseTransport()]


@_action("AR-4", State.STA13)
def _ar_4(m, _):
    return [SendPDU(AReleaseRP()), StartARTIM()]


@_action("AR-5", State.STA1)
def _ar_5(m, _):
    return [StopARTIM()]


@_action("AR-6", State.STA7)
def _ar_6(m, pdata):
    return [DataIndication(pdata)]


@_action("AR-7", State.STA8)
def _ar_7(m, pdus):
    return [SendPDU(pdus)]


@_action("AR-8", State.STA9, State.STA10)
def _ar_8(m, _):
    # PS3.8 9.2.2 AR-8: the requestor goes to Sta9, the acceptor to Sta10.
    next_state = State.STA9 if m.requestor else State.STA10
    return next_state, [ReleaseIndication(collision=True)]


@_action("AR-9", State.STA11)
def _ar_9(m, _):
    return [SendPDU(AReleaseRP())]


@_action("AR-10", State.STA12)
def _ar_10(m, _):
    return [ReleaseConfirmation()]


@_action("AA-1", State.STA13)
def _aa_1(m, payload):
    # PS3.8 9.3.8: with source 0 (service-user) the reason is sent as 00H.
    effects = [SendPDU(AAbort(AbortSource.SERVICE_USER, 0)), StartARTIM()]
    if isinstance(payload, AbortRequest):
        # Evt15: radx's own abort, explained when it gave a reason.
        if payload.message is not None:
            effects.append(ProviderAbortIndication(payload.message))
    elif isinstance(payload, InvalidPDU):
        effects.append(ProviderAbortIndication(payload.message, peer_violation=True))
    elif payload is not None:
        # A PDU no association is there for (Sta2): the peer's violation.
        effects.append(ProviderAbortIndication(_unexpected(m, payload), peer_violation=True))
    return effects


@_action("AA-2", State.STA1)
def _aa_2(m, _):
    return [StopARTIM(), CloseTransport()]


@_action("AA-3", State.STA1)
def _aa_3(m, abort):
    if abort.source == AbortSource.SERVICE_USER:
        indication = AbortIndication(abort)
    else:
        indication = ProviderAbortIndication(
            f"A-ABORT from the peer's service provider (source {abort.source},"
            f" reason {abort.reason})"
        )
    return [indication, CloseTransport()]


@_action("AA-4", State.STA1)
def _aa_4(m, _):
    return [ProviderAbortIndication("transport connection closed by the peer")]


@_action("AA-5", State.STA1)
def _aa_5(m, _):
    return [StopARTIM()]


@_action("AA-6", State.STA13)
def _aa_6(m, _):
    return []


@_action("AA-7", State.STA13)
def _aa_7(m, payload):
    reason = payload.reason if isinstance(payload, InvalidPDU) else AbortReason.UNEXPECTED_PDU
    return [SendPDU(AAbort(source=AbortSource.SERVICE_PROVIDER, reason=reason))]


@_action("AA-8", State.STA13)
def _aa_8(m, payload):
    if isinstance(payload, InvalidPDU):
        reason, message = payload.reason, payload.message
    else:
        reason, message = AbortReason.UNEXPECTED_PDU, _unexpected(m, payload)
    return [
        SendPDU(AAbort(source=AbortSource.SERVICE_PROVIDER, reason=reason)),
        # PS3.8 Table 9-10: AA-8 answers only an unexpected or invalid PDU.
        ProviderAbortIndication(message, peer_violation=True),
        StartARTIM(),
    ]


def _unexpected(m, pdu) -> str:
    return f"unexpected {type(pdu).__name__} PDU in {m.state.value}"


# The next state(s) of each action, as declared with it above (AE-6 and
# AR-8 have two, chosen at run time).
ACTION_NEXT_STATES: dict[str, frozenset[State]] = {name: action.next_states for name, action in _ACTIONS.items()}

# The fast cells, read from the table: where Evt10 is DT-2 and where Evt9 is allowed.
_DATA_INDICATION_STATES = frozenset(
    state for (state, event), action in TRANSITIONS.items() if event is Event.EVT10 and action == "DT-2"
)
_PDATA_REQUEST_STATES = frozenset(state for (state, event) in TRANSITIONS if event is Event.EVT9)
