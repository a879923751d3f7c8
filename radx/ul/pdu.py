# -*- test-case-name: tests.test_pdu -*-
"""Codec for the seven DICOM upper layer PDUs (PS3.8 9.3), their items and sub-items (PS3.8 D.1, PS3.7 D.3.3).

Pure: standard library only, no I/O.  Every PDU and item is a frozen
dataclass with ``encode()`` returning its complete wire bytes;
:func:`decode_pdu` turns the variable part of a received PDU (everything after
its 6-byte header) back into one, raising :class:`PDUDecodeError` on anything
malformed.  The one exception, :class:`ReceivedPDataTF`, is a received
P-DATA-TF whose items are left as tuples, for the data path.

Rules on receipt (PS3.8 9.3.1 and the field tables of 9.3.2 to 9.3.8):

* reserved fields are not tested;
* items and sub-items of unrecognized types are ignored and skipped;
* an item type this module knows, found where it is not allowed (a 0x21
  presentation context item in an A-ASSOCIATE-RQ, say), is an
  unexpected-PDU-parameter;
* the order of items is not checked (9.3.1 says they appear in increasing
  order of type, 9.3.2.3 says no significance is placed on the order of
  user data sub-items): being strict here would only reject working peers.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, Union

__all__ = [
    "AbortReason",
    "AbortSource",
    "ACSERejectReason",
    "PresentationRejectReason",
    "REJECT_REASONS",
    "RejectResult",
    "RejectSource",
    "UserRejectReason",
    "PDUDecodeError",
    "ApplicationContextItem",
    "PresentationContextItemRQ",
    "PresentationContextItemAC",
    "MaximumLengthSubItem",
    "ImplementationClassUIDSubItem",
    "AsynchronousOperationsWindowSubItem",
    "SCPSCURoleSelectionSubItem",
    "ImplementationVersionNameSubItem",
    "SOPClassExtendedNegotiationSubItem",
    "SOPClassCommonExtendedNegotiationSubItem",
    "UserIdentityRQSubItem",
    "UserIdentityACSubItem",
    "UserInformationItem",
    "PresentationDataValueItem",
    "AAssociateRQ",
    "AAssociateAC",
    "AAssociateRJ",
    "PDataTF",
    "ReceivedPDataTF",
    "EncodedPDUs",
    "AReleaseRQ",
    "AReleaseRP",
    "AAbort",
    "PDU",
    "PDU_TYPES",
    "UserDataSubItem",
    "decode_pdu",
    "decode_pdv_values",
    "pdv_values",
]


class AbortReason(enum.IntEnum):
    """Reason/Diag. of an A-ABORT PDU whose source is the service-provider (PS3.8 9.3.8, Table 9-26)."""

    REASON_NOT_SPECIFIED = 0
    UNRECOGNIZED_PDU = 1
    UNEXPECTED_PDU = 2
    # 3 is reserved
    UNRECOGNIZED_PDU_PARAMETER = 4
    UNEXPECTED_PDU_PARAMETER = 5
    INVALID_PDU_PARAMETER_VALUE = 6


class AbortSource(enum.IntEnum):
    """Source of an A-ABORT PDU (PS3.8 9.3.8, Table 9-26); 1 is reserved."""

    SERVICE_USER = 0
    SERVICE_PROVIDER = 2


class RejectResult(enum.IntEnum):
    """Result of an A-ASSOCIATE-RJ PDU (PS3.8 9.3.4, Table 9-21)."""

    REJECTED_PERMANENT = 1
    REJECTED_TRANSIENT = 2


class RejectSource(enum.IntEnum):
    """Source of an A-ASSOCIATE-RJ PDU (PS3.8 9.3.4, Table 9-21)."""

    SERVICE_USER = 1
    SERVICE_PROVIDER_ACSE = 2
    SERVICE_PROVIDER_PRESENTATION = 3


class UserRejectReason(enum.IntEnum):
    """Reason/Diag. of an A-ASSOCIATE-RJ from the service-user (PS3.8 9.3.4, Table 9-21); 4-6, 8-10 reserved."""

    NO_REASON_GIVEN = 1
    APPLICATION_CONTEXT_NAME_NOT_SUPPORTED = 2
    CALLING_AE_TITLE_NOT_RECOGNIZED = 3
    CALLED_AE_TITLE_NOT_RECOGNIZED = 7


class ACSERejectReason(enum.IntEnum):
    """Reason/Diag. of an A-ASSOCIATE-RJ from the service-provider, ACSE related (PS3.8 9.3.4, Table 9-21)."""

    NO_REASON_GIVEN = 1
    PROTOCOL_VERSION_NOT_SUPPORTED = 2


class PresentationRejectReason(enum.IntEnum):
    """Reason/Diag. of an A-ASSOCIATE-RJ from the service-provider, presentation related (PS3.8 9.3.4, Table 9-21)."""

    TEMPORARY_CONGESTION = 1
    LOCAL_LIMIT_EXCEEDED = 2


# The enumeration of an A-ASSOCIATE-RJ's Reason/Diag., by its source.
REJECT_REASONS: dict[RejectSource, type[enum.IntEnum]] = {
    RejectSource.SERVICE_USER: UserRejectReason,
    RejectSource.SERVICE_PROVIDER_ACSE: ACSERejectReason,
    RejectSource.SERVICE_PROVIDER_PRESENTATION: PresentationRejectReason,
}


def _member(enumeration, value: int):
    """``value`` as a member of ``enumeration``, or the plain number when it names none (a reserved value)."""
    try:
        return enumeration(value)
    except ValueError:
        return value


class PDUDecodeError(Exception):
    """The peer sent something malformed.

    ``message`` says precisely what was wrong (it becomes a log line);
    ``reason`` is the Reason/Diag. to put in the A-ABORT (source 2,
    service-provider) sent in answer.
    """

    def __init__(
        self,
        message: str,
        reason: AbortReason = AbortReason.INVALID_PDU_PARAMETER_VALUE,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        # Set by PDUReader.feed: the valid PDUs that arrived before this one.
        self.pdus_before: list = []

    def __repr__(self) -> str:
        return f"PDUDecodeError({self.message!r}, reason={getattr(self.reason, 'name', self.reason)})"


# ---------------------------------------------------------------------------
# Wire helpers.  PS3.8 9.3.1: all PDU and item header fields are big endian.

_PDU_HEADER = struct.Struct(">BBL")  # PDU-type, reserved, PDU-length
_ITEM_HEADER = struct.Struct(">BBH")  # Item-type, reserved, Item-length
_PDV_HEADER = struct.Struct(">LBB")  # Item-length, context ID, message control header
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">L")

_AE_TITLE_LENGTH = 16  # PS3.8 9.3.2: AE titles are 16 characters
_ASSOCIATE_FIXED_LENGTH = 68  # PS3.8 9.3.2: bytes 7-74 precede the variable items

_INVALID = AbortReason.INVALID_PDU_PARAMETER_VALUE
_UNEXPECTED = AbortReason.UNEXPECTED_PDU_PARAMETER


def _pdu(pdu_type: int, body: bytes) -> bytes:
    """Prefix ``body`` with the 6-byte PDU header."""
    if len(body) > 0xFFFFFFFF:
        raise ValueError(f"PDU 0x{pdu_type:02X} body is {len(body)} bytes, over the 32-bit PDU-length")
    return _PDU_HEADER.pack(pdu_type, 0, len(body)) + body


def _item(item_type: int, value: bytes, second_byte: int = 0) -> bytes:
    """Prefix ``value`` with the 4-byte item header (type, reserved or version, 16-bit length)."""
    if len(value) > 0xFFFF:
        raise ValueError(
            f"item 0x{item_type:02X} value is {len(value)} bytes; an Item-length is 16 bits (at most 65535)"
        )
    return _ITEM_HEADER.pack(item_type, second_byte, len(value)) + value


def _ascii(text: str, what: str) -> bytes:
    try:
        return text.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"{what} {text!r} is not ASCII") from None


def _counted(raw: bytes, what: str) -> bytes:
    """``raw`` prefixed with its 16-bit length, as in the PS3.7 D.3.3 sub-items."""
    if len(raw) > 0xFFFF:
        raise ValueError(f"{what} is {len(raw)} bytes; its length field is 16 bits")
    return _U16.pack(len(raw)) + raw


def _encode_ae_title(title: str, what: str) -> bytes:
    raw = _ascii(title, what)
    if len(raw) > _AE_TITLE_LENGTH:
        raise ValueError(f"{what} {title!r} is {len(raw)} characters; an AE title is at most 16")
    # PS3.8 9.3.2: 16 characters, spaces (20H) non-significant
    return raw.ljust(_AE_TITLE_LENGTH, b" ")


def _text(raw: bytes | memoryview, what: str) -> str:
    data = bytes(raw)
    try:
        return data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise PDUDecodeError(
            f"{what} is not ASCII: byte 0x{data[exc.start]:02X} at position {exc.start} of {data!r}"
        ) from None


def _uid(raw: bytes | memoryview, what: str) -> str:
    # PS3.8 Annex F: UIDs are not padded, but some peers pad to even length with NUL or space
    return _text(raw, what).rstrip("\x00 ")


def _decode_ae_title(raw: bytes | memoryview, what: str) -> str:
    # PS3.8 9.3.2: leading and trailing spaces (20H) are non-significant
    return _text(raw, what).strip(" ")


def _need(value: memoryview, length: int, what: str) -> None:
    if len(value) < length:
        raise PDUDecodeError(f"{what} is {len(value)} bytes, too short: at least {length} needed")


def _exact(value: memoryview, length: int, what: str) -> None:
    if len(value) != length:
        raise PDUDecodeError(f"{what} has item-length {len(value)}, expected exactly {length}")


def _items(value: memoryview, where: str) -> Iterator[tuple[int, int, int, memoryview]]:
    """Walk the items in ``value``: yield (offset, item type, second header byte, item value).

    PS3.8 9.3.1: an item is a 4-byte header (type, reserved, 16-bit length) and its value.
    """
    end = len(value)
    offset = 0
    unpack = _ITEM_HEADER.unpack_from
    while offset < end:
        if end - offset < 4:
            raise PDUDecodeError(
                f"truncated item header at byte {offset} of {where}: {end - offset} bytes left, an item header is 4"
            )
        item_type, second, length = unpack(value, offset)
        value_end = offset + 4 + length
        if value_end > end:
            raise PDUDecodeError(
                f"item 0x{item_type:02X} at byte {offset} of {where} declares item-length {length}"
                f" but only {end - offset - 4} bytes remain in its parent"
            )
        yield offset, item_type, second, value[offset + 4 : value_end]
        offset = value_end


def _misplaced(item_type: int, offset: int, where: str) -> PDUDecodeError:
    return PDUDecodeError(
        f"item 0x{item_type:02X} at byte {offset} of {where} is not allowed there",
        _UNEXPECTED,
    )


# ---------------------------------------------------------------------------
# Items of the A-ASSOCIATE-RQ/AC variable field


@dataclass(frozen=True, slots=True)
class ApplicationContextItem:
    """Application Context Item (PS3.8 9.3.2.1)."""

    ITEM_TYPE: ClassVar[int] = 0x10

    name: str

    def encode(self) -> bytes:
        return _item(0x10, _ascii(self.name, "application context name"))


@dataclass(frozen=True, slots=True)
class PresentationContextItemRQ:
    """Presentation Context Item of an A-ASSOCIATE-RQ (PS3.8 9.3.2.2), with its abstract and transfer syntax sub-items."""

    ITEM_TYPE: ClassVar[int] = 0x20

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]

    def encode(self) -> bytes:
        # PS3.8 9.3.2.2: context ID, three reserved bytes, then sub-items
        parts = [bytes((self.context_id, 0, 0, 0))]
        # PS3.8 9.3.2.2.1: one Abstract Syntax Sub-Item (30H)
        parts.append(_item(0x30, _ascii(self.abstract_syntax, "abstract syntax")))
        for name in self.transfer_syntaxes:
            # PS3.8 9.3.2.2.2: one or more Transfer Syntax Sub-Items (40H)
            parts.append(_item(0x40, _ascii(name, "transfer syntax")))
        return _item(0x20, b"".join(parts))


@dataclass(frozen=True, slots=True)
class PresentationContextItemAC:
    """Presentation Context Item of an A-ASSOCIATE-AC (PS3.8 9.3.3.2).

    ``result``: 0 acceptance, 1 user-rejection, 2 no-reason (provider
    rejection), 3 abstract-syntax-not-supported (provider rejection),
    4 transfer-syntaxes-not-supported (provider rejection).  When it is not
    0 the transfer syntax is not significant: decoding gives ``""`` unless
    the peer sent a readable one.
    """

    ITEM_TYPE: ClassVar[int] = 0x21

    context_id: int
    result: int
    transfer_syntax: str

    def encode(self) -> bytes:
        # PS3.8 9.3.3.2: context ID, reserved, result/reason, reserved, one Transfer Syntax Sub-Item
        value = bytes((self.context_id, 0, self.result, 0)) + _item(
            0x40, _ascii(self.transfer_syntax, "transfer syntax")
        )
        return _item(0x21, value)


# ---------------------------------------------------------------------------
# User information sub-items (PS3.8 D.1, PS3.7 D.3.3)


# The Maximum Length (PS3.8 D.1) radx offers to receive, on either side,
# unless told another (--max-pdu).
DEFAULT_MAXIMUM_LENGTH = 16384


@dataclass(frozen=True, slots=True)
class MaximumLengthSubItem:
    """Maximum Length Sub-Item (PS3.8 D.1): the longest P-DATA-TF variable field the sender accepts; 0 means no limit."""

    ITEM_TYPE: ClassVar[int] = 0x51

    maximum_length: int

    def encode(self) -> bytes:
        return _item(0x51, _U32.pack(self.maximum_length))


@dataclass(frozen=True, slots=True)
class ImplementationClassUIDSubItem:
    """Implementation Class UID Sub-Item (PS3.7 D.3.3.2)."""

    ITEM_TYPE: ClassVar[int] = 0x52

    implementation_class_uid: str

    def encode(self) -> bytes:
        return _item(0x52, _ascii(self.implementation_class_uid, "implementation class UID"))


@dataclass(frozen=True, slots=True)
class AsynchronousOperationsWindowSubItem:
    """Asynchronous Operations Window Sub-Item (PS3.7 D.3.3.3)."""

    ITEM_TYPE: ClassVar[int] = 0x53

    maximum_number_operations_invoked: int
    maximum_number_operations_performed: int

    def encode(self) -> bytes:
        return _item(
            0x53,
            struct.pack(
                ">HH",
                self.maximum_number_operations_invoked,
                self.maximum_number_operations_performed,
            ),
        )


@dataclass(frozen=True, slots=True)
class SCPSCURoleSelectionSubItem:
    """SCP/SCU Role Selection Sub-Item (PS3.7 D.3.3.4); roles are 0 (not supported / non-support) or 1."""

    ITEM_TYPE: ClassVar[int] = 0x54

    sop_class_uid: str
    scu_role: int
    scp_role: int

    def encode(self) -> bytes:
        uid = _counted(_ascii(self.sop_class_uid, "role selection SOP class UID"), "SOP class UID")
        return _item(0x54, uid + bytes((self.scu_role, self.scp_role)))


@dataclass(frozen=True, slots=True)
class ImplementationVersionNameSubItem:
    """Implementation Version Name Sub-Item (PS3.7 D.3.3.2): 1 to 16 characters."""

    ITEM_TYPE: ClassVar[int] = 0x55

    implementation_version_name: str

    def encode(self) -> bytes:
        raw = _ascii(self.implementation_version_name, "implementation version name")
        if not 1 <= len(raw) <= 16:
            # PS3.7 D.3.3.2: 1 to 16 characters
            raise ValueError(
                f"implementation version name {self.implementation_version_name!r} must be 1 to 16 characters"
            )
        return _item(0x55, raw)


@dataclass(frozen=True, slots=True)
class SOPClassExtendedNegotiationSubItem:
    """SOP Class Extended Negotiation Sub-Item (PS3.7 D.3.3.5)."""

    ITEM_TYPE: ClassVar[int] = 0x56

    sop_class_uid: str
    service_class_application_information: bytes

    def encode(self) -> bytes:
        uid = _counted(_ascii(self.sop_class_uid, "extended negotiation SOP class UID"), "SOP class UID")
        return _item(0x56, uid + bytes(self.service_class_application_information))


@dataclass(frozen=True, slots=True)
class SOPClassCommonExtendedNegotiationSubItem:
    """SOP Class Common Extended Negotiation Sub-Item, sub-item version 0 (PS3.7 D.3.3.6)."""

    ITEM_TYPE: ClassVar[int] = 0x57

    sop_class_uid: str
    service_class_uid: str
    related_general_sop_class_uids: tuple[str, ...] = ()

    def encode(self) -> bytes:
        related = b"".join(
            _counted(_ascii(uid, "related general SOP class UID"), "related general SOP class UID")
            for uid in self.related_general_sop_class_uids
        )
        value = b"".join(
            (
                _counted(_ascii(self.sop_class_uid, "SOP class UID"), "SOP class UID"),
                _counted(_ascii(self.service_class_uid, "service class UID"), "service class UID"),
                _counted(related, "related general SOP class identification"),
            )
        )
        # PS3.7 D.3.3.6: byte 2 is the sub-item version, 0
        return _item(0x57, value, second_byte=0)


@dataclass(frozen=True, slots=True)
class UserIdentityRQSubItem:
    """User Identity Negotiation Sub-Item of an A-ASSOCIATE-RQ (PS3.7 D.3.3.7.1).

    ``user_identity_type``: 1 username, 2 username and passcode, 3 Kerberos
    service ticket, 4 SAML assertion, 5 JSON Web Token.
    """

    ITEM_TYPE: ClassVar[int] = 0x58

    user_identity_type: int
    positive_response_requested: bool
    primary_field: bytes
    secondary_field: bytes = b""

    def encode(self) -> bytes:
        value = b"".join(
            (
                bytes((self.user_identity_type, 1 if self.positive_response_requested else 0)),
                _counted(bytes(self.primary_field), "user identity primary field"),
                # PS3.7 D.3.3.7.1: the secondary-field-length is always present (0 unless type 2)
                _counted(bytes(self.secondary_field), "user identity secondary field"),
            )
        )
        return _item(0x58, value)


@dataclass(frozen=True, slots=True)
class UserIdentityACSubItem:
    """User Identity Negotiation Sub-Item of an A-ASSOCIATE-AC (PS3.7 D.3.3.7.2)."""

    ITEM_TYPE: ClassVar[int] = 0x59

    server_response: bytes

    def encode(self) -> bytes:
        return _item(0x59, _counted(bytes(self.server_response), "user identity server response"))


UserDataSubItem = Union[
    MaximumLengthSubItem,
    ImplementationClassUIDSubItem,
    AsynchronousOperationsWindowSubItem,
    SCPSCURoleSelectionSubItem,
    ImplementationVersionNameSubItem,
    SOPClassExtendedNegotiationSubItem,
    SOPClassCommonExtendedNegotiationSubItem,
    UserIdentityRQSubItem,
    UserIdentityACSubItem,
]


def _first(sub_items: tuple, cls: type):
    for sub_item in sub_items:
        if type(sub_item) is cls:
            return sub_item
    return None


@dataclass(frozen=True, slots=True)
class UserInformationItem:
    """User Information Item (PS3.8 9.3.2.3, 9.3.3.3) holding user data sub-items, encoded in the given order.

    Sub-items of unknown types are skipped on decode (PS3.8 9.3.1).  The
    read-only properties give the first sub-item of each kind.
    """

    ITEM_TYPE: ClassVar[int] = 0x50

    sub_items: tuple[UserDataSubItem, ...] = ()

    def encode(self) -> bytes:
        return _item(0x50, b"".join(sub_item.encode() for sub_item in self.sub_items))

    @property
    def maximum_length(self) -> int | None:
        sub_item = _first(self.sub_items, MaximumLengthSubItem)
        return None if sub_item is None else sub_item.maximum_length

    @property
    def implementation_class_uid(self) -> str | None:
        sub_item = _first(self.sub_items, ImplementationClassUIDSubItem)
        return None if sub_item is None else sub_item.implementation_class_uid

    @property
    def implementation_version_name(self) -> str | None:
        sub_item = _first(self.sub_items, ImplementationVersionNameSubItem)
        return None if sub_item is None else sub_item.implementation_version_name

    @property
    def asynchronous_operations_window(self) -> AsynchronousOperationsWindowSubItem | None:
        return _first(self.sub_items, AsynchronousOperationsWindowSubItem)

    @property
    def role_selections(self) -> tuple[SCPSCURoleSelectionSubItem, ...]:
        return tuple(s for s in self.sub_items if type(s) is SCPSCURoleSelectionSubItem)

    @property
    def extended_negotiations(self) -> tuple[SOPClassExtendedNegotiationSubItem, ...]:
        return tuple(s for s in self.sub_items if type(s) is SOPClassExtendedNegotiationSubItem)

    @property
    def common_extended_negotiations(self) -> tuple[SOPClassCommonExtendedNegotiationSubItem, ...]:
        return tuple(s for s in self.sub_items if type(s) is SOPClassCommonExtendedNegotiationSubItem)

    @property
    def user_identity(self) -> UserIdentityRQSubItem | UserIdentityACSubItem | None:
        for sub_item in self.sub_items:
            if type(sub_item) is UserIdentityRQSubItem or type(sub_item) is UserIdentityACSubItem:
                return sub_item
        return None


# ---------------------------------------------------------------------------
# Sub-item decoders: each gets the sub-item's value (after its 4-byte header).


def _decode_maximum_length(value: memoryview, version: int) -> MaximumLengthSubItem:
    # PS3.8 D.1: Item-length is 0004H
    _exact(value, 4, "maximum length sub-item (51H)")
    return MaximumLengthSubItem(_U32.unpack_from(value)[0])


def _decode_implementation_class_uid(value: memoryview, version: int) -> ImplementationClassUIDSubItem:
    return ImplementationClassUIDSubItem(_uid(value, "implementation class UID sub-item (52H)"))


def _decode_asynchronous_operations_window(
    value: memoryview, version: int
) -> AsynchronousOperationsWindowSubItem:
    # PS3.7 D.3.3.3: Item-length is 0004H
    _exact(value, 4, "asynchronous operations window sub-item (53H)")
    invoked, performed = struct.unpack_from(">HH", value)
    return AsynchronousOperationsWindowSubItem(invoked, performed)


def _split_counted(value: memoryview, offset: int, what: str) -> tuple[memoryview, int]:
    """Read a 16-bit length and that many bytes at ``offset``; return them and the offset after."""
    if len(value) - offset < 2:
        raise PDUDecodeError(f"{what}: length field at byte {offset} is cut off by the item-length {len(value)}")
    (length,) = _U16.unpack_from(value, offset)
    end = offset + 2 + length
    if end > len(value):
        raise PDUDecodeError(
            f"{what}: declares {length} bytes at byte {offset + 2} but the item-length {len(value)} leaves only"
            f" {len(value) - offset - 2}"
        )
    return value[offset + 2 : end], end


def _decode_role_selection(value: memoryview, version: int) -> SCPSCURoleSelectionSubItem:
    what = "SCP/SCU role selection sub-item (54H)"
    # PS3.7 D.3.3.4: UID-length, SOP-class-uid, SCU-role, SCP-role
    uid, offset = _split_counted(value, 0, f"{what} SOP class UID")
    if len(value) != offset + 2:
        raise PDUDecodeError(
            f"{what} has item-length {len(value)}, expected {offset + 2} for a {len(uid)}-byte UID and two role bytes"
        )
    return SCPSCURoleSelectionSubItem(_uid(uid, f"{what} SOP class UID"), value[offset], value[offset + 1])


def _decode_implementation_version_name(value: memoryview, version: int) -> ImplementationVersionNameSubItem:
    return ImplementationVersionNameSubItem(
        _text(value, "implementation version name sub-item (55H)").rstrip("\x00 ")
    )


def _decode_extended_negotiation(value: memoryview, version: int) -> SOPClassExtendedNegotiationSubItem:
    what = "SOP class extended negotiation sub-item (56H)"
    # PS3.7 D.3.3.5: SOP-class-uid-length, SOP-class-uid, service-class-application-information
    uid, offset = _split_counted(value, 0, f"{what} SOP class UID")
    return SOPClassExtendedNegotiationSubItem(_uid(uid, f"{what} SOP class UID"), bytes(value[offset:]))


def _decode_common_extended_negotiation(
    value: memoryview, version: int
) -> SOPClassCommonExtendedNegotiationSubItem:
    what = "SOP class common extended negotiation sub-item (57H)"
    # PS3.7 D.3.3.6: SOP class UID, service class UID, related general SOP class identification, each length-prefixed
    sop_class, offset = _split_counted(value, 0, f"{what} SOP class UID")
    service_class, offset = _split_counted(value, offset, f"{what} service class UID")
    related_field, offset = _split_counted(value, offset, f"{what} related general SOP class identification")
    if offset != len(value):
        raise PDUDecodeError(f"{what} has {len(value) - offset} unexpected bytes after its last field")
    related = []
    related_offset = 0
    while related_offset < len(related_field):
        # PS3.7 D.3.3.6, Table D.3-13: each entry is a 16-bit UID length and the UID
        uid, related_offset = _split_counted(
            related_field, related_offset, f"{what} related general SOP class UID"
        )
        related.append(_uid(uid, f"{what} related general SOP class UID"))
    return SOPClassCommonExtendedNegotiationSubItem(
        _uid(sop_class, f"{what} SOP class UID"),
        _uid(service_class, f"{what} service class UID"),
        tuple(related),
    )


def _decode_user_identity_rq(value: memoryview, version: int) -> UserIdentityRQSubItem:
    what = "user identity sub-item (58H)"
    # PS3.7 D.3.3.7.1: type, positive-response-requested, primary field, secondary field (lengths 16-bit)
    _need(value, 2, what)
    primary, offset = _split_counted(value, 2, f"{what} primary field")
    secondary, offset = _split_counted(value, offset, f"{what} secondary field")
    if offset != len(value):
        raise PDUDecodeError(f"{what} has {len(value) - offset} unexpected bytes after the secondary field")
    return UserIdentityRQSubItem(value[0], bool(value[1]), bytes(primary), bytes(secondary))


def _decode_user_identity_ac(value: memoryview, version: int) -> UserIdentityACSubItem:
    what = "user identity sub-item (59H)"
    # PS3.7 D.3.3.7.2: server-response-length, server-response
    response, offset = _split_counted(value, 0, f"{what} server response")
    if offset != len(value):
        raise PDUDecodeError(f"{what} has {len(value) - offset} unexpected bytes after the server response")
    return UserIdentityACSubItem(bytes(response))


_SUB_ITEM_DECODERS = {
    0x51: _decode_maximum_length,
    0x52: _decode_implementation_class_uid,
    0x53: _decode_asynchronous_operations_window,
    0x54: _decode_role_selection,
    0x55: _decode_implementation_version_name,
    0x56: _decode_extended_negotiation,
    0x57: _decode_common_extended_negotiation,
    0x58: _decode_user_identity_rq,
    0x59: _decode_user_identity_ac,
}

# Every item type this module knows; one of these where it is not allowed is
# unexpected, any other type is unrecognized and skipped (PS3.8 9.3.1).
_KNOWN_ITEM_TYPES = frozenset({0x10, 0x20, 0x21, 0x30, 0x40, 0x50}) | frozenset(_SUB_ITEM_DECODERS)


def _decode_user_information(value: memoryview) -> UserInformationItem:
    where = "the user information item (50H)"
    sub_items = []
    for offset, item_type, second, sub_value in _items(value, where):
        decoder = _SUB_ITEM_DECODERS.get(item_type)
        if decoder is not None:
            sub_items.append(decoder(sub_value, second))
        elif item_type in _KNOWN_ITEM_TYPES:
            raise _misplaced(item_type, offset, where)
        # else PS3.8 9.3.1: items of unrecognized types are ignored and skipped
    return UserInformationItem(tuple(sub_items))


def _decode_presentation_context_rq(value: memoryview) -> PresentationContextItemRQ:
    where = "a presentation context item (20H)"
    # PS3.8 9.3.2.2: context ID, three reserved bytes (not tested), then sub-items
    _need(value, 4, where)
    context_id = value[0]
    where = f"presentation context item (20H) ID {context_id}"
    abstract_syntax = None
    transfer_syntaxes = []
    for offset, item_type, _, sub_value in _items(value[4:], where):
        if item_type == 0x30:
            if abstract_syntax is not None:
                # PS3.8 9.3.2.2: exactly one Abstract Syntax Sub-Item
                raise PDUDecodeError(f"{where} has a second abstract syntax sub-item (30H)", _UNEXPECTED)
            abstract_syntax = _uid(sub_value, f"abstract syntax of {where}")
        elif item_type == 0x40:
            transfer_syntaxes.append(_uid(sub_value, f"transfer syntax of {where}"))
        elif item_type in _KNOWN_ITEM_TYPES:
            raise _misplaced(item_type, offset + 4, where)
    if abstract_syntax is None:
        raise PDUDecodeError(f"{where} has no abstract syntax sub-item (30H)")
    # No transfer syntax sub-item breaks PS3.8 9.3.2.2 too, but it is left to
    # negotiation, which can reject just this context (transfer-syntaxes-not-supported).
    return PresentationContextItemRQ(context_id, abstract_syntax, tuple(transfer_syntaxes))


def _decode_presentation_context_ac(value: memoryview) -> PresentationContextItemAC:
    where = "a presentation context item (21H)"
    # PS3.8 9.3.3.2: context ID, reserved, result/reason, reserved, one Transfer Syntax Sub-Item
    _need(value, 4, where)
    context_id, result = value[0], value[2]
    where = f"presentation context item (21H) ID {context_id}"
    try:
        transfer_syntax = None
        for offset, item_type, _, sub_value in _items(value[4:], where):
            if item_type == 0x40:
                if transfer_syntax is not None:
                    raise PDUDecodeError(f"{where} has a second transfer syntax sub-item (40H)", _UNEXPECTED)
                transfer_syntax = _uid(sub_value, f"transfer syntax of {where}")
            elif item_type in _KNOWN_ITEM_TYPES:
                raise _misplaced(item_type, offset + 4, where)
        if transfer_syntax is None:
            raise PDUDecodeError(f"{where} accepts the context but has no transfer syntax sub-item (40H)")
    except PDUDecodeError:
        if result == 0:
            raise
        # PS3.8 9.3.3.2: unless accepted, the transfer syntax sub-item is not significant and not tested
        transfer_syntax = ""
    return PresentationContextItemAC(context_id, result, transfer_syntax)


# ---------------------------------------------------------------------------
# The seven PDUs


@dataclass(frozen=True, slots=True)
class AAssociateRQ:
    """A-ASSOCIATE-RQ PDU (PS3.8 9.3.2).  ``protocol_version`` is the raw 16-bit field; bit 0 is version 1."""

    PDU_TYPE: ClassVar[int] = 0x01

    called_ae_title: str
    calling_ae_title: str
    application_context_name: str = "1.2.840.10008.3.1.1.1"
    presentation_contexts: tuple[PresentationContextItemRQ, ...] = ()
    user_information: UserInformationItem = UserInformationItem()
    protocol_version: int = 1

    def encode(self) -> bytes:
        return _encode_associate(self, 0x01)


@dataclass(frozen=True, slots=True)
class AAssociateAC:
    """A-ASSOCIATE-AC PDU (PS3.8 9.3.3).

    The AE title fields are reserved in an A-ASSOCIATE-AC: sent as received in
    the A-ASSOCIATE-RQ, not tested on receipt (decoded leniently).
    """

    PDU_TYPE: ClassVar[int] = 0x02

    called_ae_title: str
    calling_ae_title: str
    application_context_name: str = "1.2.840.10008.3.1.1.1"
    presentation_contexts: tuple[PresentationContextItemAC, ...] = ()
    user_information: UserInformationItem = UserInformationItem()
    protocol_version: int = 1

    def encode(self) -> bytes:
        return _encode_associate(self, 0x02)


def _encode_associate(pdu: AAssociateRQ | AAssociateAC, pdu_type: int) -> bytes:
    parts = [
        # PS3.8 9.3.2: protocol-version, 2 reserved bytes, called and calling AE titles, 32 reserved bytes
        struct.pack(">HH", pdu.protocol_version, 0),
        _encode_ae_title(pdu.called_ae_title, "called AE title"),
        _encode_ae_title(pdu.calling_ae_title, "calling AE title"),
        bytes(32),
        ApplicationContextItem(pdu.application_context_name).encode(),
    ]
    parts.extend(context.encode() for context in pdu.presentation_contexts)
    parts.append(pdu.user_information.encode())
    return _pdu(pdu_type, b"".join(parts))


def _decode_associate(body: bytes | memoryview, pdu_type: int) -> AAssociateRQ | AAssociateAC:
    is_rq = pdu_type == 0x01
    name = "A-ASSOCIATE-RQ" if is_rq else "A-ASSOCIATE-AC"
    value = memoryview(body)
    if len(value) < _ASSOCIATE_FIXED_LENGTH:
        raise PDUDecodeError(
            f"{name} PDU-length is {len(value)}; its fixed fields alone take {_ASSOCIATE_FIXED_LENGTH} bytes"
        )
    (protocol_version,) = _U16.unpack_from(value, 0)
    if is_rq:
        called = _decode_ae_title(value[4:20], f"{name} called AE title")
        calling = _decode_ae_title(value[20:36], f"{name} calling AE title")
    else:
        # PS3.8 9.3.3: in the A-ASSOCIATE-AC these are reserved fields, not tested when received
        called = bytes(value[4:20]).decode("ascii", "replace").strip(" ")
        calling = bytes(value[20:36]).decode("ascii", "replace").strip(" ")
    where = f"the {name} variable items"
    context_type = 0x20 if is_rq else 0x21
    decode_context = _decode_presentation_context_rq if is_rq else _decode_presentation_context_ac
    application_context = None
    contexts = []
    user_information = None
    for offset, item_type, _, item_value in _items(value[_ASSOCIATE_FIXED_LENGTH:], where):
        if item_type == context_type:
            contexts.append(decode_context(item_value))
        elif item_type == 0x10:
            if application_context is not None:
                # PS3.8 9.3.2: exactly one Application Context Item; a second is a parameter not expected
                raise PDUDecodeError(f"{name} has a second application context item (10H)", _UNEXPECTED)
            application_context = _uid(item_value, f"{name} application context name")
        elif item_type == 0x50:
            if user_information is not None:
                # PS3.8 9.3.2: exactly one User Information Item
                raise PDUDecodeError(f"{name} has a second user information item (50H)", _UNEXPECTED)
            user_information = _decode_user_information(item_value)
        elif item_type in _KNOWN_ITEM_TYPES:
            raise _misplaced(item_type, offset, where)
        # else PS3.8 9.3.1: items of unrecognized types are ignored and skipped
    # A missing mandatory item (PS3.8 9.3.2/9.3.3) makes the variable-items field's value
    # invalid: invalid-PDU-parameter value (9.3.8).  unexpected-PDU-parameter is for a
    # parameter that is present but should not be, unrecognized-PDU-parameter for an
    # unknown one; neither describes an absence.
    if application_context is None:
        raise PDUDecodeError(f"{name} has no application context item (10H)")
    if user_information is None:
        raise PDUDecodeError(f"{name} has no user information item (50H)")
    cls = AAssociateRQ if is_rq else AAssociateAC
    return cls(
        called_ae_title=called,
        calling_ae_title=calling,
        application_context_name=application_context,
        presentation_contexts=tuple(contexts),
        user_information=user_information,
        protocol_version=protocol_version,
    )


@dataclass(frozen=True, slots=True)
class AAssociateRJ:
    """A-ASSOCIATE-RJ PDU (PS3.8 9.3.4).

    ``result`` a RejectResult, ``source`` a RejectSource; ``reason`` a
    member of the enumeration its source has in ``REJECT_REASONS`` (Table
    9-21). A value the standard reserves, as a peer may send, stays a
    plain number.
    """

    PDU_TYPE: ClassVar[int] = 0x03

    result: RejectResult | int
    source: RejectSource | int
    reason: UserRejectReason | ACSERejectReason | PresentationRejectReason | int

    def encode(self) -> bytes:
        # PS3.8 9.3.4: PDU-length 4: reserved, result, source, reason/diag.
        return _PDU_HEADER.pack(0x03, 0, 4) + bytes((0, self.result, self.source, self.reason))


@dataclass(frozen=True, slots=True)
class PresentationDataValueItem:
    """Presentation Data Value Item (PS3.8 9.3.5.1): a 4-byte item-length (2 + len(data)), context ID, message control header (PS3.8 E.2), fragment.

    ``data`` is a memoryview slice of the received PDU body when decoded
    (no copy); it compares equal to ``bytes`` with the same content.
    """

    context_id: int
    message_control_header: int
    data: bytes | memoryview

    @property
    def is_command(self) -> bool:
        # PS3.8 E.2: bit 0 set means a command fragment, clear a data set fragment
        return bool(self.message_control_header & 0x01)

    @property
    def is_last(self) -> bool:
        # PS3.8 E.2: bit 1 set means the last fragment
        return bool(self.message_control_header & 0x02)

    def encode(self) -> bytes:
        return _PDV_HEADER.pack(2 + len(self.data), self.context_id, self.message_control_header) + bytes(self.data)


@dataclass(frozen=True, slots=True)
class PDataTF:
    """P-DATA-TF PDU (PS3.8 9.3.5): one or more presentation data value items."""

    PDU_TYPE: ClassVar[int] = 0x04

    items: tuple[PresentationDataValueItem, ...]

    def encode(self) -> bytes:
        pack = _PDV_HEADER.pack
        parts: list = [b""]
        total = 0
        for item in self.items:
            length = 2 + len(item.data)
            parts.append(pack(length, item.context_id, item.message_control_header))
            parts.append(item.data)
            total += 4 + length
        if total > 0xFFFFFFFF:
            raise ValueError(f"P-DATA-TF body is {total} bytes, over the 32-bit PDU-length")
        parts[0] = _PDU_HEADER.pack(0x04, 0, total)
        return b"".join(parts)


class EncodedPDUs:
    """Consecutive P-DATA-TF PDUs of one message, already encoded back to back, to be sent as one write."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def encode(self) -> bytes:
        return self.data


