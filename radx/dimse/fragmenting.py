# -*- test-case-name: tests.test_dimse_fragmenting -*-
"""Cutting a DIMSE message into P-DATA-TF PDUs that fit the peer's Maximum Length."""

from __future__ import annotations

from radx.ul.pdu import PDataTF, PresentationDataValueItem

# PS3.8 9.3.5.1 / E.2: the Message Control Header bits.
COMMAND = 0x01
LAST = 0x02

# PS3.8 9.3.5: each PDV item costs a 4-byte length, a context ID and a
# Message Control Header on top of its fragment.
PDV_OVERHEAD = 6

# Used when the peer sets no limit (Maximum Length 0, PS3.8 D.1).
UNLIMITED_FRAGMENT = 1 << 20


def fragment_size(peer_maximum_pdu_length: int) -> int:
    """The largest fragment one P-DATA-TF with one PDV may carry."""
    if peer_maximum_pdu_length == 0:
        return UNLIMITED_FRAGMENT
    return max(1, peer_maximum_pdu_length - PDV_OVERHEAD)


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
