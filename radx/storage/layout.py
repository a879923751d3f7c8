# -*- test-case-name: tests.test_storage_layout -*-
"""Where a received instance goes under the output directory: from its UIDs, or from a template of DICOM keywords."""

from __future__ import annotations

import re
import unicodedata

from radx.uids import is_valid_uid, uid_for_log

# The folder for a study or series whose UID is missing or unusable.
UNKNOWN = "UNKNOWN"

class InvalidUID(ValueError):
    """A SOP Instance UID that cannot name a file."""


def _folder(name: str, uid: str | None, warnings: list[str]) -> str:
    """
    The folder name for a Study or Series Instance UID.

    A missing or unusable UID becomes L{UNKNOWN}, with a warning; a usable
    UID that breaks only the leading-zero rule keeps its folder (so its
    study stays together), with a warning.
    """
    if uid is None or uid == "":
        warnings.append(f"{name} is missing; filed under {UNKNOWN}")
        return UNKNOWN
    if not is_valid_uid(uid):
        warnings.append(f"{name} {uid_for_log(uid)} is malformed (PS3.5 9.1); filed under {UNKNOWN}")
        return UNKNOWN
    if not is_valid_uid(uid, strict=True):
        warnings.append(f"{name} {uid_for_log(uid)} has a component with a leading zero (PS3.5 9.1)")
    return uid


def relative_instance_path(
    sop_instance_uid: str,
    study_instance_uid: str | None,
    series_instance_uid: str | None,
    organize: bool,
) -> tuple[tuple[str, ...], list[str]]:
    """
    The path of an instance's file relative to the output directory.

    @return: the path's components, C{(study, series, "<sop>.dcm")} when
        C{organize} is true, else C{("<sop>.dcm",)}; and warnings about the
        UIDs, for a log line.
    @raise InvalidUID: C{sop_instance_uid} cannot name a file; nothing
        should be written.
    """
    warnings: list[str] = []
    if not is_valid_uid(sop_instance_uid):
        raise InvalidUID(f"malformed SOP Instance UID {uid_for_log(sop_instance_uid)} (PS3.5 9.1)")
    if not is_valid_uid(sop_instance_uid, strict=True):
        warnings.append(
            f"SOP Instance UID {uid_for_log(sop_instance_uid)} has a component with a leading zero (PS3.5 9.1)"
        )
    filename = f"{sop_instance_uid}.dcm"
    if not organize:
        return (filename,), warnings
    study = _folder("Study Instance UID", study_instance_uid, warnings)
    series = _folder("Series Instance UID", series_instance_uid, warnings)
    return (study, series, filename), warnings


# The two layouts of --organize: Study/Series/Instance, and flat.
ORGANIZED = "{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm"
FLAT = "{SOPInstanceUID}.dcm"

_SOP_INSTANCE_UID = "SOPInstanceUID"
# The UIDs radx reads for every instance: a template of only these costs
# nothing more than the fixed layouts.
FILING_KEYWORDS = {
    "SOPClassUID": 0x00080016,
    _SOP_INSTANCE_UID: 0x00080018,
    "StudyInstanceUID": 0x0020000D,
    "SeriesInstanceUID": 0x0020000E,
}
_UID_NAMES = {
    "SOPClassUID": "SOP Class UID",
    "StudyInstanceUID": "Study Instance UID",
    "SeriesInstanceUID": "Series Instance UID",
}

# PS3.5 6.2: the string VRs a value of a folder or file name may come from.
_TEXT_VRS = frozenset("AE AS CS DA DS DT IS LO LT PN SH ST TM UC UI UR UT".split())
# PS3.5 7.1: top-level elements ascend by tag; none after Pixel Data is read.
_PIXEL_DATA = 0x7FE00010

# A value is cut to this many bytes of UTF-8 in a name; a whole name
# stays within NAME_MAX (255 bytes) on every common file system.
MAX_VALUE_BYTES = 64
_NAME_MAX = 255

_FIELD = re.compile(r"\{([^{}]*)\}")


class LayoutError(ValueError):
    """A template that cannot be a layout; the argument says why."""


def _unsafe(character: str) -> bool:
    """A separator, or a character that is not seen: control, format, line and paragraph separators..."""
    return character in "/\\" or unicodedata.category(character) in _UNSEEN


# Unicode's categories of characters that show nothing (or a line break).
_UNSEEN = frozenset(["Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"])


def safe_component(value: str | None) -> str | None:
    """
    ``value`` as (part of) one file or folder name, or None if nothing of
    it is left: "/", "\\", NUL, control and other invisible characters
    become "_"; leading and trailing dots and spaces go (so never "." or
    ".." nor a hidden name); cut to L{MAX_VALUE_BYTES} bytes of UTF-8.
    """
    if not value:
        return None
    # PS3.5 6.2: padding (a space, or a NUL for UIDs) is not part of the value.
    text = value.strip(" \0")
    text = "".join("_" if _unsafe(c) else c for c in text)
    text = text.strip(" .")
    encoded = text.encode("utf-8")
    if len(encoded) > MAX_VALUE_BYTES:
        text = encoded[:MAX_VALUE_BYTES].decode("utf-8", "ignore").rstrip(" .")
    return text or None


