"""Tests for radx.ul.framing.PDUReader: type and length checks before buffering, partial input, failure state."""

from __future__ import annotations

import struct

from twisted.trial.unittest import SynchronousTestCase

from radx.ul.framing import MAXIMUM_ASSOCIATE_LENGTH, PDUReader
from radx.ul.pdu import (
    AAbort,
    AAssociateRQ,
    AbortReason,
    AReleaseRP,
    AReleaseRQ,
    PDataTF,
    PDUDecodeError,
    PresentationContextItemRQ,
    PresentationDataValueItem,
    ReceivedPDataTF,
    UserIdentityRQSubItem,
    UserInformationItem,
)

RELEASE_RQ = bytes.fromhex("05 00 00000004 00000000")
RELEASE_RP = bytes.fromhex("06 00 00000004 00000000")
INVALID = AbortReason.INVALID_PDU_PARAMETER_VALUE


def header(pdu_type: int, length: int) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, length)


def pdata(body_length: int) -> bytes:
    """A P-DATA-TF whose PDU-length is ``body_length``: one PDV of ``body_length - 4`` bytes of item value."""
    fragment = bytes(i % 251 for i in range(body_length - 6))
    return header(0x04, body_length) + struct.pack(">LBB", body_length - 4, 1, 0x00) + fragment


class UnknownTypeTests(SynchronousTestCase):
    """A first byte that is not 01H-07H is refused at once, with unrecognized-PDU."""

    def test_refused_after_one_byte(self) -> None:
        for first in (0x00, 0x08, 0x16, 0x47, 0x80, 0xFF):  # 16H: TLS ClientHello, 47H: HTTP "GET"
            reader = PDUReader()
            with self.assertRaises(PDUDecodeError) as caught:
                reader.feed(bytes([first]))
            self.assertEqual(caught.exception.reason, AbortReason.UNRECOGNIZED_PDU)
            self.assertIn(f"0x{first:02X}", caught.exception.message)

    def test_http_request(self) -> None:
        with self.assertRaises(PDUDecodeError) as caught:
            PDUReader().feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(caught.exception.reason, AbortReason.UNRECOGNIZED_PDU)

    def test_every_known_type_accepted_as_first_byte(self) -> None:
        for first in range(1, 8):
            self.assertEqual(PDUReader().feed(bytes([first])), [])

    def test_unknown_type_after_a_good_pdu(self) -> None:
        reader = PDUReader()
        self.assertEqual(reader.feed(RELEASE_RQ), [AReleaseRQ()])
        self.assertRaises(PDUDecodeError, reader.feed, b"\x16")

    def test_unknown_type_in_same_feed(self) -> None:
        """A bad type right after a good PDU in one read: the whole feed raises."""
        with self.assertRaises(PDUDecodeError) as caught:
            PDUReader().feed(RELEASE_RQ + b"\x09")
        self.assertEqual(caught.exception.reason, AbortReason.UNRECOGNIZED_PDU)


