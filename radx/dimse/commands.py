# -*- test-case-name: tests.test_dimse_commands -*-
"""DIMSE command sets (PS3.7 9.3, E.1): group 0000, Implicit VR Little Endian."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, Mapping, Union

from radx.uids import VERIFICATION_SOP_CLASS

# PS3.7 E.1 (Table E.1-1): the tags of the command elements radx knows.
COMMAND_GROUP_LENGTH = 0x00000000
AFFECTED_SOP_CLASS_UID = 0x00000002
REQUESTED_SOP_CLASS_UID = 0x00000003
COMMAND_FIELD = 0x00000100
MESSAGE_ID = 0x00000110
MESSAGE_ID_BEING_RESPONDED_TO = 0x00000120
MOVE_DESTINATION = 0x00000600
PRIORITY = 0x00000700
COMMAND_DATA_SET_TYPE = 0x00000800
STATUS = 0x00000900
OFFENDING_ELEMENT = 0x00000901
ERROR_COMMENT = 0x00000902
ERROR_ID = 0x00000903
AFFECTED_SOP_INSTANCE_UID = 0x00001000
REQUESTED_SOP_INSTANCE_UID = 0x00001001
EVENT_TYPE_ID = 0x00001002
ATTRIBUTE_IDENTIFIER_LIST = 0x00001005
ACTION_TYPE_ID = 0x00001008
NUMBER_OF_REMAINING_SUBOPERATIONS = 0x00001020
NUMBER_OF_COMPLETED_SUBOPERATIONS = 0x00001021
NUMBER_OF_FAILED_SUBOPERATIONS = 0x00001022
NUMBER_OF_WARNING_SUBOPERATIONS = 0x00001023
MOVE_ORIGINATOR_APPLICATION_ENTITY_TITLE = 0x00001030
MOVE_ORIGINATOR_MESSAGE_ID = 0x00001031

# PS3.7 E.1: each known tag's VR and name; any other group 0000 tag
# (the retired ones of PS3.7 E.2 included) is kept as raw bytes.
_DICTIONARY: dict[int, tuple[str, str]] = {
    COMMAND_GROUP_LENGTH: ("UL", "Command Group Length"),
    AFFECTED_SOP_CLASS_UID: ("UI", "Affected SOP Class UID"),
    REQUESTED_SOP_CLASS_UID: ("UI", "Requested SOP Class UID"),
    COMMAND_FIELD: ("US", "Command Field"),
    MESSAGE_ID: ("US", "Message ID"),
    MESSAGE_ID_BEING_RESPONDED_TO: ("US", "Message ID Being Responded To"),
    MOVE_DESTINATION: ("AE", "Move Destination"),
    PRIORITY: ("US", "Priority"),
    COMMAND_DATA_SET_TYPE: ("US", "Command Data Set Type"),
    STATUS: ("US", "Status"),
    OFFENDING_ELEMENT: ("AT", "Offending Element"),
    ERROR_COMMENT: ("LO", "Error Comment"),
    ERROR_ID: ("US", "Error ID"),
    AFFECTED_SOP_INSTANCE_UID: ("UI", "Affected SOP Instance UID"),
    REQUESTED_SOP_INSTANCE_UID: ("UI", "Requested SOP Instance UID"),
    EVENT_TYPE_ID: ("US", "Event Type ID"),
    ATTRIBUTE_IDENTIFIER_LIST: ("AT", "Attribute Identifier List"),
    ACTION_TYPE_ID: ("US", "Action Type ID"),
    NUMBER_OF_REMAINING_SUBOPERATIONS: ("US", "Number of Remaining Sub-operations"),
    NUMBER_OF_COMPLETED_SUBOPERATIONS: ("US", "Number of Completed Sub-operations"),
    NUMBER_OF_FAILED_SUBOPERATIONS: ("US", "Number of Failed Sub-operations"),
    NUMBER_OF_WARNING_SUBOPERATIONS: ("US", "Number of Warning Sub-operations"),
    MOVE_ORIGINATOR_APPLICATION_ENTITY_TITLE: (
        "AE",
        "Move Originator Application Entity Title",
    ),
    MOVE_ORIGINATOR_MESSAGE_ID: ("US", "Move Originator Message ID"),
}

# PS3.5 6.2 (Table 6.2-1): maximum lengths, in characters, of the string VRs.
_MAXIMUM_LENGTH = {"UI": 64, "AE": 16, "LO": 64, "CS": 16}

# PS3.7 E.1: values of (0000,0100) Command Field.
C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
C_GET_RQ = 0x0010
C_GET_RSP = 0x8010
C_FIND_RQ = 0x0020
C_FIND_RSP = 0x8020
C_MOVE_RQ = 0x0021
C_MOVE_RSP = 0x8021
C_ECHO_RQ = 0x0030
C_ECHO_RSP = 0x8030
N_EVENT_REPORT_RQ = 0x0100
N_EVENT_REPORT_RSP = 0x8100
N_GET_RQ = 0x0110
N_GET_RSP = 0x8110
N_SET_RQ = 0x0120
N_SET_RSP = 0x8120
N_ACTION_RQ = 0x0130
N_ACTION_RSP = 0x8130
N_CREATE_RQ = 0x0140
N_CREATE_RSP = 0x8140
N_DELETE_RQ = 0x0150
N_DELETE_RSP = 0x8150
C_CANCEL_RQ = 0x0FFF

COMMAND_FIELD_NAMES: dict[int, str] = {
    C_STORE_RQ: "C-STORE-RQ",
    C_STORE_RSP: "C-STORE-RSP",
    C_GET_RQ: "C-GET-RQ",
    C_GET_RSP: "C-GET-RSP",
    C_FIND_RQ: "C-FIND-RQ",
    C_FIND_RSP: "C-FIND-RSP",
    C_MOVE_RQ: "C-MOVE-RQ",
    C_MOVE_RSP: "C-MOVE-RSP",
    C_ECHO_RQ: "C-ECHO-RQ",
    C_ECHO_RSP: "C-ECHO-RSP",
    N_EVENT_REPORT_RQ: "N-EVENT-REPORT-RQ",
    N_EVENT_REPORT_RSP: "N-EVENT-REPORT-RSP",
    N_GET_RQ: "N-GET-RQ",
    N_GET_RSP: "N-GET-RSP",
    N_SET_RQ: "N-SET-RQ",
    N_SET_RSP: "N-SET-RSP",
    N_ACTION_RQ: "N-ACTION-RQ",
    N_ACTION_RSP: "N-ACTION-RSP",
    N_CREATE_RQ: "N-CREATE-RQ",
    N_CREATE_RSP: "N-CREATE-RSP",
    N_DELETE_RQ: "N-DELETE-RQ",
    N_DELETE_RSP: "N-DELETE-RSP",
    C_CANCEL_RQ: "C-CANCEL-RQ",
}

# PS3.7 9.3: a response's Command Field is its request's with bit 15 set.
RESPONSE_BIT = 0x8000

# PS3.7 E.1: (0000,0800) 0101H means no data set; any other value means one
# follows.  radx writes 0001H for "present", as DCMTK and pynetdicom do.
NO_DATA_SET = 0x0101
DATA_SET_PRESENT = 0x0001

# PS3.7 9.3.1.1: values of (0000,0700) Priority.
PRIORITY_MEDIUM = 0x0000
PRIORITY_HIGH = 0x0001
PRIORITY_LOW = 0x0002

# PS3.5 7.1.2: tag group, tag element, 32-bit value length (Implicit VR LE).
_HEADER = struct.Struct("<HHI")
_US = struct.Struct("<H")
_UL = struct.Struct("<I")
# A whole US element: (0000,eeee), length 2, the value.
_US_ELEMENT = struct.Struct("<HHIH")
# Each known tag's VR alone, for the common cases decoded and encoded in line.
_VRS: dict[int, str] = {tag: vr for tag, (vr, _) in _DICTIONARY.items()}

# A decoded value: US/UL int, UI/AE/LO str, AT tuple of tags, else bytes.
Value = Union[int, str, bytes, tuple, None]


class DIMSEDecodeError(Exception):
    """
    A command set radx cannot decode, or one that lacks what its command needs.

    @ivar message: what is wrong, naming the element where there is one.
    @ivar elements: the decoded elements when the command set itself was
        well-formed but did not make a valid command (a required element is
        missing, say), else L{None}.  With them a caller can still answer
        with a failure status: see L{command_field}, L{message_id} and
        L{has_data_set}.
    """

    def __init__(self, message: str, elements: Mapping[int, Value] | None = None):
        super().__init__(message)
        self.message = message
        self.elements = elements

    @property
    def command_field(self) -> int | None:
        if self.elements is None:
            return None
        value = self.elements.get(COMMAND_FIELD)
        return value if isinstance(value, int) else None

    @property
    def message_id(self) -> int | None:
        if self.elements is None:
            return None
        value = self.elements.get(MESSAGE_ID)
        return value if isinstance(value, int) else None

    @property
    def has_data_set(self) -> bool | None:
        """Whether a data set follows, or L{None} when that is unknown."""
        if self.elements is None:
            return None
        return has_data_set(self.elements)


def tag_name(tag: int) -> str:
    """Format a command tag for a message: C{(0000,0110) Message ID}."""
    name = _DICTIONARY.get(tag, (None, None))[1]
    text = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    return f"{text} {name}" if name else text


def _decode_value(tag: int, raw: bytes) -> Value:
    """Decode one element's value by the VR PS3.7 E.1 gives its tag."""
    vr = _DICTIONARY.get(tag, (None, None))[0]
    if vr is None:
        return raw
    if not raw and vr in ("US", "UL", "AT"):
        return None
    if vr == "US":
        if len(raw) != 2:
            raise DIMSEDecodeError(f"{tag_name(tag)} is US: {len(raw)} bytes, not 2")
        return _US.unpack(raw)[0]
    if vr == "UL":
        if len(raw) != 4:
            raise DIMSEDecodeError(f"{tag_name(tag)} is UL: {len(raw)} bytes, not 4")
        return _UL.unpack(raw)[0]
    if vr == "AT":
        # PS3.5 6.2: AT is a pair of US, group then element, VM 1-n.
        if len(raw) % 4:
            raise DIMSEDecodeError(
                f"{tag_name(tag)} is AT: {len(raw)} bytes, not a multiple of 4"
            )
        words = struct.unpack(f"<{len(raw) // 2}H", raw)
        return tuple((words[i] << 16) | words[i + 1] for i in range(0, len(words), 2))
    try:
        # PS3.7 6.3.1: a command set has no Specific Character Set, so its
        # strings are in the default repertoire.
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise DIMSEDecodeError(
            f"{tag_name(tag)} is not in the default character repertoire"
        ) from None
    if vr == "UI":
        # PS3.5 9.1: a UID is padded with one NUL; accept a space too.
        return text.rstrip("\0 ")
    # PS3.5 6.2: leading and trailing spaces of AE, LO and CS are insignificant.
    return text.rstrip("\0 ").lstrip(" ")


