"""C-STORE against real peers over loopback: DCMTK storescu and pynetdicom, files checked bit for bit."""

from __future__ import annotations

import os
import signal

from pydicom import dcmread
from twisted.internet import defer, protocol, reactor, task, threads
from twisted.logger import formatEvent, globalLogPublisher

from radx.storage.filing import Filing
from radx.storage.layout import UNKNOWN, Layout
from radx.storage.store import INCOMING
from tests import dicomfiles
from tests.interop import DCMTK_ENV, ServerTestCase, keep_responses, require_dcmtk

# storescu proposes its --propose-* transfer syntax (and the uncompressed
# ones), never simply the file's own: each case names the option that
# makes it propose, and so send, the file's transfer syntax unconverted.
STORESCU_PROPOSE = {
    "implicit_vr_little_endian": "-xi",
    "explicit_vr_little_endian": "-xe",
    "explicit_vr_big_endian": "-xb",
    "deflated_explicit_vr_little_endian": "-xd",
    "jpeg_baseline": "-xy",
    "jpeg_extended": "-xx",
    "jpeg_lossless_sv1": "-xs",
    "jpeg_ls_lossless": "-xt",
    "jpeg_ls_near_lossless": "-xu",
    "jpeg_2000_lossless": "-xv",
    "jpeg_2000": "-xw",
    "rle_lossless": "-xr",
}

CALLING_AE = "INTEROP-SCU"


def walk_files(root) -> tuple[set[str], set[str]]:
    """(instance files, files in the temporary folder) under ``root``, relative to it."""
    stored, incoming = set(), set()
    for folder, _, names in os.walk(root):
        for name in names:
            relative = os.path.relpath(os.path.join(folder, name), root)
            if relative.split(os.sep)[0] == INCOMING:
                incoming.add(relative)
            else:
                stored.add(relative)
    return stored, incoming


def organized_path(output_dir, source) -> str:
    study, series, sop_instance = dicomfiles.instance_uids(source)
    return os.path.join(output_dir, study, series, f"{sop_instance}.dcm")


class ProcessWatcher(protocol.ProcessProtocol):
    """A child process: its output collected, ``ended`` fired with its exit status or signal."""

    def __init__(self) -> None:
        self.output = []
        self.ended = defer.Deferred()
        self.line_waiters: list[tuple[bytes, defer.Deferred]] = []

    def outReceived(self, data: bytes) -> None:
        self.output.append(data)
        text = b"".join(self.output)
        for waiter in list(self.line_waiters):
            if waiter[0] in text:
                self.line_waiters.remove(waiter)
                waiter[1].callback(None)

    errReceived = outReceived

    def wait_for_output(self, marker: bytes, timeout: float) -> defer.Deferred:
        """Fires once ``marker`` has been written by the process, fails after ``timeout`` seconds."""
        d = defer.Deferred()
        if marker in b"".join(self.output):
            d.callback(None)
            return d
        self.line_waiters.append((marker, d))
        return d.addTimeout(timeout, reactor)

    def processEnded(self, reason) -> None:
        self.ended.callback(reason.value)

    @property
    def text(self) -> str:
        return b"".join(self.output).decode("utf-8", "replace")


def spawn(path: str, *arguments: str, env=None) -> ProcessWatcher:
    watcher = ProcessWatcher()
    reactor.spawnProcess(watcher, path, [path, *arguments], env=env if env is not None else DCMTK_ENV)
    return watcher


@defer.inlineCallbacks
def poll(condition, timeout: float, what: str, interval: float = 0.01):
    """Wait, bounded, until ``condition()`` is true."""
    for _ in range(int(timeout / interval)):
        if condition():
            return
        yield task.deferLater(reactor, interval, lambda: None)
    if not condition():
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class StoreTestCase(ServerTestCase):
    timeout = 60

    def setUp(self):
        self.storescu = require_dcmtk("storescu")
        self.dcmdump = require_dcmtk("dcmdump")

    def storescu_args(self, *arguments: str) -> list[str]:
        return ["-aet", CALLING_AE, "-aec", "RADX-SCP", "127.0.0.1", str(self.port), *arguments]

    @defer.inlineCallbacks
    def assert_stored(self, stored_path: str, source: str):
        """The stored file holds the source's data set bit for bit, and DCMTK reads it."""
        self.assertTrue(os.path.isfile(stored_path), f"{stored_path} was not stored")
        self.assertTrue(
            dicomfiles.same_data_set(stored_path, source),
            f"{stored_path}: the data set is not byte-identical to {source}'s",
        )
        out, err, code = yield self.run_tool(self.dcmdump, stored_path)
        self.assertEqual(code, 0, f"dcmdump {stored_path}: {err.decode(errors='replace')}")

    def assert_nothing_incoming(self, output_dir) -> None:
        self.assertEqual(walk_files(output_dir)[1], set(), "partial files left in the temporary folder")


