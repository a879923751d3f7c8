"""Tests for radx.ul.fsm: PS3.8 Table 9-10, state by state, and exhaustively."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from radx.ul import fsm
from radx.ul.fsm import Event, State, UpperLayer
from radx.ul.pdu import (
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AbortReason,
    AReleaseRP,
    AReleaseRQ,
    PDataTF,
    PresentationDataValueItem,
)

RQ = AAssociateRQ(called_ae_title="RADX-SCP", calling_ae_title="SCU")
AC = AAssociateAC(called_ae_title="RADX-SCP", calling_ae_title="SCU")
RJ = AAssociateRJ(1, 1, 7)
PDATA = PDataTF((PresentationDataValueItem(1, 3, b"\x00\x00"),))

# The payload each event carries, where it carries one.
ARGUMENTS = {
    Event.EVT1: RQ,
    Event.EVT3: AC,
    Event.EVT4: RJ,
    Event.EVT6: RQ,
    Event.EVT7: AC,
    Event.EVT8: RJ,
    Event.EVT9: PDATA,
    Event.EVT10: PDATA,
    Event.EVT12: AReleaseRQ(),
    Event.EVT13: AReleaseRP(),
    Event.EVT16: AAbort(0, 0),
    Event.EVT19: fsm.InvalidPDU(AbortReason.UNRECOGNIZED_PDU, "bad"),
}

# PS3.8 Table 9-10, transcribed row by row from the standard, in a form
# independent of the module's dict: "Sta6-12" means every state from 6 to 12.
STANDARD_ROWS = {
    1: "Sta1=AE-1",
    2: "Sta4=AE-2",
    3: "Sta2=AA-1 Sta3=AA-8 Sta5=AE-3 Sta6-12=AA-8 Sta13=AA-6",
    4: "Sta2=AA-1 Sta3=AA-8 Sta5=AE-4 Sta6-12=AA-8 Sta13=AA-6",
    5: "Sta1=AE-5",
    6: "Sta2=AE-6 Sta3=AA-8 Sta5-12=AA-8 Sta13=AA-7",
    7: "Sta3=AE-7",
    8: "Sta3=AE-8",
    9: "Sta6=DT-1 Sta8=AR-7",
    10: "Sta2=AA-1 Sta3=AA-8 Sta5=AA-8 Sta6=DT-2 Sta7=AR-6 Sta8-12=AA-8 Sta13=AA-6",
    11: "Sta6=AR-1",
    12: "Sta2=AA-1 Sta3=AA-8 Sta5=AA-8 Sta6=AR-2 Sta7=AR-8 Sta8-12=AA-8 Sta13=AA-6",
    13: "Sta2=AA-1 Sta3=AA-8 Sta5=AA-8 Sta6=AA-8 Sta7=AR-3 Sta8=AA-8 Sta9=AA-8"
    " Sta10=AR-10 Sta11=AR-3 Sta12=AA-8 Sta13=AA-6",
    14: "Sta8=AR-4 Sta9=AR-9 Sta12=AR-4",
    15: "Sta3=AA-1 Sta4=AA-2 Sta5-12=AA-1",
    16: "Sta2=AA-2 Sta3=AA-3 Sta5-12=AA-3 Sta13=AA-2",
    17: "Sta2=AA-5 Sta3-12=AA-4 Sta13=AR-5",
    18: "Sta2=AA-2 Sta13=AA-2",
    19: "Sta2=AA-1 Sta3=AA-8 Sta5-12=AA-8 Sta13=AA-7",
}

# PS3.8 Tables 9-6 to 9-9: the next state of each action.
STANDARD_NEXT_STATE = {
    "AE-1": 4, "AE-2": 5, "AE-3": 6, "AE-4": 1, "AE-5": 2, "AE-7": 6, "AE-8": 13,
    "DT-1": 6, "DT-2": 6,
    "AR-1": 7, "AR-2": 8, "AR-3": 1, "AR-4": 13, "AR-5": 1, "AR-6": 7, "AR-7": 8,
    "AR-9": 11, "AR-10": 12,
    "AA-1": 13, "AA-2": 1, "AA-3": 1, "AA-4": 1, "AA-5": 1, "AA-6": 13, "AA-7": 13, "AA-8": 13,
}


def _standard_table() -> dict[tuple[State, Event], str]:
    table = {}
    for number, row in STANDARD_ROWS.items():
        event = Event(f"Evt{number}")
        for cell in row.split():
            states, action = cell.split("=")
            first, _, last = states[3:].partition("-")
            for n in range(int(first), int(last or first) + 1):
                table[(State(f"Sta{n}"), event)] = action
    return table


def machine_in(state: State, requestor: bool = False, check=None) -> UpperLayer:
    machine = UpperLayer(requestor=requestor) if check is None else UpperLayer(requestor, check)
    machine.state = state
    if state is State.STA4:
        machine.pending_request = RQ
    return machine


def effect_types(transition) -> list[type]:
    return [type(effect) for effect in transition.effects]


class TableTests(SynchronousTestCase):
    """The literal table is PS3.8 Table 9-10, and every pair behaves as it says."""

    def test_table_is_the_standards(self):
        self.assertEqual(fsm.TRANSITIONS, _standard_table())

    def test_every_pair(self):
        """Generated from the standard's table: all 13 x 19 pairs."""
        table = _standard_table()
        for state in State:
            for event in Event:
                machine = machine_in(state)
                arguments = ARGUMENTS.get(event)
                action = table.get((state, event))
                if action is None:
                    if event in fsm.LOCAL_EVENTS:
                        self.assertRaises(fsm.LocalProtocolError, machine.handle, event, arguments)
                    else:
                        # Only Sta1 and Sta4 have no transport connection to
                        # bring a peer event; there the event is ignored.
                        self.assertIn(state, (State.STA1, State.STA4), (state, event))
                        self.assertEqual(machine.handle(event, arguments).effects, [])
                    self.assertIs(machine.state, state)
                    continue
                transition = machine.handle(event, arguments)
                self.assertEqual(transition.action, action, (state, event))
                # AE-6 and AR-8 choose between two next states at run time.
                expected = STANDARD_NEXT_STATE.get(action)
                if expected is not None:
                    self.assertIs(machine.state, State(f"Sta{expected}"), (state, event, action))
                self.assertIn(machine.state, fsm.ACTION_NEXT_STATES[action])

    def test_peer_events_defined_wherever_a_connection_exists(self):
        connected = [s for s in State if s not in (State.STA1, State.STA4)]
        for state in connected:
            for event in Event:
                if event not in fsm.LOCAL_EVENTS:
                    self.assertIn((state, event), fsm.TRANSITIONS, (state, event))

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.sampled_from(list(Event)), max_size=30), st.booleans())
    def test_any_sequence_of_events(self, events, requestor):
        """Local events may be refused; nothing else ever raises, states stay valid."""
        machine = UpperLayer(requestor=requestor)
        for event in events:
            if event is Event.EVT2 and machine.pending_request is None:
                continue
            try:
                machine.handle(event, ARGUMENTS.get(event))
            except fsm.LocalProtocolError:
                self.assertIn(event, fsm.LOCAL_EVENTS)
            self.assertIsInstance(machine.state, State)