def decode_command_set(data: bytes | bytearray | memoryview) -> dict[int, Value]:
    """
    Decode a command set: the group 0000 elements of a DIMSE message.

    @param data: the whole command set, Implicit VR Little Endian (PS3.7 6.3.1).
    @return: the elements by tag (C{0xGGGGEEEE}), (0000,0000) included.
        Strings lose their padding; US and UL are L{int}; AT is a L{tuple}
        of tags; an element whose tag PS3.7 E.1 does not define keeps its
        raw L{bytes}; a zero-length US, UL or AT is L{None}.
    @raise DIMSEDecodeError: if C{data} is not a command set.
    """
    data = bytes(data)
    end = len(data)
    elements: dict[int, Value] = {}
    offset = 0
    while offset < end:
        if end - offset < _HEADER.size:
            raise DIMSEDecodeError(
                f"command set truncated: {end - offset} bytes at offset {offset} "
                f"are too few for an element header"
            )
        group, element, length = _HEADER.unpack_from(data, offset)
        tag = (group << 16) | element
        if group != 0x0000:
            # PS3.7 6.3.1: a command set holds group 0000 elements only.
            raise DIMSEDecodeError(
                f"element {tag_name(tag)} at offset {offset} is outside group 0000"
            )
        offset += _HEADER.size
        if length > end - offset:
            raise DIMSEDecodeError(
                f"command set truncated: {tag_name(tag)} has a value length of "
                f"{length} but {end - offset} bytes remain"
            )
        if tag in elements:
            raise DIMSEDecodeError(f"{tag_name(tag)} appears twice")
        if not elements and tag != COMMAND_GROUP_LENGTH:
            # PS3.7 E.1: (0000,0000) comes first and counts the bytes after it.
            raise DIMSEDecodeError(
                f"{tag_name(COMMAND_GROUP_LENGTH)} is missing: the command "
                f"set starts with {tag_name(tag)}"
            )
        # US and UI, most of any command, in line; the rest, and any error,
        # through _decode_value.
        vr = _VRS.get(tag)
        if vr == "US" and length == 2:
            (value,) = _US.unpack_from(data, offset)
        elif vr == "UI" and (raw := data[offset : offset + length]).isascii():
            # PS3.5 9.1: a UID is padded with one NUL; accept a space too.
            value = raw.decode("ascii").rstrip("\0 ")
        else:
            value = _decode_value(tag, data[offset : offset + length])
        offset += length
        if not elements:
            if value != end - offset:
                raise DIMSEDecodeError(
                    f"{tag_name(COMMAND_GROUP_LENGTH)} is {value} but "
                    f"{end - offset} bytes follow it"
                )
        elements[tag] = value
    if not elements:
        raise DIMSEDecodeError(
            f"command set is empty: {tag_name(COMMAND_GROUP_LENGTH)} is missing"
        )
    if not isinstance(elements.get(COMMAND_FIELD), int):
        # PS3.7 E.1: every command has a Command Field.
        raise DIMSEDecodeError(f"{tag_name(COMMAND_FIELD)} is missing", elements)
    return elements


