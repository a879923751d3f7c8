"""Tests for radx.catalogue.instance: a file's row read from its head, as pydicom would read it."""

from __future__ import annotations

import io
import os
import struct

import pydicom
from pydicom.filereader import read_dataset
from pydicom.data import get_testdata_file
from twisted.trial.unittest import SynchronousTestCase

from radx.catalogue.instance import HEAD, ROW_TAGS, NotCatalogued, _each, _joined, _terms_and_codec, attribute_values, read_row
from radx.catalogue.schema import ATTRIBUTES, SPECIFIC_CHARACTER_SET
from radx.storage.walk import DataSetWalk
from tests.catalogue_files import charset_file, write_instance


def pydicom_values(path: str) -> dict:
    """What pydicom reads for each attribute column: its DICOM string, a number for IS."""
    return data_set_values(pydicom.dcmread(path, stop_before_pixels=True))


def data_set_values(ds) -> dict:
    """What pydicom decodes for each attribute column of ``ds``: its DICOM string, a number for IS."""
    values = {}
    for attribute in ATTRIBUTES:
        value = ds.get(attribute.keyword)
        if value is None or value == "":
            values[attribute.column] = None
        elif attribute.vr == "IS":
            values[attribute.column] = int(value)
        elif isinstance(value, pydicom.multival.MultiValue):
            values[attribute.column] = "\\".join(str(v) for v in value)
        else:
            values[attribute.column] = str(value)
    return values


class ReadRowTests(SynchronousTestCase):
    def test_values(self):
        path = write_instance(
            os.path.join(self.mktemp(), "a.dcm"),
            number=7,
            StudyDate="20240102",
            StudyDescription="CHEST",
            SeriesDescription="AXIAL 1mm",
            Manufacturer="ACME",
            InstitutionName="General Hospital",
            AccessionNumber="ACC1",
            ReferringPhysicianName="WHO^DOCTOR",
            PerformingPhysicianName=["ONE^A", "TWO^B"],
            PatientBirthDate="19700101",
            PatientSex="F",
        )
        row = read_row(path)
        ds = pydicom.dcmread(path)
        self.assertEqual(row["patient_name"], "DOE^JANE")
        self.assertEqual(row["patient_id"], "PID-1")
        self.assertEqual(row["patient_birth_date"], "19700101")
        self.assertEqual(row["patient_sex"], "F")
        self.assertEqual(row["study_instance_uid"], ds.StudyInstanceUID)
        self.assertEqual(row["series_instance_uid"], ds.SeriesInstanceUID)
        self.assertEqual(row["sop_instance_uid"], ds.SOPInstanceUID)
        self.assertEqual(row["sop_class_uid"], ds.SOPClassUID)
        self.assertEqual(row["study_date"], "20240102")
        self.assertEqual(row["study_description"], "CHEST")
        self.assertEqual(row["series_description"], "AXIAL 1mm")
        self.assertEqual((row["series_number"], row["instance_number"]), (1, 7))
        self.assertEqual(row["modality"], "CT")
        self.assertEqual(row["manufacturer"], "ACME")
        self.assertEqual(row["institution_name"], "General Hospital")
        self.assertEqual(row["accession_number"], "ACC1")
        self.assertEqual(row["referring_physician_name"], "WHO^DOCTOR")
        self.assertEqual(row["performing_physician_name"], "ONE^A\\TWO^B")
        self.assertEqual(row["transfer_syntax_uid"], "1.2.840.10008.1.2.1")
        stat = os.stat(path)
        self.assertEqual(row["file_path"], path)
        self.assertEqual(row["file_name"], "a.dcm")
        self.assertEqual((row["file_size"], row["file_mtime"]), (stat.st_size, stat.st_mtime_ns))

    def test_absent_values_are_none(self):
        row = read_row(write_instance(os.path.join(self.mktemp(), "a.dcm")))
        self.assertIsNone(row["study_description"])
        self.assertIsNone(row["manufacturer"])

    def test_a_number_that_is_not_one(self):
        path = write_instance(os.path.join(self.mktemp(), "a.dcm"), number=99)
        with open(path, "rb") as fp:
            data = fp.read()
        with open(path, "wb") as fp:
            fp.write(data.replace(b"\x13\x00IS\x02\x0099", b"\x13\x00IS\x02\x00ab"))
        self.assertIsNone(read_row(path)["instance_number"])


