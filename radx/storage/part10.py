# -*- test-case-name: tests.test_storage_part10,tests.test_scu_sources -*-
"""PS3.10 files: the file meta radx writes, and the few UIDs it reads back."""

from __future__ import annotations

import re
import struct
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass


from radx.uids import is_valid_uid
from radx.uids import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    IMPLICIT_VR_LITTLE_ENDIAN,
)

# PS3.10 7.1: the preamble (128 bytes, zero here) and the "DICM" prefix.
PREAMBLE = bytes(128)
PREFIX = b"DICM"

# Where the file meta group starts: after the preamble and the prefix.
META_START = len(PREAMBLE) + len(PREFIX)
# PS3.5 7.1.2: explicit VRs whose length is 4 bytes, after two reserved bytes.
LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
# PS3.5 7.1.2: tag, VR and a 2-byte length; or, for LONG_VRS, tag, VR, 2
# reserved bytes and a 4-byte length.
_SHORT_HEADER = struct.Struct("<HH2sH")
_LONG_HEADER = struct.Struct("<HH2sHI")
_LONG_LENGTH = struct.Struct("<I")

# PS3.10 7.1: (0002,0001) File Meta Information Version, 00H 01H.
_FILE_META_VERSION = b"\x00\x01"

# PS3.5 A.5: Deflated Explicit VR Little Endian deflates the whole data set
# after the file meta; so does JPIP Referenced Deflate (1.2.840.10008.1.2.4.95).
# PS3.5 A.5: the data set is deflated in these (Deflated Explicit VR Little
# Endian, JPIP Referenced Deflate, JPIP HTJ2K Referenced Deflate).
# radx reports a data set in the wrong VR encoding itself (read_instance_header).
warnings.filterwarnings("ignore", message=r"Expected (explicit|implicit) VR, but found", module=r"pydicom\.")

DEFLATED_TRANSFER_SYNTAXES = frozenset(
    {DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, "1.2.840.10008.1.2.4.95", "1.2.840.10008.1.2.4.205"}
)

_SOP_CLASS_UID = 0x00080016
_SOP_INSTANCE_UID = 0x00080018
_STUDY_INSTANCE_UID = 0x0020000D
_SERIES_INSTANCE_UID = 0x0020000E
_HEADER_TAGS = [_SOP_CLASS_UID, _SOP_INSTANCE_UID, _STUDY_INSTANCE_UID, _SERIES_INSTANCE_UID]


def _short_element(element: int, vr: bytes, value: bytes) -> bytes:
    # PS3.5 7.1.2: explicit VR with a 2-byte length; group 0002 is little endian.
    return _SHORT_HEADER.pack(0x0002, element, vr, len(value)) + value


def _ui(element: int, uid: str) -> bytes:
    if not is_valid_uid(uid):
        raise ValueError(f"not a UID: {uid[:80]!r}")
    value = uid.encode("ascii")
    # PS3.5 6.2: UI pads to even length with one NUL.
    return _short_element(element, b"UI", value + b"\x00" * (len(value) % 2))


# PS3.5 6.2: SH and AE, 16 characters at most of the default repertoire,
# no backslash (5CH), no control characters.
_SHORT_TEXT = re.compile(r"[ -\[\]-~]{0,16}")


def _text(element: int, vr: bytes, text: str) -> bytes:
    # PS3.5 6.2: padded to even length with a space.
    if _SHORT_TEXT.fullmatch(text) is None:
        raise ValueError(f"not a valid {vr.decode()} value: {text[:80]!r}")
    value = text.encode("ascii")
    return _short_element(element, vr, value + b" " * (len(value) % 2))


def file_meta_bytes(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    source_application_entity_title: str | None,
    implementation_class_uid: str = IMPLEMENTATION_CLASS_UID,
    implementation_version_name: str | None = IMPLEMENTATION_VERSION_NAME,
    sending_application_entity_title: str | None = None,
    receiving_application_entity_title: str | None = None,
) -> bytes:
    """
    The start of a PS3.10 file: preamble, prefix and the file meta group.

    The optional (Type 3) Implementation Version Name and the Source,
    Sending and Receiving Application Entity Titles are left out when empty
    or C{None}.

    @raise ValueError: a value cannot be encoded as its VR requires.
    """
    elements = [
        # PS3.10 7.1: OB with a 4-byte length after two reserved bytes.
        _LONG_HEADER.pack(0x0002, 0x0001, b"OB", 0, len(_FILE_META_VERSION)) + _FILE_META_VERSION,
        _ui(0x0002, sop_class_uid),
        _ui(0x0003, sop_instance_uid),
        _ui(0x0010, transfer_syntax_uid),
        _ui(0x0012, implementation_class_uid),
    ]
    version_name = (implementation_version_name or "").strip(" ")
    if version_name:
        elements.append(_text(0x0013, b"SH", version_name))
    # PS3.10 7.1: (0002,0016) Source, (0002,0017) Sending and (0002,0018)
    # Receiving Application Entity Title. PS3.5 6.2: leading and trailing
    # spaces of an AE are not significant.
    for element, title in (
        (0x0016, source_application_entity_title),
        (0x0017, sending_application_entity_title),
        (0x0018, receiving_application_entity_title),
    ):
        title = (title or "").strip(" ")
        if title:
            elements.append(_text(element, b"AE", title))
    group = b"".join(elements)
    # PS3.10 7.1: (0002,0000) File Meta Information Group Length, UL.
    group_length = _short_element(0x0000, b"UL", _LONG_LENGTH.pack(len(group)))
    return PREAMBLE + PREFIX + group_length + group