def _encode_value(tag: int, value: Value) -> bytes:
    """Encode one element's value by the VR PS3.7 E.1 gives its tag."""
    vr = _DICTIONARY.get(tag, (None, None))[0]
    if vr is None:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"{tag_name(tag)} is not a known tag: give its bytes")
        raw = bytes(value)
        if len(raw) % 2:
            # PS3.5 7.1.1: value lengths are even.
            raise ValueError(f"{tag_name(tag)} has an odd length: {len(raw)}")
        return raw
    try:
        if vr == "US":
            return _US.pack(value)
        if vr == "UL":
            return _UL.pack(value)
    except struct.error as e:
        raise ValueError(f"{tag_name(tag)} cannot be {vr} {value!r}: {e}") from None
    if vr == "AT":
        tags = (value,) if isinstance(value, int) else tuple(value)  # type: ignore
        for t in tags:
            if not 0 <= t <= 0xFFFFFFFF:
                raise ValueError(f"{tag_name(tag)}: {t!r} is not a tag")
        return b"".join(struct.pack("<HH", t >> 16, t & 0xFFFF) for t in tags)
    if not isinstance(value, str):
        raise TypeError(f"{tag_name(tag)} is {vr}: give a str, not {value!r}")
    if len(value) > _MAXIMUM_LENGTH[vr]:
        raise ValueError(
            f"{tag_name(tag)} is {vr}: at most {_MAXIMUM_LENGTH[vr]} characters, "
            f"not {len(value)}"
        )
    raw = value.encode("ascii")
    if len(raw) % 2:
        # PS3.5 9.1: UIDs are padded with one NUL; PS3.5 6.2: others, a space.
        raw += b"\0" if vr == "UI" else b" "
    return raw


