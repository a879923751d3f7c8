"""Tests for radx.storage.part10."""

import io
import os
import struct
import zlib

import pydicom
from hypothesis import given, settings, strategies as st
from pydicom.data import get_testdata_file
from twisted.trial.unittest import SynchronousTestCase

from radx.storage.part10 import (
    InstanceHeader,
    UnreadableDataSet,
    data_set_offset,
    file_meta_bytes,
    read_instance_header,
)
from radx.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

# pydicom's own test files, one or more per kind of encoding.
SAMPLES = [
    "CT_small.dcm",  # explicit VR little endian
    "MR_small_implicit.dcm",  # implicit VR little endian
    "MR_small_bigendian.dcm",  # explicit VR big endian
    "image_dfl.dcm",  # deflated explicit VR little endian
    "JPEG2000.dcm",  # encapsulated
    "SC_rgb_rle.dcm",  # encapsulated, RLE
    "MR_small_jpeg_ls_lossless.dcm",  # encapsulated
    "rtplan.dcm",  # implicit; its file meta names another instance
    "test-SR.dcm",  # sequences
    "JPEGLSNearLossless_08.dcm",  # no Study or Series Instance UID
]


class Sample:
    """A pydicom test file, split by its own group length."""

    def __init__(self, name):
        self.name = name
        self.path = get_testdata_file(name)
        if self.path is None:
            raise FileNotFoundError(name)
        with open(self.path, "rb") as f:
            data = f.read()
        # Independent of radx: PS3.10 7.1, (0002,0000) UL right after "DICM".
        assert data[128:132] == b"DICM"
        tag, vr, length, group_length = struct.unpack("<I2sHI", data[132:144])
        assert (tag, vr, length) == (0x00000002, b"UL", 4)
        self.data_set = data[144 + group_length :]
        dataset = pydicom.dcmread(self.path, stop_before_pixels=True)
        self.transfer_syntax_uid = str(dataset.file_meta.TransferSyntaxUID)
        self.header = InstanceHeader(
            dataset.get("SOPClassUID"),
            dataset.get("SOPInstanceUID"),
            dataset.get("StudyInstanceUID"),
            dataset.get("SeriesInstanceUID"),
        )


def samples():
    return [Sample(name) for name in SAMPLES]


def explicit_le(*elements) -> bytes:
    """Explicit VR little endian (PS3.5 7.1.2) of (tag, vr, value) triples."""
    out = []
    for tag, vr, value in elements:
        if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT", b"UC", b"UR"):
            out.append(struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr, 0, len(value)))
        else:
            out.append(struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)))
        out.append(value)
    return b"".join(out)


def ui(uid: str) -> bytes:
    value = uid.encode("ascii")
    return value + b"\x00" * (len(value) % 2)


