"""Tests for radx.dimse.fragmenting: messages cut to fit the peer's Maximum Length."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from radx.dimse.assembly import CommandReceived, DataSetFragment, MessageAssembler
from radx.dimse.commands import CStoreRQ
from radx.dimse.fragmenting import (
    UNLIMITED_FRAGMENT,
    EncodedPDUs,
    encode_command,
    encode_fragments,
    fragment_size,
    message_pdus,
)
from radx.ul.pdu import PDataTF, PresentationDataValueItem


class FragmentingTests(SynchronousTestCase):
    def test_fragment_size(self):
        """PS3.8 9.3.5: a PDV costs 6 bytes on top of its fragment; 0 means no limit (D.1)."""
        self.assertEqual(fragment_size(16384), 16378)
        self.assertEqual(fragment_size(0), UNLIMITED_FRAGMENT)

    def test_fragments_are_even_whatever_the_peers_maximum(self):
        """PS3.5 7.1.1: an odd Maximum Length (16383) still gets even fragments."""
        self.assertEqual(fragment_size(16383), 16376)
        for maximum in (4097, 4098, 16383):
            pdus = message_pdus(1, bytes(20_000), maximum, command=False)
            self.assertEqual([len(p.items[0].data) % 2 for p in pdus], [0] * len(pdus))
            self.assertTrue(all(len(p.encode()) - 6 <= maximum for p in pdus))

    def test_every_pdu_fits_and_only_the_last_is_last(self):
        data = bytes(range(256)) * 100
        pdus = message_pdus(3, data, 4096, command=False)
        self.assertEqual(len(pdus), -(-len(data) // 4090))
        for pdu in pdus:
            self.assertLessEqual(len(pdu.encode()) - 6, 4096)
        controls = [pdu.items[0].message_control_header for pdu in pdus]
        self.assertEqual(controls, [0] * (len(pdus) - 1) + [2])
        self.assertEqual(b"".join(bytes(p.items[0].data) for p in pdus), data)

    def test_command_bits(self):
        [pdu] = message_pdus(1, b"\x00" * 10, 16384, command=True)
        self.assertEqual(pdu.items[0].message_control_header, 3)

    def test_empty_data_set_is_one_last_fragment(self):
        [pdu] = message_pdus(1, b"", 16384, command=False)
        self.assertEqual((pdu.items[0].message_control_header, bytes(pdu.items[0].data)), (2, b""))

    def test_round_trip_through_the_assembler(self):
        command = CStoreRQ(1, "1.2.840.10008.5.1.4.1.1.7", "1.2.3").encode()
        data = b"\x08\x00\x16\x00" * 5000
        assembler = MessageAssembler()
        events = []
        for pdu in message_pdus(1, command, 100, command=True) + message_pdus(1, data, 1000, command=False):
            for item in pdu.items:
                events += assembler.feed(item.context_id, item.message_control_header, item.data)
        self.assertIsInstance(events[0], CommandReceived)
        self.assertEqual(b"".join(bytes(e.data) for e in events[1:] if isinstance(e, DataSetFragment)), data)
        self.assertTrue(events[-1].last)

    def test_encode_fragments_is_message_pdus_encoded(self):
        data = bytes(range(256)) * 100
        for ends in (True, False):
            expected = message_pdus(5, data, 4096, command=False)
            if not ends:
                # Without the end of the message, no fragment is the last.
                expected = [PDataTF((PresentationDataValueItem(5, 0, p.items[0].data),)) for p in expected]
            encoded = encode_fragments(5, memoryview(data), fragment_size(4096), command=False, ends_message=ends)
            self.assertEqual(encoded, b"".join(p.encode() for p in expected))
        self.assertEqual(encode_fragments(1, b"ab", 10, command=True, ends_message=True), message_pdus(1, b"ab", 16, command=True)[0].encode())
        self.assertEqual(EncodedPDUs(b"x").encode(), b"x")

    def test_encode_command_is_message_pdus_encoded(self):
        """A command set cut to the peer's Maximum Length (0: no limit), the last-fragment bit on its last."""
        command = bytes(range(200))
        for maximum in (16, 100, 16384, 0):
            expected = b"".join(p.encode() for p in message_pdus(3, command, maximum, command=True))
            self.assertEqual(encode_command(3, command, maximum), expected, maximum)