class ReceivedPDataTF:
    """A received P-DATA-TF PDU (PS3.8 9.3.5), its items left as the tuples :func:`decode_pdv_values` makes.

    What ``PDUReader(pdata_values=True)`` gives for a P-DATA-TF: a data set
    arrives as one of these per PDU, and an object per item is the larger
    part of its cost. :meth:`pdu` makes the :class:`PDataTF`.
    """

    __slots__ = ("values",)

    PDU_TYPE: ClassVar[int] = 0x04

    def __init__(self, values: list[tuple[int, int, memoryview]]) -> None:
        self.values = values

    def pdu(self) -> PDataTF:
        return PDataTF(tuple(PresentationDataValueItem(*value) for value in self.values))


def pdv_values(pdu: PDataTF) -> list[tuple[int, int, bytes | memoryview]]:
    """A P-DATA-TF's items as :func:`decode_pdv_values` gives them: (context ID, message control header, fragment)."""
    return [(item.context_id, item.message_control_header, item.data) for item in pdu.items]


def decode_pdv_values(body: bytes | memoryview) -> list[tuple[int, int, memoryview]]:
    """The presentation data value items of a P-DATA-TF's variable part, each as (presentation context ID, message control header, fragment).

    Each fragment is a memoryview slice of ``body`` (no copy). Raises
    :class:`PDUDecodeError` on an item that does not fit the PDU, as
    :func:`decode_pdu` does.
    """
    value = memoryview(body)
    end = len(value)
    if not end:
        # PS3.8 9.3.5: one or more presentation data value items
        raise PDUDecodeError("P-DATA-TF has no presentation data value item")
    unpack = _PDV_HEADER.unpack_from
    items = []
    offset = 0
    while offset < end:
        if end - offset < 6:
            raise PDUDecodeError(
                f"P-DATA-TF: truncated presentation data value item at byte {offset}:"
                f" {end - offset} bytes left, its fixed fields take 6"
            )
        length, context_id, control = unpack(value, offset)
        if length < 2:
            # PS3.8 9.3.5.1: the item-length covers the context ID and the message control header at least
            raise PDUDecodeError(
                f"P-DATA-TF: presentation data value item at byte {offset} has item-length {length}, less than 2"
            )
        item_end = offset + 4 + length
        if item_end > end:
            raise PDUDecodeError(
                f"P-DATA-TF: presentation data value item at byte {offset} declares item-length {length}"
                f" but only {end - offset - 4} bytes remain in the PDU"
            )
        items.append((context_id, control, value[offset + 6 : item_end]))
        offset = item_end
    return items