def encode_command_set(elements: Mapping[int, Value]) -> bytes:
    """
    Encode a command set in Implicit VR Little Endian (PS3.7 6.3.1).

    Elements are written in ascending tag order (PS3.5 7.1), after a
    computed (0000,0000) Command Group Length; any given value for it is
    ignored, and so are elements whose value is L{None}.

    @raise ValueError: for a tag outside group 0000 or a value its VR cannot
        hold.
    @raise TypeError: for a value of the wrong type.
    """
    parts = []
    for tag in sorted(elements):
        if tag == COMMAND_GROUP_LENGTH:
            continue
        if not 0 < tag <= 0xFFFF:
            raise ValueError(f"{tag_name(tag)} is outside group 0000")
        value = elements[tag]
        if value is None:
            continue
        if type(value) is int and 0 <= value <= 0xFFFF and _VRS.get(tag) == "US":
            parts.append(_US_ELEMENT.pack(0x0000, tag, 2, value))
            continue
        raw = _encode_value(tag, value)
        parts.append(_HEADER.pack(0x0000, tag, len(raw)))
        parts.append(raw)
    body = b"".join(parts)
    return _HEADER.pack(0x0000, 0x0000, 4) + _UL.pack(len(body)) + body


def _get(elements: Mapping[int, Value], tag: int, kind: type, required: bool):
    """Return an element's value, L{None} when absent or empty."""
    value = elements.get(tag)
    if value is None or value == "":
        if required:
            raise DIMSEDecodeError(f"{tag_name(tag)} is missing", elements)
        return None
    if not isinstance(value, kind):
        raise DIMSEDecodeError(f"{tag_name(tag)} has the wrong type", elements)
    return value


