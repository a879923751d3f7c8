"""Tests for radx.storage.store, on real directories."""

import os
import random
import shutil
import stat
import subprocess

import pydicom
from twisted.trial.unittest import SynchronousTestCase

from radx.storage.errors import (
    DataSetMismatch,
    DuplicateInstance,
    MalformedDataSet,
    MalformedSOPClassUID,
    MalformedSOPInstanceUID,
    StorageError,
    WriteFailed,
    WriterClosed,
)
from radx.storage.layout import UNKNOWN, Layout, safe_component
from radx.storage.store import (
    INCOMING,
    InstanceWriter,
    StoredInstance,
    clean_incoming,
)
from radx.storage.tree import OutputTree
from tests.test_storage_part10 import explicit_le, samples, ui

DCMDUMP = shutil.which("dcmdump")

EXPLICIT_LE = "1.2.840.10008.1.2.1"
SOP_CLASS = "1.2.840.10008.5.1.4.1.1.7"
SOP_INSTANCE = "1.2.826.0.1.3680043.8.498.10"
STUDY = "1.2.826.0.1.3680043.8.498.11"
SERIES = "1.2.826.0.1.3680043.8.498.12"


def data_set(sop_class=SOP_CLASS, sop_instance=SOP_INSTANCE, study=STUDY, series=SERIES, pixels=b"\x01\x02" * 64):
    """An explicit VR little endian data set of a few elements."""
    return explicit_le(
        (0x00080016, b"UI", ui(sop_class)),
        (0x00080018, b"UI", ui(sop_instance)),
        (0x00100010, b"PN", b"Doe^Jane"),
        (0x0020000D, b"UI", ui(study)),
        (0x0020000E, b"UI", ui(series)),
        (0x7FE00010, b"OW", pixels),
    )


def chunked(data: bytes, rng: random.Random):
    """Slices of C{data} of random sizes, as memoryviews (no copies)."""
    view = memoryview(data)
    chunks = []
    while view:
        size = rng.randrange(1, 20000)
        chunks.append(view[:size])
        view = view[size:]
    return chunks


def tree(path):
    """Every file and directory under C{path}, with each file's bytes."""
    found = {}
    for root, dirs, files in os.walk(path):
        for name in dirs:
            found[os.path.relpath(os.path.join(root, name), path)] = None
        for name in files:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                found[os.path.relpath(full, path)] = f.read()
    return found


