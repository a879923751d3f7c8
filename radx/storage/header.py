# -*- test-case-name: tests.test_storage_header -*-
"""A fast scan of the first bytes of a data set for the four UIDs radx files by, or other top-level values.

pydicom reads a header in about half a millisecond; radx needs four
values out of it per instance, thousands of times a second (and the
catalogue a score of them, from thousands of files). This scan
walks the elements of the data set's first bytes (PS3.5 7.1), skipping
values, sequences and items by their lengths and delimiters (PS3.5 7.5),
until it passes (0020,000E). Whenever it meets something it does not
handle with certainty (a truncated element, a VR encoding other than the
transfer syntax's, a deflated data set) it gives up and returns None, and
the caller reads the stored file with pydicom instead.
"""

from __future__ import annotations

import struct

from radx.storage.part10 import LONG_VRS, InstanceHeader

_SOP_CLASS_UID = 0x00080016
_SOP_INSTANCE_UID = 0x00080018
_STUDY_INSTANCE_UID = 0x0020000D
_SERIES_INSTANCE_UID = 0x0020000E
_WANTED = (_SOP_CLASS_UID, _SOP_INSTANCE_UID, _STUDY_INSTANCE_UID, _SERIES_INSTANCE_UID)

# PS3.5 7.5: item, item delimitation and sequence delimitation tags.
_ITEM = 0xFFFEE000
_ITEM_DELIMITATION = 0xFFFEE00D
_SEQUENCE_DELIMITATION = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF

# PS3.5 7.1.2 Table 7.1-1: the VRs with a 2-byte length, and LONG_VRS, those with a 4-byte one.
_ALL_VRS = LONG_VRS | frozenset(
    b"AE AS AT CS DA DS DT FL FD IS LO LT PN SH SL SS ST TM UI UL US".split()
)

# Elements nested deeper than this are not worth the recursion.
_MAX_DEPTH = 16


class _GiveUp(Exception):
    pass


class _Scanner:
    def __init__(
        self, data, implicit: bool, little_endian: bool, complete: bool, wanted, last: int, stop_at_last: bool
    ) -> None:
        self.data = memoryview(data).cast("B")
        self.complete = complete
        self.wanted = wanted
        # The last tag wanted. With stop_at_last the walk ends at it; otherwise
        # only once an element past it (or the data set's end) shows it whole.
        self.stop_at_last = stop_at_last
        self.last = last
        self.implicit = implicit
        order = "<" if little_endian else ">"
        self.tag_and_length = struct.Struct(order + "HHL")  # implicit VR
        self.tag_vr_short = struct.Struct(order + "HH2sH")  # explicit VR, 2-byte length
        self.long_length = struct.Struct(order + "L")
        # The raw value of each wanted top-level element met.
        self.found: dict[int, memoryview] = {}

    def element(self, offset: int):
        """(tag, vr or None, value offset, value length) of the element at offset."""
        data = self.data
        if offset + 8 > len(data):
            raise _GiveUp
        group, number, length = self.tag_and_length.unpack_from(data, offset)
        tag = group << 16 | number
        if self.implicit or group == 0xFFFE:
            # PS3.5 7.5: items and delimiters carry no VR in any syntax.
            return tag, None, offset + 8, length
        group, number, vr, short = self.tag_vr_short.unpack_from(data, offset)
        if vr not in _ALL_VRS:
            raise _GiveUp  # not explicit VR after all
        if vr in LONG_VRS:
            if offset + 12 > len(data):
                raise _GiveUp
            (length,) = self.long_length.unpack_from(data, offset + 8)
            return tag, vr, offset + 12, length
        return tag, vr, offset + 8, short

    def skip_undefined(self, offset: int, depth: int) -> int:
        """Skip a sequence of undefined length from its first item; offset after its delimiter."""
        if depth > _MAX_DEPTH:
            raise _GiveUp
        while True:
            tag, _, value, length = self.element(offset)
            if tag == _SEQUENCE_DELIMITATION:
                return value
            if tag != _ITEM:
                raise _GiveUp
            if length != _UNDEFINED:
                offset = value + length
                continue
            offset = self.elements(value, depth + 1, until_item_end=True)

    def elements(self, offset: int, depth: int, until_item_end: bool = False) -> int:
        """Walk elements from offset; the offset where the walk stopped."""
        data_length = len(self.data)
        while True:
            if not until_item_end and offset >= data_length:
                if depth == 0 and offset == data_length and self.complete:
                    return offset  # the whole data set, all of it read
                raise _GiveUp  # the head ended before the last tag wanted was passed
            tag, vr, value, length = self.element(offset)
            if until_item_end and tag == _ITEM_DELIMITATION:
                return value
            if depth == 0 and tag > self.last:
                return offset
            if length == _UNDEFINED:
                # PS3.5 7.5: only a sequence (SQ, or implicit VR's unknown
                # VR) has an undefined length here; UN of undefined length
                # holds implicit VR inside an explicit data set: not ours.
                if vr not in (None, b"SQ"):
                    raise _GiveUp
                if tag == 0x7FE00010 or (vr is None and not self.implicit):
                    raise _GiveUp
                offset = self.skip_undefined(value, depth + 1)
                continue
            end = value + length
            if depth == 0 and tag in self.wanted:
                if end > data_length:
                    raise _GiveUp
                self.found[tag] = self.data[value:end]
                if tag == self.last and self.stop_at_last:
                    return end
            offset = end