def _storescu_case(case: str):
    @defer.inlineCallbacks
    def test(self):
        source_file = dicomfiles.pydicom_test_files()[case]
        # storescu re-encodes what it reads (no group lengths, explicit
        # sequence lengths, no trailing padding, even-length deflate): send
        # a copy already in that form, so the data set on the wire is the
        # file's, byte for byte.
        source = self.mktemp() + ".dcm"
        dicomfiles.write_dcmtk_wire_form(source_file.path, source, require_dcmtk("dcmconv"))
        self.start_server(self.server_config(filing=Filing(organize=False)))
        out, err, code = yield self.run_tool(
            self.storescu, "-v", "-R", STORESCU_PROPOSE[case], *self.storescu_args(source)
        )
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        self.assertIn(b"Received Store Response (Success)", out + err)
        stored = os.path.join(self.factory.config.output_dir, f"{source_file.sop_instance_uid}.dcm")
        yield self.assert_stored(stored, source)
        meta = dcmread(stored, stop_before_pixels=True).file_meta
        self.assertEqual(meta.TransferSyntaxUID, source_file.transfer_syntax_uid)
        self.assertEqual(meta.SourceApplicationEntityTitle.strip(), CALLING_AE)
        self.assertEqual(meta.MediaStorageSOPInstanceUID, source_file.sop_instance_uid)
        self.assertEqual(meta.MediaStorageSOPClassUID, source_file.sop_class_uid)
        self.assertEqual(self.factory.stats.stores_succeeded, 1)
        self.assert_nothing_incoming(self.factory.config.output_dir)

    test.__name__ = f"test_storescu_{case}"
    test.__doc__ = f"storescu sends pydicom's {case} file in its own transfer syntax; radx keeps its bits."
    return test


class StorescuTransferSyntaxTests(StoreTestCase):
    """One storescu C-STORE per transfer syntax, one server (and output folder) each."""


for _case in STORESCU_PROPOSE:
    setattr(StorescuTransferSyntaxTests, f"test_storescu_{_case}", _storescu_case(_case))


