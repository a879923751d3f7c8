"""Tests for radx.dimse.commands and radx.dimse.status."""

import struct
from io import BytesIO

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.filereader import read_dataset
from pynetdicom import dimse_messages, dimse_primitives, status as pynetdicom_status
from pynetdicom.dsutils import encode as pynetdicom_encode
from twisted.trial.unittest import SynchronousTestCase

from radx.dimse.commands import (
    AFFECTED_SOP_INSTANCE_UID,
    C_CANCEL_RQ,
    C_FIND_RQ,
    COMMAND_DATA_SET_TYPE,
    COMMAND_FIELD,
    CEchoRQ,
    CEchoRSP,
    CStoreRQ,
    CStoreRSP,
    DIMSEDecodeError,
    UnknownCommand,
    _DICTIONARY,
    _decode_value,
    decode_command,
    decode_command_set,
    encode_command_set,
    encode_response,
    has_data_set,
)
from radx.dimse.status import Status

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"

# Hypothesis settings: no example database in the work tree, no deadline
# (pynetdicom and pydicom are slow to warm up).
quick = settings(
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# The messages of PS3.7 9.3, by hand, one element a line: tag (group,
# element as little-endian US), value length (UL), value.

# C-ECHO-RQ, Message ID 7 (PS3.7 9.3.5.1).
C_ECHO_RQ_BYTES = bytes.fromhex(
    "0000 0000 04000000 38000000"  # (0000,0000) UL 4: 56 bytes follow
    "0000 0200 12000000"  # (0000,0002) UI 18: "1.2.840.10008.1.1" + NUL
    "312e322e3834302e31303030382e312e3100"
    "0000 0001 02000000 3000"  # (0000,0100) US: 0030H C-ECHO-RQ
    "0000 1001 02000000 0700"  # (0000,0110) US: Message ID 7
    "0000 0008 02000000 0101"  # (0000,0800) US: 0101H no data set
)

# C-ECHO-RSP to it, Success (PS3.7 9.3.5.2).
C_ECHO_RSP_BYTES = bytes.fromhex(
    "0000 0000 04000000 42000000"  # (0000,0000) UL 4: 66 bytes follow
    "0000 0200 12000000"  # (0000,0002) UI 18: "1.2.840.10008.1.1" + NUL
    "312e322e3834302e31303030382e312e3100"
    "0000 0001 02000000 3080"  # (0000,0100) US: 8030H C-ECHO-RSP
    "0000 2001 02000000 0700"  # (0000,0120) US: responds to Message ID 7
    "0000 0008 02000000 0101"  # (0000,0800) US: 0101H no data set
    "0000 0009 02000000 0000"  # (0000,0900) US: Status 0000H Success
)

# C-STORE-RQ, Message ID 3, CT Image Storage, LOW priority, sent for a
# C-MOVE (PS3.7 9.3.1.1).
C_STORE_RQ_BYTES = bytes.fromhex(
    "0000 0000 04000000 74000000"  # (0000,0000) UL 4: 116 bytes follow
    "0000 0200 1a000000"  # (0000,0002) UI 26: "1.2.840.10008.5.1.4.1.1.2" + NUL
    "312e322e3834302e31303030382e352e312e342e312e312e3200"
    "0000 0001 02000000 0100"  # (0000,0100) US: 0001H C-STORE-RQ
    "0000 1001 02000000 0300"  # (0000,0110) US: Message ID 3
    "0000 0007 02000000 0200"  # (0000,0700) US: Priority 0002H LOW
    "0000 0008 02000000 0100"  # (0000,0800) US: 0001H data set present
    "0000 0010 08000000"  # (0000,1000) UI 8: "1.2.3.4" + NUL
    "312e322e332e3400"
    "0000 3010 08000000"  # (0000,1030) AE 8: "MOVESCU" + space
    "4d4f564553435520"
    "0000 3110 02000000 0900"  # (0000,1031) US: Move Originator Message ID 9
)

# C-STORE-RSP to it: B000H Coercion, with an Offending Element and an
# Error Comment (PS3.7 9.3.1.2).
C_STORE_RSP_BYTES = bytes.fromhex(
    "0000 0000 04000000 70000000"  # (0000,0000) UL 4: 112 bytes follow
    "0000 0200 1a000000"  # (0000,0002) UI 26: "1.2.840.10008.5.1.4.1.1.2" + NUL
    "312e322e3834302e31303030382e352e312e342e312e312e3200"
    "0000 0001 02000000 0180"  # (0000,0100) US: 8001H C-STORE-RSP
    "0000 2001 02000000 0300"  # (0000,0120) US: responds to Message ID 3
    "0000 0008 02000000 0101"  # (0000,0800) US: 0101H no data set
    "0000 0009 02000000 00b0"  # (0000,0900) US: Status B000H
    "0000 0109 04000000 10001000"  # (0000,0901) AT: (0010,0010)
    "0000 0209 02000000 7820"  # (0000,0902) LO 2: "x" + space
    "0000 0010 08000000"  # (0000,1000) UI 8: "1.2.3.4" + NUL
    "312e322e332e3400"
)

C_ECHO_RQ_COMMAND = CEchoRQ(message_id=7)
C_ECHO_RSP_COMMAND = CEchoRSP(message_id_being_responded_to=7, status=0x0000)
C_STORE_RQ_COMMAND = CStoreRQ(
    message_id=3,
    affected_sop_class_uid=CT_IMAGE_STORAGE,
    affected_sop_instance_uid="1.2.3.4",
    priority=0x0002,
    move_originator_application_entity_title="MOVESCU",
    move_originator_message_id=9,
)
C_STORE_RSP_COMMAND = CStoreRSP(
    message_id_being_responded_to=3,
    status=Status.COERCION_OF_DATA_ELEMENTS,
    affected_sop_class_uid=CT_IMAGE_STORAGE,
    affected_sop_instance_uid="1.2.3.4",
    error_comment="x",
    offending_element=(0x00100010,),
)

TABLES = [
    (C_ECHO_RQ_BYTES, C_ECHO_RQ_COMMAND),
    (C_ECHO_RSP_BYTES, C_ECHO_RSP_COMMAND),
    (C_STORE_RQ_BYTES, C_STORE_RQ_COMMAND),
    (C_STORE_RSP_BYTES, C_STORE_RSP_COMMAND),
]


def element(tag, value):
    """Encode one Implicit VR Little Endian element by hand."""
    return (
        (tag >> 16).to_bytes(2, "little")
        + (tag & 0xFFFF).to_bytes(2, "little")
        + len(value).to_bytes(4, "little")
        + value
    )


def command_set(*elements):
    """Prefix elements with a right (0000,0000) Command Group Length."""
    body = b"".join(elements)
    return element(0x00000000, len(body).to_bytes(4, "little")) + body


def us(value):
    return value.to_bytes(2, "little")


def read_with_pydicom(data):
    """Decode a command set with pydicom, the independent oracle."""
    return read_dataset(BytesIO(data), is_implicit_VR=True, is_little_endian=True)


def encode_with_pynetdicom(message_class, primitive):
    """Encode a DIMSE primitive's command set with pynetdicom."""
    message = message_class()
    message.primitive_to_message(primitive)
    return pynetdicom_encode(message.command_set, True, True)


uids = st.from_regex(r"[1-9][0-9]{0,4}(\.(0|[1-9][0-9]{0,4})){1,9}", fullmatch=True)
ae_titles = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=1, max_size=16
)
us_values = st.integers(min_value=0, max_value=0xFFFF)
priorities = st.sampled_from([0x0000, 0x0001, 0x0002])
error_comments = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="\\"),
    min_size=1,
    max_size=64,
)
# Tags of data elements for (0000,0901) Offending Element: not group 0000.
data_tags = st.integers(min_value=0x00080000, max_value=0xFFFFFFFF)

