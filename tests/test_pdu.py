"""Tests for radx.ul.pdu: exact wire bytes written by hand from PS3.8 9.3 and PS3.7 D.3.3, checked both ways."""

from __future__ import annotations

import ast
import inspect
import struct
from typing import NamedTuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from radx.ul import framing, pdu
from radx.ul.framing import PDUReader
from radx.ul.pdu import (
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AbortReason,
    AbortSource,
    AReleaseRP,
    AReleaseRQ,
    ApplicationContextItem,
    AsynchronousOperationsWindowSubItem,
    ImplementationClassUIDSubItem,
    ImplementationVersionNameSubItem,
    MaximumLengthSubItem,
    PDataTF,
    PDUDecodeError,
    PDU_TYPES,
    PresentationContextItemAC,
    PresentationContextItemRQ,
    PresentationDataValueItem,
    PresentationRejectReason,
    ReceivedPDataTF,
    RejectResult,
    RejectSource,
    SCPSCURoleSelectionSubItem,
    SOPClassCommonExtendedNegotiationSubItem,
    SOPClassExtendedNegotiationSubItem,
    UserIdentityACSubItem,
    UserIdentityRQSubItem,
    UserInformationItem,
    UserRejectReason,
    decode_pdu,
    decode_pdv_values,
    pdv_values,
)

INVALID = AbortReason.INVALID_PDU_PARAMETER_VALUE
UNEXPECTED = AbortReason.UNEXPECTED_PDU_PARAMETER
UNRECOGNIZED_PDU = AbortReason.UNRECOGNIZED_PDU

# UIDs used on the wire below (lengths in brackets, as they appear in the item-lengths)
APP_CONTEXT = "1.2.840.10008.3.1.1.1"  # [21 = 15H] PS3.7 A.2.1
VERIFICATION = "1.2.840.10008.1.1"  # [17 = 11H]
CT = "1.2.840.10008.5.1.4.1.1.2"  # [25 = 19H] CT Image Storage
SC = "1.2.840.10008.5.1.4.1.1.7"  # [25 = 19H] Secondary Capture Image Storage
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"  # [27 = 1BH]
STORAGE_SERVICE = "1.2.840.10008.4.2"  # [17 = 11H] Storage Service Class
IMPLICIT = "1.2.840.10008.1.2"  # [17 = 11H]
EXPLICIT_LE = "1.2.840.10008.1.2.1"  # [19 = 13H]
EXPLICIT_BE = "1.2.840.10008.1.2.2"  # [19 = 13H]
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"  # [22 = 16H]
ICUID = "1.2.826.0.1.3680043.9.7433.1"  # [28 = 1CH] an implementation class UID


def wire(*parts: str | bytes) -> bytes:
    """Concatenate hex strings (spaces ignored) and raw bytes."""
    return b"".join(p if isinstance(p, bytes) else bytes.fromhex(p) for p in parts)


def t(text: str) -> bytes:
    """ASCII text as it appears on the wire."""
    return text.encode("ascii")


def framed(pdu_type: int, *parts: str | bytes) -> bytes:
    """A PDU with the 6-byte header computed around a hand-written body (for the malformed and lenient cases)."""
    body = wire(*parts)
    return struct.pack(">BBL", pdu_type, 0, len(body)) + body


def rq_body_with_user_information(*sub_items: str | bytes) -> bytes:
    """A-ASSOCIATE-RQ variable part (no header) whose user information item holds the given raw sub-items."""
    user_data = wire(*sub_items)
    return wire(
        "0001 0000",
        t("ANY-SCP         "),
        t("STORESCU        "),
        "00" * 32,
        "10 00 0015",
        t(APP_CONTEXT),
        struct.pack(">BBH", 0x50, 0, len(user_data)),
        user_data,
    )


class Case(NamedTuple):
    name: str
    obj: object
    wire: bytes


# ---------------------------------------------------------------------------
# Round-trip table: (object, exact bytes), both directions.

FULL_USER_INFORMATION_RQ = UserInformationItem(
    (
        MaximumLengthSubItem(16384),
        ImplementationClassUIDSubItem(ICUID),
        AsynchronousOperationsWindowSubItem(5, 3),
        SCPSCURoleSelectionSubItem(CT, 0, 1),
        ImplementationVersionNameSubItem("RADX_010"),
        SOPClassExtendedNegotiationSubItem(CT, b"\x01\x00\x01"),
        SOPClassCommonExtendedNegotiationSubItem(ENHANCED_CT, STORAGE_SERVICE, (CT,)),
        UserIdentityRQSubItem(2, True, b"user", b"pass"),
    )
)

ASSOCIATE_RQ = AAssociateRQ(
    called_ae_title="ANY-SCP",
    calling_ae_title="STORESCU",
    application_context_name=APP_CONTEXT,
    presentation_contexts=(
        PresentationContextItemRQ(1, VERIFICATION, (IMPLICIT, EXPLICIT_LE)),
        PresentationContextItemRQ(3, CT, (EXPLICIT_LE, IMPLICIT, JPEG_BASELINE)),
        PresentationContextItemRQ(5, SC, (EXPLICIT_BE,)),
    ),
    user_information=FULL_USER_INFORMATION_RQ,
)

# PS3.8 9.3.2, Table 9-11
ASSOCIATE_RQ_WIRE = wire(
    "01 00 00000233",  # PDU-type 01H, reserved, PDU-length 563 = 68 fixed + 495 of items
    "0001",  # protocol-version: bit 0 set, version 1
    "0000",  # reserved
    t("ANY-SCP         "),  # called AE title, 16 characters space padded
    t("STORESCU        "),  # calling AE title
    "00" * 32,  # reserved, bytes 43-74
    # application context item (9.3.2.1): 4 + 21 = 25 bytes
    "10 00 0015",
    t(APP_CONTEXT),
    # presentation context item (9.3.2.2) ID 1: length 4 + 21 + 21 + 23 = 69 = 45H
    "20 00 0045 01 00 00 00",
    "30 00 0011",
    t(VERIFICATION),  # abstract syntax sub-item (9.3.2.2.1)
    "40 00 0011",
    t(IMPLICIT),  # transfer syntax sub-items (9.3.2.2.2)
    "40 00 0013",
    t(EXPLICIT_LE),
    # ID 3: length 4 + 29 + 23 + 21 + 26 = 103 = 67H
    "20 00 0067 03 00 00 00",
    "30 00 0019",
    t(CT),
    "40 00 0013",
    t(EXPLICIT_LE),
    "40 00 0011",
    t(IMPLICIT),
    "40 00 0016",
    t(JPEG_BASELINE),
    # ID 5: length 4 + 29 + 23 = 56 = 38H
    "20 00 0038 05 00 00 00",
    "30 00 0019",
    t(SC),
    "40 00 0013",
    t(EXPLICIT_BE),
    # user information item (9.3.2.3): 8 + 32 + 8 + 33 + 12 + 34 + 81 + 18 = 226 = E2H
    "50 00 00e2",
    "51 00 0004 00004000",  # maximum length 16384 (PS3.8 D.1)
    "52 00 001c",
    t(ICUID),  # implementation class UID (PS3.7 D.3.3.2)
    "53 00 0004 0005 0003",  # asynchronous operations window: 5 invoked, 3 performed (D.3.3.3)
    "54 00 001d 0019",
    t(CT),
    "00 01",  # role selection: UID-length 25, SCU-role 0, SCP-role 1 (D.3.3.4)
    "55 00 0008",
    t("RADX_010"),  # implementation version name (D.3.3.2)
    "56 00 001e 0019",
    t(CT),
    "01 00 01",  # SOP class extended negotiation, 3 bytes of application information (D.3.3.5)
    # SOP class common extended negotiation, version 0 (D.3.3.6): 29 + 19 + 29 = 77 = 4DH
    "57 00 004d",
    "001b",
    t(ENHANCED_CT),
    "0011",
    t(STORAGE_SERVICE),
    "001b",  # related-general-sop-class-identification-length 27
    "0019",
    t(CT),
    # user identity (D.3.3.7.1): type 2 username+passcode, positive response requested
    "58 00 000e 02 01",
    "0004",
    t("user"),
    "0004",
    t("pass"),
)