class Layout:
    """
    A compiled template such as
    C{{PatientID}/{StudyDate}/{SOPInstanceUID}.dcm}: folders and a file
    name made of literal text and DICOM keywords in braces.

    @ivar template: the template, as given.
    @ivar fixed: for the templates of --organize (true) and
        --organize=false (false), the path is L{relative_instance_path}'s,
        with no other work; None for any other template.
    @ivar extra_tags: the tags of the keywords beyond L{FILING_KEYWORDS},
        by keyword, with their VRs: what must be read from the data set
        besides the UIDs.
    """

    def __init__(self, template: str) -> None:
        self.template = template
        self.extra_tags: dict[str, tuple[int, str]] = {}
        self._components = tuple(self._compile(component) for component in self._split(template))
        if not any(part == (_SOP_INSTANCE_UID,) for part in self._components[-1]):
            raise LayoutError(f"the file name {template.rsplit('/', 1)[-1]!r} must hold {{SOPInstanceUID}}")
        # The layouts of --organize take the path radx has always taken.
        self.fixed = {ORGANIZED: True, FLAT: False}.get(template)

    @staticmethod
    def _split(template: str) -> list[str]:
        if not template:
            raise LayoutError("the template is empty")
        if template.startswith("/") or template.startswith("\\") or re.match(r"[A-Za-z]:", template):
            raise LayoutError(f"{template!r} is an absolute path; a layout is relative to the output folder")
        components = template.split("/")
        if any(component == "" for component in components):
            raise LayoutError(f"{template!r} has an empty folder name (// or a trailing /)")
        return components

    def _compile(self, component: str) -> tuple:
        parts: list = []
        literal_bytes = 0
        fields = 0
        position = 0
        for match in _FIELD.finditer(component):
            parts.append(self._literal(component[position : match.start()], component))
            parts.append((self._keyword(match.group(1)),))
            fields += 1
            position = match.end()
        parts.append(self._literal(component[position:], component))
        parts = [part for part in parts if part != ""]
        literal_bytes = sum(len(part.encode("utf-8")) for part in parts if isinstance(part, str))
        if isinstance(parts[0], str) and parts[0].startswith("."):
            raise LayoutError(f"{component!r} would be a hidden name (a leading dot)")
        if literal_bytes + fields * MAX_VALUE_BYTES > _NAME_MAX:
            raise LayoutError(f"{component!r} may make a name longer than {_NAME_MAX} bytes")
        return tuple(parts)

    @staticmethod
    def _literal(text: str, component: str) -> str:
        if "{" in text or "}" in text:
            raise LayoutError(f"{component!r} has an unmatched brace")
        if ".." in text or component in (".", ".."):
            raise LayoutError(f"{component!r}: '..' and '.' may not name a folder")
        if any(_unsafe(c) for c in text):
            raise LayoutError(f"{component!r} holds a backslash or a control character")
        return text

    def _keyword(self, keyword: str) -> str:
        if keyword in FILING_KEYWORDS:
            return keyword
        if keyword in self.extra_tags:
            return keyword
        # The data dictionary only for templates that name other keywords:
        # the fixed layouts do not load pydicom.
        from pydicom.datadict import dictionary_VR, tag_for_keyword

        tag = tag_for_keyword(keyword) if keyword.isidentifier() else None
        if tag is None:
            raise LayoutError(f"{{{keyword}}} is not a DICOM keyword")
        vr = dictionary_VR(tag)
        if vr not in _TEXT_VRS or tag >> 16 == 0x0002 or tag >= _PIXEL_DATA:
            raise LayoutError(f"{{{keyword}}} is not a data set attribute with a text value (its VR is {vr})")
        self.extra_tags[keyword] = (tag, vr)
        return keyword

    def relative_path(
        self,
        sop_instance_uid: str,
        study_instance_uid: str | None,
        series_instance_uid: str | None,
        values: dict | None = None,
    ) -> tuple[tuple[str, ...], list[str]]:
        """
        The path of an instance's file relative to the output directory,
        as L{relative_instance_path} makes it; C{values} holds the text of
        the other keywords, by keyword (absent or None: missing).

        @raise InvalidUID: C{sop_instance_uid} cannot name a file.
        """
        if self.fixed is not None:
            return relative_instance_path(sop_instance_uid, study_instance_uid, series_instance_uid, self.fixed)
        _, warnings = relative_instance_path(sop_instance_uid, None, None, False)
        known = dict(values or ())
        known["StudyInstanceUID"] = study_instance_uid
        known["SeriesInstanceUID"] = series_instance_uid
        known[_SOP_INSTANCE_UID] = sop_instance_uid
        texts: dict[str, str] = {}
        path = []
        for component in self._components:
            name = []
            for part in component:
                if isinstance(part, str):
                    name.append(part)
                    continue
                (keyword,) = part
                text = texts.get(keyword)
                if text is None:
                    text = texts[keyword] = self._text(keyword, known.get(keyword), warnings)
                name.append(text)
            path.append("".join(name))
        return tuple(path), warnings

    def _text(self, keyword: str, value: str | None, warnings: list[str]) -> str:
        if keyword == _SOP_INSTANCE_UID:
            return value
        if keyword in _UID_NAMES or self.extra_tags.get(keyword, (0, ""))[1] == "UI":
            # PS3.5 9.1: a UID names a folder whole, or the folder is UNKNOWN.
            return _folder(_UID_NAMES.get(keyword, keyword), value, warnings)
        return safe_component(value) or UNKNOWN


# The layouts of --organize and --organize=false, compiled once.
ORGANIZED_LAYOUT = Layout(ORGANIZED)
FLAT_LAYOUT = Layout(FLAT)