class StorescuTests(StoreTestCase):
    @defer.inlineCallbacks
    def test_scan_directory_into_study_series_instance(self):
        """storescu +sd on a folder of 20 CT images (2 series): each lands in Study/Series/Instance.dcm."""
        sources = dicomfiles.write_ct_series(self.mktemp(), 20, rows=128, columns=128, series=2, seed=1)
        self.start_server()
        output = self.factory.config.output_dir
        out, err, code = yield self.run_tool(self.storescu, "+sd", *self.storescu_args(os.path.dirname(sources[0])))
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        expected = {os.path.relpath(organized_path(output, source), output) for source in sources}
        self.assertEqual(walk_files(output)[0], expected)
        self.assertEqual(len({path.split(os.sep)[1] for path in expected}), 2)
        for source in sources:
            yield self.assert_stored(organized_path(output, source), source)
        self.assertEqual(self.factory.stats.stores_succeeded, 20)
        self.assertEqual(self.factory.stats.associations, 1)
        self.assert_nothing_incoming(output)

    @defer.inlineCallbacks
    def test_layout_template(self):
        """--layout {PatientID}/{StudyDate}/{Modality}/...: storescu's 6 CT images land under the values their data sets hold."""
        sources = dicomfiles.write_ct_series(self.mktemp(), 6, rows=64, columns=64, series=2, seed=3)
        layout = Layout("{PatientID}/{StudyDate}/{Modality}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm")
        self.start_server(self.server_config(filing=Filing(layout=layout)))
        output = self.factory.config.output_dir
        out, err, code = yield self.run_tool(self.storescu, "+sd", *self.storescu_args(os.path.dirname(sources[0])))
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        expected = {}
        for source in sources:
            _, series, sop_instance = dicomfiles.instance_uids(source)
            expected[os.path.join("RADX-0001", "20240102", "CT", series, f"{sop_instance}.dcm")] = source
        self.assertEqual(walk_files(output)[0], set(expected))
        for relative, source in expected.items():
            yield self.assert_stored(os.path.join(output, relative), source)
        self.assert_nothing_incoming(output)

    @defer.inlineCallbacks
    def test_on_duplicate_reject(self):
        """--on-duplicate reject: storescu's second sending of an instance is answered 0111, the first file stays."""
        source = dicomfiles.write_ct_series(self.mktemp(), 1, rows=64, columns=64, seed=5)[0]
        self.start_server(self.server_config(filing=Filing(on_duplicate="reject")))
        output = self.factory.config.output_dir
        out, err, code = yield self.run_tool(self.storescu, "-v", *self.storescu_args(source))
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        stored = organized_path(output, source)
        with open(stored, "rb") as f:
            first = f.read()
        out, err, code = yield self.run_tool(self.storescu, "-v", "-aet", "OTHER-SCU", *self.storescu_args(source)[2:])
        # DCMTK knows 0111 from PS3.7 Annex C, not from C-STORE's own list.
        self.assertIn(b"Received Store Response (Unknown Status: 0x111)", out + err)
        with open(stored, "rb") as f:
            self.assertEqual(f.read(), first)
        self.assertEqual(walk_files(output)[0], {os.path.relpath(stored, output)})
        self.assertEqual((self.factory.stats.stores_succeeded, self.factory.stats.store_failures), (1, 1))
        self.assert_nothing_incoming(output)

    @defer.inlineCallbacks
    def test_on_duplicate_keep(self):
        """--on-duplicate keep: Success both times, the first file kept, from another calling AE too."""
        source = dicomfiles.write_ct_series(self.mktemp(), 1, rows=64, columns=64, seed=6)[0]
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.start_server(self.server_config(filing=Filing(on_duplicate="keep")))
        output = self.factory.config.output_dir
        for calling in ("FIRST-SCU", "SECOND-SCU"):
            out, err, code = yield self.run_tool(self.storescu, "-v", "-aet", calling, *self.storescu_args(source)[2:])
            self.assertEqual(code, 0, (out + err).decode(errors="replace"))
            self.assertIn(b"Received Store Response (Success)", out + err)
        stored = organized_path(output, source)
        yield self.assert_stored(stored, source)
        self.assertEqual(dcmread(stored, stop_before_pixels=True).file_meta.SourceApplicationEntityTitle.strip(), "FIRST-SCU")
        logged = [formatEvent(event) for event in events]
        self.assertEqual(logged.count(f"Stored DICOM file path={stored}"), 1)
        self.assertEqual(logged.count(f"Duplicate not stored, existing file kept path={stored}"), 1)
        self.assert_nothing_incoming(output)

    @defer.inlineCallbacks
    def test_on_duplicate_unique(self):
        """--on-duplicate unique: the same data set again is not stored twice, from another calling AE (another file meta) neither."""
        source = dicomfiles.write_ct_series(self.mktemp(), 1, rows=64, columns=64, seed=8)[0]
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.start_server(self.server_config(filing=Filing(on_duplicate="unique")))
        output = self.factory.config.output_dir
        for calling in ("FIRST-SCU", "FIRST-SCU", "SECOND-SCU"):
            out, err, code = yield self.run_tool(self.storescu, "-v", "-aet", calling, *self.storescu_args(source)[2:])
            self.assertIn(b"Received Store Response (Success)", out + err)
        stored = organized_path(output, source)
        self.assertEqual(walk_files(output)[0], {os.path.relpath(stored, output)})
        yield self.assert_stored(stored, source)
        self.assertEqual(dcmread(stored, stop_before_pixels=True).file_meta.SourceApplicationEntityTitle.strip(), "FIRST-SCU")
        logged = [formatEvent(event) for event in events]
        self.assertEqual(logged.count(f"Duplicate not stored, identical file already there path={stored}"), 2)
        self.assert_nothing_incoming(output)

    @defer.inlineCallbacks
    def test_concurrent_associations(self):
        """4 storescu processes at once, 10 different images each: all 40 stored, each byte-identical."""
        folders = [self.mktemp() for _ in range(4)]
        sources = {
            folder: dicomfiles.write_ct_series(folder, 10, rows=256, columns=256, seed=10 + i)
            for i, folder in enumerate(folders)
        }
        self.start_server()
        output = self.factory.config.output_dir
        results = yield defer.gatherResults(
            [self.run_tool(self.storescu, "+sd", *self.storescu_args(folder)) for folder in folders],
            consumeErrors=True,
        )
        for out, err, code in results:
            self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        everything = [source for folder in folders for source in sources[folder]]
        self.assertEqual(len(walk_files(output)[0]), 40)
        for source in everything:
            yield self.assert_stored(organized_path(output, source), source)
        self.assertEqual(self.factory.stats.stores_succeeded, 40)
        self.assertEqual(self.factory.stats.associations, 4)
        self.assert_nothing_incoming(output)

    @defer.inlineCallbacks
    def test_flat_output(self):
        """organize=False: OUTPUT/SOPInstanceUID.dcm, no folders."""
        sources = dicomfiles.write_ct_series(self.mktemp(), 5, rows=64, columns=64, series=2, seed=3)
        self.start_server(self.server_config(filing=Filing(organize=False)))
        output = self.factory.config.output_dir
        out, err, code = yield self.run_tool(self.storescu, "+sd", *self.storescu_args(os.path.dirname(sources[0])))
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        expected = {f"{dicomfiles.instance_uids(source)[2]}.dcm" for source in sources}
        self.assertEqual(walk_files(output)[0], expected)
        self.assertEqual(sorted(n for n in os.listdir(output) if n != INCOMING), sorted(expected))
        for source in sources:
            yield self.assert_stored(os.path.join(output, f"{dicomfiles.instance_uids(source)[2]}.dcm"), source)

    @defer.inlineCallbacks
    def test_study_uid_with_dot_dot_stays_inside(self):
        """A Study Instance UID of ../../escape is filed under UNKNOWN; nothing is written outside."""
        (source,) = dicomfiles.write_ct_series(
            self.mktemp(), 1, rows=16, columns=16, study_uid="../../escape", seed=4
        )
        config = self.server_config()
        output = os.path.abspath(config.output_dir)
        parent, grandparent = os.path.dirname(output), os.path.dirname(os.path.dirname(output))
        os.makedirs(output)
        before = (sorted(os.listdir(parent)), sorted(os.listdir(grandparent)))
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.start_server(config)
        out, err, code = yield self.run_tool(self.storescu, "-v", *self.storescu_args(source))
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        self.assertIn(b"Received Store Response (Success)", out + err)
        _, series, sop_instance = dicomfiles.instance_uids(source)
        self.assertEqual(walk_files(output)[0], {os.path.join(UNKNOWN, series, f"{sop_instance}.dcm")})
        yield self.assert_stored(os.path.join(output, UNKNOWN, series, f"{sop_instance}.dcm"), source)
        self.assertEqual((sorted(os.listdir(parent)), sorted(os.listdir(grandparent))), before)
        self.assertFalse(os.path.lexists(os.path.join(output, "..", "..", "escape")))
        logged = [formatEvent(event) for event in events]
        self.assertTrue(
            any("Study Instance UID <12 characters, not a UID> is malformed" in line and UNKNOWN in line for line in logged),
            logged,
        )

    @defer.inlineCallbacks
    def test_killed_sender_leaves_nothing(self):
        """storescu SIGKILLed mid-way through a 200 MB instance: no .dcm, no temporary file; radx goes on."""
        folder = self.mktemp()
        os.makedirs(folder)
        large = dicomfiles.write_large_multiframe(os.path.join(folder, "large.dcm"), 200 << 20, seed=5)
        self.addCleanup(os.remove, large)
        self.start_server()
        output = self.factory.config.output_dir
        incoming = os.path.join(output, INCOMING)
        sender = spawn(self.storescu, *self.storescu_args(large))
        yield poll(lambda: os.path.isdir(incoming) and os.listdir(incoming), 30, "a temporary file")
        (partial,) = os.listdir(incoming)
        self.assertLess(os.path.getsize(os.path.join(incoming, partial)), os.path.getsize(large))
        os.kill(sender.transport.pid, signal.SIGKILL)
        ended = yield sender.ended
        self.assertEqual(getattr(ended, "signal", None), signal.SIGKILL, sender.text)
        yield poll(lambda: not self.factory.connections, 10, "the server to see the connection drop")
        # The temporary file is removed on the threadpool, after any write in progress.
        yield poll(lambda: not os.listdir(incoming), 10, "the temporary file to be removed")
        self.assertEqual(walk_files(output), (set(), set()))
        self.assertEqual(self.factory.stats.stores_succeeded, 0)

        # The server takes the next instance as usual.
        (small,) = dicomfiles.write_ct_series(self.mktemp(), 1, rows=32, columns=32, seed=6)
        out, err, code = yield self.run_tool(self.storescu, *self.storescu_args(small))
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        yield self.assert_stored(organized_path(output, small), small)


