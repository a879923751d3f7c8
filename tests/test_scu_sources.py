"""Reading what a C-STORE SCU sends from PS3.10 files, and planning presentation contexts."""

from __future__ import annotations

import os
import struct

from twisted.trial.unittest import SynchronousTestCase

from radx.dimse.status import describe_status, is_failure, is_warning
from radx.scu.sources import NotPart10, Part10Source, list_files, plan_batches, read_source
from radx.storage.part10 import data_set_offset, file_meta_bytes
from radx.ul.negotiation import describe_reject
from radx.ul.pdu import AAssociateRJ
from tests import dicomfiles

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"


def _element(element: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


class ReadSourceTests(SynchronousTestCase):
    def write(self, data: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as fp:
            fp.write(data)
        return path

    def test_data_set_uids_win_over_a_stale_file_meta(self):
        """pydicom's rtplan.dcm names another SOP Instance in its meta than in its data set: the data set's is sent."""
        import pydicom
        from pydicom.data import get_testdata_file

        path = get_testdata_file("rtplan.dcm")
        data_set = pydicom.dcmread(path, stop_before_pixels=True)
        self.assertNotEqual(data_set.file_meta.MediaStorageSOPInstanceUID, data_set.SOPInstanceUID)
        source = read_source(path)
        self.assertEqual(source.sop_instance_uid, data_set.SOPInstanceUID)
        self.assertEqual(source.sop_class_uid, data_set.SOPClassUID)

    def test_data_set_uids_past_a_long_element(self):
        """
        The data set's UIDs are read however far its (0008,0018) lies, up to
        64 KiB into it: past the first read, a longer head is scanned. Further
        than that, the file meta's are sent.
        """

        def data_set(padding: int) -> bytes:
            # (0008,0006) Language Code Sequence, before (0008,0016): one item
            # holding a private block with an OB of ``padding`` bytes.
            private = struct.pack("<HH2sH", 0x0009, 0x0010, b"LO", 10) + b"RADX TEST "
            private += struct.pack("<HH2sHL", 0x0009, 0x1000, b"OB", 0, padding) + bytes(padding)
            item = struct.pack("<HHL", 0xFFFE, 0xE000, len(private)) + private
            return b"".join(
                [
                    struct.pack("<HH2sHL", 0x0008, 0x0006, b"SQ", 0, len(item)) + item,
                    struct.pack("<HH2sH", 0x0008, 0x0016, b"UI", 26) + MR.encode() + b"\x00",
                    struct.pack("<HH2sH", 0x0008, 0x0018, b"UI", 6) + b"9.8.7\x00",
                    struct.pack("<HH2sH", 0x0020, 0x000D, b"UI", 4) + b"1.4\x00",
                    struct.pack("<HH2sH", 0x0020, 0x000E, b"UI", 4) + b"1.5\x00",
                    struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, 100_000) + bytes(100_000),
                ]
            )

        meta = file_meta_bytes(CT, "1.2.3", EXPLICIT, "MODALITY")
        for padding, expected in [
            (100, (MR, "9.8.7")),
            (20_000, (MR, "9.8.7")),
            (60_000, (MR, "9.8.7")),
            (70_000, (CT, "1.2.3")),
        ]:
            body = data_set(padding)
            source = read_source(self.write(meta + body))
            self.assertEqual((source.sop_class_uid, source.sop_instance_uid), expected, padding)
            self.assertEqual((source.data_set_offset, source.data_set_length), (len(meta), len(body)), padding)

    def test_only_the_sop_uids_are_scanned_for(self):
        """What follows (0008,0018), however long or odd, does not keep the data set's UIDs from being read."""
        meta = file_meta_bytes(CT, "1.2.3", EXPLICIT, "MODALITY")
        body = (
            struct.pack("<HH2sH", 0x0008, 0x0016, b"UI", 26) + MR.encode() + b"\x00"
            + struct.pack("<HH2sH", 0x0008, 0x0018, b"UI", 6) + b"9.8.7\x00"
            # An element of a VR no scan understands, then 200 KiB before (0020,000E).
            + struct.pack("<HH2sH", 0x0010, 0x0010, b"??", 4) + b"ABCD"
            + bytes(200_000)
        )  # fmt: skip
        source = read_source(self.write(meta + body))
        self.assertEqual((source.sop_class_uid, source.sop_instance_uid), (MR, "9.8.7"))

    def test_dicomdir_is_not_sent(self):
        """A DICOMDIR indexes a File-set: not an instance, so not proposed or sent (DCMTK storescu refuses it too)."""
        from pydicom.data import get_testdata_file

        with self.assertRaises(NotPart10) as caught:
            read_source(get_testdata_file("DICOMDIR"))
        self.assertEqual(
            caught.exception.message, "a DICOMDIR (Media Storage Directory Storage) indexes files; it is not sent"
        )

    def test_pydicom_files(self):
        """Every transfer syntax case: the UIDs of the file meta, the data set where part10 finds it."""
        for case, test_file in dicomfiles.pydicom_test_files().items():
            source = read_source(test_file.path)
            with open(test_file.path, "rb") as fp:
                offset = data_set_offset(fp)
            self.assertEqual(
                (source.sop_class_uid, source.sop_instance_uid, source.transfer_syntax_uid, source.data_set_offset),
                (test_file.sop_class_uid, test_file.sop_instance_uid, test_file.transfer_syntax_uid, offset),
                case,
            )
            self.assertEqual(source.data_set_length, os.path.getsize(test_file.path) - offset)

    def test_radx_written_meta(self):
        meta = file_meta_bytes(CT, "1.2.3.4", EXPLICIT, "MODALITY")
        path = self.write(meta + b"\x08\x00\x16\x00" + b"data set")
        source = read_source(path)
        self.assertEqual(source, Part10Source(path, CT, "1.2.3.4", EXPLICIT, len(meta), 12))

    def test_meta_without_group_length(self):
        """The meta ends at the first element of another group."""
        meta = bytes(128) + b"DICM" + b"".join(
            [
                _element(0x0002, b"UI", b"1.2.840.10008.5.1.4.1.1.4\x00"),
                _element(0x0003, b"UI", b"1.2.3\x00"),
                _element(0x0010, b"UI", b"1.2.840.10008.1.2\x00"),
            ]
        )
        path = self.write(meta + struct.pack("<HHL", 0x0008, 0x0016, 0))
        source = read_source(path)
        self.assertEqual((source.sop_class_uid, source.sop_instance_uid, source.transfer_syntax_uid), (MR, "1.2.3", IMPLICIT))
        self.assertEqual(source.data_set_offset, len(meta))

    def test_not_part10(self):
        for data, message in [
            (b"hello", "not a DICOM Part 10 file (no DICM prefix)"),
            (bytes(128) + b"DICM" + _element(0x0000, b"UL", struct.pack("<L", 100)), "the file meta group is truncated"),
            (
                bytes(128) + b"DICM" + _element(0x0010, b"UI", b"1.2.840.10008.1.2\x00"),
                "the file meta has no Media Storage SOP Class UID (0002,0002)",
            ),
        ]:
            with self.assertRaises(NotPart10) as caught:
                read_source(self.write(data))
            self.assertEqual(caught.exception.message, message)


class ListFilesTests(SynchronousTestCase):
    def setUp(self):
        self.root = self.mktemp()
        for relative in ["b.dcm", "a.dcm", ".hidden", "sub/c.dcm", "sub/deeper/d.dcm", ".git/e.dcm"]:
            path = os.path.join(self.root, relative)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "wb").close()

    def relative(self, paths):
        return [os.path.relpath(p, self.root) for p in paths]

    def test_directory_alone(self):
        self.assertEqual(self.relative(list_files([], self.root)), ["a.dcm", "b.dcm"])

    def test_recursive(self):
        self.assertEqual(
            self.relative(list_files([], self.root, recursive=True)),
            ["a.dcm", "b.dcm", "sub/c.dcm", "sub/deeper/d.dcm"],
        )

    def test_files_then_directory(self):
        named = os.path.join(self.root, "sub", "c.dcm")
        self.assertEqual(self.relative(list_files([named], self.root)), ["sub/c.dcm", "a.dcm", "b.dcm"])