commands = st.one_of(
    st.builds(CEchoRQ, us_values, uids),
    st.builds(CEchoRSP, us_values, us_values, st.none() | uids),
    st.builds(
        CStoreRQ,
        us_values,
        uids,
        uids,
        priorities,
        st.none() | ae_titles,
        st.none() | us_values,
    ),
    st.builds(
        CStoreRSP,
        us_values,
        us_values,
        st.none() | uids,
        st.none() | uids,
        st.none() | error_comments,
        st.none() | st.lists(data_tags, min_size=1, max_size=3).map(tuple),
    ),
)


class StatusTests(SynchronousTestCase):
    """
    The values of L{Status} are those PS3.7 C and PS3.4 B.2.3 give, by
    pynetdicom's tables.
    """

    def test_values(self):
        expected = {
            Status.SUCCESS: ("Success", ""),
            Status.OUT_OF_RESOURCES: ("Failure", "Refused: Out of Resources"),
            Status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS: (
                "Failure",
                "Data Set Does Not Match SOP Class",
            ),
            Status.CANNOT_UNDERSTAND: ("Failure", "Cannot Understand"),
            Status.COERCION_OF_DATA_ELEMENTS: ("Warning", "Coercion of Data Elements"),
            Status.ELEMENTS_DISCARDED: ("Warning", "Element Discarded"),
            Status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING: (
                "Warning",
                "Data Set Does Not Match SOP Class",
            ),
            Status.SOP_CLASS_NOT_SUPPORTED: (
                "Failure",
                "Refused: SOP Class Not Supported",
            ),
            Status.UNRECOGNIZED_OPERATION: ("Failure", "Unrecognised Operation"),
            Status.DUPLICATE_INVOCATION: ("Failure", "Duplicate Invocation"),
            Status.INVALID_ARGUMENT_VALUE: ("Failure", "Invalid Argument Value"),
            Status.INVALID_OBJECT_INSTANCE: ("Failure", "Invalid Object Instance"),
            Status.MISTYPED_ARGUMENT: ("Failure", "Mistyped Argument"),
            Status.PROCESSING_FAILURE: ("Failure", "Processing Failure"),
            Status.DUPLICATE_SOP_INSTANCE: ("Failure", "Duplication SOP Instance"),
            Status.REFUSED_NOT_AUTHORIZED: ("Failure", "Refused: Not Authorised"),
        }
        self.assertEqual(set(expected), set(Status))
        for member, meaning in expected.items():
            self.assertEqual(
                pynetdicom_status.STORAGE_SERVICE_CLASS_STATUS[member],
                meaning,
                member.name,
            )


