"""Tests for radx.scp.protocol: one association over a StringTransport on a Clock."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from radx import uids
from radx.dimse.commands import CEchoRSP, decode_command, encode_command_set
from radx.dimse.fragmenting import message_pdus
from radx.scp.factory import ServerConfig
from radx.testing import ScpHarness, associate_rq, echo_rq_bytes
from radx.ul.fsm import State
from radx.ul.negotiation import AcceptorPolicy
from radx.ul.pdu import (
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AReleaseRP,
    AReleaseRQ,
    PDataTF,
    PresentationDataValueItem,
)

CT = "1.2.840.10008.5.1.4.1.1.2"


class LogCapture:
    def __init__(self, test):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        test.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def messages(self):
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.events if e.get("log_namespace", "").startswith("radx")]


def config(**kwargs) -> ServerConfig:
    return ServerConfig(output_dir="unused", fsync=False, **kwargs)


def command_of(pdus) -> object:
    data = b"".join(bytes(item.data) for pdu in pdus for item in pdu.items)
    return decode_command(data)


class AssociationTests(SynchronousTestCase):
    def setUp(self):
        self.log = LogCapture(self)
        self.harness = ScpHarness(config())

    def associate(self, **kwargs):
        self.harness.send(associate_rq(**kwargs).encode())
        return self.harness.received_pdus()

    def test_accepts_verification(self):
        [ac] = self.associate()
        self.assertIsInstance(ac, AAssociateAC)
        self.assertEqual([(c.context_id, c.result) for c in ac.presentation_contexts], [(1, 0)])
        self.assertEqual(ac.user_information.maximum_length, 16384)
        self.assertEqual(ac.user_information.implementation_class_uid, uids.IMPLEMENTATION_CLASS_UID)
        self.assertIs(self.harness.protocol.machine.state, State.STA6)

    def test_echo_one_byte_at_a_time(self):
        self.harness.send(associate_rq().encode(), one_byte_at_a_time=True)
        self.assertIsInstance(self.harness.received_pdus()[0], AAssociateAC)
        self.harness.send(echo_rq_bytes(message_id=7), one_byte_at_a_time=True)
        response = command_of(self.harness.received_pdus())
        self.assertEqual(response, CEchoRSP(message_id_being_responded_to=7, status=0))
        self.assertIn("C-ECHO request received calling_ae=TEST-SCU count=1", self.log.messages())

    def test_many_echoes_then_release(self):
        self.associate()
        for message_id in range(1, 51):
            self.harness.send(echo_rq_bytes(message_id=message_id))
            response = command_of(self.harness.received_pdus())
            self.assertEqual(response.message_id_being_responded_to, message_id)
        self.assertEqual(self.harness.factory.stats.echo_requests, 50)
        self.harness.send(AReleaseRQ().encode())
        self.assertEqual(self.harness.received_pdus(), [AReleaseRP()])
        self.assertIn("Association released peer=127.0.0.1:40000 calling_ae=TEST-SCU", self.log.messages())
        self.assertIs(self.harness.protocol.machine.state, State.STA13)
        # The peer closes; ARTIM is stopped and nothing is left scheduled.
        self.harness.disconnect()
        self.assertEqual(self.harness.reactor.getDelayedCalls(), [])

    def test_fragmented_command(self):
        """A command set cut into many PDVs is reassembled (PS3.8 9.3.5.1)."""
        self.associate()
        from radx.dimse.commands import CEchoRQ

        command = CEchoRQ(message_id=3).encode()
        data = b"".join(p.encode() for p in message_pdus(1, command, 10, command=True))
        self.assertGreater(len(data), 5 * 12)
        self.harness.send(data)
        self.assertEqual(command_of(self.harness.received_pdus()).message_id_being_responded_to, 3)

    def test_wrong_called_ae(self):
        [rj] = self.associate(called_ae_title="WRONG-AE")
        self.assertEqual(rj, AAssociateRJ(1, 1, 7))
        self.assertIs(self.harness.protocol.machine.state, State.STA13)
        self.assertTrue(any("called AE title 'WRONG-AE'" in m for m in self.log.messages()))
        # The requestor should close; if it does not, ARTIM does.
        self.harness.reactor.advance(30)
        self.assertTrue(self.harness.closed)

    def test_calling_ae_title_with_a_newline(self):
        """Rejected, calling AE title not recognized (PS3.5 6.2); the log line shows the newline escaped."""
        [rj] = self.associate(calling_ae_title="X\nINFO: FORGED")
        self.assertEqual(rj, AAssociateRJ(1, 1, 3))
        from radx.app.logformat import format_event

        [line] = [format_event(e) for e in self.log.events if "rejected" in e.get("log_format", "")]
        self.assertIn("calling_ae=X\\nINFO: FORGED called_ae=RADX-SCP", line)

    def test_echo_refused_when_disabled(self):
        self.harness = ScpHarness(config(policy=AcceptorPolicy(accept_echo=False)))
        [ac] = self.associate()
        self.assertEqual(ac.presentation_contexts[0].result, 3)

    def test_unknown_command_gets_unrecognized_operation(self):
        self.associate()
        # C-FIND-RQ (0x0020) with no data set: radx does not implement it.
        command = encode_command_set(
            {0x00000002: uids.VERIFICATION_SOP_CLASS, 0x00000100: 0x0020, 0x00000110: 9, 0x00000800: 0x0101}
        )
        self.harness.send(b"".join(p.encode() for p in message_pdus(1, command, 16384, command=True)))
        response = command_of(self.harness.received_pdus())
        self.assertEqual(response.command_field, 0x8020)
        self.assertEqual(response.elements[0x00000900], 0x0211)


def command_set_bytes(elements) -> bytes:
    """A command set with no check of its values: (tag, raw value) pairs, group length first."""
    import struct

    body = b"".join(struct.pack("<HHI", 0, tag, len(raw)) + raw for tag, raw in elements)
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


def command_pdus(context_id, command: bytes) -> bytes:
    return b"".join(p.encode() for p in message_pdus(context_id, command, 16384, command=True))


# 65 characters: one more than a UID may have (PS3.5 9.1).
LONG_UID = "1.2.840.10008.5.1.4.1.1.2." + "1" * 39


class EchoedValueTests(SynchronousTestCase):
    """A response repeats only the request's values that fit it: never an unhandled error."""

    def setUp(self):
        self.log = LogCapture(self)
        self.harness = ScpHarness(config())

    def test_echo_with_an_affected_sop_class_uid_over_64_characters(self):
        self.harness.send(associate_rq().encode())
        self.harness.received_pdus()
        command = command_set_bytes(
            [(0x0002, LONG_UID.encode() + b"\0"), (0x0100, b"\x30\x00"), (0x0110, b"\x07\x00"), (0x0800, b"\x01\x01")]
        )
        self.harness.send(command_pdus(1, command))
        response = command_of(self.harness.received_pdus())
        self.assertEqual(response, CEchoRSP(message_id_being_responded_to=7, status=0x0122, affected_sop_class_uid=None))
        self.assertIs(self.harness.protocol.machine.state, State.STA6)

    def test_store_with_uids_over_64_characters(self):
        """0117 for the instance UID, 0122 for the class UID; the response leaves out what it cannot hold."""
        self.harness.send(associate_rq(contexts=[(1, CT, (uids.IMPLICIT_VR_LITTLE_ENDIAN,))]).encode())
        self.harness.received_pdus()
        data_set = message_pdus(1, b"\x08\x00\x18\x00\x02\x00\x00\x001\x00", 16384, command=False)
        for message_id, sop_class, sop_instance, status in (
            (1, CT, LONG_UID, 0x0117),
            (2, LONG_UID, "1.2.3.4", 0x0122),
        ):
            command = command_set_bytes(
                [
                    (0x0002, sop_class.encode() + b"\0" * (len(sop_class) % 2)),
                    (0x0100, b"\x01\x00"),
                    (0x0110, bytes([message_id, 0])),
                    (0x0700, b"\x00\x00"),
                    (0x0800, b"\x01\x00"),
                    (0x1000, sop_instance.encode() + b"\0" * (len(sop_instance) % 2)),
                ]
            )
            self.harness.send(command_pdus(1, command) + b"".join(p.encode() for p in data_set))
            response = command_of(self.harness.received_pdus())
            self.assertEqual(response.message_id_being_responded_to, message_id)
            self.assertEqual(response.status, status)
            self.assertEqual(
                (response.affected_sop_class_uid, response.affected_sop_instance_uid),
                (sop_class if sop_class == CT else None, sop_instance if sop_instance != LONG_UID else None),
            )
        self.assertIs(self.harness.protocol.machine.state, State.STA6)
        self.assertEqual(self.harness.factory.stats.store_failures, 2)


