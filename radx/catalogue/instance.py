# -*- test-case-name: tests.test_catalogue_instance -*-
"""A file's catalogue row: the table's attributes read from the head of a PS3.10 file, never its pixel data.

The first HEAD bytes are read once; radx's file meta parser and its
header scan walk them to the last attribute wanted, (0020,0013). Where
the scan cannot be sure (a deflated data set, a header longer than HEAD,
an encoding it does not handle), pydicom reads the data set from the
file, stopping at the same tag.
"""

from __future__ import annotations

import os

from radx.catalogue.schema import ATTRIBUTES, SPECIFIC_CHARACTER_SET
from radx.storage.header import scan_elements
from radx.storage.part10 import (
    DEFLATED_TRANSFER_SYNTAXES,
    NotPart10,
    UnreadableDataSet,
    parse_file_meta,
    parsing_data_set,
    read_data_set_head,
)
from radx.uids import EXPLICIT_VR_BIG_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN

# Bytes read from the start of each file. A CT or MR header is 1 to 4 KiB
# long; what needs more goes to pydicom. Reading 64 KiB instead halved the
# rate on the benchmark's CT images: the copy costs more than the parse.
HEAD = 16 * 1024

_WANTED = frozenset([SPECIFIC_CHARACTER_SET] + [a.tag for a in ATTRIBUTES])
_LAST = max(_WANTED)

# The top-level elements a row is made of: what a server that records
# each instance it stores asks its walk of the data set to keep.
ROW_TAGS = _WANTED

# PS3.10 7.1: Media Storage SOP Class and Instance UID, Transfer Syntax UID.
_META_SOP_CLASS_UID = 0x0002
_META_SOP_INSTANCE_UID = 0x0003
_META_TRANSFER_SYNTAX_UID = 0x0010

# Character sets (PS3.3 C.12.1.1.2) that a Python codec decodes alone, as
# pydicom does: the default repertoire, Latin-1, UTF-8. Others go through
# pydicom's decoder, which handles code extensions (ISO 2022).
_CODECS = {"": "latin_1", "ISO_IR 6": "latin_1", "ISO_IR 100": "latin_1", "ISO_IR 192": "utf_8"}


