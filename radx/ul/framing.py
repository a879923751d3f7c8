# -*- test-case-name: tests.test_framing,tests.test_pdu -*-
"""PDU framing: splits a received byte stream into decoded PDUs, checking each PDU's type and declared length before buffering its body.

Pure: standard library and :mod:`radx.ul.pdu` only, no I/O.
"""

from __future__ import annotations

import struct

from radx.ul.pdu import (
    DEFAULT_MAXIMUM_LENGTH,
    PDU,
    PDU_TYPES,
    AbortReason,
    PDUDecodeError,
    ReceivedPDataTF,
    decode_pdu,
    decode_pdv_values,
)

__all__ = ["MAXIMUM_ASSOCIATE_LENGTH", "PDUReader"]

_PDU_NAMES = {
    0x01: "A-ASSOCIATE-RQ",
    0x02: "A-ASSOCIATE-AC",
    0x03: "A-ASSOCIATE-RJ",
    0x04: "P-DATA-TF",
    0x05: "A-RELEASE-RQ",
    0x06: "A-RELEASE-RP",
    0x07: "A-ABORT",
}
# PS3.8 9.3.4, 9.3.6, 9.3.7, 9.3.8: these PDUs have the fixed PDU-length 00000004H
_FIXED_LENGTH_TYPES = frozenset({0x03, 0x05, 0x06, 0x07})
_HEADER_LENGTH = 6  # PS3.8 9.3.1: PDU-type, reserved, 32-bit PDU-length
_LENGTH_FIELD = struct.Struct(">L")

# The PDU-length an A-ASSOCIATE-RQ or -AC may declare. PS3.8 9.3.2: 68 bytes
# of fixed fields, then an Application Context Item, at most 128 Presentation
# Context Items (9.3.2.2: odd IDs, 1 to 255) and one User Information Item,
# each item with a 16-bit length. 128 KiB holds the largest User Information
# Item there can be (4 + 65535 bytes, room for any User Identity and extended
# negotiation) beside 128 contexts of seven 64-character UIDs each; a real
# request, with UIDs of 20 to 30 characters, is a few KiB.
MAXIMUM_ASSOCIATE_LENGTH = 128 * 1024


