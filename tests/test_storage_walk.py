"""Tests for radx.storage.walk: every real data set parses to its end, every contradiction is refused."""

from __future__ import annotations

import random
import struct
import tracemalloc
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from radx.storage.part10 import InstanceHeader, UnreadableDataSet
from radx.storage.walk import FILING_HEADER_BOUND, MAX_DEPTH, DataSetWalk
from tests.dicomfiles import data_set_bytes, pydicom_test_files
from tests.test_storage_header import ITEM, SEQUENCE_END, explicit, implicit, item, ui
from tests.test_storage_part10 import samples

EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
BIG = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_2000 = "1.2.840.10008.1.2.4.90"
RLE = "1.2.840.10008.1.2.5"
PIXEL_DATA = 0x7FE00010
UNDEFINED = 0xFFFFFFFF

HEADER = InstanceHeader("1.2.840.10008.5.1.4.1.1.7", "1.2.3.4", "1.2.3.5", "1.2.3.6")


def uids(header: InstanceHeader = HEADER) -> bytes:
    return (
        explicit(0x00080016, b"UI", ui(header.sop_class_uid))
        + explicit(0x00080018, b"UI", ui(header.sop_instance_uid))
        + explicit(0x0020000D, b"UI", ui(header.study_instance_uid))
        + explicit(0x0020000E, b"UI", ui(header.series_instance_uid))
    )


def encapsulated(*fragments: bytes) -> bytes:
    """PS3.5 A.4: undefined length OB Pixel Data, an empty Basic Offset Table, the fragments."""
    return (
        explicit(PIXEL_DATA, b"OB", b"", UNDEFINED)
        + implicit(ITEM, b"")
        + b"".join(implicit(ITEM, f) for f in fragments)
        + implicit(SEQUENCE_END, b"")
    )


JPEG_FRAME = b"\xff\xd8\xff\xe0" + bytes(12) + b"\xff\xd9"
J2K_FRAME = b"\xff\x4f\xff\x51" + bytes(14)
RLE_FRAME = struct.pack("<16L", 1, 64, *[0] * 14) + b"\x00\x00"


def walk(data: bytes, syntax: str, pieces: int | None = None, seed: int = 0) -> InstanceHeader:
    """Feed C{data} in random pieces (of 1 byte with C{pieces=1}), then end."""
    walker = DataSetWalk(syntax)
    rng = random.Random(seed)
    view = memoryview(data)
    while view:
        size = pieces or rng.randrange(1, 40)
        walker.feed(view[:size])
        view = view[size:]
    return walker.end()


def deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


class RealDataSetTests(SynchronousTestCase):
    """Data sets written by other implementations, one or more per transfer syntax: all of them walk to their end."""

    def test_pydicom_samples(self):
        for sample in samples():
            for pieces in (1, None):
                self.assertEqual(walk(sample.data_set, sample.transfer_syntax_uid, pieces), sample.header, sample.name)

    def test_one_file_per_transfer_syntax(self):
        for case, test_file in pydicom_test_files().items():
            header = walk(data_set_bytes(test_file.path), test_file.transfer_syntax_uid)
            self.assertEqual(header.sop_instance_uid, test_file.sop_instance_uid, case)

    def test_whole_in_one_piece(self):
        for sample in samples():
            walker = DataSetWalk(sample.transfer_syntax_uid)
            walker.feed(sample.data_set)
            self.assertEqual(walker.end(), sample.header, sample.name)

    def test_encapsulated_frames(self):
        for syntax, frame in [(JPEG_BASELINE, JPEG_FRAME), (JPEG_2000, J2K_FRAME), (RLE, RLE_FRAME)]:
            self.assertEqual(walk(uids() + encapsulated(frame, frame), syntax), HEADER, syntax)

    def test_sequences_and_items_of_every_length_form(self):
        nested = explicit(0x00081150, b"UI", ui("1.2.3"))
        data = (
            uids()
            + explicit(0x00081140, b"SQ", item(nested, True) + item(nested, False) + implicit(SEQUENCE_END, b""), UNDEFINED)
            + explicit(0x00081199, b"SQ", item(nested, True) + item(b"", False))
            + explicit(0x00091010, b"UN", item(implicit(0x00091011, b"ab"), True) + implicit(SEQUENCE_END, b""), UNDEFINED)
        )
        self.assertEqual(walk(data, EXPLICIT, 1), HEADER)

    def test_deflated_with_one_byte_of_padding(self):
        self.assertEqual(walk(deflate(uids()) + b"\0", DEFLATED), HEADER)