class ByteTableTests(SynchronousTestCase):
    """The hand-written byte tables, both ways."""

    def test_encode(self):
        for data, command in TABLES:
            self.assertEqual(command.encode(), data, command)

    def test_decode(self):
        for data, command in TABLES:
            self.assertEqual(decode_command(data), command)

    def test_decode_memoryview(self):
        for data, command in TABLES:
            self.assertEqual(decode_command(memoryview(data)), command)

    def test_decode_command_set(self):
        self.assertEqual(
            decode_command_set(C_STORE_RSP_BYTES),
            {
                0x00000000: 112,
                0x00000002: CT_IMAGE_STORAGE,
                0x00000100: 0x8001,
                0x00000120: 3,
                0x00000800: 0x0101,
                0x00000900: 0xB000,
                0x00000901: (0x00100010,),
                0x00000902: "x",
                0x00001000: "1.2.3.4",
            },
        )

    def test_echo_defaults(self):
        """
        C-ECHO messages default to the Verification SOP Class and, for the
        response, Success.
        """
        self.assertEqual(C_ECHO_RQ_COMMAND.affected_sop_class_uid, "1.2.840.10008.1.1")
        self.assertEqual(C_ECHO_RSP_COMMAND.affected_sop_class_uid, "1.2.840.10008.1.1")
        self.assertEqual(CEchoRSP(1).status, Status.SUCCESS)

    def test_to_elements_from_elements(self):
        for data, command in TABLES:
            self.assertEqual(type(command).from_elements(command.to_elements()), command)


class EncodeTests(SynchronousTestCase):
    """L{encode_command_set}."""

    def test_order_and_group_length(self):
        """
        Elements go in ascending tag order after a computed (0000,0000); a
        given group length and L{None} values are ignored.
        """
        self.assertEqual(
            encode_command_set(
                {0x00000800: 0x0101, 0x00000000: 999, 0x00000100: 0x0030, 0x00001030: None}
            ),
            command_set(element(0x00000100, us(0x0030)), element(0x00000800, us(0x0101))),
        )

    def test_padding(self):
        """UIDs take a NUL to even length, other strings a space (PS3.5 9.1)."""
        self.assertEqual(
            encode_command_set({0x00000002: "1.2.3", 0x00000600: "ABC", 0x00000902: "ab"}),
            command_set(
                element(0x00000002, b"1.2.3\0"),
                element(0x00000600, b"ABC "),
                element(0x00000902, b"ab"),
            ),
        )

    def test_ul_and_at(self):
        self.assertEqual(
            encode_command_set({0x00000901: (0x00100010, 0x7FE00010), 0x00001005: 0x00080018}),
            command_set(
                element(0x00000901, bytes.fromhex("10001000 e07f1000")),
                element(0x00001005, bytes.fromhex("08001800")),
            ),
        )

    def test_unknown_tag_raw(self):
        """A tag PS3.7 E.1 does not define takes raw bytes of even length."""
        self.assertEqual(
            encode_command_set({0x00000001: b"\x01\x02"}),
            command_set(element(0x00000001, b"\x01\x02")),
        )
        self.assertRaises(ValueError, encode_command_set, {0x00000001: b"\x01"})
        self.assertRaises(TypeError, encode_command_set, {0x00000001: 1})

    def test_bad_values(self):
        for elements in [
            {0x00080018: b"12"},  # outside group 0000
            {0x00000110: 0x10000},  # US too big
            {0x00000110: -1},
            {0x00000002: "1." * 33},  # UI beyond 64 characters
            {0x00000600: "A" * 17},  # AE beyond 16 characters
            {0x00000902: "é"},  # not the default repertoire
            {0x00000901: -1},  # not a tag
        ]:
            self.assertRaises((ValueError, TypeError), encode_command_set, elements)

    def test_error_comment_fitted(self):
        """A C-STORE-RSP's error comment is cut to 64 characters of LO."""
        rsp = CStoreRSP(1, 0xC000, None, None, error_comment="a\\b\né" + "z" * 100)
        self.assertEqual(rsp.error_comment, "a?b??" + "z" * 59)
        self.assertEqual(decode_command(rsp.encode()), rsp)

    def test_offending_element_int(self):
        rsp = CStoreRSP(1, 0xC000, None, None, offending_element=0x00100020)
        self.assertEqual(rsp.offending_element, (0x00100020,))

    def test_optional_uids_left_out(self):
        """L{None} leaves out the optional elements of a response."""
        elements = decode_command_set(CStoreRSP(1, 0, None, None).encode())
        self.assertEqual(
            elements,
            {0x00000000: 40, 0x00000100: 0x8001, 0x00000120: 1, 0x00000800: 0x0101, 0x00000900: 0},
        )
        self.assertEqual(
            set(decode_command_set(CEchoRSP(1, 0, None).encode())),
            {0x00000000, 0x00000100, 0x00000120, 0x00000800, 0x00000900},
        )

    @quick
    @given(commands)
    def test_round_trip(self, command):
        self.assertEqual(decode_command(command.encode()), command)