class StoreTestsMixin:
    def setUp(self):
        self.base = os.path.abspath(self.mktemp())
        self.output = os.path.join(self.base, "output")
        os.makedirs(self.output)

    def writer(self, **kwargs):
        arguments = dict(
            sop_class_uid=SOP_CLASS,
            sop_instance_uid=SOP_INSTANCE,
            transfer_syntax_uid=EXPLICIT_LE,
            calling_ae_title="STORESCU",
        )
        arguments.update(kwargs)
        return InstanceWriter(self.tree(arguments.pop("dir_mode", None)), **arguments)

    def tree(self, dir_mode=None) -> OutputTree:
        """One tree per output folder and mode, held open as the server holds its own."""
        trees = self.__dict__.setdefault("_trees", {})
        key = (self.output, dir_mode)
        if key not in trees:
            trees[key] = OutputTree(self.output, dir_mode)
        return trees[key]

    def store(self, data: bytes, **kwargs) -> StoredInstance:
        writer = self.writer(**kwargs)
        writer.write(chunked(data, random.Random(len(data))))
        return writer.commit()

    def store_sample(self, sample, **kwargs) -> StoredInstance:
        """One of pydicom's samples, stored as a C-STORE of it would be."""
        header = sample.header
        return self.store(
            sample.data_set,
            sop_class_uid=header.sop_class_uid,
            sop_instance_uid=header.sop_instance_uid,
            transfer_syntax_uid=sample.transfer_syntax_uid,
            **kwargs,
        )

    def assertIncomingEmpty(self):
        incoming = os.path.join(self.output, INCOMING)
        self.assertEqual(os.listdir(incoming) if os.path.isdir(incoming) else [], [])

    def assertStorageError(self, kind, f, *args, **kwargs):
        """C{f} refuses with a C{kind}, which says why in words and carries no DIMSE status: storage knows none."""
        with self.assertRaises(StorageError) as caught:
            f(*args, **kwargs)
        self.assertIs(type(caught.exception), kind, caught.exception)
        self.assertTrue(caught.exception.message)
        self.assertEqual(str(caught.exception), caught.exception.message)
        self.assertFalse(hasattr(caught.exception, "status"))
        return caught.exception

    def dcmdump(self, path, *search):
        if DCMDUMP is None:
            return None
        arguments = [DCMDUMP, "-q"]
        for tag in search:
            arguments += ["+P", tag]
        result = subprocess.run(arguments + [path], capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        return result.stdout


class RoundTripTests(StoreTestsMixin, SynchronousTestCase):
    def test_samples(self):
        """
        Each pydicom sample, written in odd-sized pieces, is on disk with
        our file meta and its data set bytes unchanged; pydicom and dcmdump
        read it.
        """
        for sample in samples():
            # Some samples are one instance in several encodings.
            self.output = os.path.join(self.base, sample.name)
            header = sample.header
            stored = self.store_sample(sample)
            expected = os.path.join(
                self.output,
                header.study_instance_uid or UNKNOWN,
                header.series_instance_uid or UNKNOWN,
                header.sop_instance_uid + ".dcm",
            )
            self.assertEqual(stored.path, expected, sample.name)
            self.assertFalse(stored.replaced)
            self.assertEqual(len(stored.warnings), 0 if header.study_instance_uid else 2, stored.warnings)
            with open(stored.path, "rb") as f:
                written = f.read()
            self.assertEqual(written[-len(sample.data_set) :], sample.data_set, sample.name)

            dataset = pydicom.dcmread(stored.path)
            self.assertEqual(dataset.file_meta.TransferSyntaxUID, sample.transfer_syntax_uid)
            self.assertEqual(dataset.file_meta.MediaStorageSOPInstanceUID, header.sop_instance_uid)
            self.assertEqual(dataset.file_meta.SourceApplicationEntityTitle, "STORESCU")
            self.assertEqual(dataset.SOPInstanceUID, header.sop_instance_uid)
            self.assertEqual(len(written), dataset.file_meta.FileMetaInformationGroupLength + 144 + len(sample.data_set))
            original = pydicom.dcmread(sample.path)
            if "PixelData" in original:
                self.assertEqual(dataset.PixelData, original.PixelData)

            output = self.dcmdump(stored.path, "0002,0003", "0008,0018")
            if output is not None:
                self.assertEqual(output.count(header.sop_instance_uid), 2, output)
            self.assertIncomingEmpty()

    def test_flat(self):
        stored = self.store(data_set(), organize=False)
        self.assertEqual(stored.path, os.path.join(self.output, SOP_INSTANCE + ".dcm"))
        self.assertEqual(sorted(os.listdir(self.output)), [INCOMING, SOP_INSTANCE + ".dcm"])

    def test_no_fsync(self):
        stored = self.store(data_set(), fsync=False)
        self.assertEqual(pydicom.dcmread(stored.path).SeriesInstanceUID, SERIES)

    def test_modes(self):
        stored = self.store(data_set(), file_mode=0o640, dir_mode=0o750)
        self.assertEqual(stat.S_IMODE(os.stat(stored.path).st_mode), 0o640)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(stored.path)).st_mode), 0o750)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.output, STUDY)).st_mode), 0o750)

    def test_padded_command_uids(self):
        """A NUL or space padding the command's UIDs (PS3.5 6.2) is not part of them."""
        stored = self.store(
            data_set(), sop_class_uid=SOP_CLASS + "\x00", sop_instance_uid=SOP_INSTANCE + " "
        )
        self.assertEqual(os.path.basename(stored.path), SOP_INSTANCE + ".dcm")

    def test_stat_kept(self):
        """keep_stat: the file's size and modification time as it is in place, taken before it was closed."""
        writer = self.writer(keep_stat=True)
        writer.write([data_set()])
        stored = writer.commit()
        found = os.stat(stored.path)
        self.assertEqual((writer.stat.st_size, writer.stat.st_mtime_ns), (found.st_size, found.st_mtime_ns))
        self.assertEqual((writer.stat.st_dev, writer.stat.st_ino), (found.st_dev, found.st_ino))

    def test_stat_not_kept(self):
        writer = self.writer()
        writer.write([data_set()])
        writer.commit()
        self.assertIsNone(writer.stat)

    def test_output_dir_made(self):
        self.output = os.path.join(self.base, "new", "output")
        stored = self.store(data_set())
        self.assertTrue(os.path.isfile(stored.path))

    def test_large_write(self):
        """One write of many pieces, more than an iovec array holds."""
        pixels = bytes(range(256)) * 16384
        data = data_set(pixels=pixels)
        writer = self.writer()
        view = memoryview(data)
        writer.write([view[i : i + 1000] for i in range(0, len(data), 1000)])
        stored = writer.commit()
        with open(stored.path, "rb") as f:
            self.assertTrue(f.read().endswith(data))

    def test_bad_calling_ae_title(self):
        """(0002,0016) is Type 3: a title it cannot hold is left out, with a warning."""
        stored = self.store(data_set(), calling_ae_title="BAD\\TITLE")
        self.assertEqual(len(stored.warnings), 1)
        self.assertNotIn("SourceApplicationEntityTitle", pydicom.dcmread(stored.path).file_meta)

    def test_replace(self):
        first = self.store(data_set(pixels=b"\x01\x00" * 10))
        second = self.store(data_set(pixels=b"\x02\x00" * 10))
        self.assertFalse(first.replaced)
        self.assertTrue(second.replaced)
        self.assertEqual(first.path, second.path)
        self.assertEqual(pydicom.dcmread(second.path).PixelData, b"\x02\x00" * 10)
        self.assertIncomingEmpty()


