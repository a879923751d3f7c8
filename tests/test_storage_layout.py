"""Tests for radx.storage.layout."""

import os

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from radx.storage.layout import (
    FLAT,
    FLAT_LAYOUT,
    MAX_VALUE_BYTES,
    ORGANIZED,
    ORGANIZED_LAYOUT,
    UNKNOWN,
    InvalidUID,
    Layout,
    LayoutError,
    is_valid_uid,
    relative_instance_path,
    safe_component,
)

STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.2"
SOP = "1.2.826.0.1.3680043.8.498.3"


def _safe_name(name: str) -> bool:
    """A single, visible path component that stays where it is put."""
    return (
        name not in ("", ".", "..")
        and not name.startswith(".")
        and "/" not in name
        and "\\" not in name
        and "\x00" not in name
        and os.path.basename(name) == name
    )


class IsValidUIDTests(SynchronousTestCase):
    def test_valid(self):
        for uid in ["0", "1.2", "1.2.840.10008.1.2.1", "2.25.0", "1." + "1" * 62]:
            self.assertTrue(is_valid_uid(uid), uid)
            self.assertTrue(is_valid_uid(uid, strict=True), uid)

    def test_too_long(self):
        self.assertTrue(is_valid_uid("1." + "2" * 62))
        self.assertFalse(is_valid_uid("1." + "2" * 63))
        self.assertFalse(is_valid_uid("1." + "2" * 63, strict=True))

    def test_malformed(self):
        for uid in [
            "",
            ".",
            "..",
            "1..2",
            ".1.2",
            "1.2.",
            "../../escape",
            "1/2",
            "1.2\x00",
            "1.2 ",
            " 1.2",
            "1.2\n",
            "1.2\\3.4",
            "1.a",
            "1.２",  # a full-width digit
            "1.٣",  # an Arabic-Indic digit
            "1.²",
            None,
            b"1.2",
            12,
        ]:
            self.assertFalse(is_valid_uid(uid), repr(uid))
            self.assertFalse(is_valid_uid(uid, strict=True), repr(uid))

    def test_leading_zero(self):
        """PS3.5 9.1 forbids it; only the strict check refuses it."""
        for uid in ["1.02", "01.2", "1.2.00"]:
            self.assertTrue(is_valid_uid(uid), uid)
            self.assertFalse(is_valid_uid(uid, strict=True), uid)

    @given(st.text(max_size=80))
    def test_never_unsafe(self, text):
        if is_valid_uid(text):
            self.assertTrue(_safe_name(text))
            self.assertTrue(_safe_name(text + ".dcm"))
            self.assertLessEqual(len(text), 64)
            self.assertTrue(set(text) <= set("0123456789."))

    @given(st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=8))
    def test_generated_valid(self, components):
        uid = ".".join(str(c) for c in components)
        self.assertEqual(is_valid_uid(uid, strict=True), len(uid) <= 64)


class RelativeInstancePathTests(SynchronousTestCase):
    def test_organized(self):
        self.assertEqual(
            relative_instance_path(SOP, STUDY, SERIES, organize=True),
            ((STUDY, SERIES, SOP + ".dcm"), []),
        )

    def test_flat(self):
        """Flat ignores (and so does not warn about) study and series."""
        self.assertEqual(relative_instance_path(SOP, None, "../x", organize=False), ((SOP + ".dcm",), []))

    def test_missing_study(self):
        components, warnings = relative_instance_path(SOP, None, SERIES, organize=True)
        self.assertEqual(components, (UNKNOWN, SERIES, SOP + ".dcm"))
        self.assertEqual(len(warnings), 1)
        self.assertIn("Study Instance UID", warnings[0])
        self.assertIn("missing", warnings[0])

    def test_empty_series(self):
        components, warnings = relative_instance_path(SOP, STUDY, "", organize=True)
        self.assertEqual(components, (STUDY, UNKNOWN, SOP + ".dcm"))
        self.assertEqual(len(warnings), 1)
        self.assertIn("Series Instance UID", warnings[0])

    def test_traversal(self):
        components, warnings = relative_instance_path(SOP, "../../escape", "/etc", organize=True)
        self.assertEqual(components, (UNKNOWN, UNKNOWN, SOP + ".dcm"))
        self.assertEqual(len(warnings), 2)
        self.assertIn("Study Instance UID <12 characters, not a UID>", warnings[0])
        self.assertIn("Series Instance UID <4 characters, not a UID>", warnings[1])

    def test_a_value_that_is_no_uid_is_shown_by_its_length_only(self):
        """It may hold the elements after it, a patient's name among them: never its content."""
        _, warnings = relative_instance_path(SOP, STUDY, "1.2.3\x00\x10\x00\x10\x00PN\x08\x00DOE^JANE", organize=True)
        self.assertEqual(warnings, ["Series Instance UID <22 characters, not a UID> is malformed (PS3.5 9.1); filed under UNKNOWN"])
        with self.assertRaises(InvalidUID) as caught:
            relative_instance_path("1.2.3 DOE^JANE", STUDY, SERIES, organize=True)
        self.assertNotIn("DOE", str(caught.exception))

    def test_long_value_truncated(self):
        _, warnings = relative_instance_path(SOP, "9" * 10000, SERIES, organize=True)
        self.assertEqual(len(warnings), 1)
        self.assertLess(len(warnings[0]), 200)

    def test_leading_zero_folder(self):
        """Kept, so the study stays together, but noted."""
        components, warnings = relative_instance_path(SOP, "1.2.03", SERIES, organize=True)
        self.assertEqual(components, ("1.2.03", SERIES, SOP + ".dcm"))
        self.assertEqual(len(warnings), 1)
        self.assertIn("leading zero", warnings[0])

    def test_leading_zero_instance(self):
        components, warnings = relative_instance_path("1.2.03", STUDY, SERIES, organize=True)
        self.assertEqual(components, (STUDY, SERIES, "1.2.03.dcm"))
        self.assertIn("leading zero", warnings[0])

    def test_invalid_instance(self):
        for uid in ["", "../x", "1.2/3", "1.2\x00", "a" * 65, None]:
            with self.assertRaises(InvalidUID) as caught:
                relative_instance_path(uid, STUDY, SERIES, organize=True)
            self.assertIsInstance(caught.exception, ValueError)

    @given(st.one_of(st.none(), st.text(max_size=70)), st.one_of(st.none(), st.text(max_size=70)))
    def test_components_always_safe(self, study, series):
        components, _ = relative_instance_path(SOP, study, series, organize=True)
        self.assertEqual(len(components), 3)
        for name in components:
            self.assertTrue(_safe_name(name), name)