class InvalidInputTests(SynchronousTestCase):
    def setUp(self):
        self.log = LogCapture(self)
        self.harness = ScpHarness(config())

    def assert_aborted_once(self, source, reason, needle):
        pdus = self.harness.received_pdus()
        self.assertEqual(pdus, [AAbort(source, reason)])
        messages = [m for m in self.log.messages() if "aborted" in m]
        self.assertEqual(len(messages), 1, self.log.messages())
        self.assertIn("127.0.0.1:40000", messages[0])
        self.assertIn(needle, messages[0])

    def test_http_request(self):
        self.harness.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assert_aborted_once(0, 0, "invalid PDU")
        self.harness.reactor.advance(30)
        self.assertTrue(self.harness.closed)

    def test_tls_client_hello(self):
        self.harness.send(bytes.fromhex("160301020001"))
        self.assert_aborted_once(0, 0, "invalid PDU")

    def test_declared_length_too_large(self):
        self.harness.send(associate_rq().encode())
        self.harness.received_pdus()
        self.harness.send(bytes.fromhex("0400ffffffff"))
        self.assert_aborted_once(2, 6, "invalid PDU")

    def test_associate_rq_declaring_1_mib(self):
        """What a connection buffers before association is bounded by what a real request needs."""
        self.harness.send(bytes.fromhex("01 00 00100000") + b"\x00" * 4096)
        self.assert_aborted_once(0, 0, "invalid PDU: A-ASSOCIATE-RQ declares PDU-length 1048576, over the limit")
        self.assertEqual(self.harness.protocol.reader.buffered, 0)

    def test_pdata_for_unaccepted_context(self):
        self.harness.send(associate_rq().encode())
        self.harness.received_pdus()
        self.harness.send(echo_rq_bytes(context_id=3))
        self.assert_aborted_once(2, 6, "presentation context 3")

    def test_command_while_a_data_set_is_open_is_a_warning(self):
        """A peer's protocol violation is logged at WARN; radx's own idle timeout stays INFO."""
        self.harness.send(associate_rq(contexts=[(1, CT, (uids.IMPLICIT_VR_LITTLE_ENDIAN,))]).encode())
        self.harness.received_pdus()
        command = command_set_bytes(
            [(0x0002, CT.encode()), (0x0100, b"\x01\x00"), (0x0110, b"\x01\x00"), (0x0700, b"\x00\x00"),
             (0x0800, b"\x01\x00"), (0x1000, b"1.2.3.4\0")]
        )
        first_fragment = PDataTF((PresentationDataValueItem(1, 0x00, b"\x08\x00\x16\x00"),)).encode()
        self.harness.send(command_pdus(1, command) + first_fragment + echo_rq_bytes(context_id=1, message_id=2))
        self.assert_aborted_once(2, 6, "while the data set")
        [event] = [e for e in self.log.events if e.get("log_format", "").startswith("Association aborted")]
        self.assertEqual(event["log_level"].name, "warn")

    def test_idle_timeout_is_not_a_warning(self):
        harness = ScpHarness(config(idle_timeout=60))
        harness.send(associate_rq().encode())
        harness.reactor.advance(61)
        [event] = [e for e in self.log.events if e.get("log_format", "").startswith("Association aborted")]
        self.assertEqual(event["log_level"].name, "info")

    def test_pdata_before_association(self):
        self.harness.send(echo_rq_bytes())
        self.assert_aborted_once(0, 0, "unexpected PDataTF")

    def test_second_associate_rq(self):
        self.harness.send(associate_rq().encode())
        self.harness.received_pdus()
        self.harness.send(associate_rq().encode())
        self.assert_aborted_once(2, 2, "unexpected AAssociateRQ")

    def test_even_context_id(self):
        self.harness.send(associate_rq(contexts=[(2, uids.VERIFICATION_SOP_CLASS, ("1.2.840.10008.1.2",))]).encode())
        self.assert_aborted_once(0, 0, "even presentation context ID 2")

    def test_data_set_with_no_command(self):
        self.harness.send(associate_rq().encode())
        self.harness.received_pdus()
        self.harness.send(PDataTF((PresentationDataValueItem(1, 2, b"\x08\x00"),)).encode())
        self.assert_aborted_once(2, 6, "DIMSE")

    def test_garbage_after_abort_is_ignored(self):
        self.harness.send(b"\xff" * 10)
        self.harness.received_pdus()
        self.harness.send(b"\xff" * 10)
        self.assertEqual(self.harness.received_pdus(), [])