class InLineDecodingTests(SynchronousTestCase):
    """decode_command_set decodes US and UI in line: the same values, and the same errors, as element by element."""

    def decoded(self, tag: int, raw: bytes):
        """(value, None) or (None, error message) for one element after a Command Field."""
        body = struct.pack("<HHIH", 0, 0x0100, 2, 0x0030) + struct.pack("<HHI", 0, tag, len(raw)) + raw
        data = struct.pack("<HHII", 0, 0, 4, len(body)) + body
        try:
            return decode_command_set(data)[tag], None
        except DIMSEDecodeError as error:
            return None, str(error)

    def expected(self, tag: int, raw: bytes):
        try:
            return _decode_value(tag, raw), None
        except DIMSEDecodeError as error:
            return None, str(error)

    @quick
    @given(st.sampled_from(sorted(set(_DICTIONARY) - {0x0000, 0x0100}) + [0x0004, 0x5010]), st.binary(max_size=70))
    def test_as_element_by_element(self, tag, raw):
        raw += b"\x00" * (len(raw) % 2)
        self.assertEqual(self.decoded(tag, raw), self.expected(tag, raw))

    def test_the_in_line_cases(self):
        self.assertEqual(self.decoded(0x0110, b"\x07\x00"), (7, None))
        self.assertEqual(self.decoded(0x0002, b"1.2.3\x00"), ("1.2.3", None))
        self.assertEqual(self.decoded(0x0002, b"1.2 "), ("1.2", None))
        self.assertEqual(self.decoded(0x0002, b""), ("", None))
        self.assertEqual(self.decoded(0x0110, b""), (None, None))
        self.assertEqual(self.decoded(0x0110, b"\x01\x00\x00\x00")[1], "(0000,0110) Message ID is US: 4 bytes, not 2")
        self.assertEqual(
            self.decoded(0x0002, b"1.\xe9\x00")[1],
            "(0000,0002) Affected SOP Class UID is not in the default character repertoire",
        )