class NotPart10(Exception):
    """A file that is not a PS3.10 file radx can read the file meta of; the argument says why."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def parse_file_meta(head: bytes) -> tuple[int, dict[int, bytes]]:
    """
    Parse the file meta group at the start of a PS3.10 file.

    @param head: the file's first bytes, enough to hold its meta group.
    @return: (offset of the data set, {element number: raw value}).
    @raise NotPart10: no preamble and prefix, or a malformed group.
    """
    if len(head) < META_START or head[len(PREAMBLE):META_START] != PREFIX:
        raise NotPart10("not a DICOM Part 10 file (no DICM prefix)")
    values: dict[int, bytes] = {}
    offset = META_START
    end = None
    # PS3.10 7.1: group 0002 in explicit VR little endian; it ends where
    # (0002,0000) says, or, without it, at the first element of another group.
    while end is None or offset < end:
        if offset + 8 > len(head):
            if end is None and offset == len(head):
                break  # a file of file meta only
            raise NotPart10("the file meta group is truncated")
        group, element, vr, length = _SHORT_HEADER.unpack_from(head, offset)
        if group != 0x0002:
            if end is not None:
                raise NotPart10("the file meta group length does not match its elements")
            break
        header = 8
        if vr in LONG_VRS:
            if offset + 12 > len(head):
                raise NotPart10("the file meta group is truncated")
            (length,) = _LONG_LENGTH.unpack_from(head, offset + 8)
            header = 12
        value_start = offset + header
        if value_start + length > len(head):
            raise NotPart10("the file meta group is truncated")
        value = head[value_start : value_start + length]
        values[element] = value
        if element == 0x0000 and vr == b"UL" and length == 4 and end is None:
            end = value_start + 4 + _LONG_LENGTH.unpack(value)[0]
        offset = value_start + length
    return offset, values


class UnreadableDataSet(Exception):
    """A stored data set that cannot be parsed; the argument says why."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class InstanceHeader:
    """The identifying UIDs of a stored data set, C{None} where absent."""

    sop_class_uid: str | None
    sop_instance_uid: str | None
    study_instance_uid: str | None
    series_instance_uid: str | None


def data_set_offset(fp) -> int:
    """
    The offset of the data set in a PS3.10 file, from its group length.

    @param fp: a binary file positioned at the start of the file.
    @raise UnreadableDataSet: no PS3.10 preamble, prefix and group length.
    """
    head = fp.read(len(PREAMBLE) + len(PREFIX) + 12)
    if len(head) < 144 or head[128:132] != PREFIX:
        raise UnreadableDataSet("no PS3.10 preamble and DICM prefix")
    # PS3.10 7.1: the meta starts with (0002,0000) UL, its length in bytes.
    group, element, vr, length, value = struct.unpack("<HH2sHI", head[132:144])
    if (group, element, vr, length) != (0x0002, 0x0000, b"UL", 4):
        raise UnreadableDataSet("the file meta has no group length first")
    return 144 + value


class _Inflated:
    """
    A read-only, forward-seeking file of the inflated bytes of a raw deflate
    stream, in bounded memory (pydicom's own reader inflates the whole file).
    """

    _CHUNK = 64 * 1024
    # Bytes kept behind the position: pydicom seeks back a few bytes.
    _KEEP = 64 * 1024

    def __init__(self, raw):
        self._raw = raw
        # PS3.5 A.5: deflate (RFC 1951) without a zlib header.
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._buffer = bytearray()
        self._start = 0  # offset of _buffer[0] in the inflated stream
        self._position = 0
        self._eof = False

    def _fill(self, end: int, keep_from: int) -> None:
        """Inflate up to offset C{end}, dropping what is before C{keep_from}."""
        while self._start + len(self._buffer) < end and not self._eof:
            # Bounded output per call: a small input may inflate hugely.
            data = self._inflater.unconsumed_tail or self._raw.read(self._CHUNK)
            if data:
                self._buffer += self._inflater.decompress(data, self._CHUNK)
            else:
                self._buffer += self._inflater.flush()
                self._eof = True
            drop = min(keep_from - self._start, len(self._buffer))
            if drop > 0:
                del self._buffer[:drop]
                self._start += drop

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            chunks = []
            while chunk := self.read(self._CHUNK):
                chunks.append(chunk)
            return b"".join(chunks)
        self._fill(self._position + size, self._position - self._KEEP)
        begin = self._position - self._start
        data = bytes(self._buffer[begin : begin + size])
        self._position += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 1:
            offset += self._position
        elif whence != 0:
            raise OSError("only absolute and relative seeks")
        if offset < self._start:
            raise OSError("cannot seek that far back in a deflated data set")
        self._fill(offset, offset - self._KEEP)
        self._position = min(offset, self._start + len(self._buffer))
        return self._position

    def tell(self) -> int:
        return self._position