def _pynetdicom_store(port: int, path: str, sop_class_uid: str, transfer_syntax_uid: str) -> int:
    from pynetdicom import AE

    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(sop_class_uid, transfer_syntax_uid)
    assoc = ae.associate("127.0.0.1", port, ae_title="RADX-SCP")
    if not assoc.is_established:
        raise AssertionError("association not established")
    keep_responses(assoc)
    try:
        status = assoc.send_c_store(path)
    finally:
        assoc.release()
    return int(status.Status)


def _pynetdicom_case(case: str):
    @defer.inlineCallbacks
    def test(self):
        from pynetdicom import _config

        source = dicomfiles.pydicom_test_files()[case]
        # Send the file's own bytes, never decoded and encoded again.
        self.patch(_config, "STORE_SEND_CHUNKED_DATASET", True)
        self.start_server(self.server_config(filing=Filing(organize=False)))
        status = yield threads.deferToThread(
            _pynetdicom_store, self.port, source.path, source.sop_class_uid, source.transfer_syntax_uid
        )
        self.assertEqual(status, 0x0000)
        stored = os.path.join(self.factory.config.output_dir, f"{source.sop_instance_uid}.dcm")
        yield self.assert_stored(stored, source.path)
        meta = dcmread(stored, stop_before_pixels=True).file_meta
        self.assertEqual(meta.TransferSyntaxUID, source.transfer_syntax_uid)
        self.assertEqual(meta.SourceApplicationEntityTitle.strip(), "PYNETDICOM")

    test.__name__ = f"test_pynetdicom_{case}"
    test.__doc__ = f"pynetdicom streams pydicom's {case} file as it is; radx keeps its bits."
    return test