class NotCatalogued(Exception):
    """A file that is not DICOM, or not readable as such; the argument says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def read_row(path: str, stat: os.stat_result | None = None) -> dict:
    """
    The catalogue row of the PS3.10 file at ``path``: every column of the
    table but indexed_at, received_at, calling_ae_title and peer, which the
    caller knows. ``stat`` is the file's, if the caller has it already.

    @raise NotCatalogued: not a PS3.10 file, or a data set that cannot be parsed.
    @raise OSError: the file cannot be read.
    """
    with open(path, "rb") as fp:
        head = fp.read(HEAD)
        if stat is None:
            stat = os.fstat(fp.fileno())
        try:
            offset, meta = parse_file_meta(head)
        except NotPart10 as error:
            raise NotCatalogued(error.message) from None
        transfer_syntax = _meta_uid(meta, _META_TRANSFER_SYNTAX_UID)
        if transfer_syntax is None:
            raise NotCatalogued("the file meta has no Transfer Syntax UID (0002,0010)")
        row = head_values(memoryview(head)[offset:], transfer_syntax, complete=len(head) < HEAD)
        if row is None:
            row = _read_with_pydicom(fp, offset, transfer_syntax)
    if row["sop_class_uid"] is None:
        row["sop_class_uid"] = _meta_uid(meta, _META_SOP_CLASS_UID)
    if row["sop_instance_uid"] is None:
        row["sop_instance_uid"] = _meta_uid(meta, _META_SOP_INSTANCE_UID)
    row["file_path"] = path
    row["file_name"] = os.path.basename(path)
    row["file_size"] = stat.st_size
    row["file_mtime"] = stat.st_mtime_ns
    row["transfer_syntax_uid"] = transfer_syntax
    return row


def head_values(data_set_head, transfer_syntax: str, complete: bool) -> dict | None:
    """
    The values of the row's ATTRIBUTES columns, read from the first bytes
    of a data set (no file meta) encoded in ``transfer_syntax``;
    ``complete`` if they are the whole data set. None where the header
    scan cannot be sure: pydicom must read the file.
    """
    if transfer_syntax in DEFLATED_TRANSFER_SYNTAXES:
        return None
    # PS3.5 A.1-A.4: implicit VR little endian, explicit VR big endian,
    # explicit VR little endian for every other (native or encapsulated).
    found = scan_elements(
        data_set_head,
        transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN,
        transfer_syntax != EXPLICIT_VR_BIG_ENDIAN,
        _WANTED,
        _LAST,
        complete=complete,
    )
    return None if found is None else _decoded(found)


def attribute_values(found: dict) -> list:
    """
    The values of the row's ATTRIBUTES columns, in their order, from the
    raw top-level values of ROW_TAGS the data set holds, by tag (the
    walk's, as the storage writes the data set: nothing is scanned again).
    """
    return _decoded_list(found)


def _meta_uid(meta: dict, element: int) -> str | None:
    value = meta.get(element)
    if value is None:
        return None
    return value.decode("ascii", "replace").rstrip("\0 ").strip() or None


def _integer(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None  # not one IS value: no number to sort or select by


# The row's columns as the decoding takes them: (tag, VR), in ATTRIBUTES' order.
_PLAN = tuple((a.tag, a.vr) for a in ATTRIBUTES)
_COLUMN_NAMES = tuple(a.column for a in ATTRIBUTES)
_TAGS = tuple(a.tag for a in ATTRIBUTES)
_IS_COLUMNS = tuple(i for i, a in enumerate(ATTRIBUTES) if a.vr == "IS")
_PN_COLUMNS = tuple(i for i, a in enumerate(ATTRIBUTES) if a.vr == "PN")
# The VRs whose text the Specific Character Set governs, among the columns'.
_TEXT_VRS = frozenset(("PN", "LO", "SH"))
# Specific Character Set values, as a data set holds them, that _CODECS
# decodes: their terms and codec looked up whole, not parsed each time.
_KNOWN_CHARSETS = {term.encode("ascii"): ((term,), codec) for term, codec in _CODECS.items() if term}
# Between two values in _joined: a control character that the columns'
# VRs do not allow (PS3.5 6.2), and that no codec of _CODECS makes part of
# a character. A value that holds one anyway is decoded on its own.
_SEPARATOR = b"\x01"
_SEPARATOR_TEXT = "\x01"
_SEPARATORS = len(_TAGS) - 1
# ESC, which begins an escape sequence (ISO 2022, PS3.5 6.1.2.5).
_ESC = b"\x1b"


def _decoded(found: dict) -> dict:
    """The row's values from the scan's raw ones, by column (see L{_decoded_list})."""
    return dict(zip(_COLUMN_NAMES, _decoded_list(found)))


def _decoded_list(found: dict) -> list:
    """
    The row's values from the scan's raw ones, in ATTRIBUTES' order, text
    decoded in the data set's character set: a Python codec for the
    default repertoire, Latin-1 and UTF-8 (escape sequences aside),
    pydicom's decoder only for the others.
    """
    charset = found.get(SPECIFIC_CHARACTER_SET)
    if not charset:
        terms, codec = ("",), "latin_1"
    else:
        known = _KNOWN_CHARSETS.get(charset) if type(charset) is bytes else None
        terms, codec = known or _terms_and_codec(charset)
    if codec is not None:
        values = _joined(found, codec)
        if values is not None:
            return values
    return _each(found, terms, codec)


def _terms_and_codec(charset) -> tuple:
    """A Specific Character Set's defined terms, and the Python codec that decodes it alone, or None."""
    terms = tuple(t.strip() for t in str(charset, "ascii", "replace").split("\\"))
    return terms, _CODECS.get(terms[0]) if len(terms) == 1 else None


def _joined(found: dict, codec: str) -> list | None:
    """
    L{_each}'s values with one codec: the values joined, decoded at once
    and split again (one call where there were nineteen: the storage
    thread runs this for each instance, before its Success). None if one
    holds the separator or an escape sequence: L{_each} decodes them.
    """
    get = found.get
    joined = _SEPARATOR.join([get(tag) or b"" for tag in _TAGS])
    if joined.count(_SEPARATOR) != _SEPARATORS or _ESC in joined:
        return None
    values = [text.strip(" \0") or None for text in str(joined, codec, "replace").split(_SEPARATOR_TEXT)]
    for i in _IS_COLUMNS:
        if values[i] is not None:
            values[i] = _integer(values[i])
    for i in _PN_COLUMNS:
        text = values[i]
        if text is not None and "=" in text:
            values[i] = _without_empty_groups(text)
    return values


def _without_empty_groups(text: str) -> str | None:
    """A PN value without its empty trailing component groups, as pydicom leaves them out."""
    return "\\".join(name.rstrip("=") for name in text.split("\\")) or None


def _each(found: dict, terms: tuple, codec: str | None) -> list:
    """
    The row's values decoded one by one, by ``codec``; text by pydicom's
    decoder for ``terms`` where ``codec`` is None or the value holds
    escape sequences.
    """
    encodings = None
    values = []
    append = values.append
    get = found.get
    for tag, vr in _PLAN:
        raw = get(tag)
        if not raw:
            append(None)
            continue
        raw = bytes(raw)  # the walk's bytes as they are; the scan's memoryviews copied
        if vr in _TEXT_VRS and (codec is None or _ESC in raw):
            if encodings is None:
                from pydicom.charset import convert_encodings

                encodings = convert_encodings(list(terms))
            text = _pydicom_text(raw, vr, encodings)
        else:
            text = str(raw, codec or "latin_1", "replace")
        text = text.strip(" \0")
        if not text:
            append(None)
        elif vr == "IS":
            append(_integer(text))
        elif vr == "PN" and "=" in text:
            append(_without_empty_groups(text))
        else:
            append(text)
    return values


def _pydicom_text(raw: bytes, vr: str, encodings: list[str]) -> str:
    """A value in a character set with code extensions, decoded by pydicom, as its DICOM string."""
    from pydicom.charset import decode_bytes
    from pydicom.valuerep import TEXT_VR_DELIMS, PersonName

    values = raw.rstrip(b" \0").split(b"\\")
    if vr == "PN":
        return "\\".join(str(PersonName(v, encodings)) for v in values)
    return "\\".join(decode_bytes(v, encodings, TEXT_VR_DELIMS) for v in values)


def _read_with_pydicom(fp, offset: int, transfer_syntax: str) -> dict:
    """The row's values as pydicom reads them, from the open file, up to the last attribute wanted."""
    try:
        with parsing_data_set():
            dataset = read_data_set_head(fp, offset, transfer_syntax, _WANTED)
            row = {}
            for attribute in ATTRIBUTES:
                element = dataset.get(attribute.tag)
                row[attribute.column] = None if element is None else _pydicom_value(element.value, attribute.vr)
    except UnreadableDataSet as error:
        raise NotCatalogued(error.message) from None
    return row


def _pydicom_value(value, vr: str):
    if value is None or value == "":
        return None
    if vr == "IS":
        try:
            return int(value)
        except (TypeError, ValueError):
            return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value) or None
    return str(value).strip(" \0") or None