ASSOCIATE_AC = AAssociateAC(
    called_ae_title="ANY-SCP",
    calling_ae_title="STORESCU",
    application_context_name=APP_CONTEXT,
    presentation_contexts=(
        PresentationContextItemAC(1, 0, IMPLICIT),
        PresentationContextItemAC(3, 0, EXPLICIT_LE),
        PresentationContextItemAC(5, 4, ""),
        PresentationContextItemAC(7, 3, ""),
        PresentationContextItemAC(9, 2, ""),
        PresentationContextItemAC(11, 1, ""),
    ),
    user_information=UserInformationItem(
        (
            MaximumLengthSubItem(0),
            ImplementationClassUIDSubItem(ICUID),
            AsynchronousOperationsWindowSubItem(1, 1),
            SCPSCURoleSelectionSubItem(CT, 0, 1),
            ImplementationVersionNameSubItem("RADX_010"),
            SOPClassExtendedNegotiationSubItem(CT, b"\x01\x00\x01"),
            UserIdentityACSubItem(b"token-1"),
        )
    ),
)

# PS3.8 9.3.3, Table 9-17
ASSOCIATE_AC_WIRE = wire(
    "02 00 00000159",  # PDU-type 02H, reserved, PDU-length 345 = 68 + 277
    "0001 0000",  # protocol-version 1, reserved
    t("ANY-SCP         "),  # reserved: the called AE title of the RQ
    t("STORESCU        "),  # reserved: the calling AE title of the RQ
    "00" * 32,  # reserved
    "10 00 0015",
    t(APP_CONTEXT),
    # presentation context items (9.3.3.2): ID, reserved, result/reason, reserved, one TS sub-item
    "21 00 0019 01 00 00 00",  # ID 1 acceptance: 4 + 21 = 25
    "40 00 0011",
    t(IMPLICIT),
    "21 00 001b 03 00 00 00",  # ID 3 acceptance: 4 + 23 = 27
    "40 00 0013",
    t(EXPLICIT_LE),
    "21 00 0008 05 00 04 00 40 00 0000",  # ID 5 transfer-syntaxes-not-supported, empty TS sub-item
    "21 00 0008 07 00 03 00 40 00 0000",  # ID 7 abstract-syntax-not-supported
    "21 00 0008 09 00 02 00 40 00 0000",  # ID 9 no-reason (provider rejection)
    "21 00 0008 0b 00 01 00 40 00 0000",  # ID 11 user-rejection
    # user information: 8 + 32 + 8 + 33 + 12 + 34 + 13 = 140 = 8CH
    "50 00 008c",
    "51 00 0004 00000000",  # maximum length 0: no limit
    "52 00 001c",
    t(ICUID),
    "53 00 0004 0001 0001",
    "54 00 001d 0019",
    t(CT),
    "00 01",
    "55 00 0008",
    t("RADX_010"),
    "56 00 001e 0019",
    t(CT),
    "01 00 01",
    "59 00 0009 0007",
    t("token-1"),  # user identity server response (D.3.3.7.2)
)

MINIMAL_RQ = AAssociateRQ("A", "B")
MINIMAL_RQ_WIRE = wire(
    "01 00 00000061",  # PDU-length 97 = 68 + 25 + 4
    "0001 0000",
    t("A               "),
    t("B               "),
    "00" * 32,
    "10 00 0015",
    t(APP_CONTEXT),
    "50 00 0000",  # empty user information item
)

LONG_TITLES_RQ = AAssociateRQ("ABCDEFGHIJKLMNOP", "0123456789ABCDEF", protocol_version=3)
LONG_TITLES_RQ_WIRE = wire(
    "01 00 00000061",
    "0003 0000",  # protocol-version with bits 0 and 1: kept raw
    t("ABCDEFGHIJKLMNOP"),  # 16 characters, no padding
    t("0123456789ABCDEF"),
    "00" * 32,
    "10 00 0015",
    t(APP_CONTEXT),
    "50 00 0000",
)

PDATA = PDataTF(
    (
        PresentationDataValueItem(1, 0x03, bytes(range(1, 9))),  # command, last fragment
        PresentationDataValueItem(1, 0x00, b"abcd"),  # data set, not last
        PresentationDataValueItem(3, 0x02, b""),  # data set, last, empty fragment
        PresentationDataValueItem(3, 0x01, b"\xaa\xbb\xcc"),  # command, not last
    )
)
# PS3.8 9.3.5 and 9.3.5.1: each PDV item is a 4-byte item-length (2 + fragment), context ID, control header, fragment
PDATA_WIRE = wire(
    "04 00 00000027",  # PDU-length 39 = 14 + 10 + 6 + 9
    "0000000a 01 03 0102030405060708",
    "00000006 01 00",
    t("abcd"),
    "00000002 03 02",
    "00000005 03 01 aabbcc",
)

ROUND_TRIP = [
    Case("associate_rq", ASSOCIATE_RQ, ASSOCIATE_RQ_WIRE),
    Case("associate_rq_minimal", MINIMAL_RQ, MINIMAL_RQ_WIRE),
    Case("associate_rq_16_character_titles", LONG_TITLES_RQ, LONG_TITLES_RQ_WIRE),
    Case("associate_ac", ASSOCIATE_AC, ASSOCIATE_AC_WIRE),
    # PS3.8 9.3.4: reserved, result, source, reason/diag.
    Case("associate_rj_permanent_user", AAssociateRJ(1, 1, 7), wire("03 00 00000004 00 01 01 07")),
    Case("associate_rj_transient_provider", AAssociateRJ(2, 3, 1), wire("03 00 00000004 00 02 03 01")),
    Case("associate_rj_acse", AAssociateRJ(1, 2, 2), wire("03 00 00000004 00 01 02 02")),
    Case("p_data_tf", PDATA, PDATA_WIRE),
    Case(
        "p_data_tf_single",
        PDataTF((PresentationDataValueItem(255, 0x02, b"\x00" * 10),)),
        wire("04 00 00000010 0000000c ff 02", "00" * 10),
    ),
    Case("release_rq", AReleaseRQ(), wire("05 00 00000004 00000000")),  # PS3.8 9.3.6
    Case("release_rp", AReleaseRP(), wire("06 00 00000004 00000000")),  # PS3.8 9.3.7
    # PS3.8 9.3.8: two reserved bytes, source, reason/diag.
    Case("abort_user", AAbort(), wire("07 00 00000004 0000 00 00")),
    Case(
        "abort_provider_invalid_value",
        AAbort(AbortSource.SERVICE_PROVIDER, AbortReason.INVALID_PDU_PARAMETER_VALUE),
        wire("07 00 00000004 0000 02 06"),
    ),
    Case("abort_provider_unrecognized_pdu", AAbort(2, 1), wire("07 00 00000004 0000 02 01")),
]