class LayoutTests(StoreTestsMixin, SynchronousTestCase):
    def test_traversal(self):
        """A study UID of ../../escape files under UNKNOWN; nothing lands outside."""
        self.output = os.path.join(self.base, "a", "b", "output")
        os.makedirs(self.output)
        with open(os.path.join(self.base, "a", "b", "sibling"), "wb") as f:
            f.write(b"x")
        before = tree(self.base)
        stored = self.store(data_set(study="../../escape", series="../" + SERIES))
        self.assertEqual(stored.path, os.path.join(self.output, UNKNOWN, UNKNOWN, SOP_INSTANCE + ".dcm"))
        self.assertEqual(len(stored.warnings), 2)
        self.assertIn("Study Instance UID <12 characters, not a UID>", stored.warnings[0])
        after = tree(self.base)
        inside = "a/b/output/"
        self.assertEqual(
            {k: v for k, v in after.items() if not k.startswith(inside)},
            {k: v for k, v in before.items() if not k.startswith(inside)},
        )
        self.assertEqual(set(after) - set(before), {
            "a/b/output/" + INCOMING,
            "a/b/output/" + UNKNOWN,
            "a/b/output/UNKNOWN/UNKNOWN",
            "a/b/output/UNKNOWN/UNKNOWN/" + SOP_INSTANCE + ".dcm",
        })

    def test_invalid_sop_instance(self):
        """A SOP Instance UID that is no UID (PS3.5 9.1) names no file: nothing at all is written, not even folders."""
        self.output = os.path.join(self.base, "fresh")
        for uid in ["../../escape", "1.2/3", "", "1." + "2" * 70, "1..2"]:
            self.assertStorageError(MalformedSOPInstanceUID, self.writer, sop_instance_uid=uid)
        self.assertFalse(os.path.exists(self.output))

    def test_invalid_sop_class(self):
        self.output = os.path.join(self.base, "fresh")
        self.assertStorageError(MalformedSOPClassUID, self.writer, sop_class_uid="../x")
        self.assertFalse(os.path.exists(self.output))


PATIENT_LAYOUT = Layout("{PatientID}/{StudyDate}/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm")


def patient_data_set(patient_id: bytes, study_date: bytes = b"20240102") -> bytes:
    return explicit_le(
        (0x00080016, b"UI", ui(SOP_CLASS)),
        (0x00080018, b"UI", ui(SOP_INSTANCE)),
        (0x00080020, b"DA", study_date),
        (0x00100020, b"LO", patient_id + b" " * (len(patient_id) % 2)),
        (0x0020000D, b"UI", ui(STUDY)),
        (0x0020000E, b"UI", ui(SERIES)),
        (0x7FE00010, b"OW", b"\x01\x02" * 8),
    )