class CharacterSetTests(SynchronousTestCase):
    """Text decoded with the data set's Specific Character Set (0008,0005), as pydicom decodes it."""

    def test_cyrillic(self):
        # ISO_IR 144, one Python codec, through pydicom's decoder.
        self.assertEqual(read_row(charset_file("chrRuss.dcm"))["patient_name"], "Люкceмбypг")

    def test_latin1(self):
        self.assertEqual(read_row(charset_file("chrGerm.dcm"))["patient_name"], "Äneas^Rüdiger")

    def test_utf8(self):
        self.assertEqual(read_row(charset_file("chrX1.dcm"))["patient_name"], "Wang^XiaoDong=王^小東")

    def test_code_extensions(self):
        # ISO 2022 IR 87: escape sequences switch to JIS X 0208 within the value.
        self.assertEqual(read_row(charset_file("chrH31.dcm"))["patient_name"], "Yamada^Tarou=山田^太郎=やまだ^たろう")

    def test_written_with_pydicom(self):
        path = write_instance(
            os.path.join(self.mktemp(), "a.dcm"),
            SpecificCharacterSet="ISO_IR 192",
            PatientName="Müller^Zoë",
            InstitutionName="Hôpital Sainte-Anne",
        )
        row = read_row(path)
        self.assertEqual((row["patient_name"], row["institution_name"]), ("Müller^Zoë", "Hôpital Sainte-Anne"))

    def test_every_charset_file_as_pydicom_reads_it(self):
        folder = os.path.dirname(charset_file("chrRuss.dcm"))
        for name in sorted(os.listdir(folder)):
            if name.endswith(".dcm"):
                path = os.path.join(folder, name)
                row = read_row(path)
                expected = pydicom_values(path)
                for column, value in expected.items():
                    if value is not None or column not in ("sop_class_uid", "sop_instance_uid"):
                        self.assertEqual((name, column, row[column]), (name, column, value))


# (Specific Character Set or None, {keyword: the value's bytes}): text in
# the character sets that a Python codec decodes alone, the values as
# senders write them (padded, several, person names with their groups).
_CHARSET_TABLE = (
    (None, {"PatientName": b"Doe^John", "PatientID": b"PID 7 ", "InstitutionName": b"General Hospital "}),
    (None, {"PatientName": b"Doe^John=", "ReferringPhysicianName": b"A^B==", "SeriesNumber": b" 12 ",
            "InstanceNumber": b"7", "PerformingPhysicianName": b"ONE^A\\TWO^B=\\THREE"}),
    ("ISO_IR 6", {"PatientName": b"Doe^John=Doe^J=", "StudyDescription": b"CHEST\\ABDOMEN ", "Modality": b"CT"}),
    ("ISO_IR 100", {"PatientName": "Äneas^Rüdiger".encode("latin_1"),
                    "ReferringPhysicianName": "Buc^Jérôme=Buc^J==".encode("latin_1"),
                    "PerformingPhysicianName": "Öne^Å\\Twö^B=Two^B".encode("latin_1"),
                    "InstitutionName": "Hôpital Sainte-Anne\\Clinique ".encode("latin_1"),
                    "AccessionNumber": b"A\xe91 ", "InstanceNumber": b"3 "}),
    ("ISO_IR 192", {"PatientName": "Wang^XiaoDong=王^小東=".encode(), "PatientID": "ÅB-1".encode(),
                    "ReferringPhysicianName": "Müller^Zoë\\Yamada^Tarou=山田^太郎=やまだ^たろう".encode(),
                    "StudyDescription": "Tête\\Thorax ".encode(), "SeriesDescription": "Ax 1mm ".encode(),
                    "Manufacturer": "Åcme".encode(), "SeriesNumber": b"2"}),
)  # fmt: skip