# User information sub-items alone (encode) and inside an A-ASSOCIATE-RQ (decode).
SUB_ITEMS = [
    Case("maximum_length_zero", MaximumLengthSubItem(0), wire("51 00 0004 00000000")),
    Case("maximum_length_max", MaximumLengthSubItem(0xFFFFFFFF), wire("51 00 0004 ffffffff")),
    Case("implementation_class_uid", ImplementationClassUIDSubItem(ICUID), wire("52 00 001c", t(ICUID))),
    Case("async_window_unlimited", AsynchronousOperationsWindowSubItem(0, 0), wire("53 00 0004 0000 0000")),
    Case("async_window_max", AsynchronousOperationsWindowSubItem(65535, 1), wire("53 00 0004 ffff 0001")),
    Case(
        "role_selection_scu",
        SCPSCURoleSelectionSubItem(VERIFICATION, 1, 0),
        wire("54 00 0015 0011", t(VERIFICATION), "01 00"),
    ),
    Case(
        "version_name_16",
        ImplementationVersionNameSubItem("ABCDEFGHIJKLMNOP"),
        wire("55 00 0010", t("ABCDEFGHIJKLMNOP")),
    ),
    Case(
        "extended_negotiation_empty",
        SOPClassExtendedNegotiationSubItem(CT, b""),
        wire("56 00 001b 0019", t(CT)),
    ),
    Case(
        "common_extended_negotiation_no_related",
        SOPClassCommonExtendedNegotiationSubItem(ENHANCED_CT, STORAGE_SERVICE),
        # 29 + 19 + 2 = 50 = 32H
        wire("57 00 0032 001b", t(ENHANCED_CT), "0011", t(STORAGE_SERVICE), "0000"),
    ),
    Case(
        "common_extended_negotiation_two_related",
        SOPClassCommonExtendedNegotiationSubItem(ENHANCED_CT, STORAGE_SERVICE, (CT, SC)),
        # 29 + 19 + 2 + 54 = 104 = 68H; related field 2 x (2 + 25) = 54 = 36H
        wire(
            "57 00 0068 001b",
            t(ENHANCED_CT),
            "0011",
            t(STORAGE_SERVICE),
            "0036 0019",
            t(CT),
            "0019",
            t(SC),
        ),
    ),
    Case(
        "user_identity_username",
        UserIdentityRQSubItem(1, False, b"user"),
        wire("58 00 000a 01 00 0004", t("user"), "0000"),  # secondary-field-length present, 0
    ),
    Case(
        "user_identity_jwt",
        UserIdentityRQSubItem(5, True, b"eyJhbGciOi.x.y"),
        wire("58 00 0014 05 01 000e", t("eyJhbGciOi.x.y"), "0000"),
    ),
    Case("user_identity_ac_empty", UserIdentityACSubItem(b""), wire("59 00 0002 0000")),
    Case("user_identity_ac", UserIdentityACSubItem(b"\x00\x01ticket"), wire("59 00 000a 0008 0001", t("ticket"))),
]

# Items, encode only (their decoding is covered by the PDUs above).
ITEMS = [
    Case("application_context", ApplicationContextItem(APP_CONTEXT), wire("10 00 0015", t(APP_CONTEXT))),
    Case(
        "presentation_context_rq",
        PresentationContextItemRQ(1, VERIFICATION, (IMPLICIT,)),
        wire("20 00 002e 01 00 00 00 30 00 0011", t(VERIFICATION), "40 00 0011", t(IMPLICIT)),
    ),
    Case(
        "presentation_context_ac_accepted",
        PresentationContextItemAC(1, 0, IMPLICIT),
        wire("21 00 0019 01 00 00 00 40 00 0011", t(IMPLICIT)),
    ),
    Case(
        "presentation_context_ac_rejected",
        PresentationContextItemAC(3, 3, ""),
        wire("21 00 0008 03 00 03 00 40 00 0000"),
    ),
    Case("user_information_empty", UserInformationItem(), wire("50 00 0000")),
    Case(
        "user_information_two",
        UserInformationItem((MaximumLengthSubItem(16384), ImplementationVersionNameSubItem("X"))),
        wire("50 00 000d 51 00 0004 00004000 55 00 0001 58"),
    ),
    Case(
        "presentation_data_value",
        PresentationDataValueItem(7, 0x03, b"xyz"),
        wire("00000005 07 03", t("xyz")),
    ),
]

# Non-canonical input: decodes to the object but the object encodes canonically.
DECODE_ONLY = [
    Case(
        "associate_rq_lenient",
        AAssociateRQ(
            "ANY-SCP",
            "STORESCU",
            APP_CONTEXT,
            (PresentationContextItemRQ(1, VERIFICATION, (IMPLICIT,)),),
            UserInformationItem((MaximumLengthSubItem(32768), ImplementationClassUIDSubItem("1.2.3.4.5.6.7.8.9"))),
            protocol_version=3,
        ),
        framed(
            0x01,
            "0003 abcd",  # protocol-version 3; reserved not 0000H (not tested)
            t("  ANY-SCP       "),  # leading and trailing spaces are not significant
            t("STORESCU        "),
            "ff" * 32,  # reserved, not tested
            "10 ff 0016",
            t(APP_CONTEXT),
            "00",  # UID padded with NUL; reserved byte not tested
            "7f 00 0003 010203",  # unrecognized item type: ignored and skipped (PS3.8 9.3.1)
            # 4 + 22 + 6 + 22 = 54 = 36H
            "20 ff 0036 01 ff ff ff",
            "30 00 0012",
            t(VERIFICATION),
            "00",
            "35 00 0002 abcd",  # unrecognized sub-item: skipped
            "40 00 0012",
            t(IMPLICIT),
            "20",  # UID padded with a space
            "50 00 0025",  # 7 + 8 + 22 = 37
            "5f 00 0003 aabbcc",  # unknown user information sub-item: skipped
            "51 00 0004 00008000",
            "52 00 0012",
            t("1.2.3.4.5.6.7.8.9"),
            "00",
        ),
    ),
    Case(
        "associate_rq_no_transfer_syntax",
        # PS3.8 9.3.2.2 wants one or more; decoded, left for negotiation to reject
        AAssociateRQ("ANY-SCP", "STORESCU", APP_CONTEXT, (PresentationContextItemRQ(1, VERIFICATION, ()),)),
        framed(
            0x01,
            "0001 0000",
            t("ANY-SCP         "),
            t("STORESCU        "),
            "00" * 32,
            "10 00 0015",
            t(APP_CONTEXT),
            "20 00 0019 01 00 00 00 30 00 0011",
            t(VERIFICATION),
            "50 00 0000",
        ),
    ),
    Case(
        "associate_ac_rejected_ts_not_tested",
        AAssociateAC(
            "ANY-SCP",
            "STORESCU",
            APP_CONTEXT,
            (
                PresentationContextItemAC(1, 3, ""),
                PresentationContextItemAC(3, 4, ""),
                PresentationContextItemAC(5, 1, ""),
                PresentationContextItemAC(7, 2, IMPLICIT),
            ),
        ),
        framed(
            0x02,
            "0001 0000",
            t("ANY-SCP         "),
            t("STORESCU        "),
            "00" * 32,
            "10 00 0015",
            t(APP_CONTEXT),
            # PS3.8 9.3.3.2: unless accepted, the TS sub-item is not significant, not tested
            "21 00 0004 01 00 03 00",  # no TS sub-item at all
            "21 00 0008 03 00 04 00 40 00 0010",  # TS sub-item overruns the item
            "21 00 000a 05 00 01 00 40 00 0002 fffe",  # non-ASCII
            "21 00 0019 07 00 02 00 40 00 0011",  # a readable one is kept
            t(IMPLICIT),
            "50 00 0000",
        ),
    ),
    Case("associate_rj_reserved_not_tested", AAssociateRJ(2, 3, 1), wire("03 00 00000004 ff 02 03 01")),
    Case("release_rq_reserved_not_tested", AReleaseRQ(), wire("05 00 00000004 deadbeef")),
    Case("release_rp_reserved_not_tested", AReleaseRP(), wire("06 00 00000004 ffffffff")),
    Case("abort_reserved_not_tested", AAbort(0, 0), wire("07 00 00000004 ffff 00 00")),
    Case("abort_user_reason_kept_raw", AAbort(0, 5), wire("07 00 00000004 0000 00 05")),
]


def _add_test(cls: type, name: str, function) -> None:
    function.__name__ = name
    setattr(cls, name, function)


def _decode_wire(raw: bytes):
    return decode_pdu(raw[0], raw[6:])


class RoundTripTests(SynchronousTestCase):
    """Each table case: encode gives the exact bytes; decode (and PDUReader) gives the object back."""

    def test_table_headers_consistent(self) -> None:
        """The hand-written PDU-length of every table case matches its body."""
        for case in ROUND_TRIP:
            (length,) = struct.unpack(">L", case.wire[2:6])
            self.assertEqual(length, len(case.wire) - 6, case.name)

    def test_table_covers_every_pdu_type(self) -> None:
        self.assertEqual({type(c.obj) for c in ROUND_TRIP}, set(PDU_TYPES.values()))
        for pdu_type, cls in PDU_TYPES.items():
            self.assertEqual(cls.PDU_TYPE, pdu_type)

    def test_table_covers_every_sub_item_type(self) -> None:
        seen = {type(s) for s in FULL_USER_INFORMATION_RQ.sub_items}
        seen |= {type(s) for s in ASSOCIATE_AC.user_information.sub_items}
        self.assertEqual(len(seen), 9)
        self.assertEqual({c.ITEM_TYPE for c in seen}, set(range(0x51, 0x5A)))

    def test_all_pdus_concatenated(self) -> None:
        """Every case in one stream, fed whole and in chunks of 7, comes out in order."""
        stream = b"".join(c.wire for c in ROUND_TRIP)
        expected = [c.obj for c in ROUND_TRIP]
        self.assertEqual(PDUReader().feed(stream), expected)
        reader = PDUReader()
        out = []
        for i in range(0, len(stream), 7):
            out.extend(reader.feed(stream[i : i + 7]))
        self.assertEqual(out, expected)