class TemplateTests(StoreTestsMixin, SynchronousTestCase):
    def test_patient_layout(self):
        data = patient_data_set(b"PAT-001")
        stored = self.store(data, layout=PATIENT_LAYOUT)
        self.assertEqual(stored.path, os.path.join(self.output, "PAT-001", "20240102", STUDY, SERIES, SOP_INSTANCE + ".dcm"))
        with open(stored.path, "rb") as f:
            self.assertEqual(f.read()[-len(data) :], data)
        self.assertIncomingEmpty()

    def test_hostile_values_stay_below_the_output_folder(self):
        """A Patient ID of ../../escape and a date with a slash and a NUL: names below the output folder, nothing beside it."""
        self.output = os.path.join(self.base, "a", "b", "output")
        os.makedirs(self.output)
        before = tree(self.base)
        stored = self.store(patient_data_set(b"../../escape", b"2024/\x00."), layout=PATIENT_LAYOUT)
        self.assertEqual(
            os.path.relpath(stored.path, self.output).split(os.sep),
            ["_.._escape", "2024__", STUDY, SERIES, SOP_INSTANCE + ".dcm"],
        )
        after = tree(self.base)
        self.assertEqual({k for k in after if not k.startswith("a/b/output/")}, {k for k in before})

    def test_value_longer_than_the_walk_keeps(self):
        """A Patient ID past the 1 KiB the walk keeps of a value: read whole from the file, as before the walk kept values."""
        # Its first 1 KiB are spaces: cut there, it would be empty, filed under UNKNOWN.
        stored = self.store(patient_data_set(b" " * 1100 + b"P1"), layout=PATIENT_LAYOUT)
        self.assertEqual(os.path.relpath(stored.path, self.output).split(os.sep)[0], "P1")

    def test_missing_values(self):
        stored = self.store(data_set(), layout=PATIENT_LAYOUT)
        self.assertEqual(os.path.relpath(stored.path, self.output).split(os.sep)[:2], [UNKNOWN, UNKNOWN])

    def test_every_sample(self):
        """Deflated, big endian, implicit VR: the values are those pydicom reads, by the scan or by pydicom itself."""
        layout = Layout("{PatientID}/{Modality}/{PatientName}/{SOPInstanceUID}.dcm")
        for sample in samples():
            self.output = os.path.join(self.base, sample.name)
            stored = self.store_sample(sample, layout=layout)
            original = pydicom.dcmread(sample.path, stop_before_pixels=True)
            expected = [
                safe_component(str(original.get(keyword, "") or "")) or UNKNOWN
                for keyword in ("PatientID", "Modality", "PatientName")
            ]
            self.assertEqual(os.path.relpath(stored.path, self.output).split(os.sep)[:3], expected, sample.name)

    def test_folders_by_descriptor_with_dir_mode(self):
        """Every folder of a deep template gets --dir-mode; a symbolic link in the place of one is refused, not followed."""
        stored = self.store(patient_data_set(b"P1"), layout=PATIENT_LAYOUT, dir_mode=0o750)
        folder = self.output
        for name in os.path.relpath(stored.path, self.output).split(os.sep)[:-1]:
            folder = os.path.join(folder, name)
            self.assertEqual(stat.S_IMODE(os.stat(folder).st_mode), 0o750, folder)
        elsewhere = os.path.join(self.base, "elsewhere")
        os.makedirs(elsewhere)
        os.symlink(elsewhere, os.path.join(self.output, "P2"))
        self.assertStorageError(WriteFailed, self.store, patient_data_set(b"P2"), layout=PATIENT_LAYOUT)
        self.assertEqual(os.listdir(elsewhere), [])
        self.assertIncomingEmpty()