def _check_command(
    elements: Mapping[int, Value], command_field: int, with_data_set: bool
) -> None:
    """Check the Command Field and that a data set follows iff it should."""
    name = COMMAND_FIELD_NAMES[command_field]
    if elements.get(COMMAND_FIELD) != command_field:
        raise DIMSEDecodeError(
            f"{tag_name(COMMAND_FIELD)} is not {command_field:#06x} ({name})",
            elements,
        )
    data_set_type = _get(elements, COMMAND_DATA_SET_TYPE, int, True)
    if (data_set_type != NO_DATA_SET) != with_data_set:
        # PS3.7 9.3.1.1: a C-STORE-RQ carries a data set; PS3.7 9.3.1.2,
        # 9.3.5.1, 9.3.5.2: its response and C-ECHO messages carry none.
        raise DIMSEDecodeError(
            f"{name} {'without' if with_data_set else 'with'} a data set: "
            f"{tag_name(COMMAND_DATA_SET_TYPE)} is {data_set_type:#06x}",
            elements,
        )


def _error_comment(text: str | None) -> str | None:
    """Make text fit (0000,0902): LO, at most 64 characters (PS3.5 6.2)."""
    if text is None:
        return None
    # PS3.5 6.2: LO is default repertoire without backslash or controls.
    text = "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in text)
    return text[:64].strip(" ") or None


class _Command:
    """What the typed messages share."""

    command_field: ClassVar[int]
    _has_data_set: ClassVar[bool] = False

    def to_elements(self) -> dict[int, Value]:
        raise NotImplementedError()

    def encode(self) -> bytes:
        """Encode this command set (PS3.7 6.3.1)."""
        return encode_command_set(self.to_elements())


@dataclass(frozen=True)
class CEchoRQ(_Command):
    """A C-ECHO-RQ command (PS3.7 9.3.5.1)."""

    message_id: int
    affected_sop_class_uid: str = VERIFICATION_SOP_CLASS

    command_field: ClassVar[int] = C_ECHO_RQ

    def to_elements(self) -> dict[int, Value]:
        return {
            COMMAND_FIELD: C_ECHO_RQ,
            MESSAGE_ID: self.message_id,
            COMMAND_DATA_SET_TYPE: NO_DATA_SET,
            AFFECTED_SOP_CLASS_UID: self.affected_sop_class_uid,
        }

    @classmethod
    def from_elements(cls, elements: Mapping[int, Value]) -> CEchoRQ:
        _check_command(elements, C_ECHO_RQ, False)
        return cls(
            message_id=_get(elements, MESSAGE_ID, int, True),
            affected_sop_class_uid=_get(elements, AFFECTED_SOP_CLASS_UID, str, True),
        )


@dataclass(frozen=True)
class CEchoRSP(_Command):
    """
    A C-ECHO-RSP command (PS3.7 9.3.5.2).

    Its Affected SOP Class UID is optional there: L{None} leaves it out.
    """

    message_id_being_responded_to: int
    status: int = 0x0000
    affected_sop_class_uid: str | None = VERIFICATION_SOP_CLASS

    command_field: ClassVar[int] = C_ECHO_RSP

    def to_elements(self) -> dict[int, Value]:
        return {
            COMMAND_FIELD: C_ECHO_RSP,
            MESSAGE_ID_BEING_RESPONDED_TO: self.message_id_being_responded_to,
            COMMAND_DATA_SET_TYPE: NO_DATA_SET,
            STATUS: self.status,
            AFFECTED_SOP_CLASS_UID: self.affected_sop_class_uid,
        }

    @classmethod
    def from_elements(cls, elements: Mapping[int, Value]) -> CEchoRSP:
        _check_command(elements, C_ECHO_RSP, False)
        return cls(
            message_id_being_responded_to=_get(
                elements, MESSAGE_ID_BEING_RESPONDED_TO, int, True
            ),
            status=_get(elements, STATUS, int, True),
            affected_sop_class_uid=_get(elements, AFFECTED_SOP_CLASS_UID, str, False),
        )