def _round_trip_tests(case: Case) -> None:
    def test_encode(self) -> None:
        self.assertEqual(case.obj.encode(), case.wire)

    def test_decode(self) -> None:
        self.assertEqual(_decode_wire(case.wire), case.obj)

    def test_reader_whole(self) -> None:
        self.assertEqual(PDUReader().feed(case.wire), [case.obj])

    def test_reader_byte_at_a_time(self) -> None:
        reader = PDUReader()
        out = []
        for i in range(len(case.wire)):
            got = reader.feed(case.wire[i : i + 1])
            if i < len(case.wire) - 1:
                self.assertEqual(got, [])
            out.extend(got)
        self.assertEqual(out, [case.obj])

    def test_reader_two_concatenated(self) -> None:
        self.assertEqual(PDUReader().feed(case.wire + case.wire), [case.obj, case.obj])

    for function in (test_encode, test_decode, test_reader_whole, test_reader_byte_at_a_time, test_reader_two_concatenated):
        _add_test(RoundTripTests, f"{function.__name__}_{case.name}", function)


def _decode_only_tests(case: Case) -> None:
    def test_decode(self) -> None:
        self.assertEqual(_decode_wire(case.wire), case.obj)

    def test_reader_byte_at_a_time(self) -> None:
        reader = PDUReader()
        out = []
        for i in range(len(case.wire)):
            out.extend(reader.feed(case.wire[i : i + 1]))
        self.assertEqual(out, [case.obj])

    def test_reader_two_concatenated(self) -> None:
        self.assertEqual(PDUReader().feed(case.wire + case.wire), [case.obj, case.obj])

    for function in (test_decode, test_reader_byte_at_a_time, test_reader_two_concatenated):
        _add_test(RoundTripTests, f"{function.__name__}_{case.name}", function)


def _sub_item_tests(case: Case) -> None:
    def test_encode(self) -> None:
        self.assertEqual(case.obj.encode(), case.wire)

    def test_decode(self) -> None:
        decoded = decode_pdu(0x01, rq_body_with_user_information(case.wire))
        self.assertEqual(decoded.user_information.sub_items, (case.obj,))

    _add_test(RoundTripTests, f"test_encode_sub_item_{case.name}", test_encode)
    _add_test(RoundTripTests, f"test_decode_sub_item_{case.name}", test_decode)


def _item_tests(case: Case) -> None:
    def test_encode(self) -> None:
        self.assertEqual(case.obj.encode(), case.wire)

    _add_test(RoundTripTests, f"test_encode_item_{case.name}", test_encode)


for _case in ROUND_TRIP:
    _round_trip_tests(_case)
for _case in DECODE_ONLY:
    _decode_only_tests(_case)
for _case in SUB_ITEMS:
    _sub_item_tests(_case)
for _case in ITEMS:
    _item_tests(_case)


class DetailTests(SynchronousTestCase):
    """Specific behaviours of the codec."""

    def test_reject_fields_are_enums(self) -> None:
        """PS3.8 9.3.4 Table 9-21: result, source and the reason of that source, as the A-ABORT's are."""
        reject = decode_pdu(0x03, bytes((0, 2, 3, 2)))
        self.assertEqual(
            (reject.result, reject.source, reject.reason),
            (RejectResult.REJECTED_TRANSIENT, RejectSource.SERVICE_PROVIDER_PRESENTATION, PresentationRejectReason.LOCAL_LIMIT_EXCEEDED),
        )
        self.assertIs(type(reject.reason), PresentationRejectReason)
        self.assertIs(decode_pdu(0x03, bytes((0, 1, 1, 7))).reason, UserRejectReason.CALLED_AE_TITLE_NOT_RECOGNIZED)

    def test_reserved_reject_values_stay_numbers(self) -> None:
        reject = decode_pdu(0x03, bytes((0, 1, 1, 9)))
        self.assertEqual((reject.result, reject.source, reject.reason), (RejectResult.REJECTED_PERMANENT, RejectSource.SERVICE_USER, 9))
        self.assertIs(type(reject.reason), int)

    def test_pdv_data_is_a_view_of_the_body(self) -> None:
        """P-DATA-TF fragments are memoryview slices of the body, not copies."""
        body = PDATA_WIRE[6:]
        decoded = decode_pdu(0x04, body)
        for item, original in zip(decoded.items, PDATA.items):
            self.assertIsInstance(item.data, memoryview)
            self.assertEqual(bytes(item.data), bytes(original.data))
            self.assertIs(item.data.obj, body)
        self.assertEqual([bytes(i.data) for i in decoded.items], [bytes(range(1, 9)), b"abcd", b"", b"\xaa\xbb\xcc"])

    def test_pdv_values(self) -> None:
        """decode_pdv_values: each item as (context ID, message control header, fragment), fragments views of the body."""
        body = PDATA_WIRE[6:]
        values = decode_pdv_values(body)
        self.assertEqual(
            [(c, m, bytes(d)) for c, m, d in values],
            [(1, 0x03, bytes(range(1, 9))), (1, 0x00, b"abcd"), (3, 0x02, b""), (3, 0x01, b"\xaa\xbb\xcc")],
        )
        self.assertTrue(all(type(d) is memoryview and d.obj is body for _, _, d in values))

    def test_received_pdata_makes_the_pdu(self) -> None:
        """ReceivedPDataTF.pdu() is what decode_pdu makes; pdv_values turns a PDataTF back into the tuples."""
        received = ReceivedPDataTF(decode_pdv_values(PDATA_WIRE[6:]))
        self.assertEqual(received.pdu(), PDATA)
        self.assertEqual(received.pdu(), decode_pdu(0x04, PDATA_WIRE[6:]))
        self.assertEqual(pdv_values(PDATA), [(i.context_id, i.message_control_header, i.data) for i in PDATA.items])
        self.assertEqual(pdv_values(received.pdu()), received.values)

    def test_pdv_flags(self) -> None:
        flags = [(i.is_command, i.is_last) for i in PDATA.items]
        self.assertEqual(flags, [(True, True), (False, False), (False, True), (True, False)])

    def test_encode_pdata_with_memoryview_data(self) -> None:
        """A decoded P-DATA-TF (memoryview fragments) re-encodes to the same bytes."""
        self.assertEqual(decode_pdu(0x04, PDATA_WIRE[6:]).encode(), PDATA_WIRE)

    def test_user_information_properties(self) -> None:
        info = ASSOCIATE_RQ.user_information
        self.assertEqual(info.maximum_length, 16384)
        self.assertEqual(info.implementation_class_uid, ICUID)
        self.assertEqual(info.implementation_version_name, "RADX_010")
        self.assertEqual(info.asynchronous_operations_window, AsynchronousOperationsWindowSubItem(5, 3))
        self.assertEqual(info.role_selections, (SCPSCURoleSelectionSubItem(CT, 0, 1),))
        self.assertEqual(info.user_identity, UserIdentityRQSubItem(2, True, b"user", b"pass"))
        self.assertEqual(info.extended_negotiations, (SOPClassExtendedNegotiationSubItem(CT, b"\x01\x00\x01"),))
        self.assertEqual(len(info.common_extended_negotiations), 1)
        self.assertEqual(ASSOCIATE_AC.user_information.user_identity, UserIdentityACSubItem(b"token-1"))

    def test_user_information_properties_absent(self) -> None:
        info = UserInformationItem()
        self.assertIsNone(info.maximum_length)
        self.assertIsNone(info.implementation_class_uid)
        self.assertIsNone(info.implementation_version_name)
        self.assertIsNone(info.asynchronous_operations_window)
        self.assertEqual(info.role_selections, ())
        self.assertIsNone(info.user_identity)

    def test_several_role_selections(self) -> None:
        body = rq_body_with_user_information(
            "54 00 0015 0011", t(VERIFICATION), "01 00", "54 00 001d 0019", t(CT), "00 01"
        )
        self.assertEqual(
            decode_pdu(0x01, body).user_information.role_selections,
            (SCPSCURoleSelectionSubItem(VERIFICATION, 1, 0), SCPSCURoleSelectionSubItem(CT, 0, 1)),
        )

    def test_ae_title_too_long(self) -> None:
        self.assertRaises(ValueError, AAssociateRQ("ABCDEFGHIJKLMNOPQ", "B").encode)
        self.assertRaises(ValueError, AAssociateRQ("A", "ABCDEFGHIJKLMNOPQ").encode)
        self.assertRaises(ValueError, AAssociateAC("ABCDEFGHIJKLMNOPQ", "B").encode)

    def test_ae_title_not_ascii(self) -> None:
        self.assertRaises(ValueError, AAssociateRQ("SCP\u00e9", "B").encode)

    def test_item_too_long(self) -> None:
        """An item-length is 16 bits: a longer value is a ValueError, not a struct.error."""
        self.assertRaises(ValueError, SOPClassExtendedNegotiationSubItem(CT, b"x" * 70000).encode)
        self.assertRaises(ValueError, ImplementationClassUIDSubItem("1" * 65536).encode)

    def test_version_name_too_long(self) -> None:
        self.assertRaises(ValueError, ImplementationVersionNameSubItem("ABCDEFGHIJKLMNOPQ").encode)

    def test_frozen(self) -> None:
        from dataclasses import FrozenInstanceError

        with self.assertRaises(FrozenInstanceError):
            ASSOCIATE_RQ.called_ae_title = "X"  # type: ignore[misc]

    def test_error_attributes(self) -> None:
        error = PDUDecodeError("boom")
        self.assertEqual(error.message, "boom")
        self.assertEqual(error.reason, INVALID)
        self.assertEqual(str(error), "boom")
        self.assertEqual(PDUDecodeError("x", UNEXPECTED).reason, UNEXPECTED)

    def test_enums(self) -> None:
        # PS3.8 9.3.8 Table 9-26
        self.assertEqual(
            [(r.name, r.value) for r in AbortReason],
            [
                ("REASON_NOT_SPECIFIED", 0),
                ("UNRECOGNIZED_PDU", 1),
                ("UNEXPECTED_PDU", 2),
                ("UNRECOGNIZED_PDU_PARAMETER", 4),
                ("UNEXPECTED_PDU_PARAMETER", 5),
                ("INVALID_PDU_PARAMETER_VALUE", 6),
            ],
        )
        self.assertEqual([(s.name, s.value) for s in AbortSource], [("SERVICE_USER", 0), ("SERVICE_PROVIDER", 2)])

    def test_ac_reserved_titles_not_tested(self) -> None:
        """The AE title fields of an A-ASSOCIATE-AC are reserved: garbage there is not an error."""
        raw = bytearray(MINIMAL_RQ_WIRE)
        raw[0] = 0x02
        raw[10:42] = b"\xff" * 32
        decoded = decode_pdu(0x02, bytes(raw[6:]))
        self.assertIsInstance(decoded, AAssociateAC)

    def test_pure_modules_import_only_stdlib(self) -> None:
        """radx.ul.pdu and radx.ul.framing import nothing from Twisted."""
        for module, allowed in ((pdu, set()), (framing, {"radx.ul.pdu"})):
            tree = ast.parse(inspect.getsource(module))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [node.module or ""]
                else:
                    continue
                for name in names:
                    self.assertFalse(name.startswith("twisted"), f"{module.__name__} imports {name}")
                    if name.startswith("radx"):
                        self.assertIn(name, allowed)


