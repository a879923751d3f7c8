"""atheris fuzz target: radx's PDU framing and decoding, negotiation, and DIMSE command decoding.

What a peer's bytes reach before radx's Twisted protocol sees a decoded
event, all pure code: ``PDUReader.feed`` (framing and ``decode_pdu`` for
every complete PDU), ``invalid_request_reason`` and ``negotiate`` for an
A-ASSOCIATE-RQ, ``MessageAssembler.feed`` for every PDV, and
``decode_command`` on every PDV's bytes. Only ``PDUDecodeError``,
``DIMSEDecodeError`` and ``DIMSEProtocolError`` may escape; anything else
is a crash. It also checks that

- the reader gives the same PDUs whether the input comes whole or in two
  reads (or fails both ways);
- every decoded PDU encodes again, and decodes back to itself, unless it
  holds one of the values radx accepts on receipt but will not send
  (``_LENIENT_ON_RECEIPT``).

Run (see fuzz/README.rst)::

    pip install atheris
    mkdir -p /tmp/radx-fuzz
    python fuzz/fuzz_pdu.py /tmp/radx-fuzz fuzz/corpus -max_total_time=60 -artifact_prefix=/tmp/radx-fuzz/

libFuzzer writes the inputs it finds to the first folder, so give it a
scratch one and the committed seeds second. ``--write-corpus DIR``
(re)writes the seeds: a few valid PDUs made with radx's own encoders.

atheris is not a dependency of radx or of its tests.
"""

from __future__ import annotations

import os
import sys

import atheris

with atheris.instrument_imports(include=["radx"]):
    from radx.dimse.assembly import DIMSEProtocolError, MessageAssembler
    from radx.dimse.commands import DIMSEDecodeError, decode_command
    from radx.ul.framing import PDUReader
    from radx.ul.negotiation import AcceptorPolicy, invalid_request_reason, negotiate
    from radx.ul.pdu import AAssociateRQ, PDataTF, PDUDecodeError, decode_pdu

_POLICY = AcceptorPolicy()


def _read(data: bytes, cut: int | None) -> tuple[list, PDUDecodeError | None]:
    """The PDUs of ``data`` fed to one reader whole (``cut`` None) or in two reads; and the error, if any."""
    reader = PDUReader(maximum_pdata_length=16384)
    pdus: list = []
    pieces = [data] if cut is None else [data[:cut], data[cut:]]
    try:
        for piece in pieces:
            pdus.extend(reader.feed(piece))
    except PDUDecodeError as error:
        return pdus, error
    return pdus, None


def _same_pdu(a, b) -> bool:
    if isinstance(a, PDataTF) and isinstance(b, PDataTF):
        return [(i.context_id, i.message_control_header, bytes(i.data)) for i in a.items] == [
            (i.context_id, i.message_control_header, bytes(i.data)) for i in b.items
        ]
    return a == b


# Values the standard forbids but radx accepts on receipt, which its encoders
# refuse: an Implementation Version Name that is empty or over 16 characters
# (PS3.7 D.3.3.2.3), and non-ASCII bytes in an A-ASSOCIATE-AC's reserved AE
# title fields (PS3.8 9.3.3: not tested when received). radx never sends a
# received PDU back, so such a PDU only fails the round trip below.
_LENIENT_ON_RECEIPT = ("implementation version name", "called AE title", "calling AE title")


def _encode_again(pdu):
    """``pdu.encode()``, or None if it holds a value only the decoder is lenient about."""
    try:
        return pdu.encode()
    except ValueError as error:
        if str(error).startswith(_LENIENT_ON_RECEIPT):
            return None
        raise


def TestOneInput(data: bytes) -> None:
    whole, error = _read(data, None)
    halves, split_error = _read(data, len(data) // 2)
    if error is None:
        # Two reads must give what one read gave.
        assert split_error is None, (data, split_error)
        assert len(whole) == len(halves) and all(map(_same_pdu, whole, halves)), data
    else:
        # A failure in one read is a failure in two (PDUs before it may come out first).
        assert split_error is not None, data
        assert all(map(_same_pdu, halves, whole[: len(halves)]))

    assembler = MessageAssembler()
    assembler_alive = True
    for pdu in whole:
        encoded = _encode_again(pdu)
        if encoded is not None:
            again = decode_pdu(encoded[0], encoded[6:])
            assert _same_pdu(pdu, again), (pdu, again)
        if isinstance(pdu, AAssociateRQ):
            if invalid_request_reason(pdu) is None:
                answer = negotiate(pdu, _POLICY)
                (answer.accept or answer.reject).encode()
        elif isinstance(pdu, PDataTF):
            for item in pdu.items:
                try:
                    decode_command(item.data)
                except DIMSEDecodeError:
                    pass
                if not assembler_alive:
                    continue
                try:
                    assembler.feed(item.context_id, item.message_control_header, item.data)
                except DIMSEDecodeError:
                    pass
                except DIMSEProtocolError:
                    assembler_alive = False


def write_corpus(folder: str) -> None:
    """A few valid PDUs, made by radx's encoders, one per file."""
    from radx import uids
    from radx.dimse.commands import CStoreRQ
    from radx.testing import associate_rq, echo_rq_bytes, store_rq_bytes
    from radx.ul.pdu import AAbort, AAssociateRJ, AReleaseRQ

    seeds = {
        "associate-rq": associate_rq(
            contexts=(
                (1, uids.VERIFICATION_SOP_CLASS, (uids.IMPLICIT_VR_LITTLE_ENDIAN,)),
                (3, "1.2.840.10008.5.1.4.1.1.2", ("1.2.840.10008.1.2.1", uids.IMPLICIT_VR_LITTLE_ENDIAN)),
            )
        ).encode(),
        "associate-ac": negotiate(associate_rq(), _POLICY).accept.encode(),
        "associate-rj": AAssociateRJ(1, 1, 7).encode(),
        "echo-rq": echo_rq_bytes(message_id=7),
        "store-rq": store_rq_bytes(
            b"\x08\x00\x16\x00\x1a\x00\x00\x001.2.840.10008.5.1.4.1.1.2\x00"
            b"\x08\x00\x18\x00\x06\x00\x00\x001.2.3\x00",
            "1.2.840.10008.5.1.4.1.1.2",
            "1.2.3",
            context_id=3,
        ),
        "store-command-in-two-fragments": _two_fragment_command(
            CStoreRQ(2, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4").encode()
        ),
        "release-rq": AReleaseRQ().encode(),
        "abort": AAbort(0, 0).encode(),
    }
    os.makedirs(folder, exist_ok=True)
    for name, seed in seeds.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(seed)


def _two_fragment_command(command: bytes) -> bytes:
    """One P-DATA-TF holding a command set as two PDVs: not last, then last."""
    from radx.ul.pdu import PresentationDataValueItem

    half = len(command) // 2
    return PDataTF(
        (PresentationDataValueItem(3, 0x01, command[:half]), PresentationDataValueItem(3, 0x03, command[half:]))
    ).encode()


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[1] == "--write-corpus":
        write_corpus(argv[2])
        return
    atheris.Setup(argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
