"""Tests for radx.storage.header: the fast scan agrees with pydicom, or defers to it."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from radx.storage.header import scan_header
from radx.storage.part10 import DEFLATED_TRANSFER_SYNTAXES, InstanceHeader, file_meta_bytes, read_instance_header
from tests.test_storage_part10 import SAMPLES, Sample

IMPLICIT = "1.2.840.10008.1.2"
BIG = "1.2.840.10008.1.2.2"


def ui(uid: str) -> bytes:
    raw = uid.encode()
    return raw + b"\0" * (len(raw) % 2)


def explicit(tag: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    group, element = tag >> 16, tag & 0xFFFF
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
        return struct.pack("<HH2sHL", group, element, vr, 0, len(value) if length is None else length) + value
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def implicit(tag: int, value: bytes, length: int | None = None) -> bytes:
    return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, len(value) if length is None else length) + value


ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


def item(content: bytes, undefined: bool) -> bytes:
    if undefined:
        return implicit(ITEM, content, 0xFFFFFFFF) + implicit(ITEM_END, b"")
    return implicit(ITEM, content)


class AgreementTests(SynchronousTestCase):
    def test_every_sample_agrees_with_pydicom(self):
        """For each pydicom sample the scan returns pydicom's header, or None."""
        scanned = 0
        for name in SAMPLES:
            sample = Sample(name)
            ts = sample.transfer_syntax_uid
            if ts in DEFLATED_TRANSFER_SYNTAXES:
                continue
            head = sample.data_set[: 64 * 1024]
            header = scan_header(head, ts == IMPLICIT, ts != BIG, complete=len(head) == len(sample.data_set))
            if header is not None:
                scanned += 1
                self.assertEqual(header, sample.header, name)
        # It must actually be the fast path for the ordinary cases.
        self.assertGreaterEqual(scanned, 6)

    def test_sequences_of_undefined_length_are_skipped(self):
        nested = explicit(0x00081150, b"UI", ui("1.2.9")) + explicit(0x00081155, b"UI", ui("1.2.10"))
        sequence = item(nested, undefined=True) + item(nested, undefined=False) + implicit(SEQUENCE_END, b"")
        data = (
            explicit(0x00080016, b"UI", ui("1.2.840.10008.5.1.4.1.1.7"))
            + explicit(0x00080018, b"UI", ui("1.2.3"))
            + explicit(0x00081110, b"SQ", sequence, 0xFFFFFFFF)
            + explicit(0x0020000D, b"UI", ui("1.2.4"))
            + explicit(0x0020000E, b"UI", ui("1.2.5"))
            + explicit(0x7FE00010, b"OW", b"\0" * 16)
        )
        expected = InstanceHeader("1.2.840.10008.5.1.4.1.1.7", "1.2.3", "1.2.4", "1.2.5")
        self.assertEqual(scan_header(data, False, True), expected)
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(file_meta_bytes(expected.sop_class_uid, "1.2.3", "1.2.840.10008.1.2.1", None) + data)
        self.assertEqual(read_instance_header(path, "1.2.840.10008.1.2.1"), expected)

    def test_implicit_sequence(self):
        nested = implicit(0x00081150, ui("1.2.9"))
        data = (
            implicit(0x00080016, ui("1.2.840.10008.5.1.4.1.1.7"))
            + implicit(0x00080018, ui("1.2.3"))
            + implicit(0x00081110, item(nested, undefined=True) + implicit(SEQUENCE_END, b""), 0xFFFFFFFF)
            + implicit(0x0020000D, ui("1.2.4"))
            + implicit(0x0020000E, ui("1.2.5"))
        )
        self.assertEqual(
            scan_header(data, True, True, complete=True),
            InstanceHeader("1.2.840.10008.5.1.4.1.1.7", "1.2.3", "1.2.4", "1.2.5"),
        )
        # Without knowing the data set ends there, the scan defers.
        self.assertIsNone(scan_header(data, True, True))


class SopOnlyTests(SynchronousTestCase):
    """scan_header(sop_only=True): what a sender needs, (0008,0016) and (0008,0018), whatever follows."""

    def test_ends_with_the_instance_uid(self):
        data = (
            explicit(0x00080016, b"UI", ui("1.2"))
            + explicit(0x00080018, b"UI", ui("1.3"))
            + b"\x10\x00\x10\x00??\x04\x00ABCD"  # a VR no scan understands
        )
        self.assertEqual(scan_header(data, False, True, sop_only=True), InstanceHeader("1.2", "1.3", None, None))
        self.assertIsNone(scan_header(data, False, True))

    def test_still_defers_what_it_cannot_read(self):
        data = explicit(0x00080016, b"UI", ui("1.2")) + explicit(0x00080018, b"UI", ui("1.3"))[:-2]
        self.assertIsNone(scan_header(data, False, True, sop_only=True))


class DeferralTests(SynchronousTestCase):
    """Whatever the scan is unsure of goes to pydicom."""

    def test_truncated_before_the_series(self):
        data = explicit(0x00080016, b"UI", ui("1.2")) + explicit(0x00080018, b"UI", ui("1.3"))
        self.assertIsNone(scan_header(data, False, True))

    def test_explicit_data_set_on_an_implicit_context(self):
        sample = Sample("CT_small.dcm")
        self.assertIsNone(scan_header(sample.data_set, True, True))

    def test_implicit_data_set_on_an_explicit_context(self):
        sample = Sample("MR_small_implicit.dcm")
        self.assertIsNone(scan_header(sample.data_set, False, True))

    def test_missing_instance_uid(self):
        data = (
            explicit(0x00080016, b"UI", ui("1.2"))
            + explicit(0x0020000D, b"UI", ui("1.2.4"))
            + explicit(0x0020000E, b"UI", ui("1.2.5"))
            + explicit(0x00280010, b"US", b"\x01\x00")
        )
        self.assertIsNone(scan_header(data, False, True))

    def test_un_of_undefined_length(self):
        data = (
            explicit(0x00080016, b"UI", ui("1.2"))
            + explicit(0x00080018, b"UI", ui("1.3"))
            + explicit(0x00091010, b"UN", b"", 0xFFFFFFFF)
        )
        self.assertIsNone(scan_header(data, False, True))

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=400), st.booleans(), st.booleans())
    def test_any_bytes(self, data, is_implicit, little):
        """Never an exception; a header only when both UIDs it needs were found."""
        header = scan_header(data, is_implicit, little, complete=True)
        if header is not None:
            self.assertIsNotNone(header.sop_class_uid)
            self.assertIsNotNone(header.sop_instance_uid)