# ---------------------------------------------------------------------------
# Malformed input: (name, full PDU bytes, reason, a fragment of the message)


def _rq_with_items(*items: str | bytes) -> bytes:
    return framed(0x01, "0001 0000", t("ANY-SCP         "), t("STORESCU        "), "00" * 32, *items)


def _ac_with_items(*items: str | bytes) -> bytes:
    return framed(0x02, "0001 0000", t("ANY-SCP         "), t("STORESCU        "), "00" * 32, *items)


APP = ("10 00 0015", t(APP_CONTEXT))
NO_UI = "50 00 0000"


def _ui(*sub_items: str | bytes) -> bytes:
    return framed(0x01, rq_body_with_user_information(*sub_items))


class ErrorCase(NamedTuple):
    name: str
    wire: bytes
    reason: AbortReason
    fragment: str


ERRORS = [
    ErrorCase("rq_short_fixed_fields", framed(0x01, "0001 0000", "00" * 60), INVALID, "fixed fields"),
    ErrorCase("ac_short_fixed_fields", framed(0x02, "0001"), INVALID, "fixed fields"),
    ErrorCase("rq_no_application_context", _rq_with_items(NO_UI), INVALID, "no application context"),
    ErrorCase("rq_no_user_information", _rq_with_items(*APP), INVALID, "no user information"),
    ErrorCase("ac_no_user_information", _ac_with_items(*APP), INVALID, "no user information"),
    ErrorCase("rq_empty_variable_field", _rq_with_items(), INVALID, "no application context"),
    ErrorCase("rq_two_application_contexts", _rq_with_items(*APP, *APP, NO_UI), UNEXPECTED, "second application"),
    ErrorCase("rq_two_user_information", _rq_with_items(*APP, NO_UI, NO_UI), UNEXPECTED, "second user information"),
    ErrorCase(
        "rq_with_ac_context",
        _rq_with_items(*APP, "21 00 0008 01 00 00 00 40 00 0000", NO_UI),
        UNEXPECTED,
        "item 0x21",
    ),
    ErrorCase(
        "ac_with_rq_context",
        _ac_with_items(*APP, "20 00 0019 01 00 00 00 30 00 0011", t(VERIFICATION), NO_UI),
        UNEXPECTED,
        "item 0x20",
    ),
    ErrorCase("rq_sub_item_at_top_level", _rq_with_items(*APP, "51 00 0004 00004000", NO_UI), UNEXPECTED, "0x51"),
    ErrorCase("rq_item_overruns_pdu", _rq_with_items(*APP, "50 00 0010 5100"), INVALID, "item-length 16"),
    ErrorCase("rq_truncated_item_header", _rq_with_items(*APP, NO_UI, "50 00 00"), INVALID, "truncated item header"),
    ErrorCase(
        "rq_application_context_overruns",
        _rq_with_items("10 00 0016", t(APP_CONTEXT)),
        INVALID,
        "declares item-length 22",
    ),
    ErrorCase(
        "context_sub_item_overruns_item",
        _rq_with_items(*APP, "20 00 0019 01 00 00 00 30 00 0012", t(VERIFICATION), NO_UI),
        INVALID,
        "item 0x30",
    ),
    ErrorCase("context_too_short", _rq_with_items(*APP, "20 00 0003 01 00 00", NO_UI), INVALID, "too short"),
    ErrorCase(
        "context_no_abstract_syntax",
        _rq_with_items(*APP, "20 00 0019 01 00 00 00 40 00 0011", t(IMPLICIT), NO_UI),
        INVALID,
        "no abstract syntax",
    ),
    ErrorCase(
        "context_two_abstract_syntaxes",
        _rq_with_items(*APP, "20 00 002e 01 00 00 00 30 00 0011", t(VERIFICATION), "30 00 0011", t(VERIFICATION), NO_UI),
        UNEXPECTED,
        "second abstract syntax",
    ),
    ErrorCase(
        "context_with_user_information_inside",
        _rq_with_items(*APP, "20 00 001d 01 00 00 00 30 00 0011", t(VERIFICATION), "50 00 0000", NO_UI),
        UNEXPECTED,
        "item 0x50",
    ),
    ErrorCase(
        "abstract_syntax_not_ascii",
        _rq_with_items(*APP, "20 00 000a 01 00 00 00 30 00 0002 c3a9", NO_UI),
        INVALID,
        "not ASCII",
    ),
    ErrorCase(
        "called_ae_title_not_ascii",
        framed(0x01, "0001 0000", b"\xff" * 16, t("STORESCU        "), "00" * 32, *APP, NO_UI),
        INVALID,
        "called AE title is not ASCII",
    ),
    ErrorCase(
        "calling_ae_title_not_ascii",
        framed(0x01, "0001 0000", t("ANY-SCP         "), b"SCU\x80" + b" " * 12, "00" * 32, *APP, NO_UI),
        INVALID,
        "calling AE title is not ASCII",
    ),
    ErrorCase("application_context_not_ascii", _rq_with_items("10 00 0001 ff", NO_UI), INVALID, "not ASCII"),
    ErrorCase(
        "ac_accepted_without_transfer_syntax",
        _ac_with_items(*APP, "21 00 0004 01 00 00 00", NO_UI),
        INVALID,
        "no transfer syntax",
    ),
    ErrorCase(
        "ac_accepted_two_transfer_syntaxes",
        _ac_with_items(*APP, "21 00 0030 01 00 00 00 40 00 0011", t(IMPLICIT), "40 00 0013", t(EXPLICIT_LE), NO_UI),
        UNEXPECTED,
        "second transfer syntax",
    ),
    ErrorCase(
        "ac_accepted_transfer_syntax_overruns",
        _ac_with_items(*APP, "21 00 0008 01 00 00 00 40 00 0011", NO_UI),
        INVALID,
        "item 0x40",
    ),
    ErrorCase("ac_context_too_short", _ac_with_items(*APP, "21 00 0002 01 00", NO_UI), INVALID, "too short"),
    ErrorCase("maximum_length_short", _ui("51 00 0003 000040"), INVALID, "expected exactly 4"),
    ErrorCase("maximum_length_long", _ui("51 00 0005 0000400000"), INVALID, "expected exactly 4"),
    ErrorCase("async_window_short", _ui("53 00 0002 0001"), INVALID, "expected exactly 4"),
    ErrorCase("implementation_uid_not_ascii", _ui("52 00 0002 31ff"), INVALID, "not ASCII"),
    ErrorCase("version_name_not_ascii", _ui("55 00 0001 e9"), INVALID, "not ASCII"),
    ErrorCase("role_selection_empty", _ui("54 00 0000"), INVALID, "cut off"),
    ErrorCase("role_selection_uid_overruns", _ui("54 00 0005 0011 313233"), INVALID, "declares 17 bytes"),
    ErrorCase("role_selection_missing_roles", _ui("54 00 0014 0011", t(VERIFICATION), "01"), INVALID, "two role bytes"),
    ErrorCase(
        "role_selection_extra_bytes",
        _ui("54 00 0016 0011", t(VERIFICATION), "01 00 00"),
        INVALID,
        "two role bytes",
    ),
    ErrorCase("extended_negotiation_uid_overruns", _ui("56 00 0004 0019 3132"), INVALID, "declares 25 bytes"),
    ErrorCase(
        "common_extended_negotiation_trailing",
        _ui("57 00 0033 001b", t(ENHANCED_CT), "0011", t(STORAGE_SERVICE), "0000 ff"),
        INVALID,
        "unexpected bytes",
    ),
    ErrorCase(
        "common_extended_negotiation_no_related_length",
        _ui("57 00 0030 001b", t(ENHANCED_CT), "0011", t(STORAGE_SERVICE)),
        INVALID,
        "related general SOP class identification",
    ),
    ErrorCase(
        "common_extended_negotiation_related_overruns",
        _ui("57 00 0036 001b", t(ENHANCED_CT), "0011", t(STORAGE_SERVICE), "0004 0019 3132"),
        INVALID,
        "related general SOP class UID",
    ),
    ErrorCase("user_identity_short", _ui("58 00 0001 01"), INVALID, "too short"),
    ErrorCase("user_identity_no_secondary_length", _ui("58 00 0008 01 00 0004", t("user")), INVALID, "secondary"),
    ErrorCase("user_identity_primary_overruns", _ui("58 00 0006 01 00 0010 0000"), INVALID, "primary"),
    ErrorCase("user_identity_trailing", _ui("58 00 0008 01 00 0001 61 0000 ff"), INVALID, "unexpected bytes"),
    ErrorCase("user_identity_ac_trailing", _ui("59 00 0003 0000 ff"), INVALID, "unexpected bytes"),
    ErrorCase("user_identity_ac_overruns", _ui("59 00 0002 0005"), INVALID, "server response"),
    ErrorCase("user_information_misplaced_item", _ui("10 00 0000"), UNEXPECTED, "item 0x10"),
    ErrorCase("sub_item_overruns_user_information", _ui("51 00 0008 00004000"), INVALID, "item 0x51"),
    ErrorCase("pdata_empty", framed(0x04), INVALID, "no presentation data value"),
    ErrorCase("pdata_pdv_length_0", framed(0x04, "00000000 01 03"), INVALID, "item-length 0"),
    ErrorCase("pdata_pdv_length_1", framed(0x04, "00000001 01 03"), INVALID, "item-length 1"),
    ErrorCase("pdata_pdv_overruns", framed(0x04, "00000010 01 03 aabb"), INVALID, "item-length 16"),
    ErrorCase("pdata_truncated_second_header", framed(0x04, "00000002 01 03 000000"), INVALID, "truncated"),
    ErrorCase(
        "pdata_second_pdv_overruns",
        framed(0x04, "00000003 01 03 aa 00000004 01 02 bb"),
        INVALID,
        "byte 7",
    ),
    ErrorCase("rj_short", framed(0x03, "00 01 01"), INVALID, "must be 4"),
    ErrorCase("rj_long", framed(0x03, "00 01 01 01 00"), INVALID, "must be 4"),
    ErrorCase("release_rq_empty", framed(0x05), INVALID, "must be 4"),
    ErrorCase("release_rp_long", framed(0x06, "00" * 8), INVALID, "must be 4"),
    ErrorCase("abort_short", framed(0x07, "0000 02"), INVALID, "must be 4"),
]


