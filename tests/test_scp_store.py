"""C-STORE through the protocol, no sockets: bytes in, files and statuses out."""

from __future__ import annotations

import dataclasses
import os

from pydicom.data import get_testdata_file
from twisted.trial.unittest import SynchronousTestCase

from radx.dimse.commands import CStoreRSP, decode_command
from radx.scp.factory import ServerConfig
from radx.storage.filing import Filing
from radx.storage.part10 import data_set_offset
from radx.storage.store import INCOMING
from radx.testing import ScpHarness, SteppedThreadPool, associate_rq, store_rq_bytes
from radx.ul.framing import PDUReader
from radx.ul.fsm import State
from radx.ul.pdu import (
    AAbort,
    AAssociateAC,
    AReleaseRP,
    AReleaseRQ,
    AsynchronousOperationsWindowSubItem,
    UserInformationItem,
)
from tests import dicomfiles
from tests.test_scp_protocol import LogCapture

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
CT_SMALL_INSTANCE = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
CT_SMALL_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
CT_SMALL_SERIES = "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322"


def data_set_of(path: str) -> bytes:
    with open(path, "rb") as f:
        offset = data_set_offset(f)
        f.seek(offset)
        return f.read()


def responses(harness) -> list:
    """The DIMSE responses in what radx wrote (single-fragment commands)."""
    return [
        decode_command(bytes(item.data))
        for pdu in harness.received_pdus()
        if hasattr(pdu, "items")
        for item in pdu.items
    ]


