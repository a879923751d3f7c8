# -*- test-case-name: tests.test_storage_walk -*-
"""A streaming walk of a data set's element headers in its transfer syntax: its structure proved, its filing UIDs read.

The data set is fed as it arrives, in pieces of any size. Values are
skipped by their lengths, never held: the walk keeps one partial element
header (12 bytes at most), the first bytes of the four UIDs radx files
by and of the first pixel data fragment, and one small frame per open
sequence, item or encapsulated Pixel Data. A deflated data set is
inflated in bounded pieces for the walk only. Whatever does not parse,
in the negotiated transfer syntax, to exactly the data set's end raises
L{UnreadableDataSet}, with a message that names tags, offsets and
lengths, never a value.
"""

from __future__ import annotations

import struct
import zlib

from radx.storage.part10 import DEFLATED_TRANSFER_SYNTAXES, LONG_VRS, InstanceHeader, UnreadableDataSet
from radx.uids import EXPLICIT_VR_BIG_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN

_SOP_CLASS_UID = 0x00080016
_SOP_INSTANCE_UID = 0x00080018
_STUDY_INSTANCE_UID = 0x0020000D
_SERIES_INSTANCE_UID = 0x0020000E
_WANTED = frozenset((_SOP_CLASS_UID, _SOP_INSTANCE_UID, _STUDY_INSTANCE_UID, _SERIES_INSTANCE_UID))
_PIXEL_DATA = 0x7FE00010

# PS3.5 7.5: item, item delimitation and sequence delimitation tags.
_ITEM = 0xFFFEE000
_ITEM_DELIMITATION = 0xFFFEE00D
_SEQUENCE_DELIMITATION = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF

# PS3.5 7.1.2 Table 7.1-1: the VRs with a 2-byte length (LONG_VRS have a 4-byte one).
_SHORT_VRS = frozenset(b"AE AS AT CS DA DS DT FL FD IS LO LT PN SH SL SS ST TM UI UL US".split())
_ALL_VRS = _SHORT_VRS | LONG_VRS
# The VRs with a 4-byte length whose value is skipped as it is: not SQ, walked into.
_SKIMMED_LONG_VRS = LONG_VRS - {b"SQ"}

# PS3.5 7.1: elements ascend by tag, so only a few small ones come before
# (0008,0016) and (0008,0018). A data set whose SOP Class and SOP Instance
# UIDs have not both ended within this many bytes is refused, at that
# point: radx files by them, and a value that big before them is an attack.
FILING_HEADER_BOUND = 1 << 20
# More nesting than this is refused: the walk's state grows with it.
MAX_DEPTH = 128
# More of a value is not kept: a UID is 64 characters at most (PS3.5 9.1),
# a name or description 64 a component; a longer value asked for is read
# from the file (values()).
_KEPT_VALUE = 1024
# PS3.5 G.3.1: the RLE Header is 64 bytes.
_FRAGMENT_PREFIX = 64

# Deflated input is inflated this much at a time, from this much input:
# the bytes held while inflating stay bounded whatever the ratio.
_DEFLATED_PIECE = 16 * 1024
_INFLATED_PIECE = 256 * 1024
_AFTER_DEFLATED = 9