class FileMetaBytesTests(SynchronousTestCase):
    def test_expected_bytes(self):
        meta = file_meta_bytes(
            "1.2.840.10008.5.1.4.1.1.7",
            "1.2.3.4",
            "1.2.840.10008.1.2.1",
            "SCU",
            implementation_class_uid="1.2.3",
            implementation_version_name="RADX_TEST",
        )
        expected = (
            bytes(128)
            + b"DICM"
            + bytes.fromhex("0200 0000 554c 0400 88000000")  # (0002,0000) UL 136
            + bytes.fromhex("0200 0100 4f42 0000 02000000 0001")  # (0002,0001) OB 00\01
            + bytes.fromhex("0200 0200 5549 1a00")
            + b"1.2.840.10008.5.1.4.1.1.7\x00"
            + bytes.fromhex("0200 0300 5549 0800")
            + b"1.2.3.4\x00"
            + bytes.fromhex("0200 1000 5549 1400")
            + b"1.2.840.10008.1.2.1\x00"
            + bytes.fromhex("0200 1200 5549 0600")
            + b"1.2.3\x00"
            + bytes.fromhex("0200 1300 5348 0a00")
            + b"RADX_TEST "
            + bytes.fromhex("0200 1600 4145 0400")
            + b"SCU "
        )
        self.assertEqual(meta.hex(), expected.hex())

    def test_pydicom_reads_it(self):
        meta = file_meta_bytes("1.2.840.10008.5.1.4.1.1.2", "1.2.3.45", "1.2.840.10008.1.2", "STORESCU")
        dataset = pydicom.dcmread(io.BytesIO(meta))
        fm = dataset.file_meta
        self.assertEqual(fm.FileMetaInformationVersion, b"\x00\x01")
        self.assertEqual(fm.MediaStorageSOPClassUID, "1.2.840.10008.5.1.4.1.1.2")
        self.assertEqual(fm.MediaStorageSOPInstanceUID, "1.2.3.45")
        self.assertEqual(fm.TransferSyntaxUID, "1.2.840.10008.1.2")
        self.assertEqual(fm.ImplementationClassUID, IMPLEMENTATION_CLASS_UID)
        self.assertEqual(fm.ImplementationVersionName, IMPLEMENTATION_VERSION_NAME)
        self.assertEqual(fm.SourceApplicationEntityTitle, "STORESCU")
        self.assertEqual(fm.FileMetaInformationGroupLength, len(meta) - 144)
        self.assertEqual(data_set_offset(io.BytesIO(meta)), len(meta))

    def test_sending_and_receiving_titles(self):
        """PS3.10 7.1: (0002,0017) Sending and (0002,0018) Receiving Application Entity Title."""
        meta = file_meta_bytes(
            "1.2", "1.3", "1.2.840.10008.1.2", "MODALITY",
            sending_application_entity_title="MODALITY",
            receiving_application_entity_title="RADX-SCP",
        )
        fm = pydicom.dcmread(io.BytesIO(meta)).file_meta
        self.assertEqual(fm[0x00020017].value, "MODALITY")
        self.assertEqual(fm[0x00020018].value, "RADX-SCP")
        self.assertEqual(fm.FileMetaInformationGroupLength, len(meta) - 144)

    def test_optional_left_out(self):
        """Type 3 elements without a value are not written."""
        meta = file_meta_bytes("1.2", "1.3", "1.2.840.10008.1.2", "  ", implementation_version_name=None)
        fm = pydicom.dcmread(io.BytesIO(meta)).file_meta
        self.assertNotIn("SourceApplicationEntityTitle", fm)
        self.assertNotIn("ImplementationVersionName", fm)
        meta = file_meta_bytes("1.2", "1.3", "1.2.840.10008.1.2", None)
        self.assertNotIn("SourceApplicationEntityTitle", pydicom.dcmread(io.BytesIO(meta)).file_meta)

    def test_invalid_values(self):
        for args in [
            ("1.2/3", "1.3", "1.2.840.10008.1.2", "A"),
            ("1.2", "", "1.2.840.10008.1.2", "A"),
            ("1.2", "1.3", "1.2.840.10008.1.2\x00", "A"),
            ("1.2", "1.3", "1.2.840.10008.1.2", "A" * 17),
            ("1.2", "1.3", "1.2.840.10008.1.2", "A\\B"),
            ("1.2", "1.3", "1.2.840.10008.1.2", "ÄE"),
            ("1.2", "1.3", "1.2.840.10008.1.2", "A\nB"),
        ]:
            self.assertRaises(ValueError, file_meta_bytes, *args)

    uids = st.lists(st.integers(0, 10**9), min_size=2, max_size=6).map(lambda c: ".".join(map(str, c)))
    titles = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="\\"), min_size=1, max_size=16)

    @settings(max_examples=50)
    @given(uids, uids, uids, titles)
    def test_round_trip(self, sop_class, sop_instance, transfer_syntax, title):
        meta = file_meta_bytes(sop_class, sop_instance, transfer_syntax, title)
        self.assertEqual(len(meta) % 2, 0)
        fm = pydicom.dcmread(io.BytesIO(meta)).file_meta
        self.assertEqual(fm.MediaStorageSOPClassUID, sop_class)
        self.assertEqual(fm.MediaStorageSOPInstanceUID, sop_instance)
        self.assertEqual(fm.TransferSyntaxUID, transfer_syntax)
        self.assertEqual(fm.SourceApplicationEntityTitle, title)
        self.assertEqual(fm.FileMetaInformationGroupLength, len(meta) - 144)