def _fixed_body(body: bytes | memoryview, name: str) -> bytes:
    data = bytes(body)
    if len(data) != 4:
        # PS3.8 9.3.4, 9.3.6-9.3.8: the PDU-length is fixed at 00000004H
        raise PDUDecodeError(f"{name} PDU-length is {len(data)}; it must be 4")
    return data


@dataclass(frozen=True, slots=True)
class AReleaseRQ:
    """A-RELEASE-RQ PDU (PS3.8 9.3.6)."""

    PDU_TYPE: ClassVar[int] = 0x05

    def encode(self) -> bytes:
        return b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"


@dataclass(frozen=True, slots=True)
class AReleaseRP:
    """A-RELEASE-RP PDU (PS3.8 9.3.7)."""

    PDU_TYPE: ClassVar[int] = 0x06

    def encode(self) -> bytes:
        return b"\x06\x00\x00\x00\x00\x04\x00\x00\x00\x00"


@dataclass(frozen=True, slots=True)
class AAbort:
    """A-ABORT PDU (PS3.8 9.3.8): ``source`` per :class:`AbortSource`, ``reason`` per :class:`AbortReason` when the source is 2 (else sent as 0)."""

    PDU_TYPE: ClassVar[int] = 0x07

    source: int = 0
    reason: int = 0

    def encode(self) -> bytes:
        # PS3.8 9.3.8: PDU-length 4: two reserved bytes, source, reason/diag.
        return _PDU_HEADER.pack(0x07, 0, 4) + bytes((0, 0, self.source, self.reason))