def _uid(raw) -> str | None:
    try:
        text = bytes(raw).decode("ascii")
    except UnicodeDecodeError:
        raise _GiveUp from None
    # PS3.5 9.1: UIDs are padded with a single NUL; be lenient with spaces.
    text = text.rstrip("\0 ").strip(" ")
    return text or None


def scan_header(
    data, implicit: bool, little_endian: bool, complete: bool = False, sop_only: bool = False
) -> InstanceHeader | None:
    """The four UIDs from the first bytes of a data set, or None if pydicom should decide.

    ``complete`` says ``data`` is the whole data set, so that its end may
    come before any element past (0020,000E). With ``sop_only`` the scan
    ends with (0008,0018), and the study and series UIDs are None: what a
    sender needs, whatever follows.
    """
    last = _SOP_INSTANCE_UID if sop_only else _SERIES_INSTANCE_UID
    found = scan_elements(data, implicit, little_endian, _WANTED, last, complete, stop_at_last=sop_only)
    if found is None:
        return None
    try:
        uids = {tag: _uid(value) for tag, value in found.items()}
    except _GiveUp:
        return None
    header = InstanceHeader(
        uids.get(_SOP_CLASS_UID),
        uids.get(_SOP_INSTANCE_UID),
        uids.get(_STUDY_INSTANCE_UID),
        uids.get(_SERIES_INSTANCE_UID),
    )
    if header.sop_class_uid is None or header.sop_instance_uid is None:
        return None  # pydicom gives the precise reason
    return header


def scan_elements(
    data, implicit: bool, little_endian: bool, wanted, last: int, complete: bool = False, stop_at_last: bool = False
) -> dict[int, memoryview] | None:
    """The raw values of the top-level elements of ``wanted`` in the first bytes of a data set.

    ``last`` is the greatest tag of ``wanted``: the walk ends at the first
    element past it, or, with ``stop_at_last``, right after it. An element
    absent from the data set is absent from the answer. None when the
    bytes cannot be walked with certainty up to there (see the module's
    docstring) and pydicom should decide.
    """
    if implicit and len(data) >= 6 and bytes(data[4:6]) in _ALL_VRS:
        return None  # looks like explicit VR: let pydicom's reader judge it
    scanner = _Scanner(data, implicit, little_endian, complete, wanted, last, stop_at_last)
    try:
        scanner.elements(0, 0)
    except (_GiveUp, struct.error):
        return None
    return scanner.found