@dataclass(frozen=True)
class CStoreRQ(_Command):
    """A C-STORE-RQ command (PS3.7 9.3.1.1); a data set always follows it."""

    message_id: int
    affected_sop_class_uid: str
    affected_sop_instance_uid: str
    priority: int = PRIORITY_MEDIUM
    move_originator_application_entity_title: str | None = None
    move_originator_message_id: int | None = None

    command_field: ClassVar[int] = C_STORE_RQ
    _has_data_set: ClassVar[bool] = True

    def to_elements(self) -> dict[int, Value]:
        return {
            COMMAND_FIELD: C_STORE_RQ,
            MESSAGE_ID: self.message_id,
            PRIORITY: self.priority,
            COMMAND_DATA_SET_TYPE: DATA_SET_PRESENT,
            AFFECTED_SOP_CLASS_UID: self.affected_sop_class_uid,
            AFFECTED_SOP_INSTANCE_UID: self.affected_sop_instance_uid,
            MOVE_ORIGINATOR_APPLICATION_ENTITY_TITLE: (
                self.move_originator_application_entity_title
            ),
            MOVE_ORIGINATOR_MESSAGE_ID: self.move_originator_message_id,
        }

    @classmethod
    def from_elements(cls, elements: Mapping[int, Value]) -> CStoreRQ:
        _check_command(elements, C_STORE_RQ, True)
        return cls(
            message_id=_get(elements, MESSAGE_ID, int, True),
            affected_sop_class_uid=_get(elements, AFFECTED_SOP_CLASS_UID, str, True),
            affected_sop_instance_uid=_get(
                elements, AFFECTED_SOP_INSTANCE_UID, str, True
            ),
            priority=_get(elements, PRIORITY, int, True),
            move_originator_application_entity_title=_get(
                elements, MOVE_ORIGINATOR_APPLICATION_ENTITY_TITLE, str, False
            ),
            move_originator_message_id=_get(
                elements, MOVE_ORIGINATOR_MESSAGE_ID, int, False
            ),
        )


@dataclass(frozen=True)
class CStoreRSP(_Command):
    """
    A C-STORE-RSP command (PS3.7 9.3.1.2).

    Its Affected SOP Class and Instance UIDs are optional there: L{None}
    leaves them out.  An error comment is cut to what (0000,0902) holds.
    """

    message_id_being_responded_to: int
    status: int
    affected_sop_class_uid: str | None
    affected_sop_instance_uid: str | None
    error_comment: str | None = None
    offending_element: tuple[int, ...] | None = None

    command_field: ClassVar[int] = C_STORE_RSP

    def __post_init__(self) -> None:
        object.__setattr__(self, "error_comment", _error_comment(self.error_comment))
        if isinstance(self.offending_element, int):
            object.__setattr__(self, "offending_element", (self.offending_element,))

    def to_elements(self) -> dict[int, Value]:
        return {
            COMMAND_FIELD: C_STORE_RSP,
            MESSAGE_ID_BEING_RESPONDED_TO: self.message_id_being_responded_to,
            COMMAND_DATA_SET_TYPE: NO_DATA_SET,
            STATUS: self.status,
            AFFECTED_SOP_CLASS_UID: self.affected_sop_class_uid,
            AFFECTED_SOP_INSTANCE_UID: self.affected_sop_instance_uid,
            OFFENDING_ELEMENT: self.offending_element,
            ERROR_COMMENT: self.error_comment,
        }

    @classmethod
    def from_elements(cls, elements: Mapping[int, Value]) -> CStoreRSP:
        _check_command(elements, C_STORE_RSP, False)
        return cls(
            message_id_being_responded_to=_get(
                elements, MESSAGE_ID_BEING_RESPONDED_TO, int, True
            ),
            status=_get(elements, STATUS, int, True),
            affected_sop_class_uid=_get(elements, AFFECTED_SOP_CLASS_UID, str, False),
            affected_sop_instance_uid=_get(
                elements, AFFECTED_SOP_INSTANCE_UID, str, False
            ),
            error_comment=_get(elements, ERROR_COMMENT, str, False),
            offending_element=_get(elements, OFFENDING_ELEMENT, tuple, False),
        )