PATIENT_LAYOUT = "{PatientID}/{StudyDate}/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm"

# Values a hostile peer may send: traversal, separators, NUL, controls,
# invisible characters, dots and spaces alone, names far too long.
_HOSTILE = st.one_of(
    st.none(),
    st.text(max_size=300),
    st.text(alphabet="./\\\x00 \n\r\t\x7f\u202e\ufeff.a", max_size=40),
    st.sampled_from(["..", ".", "../..", "/etc/passwd", "..\\..\\x", " ..", ".. ", "\x00", "a/../../b", "é" * 100]),
)

_HOSTILE_TEMPLATES = [
    PATIENT_LAYOUT,
    "{PatientName}{PatientID}/{StudyDescription}/{Modality}_{SOPInstanceUID}.dcm",
    ORGANIZED,
    FLAT,
]


class TemplateTests(SynchronousTestCase):
    def test_fixed_templates_are_the_organize_layouts(self):
        """--organize and --organize=false: exactly the paths of relative_instance_path, no other work."""
        self.assertEqual((ORGANIZED_LAYOUT.fixed, FLAT_LAYOUT.fixed), (True, False))
        self.assertEqual((ORGANIZED_LAYOUT.extra_tags, FLAT_LAYOUT.extra_tags), ({}, {}))
        for study, series in [(STUDY, SERIES), (None, ""), ("../x", "1.02")]:
            for layout, organize in [(ORGANIZED_LAYOUT, True), (FLAT_LAYOUT, False)]:
                self.assertEqual(
                    layout.relative_path(SOP, study, series), relative_instance_path(SOP, study, series, organize)
                )

    def test_same_paths_when_spelled_out(self):
        """A template other than the fixed ones, with their keywords, gives their paths by the general way."""
        layout = Layout(ORGANIZED + "")
        spelled = Layout("{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm/".rstrip("/"))
        spelled.fixed = None
        for study, series in [(STUDY, SERIES), (None, ""), ("../x", "1.02")]:
            self.assertEqual(
                spelled.relative_path(SOP, study, series, {}), layout.relative_path(SOP, study, series)
            )

    def test_patient_layout(self):
        layout = Layout(PATIENT_LAYOUT)
        self.assertEqual(set(layout.extra_tags), {"PatientID", "StudyDate"})
        self.assertEqual(layout.extra_tags["PatientID"], (0x00100020, "LO"))
        components, warnings = layout.relative_path(
            SOP, STUDY, SERIES, {"PatientID": "PAT-001", "StudyDate": "20240102"}
        )
        self.assertEqual(components, ("PAT-001", "20240102", STUDY, SERIES, SOP + ".dcm"))
        self.assertEqual(warnings, [])

    def test_literal_text_and_several_keywords_in_a_name(self):
        layout = Layout("studies/{Modality}-{StudyDate}/{SOPInstanceUID}_{InstanceNumber}.dcm")
        components, _ = layout.relative_path(SOP, STUDY, SERIES, {"Modality": "CT", "StudyDate": None, "InstanceNumber": "7"})
        self.assertEqual(components, ("studies", "CT-" + UNKNOWN, f"{SOP}_7.dcm"))

    def test_missing_and_empty_values_are_unknown(self):
        layout = Layout(PATIENT_LAYOUT)
        for values in [{}, {"PatientID": None, "StudyDate": ""}, {"PatientID": " . ", "StudyDate": "\x00"}]:
            components, _ = layout.relative_path(SOP, STUDY, SERIES, values)
            self.assertEqual(components[:2], (UNKNOWN, UNKNOWN))

    def test_uid_keywords_keep_their_rules(self):
        """A malformed SOP Instance UID names no file; Study and Series become UNKNOWN with a warning."""
        layout = Layout(PATIENT_LAYOUT)
        with self.assertRaises(InvalidUID):
            layout.relative_path("../x", STUDY, SERIES, {})
        components, warnings = layout.relative_path(SOP, "../../x", "1.2.a", {"PatientID": "P"})
        self.assertEqual(components[2:4], (UNKNOWN, UNKNOWN))
        self.assertEqual(len(warnings), 2)
        self.assertIn("Study Instance UID", warnings[0])
        layout = Layout("{FrameOfReferenceUID}/{SOPInstanceUID}")
        components, warnings = layout.relative_path(SOP, STUDY, SERIES, {"FrameOfReferenceUID": "1.2/3"})
        self.assertEqual(components[0], UNKNOWN)
        self.assertEqual(len(warnings), 1)

    def test_refused_templates(self):
        for template, why in [
            ("", "empty"),
            ("/data/{SOPInstanceUID}.dcm", "absolute"),
            ("C:/{SOPInstanceUID}.dcm", "absolute"),
            ("{PatientID}/../{SOPInstanceUID}.dcm", "'..'"),
            ("./{SOPInstanceUID}.dcm", "'..' and '.'"),
            ("a..b/{SOPInstanceUID}.dcm", "'..'"),
            ("{PatientID}//{SOPInstanceUID}.dcm", "empty folder"),
            ("{PatientID}/", "empty folder"),
            ("{PatientsName}/{SOPInstanceUID}.dcm", "not a DICOM keyword"),
            ("{patientid}/{SOPInstanceUID}.dcm", "not a DICOM keyword"),
            ("{}/{SOPInstanceUID}.dcm", "not a DICOM keyword"),
            ("{PixelData}/{SOPInstanceUID}.dcm", "text value"),
            ("{ReferencedSeriesSequence}/{SOPInstanceUID}.dcm", "text value"),
            ("{TransferSyntaxUID}/{SOPInstanceUID}.dcm", "text value"),
            ("{SOPInstanceUID}/{PatientID}.dcm", "must hold {SOPInstanceUID}"),
            ("{PatientID}.dcm", "must hold {SOPInstanceUID}"),
            ("{PatientID/{SOPInstanceUID}.dcm", "brace"),
            ("a}/{SOPInstanceUID}.dcm", "brace"),
            (".hidden/{SOPInstanceUID}.dcm", "hidden"),
            ("a\\b/{SOPInstanceUID}.dcm", "backslash"),
            ("a\x00/{SOPInstanceUID}.dcm", "control"),
            ("{PatientID}{PatientName}{StudyID}{Modality}/{SOPInstanceUID}.dcm", "longer than 255"),
        ]:
            with self.assertRaises(LayoutError, msg=template) as caught:
                Layout(template)
            self.assertIn(why, str(caught.exception), template)

    def test_safe_component(self):
        for value, expected in [
            ("..", None),
            (".", None),
            ("", None),
            (None, None),
            ("../../etc", "_.._etc"),
            ("a/b\\c", "a_b_c"),
            ("a\x00b\nc", "a_b_c"),
            ("  .hidden. ", "hidden"),
            ("Doe^Jane", "Doe^Jane"),
            ("山田^太郎", "山田^太郎"),
        ]:
            self.assertEqual(safe_component(value), expected, value)

    def test_long_value_cut_on_a_character(self):
        text = safe_component("é" * 100)
        self.assertEqual(text, "é" * (MAX_VALUE_BYTES // 2))
        self.assertLessEqual(len(safe_component("€" * 100).encode()), MAX_VALUE_BYTES)

    @settings(deadline=None, max_examples=500)
    @given(
        st.sampled_from([Layout(t) for t in _HOSTILE_TEMPLATES]),
        _HOSTILE,
        _HOSTILE,
        _HOSTILE,
        _HOSTILE,
    )
    def test_hostile_values_stay_in_the_tree(self, layout, first, second, study, series):
        """Whatever the peer sends, every name is one safe, bounded component, and the path stays below the output folder."""
        values = dict(zip(layout.extra_tags, [first, second, first]))
        components, _ = layout.relative_path(SOP, study, series, values)
        for name in components:
            self.assertTrue(_safe_name(name), repr(name))
            self.assertLessEqual(len(name.encode("utf-8")), 255)
            name.encode("utf-8")  # no lone surrogate
        root = "/srv/output"
        joined = os.path.normpath(os.path.join(root, *components))
        self.assertTrue(joined.startswith(root + "/"), joined)
        self.assertEqual(len(joined[len(root) + 1 :].split("/")), len(components))