# What the first fragment of the first frame starts with, per transfer
# syntax, where that is cheap to know. PS3.5 A.4.1, A.4.2: a JPEG or JPEG-LS
# bit stream starts with the SOI marker (ISO/IEC 10918-1 B.2.1, 14495-1 C.1.1);
# PS3.5 A.4.4, A.4.5: a JPEG 2000 or HTJ2K code stream with the SOC marker
# (ISO/IEC 15444-1 A.4.1); PS3.5 G.3.1: an RLE frame with its RLE Header.
_JPEG, _JPEG_2000, _RLE = "JPEG SOI marker", "JPEG 2000 SOC marker", "RLE Header"
_FIRST_FRAGMENT = {
    "1.2.840.10008.1.2.4.50": _JPEG,
    "1.2.840.10008.1.2.4.51": _JPEG,
    "1.2.840.10008.1.2.4.57": _JPEG,
    "1.2.840.10008.1.2.4.70": _JPEG,
    "1.2.840.10008.1.2.4.80": _JPEG,
    "1.2.840.10008.1.2.4.81": _JPEG,
    "1.2.840.10008.1.2.4.90": _JPEG_2000,
    "1.2.840.10008.1.2.4.91": _JPEG_2000,
    "1.2.840.10008.1.2.4.92": _JPEG_2000,
    "1.2.840.10008.1.2.4.93": _JPEG_2000,
    "1.2.840.10008.1.2.4.201": _JPEG_2000,
    "1.2.840.10008.1.2.4.202": _JPEG_2000,
    "1.2.840.10008.1.2.4.203": _JPEG_2000,
    "1.2.840.10008.1.2.5": _RLE,
}
# PS3.5 A.4: encapsulated syntaxes whose fragments radx does not look into
# (MPEG-2, MPEG-4, HEVC, Encapsulated Uncompressed).
_OTHER_ENCAPSULATED = frozenset(
    ["1.2.840.10008.1.2.1.98", "1.2.840.10008.1.2.4.107", "1.2.840.10008.1.2.4.108"]
    + [f"1.2.840.10008.1.2.4.{n}{s}" for n in range(100, 107) for s in ("", ".1")]
)
# PS3.5 A.1, A.2, A.3, A.5: the native syntaxes, whose Pixel Data has a defined length.
_NATIVE = frozenset(
    {IMPLICIT_VR_LITTLE_ENDIAN, "1.2.840.10008.1.2.1", EXPLICIT_VR_BIG_ENDIAN} | DEFLATED_TRANSFER_SYNTAXES
)

# Frame kinds.
_IN_ITEM, _IN_SEQUENCE, _IN_FRAGMENTS = 0, 1, 2
_KIND_NAMES = ("an item", "a sequence", "encapsulated Pixel Data")


