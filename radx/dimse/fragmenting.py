# -*- test-case-name: tests.test_dimse_fragmenting,tests.test_scu_association -*-
"""Cutting a DIMSE message into P-DATA-TF PDUs that fit the peer's Maximum Length."""

from __future__ import annotations

import struct

from radx.ul.pdu import EncodedPDUs, PDataTF, PresentationDataValueItem

__all__ = ["EncodedPDUs", "encode_command", "encode_fragments", "fragment_size", "message_pdus"]

# PS3.8 9.3.5.1 / E.2: the Message Control Header bits.
COMMAND = 0x01
LAST = 0x02

# PS3.8 9.3.5: each PDV item costs a 4-byte length, a context ID and a
# Message Control Header on top of its fragment.
PDV_OVERHEAD = 6

# Used when the peer sets no limit (Maximum Length 0, PS3.8 D.1).
UNLIMITED_FRAGMENT = 1 << 20


def fragment_size(peer_maximum_pdu_length: int) -> int:
    """The largest even fragment one P-DATA-TF with one PDV may carry."""
    if peer_maximum_pdu_length == 0:
        return UNLIMITED_FRAGMENT
    # PS3.5 7.1.1: values, and so messages, are even: a peer's odd Maximum
    # Length must not cut them into odd fragments, which receivers refuse.
    return max(2, (peer_maximum_pdu_length - PDV_OVERHEAD) & ~1)


def message_pdus(
    context_id: int,
    data: bytes,
    peer_maximum_pdu_length: int,
    command: bool,
) -> list[PDataTF]:
    """One P-DATA-TF per fragment of a command set or data set, last bit on the last."""
    size = fragment_size(peer_maximum_pdu_length)
    kind = COMMAND if command else 0
    view = memoryview(data)
    pdus = []
    offsets = range(0, max(len(data), 1), size)
    for offset in offsets:
        last = offset + size >= len(data)
        control = kind | (LAST if last else 0)
        pdus.append(
            PDataTF((PresentationDataValueItem(context_id, control, view[offset : offset + size]),))
        )
    return pdus


# PS3.8 9.3.5 and 9.3.5.1: a P-DATA-TF's header (PDU-type 04H, reserved,
# PDU-length) followed by its one PDV's (item-length, context ID, Message
# Control Header).
_PDATA_HEADERS = struct.Struct(">BBLLBB")


def encode_command(context_id: int, command: bytes, peer_maximum_pdu_length: int) -> bytes:
    """A whole command set's P-DATA-TF PDUs, encoded back to back, the last-fragment bit on its last."""
    return encode_fragments(
        context_id, command, fragment_size(peer_maximum_pdu_length), command=True, ends_message=True
    )


def encode_fragments(context_id: int, data, size: int, command: bool, ends_message: bool) -> bytes:
    """
    The wire bytes of P-DATA-TF PDUs carrying ``data`` in fragments of at
    most ``size`` bytes, one PDV each: the same PDUs as ``message_pdus``
    makes, without an object per PDU. With ``ends_message`` the last
    fragment has the last-fragment bit; ``data`` may be a memoryview.
    """
    kind = COMMAND if command else 0
    pack = _PDATA_HEADERS.pack
    view = memoryview(data)
    length = len(view)
    parts = []
    for offset in range(0, max(length, 1), size):
        fragment = view[offset : offset + size]
        n = len(fragment)
        control = kind | (LAST if ends_message and offset + size >= length else 0)
        parts.append(pack(0x04, 0, n + 6, n + 2, context_id, control))
        parts.append(fragment)
    return b"".join(parts)