class OracleTests(SynchronousTestCase):
    """
    Cross-checks with pynetdicom, which encodes with pydicom, and pydicom's
    reader.
    """

    def assertMatchesPydicom(self, command):
        """Our encoding of a command reads back in pydicom with its values."""
        data = command.encode()
        ds = read_with_pydicom(data)
        ours = decode_command_set(data)
        self.assertEqual(set(ours), {int(tag) for tag in ds.keys()})
        for elem in ds:
            value = elem.value
            if elem.VR == "AT":
                value = tuple(value) if elem.VM > 1 else (value,)
            self.assertEqual(ours[int(elem.tag)], value, elem)

    def test_pynetdicom_c_echo_rq(self):
        primitive = dimse_primitives.C_ECHO()
        primitive.MessageID = 7
        primitive.AffectedSOPClassUID = "1.2.840.10008.1.1"
        data = encode_with_pynetdicom(dimse_messages.C_ECHO_RQ, primitive)
        self.assertEqual(data, C_ECHO_RQ_BYTES)
        self.assertEqual(decode_command(data), C_ECHO_RQ_COMMAND)

    def test_pynetdicom_c_store_rsp(self):
        primitive = dimse_primitives.C_STORE()
        primitive.MessageIDBeingRespondedTo = 3
        primitive.Status = 0xB000
        primitive.AffectedSOPClassUID = CT_IMAGE_STORAGE
        primitive.AffectedSOPInstanceUID = "1.2.3.4"
        primitive.ErrorComment = "x"
        primitive.OffendingElement = [0x00100010]
        data = encode_with_pynetdicom(dimse_messages.C_STORE_RSP, primitive)
        self.assertEqual(data, C_STORE_RSP_BYTES)
        self.assertEqual(decode_command(data), C_STORE_RSP_COMMAND)

    @quick
    @given(us_values, uids)
    def test_pynetdicom_c_echo_rq_any(self, message_id, sop_class):
        primitive = dimse_primitives.C_ECHO()
        primitive.MessageID = message_id
        primitive.AffectedSOPClassUID = sop_class
        data = encode_with_pynetdicom(dimse_messages.C_ECHO_RQ, primitive)
        self.assertEqual(decode_command(data), CEchoRQ(message_id, sop_class))

    @quick
    @given(us_values, us_values)
    def test_pynetdicom_c_echo_rsp_any(self, message_id, status):
        primitive = dimse_primitives.C_ECHO()
        primitive.MessageIDBeingRespondedTo = message_id
        primitive.Status = status
        primitive.AffectedSOPClassUID = "1.2.840.10008.1.1"
        data = encode_with_pynetdicom(dimse_messages.C_ECHO_RSP, primitive)
        self.assertEqual(decode_command(data), CEchoRSP(message_id, status))

    @quick
    @given(us_values, uids, uids, priorities, st.none() | ae_titles, st.none() | us_values)
    def test_pynetdicom_c_store_rq_any(
        self, message_id, sop_class, sop_instance, priority, originator, originator_id
    ):
        primitive = dimse_primitives.C_STORE()
        primitive.MessageID = message_id
        primitive.AffectedSOPClassUID = sop_class
        primitive.AffectedSOPInstanceUID = sop_instance
        primitive.Priority = priority
        if originator is not None:
            primitive.MoveOriginatorApplicationEntityTitle = originator
        if originator_id is not None:
            primitive.MoveOriginatorMessageID = originator_id
        primitive.DataSet = BytesIO(b"\x08\x00\x18\x00\x00\x00\x00\x00")
        data = encode_with_pynetdicom(dimse_messages.C_STORE_RQ, primitive)
        self.assertEqual(
            decode_command(data),
            CStoreRQ(
                message_id, sop_class, sop_instance, priority, originator, originator_id
            ),
        )

    @quick
    @given(us_values, us_values, uids, uids, st.none() | error_comments)
    def test_pynetdicom_c_store_rsp_any(
        self, message_id, status, sop_class, sop_instance, comment
    ):
        primitive = dimse_primitives.C_STORE()
        primitive.MessageIDBeingRespondedTo = message_id
        primitive.Status = status
        primitive.AffectedSOPClassUID = sop_class
        primitive.AffectedSOPInstanceUID = sop_instance
        if comment is not None:
            primitive.ErrorComment = comment
        data = encode_with_pynetdicom(dimse_messages.C_STORE_RSP, primitive)
        self.assertEqual(
            decode_command(data),
            CStoreRSP(message_id, status, sop_class, sop_instance, comment),
        )

    def test_pydicom_reads_tables(self):
        for data, command in TABLES:
            self.assertMatchesPydicom(command)

    @quick
    @given(commands)
    def test_pydicom_reads_ours(self, command):
        self.assertMatchesPydicom(command)

    def test_pydicom_reads_response(self):
        ds = read_with_pydicom(encode_response(C_FIND_RQ, 12, Status.UNRECOGNIZED_OPERATION))
        self.assertEqual(ds.CommandField, 0x8020)
        self.assertEqual(ds.MessageIDBeingRespondedTo, 12)
        self.assertEqual(ds.CommandDataSetType, 0x0101)
        self.assertEqual(ds.Status, 0x0211)
        self.assertNotIn("AffectedSOPClassUID", ds)