def _tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _first_fragment_problem(kind: str, prefix: bytes) -> str | None:
    if kind is _JPEG:
        ok = prefix[:2] == b"\xff\xd8"
    elif kind is _JPEG_2000:
        # The code stream; some writers wrap it in a JP2 file (its signature box).
        ok = prefix[:2] == b"\xff\x4f" or prefix[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n"
    else:
        ok = False
        if len(prefix) >= _FRAGMENT_PREFIX:
            segments, first_offset = struct.unpack_from("<LL", prefix)
            # PS3.5 G.3.1: 1 to 15 segments, the first right after the header.
            ok = 1 <= segments <= 15 and first_offset == _FRAGMENT_PREFIX
    return None if ok else f"the first fragment of Pixel Data does not start with the {kind}"


class _Encoding:
    """How element headers are read: VR explicit or implicit, byte order."""

    def __init__(self, implicit: bool, little_endian: bool):
        self.implicit = implicit
        order = "<" if little_endian else ">"
        self.tag_and_length = struct.Struct(order + "HHL")
        self.tag_vr_short = struct.Struct(order + "HH2sH")
        self.long_length = struct.Struct(order + "L")


# PS3.5 6.2.2: the value of a UN of undefined length is implicit VR little endian.
_IMPLICIT_LITTLE = _Encoding(True, True)


class _Frame:
    """An open sequence, item or encapsulated Pixel Data."""

    __slots__ = ("kind", "end", "limit", "encoding", "tag", "items")

    def __init__(self, kind: int, end: int | None, limit: int | None, encoding: _Encoding, tag: int):
        self.kind = kind
        self.end = end  # where it ends, None for undefined length
        self.limit = limit  # the nearest end of it or of a frame around it
        self.encoding = encoding
        self.tag = tag
        self.items = 0


class DataSetWalk:
    """
    Walk one data set, fed in pieces, in the transfer syntax named.

    Call L{feed} with each piece in order, then L{end}. Both raise
    L{UnreadableDataSet} as soon as the data set is known not to parse.
    """

    def __init__(self, transfer_syntax_uid: str, values=()):
        syntax = transfer_syntax_uid
        # The top-level elements whose values are kept: the four UIDs, and
        # those asked (a catalogue's columns, a layout's keywords), so that
        # nobody scans the data set's head again for them.
        self._wanted = _WANTED | frozenset(values)
        self._cut: set[int] = set()
        # PS3.5 A.1-A.5: implicit VR little endian, explicit VR big endian,
        # explicit VR little endian for every other syntax.
        self._root = _Encoding(syntax == IMPLICIT_VR_LITTLE_ENDIAN, syntax != EXPLICIT_VR_BIG_ENDIAN)
        # PS3.5 A.4: True, encapsulated Pixel Data only; False, native only;
        # None (a syntax radx does not know): either.
        if syntax in _NATIVE:
            self._encapsulated: bool | None = False
        elif syntax in _FIRST_FRAGMENT or syntax in _OTHER_ENCAPSULATED:
            self._encapsulated = True
        else:
            self._encapsulated = None
        self._first_fragment = _FIRST_FRAGMENT.get(syntax)
        # PS3.5 A.5: deflate (RFC 1951) without a zlib header.
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS) if syntax in DEFLATED_TRANSFER_SYNTAXES else None
        self._after_deflated = 0
        self.inflated = 0  # bytes of a deflated data set inflated so far

        self._position = 0  # offset in the (inflated) data set of the next byte not consumed
        self._pending = b""  # the start of an element header cut by the end of a piece
        self._skip = 0  # bytes of the current value still to come
        self._stack: list[_Frame] = []
        self._encoding = self._root
        self._limit: int | None = None
        self._kept: bytearray | None = None  # the first bytes of a value wanted
        self._kept_for = 0  # its tag, or _ITEM for the first fragment
        self._found: dict[int, bytes] = {}
        self._first_element = True
        self._filing_header_read = False

    # Input.

    def feed(self, data) -> None:
        """Walk the next bytes of the data set, as received."""
        if self._inflater is not None:
            self._inflate(data)
            return
        if self._skip and self._kept is None:
            # Inside a value none of which is kept (Pixel Data, most often):
            # a piece that ends before the value does is only counted.
            size = data.nbytes if type(data) is memoryview else memoryview(data).nbytes
            if size < self._skip:
                self._skip -= size
                self._position += size
                return
        self._walk(data)

    def end(self) -> InstanceHeader:
        """
        The data set has ended: check that its last element ended with it,
        and return its SOP Class, SOP Instance, Study and Series Instance UIDs.
        """
        if self._inflater is not None:
            self._inflate_end()
        if self._pending:
            raise UnreadableDataSet(
                f"the data set ends in the middle of an element header, at byte {self._position}"
            )
        if self._skip:
            raise UnreadableDataSet(f"the data set ends {self._skip} bytes before the end of a value")
        if self._stack:
            frame = self._stack[-1]
            raise UnreadableDataSet(f"the data set ends inside {_KIND_NAMES[frame.kind]} of {_tag(frame.tag)}")
        header = InstanceHeader(*(self._uid(tag) for tag in (
            _SOP_CLASS_UID, _SOP_INSTANCE_UID, _STUDY_INSTANCE_UID, _SERIES_INSTANCE_UID)))
        if header.sop_class_uid is None:
            raise UnreadableDataSet("the data set has no SOP Class UID (0008,0016)")
        if header.sop_instance_uid is None:
            raise UnreadableDataSet("the data set has no SOP Instance UID (0008,0018)")
        return header

    def values(self) -> dict[int, bytes] | None:
        """
        After L{end}: the raw value of each top-level element asked for (and
        of the four UIDs) that the data set holds, by tag; None if one of
        them was longer than the bytes kept of a value, and must be read
        from the file.
        """
        if self._cut:
            return None
        return self._found

    def _uid(self, tag: int) -> str | None:
        value = self._found.get(tag)
        if value is None:
            return None
        # PS3.5 9.1: padded with a single NUL; spaces are common. A value
        # that is not ASCII is kept so that it matches nothing.
        text = value.decode("latin-1").rstrip("\0 ").strip(" ")
        return text or None

    # Deflated data sets.

    def _inflate(self, data) -> None:
        view = memoryview(data).cast("B")
        inflater = self._inflater
        for start in range(0, len(view), _DEFLATED_PIECE):
            piece = view[start : start + _DEFLATED_PIECE]
            if inflater.eof:
                self._after_end(piece)
                continue
            try:
                while piece and not inflater.eof:
                    out = inflater.decompress(piece, _INFLATED_PIECE)
                    self.inflated += len(out)
                    self._walk(out)
                    piece = inflater.unconsumed_tail
            except zlib.error as e:
                raise UnreadableDataSet(f"the deflated data set cannot be inflated: {e}") from None
            if inflater.eof:
                self._after_end(inflater.unused_data)

    def _after_end(self, data) -> None:
        # PS3.5 A.5: the data set ends with the deflate stream. Allowed after
        # it: the CRC-32 and size some writers append (RFC 1952 2.3.1), 8
        # bytes, then one byte that pads the whole to an even length (PS3.5
        # 7.1): pydicom's image_dfl.dcm has the first, a sender adds the second.
        self._after_deflated += len(data)
        if self._after_deflated > _AFTER_DEFLATED:
            raise UnreadableDataSet(
                f"{self._after_deflated} or more bytes follow the end of the deflated data set"
            )

    def _inflate_end(self) -> None:
        try:
            out = self._inflater.flush()
        except zlib.error as e:
            raise UnreadableDataSet(f"the deflated data set cannot be inflated: {e}") from None
        self.inflated += len(out)
        self._walk(out)
        if not self._inflater.eof:
            raise UnreadableDataSet(
                f"the deflated data set is cut short: its deflate stream does not end"
                f" ({self.inflated} bytes inflated)"
            )

    # The walk.

    def _walk(self, data) -> None:
        view = memoryview(data).cast("B")
        size = len(view)
        offset = 0
        while True:
            if self._skip:
                take = min(self._skip, size - offset)
                if self._kept is not None and len(self._kept) < _KEPT_VALUE:
                    self._kept += view[offset : offset + min(take, _KEPT_VALUE - len(self._kept))]
                offset += take
                self._skip -= take
                self._position += take
                if self._skip:
                    return
                if self._kept is not None:
                    self._value_ended()
            stack = self._stack
            while stack and stack[-1].end == self._position:
                self._close()
            if offset == size:
                return
            if self._pending:
                # PS3.5 7.1.2: 12 bytes at most make a header.
                joined = self._pending + bytes(view[offset : offset + 12 - len(self._pending)])
                used = self._header(joined, 0)
                if not used:
                    self._pending = joined
                    return
                offset += used - len(self._pending)
                self._pending = b""
            else:
                skimmed = self._skim(view, offset, size)
                if skimmed != offset:
                    offset = skimmed
                    continue  # a frame may end here
                used = self._header(view, offset)
                if not used:
                    self._pending = bytes(view[offset:])
                    return
                offset += used

    def _skim(self, view, offset: int, size: int) -> int:
        """
        Skip, in one tight loop, the plain elements that lie wholly in
        C{view} at this level and within every bound; the offset reached.

        What needs more (a sequence, an item, a delimiter, encapsulated
        Pixel Data, an undefined length, what the piece cuts) is left to
        L{_header}. This is the walk's cost for most elements.
        """
        stack = self._stack
        if self._first_element or (stack and stack[-1].kind != _IN_ITEM):
            return offset
        encoding = self._encoding
        implicit = encoding.implicit
        unpack = encoding.tag_and_length.unpack_from if implicit else encoding.tag_vr_short.unpack_from
        long_length = encoding.long_length.unpack_from
        frame_stop = size
        if self._limit is not None:
            frame_stop = min(size, self._limit - self._position + offset)
        stop = frame_stop
        if not self._filing_header_read:
            stop = min(frame_stop, FILING_HEADER_BOUND - self._position + offset)
        # PS3.5 A.4: only Pixel Data of an encapsulated syntax needs a look.
        native_pixel_data_ok = not (self._encapsulated and not stack)
        wanted = self._wanted
        found = self._found
        start = offset
        while offset + 12 <= stop:
            if implicit:
                group, element, length = unpack(view, offset)
                value = offset + 8
            else:
                group, element, vr, length = unpack(view, offset)
                if vr in _SKIMMED_LONG_VRS:
                    (length,) = long_length(view, offset + 8)
                    value = offset + 12
                elif vr in _SHORT_VRS:
                    value = offset + 8
                else:
                    break
            if group == 0xFFFE or length == _UNDEFINED or value + length > stop:
                break
            tag = group << 16 | element
            if tag in wanted:
                if stack:
                    break
                # _keep_value, inline: this runs for a score of elements an instance with a catalogue.
                if length > _KEPT_VALUE:
                    self._cut.add(tag)
                if tag not in found:
                    found[tag] = bytes(view[value : value + min(length, _KEPT_VALUE)])
                    if not self._filing_header_read and (tag == _SOP_CLASS_UID or tag == _SOP_INSTANCE_UID):
                        self._filing_header_read = _SOP_CLASS_UID in found and _SOP_INSTANCE_UID in found
                        if self._filing_header_read:
                            stop = frame_stop
            elif tag == _PIXEL_DATA and length and not native_pixel_data_ok:
                break
            offset = value + length
        self._position += offset - start
        return offset

    def _header(self, buffer, offset: int) -> int:
        """Read the element header at offset and act on it; its size, or 0 if incomplete."""
        available = len(buffer) - offset
        if available < 8:
            return 0
        encoding = self._encoding
        group, element, length = encoding.tag_and_length.unpack_from(buffer, offset)
        tag = group << 16 | element
        vr = None
        size = 8
        if self._first_element:
            self._first_element = False
            if encoding.implicit and bytes(buffer[offset + 4 : offset + 6]) in _ALL_VRS:
                # PS3.5 A.1: what looks like an explicit VR where a length is.
                raise UnreadableDataSet(
                    "the data set is in explicit VR, not in the implicit VR of its transfer syntax"
                )
        if group != 0xFFFE and not encoding.implicit:
            # PS3.5 7.1.2: items and delimiters carry no VR in any syntax.
            _, _, vr, length = encoding.tag_vr_short.unpack_from(buffer, offset)
            if vr in LONG_VRS:
                if available < 12:
                    return 0
                (length,) = encoding.long_length.unpack_from(buffer, offset + 8)
                size = 12
            elif vr not in _SHORT_VRS:
                raise UnreadableDataSet(
                    f"{_tag(tag)} at byte {self._position} has no valid VR:"
                    " the data set is not in the explicit VR of its transfer syntax"
                )
        self._position += size
        if self._limit is not None and self._position > self._limit:
            raise self._overrun(tag)
        if not self._filing_header_read:
            self._bound(length if length != _UNDEFINED and vr != b"SQ" else 0)
        self._element(tag, vr, length)
        return size

    def _overrun(self, tag: int) -> UnreadableDataSet:
        frame = next(f for f in reversed(self._stack) if f.end is not None)
        return UnreadableDataSet(
            f"{_tag(tag)} runs past the end of {_KIND_NAMES[frame.kind]} of {_tag(frame.tag)}"
            f" (byte {frame.end})"
        )

    def _element(self, tag: int, vr: bytes | None, length: int) -> None:
        stack = self._stack
        kind = stack[-1].kind if stack else _IN_ITEM
        if kind == _IN_SEQUENCE:
            # PS3.5 7.5.1, 7.5.2: a sequence holds items, then its delimiter if of undefined length.
            frame = stack[-1]
            if tag == _ITEM:
                frame.items += 1
                self._open(_IN_ITEM, None if length == _UNDEFINED else length, frame.tag)
            elif tag == _SEQUENCE_DELIMITATION and frame.end is None:
                self._close()
            else:
                raise UnreadableDataSet(f"{_tag(tag)} where an item of {_tag(frame.tag)} should be")
            return
        if kind == _IN_FRAGMENTS:
            # PS3.5 A.4: items of defined length (the Basic Offset Table, then
            # the fragments), then a sequence delimiter.
            frame = stack[-1]
            if tag == _SEQUENCE_DELIMITATION:
                self._close()
            elif tag == _ITEM and length != _UNDEFINED:
                frame.items += 1
                if frame.items == 2 and self._first_fragment is not None and len(stack) == 1:
                    if length < 2:
                        raise UnreadableDataSet(_first_fragment_problem(self._first_fragment, b""))
                    self._keep(_ITEM)
                self._value(tag, length)
            else:
                raise UnreadableDataSet(
                    f"{_tag(tag)} of length {length} in encapsulated Pixel Data,"
                    " where an item of defined length or the sequence delimiter should be"
                )
            return
        # In the data set or an item: data elements.
        if tag == _ITEM_DELIMITATION and stack and stack[-1].end is None:
            self._close()
            return
        if tag >> 16 == 0xFFFE:
            raise UnreadableDataSet(f"{_tag(tag)} at byte {self._position - 8}, where a data element should be")
        if length == _UNDEFINED:
            # PS3.5 7.1.2: only SQ, UN and encapsulated Pixel Data have an undefined length.
            if tag == _PIXEL_DATA and vr in (None, b"OB", b"OW"):
                if self._encapsulated is False:
                    # PS3.5 A.4: encapsulated Pixel Data only in an encapsulated syntax.
                    raise UnreadableDataSet(
                        "the Pixel Data is encapsulated (undefined length) but the transfer syntax is native"
                    )
                self._open(_IN_FRAGMENTS, None, tag)
            elif vr is None or vr == b"SQ":
                self._open(_IN_SEQUENCE, None, tag)
            elif vr == b"UN":
                # PS3.5 6.2.2: a sequence whose items are implicit VR little endian.
                self._open(_IN_SEQUENCE, None, tag, _IMPLICIT_LITTLE)
            else:
                raise UnreadableDataSet(f"{_tag(tag)} has VR {vr.decode('ascii')} and an undefined length")
            return
        if tag == _PIXEL_DATA and length and self._encapsulated and not stack:
            # PS3.5 A.4: an encapsulated syntax's Pixel Data is encapsulated.
            raise UnreadableDataSet(
                "the Pixel Data has a defined length (native) but the transfer syntax is encapsulated"
            )
        if vr == b"SQ":
            self._open(_IN_SEQUENCE, length, tag)
            return
        if tag in self._wanted and not stack:
            if length > _KEPT_VALUE:
                self._cut.add(tag)
            self._keep(tag)
        self._value(tag, length)

    def _bound(self, length: int) -> None:
        if self._position + length > FILING_HEADER_BOUND:
            raise UnreadableDataSet(
                "the SOP Class and SOP Instance UIDs (0008,0016), (0008,0018) do not both end"
                f" within the data set's first {FILING_HEADER_BOUND} bytes"
            )

    def _value(self, tag: int, length: int) -> None:
        if self._limit is not None and self._position + length > self._limit:
            raise self._overrun(tag)
        self._skip = length
        if not length and self._kept is not None:
            self._value_ended()

    def _keep(self, tag: int) -> None:
        self._kept = bytearray()
        self._kept_for = tag

    def _value_ended(self) -> None:
        kept, self._kept = bytes(self._kept), None
        if self._kept_for == _ITEM:
            problem = _first_fragment_problem(self._first_fragment, kept)
            if problem:
                raise UnreadableDataSet(problem)
        else:
            self._keep_value(self._kept_for, kept)

    def _keep_value(self, tag: int, value: bytes) -> None:
        found = self._found
        found.setdefault(tag, value)
        self._filing_header_read = _SOP_CLASS_UID in found and _SOP_INSTANCE_UID in found

    def _open(self, kind: int, length: int | None, tag: int, encoding: _Encoding | None = None) -> None:
        if len(self._stack) >= MAX_DEPTH:
            raise UnreadableDataSet(f"sequences and items nested deeper than {MAX_DEPTH}")
        end = None if length is None else self._position + length
        limit = self._limit
        if end is not None:
            if limit is not None and end > limit:
                raise self._overrun(tag)
            limit = end
        self._stack.append(_Frame(kind, end, limit, encoding or self._encoding, tag))
        self._encoding = self._stack[-1].encoding
        self._limit = limit

    def _close(self) -> None:
        self._stack.pop()
        if self._stack:
            frame = self._stack[-1]
            self._encoding, self._limit = frame.encoding, frame.limit
        else:
            self._encoding, self._limit = self._root, None