def _source(index: int, sop_class: str, transfer_syntax: str = EXPLICIT) -> Part10Source:
    return Part10Source(f"f{index}", sop_class, f"1.2.{index}", transfer_syntax, 132, 10)


class PlanBatchesTests(SynchronousTestCase):
    def test_one_context_per_pair(self):
        sources = [_source(0, CT), _source(1, MR), _source(2, CT), _source(3, CT, IMPLICIT)]
        (batch,) = plan_batches(sources)
        self.assertEqual(batch.context_ids, {(CT, EXPLICIT): 1, (MR, EXPLICIT): 3, (CT, IMPLICIT): 5})
        self.assertEqual(batch.sources, sources)

    def test_split_over_128_contexts(self):
        """PS3.8 9.3.2.2: context IDs are odd, 1 to 255: 128 per association at most."""
        sources = [_source(i, f"1.2.3.{i}") for i in range(300)] + [_source(300, "1.2.3.0")]
        batches = plan_batches(sources)
        self.assertEqual([len(b.context_ids) for b in batches], [128, 128, 44])
        self.assertEqual(max(batches[0].context_ids.values()), 255)
        self.assertTrue(all(i % 2 == 1 for b in batches for i in b.context_ids.values()))
        # A pair seen again goes to the batch that already proposes it.
        self.assertEqual(batches[0].sources[-1].path, "f300")
        self.assertEqual(sum(len(b.sources) for b in batches), 301)


class DescriptionTests(SynchronousTestCase):
    def test_reject(self):
        self.assertEqual(
            describe_reject(AAssociateRJ(2, 3, 2)), "Local Limit Exceeded (rejected-transient, service-provider (presentation))"
        )
        self.assertEqual(describe_reject(AAssociateRJ(1, 1, 9)), "reason 9 (rejected-permanent, service-user)")

    def test_statuses(self):
        self.assertEqual(describe_status(0x0122), "0x0122 (SOP Class not supported)")
        self.assertEqual(describe_status(0xA701), "0xA701 (Refused: Out of Resources)")
        self.assertEqual(describe_status(0xC123), "0xC123 (Error: Cannot understand)")
        self.assertTrue(is_warning(0xB007) and not is_failure(0xB007))
        self.assertTrue(is_failure(0xA900) and is_failure(0x0117))
        self.assertFalse(is_failure(0x0000))