class DecodeTests(SynchronousTestCase):
    """Details of decoding."""

    def test_padding_stripped(self):
        """
        UIDs lose trailing NULs or spaces; AE and LO leading and trailing
        spaces (PS3.5 6.2).
        """
        elements = decode_command_set(
            command_set(
                element(0x00000002, b"1.2.3 "),
                element(0x00000100, us(0x0030)),
                element(0x00000600, b" AE  "[:4]),
                element(0x00000902, b"  hi"),
            )
        )
        self.assertEqual(elements[0x00000002], "1.2.3")
        self.assertEqual(elements[0x00000600], "AE")
        self.assertEqual(elements[0x00000902], "hi")

    def test_unknown_tags_raw(self):
        """Tags PS3.7 E.1 does not define (retired ones too) stay bytes."""
        elements = decode_command_set(
            command_set(
                element(0x00000001, b"\x01\x02\x03\x04"),
                element(0x00000100, us(0x0030)),
                element(0x00004000, b"AB"),
            )
        )
        self.assertEqual(elements[0x00000001], b"\x01\x02\x03\x04")
        self.assertEqual(elements[0x00004000], b"AB")

    def test_empty_values(self):
        """A zero-length US is None; an optional empty element is absent."""
        data = command_set(
            element(0x00000002, C_STORE_RQ_COMMAND.affected_sop_class_uid.encode() + b"\0"),
            element(0x00000100, us(0x0001)),
            element(0x00000110, us(3)),
            element(0x00000700, us(2)),
            element(0x00000800, us(0x0000)),
            element(0x00001000, b"1.2.3.4\0"),
            element(0x00001030, b""),
            element(0x00001031, b""),
        )
        self.assertIsNone(decode_command_set(data)[0x00001031])
        self.assertEqual(
            decode_command(data),
            CStoreRQ(3, CT_IMAGE_STORAGE, "1.2.3.4", 2),
        )

    def test_out_of_order_accepted(self):
        """Elements out of ascending order still decode."""
        data = command_set(
            element(0x00000800, us(0x0101)),
            element(0x00000100, us(0x0030)),
            element(0x00000110, us(7)),
            element(0x00000002, b"1.2.840.10008.1.1\0"),
        )
        self.assertEqual(decode_command(data), C_ECHO_RQ_COMMAND)

    def test_unknown_command(self):
        """
        A command radx does not implement decodes as L{UnknownCommand},
        which carries what a response needs.
        """
        data = command_set(
            element(0x00000002, b"1.2.840.10008.5.1.4.1.2.1.1\0"),
            element(0x00000100, us(C_FIND_RQ)),
            element(0x00000110, us(44)),
            element(0x00000700, us(0)),
            element(0x00000800, us(0x0102)),
        )
        command = decode_command(data)
        self.assertIsInstance(command, UnknownCommand)
        self.assertEqual(command.command_field, C_FIND_RQ)
        self.assertEqual(command.message_id, 44)
        self.assertEqual(command.name, "C-FIND-RQ")
        self.assertTrue(command.expects_response)
        self.assertTrue(has_data_set(command))
        self.assertEqual(command.elements, decode_command_set(data))
        self.assertEqual(command.encode(), data)
        self.assertEqual(UnknownCommand.from_elements(command.to_elements()), command)

    def test_unknown_command_without_response(self):
        cancel = decode_command(
            command_set(
                element(0x00000100, us(C_CANCEL_RQ)),
                element(0x00000120, us(44)),
                element(0x00000800, us(0x0101)),
            )
        )
        self.assertEqual(cancel.name, "C-CANCEL-RQ")
        self.assertIsNone(cancel.message_id)
        self.assertFalse(cancel.expects_response)
        response = decode_command(encode_response(C_FIND_RQ, 44, 0))
        self.assertEqual(response.name, "C-FIND-RSP")
        self.assertFalse(response.expects_response)
        self.assertEqual(decode_command(command_set(element(0x100, us(0x7777)))).name, "0x7777")

    def test_has_data_set(self):
        """PS3.7 E.1: 0101H means no data set, anything else one."""
        self.assertTrue(has_data_set(C_STORE_RQ_COMMAND))
        for command in [C_ECHO_RQ_COMMAND, C_ECHO_RSP_COMMAND, C_STORE_RSP_COMMAND]:
            self.assertFalse(has_data_set(command))
        for value, expected in [
            (0x0101, False),
            (0x0000, True),
            (0x0001, True),
            (0x0102, True),
            (0xFEFE, True),
        ]:
            self.assertEqual(has_data_set({COMMAND_DATA_SET_TYPE: value}), expected)
            self.assertEqual(
                has_data_set(UnknownCommand(0x0020, 1, {COMMAND_DATA_SET_TYPE: value})),
                expected,
            )
        self.assertFalse(has_data_set({COMMAND_FIELD: 0x0020}))

    def test_c_store_rq_data_set_types(self):
        """A C-STORE-RQ's data set may be flagged by any value but 0101H."""
        for value in (0x0000, 0x0001, 0x0102):
            elements = C_STORE_RQ_COMMAND.to_elements()
            elements[COMMAND_DATA_SET_TYPE] = value
            self.assertEqual(
                decode_command(encode_command_set(elements)), C_STORE_RQ_COMMAND
            )

    def test_encode_response(self):
        data = encode_response(
            C_FIND_RQ,
            12,
            Status.UNRECOGNIZED_OPERATION,
            "1.2.840.10008.5.1.4.1.2.1.1",
            error_comment="C-FIND is not supported",
        )
        self.assertEqual(
            decode_command_set(data),
            {
                0x00000000: len(data) - 12,
                0x00000002: "1.2.840.10008.5.1.4.1.2.1.1",
                0x00000100: 0x8020,
                0x00000120: 12,
                0x00000800: 0x0101,
                0x00000900: 0x0211,
                0x00000902: "C-FIND is not supported",
            },
        )

    def test_encode_response_refused(self):
        """Responses and C-CANCEL-RQ get no response (PS3.7 9.3.2.3)."""
        self.assertRaises(ValueError, encode_response, 0x8020, 1, 0x0211)
        self.assertRaises(ValueError, encode_response, C_CANCEL_RQ, 1, 0x0211)