class TimerTests(SynchronousTestCase):
    def test_artim_closes_a_silent_connection(self):
        harness = ScpHarness(config(artim_timeout=5))
        harness.reactor.advance(4.9)
        self.assertFalse(harness.closed)
        harness.reactor.advance(0.2)
        self.assertTrue(harness.closed)
        self.assertEqual(harness.received_pdus(), [])

    def test_idle_association_is_aborted(self):
        harness = ScpHarness(config(idle_timeout=60, artim_timeout=5))
        harness.send(associate_rq().encode())
        harness.received_pdus()
        harness.reactor.advance(59)
        harness.send(echo_rq_bytes())  # activity resets the idle timer
        harness.received_pdus()
        harness.reactor.advance(59)
        self.assertEqual(harness.received_pdus(), [])
        harness.reactor.advance(2)
        self.assertEqual(harness.received_pdus(), [AAbort(0, 0)])
        harness.reactor.advance(5)
        self.assertTrue(harness.closed)
        harness.disconnect()
        self.assertEqual(harness.reactor.getDelayedCalls(), [])

    def test_release_never_closed_by_peer(self):
        harness = ScpHarness(config(artim_timeout=5))
        harness.send(associate_rq().encode() + AReleaseRQ().encode())
        self.assertEqual(harness.received_pdus()[-1], AReleaseRP())
        self.assertFalse(harness.closed)
        harness.reactor.advance(5)
        self.assertTrue(harness.closed)