_KEYWORDS = {a.keyword: a for a in ATTRIBUTES}


def _explicit_le(charset: str | None, values: dict) -> bytes:
    """A data set in Explicit VR Little Endian of these raw values (and the UIDs a row needs), in tag order."""
    elements = {0x0020000D: ("UI", b"1.2.3\0"), 0x0020000E: ("UI", b"1.2.3.4\0"), 0x00080018: ("UI", b"1.2.3.4.5\0"),
                0x00080016: ("UI", b"1.2.840.10008.5.1.4.1.1.7\0")}
    if charset is not None:
        elements[SPECIFIC_CHARACTER_SET] = ("CS", charset.encode("ascii"))
    for keyword, value in values.items():
        elements[_KEYWORDS[keyword].tag] = (_KEYWORDS[keyword].vr, value)
    data = b""
    for tag in sorted(elements):
        vr, value = elements[tag]
        if len(value) % 2:
            value += b"\0" if vr == "UI" else b" "
        data += struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode("ascii"), len(value)) + value
    return data


class CodecTests(SynchronousTestCase):
    """
    The values of the character sets a Python codec decodes alone, all
    decoded at once: the same as each value decoded on its own, and as
    pydicom decodes them.
    """

    def test_as_each_value_decoded_and_as_pydicom(self):
        for charset, values in _CHARSET_TABLE:
            data_set = _explicit_le(charset, values)
            walk = DataSetWalk("1.2.840.10008.1.2.1", ROW_TAGS)
            walk.feed(data_set)
            walk.end()
            found = walk.values()
            terms, codec = _terms_and_codec(found[SPECIFIC_CHARACTER_SET]) if charset else (("",), "latin_1")
            self.assertIsNotNone(codec, charset)
            joined = _joined(found, codec)
            self.assertIsNotNone(joined, charset)  # not left to _each
            self.assertEqual((charset, attribute_values(found)), (charset, joined))
            self.assertEqual((charset, joined), (charset, _each(found, terms, codec)))
            expected = data_set_values(read_dataset(io.BytesIO(data_set), is_implicit_VR=False, is_little_endian=True))
            self.assertEqual((charset, dict(zip((a.column for a in ATTRIBUTES), joined))), (charset, expected))

    def test_a_value_with_the_separator_decoded_on_its_own(self):
        found = {a.tag: b"" for a in ATTRIBUTES}
        found[_KEYWORDS["StudyDescription"].tag] = b"ONE\x01TWO"
        found[_KEYWORDS["PatientName"].tag] = b"Doe^John="
        self.assertIsNone(_joined(found, "latin_1"))
        values = dict(zip((a.column for a in ATTRIBUTES), attribute_values(found)))
        self.assertEqual((values["study_description"], values["patient_name"]), ("ONE\x01TWO", "Doe^John"))

    def test_bytes_that_are_not_utf8(self):
        """Replaced as each value decoded on its own would have them, a value's last bytes included."""
        found = {SPECIFIC_CHARACTER_SET: b"ISO_IR 192", _KEYWORDS["PatientName"].tag: b"Doe^J\xc3",
                 _KEYWORDS["PatientID"].tag: b"\xe5\xbf", _KEYWORDS["StudyDescription"].tag: b"\xffA\xe2\x82"}  # fmt: skip
        joined = _joined(found, "utf_8")
        self.assertEqual(joined, _each(found, ("ISO_IR 192",), "utf_8"))
        self.assertEqual(joined[:2], ["Doe^J\ufffd", "\ufffd"])

    def test_escape_sequences_left_to_pydicom(self):
        # ISO_IR 100 has no code extensions; an ESC in its text goes to pydicom's decoder all the same.
        found = {SPECIFIC_CHARACTER_SET: b"ISO_IR 100", _KEYWORDS["PatientName"].tag: b"Doe\x1b(B^John"}
        self.assertIsNone(_joined(found, "latin_1"))
        self.assertEqual(attribute_values(found), _each(found, ("ISO_IR 100",), "latin_1"))