class ErrorTests(SynchronousTestCase):
    """Each malformation raises PDUDecodeError with the right reason, from decode_pdu and from PDUReader."""

    def test_unrecognized_pdu_type(self) -> None:
        for pdu_type in (0, 8, 0x16, 0x47, 0xFF):
            with self.assertRaises(PDUDecodeError) as caught:
                decode_pdu(pdu_type, b"\x00\x00\x00\x00")
            self.assertEqual(caught.exception.reason, UNRECOGNIZED_PDU)
            self.assertIn(f"0x{pdu_type:02X}", caught.exception.message)


def _error_tests(case: ErrorCase) -> None:
    def test_decode(self) -> None:
        with self.assertRaises(PDUDecodeError) as caught:
            _decode_wire(case.wire)
        self.assertEqual(caught.exception.reason, case.reason)
        self.assertIn(case.fragment, caught.exception.message)

    def test_reader(self) -> None:
        reader = PDUReader()
        with self.assertRaises(PDUDecodeError) as caught:
            for i in range(len(case.wire)):
                reader.feed(case.wire[i : i + 1])
        self.assertEqual(caught.exception.reason, case.reason)

    def test_reader_values(self) -> None:
        """The same from a reader giving P-DATA-TF as values: whole, and a byte at a time."""
        for step in (len(case.wire), 1):
            reader = PDUReader(pdata_values=True)
            with self.assertRaises(PDUDecodeError) as caught:
                for i in range(0, len(case.wire), step):
                    reader.feed(case.wire[i : i + step])
            self.assertEqual(caught.exception.reason, case.reason)
            self.assertIn(case.fragment, caught.exception.message)

    _add_test(ErrorTests, f"test_decode_{case.name}", test_decode)
    _add_test(ErrorTests, f"test_reader_{case.name}", test_reader)
    _add_test(ErrorTests, f"test_reader_values_{case.name}", test_reader_values)


for _error in ERRORS:
    _error_tests(_error)


# ---------------------------------------------------------------------------
# pynetdicom as an independent oracle