class DecodeErrorTests(SynchronousTestCase):
    """What L{decode_command} refuses, and that it says why."""

    def assertDecodeError(self, data, *words):
        error = self.assertRaises(DIMSEDecodeError, decode_command, data)
        for word in words:
            self.assertIn(word, error.message)
        self.assertEqual(str(error), error.message)
        return error

    def test_empty(self):
        self.assertDecodeError(b"", "(0000,0000)", "missing")

    def test_every_truncation(self):
        """Every proper prefix of a command set is refused."""
        for data, command in TABLES:
            for end in range(len(data)):
                self.assertRaises(DIMSEDecodeError, decode_command, data[:end])

    def test_truncated_value(self):
        """A value cut short is truncation; whole elements cut off, a wrong group length."""
        self.assertDecodeError(C_ECHO_RQ_BYTES[:10], "truncated", "(0000,0000)")
        self.assertDecodeError(
            command_set(element(0x100, us(0x30)), b"\x00\x00\x01"), "truncated", "too few"
        )
        self.assertDecodeError(
            command_set(element(0x100, us(0x30)), element(0x110, b"")[:4] + b"\x09\0\0\0"),
            "truncated",
            "(0000,0110)",
        )
        self.assertDecodeError(C_ECHO_RQ_BYTES[:-1], "(0000,0000)", "56", "55")
        self.assertDecodeError(C_ECHO_RQ_BYTES[:-10], "(0000,0000)", "56", "46")

    def test_extra_bytes(self):
        """Bytes beyond what (0000,0000) counts are refused."""
        self.assertDecodeError(
            C_ECHO_RQ_BYTES + element(0x00000903, us(1)), "(0000,0000)", "56", "66"
        )

    def test_outside_group(self):
        data = command_set(
            element(0x00000100, us(0x0030)), element(0x00080018, b"1.2\0")
        )
        self.assertDecodeError(data, "(0008,0018)", "outside group 0000")

    def test_group_length_missing(self):
        data = element(0x00000100, us(0x0030)) + element(0x00000110, us(1))
        self.assertDecodeError(data, "(0000,0000) Command Group Length", "missing")

    def test_group_length_wrong(self):
        data = command_set(element(0x00000100, us(0x0030)))
        self.assertDecodeError(data[:8] + (11).to_bytes(4, "little") + data[12:], "11", "10")

    def test_group_length_not_ul(self):
        self.assertDecodeError(element(0, b"\x0a\x00") + element(0x100, us(0x30)), "UL")

    def test_group_length_undefined(self):
        """An undefined length (FFFFFFFFH) is truncation: there is no such value."""
        self.assertDecodeError(
            bytes.fromhex("0000 0000 ffffffff 0a000000") + element(0x100, us(0x30)),
            "truncated",
        )

    def test_command_field_missing(self):
        error = self.assertDecodeError(
            command_set(element(0x00000110, us(1))), "(0000,0100) Command Field", "missing"
        )
        self.assertEqual(error.elements, {0: 10, 0x110: 1})
        self.assertEqual(error.message_id, 1)
        self.assertIsNone(error.command_field)
        self.assertFalse(error.has_data_set)

    def test_command_field_empty(self):
        self.assertDecodeError(command_set(element(0x100, b"")), "(0000,0100)", "missing")

    def test_bad_us_length(self):
        self.assertDecodeError(
            command_set(element(0x00000100, b"\x30\x00\x00\x00")), "(0000,0100)", "US"
        )

    def test_bad_at_length(self):
        self.assertDecodeError(
            command_set(element(0x100, us(0x8001)), element(0x901, b"\x10\x00")),
            "(0000,0901)",
            "AT",
        )

    def test_undecodable_text(self):
        data = command_set(
            element(0x00000002, b"1.2.\xff\0"), element(0x00000100, us(0x0030))
        )
        self.assertDecodeError(data, "(0000,0002) Affected SOP Class UID", "repertoire")

    def test_duplicate(self):
        data = command_set(element(0x100, us(0x30)), element(0x100, us(0x30)))
        self.assertDecodeError(data, "(0000,0100)", "twice")

    def test_c_store_rq_missing_elements(self):
        """A C-STORE-RQ without one of its mandatory elements is refused by name."""
        for tag, name in [
            (0x00000110, "(0000,0110) Message ID"),
            (0x00000002, "(0000,0002) Affected SOP Class UID"),
            (0x00001000, "(0000,1000) Affected SOP Instance UID"),
            (0x00000700, "(0000,0700) Priority"),
            (0x00000800, "(0000,0800) Command Data Set Type"),
        ]:
            elements = C_STORE_RQ_COMMAND.to_elements()
            del elements[tag]
            error = self.assertDecodeError(encode_command_set(elements), name, "missing")
            self.assertEqual(error.command_field, 0x0001)

    def test_c_store_rq_missing_instance_carries_elements(self):
        """
        The error for a command that decodes but is incomplete carries what
        a failure response needs.
        """
        elements = C_STORE_RQ_COMMAND.to_elements()
        del elements[AFFECTED_SOP_INSTANCE_UID]
        error = self.assertDecodeError(encode_command_set(elements))
        self.assertEqual(error.command_field, 0x0001)
        self.assertEqual(error.message_id, 3)
        self.assertTrue(error.has_data_set)
        self.assertEqual(error.elements[0x00000002], CT_IMAGE_STORAGE)

    def test_required_elements_of_others(self):
        for command, tag in [
            (C_ECHO_RQ_COMMAND, 0x00000110),
            (C_ECHO_RQ_COMMAND, 0x00000002),
            (C_ECHO_RSP_COMMAND, 0x00000120),
            (C_ECHO_RSP_COMMAND, 0x00000900),
            (C_STORE_RSP_COMMAND, 0x00000120),
            (C_STORE_RSP_COMMAND, 0x00000900),
        ]:
            elements = command.to_elements()
            del elements[tag]
            self.assertDecodeError(encode_command_set(elements), f"(0000,{tag:04X})", "missing")

    def test_data_set_where_none_belongs(self):
        """C-ECHO and C-STORE-RSP messages have no data set; C-STORE-RQ has one."""
        for command in [C_ECHO_RQ_COMMAND, C_ECHO_RSP_COMMAND, C_STORE_RSP_COMMAND]:
            elements = command.to_elements()
            elements[COMMAND_DATA_SET_TYPE] = 0x0001
            error = self.assertDecodeError(encode_command_set(elements), "with a data set")
            self.assertTrue(error.has_data_set)
        elements = C_STORE_RQ_COMMAND.to_elements()
        elements[COMMAND_DATA_SET_TYPE] = 0x0101
        error = self.assertDecodeError(
            encode_command_set(elements), "C-STORE-RQ without a data set"
        )
        self.assertFalse(error.has_data_set)

    def test_wrong_type_in_elements(self):
        """from_elements refuses values of the wrong type."""
        elements = C_STORE_RQ_COMMAND.to_elements()
        elements[0x00000110] = b"\x03\x00"
        self.assertRaises(DIMSEDecodeError, CStoreRQ.from_elements, elements)
        self.assertRaises(
            DIMSEDecodeError, CEchoRQ.from_elements, C_STORE_RQ_COMMAND.to_elements()
        )

    @quick
    @given(st.binary(max_size=400))
    def test_arbitrary_bytes(self, data):
        """Arbitrary bytes decode or raise L{DIMSEDecodeError}, nothing else."""
        try:
            decode_command(data)
        except DIMSEDecodeError:
            pass

    @quick
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(
                    [0x0000, 0x0001, 0x0002, 0x0100, 0x0110, 0x0120, 0x0600, 0x0700,
                     0x0800, 0x0900, 0x0901, 0x0902, 0x1000, 0x1005, 0x1030, 0x1031]
                )
                | st.integers(0, 0xFFFF),
                st.binary(max_size=12)
                | st.sampled_from(
                    [b"\x01\x00", b"\x30\x00", b"\x01\x80", b"\x01\x01", b"\x00\x00"]
                ),
            ),
            max_size=12,
        ),
        st.integers(-2, 2),
    )
    def test_arbitrary_elements(self, elements, skew):
        """
        Well-framed group 0000 elements, with a right (or nearly right)
        group length, decode or raise L{DIMSEDecodeError}, nothing else.
        """
        data = command_set(*(element(tag, value) for tag, value in elements))
        data = data[:8] + max(0, len(data) - 12 + skew).to_bytes(4, "little") + data[12:]
        try:
            decode_command(data)
        except DIMSEDecodeError:
            pass

    @quick
    @given(
        st.sampled_from([data for data, command in TABLES]),
        st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=4),
    )
    def test_mutations(self, data, changes):
        """Valid command sets with bytes changed decode or raise L{DIMSEDecodeError}."""
        mutated = bytearray(data)
        for where, byte in changes:
            mutated[where % len(mutated)] = byte
        try:
            decode_command(bytes(mutated))
        except DIMSEDecodeError:
            pass