class LimitTests(SynchronousTestCase):
    def test_max_conns(self):
        """PS3.8 9.3.4: transient, service-provider (presentation), local-limit-exceeded."""
        log = LogCapture(self)
        harness = ScpHarness(config(max_conns=1))
        harness.send(associate_rq().encode())
        self.assertIsInstance(harness.received_pdus()[0], AAssociateAC)
        # A connection that never associates does not count.
        idle = harness.connect(("127.0.0.1", 40001))
        second = harness.connect(("127.0.0.1", 40002))
        second.dataReceived(associate_rq().encode())
        self.assertEqual(PDUReaderFor(second), [AAssociateRJ(2, 3, 2)])
        self.assertTrue(any("local limit exceeded" in m for m in log.messages()))
        # Once the first ends, a new one is accepted.
        harness.disconnect()
        third = harness.connect(("127.0.0.1", 40003))
        third.dataReceived(associate_rq().encode())
        self.assertIsInstance(PDUReaderFor(third)[0], AAssociateAC)
        self.assertIs(idle.machine.state, State.STA2)


    def test_max_pending_closes_the_oldest_connection_not_associated(self):
        """Past --max-pending the oldest unassociated connection is closed; associations do not count."""
        log = LogCapture(self)
        harness = ScpHarness(config(max_pending=2, max_conns=5))
        first = harness.protocol
        first.dataReceived(bytes.fromhex("01 00 00010000") + b"\x00" * 1000)  # part of a request
        # An association leaves the pending ones.
        associated = harness.connect(("127.0.0.1", 40002))
        associated.dataReceived(associate_rq().encode())
        self.assertIsInstance(PDUReaderFor(associated)[0], AAssociateAC)
        second = harness.connect(("127.0.0.1", 40001))
        self.assertFalse(first.transport.disconnecting)
        self.assertEqual(list(harness.factory.pending), [first, second])
        third = harness.connect(("127.0.0.1", 40003))
        self.assertTrue(first.transport.disconnected)  # aborted: nothing to flush
        self.assertEqual(first.transport.value(), b"")
        self.assertEqual(list(harness.factory.pending), [second, third])
        self.assertFalse(second.transport.disconnecting or third.transport.disconnecting or associated.transport.disconnecting)
        # The newest connection is served.
        third.dataReceived(associate_rq().encode())
        self.assertIsInstance(PDUReaderFor(third)[0], AAssociateAC)
        first.connectionLost(None)
        self.assertEqual(
            [m for m in log.messages() if "40000" in m],
            ["Closing peer=127.0.0.1:40000: the oldest of 3 connections not associated (--max-pending 2)"],
        )
        self.assertNotIn(first, harness.factory.connections)


    def test_memory_released_once_after_connections_not_associated_close(self):
        harness = ScpHarness(config())
        released = []
        harness.factory.release_memory = lambda: released.append(harness.reactor.seconds())
        harness.send(bytes.fromhex("01 00 00010000") + b"\x00" * 1000)
        other = harness.connect(("127.0.0.1", 40001))
        associated = harness.connect(("127.0.0.1", 40002))
        associated.dataReceived(associate_rq().encode())
        self.assertEqual(harness.protocol.reader.buffered, 1006)
        harness.disconnect()
        self.assertEqual(harness.protocol.reader.buffered, 0)  # not left for the collector
        other.connectionLost(None)
        harness.reactor.advance(1)
        self.assertEqual(released, [1])
        # An association's end does not: its buffers serve the next one.
        associated.connectionLost(None)
        harness.reactor.advance(5)
        self.assertEqual(released, [1])