def _string(dataset, tag: int) -> str | None:
    element = dataset.get(tag)
    if element is None or element.value is None or element.value == "":
        return None
    value = element.value
    if isinstance(value, str):
        return value
    # A value of several UIDs: kept, so that it matches nothing.
    return "\\".join(str(v) for v in value)


def read_data_set_head(raw, offset: int, transfer_syntax_uid: str, tags):
    """
    pydicom's Dataset of the top-level elements ``tags`` of the data set
    at ``offset`` in the open PS3.10 file ``raw``, encoded as
    ``transfer_syntax_uid`` (inflated as it is read, if deflated). Reading
    stops after the greatest of ``tags``, so pixel data is never read.

    @raise Exception: whatever pydicom raises on a data set it cannot parse.
    """
    # pydicom is imported only when the fast scan defers to it: a server
    # that never needs it does not carry its memory.
    from pydicom.filereader import read_dataset

    # PS3.5 A.1: implicit VR little endian; A.3: explicit VR big endian;
    # A.2, A.4, A.5: explicit VR little endian (native, encapsulated, deflated).
    implicit = transfer_syntax_uid == IMPLICIT_VR_LITTLE_ENDIAN
    little_endian = transfer_syntax_uid != EXPLICIT_VR_BIG_ENDIAN
    last = max(tags)
    raw.seek(offset)
    fp = _Inflated(raw) if transfer_syntax_uid in DEFLATED_TRANSFER_SYNTAXES else raw
    return read_dataset(
        fp,
        implicit,
        little_endian,
        # PS3.5 7.1: elements ascend by tag; stop after the last wanted.
        stop_when=lambda tag, vr, length: tag > last,
        specific_tags=list(tags),
    )


@contextmanager
def parsing_data_set():
    """
    Where pydicom parses a data set: what it raises becomes
    UnreadableDataSet, but for the file system's own errors (EIO...).
    """
    try:
        yield
    except UnreadableDataSet:
        raise
    except OSError as e:
        if e.errno is not None:
            raise  # the file system's error (EIO...), not the data set's
        raise UnreadableDataSet(f"cannot parse the data set: {e}") from e
    except Exception as e:
        raise UnreadableDataSet(f"cannot parse the data set: {type(e).__name__}: {e}") from e


def read_instance_header(path, transfer_syntax_uid: str) -> InstanceHeader:
    """
    Read the SOP Class, SOP Instance, Study and Series Instance UIDs of the
    data set in the PS3.10 file at C{path}, encoded as C{transfer_syntax_uid}.

    Reading stops after (0020,000E), so pixel data is never read.

    @raise UnreadableDataSet: the data set cannot be parsed, or lacks the
        SOP Class UID or SOP Instance UID that any composite instance has
        (PS3.3 C.12.1, Type 1).
    """
    implicit = transfer_syntax_uid == IMPLICIT_VR_LITTLE_ENDIAN
    with open(path, "rb") as raw, parsing_data_set():
        dataset = read_data_set_head(raw, data_set_offset(raw), transfer_syntax_uid, _HEADER_TAGS)
        if dataset.original_encoding[0] != implicit:
            # pydicom found the other VR encoding and read on in it; the
            # file meta would then misname the data set's transfer syntax.
            found = "implicit" if dataset.original_encoding[0] else "explicit"
            raise UnreadableDataSet(
                f"the data set is in {found} VR, not in the context's transfer syntax {transfer_syntax_uid}"
            )
        header = InstanceHeader(
            _string(dataset, _SOP_CLASS_UID),
            _string(dataset, _SOP_INSTANCE_UID),
            _string(dataset, _STUDY_INSTANCE_UID),
            _string(dataset, _SERIES_INSTANCE_UID),
        )
    if header.sop_class_uid is None:
        raise UnreadableDataSet("the data set has no SOP Class UID (0008,0016)")
    if header.sop_instance_uid is None:
        raise UnreadableDataSet("the data set has no SOP Instance UID (0008,0018)")
    return header