class LengthTests(SynchronousTestCase):
    """The declared PDU-length is checked as soon as the 6-byte header is in, before the body."""

    def test_pdata_over_limit_after_header(self) -> None:
        reader = PDUReader(maximum_pdata_length=16384)
        raw = header(0x04, 16385)
        self.assertEqual(reader.feed(raw[:5]), [])
        with self.assertRaises(PDUDecodeError) as caught:
            reader.feed(raw[5:])
        self.assertEqual(caught.exception.reason, INVALID)
        self.assertIn("16385", caught.exception.message)
        self.assertIn("16384", caught.exception.message)

    def test_pdata_at_limit(self) -> None:
        raw = pdata(16384)
        result = PDUReader(maximum_pdata_length=16384).feed(raw)
        self.assertEqual(len(result), 1)
        self.assertEqual(bytes(result[0].items[0].data), raw[12:])

    def test_pdata_declared_4_gib(self) -> None:
        """0xFFFFFFFF is refused from the header alone: no allocation, no waiting."""
        with self.assertRaises(PDUDecodeError) as caught:
            PDUReader().feed(header(0x04, 0xFFFFFFFF))
        self.assertIn(str(0xFFFFFFFF), caught.exception.message)

    def test_other_declared_4_gib(self) -> None:
        for pdu_type in (0x01, 0x02):
            with self.assertRaises(PDUDecodeError) as caught:
                PDUReader().feed(header(pdu_type, 0xFFFFFFFF))
            self.assertEqual(caught.exception.reason, INVALID)
            self.assertIn(str(MAXIMUM_ASSOCIATE_LENGTH), caught.exception.message)

    def test_associate_rq_declaring_1_mib_is_refused_from_its_header(self) -> None:
        """What is buffered before an association is bounded by what a real A-ASSOCIATE-RQ needs."""
        with self.assertRaises(PDUDecodeError) as caught:
            PDUReader().feed(header(0x01, 1 << 20))
        self.assertEqual(caught.exception.reason, INVALID)
        self.assertEqual(
            caught.exception.message,
            "A-ASSOCIATE-RQ declares PDU-length 1048576, over the limit for A-ASSOCIATE PDUs of 131072",
        )
        with self.assertRaises(PDUDecodeError):
            PDUReader().feed(header(0x01, MAXIMUM_ASSOCIATE_LENGTH + 1))
        reader = PDUReader()
        self.assertEqual(reader.feed(header(0x01, MAXIMUM_ASSOCIATE_LENGTH)), [])
        self.assertEqual(reader.buffered, 6)

    def test_largest_request_the_bound_is_chosen_for(self) -> None:
        """128 contexts of seven 64-character UIDs and the largest User Information Item (PS3.8 9.3.2)."""
        uid = "1.2.840.10008." + "1" * 50
        contexts = tuple(PresentationContextItemRQ(2 * i + 1, uid, (uid,) * 6) for i in range(128))
        # Item-length 65535: the sub-item's header (4), type and flag (2), two field lengths (4), the field.
        identity = UserIdentityRQSubItem(2, False, b"u" * 65525, b"")
        rq = AAssociateRQ(
            "ANY-SCP",
            "STORESCU",
            application_context_name=uid,
            presentation_contexts=contexts,
            user_information=UserInformationItem((identity,)),
        )
        raw = rq.encode()
        self.assertGreater(len(raw), 127_000)
        self.assertEqual(PDUReader().feed(raw), [rq])

    def test_fixed_length_pdus_checked_from_header(self) -> None:
        """A-ASSOCIATE-RJ, A-RELEASE-RQ/RP and A-ABORT must declare 4 (PS3.8 9.3.4, 9.3.6-9.3.8)."""
        for pdu_type in (0x03, 0x05, 0x06, 0x07):
            for length in (0, 3, 5, 0xFFFFFFFF):
                with self.assertRaises(PDUDecodeError) as caught:
                    PDUReader().feed(header(pdu_type, length))
                self.assertEqual(caught.exception.reason, INVALID)
                self.assertIn("must be 4", caught.exception.message)

    def test_pdata_limit_zero_is_unlimited(self) -> None:
        reader = PDUReader(maximum_pdata_length=0)
        self.assertEqual(reader.feed(header(0x04, 0xFFFFFFFF)), [])  # accepted, waiting for the body
        raw = pdata(100_000)
        self.assertEqual(len(PDUReader(maximum_pdata_length=0).feed(raw)), 1)

    def test_other_limit_zero_is_unlimited(self) -> None:
        self.assertEqual(PDUReader(maximum_other_length=0).feed(header(0x01, 0xFFFFFFFF)), [])

    def _big_rq(self) -> AAssociateRQ:
        contexts = tuple(
            PresentationContextItemRQ(2 * i + 1, f"1.2.840.10008.5.1.4.1.1.{i}", ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1"))
            for i in range(128)
        )
        return AAssociateRQ("ANY-SCP", "STORESCU", presentation_contexts=contexts)

    def test_associate_rq_over_pdata_limit_under_other_cap(self) -> None:
        """An A-ASSOCIATE-RQ longer than the P-DATA-TF limit is fine under the other cap."""
        rq = self._big_rq()
        raw = rq.encode()
        self.assertGreater(len(raw) - 6, 4096)
        reader = PDUReader(maximum_pdata_length=4096, maximum_other_length=1 << 20)
        self.assertEqual(reader.feed(raw), [rq])

    def test_associate_rq_over_other_cap(self) -> None:
        raw = self._big_rq().encode()
        reader = PDUReader(maximum_pdata_length=0, maximum_other_length=1000)
        with self.assertRaises(PDUDecodeError) as caught:
            reader.feed(raw[:6])
        self.assertEqual(caught.exception.reason, INVALID)
        self.assertIn("1000", caught.exception.message)

    def test_limits_can_change(self) -> None:
        reader = PDUReader(maximum_pdata_length=100)
        reader.maximum_pdata_length = 200
        self.assertEqual(len(reader.feed(pdata(200))), 1)

    def test_negative_limit(self) -> None:
        self.assertRaises(ValueError, PDUReader, -1)
        self.assertRaises(ValueError, PDUReader, 16384, -1)


class BufferingTests(SynchronousTestCase):
    """Partial input is kept until a PDU is complete; any split gives the same PDUs."""

    def test_empty_feed(self) -> None:
        self.assertEqual(PDUReader().feed(b""), [])

    def test_partial_header_buffers(self) -> None:
        reader = PDUReader()
        for i in range(1, 6):
            self.assertEqual(reader.feed(RELEASE_RQ[i - 1 : i]), [])
        self.assertEqual(reader.feed(RELEASE_RQ[5:9]), [])
        self.assertEqual(reader.feed(RELEASE_RQ[9:]), [AReleaseRQ()])

    def test_header_reserved_byte_not_tested(self) -> None:
        """PS3.8 9.3.1: byte 2 of every PDU is reserved, not tested."""
        self.assertEqual(PDUReader().feed(b"\x06\xff" + RELEASE_RP[2:]), [AReleaseRP()])

    def test_byte_at_a_time(self) -> None:
        stream = pdata(300) + RELEASE_RQ + bytes.fromhex("07 00 00000004 0000 02 02")
        reader = PDUReader()
        out = []
        for i in range(len(stream)):
            out.extend(reader.feed(stream[i : i + 1]))
        self.assertEqual([type(p) for p in out], [PDataTF, AReleaseRQ, AAbort])
        self.assertEqual(out[2], AAbort(2, 2))
        self.assertEqual(bytes(out[0].items[0].data), pdata(300)[12:])

    def test_every_split_point(self) -> None:
        stream = pdata(40) + RELEASE_RQ + pdata(20)
        expected = PDUReader().feed(stream)
        self.assertEqual(len(expected), 3)
        for cut in range(len(stream) + 1):
            reader = PDUReader()
            self.assertEqual(reader.feed(stream[:cut]) + reader.feed(stream[cut:]), expected, cut)

    def test_many_pdus_in_one_feed(self) -> None:
        self.assertEqual(PDUReader().feed(RELEASE_RQ * 100), [AReleaseRQ()] * 100)

    def test_large_pdu_in_small_reads(self) -> None:
        """A 64 KiB P-DATA-TF arriving 100 bytes at a time comes out once, intact."""
        raw = pdata(65536)
        reader = PDUReader(maximum_pdata_length=65536)
        out = []
        for i in range(0, len(raw), 100):
            out.extend(reader.feed(raw[i : i + 100]))
        self.assertEqual(len(out), 1)
        self.assertEqual(bytes(out[0].items[0].data), raw[12:])

    def test_fragments_survive_later_feeds(self) -> None:
        """Decoded fragments do not pin the reader's buffer (no BufferError) and are not changed by later input."""
        reader = PDUReader()
        first = pdata(50)
        second = pdata(60)
        (pdu,) = reader.feed(first + second[:10])
        data = pdu.items[0].data
        for i in range(10, len(second)):
            reader.feed(second[i : i + 1])
        reader.feed(RELEASE_RQ)
        self.assertEqual(bytes(data), first[12:])
        self.assertIsInstance(data, memoryview)
        self.assertIsInstance(data.obj, bytes)

    def test_whole_pdu_is_not_copied(self) -> None:
        """A PDU that arrives within one read is decoded in place: its fragment is a view of those bytes."""
        received = pdata(100) + pdata(200)[:30]
        (pdu,) = PDUReader().feed(received)
        self.assertIs(pdu.items[0].data.obj, received)

    def test_mutable_input_is_copied(self) -> None:
        """Bytes the caller may change later are copied before fragments refer to them."""
        received = bytearray(pdata(100))
        (pdu,) = PDUReader().feed(received)
        received[12:] = bytes(len(received) - 12)
        self.assertEqual(bytes(pdu.items[0].data), pdata(100)[12:])

    def test_buffered_counts_the_pdu_begun(self) -> None:
        reader = PDUReader()
        raw = pdata(100)
        reader.feed(raw[:3])
        self.assertEqual(reader.buffered, 3)
        reader.feed(raw[3:50])
        self.assertEqual(reader.buffered, 50)
        reader.feed(raw[50:] + raw[:7])
        self.assertEqual(reader.buffered, 7)

    def test_pdv_items_decoded(self) -> None:
        raw = bytes.fromhex("04 00 0000000e 00000003 01 03 aa 00000003 03 00 bb")
        (pdu,) = PDUReader().feed(raw)
        self.assertEqual(
            pdu,
            PDataTF((PresentationDataValueItem(1, 3, b"\xaa"), PresentationDataValueItem(3, 0, b"\xbb"))),
        )


class PDataValuesTests(SynchronousTestCase):
    """With pdata_values, a P-DATA-TF comes out as a ReceivedPDataTF, checked as before; other PDUs as before."""

    def test_items_as_values(self) -> None:
        raw = bytes.fromhex("04 00 0000000e 00000003 01 03 aa 00000003 03 00 bb")
        (pdu,) = PDUReader(pdata_values=True).feed(raw)
        self.assertIs(type(pdu), ReceivedPDataTF)
        self.assertEqual([(c, m, bytes(d)) for c, m, d in pdu.values], [(1, 3, b"\xaa"), (3, 0, b"\xbb")])
        self.assertEqual(pdu.pdu(), PDUReader().feed(raw)[0])

    def test_whole_pdu_is_not_copied(self) -> None:
        received = pdata(100) + RELEASE_RQ
        pdu, release = PDUReader(pdata_values=True).feed(received)
        self.assertIs(pdu.values[0][2].obj, received)
        self.assertEqual(release, AReleaseRQ())

    def test_every_split_point(self) -> None:
        """Split anywhere (the PDU joined from pieces, or decoded in place): the same PDUs as without values."""
        stream = pdata(40) + RELEASE_RQ + pdata(20)
        expected = PDUReader().feed(stream)
        for cut in range(len(stream) + 1):
            reader = PDUReader(pdata_values=True)
            out = reader.feed(stream[:cut]) + reader.feed(stream[cut:])
            self.assertEqual([type(p) for p in out], [ReceivedPDataTF, AReleaseRQ, ReceivedPDataTF], cut)
            self.assertEqual([p.pdu() if type(p) is ReceivedPDataTF else p for p in out], expected, cut)

    def test_maximum_length_still_enforced(self) -> None:
        """PS3.8 D.1: over the limit is refused from the header; at it, or with no limit, accepted."""
        reader = PDUReader(maximum_pdata_length=16384, pdata_values=True)
        self.assertEqual(len(reader.feed(pdata(16384))), 1)
        with self.assertRaises(PDUDecodeError) as caught:
            reader.feed(header(0x04, 16385))
        self.assertEqual(caught.exception.reason, INVALID)
        self.assertIn("16385", caught.exception.message)
        (pdu,) = PDUReader(maximum_pdata_length=0, pdata_values=True).feed(pdata(65536))
        self.assertEqual(bytes(pdu.values[0][2]), pdata(65536)[12:])

    def test_fixed_lengths_still_checked(self) -> None:
        with self.assertRaises(PDUDecodeError) as caught:
            PDUReader(pdata_values=True).feed(header(0x05, 5))
        self.assertIn("must be 4", caught.exception.message)


class FailureTests(SynchronousTestCase):
    """After raising, the reader is dead: every later feed raises PDUDecodeError with the same reason."""

    def test_dead_after_unrecognized(self) -> None:
        reader = PDUReader()
        self.assertRaises(PDUDecodeError, reader.feed, b"G")
        for _ in range(2):
            with self.assertRaises(PDUDecodeError) as caught:
                reader.feed(RELEASE_RQ)
            self.assertEqual(caught.exception.reason, AbortReason.UNRECOGNIZED_PDU)
            self.assertIn("0x47", caught.exception.message)

    def test_dead_after_length(self) -> None:
        reader = PDUReader()
        self.assertRaises(PDUDecodeError, reader.feed, header(0x04, 1 << 30))
        with self.assertRaises(PDUDecodeError) as caught:
            reader.feed(b"")
        self.assertEqual(caught.exception.reason, INVALID)

    def test_dead_after_decode_error(self) -> None:
        reader = PDUReader()
        with self.assertRaises(PDUDecodeError) as caught:
            reader.feed(bytes.fromhex("04 00 00000006 00000001 01 03"))  # PDV item-length 1
        self.assertEqual(caught.exception.reason, INVALID)
        self.assertRaises(PDUDecodeError, reader.feed, RELEASE_RQ)