class Sta1Tests(SynchronousTestCase):
    def test_evt5_starts_artim(self):
        machine = machine_in(State.STA1)
        transition = machine.handle(Event.EVT5)
        self.assertEqual(transition.effects, [fsm.StartARTIM()])
        self.assertIs(machine.state, State.STA2)

    def test_evt1_opens_transport_then_evt2_sends_request(self):
        machine = UpperLayer(requestor=True)
        self.assertEqual(machine.handle(Event.EVT1, RQ).effects, [fsm.OpenTransport()])
        self.assertEqual(machine.handle(Event.EVT2).effects, [fsm.SendPDU(RQ)])
        self.assertIs(machine.state, State.STA5)


class Sta2Tests(SynchronousTestCase):
    def test_evt6_acceptable(self):
        machine = machine_in(State.STA2)
        transition = machine.receive(RQ)
        self.assertEqual(transition.effects, [fsm.StopARTIM(), fsm.AssociateIndication(RQ)])
        self.assertIs(machine.state, State.STA3)

    def test_evt6_rejected_by_provider(self):
        reject = AAssociateRJ(1, 2, 2)
        machine = machine_in(State.STA2, check=lambda request: reject)
        transition = machine.receive(RQ)
        self.assertEqual(
            transition.effects,
            [
                fsm.StopARTIM(),
                fsm.AssociateRejectedByProvider(RQ, reject),
                fsm.SendPDU(reject),
                fsm.StartARTIM(),
            ],
        )
        self.assertIs(machine.state, State.STA13)

    def test_evt19_invalid_pdu_aborts_as_service_user(self):
        """AA-1: A-ABORT, source 0, reason 0 (PS3.8 9.3.8), ARTIM, and the reason for the log."""
        machine = machine_in(State.STA2)
        transition = machine.handle(Event.EVT19, fsm.InvalidPDU(1, "garbage"))
        self.assertEqual(
            transition.effects,
            [fsm.SendPDU(AAbort(0, 0)), fsm.StartARTIM(), fsm.ProviderAbortIndication("garbage", peer_violation=True)],
        )
        self.assertIs(machine.state, State.STA13)

    def test_evt10_before_association(self):
        machine = machine_in(State.STA2)
        transition = machine.receive(PDATA)
        self.assertEqual(transition.action, "AA-1")
        self.assertIn("PDataTF", transition.effects[-1].reason)

    def test_evt18_closes(self):
        machine = machine_in(State.STA2)
        self.assertEqual(
            machine.handle(Event.EVT18).effects, [fsm.StopARTIM(), fsm.CloseTransport()]
        )
        self.assertIs(machine.state, State.STA1)

    def test_evt17(self):
        machine = machine_in(State.STA2)
        self.assertEqual(machine.handle(Event.EVT17).effects, [fsm.StopARTIM()])
        self.assertIs(machine.state, State.STA1)


