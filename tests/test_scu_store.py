"""C-STORE SCU against radx's own server, in this process, over loopback (DCMTK storescp: test_scu_cli)."""

from __future__ import annotations

import os

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial.unittest import SynchronousTestCase

from radx.scu.echo import echo
from radx.scu.store import FileResult, StoreJob
from radx.storage.filing import Filing
from radx.ul.negotiation import AcceptorPolicy
from tests import dicomfiles
from tests.interop import ServerTestCase, abort_at_c_store
from tests.test_interop_store import organized_path, poll, walk_files

CT = dicomfiles.CT_IMAGE_STORAGE


def write_private_class_files(folder: str, count: int) -> list[str]:
    """Tiny instances, each of its own (private) SOP class: one presentation context each."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for index in range(count):
        sop_class = f"1.2.826.0.1.3680043.9.7777.{index + 1}"
        instance = dicomfiles.uid("radx-scu-tests", "private", index)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.file_meta.MediaStorageSOPInstanceUID = instance
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = instance
        ds.StudyInstanceUID = dicomfiles.uid("radx-scu-tests", "private-study")
        ds.SeriesInstanceUID = dicomfiles.uid("radx-scu-tests", "private-series")
        path = os.path.join(folder, f"P{index:04d}.dcm")
        dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


class RadxServerTests(ServerTestCase):
    timeout = 60

    def job(self, **kwargs) -> StoreJob:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, timeout=10)
        return StoreJob(endpoint, reactor, "RADX-SCP", "RADX-SCU", timeout=10, **kwargs)

    def assertSameDataSets(self, pairs):
        for stored, source in pairs:
            self.assertTrue(os.path.isfile(stored), f"{stored} was not stored")
            self.assertTrue(dicomfiles.same_data_set(stored, source), f"{stored} differs from {source}")

    @defer.inlineCallbacks
    def test_echo(self):
        self.start_server()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        results = yield echo(endpoint, reactor, "RADX-SCP", "RADX-SCU", count=3)
        self.assertEqual([r.status for r in results], [0, 0, 0])
        self.assertEqual(self.factory.stats.echo_requests, 3)
        self.assertEqual(self.factory.stats.associations, 1)

    @defer.inlineCallbacks
    def test_every_transfer_syntax_in_one_association(self):
        """pydicom's files, one per transfer syntax, each in its own context: the data sets arrive bit for bit."""
        files = dicomfiles.pydicom_test_files()
        # Several share a SOP Instance UID: send those with distinct ones.
        seen, chosen = set(), []
        for test_file in files.values():
            if test_file.sop_instance_uid not in seen:
                seen.add(test_file.sop_instance_uid)
                chosen.append(test_file)
        self.assertGreaterEqual(len(chosen), 5)
        self.start_server(self.server_config(filing=Filing(organize=False)))
        results = yield self.job().run([f.path for f in chosen])
        self.assertEqual([(r.path, r.status) for r in results], [(f.path, 0) for f in chosen])
        output = self.factory.config.output_dir
        for f in chosen:
            # Bit for bit as sent: the deflated data set, 4303 bytes, with its trailing NULL (PS3.5 A.5).
            stored = dicomfiles.data_set_bytes(os.path.join(output, f"{f.sop_instance_uid}.dcm"))
            self.assertEqual(stored, dicomfiles.data_set_as_sent(f.path), f.name)
        deflated = dicomfiles.pydicom_test_files()["deflated_explicit_vr_little_endian"]
        self.assertEqual(len(dicomfiles.data_set_bytes(deflated.path)), 4303)
        self.assertEqual(self.factory.stats.associations, 1)

    @defer.inlineCallbacks
    def test_four_associations(self):
        sources = dicomfiles.write_ct_series(self.mktemp(), 24, rows=64, columns=64, seed=21)
        self.start_server()
        results = yield self.job(connections=4).run(sources)
        self.assertEqual(sorted(r.path for r in results if r.status == 0), sorted(sources))
        self.assertEqual(self.factory.stats.associations, 4)
        self.assertSameDataSets((organized_path(self.factory.config.output_dir, s), s) for s in sources)

    @defer.inlineCallbacks
    def test_operations_window(self):
        """Eight C-STOREs outstanding at once (PS3.7 D.3.3.3), granted by radx's server: every file arrives whole."""
        sources = dicomfiles.write_ct_series(self.mktemp(), 40, rows=64, columns=64, seed=22)
        self.start_server()
        job = self.job(operations=8)
        results = yield job.run(sources)
        self.assertEqual(sorted(r.path for r in results if r.status == 0), sorted(sources))
        self.assertEqual(job.windows, [8])
        self.assertSameDataSets((organized_path(self.factory.config.output_dir, s), s) for s in sources)

    @defer.inlineCallbacks
    def test_more_than_128_contexts(self):
        """130 SOP classes: 128 contexts proposed in the first batch's associations, 2 in the second's."""
        sources = write_private_class_files(self.mktemp(), 130)
        self.start_server(self.server_config(filing=Filing(organize=False)))
        results = yield self.job(connections=2).run(sources)
        self.assertEqual([r.describe() for r in results if not r.stored], [])
        self.assertEqual(len(results), 130)
        self.assertEqual(self.factory.stats.associations, 4)  # 2 for each batch, one after the other

    @defer.inlineCallbacks
    def test_sop_class_not_accepted(self):
        """A server taking only CT: the MR file fails, named, with the context's result; the CT file is stored."""
        (ct,) = dicomfiles.write_ct_series(self.mktemp(), 1, rows=16, columns=16, seed=22)
        mr = dicomfiles.pydicom_test_files()["explicit_vr_big_endian"].path
        self.start_server(self.server_config(policy=AcceptorPolicy(sop_classes=frozenset({CT}))))
        results = yield self.job().run([mr, ct])
        outcome = {r.path: (r.stored, r.describe()) for r in results}
        self.assertEqual(outcome[mr], (False, "presentation context not accepted: abstract-syntax-not-supported (provider rejection)"))
        self.assertEqual(outcome[ct], (True, "status 0x0000 (Success)"))

    @defer.inlineCallbacks
    def test_failure_status(self):
        """An instance the server refuses (a malformed SOP Instance UID): its status and comment."""
        (good,) = dicomfiles.write_ct_series(self.mktemp(), 1, rows=16, columns=16, seed=23)
        bad = self.mktemp()
        with open(good, "rb") as fp:
            data = fp.read()
        instance = dicomfiles.instance_uids(good)[2].encode()
        # Same length, so the group length still holds.
        bad_uid = b"1.2.x" + instance[5:]
        with open(bad, "wb") as fp:
            fp.write(data.replace(instance, bad_uid))  # in the file meta and the data set
        self.start_server()
        (result,) = yield self.job().run([bad])
        self.assertFalse(result.stored)
        self.assertEqual(result.status, 0x0117)
        self.assertTrue(result.describe().startswith("status 0x0117 (Invalid object instance): malformed"), result.describe())

    @defer.inlineCallbacks
    def test_rejected_association_fails_every_file(self):
        sources = dicomfiles.write_ct_series(self.mktemp(), 3, rows=16, columns=16, seed=24)
        self.start_server()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        job = StoreJob(endpoint, reactor, "ELSEWHERE", "RADX-SCU", connections=2, timeout=10)
        results = yield job.run(sources)
        self.assertEqual(
            {r.describe() for r in results},
            {"not sent: Association rejected: Called AE Title Not Recognized (rejected-permanent, service-user)"},
        )
        self.assertEqual(len(results), 3)

    @defer.inlineCallbacks
    def test_after_an_abort_a_new_association_sends_the_rest(self):
        """
        A server that aborts its first association as the second C-STORE-RQ
        arrives: that file fails, unanswered; the next three go on a second
        association and are stored.
        """
        sources = dicomfiles.write_ct_series(self.mktemp(), 5, rows=16, columns=16, seed=27)
        aborted = abort_at_c_store(self, lambda association, request: (association, request) == (1, 2))
        self.start_server()
        job = self.job()
        results = yield job.run(sources)
        why = "Association aborted by the peer (A-ABORT, service-user)"
        outcome = {r.path: (r.status, r.reason, r.sent) for r in results}
        self.assertEqual(
            [outcome[s] for s in sources],
            [(0, None, True), (None, why, True), (0, None, True), (0, None, True), (0, None, True)],
        )
        self.assertEqual((aborted, self.factory.stats.associations, job.gave_up), ([(1, 2)], 2, None))
        output = self.factory.config.output_dir
        self.assertSameDataSets((organized_path(output, s), s) for s in sources if s != sources[1])
        self.assertFalse(os.path.exists(organized_path(output, sources[1])))

    @defer.inlineCallbacks
    def test_interrupted_job_aborts_its_associations(self):
        """What Ctrl+C does: each open association is aborted, the server keeps no partial file."""
        large = dicomfiles.write_large_multiframe(self.mktemp(), 20 << 20, seed=26)
        self.start_server(self.server_config(fsync=False))
        job = self.job()
        sending = job.run([large])
        yield poll(lambda: self.factory.stats.store_requests == 1, 10, "the C-STORE to begin")
        yield job.abort("interrupted")
        (result,) = yield sending
        self.assertEqual(result.describe(), "interrupted")
        yield poll(lambda: not self.factory.connections, 10, "the server to close")
        self.assertEqual(walk_files(self.factory.config.output_dir)[0], set())


class FileResultTests(SynchronousTestCase):
    def test_warning_is_stored(self):
        """PS3.4 B.2.3: a warning status means the instance was stored."""
        result = FileResult("a.dcm", status=0xB007, error_comment="checked")
        self.assertTrue(result.stored and result.warning)
        self.assertEqual(result.describe(), "status 0xB007 (Data Set does not match SOP Class): checked")

    def test_failure_and_reason(self):
        self.assertFalse(FileResult("a.dcm", status=0xA700).stored)
        unsent = FileResult("b.dcm", reason="not sent: no association")
        self.assertFalse(unsent.stored or unsent.warning)
        self.assertEqual(unsent.describe(), "not sent: no association")