class ReadInstanceHeaderTests(SynchronousTestCase):
    def write(self, data: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_samples(self):
        """Our file meta and each sample's data set, in every encoding."""
        for sample in samples():
            meta = file_meta_bytes(
                sample.header.sop_class_uid, sample.header.sop_instance_uid, sample.transfer_syntax_uid, "A"
            )
            path = self.write(meta + sample.data_set)
            self.assertEqual(read_instance_header(path, sample.transfer_syntax_uid), sample.header, sample.name)

    def test_missing_study(self):
        sample = Sample("JPEGLSNearLossless_08.dcm")
        self.assertIsNone(sample.header.study_instance_uid)
        self.assertIsNone(sample.header.series_instance_uid)

    def header_elements(self):
        return [
            (0x00080016, b"UI", ui("1.2.840.10008.5.1.4.1.1.7")),
            (0x00080018, b"UI", ui("1.2.3.4")),
            # A large private element before the study: skipped, not kept.
            (0x00091010, b"OB", bytes(range(256)) * 8192),
            (0x0020000D, b"UI", ui("1.2.3.5")),
            (0x0020000E, b"UI", ui("1.2.3.6")),
            (0x7FE00010, b"OW", bytes(1 << 20)),
        ]

    def test_large_deflated(self):
        """Read through a deflate stream, past a large element, in bounded steps."""
        data_set = explicit_le(*self.header_elements())
        compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        deflated = compressor.compress(data_set) + compressor.flush()
        ts = "1.2.840.10008.1.2.1.99"
        path = self.write(file_meta_bytes("1.2.840.10008.5.1.4.1.1.7", "1.2.3.4", ts, None) + deflated)
        self.assertEqual(
            read_instance_header(path, ts),
            InstanceHeader("1.2.840.10008.5.1.4.1.1.7", "1.2.3.4", "1.2.3.5", "1.2.3.6"),
        )
        # pydicom's reader agrees.
        self.assertEqual(pydicom.dcmread(path).StudyInstanceUID, "1.2.3.5")

    def test_truncated_after_header(self):
        """Only the elements up to (0020,000E) are read."""
        data_set = explicit_le(*self.header_elements())[:-1000]
        ts = "1.2.840.10008.1.2.1"
        path = self.write(file_meta_bytes("1.2.840.10008.5.1.4.1.1.7", "1.2.3.4", ts, None) + data_set)
        self.assertEqual(read_instance_header(path, ts).series_instance_uid, "1.2.3.6")

    def test_garbage(self):
        for ts in ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"]:
            for garbage in [b"", b"\xff" * 1000, b"not a DICOM data set " * 50, os.urandom(4096)]:
                path = self.write(file_meta_bytes("1.2", "1.3", ts, None) + garbage)
                with self.assertRaises(UnreadableDataSet, msg=(ts, garbage[:20])) as caught:
                    read_instance_header(path, ts)
                self.assertTrue(caught.exception.message)

    def test_data_set_in_another_vr_encoding(self):
        """An explicit-VR data set on an implicit-VR context is refused, not mislabelled."""
        sample = Sample("CT_small.dcm")  # explicit VR little endian
        implicit = "1.2.840.10008.1.2"
        path = self.write(
            file_meta_bytes(sample.header.sop_class_uid, sample.header.sop_instance_uid, implicit, None)
            + sample.data_set
        )
        with self.assertRaises(UnreadableDataSet) as caught:
            read_instance_header(path, implicit)
        self.assertIn("is in explicit VR, not in the context's transfer syntax", caught.exception.message)

    def test_every_deflated_syntax_is_inflated(self):
        data_set = explicit_le(*self.header_elements())
        compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        deflated = compressor.compress(data_set) + compressor.flush()
        for ts in ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95", "1.2.840.10008.1.2.4.205"):
            path = self.write(file_meta_bytes("1.2.840.10008.5.1.4.1.1.7", "1.2.3.4", ts, None) + deflated)
            self.assertEqual(read_instance_header(path, ts).study_instance_uid, "1.2.3.5", ts)

    def test_no_instance_uid(self):
        ts = "1.2.840.10008.1.2.1"
        data_set = explicit_le((0x00080016, b"UI", ui("1.2")), (0x0020000D, b"UI", ui("1.3")))
        path = self.write(file_meta_bytes("1.2", "1.3", ts, None) + data_set)
        with self.assertRaises(UnreadableDataSet) as caught:
            read_instance_header(path, ts)
        self.assertIn("(0008,0018)", caught.exception.message)

    def test_not_part10(self):
        path = self.write(b"\x08\x00\x16\x00" * 100)
        self.assertRaises(UnreadableDataSet, read_instance_header, path, "1.2.840.10008.1.2")


class InflatedTests(SynchronousTestCase):
    """The bounded-memory reader of deflated data sets."""

    def test_matches_zlib(self):
        import random

        from radx.storage.part10 import _Inflated

        rng = random.Random(7)
        data = rng.randbytes(300_000) + bytes(3_000_000) + rng.randbytes(100_000)
        compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        stream = _Inflated(io.BytesIO(compressor.compress(data) + compressor.flush()))
        position = 0
        while position < len(data):
            position = stream.seek(position + rng.randrange(0, 200_000))
            piece = stream.read(rng.randrange(0, 300))
            self.assertEqual(piece, data[position : position + len(piece)])
            stream.seek(-min(8, len(piece)), 1)  # as pydicom rewinds
            position += len(piece) + 1
        self.assertEqual(stream.seek(len(data) + 5), len(data))
        self.assertEqual(stream.read(10), b"")
        self.assertRaises(OSError, stream.seek, 0)