def _pynetdicom_window(port: int, path: str, sop_class_uid: str, transfer_syntax_uid: str):
    """An association proposing an Asynchronous Operations Window of 5/1: what pynetdicom read of radx's answer, and a store."""
    from pynetdicom import AE
    from pynetdicom.pdu_primitives import AsynchronousOperationsWindowNegotiation

    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(sop_class_uid, transfer_syntax_uid)
    window = AsynchronousOperationsWindowNegotiation()
    window.maximum_number_operations_invoked = 5
    window.maximum_number_operations_performed = 1
    assoc = ae.associate("127.0.0.1", port, ae_title="RADX-SCP", ext_neg=[window])
    if not assoc.is_established:
        raise AssertionError("association not established")
    keep_responses(assoc)
    try:
        granted = assoc.acceptor.asynchronous_operations
        status = int(assoc.send_c_store(path).Status)
    finally:
        assoc.release()
    return granted, status


class PynetdicomStoreTests(StoreTestCase):
    """pynetdicom as the sender, one file each, its exact bytes on the wire."""

    @defer.inlineCallbacks
    def test_asynchronous_operations_window(self):
        """pynetdicom decodes radx's answer to its window (PS3.7 D.3.3.3): 5 invoked as asked, 1 performed."""
        from pynetdicom import _config

        source = dicomfiles.pydicom_test_files()["explicit_vr_little_endian"]
        self.patch(_config, "STORE_SEND_CHUNKED_DATASET", True)
        self.start_server(self.server_config(filing=Filing(organize=False)))
        granted, status = yield threads.deferToThread(
            _pynetdicom_window, self.port, source.path, source.sop_class_uid, source.transfer_syntax_uid
        )
        self.assertEqual(tuple(granted), (5, 1))
        self.assertEqual(status, 0x0000)
        yield self.assert_stored(os.path.join(self.factory.config.output_dir, f"{source.sop_instance_uid}.dcm"), source.path)


for _case in STORESCU_PROPOSE:
    setattr(PynetdicomStoreTests, f"test_pynetdicom_{_case}", _pynetdicom_case(_case))
del _case
