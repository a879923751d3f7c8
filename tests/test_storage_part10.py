"""Tests for radx.storage.part10."""

import io
import struct

import pydicom
from hypothesis import given, settings, strategies as st
from pydicom.data import get_testdata_file
from twisted.trial.unittest import SynchronousTestCase

from radx.storage.part10 import (
    InstanceHeader,
    data_set_offset,
    file_meta_bytes,
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