def PDUReaderFor(protocol):
    from radx.ul.framing import PDUReader

    return PDUReader(maximum_pdata_length=0).feed(protocol.transport.value())


class DimseTimeoutTests(SynchronousTestCase):
    def test_trickling_sender_is_aborted(self):
        """One byte a second never completes a PDU: the DIMSE timeout aborts."""
        harness = ScpHarness(config(dimse_timeout=10, idle_timeout=120, artim_timeout=5))
        harness.send(associate_rq().encode())
        harness.received_pdus()
        data = echo_rq_bytes()
        for i in range(10):
            harness.send(data[i : i + 1])
            harness.reactor.advance(1)
        self.assertEqual(harness.received_pdus(), [AAbort(0, 0)])
        harness.reactor.advance(5)
        self.assertTrue(harness.closed)

    def test_slow_but_steady_pdus_are_fine(self):
        harness = ScpHarness(config(dimse_timeout=10))
        harness.send(associate_rq().encode())
        harness.received_pdus()
        for message_id in range(1, 4):
            data = echo_rq_bytes(message_id=message_id)
            harness.send(data[:5])
            harness.reactor.advance(9)
            harness.send(data[5:])
            self.assertEqual(command_of(harness.received_pdus()).message_id_being_responded_to, message_id)


class ShutdownTests(SynchronousTestCase):
    def test_idle_associations_are_aborted_and_new_requests_rejected(self):
        harness = ScpHarness(config())
        harness.send(associate_rq().encode())
        harness.received_pdus()
        waiting = harness.connect(("127.0.0.1", 40001))
        done = harness.factory.shut_down()
        self.assertEqual(harness.received_pdus(), [AAbort(0, 0)])
        self.assertTrue(harness.closed)
        # A connection that had not associated asks now: a transient reject
        # (PS3.8 9.3.4: service-provider presentation, temporary congestion).
        waiting.dataReceived(associate_rq().encode())
        self.assertEqual(PDUReaderFor(waiting), [AAssociateRJ(2, 3, 1)])
        harness.protocol.connectionLost(None)
        self.assertNoResult(done)
        waiting.connectionLost(None)
        self.successResultOf(done)


class PDataFastPathTests(SynchronousTestCase):
    """The protocol hands a P-DATA-TF in Sta6 to DIMSE without the machine: what the table says happens."""

    def test_sta6_p_data_is_dt_2_and_stays_in_sta6(self):
        from radx.ul import fsm
        from radx.ul.pdu import PDataTF, PresentationDataValueItem

        self.assertEqual(fsm.TRANSITIONS[(fsm.State.STA6, fsm.Event.EVT10)], "DT-2")
        machine = fsm.UpperLayer()
        machine.state = fsm.State.STA6
        pdu = PDataTF((PresentationDataValueItem(1, 0x03, b"\x00\x00"),))
        transition = machine.receive(pdu)
        self.assertEqual((transition.state, transition.effects), (fsm.State.STA6, [fsm.DataIndication(pdu)]))

    def test_sta6_send_is_dt_1_and_stays_in_sta6(self):
        """A response in Sta6 is written without the machine: what (Sta6, Evt9) says happens."""
        from radx.dimse.fragmenting import EncodedPDUs
        from radx.ul import fsm

        self.assertEqual(fsm.TRANSITIONS[(fsm.State.STA6, fsm.Event.EVT9)], "DT-1")
        machine = fsm.UpperLayer()
        machine.state = fsm.State.STA6
        pdus = EncodedPDUs(b"P-DATA-TF bytes")
        transition = machine.handle(fsm.Event.EVT9, pdus)
        self.assertEqual((transition.state, transition.effects), (fsm.State.STA6, [fsm.SendPDU(pdus)]))

    def test_echoes_answered_through_the_fast_path(self):
        harness = ScpHarness(ServerConfig(output_dir=self.mktemp()))
        harness.send(associate_rq().encode())
        harness.received_pdus()
        for message_id in range(1, 4):
            harness.send(echo_rq_bytes(message_id=message_id))
            self.assertEqual(harness.protocol.machine.state, State.STA6)
        answers = [decode_command(bytes(pdu.items[0].data)) for pdu in harness.received_pdus()]
        self.assertEqual([a.message_id_being_responded_to for a in answers], [1, 2, 3])