class PynetdicomOracleTests(SynchronousTestCase):
    """The hand-written bytes agree with pynetdicom's encoder and decoder."""

    def _rq_primitive(self):
        from pynetdicom.pdu_primitives import (
            A_ASSOCIATE,
            AsynchronousOperationsWindowNegotiation,
            ImplementationClassUIDNotification,
            ImplementationVersionNameNotification,
            MaximumLengthNotification,
            SCP_SCU_RoleSelectionNegotiation,
            SOPClassCommonExtendedNegotiation,
            SOPClassExtendedNegotiation,
            UserIdentityNegotiation,
        )
        from pynetdicom.presentation import PresentationContext

        primitive = A_ASSOCIATE()
        primitive.application_context_name = APP_CONTEXT
        primitive.called_ae_title = "ANY-SCP"
        primitive.calling_ae_title = "STORESCU"
        contexts = []
        for context_id, abstract, syntaxes in (
            (1, VERIFICATION, [IMPLICIT, EXPLICIT_LE]),
            (3, CT, [EXPLICIT_LE, IMPLICIT, JPEG_BASELINE]),
            (5, SC, [EXPLICIT_BE]),
        ):
            context = PresentationContext()
            context.context_id = context_id
            context.abstract_syntax = abstract
            context.transfer_syntax = syntaxes
            contexts.append(context)
        primitive.presentation_context_definition_list = contexts
        maximum = MaximumLengthNotification()
        maximum.maximum_length_received = 16384
        uid = ImplementationClassUIDNotification()
        uid.implementation_class_uid = ICUID
        window = AsynchronousOperationsWindowNegotiation()
        window.maximum_number_operations_invoked = 5
        window.maximum_number_operations_performed = 3
        role = SCP_SCU_RoleSelectionNegotiation()
        role.sop_class_uid = CT
        role.scu_role = False
        role.scp_role = True
        version = ImplementationVersionNameNotification()
        version.implementation_version_name = "RADX_010"
        extended = SOPClassExtendedNegotiation()
        extended.sop_class_uid = CT
        extended.service_class_application_information = b"\x01\x00\x01"
        common = SOPClassCommonExtendedNegotiation()
        common.sop_class_uid = ENHANCED_CT
        common.service_class_uid = STORAGE_SERVICE
        common.related_general_sop_class_identification = [CT]
        identity = UserIdentityNegotiation()
        identity.user_identity_type = 2
        identity.positive_response_requested = True
        identity.primary_field = b"user"
        identity.secondary_field = b"pass"
        primitive.user_information = [maximum, uid, window, role, version, extended, common, identity]
        return primitive

    def test_rq_pynetdicom_encoder(self) -> None:
        """pynetdicom builds the same A-ASSOCIATE-RQ bytes from the same parameters."""
        from pynetdicom.pdu import A_ASSOCIATE_RQ

        theirs = A_ASSOCIATE_RQ()
        theirs.from_primitive(self._rq_primitive())
        self.assertEqual(theirs.encode(), ASSOCIATE_RQ_WIRE)

    def test_rq_pynetdicom_decoder(self) -> None:
        from pynetdicom.pdu import A_ASSOCIATE_RQ

        theirs = A_ASSOCIATE_RQ()
        theirs.decode(ASSOCIATE_RQ_WIRE)
        self.assertEqual(theirs.encode(), ASSOCIATE_RQ_WIRE)
        primitive = theirs.to_primitive()
        self.assertEqual(primitive.called_ae_title, "ANY-SCP")
        self.assertEqual(primitive.calling_ae_title, "STORESCU")
        self.assertEqual(primitive.application_context_name, APP_CONTEXT)
        self.assertEqual(
            [(c.context_id, c.abstract_syntax, list(c.transfer_syntax)) for c in primitive.presentation_context_definition_list],
            [(c.context_id, c.abstract_syntax, list(c.transfer_syntaxes)) for c in ASSOCIATE_RQ.presentation_contexts],
        )
        self._check_user_information(primitive.user_information, ASSOCIATE_RQ.user_information)

    def test_ac_pynetdicom_decoder(self) -> None:
        from pynetdicom.pdu import A_ASSOCIATE_AC

        theirs = A_ASSOCIATE_AC()
        theirs.decode(ASSOCIATE_AC_WIRE)
        # (pynetdicom cannot re-encode the empty transfer syntax sub-items of the rejected contexts)
        self.assertEqual(theirs.reserved_aet, "ANY-SCP")
        self.assertEqual(theirs.reserved_aec, "STORESCU")
        self.assertEqual(theirs.application_context_name, APP_CONTEXT)
        self.assertEqual(
            [(c.presentation_context_id, c.result_reason) for c in theirs.presentation_context],
            [(c.context_id, c.result) for c in ASSOCIATE_AC.presentation_contexts],
        )
        self.assertEqual(
            [c.transfer_syntax or "" for c in theirs.presentation_context],
            [c.transfer_syntax for c in ASSOCIATE_AC.presentation_contexts],
        )
        primitive = theirs.to_primitive()
        self._check_user_information(primitive.user_information, ASSOCIATE_AC.user_information)

    def test_ac_pynetdicom_encoder(self) -> None:
        """pynetdicom builds our bytes for an A-ASSOCIATE-AC with accepted contexts (it cannot express an empty TS)."""
        from pynetdicom.pdu import A_ASSOCIATE_AC
        from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification, UserIdentityNegotiation
        from pynetdicom.presentation import PresentationContext

        primitive = A_ASSOCIATE()
        primitive.application_context_name = APP_CONTEXT
        primitive.called_ae_title = "ANY-SCP"
        primitive.calling_ae_title = "STORESCU"
        primitive.result = 0
        contexts = []
        for context_id, result, syntax in ((1, 0, IMPLICIT), (3, 3, EXPLICIT_LE)):
            context = PresentationContext()
            context.context_id = context_id
            context.result = result
            context.transfer_syntax = [syntax]
            contexts.append(context)
        primitive.presentation_context_definition_results_list = contexts
        maximum = MaximumLengthNotification()
        maximum.maximum_length_received = 0
        identity = UserIdentityNegotiation()
        identity.server_response = b"ok"
        primitive.user_information = [maximum, identity]
        theirs = A_ASSOCIATE_AC()
        theirs.from_primitive(primitive)
        ours = AAssociateAC(
            "ANY-SCP",
            "STORESCU",
            presentation_contexts=(PresentationContextItemAC(1, 0, IMPLICIT), PresentationContextItemAC(3, 3, EXPLICIT_LE)),
            user_information=UserInformationItem((MaximumLengthSubItem(0), UserIdentityACSubItem(b"ok"))),
        )
        self.assertEqual(ours.encode(), theirs.encode())
        self.assertEqual(decode_pdu(0x02, theirs.encode()[6:]), ours)

    def _check_user_information(self, theirs: list, ours: UserInformationItem) -> None:
        from pynetdicom.pdu_primitives import (
            AsynchronousOperationsWindowNegotiation,
            ImplementationClassUIDNotification,
            ImplementationVersionNameNotification,
            MaximumLengthNotification,
            SCP_SCU_RoleSelectionNegotiation,
            SOPClassCommonExtendedNegotiation,
            SOPClassExtendedNegotiation,
            UserIdentityNegotiation,
        )

        by_type = {type(item): item for item in theirs}
        self.assertEqual(by_type[MaximumLengthNotification].maximum_length_received, ours.maximum_length)
        self.assertEqual(by_type[ImplementationClassUIDNotification].implementation_class_uid, ours.implementation_class_uid)
        self.assertEqual(
            by_type[ImplementationVersionNameNotification].implementation_version_name, ours.implementation_version_name
        )
        window = by_type[AsynchronousOperationsWindowNegotiation]
        self.assertEqual(
            (window.maximum_number_operations_invoked, window.maximum_number_operations_performed),
            (
                ours.asynchronous_operations_window.maximum_number_operations_invoked,
                ours.asynchronous_operations_window.maximum_number_operations_performed,
            ),
        )
        role = by_type[SCP_SCU_RoleSelectionNegotiation]
        self.assertEqual(
            (role.sop_class_uid, role.scu_role, role.scp_role),
            (ours.role_selections[0].sop_class_uid, bool(ours.role_selections[0].scu_role), bool(ours.role_selections[0].scp_role)),
        )
        extended = by_type[SOPClassExtendedNegotiation]
        self.assertEqual(
            (extended.sop_class_uid, extended.service_class_application_information),
            (ours.extended_negotiations[0].sop_class_uid, ours.extended_negotiations[0].service_class_application_information),
        )
        if ours.common_extended_negotiations:
            common = by_type[SOPClassCommonExtendedNegotiation]
            mine = ours.common_extended_negotiations[0]
            self.assertEqual(
                (common.sop_class_uid, common.service_class_uid, list(common.related_general_sop_class_identification)),
                (mine.sop_class_uid, mine.service_class_uid, list(mine.related_general_sop_class_uids)),
            )
        identity = by_type[UserIdentityNegotiation]
        mine = ours.user_identity
        if isinstance(mine, UserIdentityRQSubItem):
            self.assertEqual(
                (identity.user_identity_type, identity.positive_response_requested, identity.primary_field, identity.secondary_field),
                (mine.user_identity_type, mine.positive_response_requested, mine.primary_field, mine.secondary_field),
            )
        else:
            self.assertEqual(identity.server_response, mine.server_response)

    def test_other_pdus_pynetdicom(self) -> None:
        """pynetdicom decodes and re-encodes our bytes for the other PDU types unchanged."""
        from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_RJ, A_RELEASE_RP, A_RELEASE_RQ, P_DATA_TF

        classes = {0x03: A_ASSOCIATE_RJ, 0x04: P_DATA_TF, 0x05: A_RELEASE_RQ, 0x06: A_RELEASE_RP, 0x07: A_ABORT_RQ}
        for case in ROUND_TRIP:
            cls = classes.get(case.wire[0])
            if cls is None:
                continue
            theirs = cls()
            theirs.decode(case.wire)
            self.assertEqual(theirs.encode(), case.wire, case.name)
        theirs = P_DATA_TF()
        theirs.decode(PDATA_WIRE)
        self.assertEqual(
            [
                (pdv.presentation_context_id, pdv.presentation_data_value[0], pdv.presentation_data_value[1:])
                for pdv in theirs.presentation_data_value_items
            ],
            [(i.context_id, i.message_control_header, bytes(i.data)) for i in PDATA.items],
        )
        rj = A_ASSOCIATE_RJ()
        rj.decode(wire("03 00 00000004 00 02 03 01"))
        self.assertEqual((rj.result, rj.source, rj.reason_diagnostic), (2, 3, 1))
        abort = A_ABORT_RQ()
        abort.decode(wire("07 00 00000004 0000 02 06"))
        self.assertEqual((abort.source, abort.reason_diagnostic), (2, 6))


