"""Tests for radx.storage.layout."""

import os

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from radx.storage.layout import UNKNOWN, InvalidUID, is_valid_uid, relative_instance_path

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
