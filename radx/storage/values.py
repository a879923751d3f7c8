# -*- test-case-name: tests.test_storage_values -*-
"""The text of the top-level values a layout names: from a data set's first bytes, or from pydicom where the scan cannot be sure."""

from __future__ import annotations

from radx.storage.header import scan_elements
from radx.storage.part10 import DEFLATED_TRANSFER_SYNTAXES, data_set_offset, parsing_data_set, read_data_set_head
from radx.uids import EXPLICIT_VR_BIG_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN

# PS3.3 C.12.1.1.2: the character set of the data set's text values.
SPECIFIC_CHARACTER_SET = 0x00080005

# Character sets that a Python codec decodes alone, as pydicom does: the
# default repertoire, Latin-1, UTF-8. Others go through pydicom's decoder,
# which handles code extensions (ISO 2022).
_CODECS = {"": "latin_1", "ISO_IR 6": "latin_1", "ISO_IR 100": "latin_1", "ISO_IR 192": "utf_8"}
# PS3.5 6.1.2.3: the VRs whose values the Specific Character Set governs.
_SPECIFIC_VRS = frozenset("LO LT PN SH ST UC UT".split())


def decode_text(raw: bytes, vr: str, charset: bytes | None) -> str | None:
    """A value's text, decoded in the data set's character set; None if empty."""
    terms = tuple(t.strip() for t in charset.decode("ascii", "replace").split("\\")) if charset else ("",)
    codec = _CODECS.get(terms[0]) if len(terms) == 1 else None
    if vr in _SPECIFIC_VRS and (codec is None or b"\x1b" in raw):
        from pydicom.charset import convert_encodings, decode_bytes
        from pydicom.valuerep import TEXT_VR_DELIMS, PersonName

        encodings = convert_encodings(list(terms))
        values = raw.rstrip(b" \0").split(b"\\")
        if vr == "PN":
            # PS3.5 6.2.1: each component group may switch character sets.
            text = "\\".join(str(PersonName(v, encodings)) for v in values)
        else:
            text = "\\".join(decode_bytes(v, encodings, TEXT_VR_DELIMS) for v in values)
    else:
        text = raw.decode(codec if vr in _SPECIFIC_VRS else "latin_1", "replace")
    return text.strip(" \0") or None


def scan_values(head, transfer_syntax_uid: str, tags: dict, complete: bool) -> dict | None:
    """
    The values of C{tags} (keyword: (tag, VR)) from the first bytes of a
    data set, by keyword (None where absent or empty); None when the scan
    cannot be sure and L{read_values} should read them.
    """
    if transfer_syntax_uid in DEFLATED_TRANSFER_SYNTAXES:
        return None
    wanted = {tag for tag, _ in tags.values()} | {SPECIFIC_CHARACTER_SET}
    # PS3.5 A.1-A.4: implicit VR little endian, explicit VR big endian,
    # explicit VR little endian for every other (native or encapsulated).
    found = scan_elements(
        head,
        transfer_syntax_uid == IMPLICIT_VR_LITTLE_ENDIAN,
        transfer_syntax_uid != EXPLICIT_VR_BIG_ENDIAN,
        wanted,
        max(wanted),
        complete,
    )
    if found is None:
        return None
    return decoded_values(found, tags)


def decoded_values(found: dict, tags: dict) -> dict:
    """
    The values of C{tags} (keyword: (tag, VR)) by keyword, from the raw
    top-level values C{found} by tag (the data set's walk's, or the
    scan's), C{SPECIFIC_CHARACTER_SET} among them if the data set has it.
    """
    charset = found.get(SPECIFIC_CHARACTER_SET)
    charset = bytes(charset) if charset is not None else None
    values = {}
    for keyword, (tag, vr) in tags.items():
        raw = found.get(tag)
        values[keyword] = None if raw is None else decode_text(bytes(raw), vr, charset)
    return values


def read_values(raw, transfer_syntax_uid: str, tags: dict) -> dict:
    """
    The values of C{tags} as pydicom reads them from the open PS3.10 file
    C{raw}, stopping after the greatest of them.

    @raise UnreadableDataSet: the data set cannot be parsed.
    """
    raw.seek(0)
    with parsing_data_set():
        dataset = read_data_set_head(raw, data_set_offset(raw), transfer_syntax_uid, [t for t, _ in tags.values()])
        values = {}
        for keyword, (tag, _) in tags.items():
            element = dataset.get(tag)
            value = None if element is None else element.value
            if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
                value = "\\".join(str(v) for v in value)
            values[keyword] = (str(value).strip(" \0") or None) if value is not None else None
    return values