class Sta3Tests(SynchronousTestCase):
    def test_evt7_sends_ac(self):
        machine = machine_in(State.STA3)
        self.assertEqual(machine.handle(Event.EVT7, AC).effects, [fsm.SendPDU(AC)])
        self.assertIs(machine.state, State.STA6)

    def test_evt8_sends_rj_and_starts_artim(self):
        machine = machine_in(State.STA3)
        self.assertEqual(
            machine.handle(Event.EVT8, RJ).effects, [fsm.SendPDU(RJ), fsm.StartARTIM()]
        )
        self.assertIs(machine.state, State.STA13)


class Sta5Tests(SynchronousTestCase):
    def test_evt3_accepted(self):
        machine = machine_in(State.STA5, requestor=True)
        self.assertEqual(machine.receive(AC).effects, [fsm.AssociateAccepted(AC)])
        self.assertIs(machine.state, State.STA6)

    def test_evt4_rejected(self):
        machine = machine_in(State.STA5, requestor=True)
        self.assertEqual(
            machine.receive(RJ).effects, [fsm.AssociateRejected(RJ), fsm.CloseTransport()]
        )
        self.assertIs(machine.state, State.STA1)


class Sta6Tests(SynchronousTestCase):
    def test_evt9_sends_pdata(self):
        machine = machine_in(State.STA6)
        self.assertEqual(machine.handle(Event.EVT9, PDATA).effects, [fsm.SendPDU(PDATA)])
        self.assertIs(machine.state, State.STA6)

    def test_evt10_indicates_pdata(self):
        machine = machine_in(State.STA6)
        self.assertEqual(machine.receive(PDATA).effects, [fsm.DataIndication(PDATA)])

    def test_evt11_sends_release_rq(self):
        machine = machine_in(State.STA6, requestor=True)
        self.assertEqual(machine.handle(Event.EVT11).effects, [fsm.SendPDU(AReleaseRQ())])
        self.assertIs(machine.state, State.STA7)

    def test_evt12_release_indication(self):
        machine = machine_in(State.STA6)
        self.assertEqual(machine.receive(AReleaseRQ()).effects, [fsm.ReleaseIndication()])
        self.assertIs(machine.state, State.STA8)

    def test_evt6_unexpected_rq_aborts_as_provider(self):
        machine = machine_in(State.STA6)
        transition = machine.receive(RQ)
        self.assertEqual(transition.effects[0], fsm.SendPDU(AAbort(2, AbortReason.UNEXPECTED_PDU)))
        self.assertIsInstance(transition.effects[1], fsm.ProviderAbortIndication)
        self.assertEqual(transition.effects[2], fsm.StartARTIM())
        self.assertIs(machine.state, State.STA13)

    def test_evt19_invalid_pdu_aborts_with_its_reason(self):
        machine = machine_in(State.STA6)
        transition = machine.handle(Event.EVT19, fsm.InvalidPDU(AbortReason.INVALID_PDU_PARAMETER_VALUE, "m"))
        self.assertEqual(transition.effects[0], fsm.SendPDU(AAbort(2, 6)))

    def test_evt16_user_abort(self):
        machine = machine_in(State.STA6)
        abort = AAbort(0, 0)
        self.assertEqual(
            machine.receive(abort).effects, [fsm.AbortIndication(abort), fsm.CloseTransport()]
        )
        self.assertIs(machine.state, State.STA1)

    def test_evt16_provider_abort(self):
        machine = machine_in(State.STA6)
        effects = machine.receive(AAbort(2, 1)).effects
        self.assertIsInstance(effects[0], fsm.ProviderAbortIndication)
        self.assertEqual(effects[1], fsm.CloseTransport())

    def test_evt15_local_abort(self):
        machine = machine_in(State.STA6)
        transition = machine.handle(Event.EVT15, fsm.AbortRequest("idle"))
        self.assertEqual(
            transition.effects,
            [fsm.SendPDU(AAbort(0, 0)), fsm.StartARTIM(), fsm.ProviderAbortIndication("idle")],
        )

    def test_evt17_transport_lost(self):
        machine = machine_in(State.STA6)
        self.assertIsInstance(machine.handle(Event.EVT17).effects[0], fsm.ProviderAbortIndication)
        self.assertIs(machine.state, State.STA1)