class RefusalTests(SynchronousTestCase):
    """Each data set that contradicts its transfer syntax, or itself, is refused, whatever the pieces."""

    def assertRefused(self, data: bytes, syntax: str, reason: str) -> None:
        for pieces in (1, None, len(data) or 1):
            with self.assertRaises(UnreadableDataSet) as caught:
                walk(data, syntax, pieces)
            self.assertIn(reason, caught.exception.message)

    def test_encapsulated_pixel_data_on_a_native_syntax(self):
        # What odil sent: JPEG 2000 fragments on an Explicit VR Little Endian context.
        reason = "encapsulated (undefined length) but the transfer syntax is native"
        self.assertRefused(uids() + encapsulated(J2K_FRAME), EXPLICIT, reason)
        data = implicit(0x00080016, ui(HEADER.sop_class_uid)) + implicit(0x00080018, ui("1.2.3.4"))
        data += implicit(PIXEL_DATA, b"", UNDEFINED) + implicit(ITEM, b"") + implicit(SEQUENCE_END, b"")
        self.assertRefused(data, IMPLICIT, reason)

    def test_native_pixel_data_on_an_encapsulated_syntax(self):
        self.assertRefused(uids() + explicit(PIXEL_DATA, b"OW", bytes(64)), JPEG_BASELINE, "has a defined length")

    def test_rle_frames_on_a_jpeg_context(self):
        # What PixelMed sent: RLE frames on a JPEG Baseline context.
        self.assertRefused(uids() + encapsulated(RLE_FRAME), JPEG_BASELINE, "JPEG SOI marker")

    def test_jpeg_frames_on_an_rle_context(self):
        self.assertRefused(uids() + encapsulated(JPEG_FRAME), RLE, "RLE Header")

    def test_jpeg_frames_on_a_jpeg_2000_context(self):
        self.assertRefused(uids() + encapsulated(JPEG_FRAME), JPEG_2000, "JPEG 2000 SOC marker")

    def test_a_real_rle_file_on_a_jpeg_context(self):
        sample = pydicom_test_files()["rle_lossless"]
        self.assertRefused(data_set_bytes(sample.path), JPEG_BASELINE, "JPEG SOI marker")

    def test_fragment_of_undefined_length(self):
        data = uids() + explicit(PIXEL_DATA, b"OB", b"", UNDEFINED) + implicit(ITEM, b"") + implicit(ITEM, b"", UNDEFINED)
        self.assertRefused(data, JPEG_BASELINE, "in encapsulated Pixel Data")

    def test_truncated_deflated_data_set(self):
        # What PixelMed sent: the first 2,690 of 9,844 bytes of a deflated data set.
        deflated = deflate(uids() + explicit(PIXEL_DATA, b"OW", random.Random(1).randbytes(9000)))
        self.assertRefused(deflated[: len(deflated) * 27 // 100], DEFLATED, "its deflate stream does not end")

    def test_bytes_after_the_deflated_data_set(self):
        self.assertRefused(deflate(uids()) + bytes(10), DEFLATED, "follow the end of the deflated data set")

    def test_trailer_and_pad_after_the_deflated_data_set(self):
        # An RFC 1952 trailer (8 bytes), then PS3.5 7.1's pad to an even length.
        walk = DataSetWalk(DEFLATED)
        walk.feed(deflate(uids()) + bytes(9))
        self.assertIsNotNone(walk.end())

    def test_not_deflated(self):
        self.assertRefused(uids(), DEFLATED, "cannot be inflated")

    def test_deflated_data_set_that_does_not_parse(self):
        self.assertRefused(deflate(uids()[:-3]), DEFLATED, "ends 3 bytes before the end of a value")

    def test_truncated_value(self):
        self.assertRefused(uids()[:-3], EXPLICIT, "ends 3 bytes before the end of a value")

    def test_truncated_header(self):
        self.assertRefused(uids() + explicit(0x00280010, b"US", b"\0\2")[:5], EXPLICIT, "in the middle of an element header")

    def test_sequence_never_delimited(self):
        self.assertRefused(uids() + explicit(0x00081140, b"SQ", item(b"", True), UNDEFINED), EXPLICIT, "ends inside a sequence of (0008,1140)")

    def test_item_never_delimited(self):
        data = uids() + explicit(0x00081140, b"SQ", implicit(ITEM, b"", UNDEFINED), UNDEFINED)
        self.assertRefused(data, EXPLICIT, "ends inside an item of (0008,1140)")

    def test_element_past_the_end_of_its_item(self):
        nested = explicit(0x00081150, b"UI", ui("1.2.3"))
        bad_item = implicit(ITEM, nested, len(nested) - 2) + nested[-2:]
        self.assertRefused(uids() + explicit(0x00081140, b"SQ", bad_item), EXPLICIT, "runs past the end of an item of (0008,1140)")

    def test_not_an_item_in_a_sequence(self):
        data = uids() + explicit(0x00081140, b"SQ", explicit(0x00081150, b"UI", ui("1.2.3")), UNDEFINED)
        self.assertRefused(data, EXPLICIT, "where an item of (0008,1140) should be")

    def test_undefined_length_on_a_vr_that_cannot_have_one(self):
        self.assertRefused(uids() + explicit(0x00100010, b"PN", b"", 0xFFFF) + explicit(0x00101010, b"OB", b"", UNDEFINED), EXPLICIT, "undefined length")

    def test_nested_too_deep(self):
        data = uids()
        for _ in range(MAX_DEPTH):
            data += explicit(0x00081140, b"SQ", b"", UNDEFINED) + implicit(ITEM, b"", UNDEFINED)
        self.assertRefused(data, EXPLICIT, f"nested deeper than {MAX_DEPTH}")

    def test_implicit_data_set_on_an_explicit_context(self):
        data = implicit(0x00080016, ui(HEADER.sop_class_uid)) + implicit(0x00080018, ui("1.2.3.4"))
        self.assertRefused(data, EXPLICIT, "not in the explicit VR of its transfer syntax")

    def test_explicit_data_set_on_an_implicit_context(self):
        self.assertRefused(uids(), IMPLICIT, "is in explicit VR")

    def test_little_endian_data_set_on_a_big_endian_context(self):
        self.assertRefused(uids(), BIG, "the data set ends")

    def test_no_sop_instance_uid(self):
        self.assertRefused(explicit(0x00080016, b"UI", ui(HEADER.sop_class_uid)), EXPLICIT, "no SOP Instance UID")

    def test_stray_delimiter(self):
        self.assertRefused(uids() + implicit(SEQUENCE_END, b""), EXPLICIT, "where a data element should be")


class BoundedMemoryTests(SynchronousTestCase):
    """
    Values are skipped, never held; a deflated data set is inflated a
    bounded piece at a time; and the filing header must end within
    FILING_HEADER_BOUND bytes.

    Memory is measured with tracemalloc (Python's own allocations, which
    is where a value read whole would be). The bound asserted, 4 MiB, is
    far above what the walk holds (a few KiB) and far below the values fed
    (64 MiB), so it tells the two apart whatever the allocator does.
    """

    LARGE = 64 << 20

    def peak(self, walker: DataSetWalk, data: bytes, zeros: int = 0, piece: bytes = bytes(1 << 20)) -> int:
        tracemalloc.start()
        try:
            walker.feed(data)
            for _ in range(zeros // len(piece)):
                walker.feed(piece)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    def test_large_value_after_the_uids_is_skipped(self):
        walker = DataSetWalk(EXPLICIT)
        peak = self.peak(walker, uids() + explicit(PIXEL_DATA, b"OW", b"", self.LARGE), self.LARGE)
        self.assertLess(peak, 4 << 20)
        self.assertEqual(walker.end(), HEADER)

    def test_large_value_before_the_uids_is_refused_at_its_header(self):
        walker = DataSetWalk(EXPLICIT)
        data = explicit(0x00080005, b"OB", b"", 512 << 20) + uids()
        with self.assertRaises(UnreadableDataSet) as caught:
            walker.feed(data)
        self.assertIn(f"within the data set's first {FILING_HEADER_BOUND} bytes", caught.exception.message)

    def test_deflated_large_value_after_the_uids(self):
        compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        deflated = compressor.compress(uids() + explicit(PIXEL_DATA, b"OB", b"", self.LARGE))
        zeros = bytes(1 << 20)
        deflated += b"".join(compressor.compress(zeros) for _ in range(self.LARGE >> 20)) + compressor.flush()
        self.assertLess(len(deflated), self.LARGE // 500)
        walker = DataSetWalk(DEFLATED)
        self.assertLess(self.peak(walker, deflated), 4 << 20)
        self.assertEqual(walker.end(), HEADER)
        self.assertEqual(walker.inflated, len(uids()) + 12 + self.LARGE)

    def test_deflated_large_value_before_the_uids_is_refused_early(self):
        compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        deflated = compressor.compress(explicit(0x00080005, b"OB", b"", self.LARGE))
        zeros = bytes(1 << 20)
        deflated += b"".join(compressor.compress(zeros) for _ in range(self.LARGE >> 20))
        deflated += compressor.compress(uids()) + compressor.flush()
        walker = DataSetWalk(DEFLATED)
        with self.assertRaises(UnreadableDataSet):
            walker.feed(deflated)
        # Refused at the value's header: not one more piece inflated.
        self.assertLessEqual(walker.inflated, 256 * 1024)


class AnyInputTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=400), st.sampled_from([EXPLICIT, IMPLICIT, BIG, DEFLATED, JPEG_BASELINE, RLE]), st.integers(1, 50))
    def test_any_bytes(self, data, syntax, pieces):
        """Any bytes in any pieces: a header or UnreadableDataSet, nothing else."""
        try:
            walk(data, syntax, pieces)
        except UnreadableDataSet as e:
            self.assertTrue(e.message)


PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
MODALITY = 0x00080060


def walked_values(data: bytes, syntax: str, wanted, pieces: int | None = None) -> dict | None:
    """The values the walk keeps of C{wanted}, fed C{data} in pieces."""
    walker = DataSetWalk(syntax, wanted)
    view = memoryview(data)
    while view:
        walker.feed(view[: pieces or len(view)])
        view = view[pieces or len(view) :]
    walker.end()
    return walker.values()


class ValuesTests(SynchronousTestCase):
    """The top-level values asked for, kept as the data set is walked: what the catalogue and a layout read, with no second scan."""

    def data_set(self, name: bytes = b"DOE^JANE") -> bytes:
        nested = explicit(PATIENT_NAME, b"PN", b"NESTED^NAME ")
        return (
            explicit(0x00080016, b"UI", ui(HEADER.sop_class_uid))
            + explicit(0x00080018, b"UI", ui(HEADER.sop_instance_uid))
            + explicit(MODALITY, b"CS", b"CT")
            + explicit(0x00081110, b"SQ", item(nested, True), UNDEFINED) + implicit(SEQUENCE_END, b"")
            + explicit(PATIENT_NAME, b"PN", name)
            + explicit(0x0020000D, b"UI", ui(HEADER.study_instance_uid))
            + explicit(0x0020000E, b"UI", ui(HEADER.series_instance_uid))
            + explicit(PIXEL_DATA, b"OW", bytes(64))
        )

    def test_top_level_values_kept(self):
        """Those at the top level, in every way the data set may be cut; not those of an item; none absent (PatientID)."""
        data = self.data_set()
        for pieces in (None, 1, 7):
            values = walked_values(data, EXPLICIT, {PATIENT_NAME, PATIENT_ID, MODALITY}, pieces)
            self.assertEqual((values[PATIENT_NAME], values[MODALITY]), (b"DOE^JANE", b"CT"), pieces)
            self.assertNotIn(PATIENT_ID, values)

    def test_deflated(self):
        """A deflated data set's values, from its inflated bytes."""
        values = walked_values(deflate(self.data_set()), DEFLATED, {PATIENT_NAME}, 5)
        self.assertEqual(values[PATIENT_NAME], b"DOE^JANE")

    def test_too_long_to_keep(self):
        """A value asked for that is longer than the walk keeps: no values, the caller reads the file."""
        data = self.data_set(b"LONG^" * 300)
        self.assertIsNone(walked_values(data, EXPLICIT, {PATIENT_NAME}))
        self.assertIsNone(walked_values(data, EXPLICIT, {PATIENT_NAME}, 100))
        self.assertIsNotNone(walked_values(data, EXPLICIT, {MODALITY}))

    def test_only_the_uids_unless_asked(self):
        self.assertEqual(sorted(walked_values(self.data_set(), EXPLICIT, ())), [0x00080016, 0x00080018, 0x0020000D, 0x0020000E])