class EncodingTests(SynchronousTestCase):
    """Every transfer syntax encoding pydicom's test files hold: the same values as pydicom's."""

    def assertAsPydicom(self, path):
        row = read_row(path)
        self.assertEqual({c: row[c] for c in pydicom_values(path)}, pydicom_values(path))

    def test_implicit_vr(self):
        self.assertAsPydicom(get_testdata_file("MR_small_implicit.dcm"))

    def test_big_endian(self):
        self.assertAsPydicom(get_testdata_file("MR_small_bigendian.dcm"))

    def test_encapsulated(self):
        self.assertAsPydicom(get_testdata_file("JPEG2000.dcm"))

    def test_deflated(self):
        # The data set is deflated: pydicom reads it, inflated as it goes.
        self.assertAsPydicom(get_testdata_file("image_dfl.dcm"))

    def test_header_longer_than_the_head_read(self):
        """A long element before the attributes: pydicom reads on from the file."""
        path = write_instance(os.path.join(self.mktemp(), "a.dcm"), StudyDescription="LONG")
        ds = pydicom.dcmread(path)
        ds.add_new(0x00091010, "OB", bytes(HEAD * 2))  # a private element before (0010,0010)
        ds.add_new(0x00090010, "LO", "RADX TESTS")
        ds.save_as(path)
        row = read_row(path)
        self.assertEqual((row["patient_name"], row["study_description"]), ("DOE^JANE", "LONG"))

    def test_sop_uids_from_the_file_meta_when_the_data_set_lacks_them(self):
        path = write_instance(os.path.join(self.mktemp(), "a.dcm"))
        ds = pydicom.dcmread(path)
        del ds.SOPInstanceUID
        del ds.SOPClassUID
        ds.save_as(path, enforce_file_format=False)
        row = read_row(path)
        self.assertEqual(row["sop_instance_uid"], ds.file_meta.MediaStorageSOPInstanceUID)
        self.assertEqual(row["sop_class_uid"], ds.file_meta.MediaStorageSOPClassUID)


class NotCataloguedTests(SynchronousTestCase):
    def write(self, data: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as fp:
            fp.write(data)
        return path

    def test_text_file(self):
        with self.assertRaises(NotCatalogued) as caught:
            read_row(self.write(b"hello\n"))
        self.assertEqual(caught.exception.reason, "not a DICOM Part 10 file (no DICM prefix)")

    def test_data_set_without_file_meta(self):
        with self.assertRaises(NotCatalogued):
            read_row(get_testdata_file("no_meta.dcm"))

    def test_no_transfer_syntax(self):
        with self.assertRaises(NotCatalogued) as caught:
            read_row(get_testdata_file("meta_missing_tsyntax.dcm"))
        self.assertIn("Transfer Syntax UID", caught.exception.reason)

    def test_data_set_that_does_not_parse(self):
        path = write_instance(os.path.join(self.mktemp(), "a.dcm"))
        with open(path, "rb") as fp:
            data = fp.read()
        offset = data.index(b"\x10\x00\x10\x00PN")  # (0010,0010) PatientName
        # A length past the end of the file, in an element before the last wanted.
        broken = data[:offset] + struct.pack("<HH2sH", 0x0010, 0x0010, b"XX", 0xFFF0) + data[offset + 8 :]
        with self.assertRaises(NotCatalogued) as caught:
            read_row(self.write(broken))
        self.assertIn("cannot parse the data set", caught.exception.reason)

    def test_missing_file(self):
        self.assertRaises(OSError, read_row, self.mktemp())