class Sta7Tests(SynchronousTestCase):
    def test_evt13_release_confirmed(self):
        machine = machine_in(State.STA7, requestor=True)
        self.assertEqual(
            machine.receive(AReleaseRP()).effects,
            [fsm.ReleaseConfirmation(), fsm.CloseTransport()],
        )
        self.assertIs(machine.state, State.STA1)

    def test_evt10_still_delivers_data(self):
        machine = machine_in(State.STA7, requestor=True)
        self.assertEqual(machine.receive(PDATA).effects, [fsm.DataIndication(PDATA)])
        self.assertIs(machine.state, State.STA7)

    def test_evt12_collision_requestor_goes_to_sta9(self):
        machine = machine_in(State.STA7, requestor=True)
        self.assertEqual(machine.receive(AReleaseRQ()).effects, [fsm.ReleaseIndication(collision=True)])
        self.assertIs(machine.state, State.STA9)

    def test_evt12_collision_acceptor_goes_to_sta10(self):
        machine = machine_in(State.STA7, requestor=False)
        machine.receive(AReleaseRQ())
        self.assertIs(machine.state, State.STA10)


class Sta8Tests(SynchronousTestCase):
    def test_evt9_data_may_still_be_sent(self):
        machine = machine_in(State.STA8)
        self.assertEqual(machine.handle(Event.EVT9, PDATA).effects, [fsm.SendPDU(PDATA)])
        self.assertIs(machine.state, State.STA8)

    def test_evt14_sends_release_rp(self):
        machine = machine_in(State.STA8)
        self.assertEqual(
            machine.handle(Event.EVT14).effects, [fsm.SendPDU(AReleaseRP()), fsm.StartARTIM()]
        )
        self.assertIs(machine.state, State.STA13)