PDU = Union[AAssociateRQ, AAssociateAC, AAssociateRJ, PDataTF, AReleaseRQ, AReleaseRP, AAbort]

PDU_TYPES: dict[int, type] = {
    0x01: AAssociateRQ,
    0x02: AAssociateAC,
    0x03: AAssociateRJ,
    0x04: PDataTF,
    0x05: AReleaseRQ,
    0x06: AReleaseRP,
    0x07: AAbort,
}


def decode_pdu(pdu_type: int, body: bytes | memoryview) -> PDU:
    """Decode a PDU from its type and its variable part (everything after the 6-byte header).

    Raises :class:`PDUDecodeError` on anything malformed.  P-DATA-TF fragments
    are memoryview slices of ``body``: pass an immutable ``bytes`` if they are
    to outlive the caller's buffer.
    """
    if pdu_type == 0x04:
        return ReceivedPDataTF(decode_pdv_values(body)).pdu()
    if pdu_type == 0x01 or pdu_type == 0x02:
        return _decode_associate(body, pdu_type)
    if pdu_type == 0x03:
        data = _fixed_body(body, "A-ASSOCIATE-RJ")
        # PS3.8 9.3.4: byte 7 reserved (not tested), then result, source, reason/diag.
        source = _member(RejectSource, data[2])
        reasons = REJECT_REASONS.get(source)
        return AAssociateRJ(
            _member(RejectResult, data[1]), source, _member(reasons, data[3]) if reasons is not None else data[3]
        )
    if pdu_type == 0x05:
        _fixed_body(body, "A-RELEASE-RQ")  # PS3.8 9.3.6: bytes 7-10 reserved, not tested
        return AReleaseRQ()
    if pdu_type == 0x06:
        _fixed_body(body, "A-RELEASE-RP")  # PS3.8 9.3.7: bytes 7-10 reserved, not tested
        return AReleaseRP()
    if pdu_type == 0x07:
        data = _fixed_body(body, "A-ABORT")
        # PS3.8 9.3.8: bytes 7-8 reserved (not tested), then source, reason/diag.
        return AAbort(data[2], data[3])
    raise PDUDecodeError(f"unrecognized PDU type 0x{pdu_type:02X}", AbortReason.UNRECOGNIZED_PDU)