@dataclass(frozen=True)
class UnknownCommand(_Command):
    """
    A command radx does not implement: a request of it is answered with
    0211H Unrecognized Operation (PS3.7 C.5), see L{encode_response}.
    """

    command_field: int  # type: ignore[misc]
    message_id: int | None
    elements: Mapping[int, Value]

    @property
    def name(self) -> str:
        return COMMAND_FIELD_NAMES.get(self.command_field, f"{self.command_field:#06x}")

    @property
    def expects_response(self) -> bool:
        """
        Whether this is a request that gets a response: PS3.7 9.3 gives one
        to every request but C-CANCEL-RQ (PS3.7 9.3.2.3).
        """
        return not self.command_field & RESPONSE_BIT and (
            self.command_field != C_CANCEL_RQ
        )

    def to_elements(self) -> dict[int, Value]:
        return dict(self.elements)

    @classmethod
    def from_elements(cls, elements: Mapping[int, Value]) -> UnknownCommand:
        return cls(
            command_field=_get(elements, COMMAND_FIELD, int, True),
            message_id=_get(elements, MESSAGE_ID, int, False),
            elements=dict(elements),
        )


Command = Union[CEchoRQ, CEchoRSP, CStoreRQ, CStoreRSP, UnknownCommand]

_COMMAND_CLASSES: dict[int, type] = {
    C_ECHO_RQ: CEchoRQ,
    C_ECHO_RSP: CEchoRSP,
    C_STORE_RQ: CStoreRQ,
    C_STORE_RSP: CStoreRSP,
}


def command_from_elements(elements: Mapping[int, Value]) -> Command:
    """
    Make the typed command of decoded elements.

    @raise DIMSEDecodeError: if a command radx knows lacks an element it
        requires, or has a data set where it should not (or none where it
        should); the error carries the elements.
    """
    command_field = _get(elements, COMMAND_FIELD, int, True)
    cls = _COMMAND_CLASSES.get(command_field, UnknownCommand)
    return cls.from_elements(elements)  # type: ignore[attr-defined, no-any-return]


def decode_command(data: bytes | bytearray | memoryview) -> Command:
    """
    Decode a command set to its typed command.

    @raise DIMSEDecodeError: see L{decode_command_set} and
        L{command_from_elements}.
    """
    return command_from_elements(decode_command_set(data))


def has_data_set(command: Mapping[int, Value] | Command) -> bool:
    """
    Whether a data set follows a command (PS3.7 E.1: (0000,0800) is not 0101H).

    @param command: decoded elements, or a command.
    """
    if isinstance(command, UnknownCommand):
        command = command.elements
    if isinstance(command, _Command):
        return command._has_data_set
    value = command.get(COMMAND_DATA_SET_TYPE)
    return value is not None and value != NO_DATA_SET


def encode_response(
    command_field_of_request: int,
    message_id: int,
    status: int,
    affected_sop_class_uid: str | None = None,
    *,
    error_comment: str | None = None,
) -> bytes:
    """
    Encode a response, with no data set, to a request radx does not
    implement, typically with 0211H Unrecognized Operation (PS3.7 C.5).

    @param command_field_of_request: the request's (0000,0100).
    @param message_id: the request's (0000,0110), which becomes (0000,0120).
    @raise ValueError: if the command field is not that of a request that
        has a response.
    """
    if command_field_of_request & RESPONSE_BIT:
        raise ValueError(f"{command_field_of_request:#06x} is a response")
    if command_field_of_request == C_CANCEL_RQ:
        # PS3.7 9.3.2.3: C-CANCEL-RQ has no response.
        raise ValueError("C-CANCEL-RQ has no response")
    return encode_command_set(
        {
            # PS3.7 9.3: a response's Command Field is its request's | 8000H.
            COMMAND_FIELD: command_field_of_request | RESPONSE_BIT,
            MESSAGE_ID_BEING_RESPONDED_TO: message_id,
            COMMAND_DATA_SET_TYPE: NO_DATA_SET,
            STATUS: status,
            AFFECTED_SOP_CLASS_UID: affected_sop_class_uid,
            ERROR_COMMENT: _error_comment(error_comment),
        }
    )