class ReleaseCollisionTests(SynchronousTestCase):
    """PS3.8 9.2.3 / Figure: both sides send A-RELEASE-RQ at once."""

    def test_requestor_side(self):
        machine = machine_in(State.STA7, requestor=True)
        machine.receive(AReleaseRQ())  # AR-8 -> Sta9
        self.assertEqual(machine.handle(Event.EVT14).effects, [fsm.SendPDU(AReleaseRP())])
        self.assertIs(machine.state, State.STA11)
        self.assertEqual(
            machine.receive(AReleaseRP()).effects,
            [fsm.ReleaseConfirmation(), fsm.CloseTransport()],
        )
        self.assertIs(machine.state, State.STA1)

    def test_acceptor_side(self):
        machine = machine_in(State.STA7, requestor=False)
        machine.receive(AReleaseRQ())  # AR-8 -> Sta10
        self.assertEqual(machine.receive(AReleaseRP()).effects, [fsm.ReleaseConfirmation()])
        self.assertIs(machine.state, State.STA12)
        self.assertEqual(
            machine.handle(Event.EVT14).effects, [fsm.SendPDU(AReleaseRP()), fsm.StartARTIM()]
        )
        self.assertIs(machine.state, State.STA13)


class Sta13Tests(SynchronousTestCase):
    def test_pdus_are_ignored(self):
        for pdu in (PDATA, AC, RJ, AReleaseRQ(), AReleaseRP()):
            machine = machine_in(State.STA13)
            self.assertEqual(machine.receive(pdu).effects, [])
            self.assertIs(machine.state, State.STA13)

    def test_new_rq_gets_an_abort(self):
        machine = machine_in(State.STA13)
        self.assertEqual(machine.receive(RQ).effects, [fsm.SendPDU(AAbort(2, 2))])

    def test_evt17_stops_artim(self):
        machine = machine_in(State.STA13)
        self.assertEqual(machine.handle(Event.EVT17).effects, [fsm.StopARTIM()])
        self.assertIs(machine.state, State.STA1)

    def test_evt18_closes(self):
        machine = machine_in(State.STA13)
        self.assertEqual(
            machine.handle(Event.EVT18).effects, [fsm.StopARTIM(), fsm.CloseTransport()]
        )

    def test_evt16_closes(self):
        machine = machine_in(State.STA13)
        self.assertEqual(
            machine.receive(AAbort(0, 0)).effects, [fsm.StopARTIM(), fsm.CloseTransport()]
        )


class FastCellTests(SynchronousTestCase):
    """The two cells answered without a Transition agree with what the table does there."""

    def test_pdata_received_is_dt_2_and_nothing_else(self):
        for state in State:
            machine = machine_in(state)
            fast = machine.pdata_received()
            self.assertEqual(fast, fsm.TRANSITIONS.get((state, Event.EVT10)) == "DT-2", state)
            if fast:
                transition = machine.handle(Event.EVT10, PDATA)
                self.assertEqual((transition.state, transition.effects), (state, [fsm.DataIndication(PDATA)]))

    def test_can_send_pdata_where_evt9_only_sends(self):
        for state in State:
            machine = machine_in(state)
            if machine.can_send_pdata():
                transition = machine.handle(Event.EVT9, PDATA)
                self.assertEqual((transition.state, transition.effects), (state, [fsm.SendPDU(PDATA)]), state)
            else:
                self.assertRaises(fsm.LocalProtocolError, machine.handle, Event.EVT9, PDATA)
        self.assertTrue(machine_in(State.STA6).can_send_pdata())


class PayloadTests(SynchronousTestCase):
    def test_a_wrong_payload_is_refused(self):
        machine = machine_in(State.STA3)
        self.assertRaises(TypeError, machine.handle, Event.EVT7, RJ)
        self.assertRaises(TypeError, machine.handle, Event.EVT19, "bad")
        self.assertRaises(TypeError, machine.handle, Event.EVT14, AC)
        self.assertIs(machine.state, State.STA3)

    def test_next_states_are_declared_once(self):
        self.assertEqual(set(fsm.ACTION_NEXT_STATES), set(fsm.TRANSITIONS.values()))
        self.assertEqual(fsm.ACTION_NEXT_STATES["AE-6"], {State.STA3, State.STA13})
        self.assertEqual(fsm.ACTION_NEXT_STATES["DT-2"], {State.STA6})

    def test_request_check_makes_an_invalid_pdu(self):
        machine = UpperLayer(requestor=False, request_check=lambda request: "even presentation context ID 2")
        machine.state = State.STA2
        transition = machine.receive(RQ)
        self.assertEqual(transition.action, "AA-1")
        self.assertEqual(
            transition.effects[-1],
            fsm.ProviderAbortIndication("invalid PDU: even presentation context ID 2", peer_violation=True),
        )