class DuplicateTests(StoreTestsMixin, SynchronousTestCase):
    """--on-duplicate: an instance whose file exists already."""

    def content(self, path):
        with open(path, "rb") as f:
            return f.read()

    def test_keep(self):
        first = self.store(data_set(pixels=b"\x01\x00" * 10), on_duplicate="keep")
        before = self.content(first.path)
        second = self.store(data_set(pixels=b"\x02\x00" * 10), on_duplicate="keep")
        self.assertEqual((first.duplicate, second.duplicate), (None, "kept"))
        self.assertEqual(second.path, first.path)
        self.assertFalse(second.replaced)
        self.assertEqual(self.content(first.path), before)
        self.assertEqual(os.listdir(os.path.dirname(first.path)), [SOP_INSTANCE + ".dcm"])
        self.assertIncomingEmpty()

    def test_reject(self):
        """Refused as a duplicate; the file stored first stays as it was."""
        first = self.store(data_set(pixels=b"\x01\x00" * 10), on_duplicate="reject")
        before = self.content(first.path)
        error = self.assertStorageError(DuplicateInstance, self.store, data_set(pixels=b"\x02\x00" * 10), on_duplicate="reject")
        self.assertIn("exists", error.message)
        self.assertLessEqual(len(error.message), 64)
        self.assertEqual(self.content(first.path), before)
        self.assertEqual(os.listdir(os.path.dirname(first.path)), [SOP_INSTANCE + ".dcm"])
        self.assertIncomingEmpty()

    def test_unique(self):
        """Other bytes under the next free name; the same bytes never twice."""
        paths = [self.store(data_set(pixels=bytes([n, 0]) * 10), on_duplicate="unique").path for n in (1, 2, 3)]
        folder = os.path.dirname(paths[0])
        self.assertEqual(
            [os.path.basename(p) for p in paths],
            [f"{SOP_INSTANCE}.dcm", f"{SOP_INSTANCE}_1.dcm", f"{SOP_INSTANCE}_2.dcm"],
        )
        again = self.store(data_set(pixels=bytes([2, 0]) * 10), on_duplicate="unique")
        self.assertEqual((again.path, again.duplicate), (paths[1], "identical"))
        # Same size, other bytes: compared to the end, not by size alone.
        other = self.store(data_set(pixels=bytes([4, 0]) * 10), on_duplicate="unique")
        self.assertEqual(os.path.basename(other.path), f"{SOP_INSTANCE}_3.dcm")
        self.assertEqual(len(os.listdir(folder)), 4)
        self.assertEqual(self.content(other.path)[-20:], bytes([4, 0]) * 10)
        self.assertIncomingEmpty()

    def test_unique_compares_data_sets_not_file_meta(self):
        """The same data set from another calling AE title (another file meta) is not stored twice; a file without a meta is never the same."""
        first = self.store(data_set(), on_duplicate="unique", calling_ae_title="FIRST")
        again = self.store(data_set(), on_duplicate="unique", calling_ae_title="SECOND")
        self.assertEqual((again.path, again.duplicate), (first.path, "identical"))
        with open(first.path, "r+b") as f:
            f.seek(128)
            f.write(b"XXXX")  # no DICM prefix: no data set to compare
        other = self.store(data_set(), on_duplicate="unique")
        self.assertEqual(os.path.basename(other.path), SOP_INSTANCE + "_1.dcm")

    def test_unique_names_never_another_instances(self):
        """Without an extension too, the second file of 1.2.3 is 1.2.3_1, never 1.2.3.1, another instance's name."""
        layout = Layout("{SOPInstanceUID}")
        first = self.store(data_set(pixels=b"\x01\x00" * 10), on_duplicate="unique", layout=layout)
        second = self.store(data_set(pixels=b"\x02\x00" * 10), on_duplicate="unique", layout=layout)
        self.assertEqual(os.path.basename(first.path), SOP_INSTANCE)
        self.assertEqual(os.path.basename(second.path), SOP_INSTANCE + "_1")

    def test_symbolic_link_in_the_place_of_the_file(self):
        """Not followed, never replaced under keep or unique."""
        target = os.path.join(self.base, "target")
        with open(target, "wb") as f:
            f.write(b"outside")
        folder = os.path.join(self.output, STUDY, SERIES)
        os.makedirs(folder)
        os.symlink(target, os.path.join(folder, SOP_INSTANCE + ".dcm"))
        kept = self.store(data_set(), on_duplicate="keep")
        self.assertEqual(kept.duplicate, "kept")
        unique = self.store(data_set(), on_duplicate="unique")
        self.assertEqual(os.path.basename(unique.path), SOP_INSTANCE + "_1.dcm")
        self.assertEqual(self.content(target), b"outside")
        self.assertTrue(os.path.islink(os.path.join(folder, SOP_INSTANCE + ".dcm")))

    def test_writers_at_once(self):
        """Eight writers of one instance at once: under keep exactly one stores it, and its bytes are the file's."""
        import threading

        writers = []
        for n in range(8):
            writer = self.writer(on_duplicate="keep")
            writer.write([data_set(pixels=bytes([n, 0]) * 10)])
            writers.append(writer)
        results = [None] * len(writers)
        start = threading.Barrier(len(writers))

        def commit(index):
            start.wait()
            results[index] = writers[index].commit()

        threads = [threading.Thread(target=commit, args=(i,)) for i in range(len(writers))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        placed = [i for i, result in enumerate(results) if result.duplicate is None]
        self.assertEqual(len(placed), 1, results)
        self.assertEqual(self.content(results[0].path)[-20:], bytes([placed[0], 0]) * 10)
        self.assertIncomingEmpty()


class RefusalTests(StoreTestsMixin, SynchronousTestCase):
    def assertNothingStored(self):
        self.assertIncomingEmpty()
        self.assertEqual(os.listdir(self.output), [INCOMING])

    def test_instance_mismatch(self):
        """Refused when the data set is another instance than the one announced."""
        writer = self.writer()
        writer.write([data_set(sop_instance="1.2.3.4")])
        error = self.assertStorageError(DataSetMismatch, writer.commit)
        self.assertIn("1.2.3.4", error.message)
        self.assertNothingStored()

    def test_class_mismatch(self):
        writer = self.writer()
        writer.write([data_set(sop_class="1.2.840.10008.5.1.4.1.1.2")])
        self.assertStorageError(DataSetMismatch, writer.commit)
        self.assertNothingStored()

    def assertRefused(self, data: bytes, **kwargs):
        """
        C{data} is refused as a L{MalformedDataSet}, by L{InstanceWriter.write} as soon
        as it is known not to parse, else by L{InstanceWriter.commit}.
        """
        writer = self.writer(**kwargs)
        try:
            writer.write(chunked(data, random.Random(len(data))))
        except StorageError as e:
            self.assertIs(type(e), MalformedDataSet, e)
            self.assertIsNone(writer.temp_path)
        else:
            self.assertStorageError(MalformedDataSet, writer.commit)
        self.assertNothingStored()

    def test_garbage(self):
        for garbage in [b"", b"\xff" * 5000, os.urandom(20000), b"not DICOM at all"]:
            self.assertRefused(garbage)

    def test_garbage_deflated(self):
        self.assertRefused(os.urandom(20000), transfer_syntax_uid="1.2.840.10008.1.2.1.99")

    def test_wrong_transfer_syntax(self):
        """An explicit little endian data set announced as big endian."""
        writer = self.writer(transfer_syntax_uid="1.2.840.10008.1.2.2")
        writer.write([data_set()])
        self.assertRaises(MalformedDataSet, writer.commit)
        self.assertNothingStored()


class FailureTests(StoreTestsMixin, SynchronousTestCase):
    """Failures that happen as root too (where modes do not stop writes)."""

    def test_file_where_study_folder_goes(self):
        blocker = os.path.join(self.output, STUDY)
        with open(blocker, "wb") as f:
            f.write(b"not a folder")
        writer = self.writer()
        writer.write([data_set()])
        self.assertStorageError(WriteFailed, writer.commit)
        self.assertIncomingEmpty()
        self.assertEqual(sorted(os.listdir(self.output)), sorted([INCOMING, STUDY]))
        with open(blocker, "rb") as f:
            self.assertEqual(f.read(), b"not a folder")

    def test_folder_where_file_goes(self):
        final = os.path.join(self.output, STUDY, SERIES, SOP_INSTANCE + ".dcm")
        os.makedirs(final)
        writer = self.writer()
        writer.write([data_set()])
        self.assertStorageError(WriteFailed, writer.commit)
        self.assertIncomingEmpty()
        self.assertEqual(os.listdir(final), [])

    def test_output_is_a_file(self):
        os.rmdir(self.output)
        with open(self.output, "wb") as f:
            f.write(b"x")
        self.assertStorageError(WriteFailed, self.writer)

    def test_write_fails(self):
        """
        A write that fails (here: past RLIMIT_FSIZE, as a full disk would)
        is a WriteFailed and takes the temporary file with it.
        """
        import resource
        import signal

        writer = self.writer()
        limit = 1 << 20
        large = data_set(pixels=bytes(limit))
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        try:
            with self.assertRaises(StorageError) as caught:
                writer.write([large[: limit // 2], large[limit // 2 :]])
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, handler)
        self.assertIs(type(caught.exception), WriteFailed)
        self.assertIsNone(writer.temp_path)
        self.assertIncomingEmpty()
        # The writer is done: anything more is refused, and discard is harmless.
        self.assertStorageError(WriterClosed, writer.write, [b"more"])
        self.assertStorageError(WriterClosed, writer.commit)
        writer.discard()
        self.assertEqual(os.listdir(self.output), [INCOMING])


class DiscardTests(StoreTestsMixin, SynchronousTestCase):
    def test_discard(self):
        writer = self.writer()
        self.assertTrue(os.path.isfile(writer.temp_path))
        self.assertTrue(writer.temp_path.startswith(os.path.join(self.output, INCOMING) + os.sep))
        writer.write([data_set()])
        writer.discard()
        writer.discard()
        self.assertIncomingEmpty()
        self.assertEqual(os.listdir(self.output), [INCOMING])
        self.assertStorageError(WriterClosed, writer.commit)

    def test_discard_after_commit(self):
        """Harmless: the stored file stays."""
        writer = self.writer()
        writer.write([data_set()])
        stored = writer.commit()
        writer.discard()
        self.assertTrue(os.path.isfile(stored.path))

    def test_temp_files_unique(self):
        writers = [self.writer() for _ in range(5)]
        self.assertEqual(len({w.temp_path for w in writers}), 5)
        for w in writers:
            w.discard()
        self.assertIncomingEmpty()


class CleanIncomingTests(StoreTestsMixin, SynchronousTestCase):
    def test_clean(self):
        incoming = os.path.join(self.output, INCOMING)
        os.makedirs(incoming)
        for name in ["b.part", "a.part", "notes.txt"]:
            with open(os.path.join(incoming, name), "wb") as f:
                f.write(b"stale")
        os.mkdir(os.path.join(incoming, "dir.part"))
        stored = self.store(data_set())
        self.assertEqual(clean_incoming(self.tree()), ["a.part", "b.part"])
        self.assertEqual(sorted(os.listdir(incoming)), ["dir.part", "notes.txt"])
        self.assertTrue(os.path.isfile(stored.path))
        self.assertEqual(clean_incoming(self.tree()), [])

    def test_live_writer_part(self):
        """What a writer crashed mid-way leaves is what it removes."""
        writer = self.writer()
        name = os.path.basename(writer.temp_path)
        self.assertEqual(clean_incoming(self.tree()), [name])
        self.assertIncomingEmpty()

    def test_no_incoming(self):
        self.assertEqual(clean_incoming(self.tree()), [])
        absent = os.path.join(self.base, "absent")
        self.assertEqual(clean_incoming(OutputTree(absent)), [])
        self.assertEqual(os.listdir(absent), [INCOMING])


OTHER = SOP_INSTANCE + "1"


class RemovedFolderTests(StoreTestsMixin, SynchronousTestCase):
    """A folder removed behind radx's back, once opened, is made again."""

    def test_removed_series_folder_is_made_again(self):
        first = self.store(data_set())
        shutil.rmtree(os.path.join(self.output, STUDY))
        second = self.store(data_set(sop_instance=OTHER), sop_instance_uid=OTHER)
        self.assertTrue(os.path.isfile(second.path))
        self.assertEqual(os.path.dirname(second.path), os.path.dirname(first.path))
        self.assertIncomingEmpty()

    def test_removed_incoming_folder_is_made_again(self):
        self.store(data_set())
        shutil.rmtree(os.path.join(self.output, INCOMING))
        stored = self.store(data_set(sop_instance=OTHER), sop_instance_uid=OTHER)
        self.assertTrue(os.path.isfile(stored.path))
        self.assertIncomingEmpty()