class PDUReader:
    """Splits a byte stream into PDUs; checks a PDU's declared length before buffering its body.

    ``maximum_pdata_length`` is the Maximum Length we advertised (PS3.8 D.1):
    the limit on a P-DATA-TF PDU's PDU-length field; 0 means no limit.
    ``maximum_other_length`` caps the PDU-length of the other PDUs (an
    A-ASSOCIATE-RQ may legitimately exceed the P-DATA-TF limit), by default
    :data:`MAXIMUM_ASSOCIATE_LENGTH`, so that what is buffered before an
    association exists stays that small; 0 means no limit.  Both are plain
    attributes and may be changed between feeds.

    With ``pdata_values`` a P-DATA-TF comes out as a
    :class:`~radx.ul.pdu.ReceivedPDataTF` (its items as plain tuples, checked
    as :func:`~radx.ul.pdu.decode_pdu` checks them) instead of a
    :class:`~radx.ul.pdu.PDataTF`: the receiving hot path's form.

    A byte that cannot start a PDU (not 01H to 07H) is refused as soon as it
    arrives, and a PDU-length over its limit as soon as the 6-byte header is
    complete, before any of the body is buffered.

    Once :meth:`feed` has raised :class:`PDUDecodeError` the reader is dead:
    every later call raises :class:`PDUDecodeError` again, with the same
    reason and a message repeating the first failure.  PDUs completed earlier
    in the failing call are discarded with it (the association is aborted
    anyway).
    """

    def __init__(
        self,
        maximum_pdata_length: int = DEFAULT_MAXIMUM_LENGTH,
        maximum_other_length: int = MAXIMUM_ASSOCIATE_LENGTH,
        *,
        pdata_values: bool = False,
    ) -> None:
        if maximum_pdata_length < 0 or maximum_other_length < 0:
            raise ValueError("PDU length limits must be 0 (no limit) or positive")
        self.maximum_pdata_length = maximum_pdata_length
        self.maximum_other_length = maximum_other_length
        self._pdata_values = pdata_values
        # The PDU begun but not complete: the received pieces of it, by
        # reference, and its whole length once its header is known.
        self._pieces: list = []
        self._pending = 0
        self._needed = 0
        self._failure: PDUDecodeError | None = None

    @property
    def buffered(self) -> int:
        """Bytes of a PDU begun but not yet complete."""
        return self._pending

    def discard(self) -> None:
        """Drop the PDU begun, if any: the stream has ended."""
        self._pieces, self._pending, self._needed = [], 0, 0

    def feed(self, data: bytes) -> list[PDU | ReceivedPDataTF]:
        """Add received bytes; return the PDUs completed by them (possibly none), in order.

        When the bytes hold valid PDUs and then an invalid one, the error
        raised carries the valid ones in ``pdus_before``: PS3.8 9.2 handles
        PDUs in the order they arrive, whatever TCP made of them.

        No byte is copied for a PDU that arrives within one ``data``: its
        P-DATA fragments are memoryviews of ``data`` itself.  A PDU spread
        over several calls is joined once, when its last byte arrives.
        """
        if self._failure is not None:
            raise PDUDecodeError(
                f"PDU stream already failed: {self._failure.message}",
                self._failure.reason,
            )
        pdus: list[PDU] = []
        try:
            if type(data) is not bytes:
                data = bytes(data)  # the fragments keep references: they need bytes that cannot change
            offset = self._continue(data, pdus) if self._pending else 0
            self._split(data, offset, pdus)
            return pdus
        except PDUDecodeError as failure:
            self._failure = failure
            self._pieces, self._pending, self._needed = [], 0, 0
            failure.pdus_before = pdus
            raise

    def _continue(self, data: bytes, pdus: list[PDU]) -> int:
        """Add to the PDU begun earlier; return the offset in ``data`` after what it took."""
        offset = 0
        if not self._needed:
            # Its header is still incomplete: complete it first.
            offset = min(_HEADER_LENGTH - self._pending, len(data))
            header = b"".join(self._pieces) + data[:offset]
            self._pieces, self._pending = [header], len(header)
            if len(header) < _HEADER_LENGTH:
                return offset
            (length,) = _LENGTH_FIELD.unpack_from(header, 2)
            self._check_length(header[0], length)
            self._needed = _HEADER_LENGTH + length
        take = min(self._needed - self._pending, len(data) - offset)
        if take:
            with memoryview(data) as view:
                self._pieces.append(view[offset : offset + take])
            self._pending += take
            offset += take
        if self._pending == self._needed:
            whole = b"".join(self._pieces)
            self._pieces, self._pending, self._needed = [], 0, 0
            pdus.append(self._decode(whole[0], memoryview(whole)[_HEADER_LENGTH:]))
        return offset

    def _split(self, data: bytes, offset: int, pdus: list[PDU]) -> None:
        """Decode the whole PDUs in ``data`` from ``offset`` in place; keep the rest."""
        end = len(data)
        view = None
        pdata_limit = self.maximum_pdata_length
        while offset < end:
            pdu_type = data[offset]
            if pdu_type not in PDU_TYPES:
                # PS3.8 9.3.8: unrecognized-PDU; refused on its first byte (an HTTP "G", a TLS 16H)
                raise PDUDecodeError(
                    f"unrecognized PDU type 0x{pdu_type:02X}: a PDU starts with 01H to 07H",
                    AbortReason.UNRECOGNIZED_PDU,
                )
            if end - offset < _HEADER_LENGTH:
                self._pieces, self._pending = [data[offset:]], end - offset
                return
            (length,) = _LENGTH_FIELD.unpack_from(data, offset + 2)
            if pdu_type != 0x04 or 0 < pdata_limit < length:
                # A P-DATA-TF within the Maximum Length (PS3.8 D.1) needs no further look.
                self._check_length(pdu_type, length)
            body_end = offset + _HEADER_LENGTH + length
            if view is None:
                view = memoryview(data)
            if body_end > end:
                self._pieces, self._pending = [view[offset:]], end - offset
                self._needed = _HEADER_LENGTH + length
                return
            pdus.append(self._decode(pdu_type, view[offset + _HEADER_LENGTH : body_end]))
            offset = body_end

    def _decode(self, pdu_type: int, body: memoryview) -> PDU | ReceivedPDataTF:
        if pdu_type == 0x04 and self._pdata_values:
            return ReceivedPDataTF(decode_pdv_values(body))
        return decode_pdu(pdu_type, body)

    def _check_length(self, pdu_type: int, length: int) -> None:
        name = _PDU_NAMES[pdu_type]
        if pdu_type in _FIXED_LENGTH_TYPES:
            if length != 4:
                # PS3.8 9.3.4, 9.3.6-9.3.8: PDU-length is fixed at 00000004H
                raise PDUDecodeError(f"{name} declares PDU-length {length}; it must be 4")
            return
        if pdu_type == 0x04:
            # PS3.8 D.1: the Maximum Length we advertised limits a P-DATA-TF's variable field
            limit = self.maximum_pdata_length
            what = "the maximum length advertised (PS3.8 D.1)"
        else:
            limit = self.maximum_other_length
            what = "the limit for A-ASSOCIATE PDUs"
        if limit and length > limit:
            raise PDUDecodeError(f"{name} declares PDU-length {length}, over {what} of {limit}")