class StoreTests(SynchronousTestCase):
    def setUp(self):
        self.log = LogCapture(self)
        self.output = self.mktemp()
        os.makedirs(self.output)
        self.ct = data_set_of(get_testdata_file("CT_small.dcm"))

    def harness(self, threadpool=None, **kwargs):
        config = ServerConfig(output_dir=self.output, fsync=False, **kwargs)
        harness = ScpHarness(config, threadpool=threadpool)
        harness.send(associate_rq(contexts=[(1, CT, (EXPLICIT_LE,))]).encode())
        [ac] = harness.received_pdus()
        self.assertIsInstance(ac, AAssociateAC)
        return harness

    def incoming(self) -> list[str]:
        """Temporary files left in OUTPUT/.radx-incoming."""
        folder = os.path.join(self.output, INCOMING)
        return os.listdir(folder) if os.path.exists(folder) else []

    def stored_path(self):
        return os.path.join(self.output, CT_SMALL_STUDY, CT_SMALL_SERIES, CT_SMALL_INSTANCE + ".dcm")

    def test_store_is_filed_bit_for_bit(self):
        harness = self.harness()
        harness.send(store_rq_bytes(self.ct, CT, CT_SMALL_INSTANCE, message_id=5))
        [response] = responses(harness)
        self.assertEqual(
            response,
            CStoreRSP(message_id_being_responded_to=5, status=0, affected_sop_class_uid=CT,
                      affected_sop_instance_uid=CT_SMALL_INSTANCE),
        )
        self.assertEqual(data_set_of(self.stored_path()), self.ct)
        messages = self.log.messages()
        self.assertIn(f"C-STORE request received calling_ae=TEST-SCU sop_class={CT} count=1", messages)
        self.assertIn(f"Stored DICOM file path={self.stored_path()}", messages)
        self.assertEqual(self.incoming(), [])

    def test_odd_length_data_set_is_stored_as_it_arrived(self):
        """
        pydicom's image_dfl.dcm, a 4303-byte deflated data set, from a sender
        that does not add PS3.5 A.5's trailing NULL byte, and from one that
        does: both accepted, each stored bit for bit as it arrived.
        """
        secondary_capture, deflated = "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.1.2.1.99"
        instance = "1.3.6.1.4.1.5962.1.1.0.0.0.977067309.6001.0"
        data = data_set_of(get_testdata_file("image_dfl.dcm"))
        self.assertEqual(len(data), 4303)
        for data_set in (data, data + b"\x00"):
            output = self.mktemp()
            harness = ScpHarness(ServerConfig(output_dir=output, fsync=False, filing=Filing(organize=False)))
            harness.send(associate_rq(contexts=[(1, secondary_capture, (deflated,))]).encode())
            self.assertIsInstance(harness.received_pdus()[0], AAssociateAC)
            harness.send(store_rq_bytes(data_set, secondary_capture, instance))
            self.assertEqual([r.status for r in responses(harness)], [0])
            self.assertEqual(data_set_of(os.path.join(output, instance + ".dcm")), data_set)

    def test_sop_class_must_match_its_context(self):
        """PS3.4 B.2.3: an MR on a context negotiated for CT is refused (0122), nothing stored."""
        harness = self.harness()
        harness.send(store_rq_bytes(self.ct, "1.2.840.10008.5.1.4.1.1.4", CT_SMALL_INSTANCE))
        [response] = responses(harness)
        self.assertEqual(response.status, 0x0122)
        self.assertFalse(os.path.exists(self.stored_path()))

    def test_file_meta_names_both_ends(self):
        harness = self.harness()
        harness.send(store_rq_bytes(self.ct, CT, CT_SMALL_INSTANCE))
        self.assertEqual(responses(harness)[0].status, 0)
        import pydicom

        meta = pydicom.dcmread(self.stored_path(), stop_before_pixels=True).file_meta
        self.assertEqual(meta.SourceApplicationEntityTitle, "TEST-SCU")
        self.assertEqual(meta[0x00020017].value, "TEST-SCU")
        self.assertEqual(meta[0x00020018].value, "RADX-SCP")
        self.assertEqual(meta.TransferSyntaxUID, EXPLICIT_LE)

    def test_flat_layout(self):
        harness = self.harness(filing=Filing(organize=False))
        harness.send(store_rq_bytes(self.ct, CT, CT_SMALL_INSTANCE))
        self.assertEqual(responses(harness)[0].status, 0)
        self.assertEqual(data_set_of(os.path.join(self.output, CT_SMALL_INSTANCE + ".dcm")), self.ct)

    def test_one_byte_at_a_time(self):
        harness = self.harness()
        harness.send(store_rq_bytes(self.ct, CT, CT_SMALL_INSTANCE, maximum_length=4096), one_byte_at_a_time=True)
        self.assertEqual(responses(harness)[0].status, 0)
        self.assertEqual(data_set_of(self.stored_path()), self.ct)

    def test_mismatched_instance_is_refused(self):
        harness = self.harness()
        harness.send(store_rq_bytes(self.ct, CT, "1.2.3.4"))
        [response] = responses(harness)
        self.assertEqual(response.status, 0xA900)
        self.assertFalse(os.path.exists(os.path.join(self.output, "1.2.3.4.dcm")))
        self.assertEqual(harness.factory.stats.store_failures, 1)

    def test_malformed_instance_uid_writes_nothing(self):
        harness = self.harness()
        harness.send(store_rq_bytes(self.ct, CT, "../../escape"))
        [response] = responses(harness)
        self.assertEqual(response.status, 0x0117)
        self.assertEqual(os.listdir(self.output), [])

    def test_no_patient_data_in_the_log(self):
        """(0008,0018)'s length swallows the patient's name: the log shows that value by its length only."""
        import struct

        def element(group, number, vr, value):
            return struct.pack("<HH2sH", group, number, vr, len(value)) + value

        name = element(0x0010, 0x0010, b"PN", b"DOE^JANE")
        data_set = (
            element(0x0008, 0x0016, b"UI", CT.encode() + b"\0")
            + struct.pack("<HH2sH", 0x0008, 0x0018, b"UI", 10 + len(name))
            + b"1.2.3.88\0\0"
            + name
        )
        harness = self.harness()
        harness.send(store_rq_bytes(data_set, CT, "1.2.3.88"))
        [response] = responses(harness)
        self.assertEqual(response.status, 0xA900)
        messages = self.log.messages()
        self.assertTrue(any("<26 characters, not a UID>" in m for m in messages), messages)
        self.assertFalse([m for m in messages if "DOE" in m])
        self.assertNotIn("DOE", response.error_comment)

    def test_unreadable_data_set(self):
        harness = self.harness()
        harness.send(store_rq_bytes(b"\x01\x02" * 100, CT, "1.2.3.4"))
        self.assertEqual(responses(harness)[0].status, 0xC000)
        self.assertEqual(self.incoming(), [])

    def test_association_goes_on_after_a_failure(self):
        harness = self.harness()
        harness.send(store_rq_bytes(self.ct, CT, "1.2.3.4", message_id=1))
        harness.send(store_rq_bytes(self.ct, CT, CT_SMALL_INSTANCE, message_id=2))
        self.assertEqual([r.status for r in responses(harness)], [0xA900, 0])

    def test_abort_in_the_middle_leaves_nothing(self):
        pool = SteppedThreadPool()
        harness = self.harness(threadpool=pool)
        data = store_rq_bytes(self.ct, CT, CT_SMALL_INSTANCE)
        harness.send(data[: len(data) // 2])
        pool.run_all()
        harness.send(AAbort(0, 0).encode())
        pool.run_all()
        self.assertEqual(harness.received_pdus(), [])
        self.assertFalse(os.path.exists(self.stored_path()))
        self.assertEqual(self.incoming(), [])

    def test_release_waits_for_the_response(self):
        """PS3.8 AR-7: the C-STORE-RSP may follow the A-RELEASE-RQ; the RP comes after it."""
        pool = SteppedThreadPool()
        harness = self.harness(threadpool=pool)
        harness.send(store_rq_bytes(self.ct, CT, CT_SMALL_INSTANCE) + AReleaseRQ().encode())
        self.assertEqual(harness.received_pdus(), [])
        # The response goes out in Sta8, through the machine (AR-7), not Sta6's DT-1 shortcut.
        self.assertIs(harness.protocol.machine.state, State.STA8)
        pool.run_all()
        pdus = harness.received_pdus()
        self.assertEqual(decode_command(bytes(pdus[0].items[0].data)).status, 0)
        self.assertEqual(pdus[1:], [AReleaseRP()])

    def test_release_in_the_middle_of_a_data_set(self):
        """PS3.8 7.2.2: the rest of the data set cannot come after A-RELEASE-RQ; released at once, nothing stored."""
        pool = SteppedThreadPool()
        harness = self.harness(threadpool=pool)
        data = store_rq_bytes(self.ct, CT, CT_SMALL_INSTANCE, maximum_length=4096)
        # Whole PDUs, cut before the data set's last fragment.
        pdus = PDUReader(maximum_pdata_length=0).feed(data)
        harness.send(b"".join(p.encode() for p in pdus[: len(pdus) // 2]))
        pool.run_all()
        harness.send(AReleaseRQ().encode())
        self.assertEqual(harness.received_pdus(), [AReleaseRP()])
        self.assertIs(harness.protocol.machine.state, State.STA13)
        pool.run_all()
        self.assertFalse(os.path.exists(self.stored_path()))
        self.assertEqual(self.incoming(), [])
        self.assertEqual(harness.factory.stats.store_failures, 1)
        [line] = [e for e in self.log.events if "A-RELEASE-RQ in the middle" in e.get("log_format", "")]
        self.assertEqual(line["log_level"].name, "warn")
        harness.disconnect()
        self.assertEqual(harness.reactor.getDelayedCalls(), [])

    def test_success_only_after_the_file_is_in_place(self):
        pool = SteppedThreadPool()
        harness = self.harness(threadpool=pool)
        harness.send(store_rq_bytes(self.ct, CT, CT_SMALL_INSTANCE))
        self.assertEqual(harness.received_pdus(), [])
        self.assertFalse(os.path.exists(self.stored_path()))
        pool.run_all()
        self.assertTrue(os.path.exists(self.stored_path()))
        self.assertEqual(responses(harness)[0].status, 0)

    def test_shutdown_lets_the_store_in_progress_finish(self):
        pool = SteppedThreadPool()
        harness = self.harness(threadpool=pool)
        harness.send(store_rq_bytes(self.ct, CT, CT_SMALL_INSTANCE))
        done = harness.factory.shut_down()
        self.assertEqual(harness.received_pdus(), [])
        pool.run_all()
        pdus = harness.received_pdus()
        self.assertEqual(decode_command(bytes(pdus[0].items[0].data)).status, 0)
        self.assertEqual(pdus[1:], [AAbort(0, 0)])
        self.assertEqual(data_set_of(self.stored_path()), self.ct)
        harness.protocol.connectionLost(None)
        self.successResultOf(done)

    def test_drain_timeout_discards_a_data_set_still_arriving(self):
        pool = SteppedThreadPool()
        harness = self.harness(threadpool=pool, drain_timeout=10)
        data = store_rq_bytes(self.ct, CT, CT_SMALL_INSTANCE)
        harness.send(data[: len(data) // 2])
        pool.run_all()
        done = harness.factory.shut_down()
        harness.reactor.advance(9)
        self.assertEqual(harness.received_pdus(), [])
        harness.reactor.advance(1)
        self.assertEqual(harness.received_pdus(), [AAbort(0, 0)])
        harness.protocol.connectionLost(None)
        pool.run_all()
        self.successResultOf(done)
        self.assertFalse(os.path.exists(self.stored_path()))
        self.assertEqual(self.incoming(), [])

    def test_no_idle_abort_while_the_instance_is_being_filed(self):
        """The peer waits for the response radx owes: that is not idleness."""
        pool = SteppedThreadPool()
        harness = self.harness(threadpool=pool, idle_timeout=2)
        harness.send(store_rq_bytes(self.ct, CT, CT_SMALL_INSTANCE))
        harness.reactor.advance(5)
        self.assertEqual(harness.received_pdus(), [])
        pool.run_all()
        self.assertEqual(responses(harness)[0].status, 0)
        # Once answered, silence is idleness again.
        harness.reactor.advance(2)
        self.assertEqual(harness.received_pdus(), [AAbort(0, 0)])


def with_window(request, invoked: int, performed: int = 1):
    """``request`` proposing an Asynchronous Operations Window (PS3.7 D.3.3.3)."""
    sub_items = request.user_information.sub_items + (AsynchronousOperationsWindowSubItem(invoked, performed),)
    return dataclasses.replace(request, user_information=UserInformationItem(sub_items))


class AsynchronousOperationsTests(SynchronousTestCase):
    """Several C-STOREs outstanding on one association (PS3.7 D.3.3.3)."""

    def setUp(self):
        self.log = LogCapture(self)
        self.output = self.mktemp()
        os.makedirs(self.output)
        ct = data_set_of(get_testdata_file("CT_small.dcm"))
        # Three instances: CT_small with its SOP Instance UID's last digit changed.
        self.instances = [CT_SMALL_INSTANCE[:-1] + str(n) for n in (3, 4, 5)]
        self.data_sets = [ct.replace(CT_SMALL_INSTANCE.encode(), uid.encode()) for uid in self.instances]
        self.pool = SteppedThreadPool()

    def harness(self, window=None):
        config = ServerConfig(output_dir=self.output, fsync=False)
        harness = ScpHarness(config, threadpool=self.pool)
        request = associate_rq(contexts=[(1, CT, (EXPLICIT_LE,))])
        harness.send((request if window is None else with_window(request, window)).encode())
        [ac] = harness.received_pdus()
        self.assertIsInstance(ac, AAssociateAC)
        return harness, ac

    def send_all(self, harness):
        for n, (uid, data_set) in enumerate(zip(self.instances, self.data_sets), start=1):
            harness.send(store_rq_bytes(data_set, CT, uid, message_id=n))

    def stored(self, uid) -> bytes:
        return data_set_of(os.path.join(self.output, CT_SMALL_STUDY, CT_SMALL_SERIES, uid + ".dcm"))

    def test_window_granted_and_used(self):
        harness, ac = self.harness(window=4)
        window = ac.user_information.asynchronous_operations_window
        self.assertEqual((window.maximum_number_operations_invoked, window.maximum_number_operations_performed), (4, 1))
        self.send_all(harness)
        # All three data sets read while none is answered yet: reading never paused.
        self.assertEqual(harness.received_pdus(), [])
        self.assertEqual(harness.transport.producerState, "producing")
        self.pool.run_all()
        answered = responses(harness)
        self.assertEqual([(r.message_id_being_responded_to, r.status) for r in answered], [(1, 0), (2, 0), (3, 0)])
        self.assertEqual([r.affected_sop_instance_uid for r in answered], self.instances)
        for uid, data_set in zip(self.instances, self.data_sets):
            self.assertEqual(self.stored(uid), data_set)
        self.assertFalse(any("exceeded" in m for m in self.log.messages()))

    def test_peer_beyond_its_window_is_slowed_not_dropped(self):
        """No window proposed (1): a peer that sends on anyway is read no further until answered."""
        harness, ac = self.harness()
        self.assertIsNone(ac.user_information.asynchronous_operations_window)
        uid, data_set = self.instances[0], self.data_sets[0]
        harness.send(store_rq_bytes(data_set, CT, uid, message_id=1))
        self.assertEqual(harness.transport.producerState, "producing")
        harness.send(store_rq_bytes(self.data_sets[1], CT, self.instances[1], message_id=2))
        self.assertEqual(harness.transport.producerState, "paused")
        self.assertIn(
            "Peer exceeded the asynchronous operations window peer=127.0.0.1:40000 calling_ae=TEST-SCU"
            " window=1 outstanding=2: reading paused until responses are sent",
            self.log.messages(),
        )
        self.pool.run_one()  # the first instance filed and answered: one outstanding again
        self.assertEqual([r.message_id_being_responded_to for r in responses(harness)], [1])
        self.assertEqual(harness.transport.producerState, "producing")
        self.pool.run_all()
        self.assertEqual([(r.message_id_being_responded_to, r.status) for r in responses(harness)], [(2, 0)])
        self.assertEqual(self.stored(self.instances[1]), self.data_sets[1])
        # Again: slowed again, but said once per association.
        harness.send(store_rq_bytes(self.data_sets[2], CT, self.instances[2], message_id=3))
        harness.send(store_rq_bytes(self.data_sets[0], CT, self.instances[0], message_id=4))
        self.assertEqual(harness.transport.producerState, "paused")
        self.pool.run_all()
        self.assertEqual(harness.transport.producerState, "producing")
        self.assertEqual([r.status for r in responses(harness)], [0, 0])
        self.assertEqual(sum("exceeded" in m for m in self.log.messages()), 1)

    def test_release_after_every_outstanding_response(self):
        harness, _ = self.harness(window=0)
        self.send_all(harness)
        harness.send(AReleaseRQ().encode())
        self.assertEqual(harness.received_pdus(), [])
        self.pool.run_all()
        pdus = harness.received_pdus()
        self.assertEqual([decode_command(bytes(p.items[0].data)).status for p in pdus[:3]], [0, 0, 0])
        self.assertEqual(pdus[3:], [AReleaseRP()])

    def test_one_memory_budget_for_the_association(self):
        """Two 2 MiB instances in flight at once pause reading at the association's 4 MiB, not each at its own."""
        paths = dicomfiles.write_ct_series(self.mktemp(), 2, rows=1024, columns=1024, seed=24)
        harness, _ = self.harness(window=4)
        for n, path in enumerate(paths, start=1):
            _, _, uid = dicomfiles.instance_uids(path)
            harness.send(store_rq_bytes(dicomfiles.data_set_bytes(path), CT, uid, message_id=n))
            # Nothing is written yet (the pool waits): after the first, under 4 MiB; after both, over.
            self.assertEqual(harness.transport.producerState, "producing" if n == 1 else "paused")
        self.pool.run_all()
        self.assertEqual(harness.transport.producerState, "producing")
        self.assertEqual([r.status for r in responses(harness)], [0, 0])