class WriteBufferedTransport(StringTransport):
    """
    A StringTransport that, as Twisted's own transports do, pauses its
    streaming producer while more than ``high_water`` written bytes are
    unsent, and resumes it when ``drain`` sends them all.
    """

    high_water = 4096

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.producer_paused = False

    def write(self, data):
        super().write(data)
        if self.producer is not None and self.streaming and not self.producer_paused:
            if len(self.value()) > self.high_water:
                self.producer_paused = True
                self.producer.pauseProducing()

    def drain(self):
        self.clear()
        if self.producer is not None and self.producer_paused:
            self.producer_paused = False
            self.producer.resumeProducing()


class UnreadResponsesTests(SynchronousTestCase):
    """A peer that sends requests and does not read the responses is read no further."""

    def setUp(self):
        self.harness = ScpHarness(config(idle_timeout=120.0))
        address = IPv4Address("TCP", "127.0.0.1", 40001)
        self.protocol = self.harness.factory.buildProtocol(address)
        self.transport = WriteBufferedTransport(peerAddress=address)
        self.protocol.makeConnection(self.transport)
        self.protocol.dataReceived(associate_rq().encode())
        self.transport.clear()

    def send_while_read(self, count: int) -> int:
        """Deliver C-ECHO-RQs one by one while the transport reads; how many were delivered."""
        for sent in range(count):
            if self.transport.producerState != "producing":
                return sent
            self.protocol.dataReceived(echo_rq_bytes(message_id=sent + 1))
        return count

    def test_registered_as_the_transports_streaming_producer(self):
        self.assertIs(self.transport.producer, self.protocol)
        self.assertTrue(self.transport.streaming)

    def test_reading_stops_while_the_write_buffer_is_full(self):
        sent = self.send_while_read(1000)
        self.assertLess(sent, 1000)
        self.assertEqual(self.harness.factory.stats.echo_requests, sent)
        self.assertEqual(self.transport.producerState, "paused")
        # The peer reads: radx reads again, and stops again at the same bound.
        self.transport.drain()
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(self.send_while_read(1000), sent)

    def test_other_reasons_to_pause_still_hold_when_the_buffer_drains(self):
        self.send_while_read(1000)
        self.protocol.pause_reading("backlog")
        self.transport.drain()
        self.assertEqual(self.transport.producerState, "paused")
        self.protocol.resume_reading("backlog")
        self.assertEqual(self.transport.producerState, "producing")

    def test_a_peer_that_never_reads_is_aborted_by_the_idle_timeout_and_closed(self):
        self.send_while_read(1000)
        self.transport.clear()  # what the peer would have read
        self.harness.reactor.advance(120)
        self.assertEqual(PDUReaderFor(self.protocol), [AAbort(0, 0)])
        self.assertIs(self.protocol.machine.state, State.STA13)
        # ARTIM: the connection is closed, the producer unregistered first
        # (Twisted would not close it otherwise), and cut if it does not flush.
        self.harness.reactor.advance(30)
        self.assertIsNone(self.transport.producer)
        self.assertTrue(self.transport.disconnecting)
        self.harness.reactor.advance(1)
        self.assertTrue(self.transport.disconnected)

    def test_the_producer_is_unregistered_before_a_release_closes(self):
        self.protocol.dataReceived(AReleaseRQ().encode())
        self.assertEqual(PDUReaderFor(self.protocol), [AReleaseRP()])
        self.harness.reactor.advance(30)
        self.assertIsNone(self.transport.producer)
        self.assertTrue(self.transport.disconnecting)