# ---------------------------------------------------------------------------
# Properties

# valid UIDs (PS3.5 9.1: no leading zeros in a component), so pydicom has nothing to warn about
_uid_text = st.from_regex(r"[12](\.(0|[1-9][0-9]{0,4})){1,6}", fullmatch=True)
# printable ASCII without space and backslash (pynetdicom refuses a backslash in an AE title, PS3.5 6.2 AE)
_ae_title = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="\\"), min_size=1, max_size=16
)
_context_rq = st.builds(
    PresentationContextItemRQ,
    st.integers(0, 255),
    _uid_text,
    st.lists(_uid_text, min_size=1, max_size=3).map(tuple),
)
_sub_item = st.one_of(
    st.builds(MaximumLengthSubItem, st.integers(0, 0xFFFFFFFF)),
    st.builds(ImplementationClassUIDSubItem, _uid_text),
    st.builds(AsynchronousOperationsWindowSubItem, st.integers(0, 65535), st.integers(0, 65535)),
    st.builds(SCPSCURoleSelectionSubItem, _uid_text, st.integers(0, 1), st.integers(0, 1)),
    st.builds(ImplementationVersionNameSubItem, _ae_title),
    st.builds(SOPClassExtendedNegotiationSubItem, _uid_text, st.binary(max_size=8)),
    st.builds(
        SOPClassCommonExtendedNegotiationSubItem,
        _uid_text,
        _uid_text,
        st.lists(_uid_text, max_size=2).map(tuple),
    ),
    # (a non-empty primary field: pynetdicom mis-encodes an empty one)
    st.builds(
        UserIdentityRQSubItem, st.integers(1, 5), st.booleans(), st.binary(min_size=1, max_size=8), st.binary(max_size=8)
    ),
    st.builds(UserIdentityACSubItem, st.binary(max_size=8)),
)
_associate_rq = st.builds(
    AAssociateRQ,
    _ae_title,
    _ae_title,
    _uid_text,
    st.lists(_context_rq, max_size=4).map(tuple),
    st.lists(_sub_item, max_size=6).map(lambda items: UserInformationItem(tuple(items))),
    st.integers(0, 65535),
)

_FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _feed_chunked(data: bytes, cuts: list[int]) -> list:
    """Feed ``data`` to a fresh PDUReader split at ``cuts``; return the PDUs or re-raise PDUDecodeError."""
    reader = PDUReader()
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    out = []
    try:
        for start, end in zip(points, points[1:]):
            out.extend(reader.feed(data[start:end]))
    except PDUDecodeError:
        # dead afterwards: raises again, never anything else
        try:
            reader.feed(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00")
        except PDUDecodeError:
            pass
        else:
            raise AssertionError("reader accepted data after failing")
        raise
    return out


class PropertyTests(SynchronousTestCase):
    """Arbitrary input never raises anything but PDUDecodeError; valid PDUs round-trip."""

    @_FAST
    @given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=8))
    def test_arbitrary_bytes(self, data: bytes, cuts: list[int]) -> None:
        try:
            pdus = _feed_chunked(data, cuts)
        except PDUDecodeError:
            return
        for item in pdus:
            self.assertIn(type(item), PDU_TYPES.values())

    @_FAST
    @given(st.integers(1, 7), st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=4))
    def test_well_framed_arbitrary_bodies(self, pdu_type: int, body: bytes, cuts: list[int]) -> None:
        """A correct header around arbitrary bytes reaches every decoder."""
        data = struct.pack(">BBL", pdu_type, 0, len(body)) + body
        try:
            _feed_chunked(data, cuts)
        except PDUDecodeError:
            pass

    @_FAST
    @given(
        st.sampled_from(ROUND_TRIP + DECODE_ONLY),
        st.lists(st.tuples(st.integers(0, 10000), st.integers(0, 255)), min_size=1, max_size=4),
        st.lists(st.integers(0, 700), max_size=4),
    )
    def test_mutated_table_cases(self, case: Case, mutations: list[tuple[int, int]], cuts: list[int]) -> None:
        """Valid PDUs with a few bytes changed (past the length field) decode or raise PDUDecodeError."""
        data = bytearray(case.wire)
        for position, value in mutations:
            if len(data) > 6:
                data[6 + position % (len(data) - 6)] = value
        try:
            _feed_chunked(bytes(data), cuts)
        except PDUDecodeError:
            pass

    @_FAST
    @given(
        st.sampled_from(ROUND_TRIP + DECODE_ONLY),
        st.integers(0, 10000),
        st.lists(st.integers(0, 700), max_size=4),
    )
    def test_truncated_table_cases(self, case: Case, cut: int, cuts: list[int]) -> None:
        """A PDU whose PDU-length is shortened to cut its body raises PDUDecodeError or decodes, nothing else."""
        body = case.wire[6:]
        body = body[: cut % (len(body) + 1)]
        data = case.wire[:2] + struct.pack(">L", len(body)) + body
        try:
            _feed_chunked(data, cuts)
        except PDUDecodeError:
            pass

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_associate_rq)
    def test_associate_rq_round_trip(self, rq: AAssociateRQ) -> None:
        """Any A-ASSOCIATE-RQ encodes, decodes back to itself, and pynetdicom reads the same contexts."""
        from pynetdicom.pdu import A_ASSOCIATE_RQ

        raw = rq.encode()
        self.assertEqual(PDUReader(maximum_other_length=0).feed(raw), [rq])
        theirs = A_ASSOCIATE_RQ()
        theirs.decode(raw)
        self.assertEqual(theirs.encode(), raw)
        self.assertEqual(
            [(c.context_id, str(c.abstract_syntax), [str(s) for s in c.transfer_syntax]) for c in theirs.presentation_context],
            [(c.context_id, c.abstract_syntax, list(c.transfer_syntaxes)) for c in rq.presentation_contexts],
        )
