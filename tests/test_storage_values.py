"""Tests for radx.storage.values: a layout's values from the header scan, or from pydicom."""

import io
import zlib

from twisted.trial.unittest import SynchronousTestCase

from radx.storage.layout import Layout
from radx.storage.part10 import UnreadableDataSet, file_meta_bytes
from radx.storage.values import decode_text, read_values, scan_values
from tests.test_storage_part10 import explicit_le, ui

EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"
TAGS = Layout("{PatientID}/{PatientName}/{StudyDate}/{Modality}/{SOPInstanceUID}").extra_tags


def data_set(charset=b"ISO_IR 192", name="Yamada^Tarou=山田^太郎".encode("utf-8")):
    return explicit_le(
        (0x00080005, b"CS", charset),
        (0x00080016, b"UI", ui("1.2.840.10008.5.1.4.1.1.7")),
        (0x00080018, b"UI", ui("1.2.3.4")),
        (0x00080020, b"DA", b"20240102"),
        (0x00080060, b"CS", b"CT"),
        (0x00100010, b"PN", name + b" " * (len(name) % 2)),
        (0x00100020, b"LO", b"PAT-1 "),
        (0x7FE00010, b"OW", bytes(64)),
    )


class ValuesTests(SynchronousTestCase):
    expected = {"PatientID": "PAT-1", "PatientName": "Yamada^Tarou=山田^太郎", "StudyDate": "20240102", "Modality": "CT"}

    def test_scan(self):
        self.assertEqual(scan_values(data_set(), EXPLICIT_LE, TAGS, complete=True), self.expected)

    def test_absent(self):
        data = explicit_le((0x00080016, b"UI", ui("1.2")), (0x00080018, b"UI", ui("1.2.3")))
        values = scan_values(data, EXPLICIT_LE, TAGS, complete=True)
        self.assertEqual(values, dict.fromkeys(TAGS))

    def test_head_too_short_defers_to_pydicom(self):
        self.assertIsNone(scan_values(data_set()[:40], EXPLICIT_LE, TAGS, complete=False))
        self.assertIsNone(scan_values(data_set(), DEFLATED, TAGS, complete=True))

    def test_pydicom_reads_the_same(self):
        """The fallback: the values of a deflated data set, read from the file, agree with the scan's."""
        compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        deflated = compressor.compress(data_set()) + compressor.flush()
        meta = file_meta_bytes("1.2.840.10008.5.1.4.1.1.7", "1.2.3.4", DEFLATED, None)
        self.assertEqual(read_values(io.BytesIO(meta + deflated), DEFLATED, TAGS), self.expected)
        meta = file_meta_bytes("1.2.840.10008.5.1.4.1.1.7", "1.2.3.4", EXPLICIT_LE, None)
        self.assertEqual(read_values(io.BytesIO(meta + data_set()), EXPLICIT_LE, TAGS), self.expected)

    def test_pydicom_refusal(self):
        meta = file_meta_bytes("1.2.840.10008.5.1.4.1.1.7", "1.2.3.4", DEFLATED, None)
        with self.assertRaises(UnreadableDataSet):
            read_values(io.BytesIO(meta + b"\xff" * 100), DEFLATED, TAGS)

    def test_character_sets(self):
        self.assertEqual(decode_text(b"M\xfcller ", "PN", b"ISO_IR 100"), "Müller")
        self.assertEqual(decode_text(b"M\xfcller ", "LO", None), "Müller")
        # ISO 2022 with code extensions goes to pydicom's decoder.
        self.assertEqual(
            decode_text(b"\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B", "PN", b"\\ISO 2022 IR 87"), "山田^太郎"
        )
        # Each component group in its own set: alphabetic, ideographic, phonetic.
        self.assertEqual(
            decode_text(
                b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B",
                "PN",
                b"\\ISO 2022 IR 87",
            ),
            "Yamada^Tarou=山田^太郎=やまだ^たろう",
        )
        # Empty trailing groups are left out, as pydicom's PersonName does.
        self.assertEqual(
            decode_text(b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B==", "PN", b"\\ISO 2022 IR 87"),
            "Yamada^Tarou=山田^太郎",
        )
        self.assertEqual(decode_text(b"20240102", "DA", b"ISO_IR 192"), "20240102")
        self.assertIsNone(decode_text(b"  \0", "LO", None))
