"""Peak memory of the server filing a data set built to make reading its header expensive.

    python bench/header_memory.py [--radx-path DIR] [--cases deflated,sequence,large] [--timeout 120]

Starts ``python -m radx dicom scp`` afresh for each case, sends it one
C-STORE from a raw socket (streamed: the client holds no more than one
PDU of the data set), reads the C-STORE-RSP, and prints the status, the
time from the last byte sent to the response, and the server's VmHWM
from ``/proc/PID/status`` before and after (after ``--timeout`` seconds
if no response has come by then).

``deflated``
    Deflated Explicit VR Little Endian, 1 GiB of zeros in an OB value
    between the SOP Instance UID and the Study Instance UID: about 1 MB
    on the wire. Valid: it should be stored.
``sequence``
    The same value in an item of an undefined-length sequence,
    (0008,1140), after the SOP Instance UID. Valid too.
``large``
    Explicit VR Little Endian, a 512 MiB OB value before the SOP Class
    UID. Nothing conformant puts a value there (PS3.5 7.1: elements
    ascend by tag).

``--radx-path`` runs the radx found in DIR (a checkout, e.g. from
``git archive``) instead of this one, to compare commits. See
bench/README.rst, "Header memory".
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.procs import spawn, status_kib, stop, wait_listening  # noqa: E402
from radx.dimse.commands import CStoreRQ, decode_command  # noqa: E402
from radx.testing import associate_rq  # noqa: E402
from radx.ul.framing import PDUReader  # noqa: E402
from radx.ul.pdu import AAssociateAC, AReleaseRQ, PDataTF  # noqa: E402

SOP_CLASS = "1.2.840.10008.5.1.4.1.1.7"
SOP_INSTANCE = "1.2.826.0.1.3680043.10.9.1"
EXPLICIT = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"
MAX_PDU = 16384
PIECE = 1 << 20


def element(tag: int, vr: bytes, value_or_length) -> bytes:
    """PS3.5 7.1.2, explicit VR little endian; an int stands for a value of that many bytes, not included."""
    value = b"" if isinstance(value_or_length, int) else value_or_length
    length = value_or_length if isinstance(value_or_length, int) else len(value)
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
        return struct.pack("<HH2sHL", tag >> 16, tag & 0xFFFF, vr, 0, length) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, length) + value


def ui(uid: str) -> bytes:
    raw = uid.encode()
    return raw + b"\0" * (len(raw) % 2)


SOP_UIDS = element(0x00080016, b"UI", ui(SOP_CLASS)) + element(0x00080018, b"UI", ui(SOP_INSTANCE))
SERIES_UIDS = element(0x0020000D, b"UI", ui("1.2.826.0.1.3680043.10.9.2")) + element(
    0x0020000E, b"UI", ui("1.2.826.0.1.3680043.10.9.3")
)


def _deflated(before: bytes, after: bytes):
    """(transfer syntax, pieces): ``before``, 1 GiB of zeros, ``after``, deflated."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [compressor.compress(before)]
    zeros = bytes(PIECE)
    for _ in range((1 << 30) // PIECE):
        out.append(compressor.compress(zeros))
    out.append(compressor.compress(after) + compressor.flush())
    data = b"".join(out)
    return DEFLATED, [data + b"\0" * (len(data) % 2)]


def deflated_case():
    """1 GiB of zeros in an OB value between the SOP and the Study UIDs, deflated."""
    return _deflated(SOP_UIDS + element(0x00091001, b"OB", 1 << 30), SERIES_UIDS)


def sequence_case():
    """The same value in an item of an undefined-length sequence, (0008,1140)."""
    item_start = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
    item_end = struct.pack("<HHL", 0xFFFE, 0xE00D, 0) + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    sequence = element(0x00081140, b"SQ", 0xFFFFFFFF) + item_start + element(0x00091001, b"OB", 1 << 30)
    return _deflated(SOP_UIDS + sequence, item_end + SERIES_UIDS)


def large_case():
    """(transfer syntax, pieces): a 512 MiB value before the SOP Class UID, streamed."""
    size = 512 << 20
    zeros = bytes(PIECE)
    return EXPLICIT, [element(0x00080001, b"OB", size), *(zeros for _ in range(size // PIECE)), SOP_UIDS + SERIES_UIDS]


CASES = {"deflated": deflated_case, "sequence": sequence_case, "large": large_case}


def pdv_pdus(context_id: int, pieces, command: bool):
    """P-DATA-TF PDUs (PS3.8 9.3.5) of one PDV each, the last flagged last."""
    room = MAX_PDU - 6
    pending = b""
    for piece in pieces:
        pending += piece
        while len(pending) > room:
            yield _pdv(context_id, pending[:room], command, False)
            pending = pending[room:]
    yield _pdv(context_id, pending, command, True)


def _pdv(context_id: int, data: bytes, command: bool, last: bool) -> bytes:
    header = (1 if command else 0) | (2 if last else 0)
    item = struct.pack(">LBB", len(data) + 2, context_id, header) + data
    return struct.pack(">BBL", 4, 0, len(item)) + item


def read_pdu(sock, reader: PDUReader, wanted):
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("the server closed the connection")
        for pdu in reader.feed(chunk):
            if isinstance(pdu, wanted):
                return pdu


def run_case(name: str, radx_path: str | None, timeout: float) -> dict:
    syntax, pieces = CASES[name]()
    out = tempfile.mkdtemp(prefix="radx-header-bench-")
    port_socket = socket.socket()
    port_socket.bind(("127.0.0.1", 0))
    port = port_socket.getsockname()[1]
    port_socket.close()
    env = dict(os.environ)
    cwd = out
    if radx_path:
        env["PYTHONPATH"] = os.path.abspath(radx_path)
        cwd = os.path.abspath(radx_path)
    server = spawn(
        [sys.executable, "-m", "radx", "dicom", "scp", str(port), "--output-dir", out,
         "--aet", "RADX-SCP", "--bind", "127.0.0.1", "--max-pdu", str(MAX_PDU), "--fsync=false"],
        env=env, cwd=cwd,
    )  # fmt: skip
    try:
        wait_listening(server, port)
        before = status_kib(server.pid, "VmHWM")
        reader = PDUReader(maximum_pdata_length=0)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(associate_rq(contexts=((1, SOP_CLASS, (syntax,)),)).encode())
            read_pdu(sock, reader, AAssociateAC)
            command = CStoreRQ(message_id=1, affected_sop_class_uid=SOP_CLASS, affected_sop_instance_uid=SOP_INSTANCE)
            for pdu in pdv_pdus(1, [command.encode()], True):
                sock.sendall(pdu)
            for pdu in pdv_pdus(1, pieces, False):
                sock.sendall(pdu)
            sent = time.monotonic()
            sock.settimeout(timeout)
            try:
                response = read_pdu(sock, reader, PDataTF)
            except socket.timeout:
                status = None  # no answer in time: measured as it stands
            else:
                status = decode_command(bytes(response.items[0].data)).status
                sock.sendall(AReleaseRQ().encode())
            elapsed = time.monotonic() - sent
        time.sleep(0.2)
        after = status_kib(server.pid, "VmHWM")
        rss = status_kib(server.pid, "VmRSS")
        stored = sum(len(files) for root, _, files in os.walk(out) if ".radx-incoming" not in root)
    finally:
        stop(server, signal.SIGINT)
        shutil.rmtree(out, ignore_errors=True)
    return {
        "case": name,
        "sent_bytes": sum(len(p) for p in pieces),
        "status": f"0x{status:04X}" if status is not None else f"none within {timeout:g}s",
        "seconds_to_response": round(elapsed, 2),
        "vmhwm_idle_mib": round(before / 1024, 1),
        "vmhwm_mib": round(after / 1024, 1),
        "vmrss_after_mib": round(rss / 1024, 1),
        "files_stored": stored,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--radx-path", help="run the radx of this checkout instead")
    parser.add_argument("--cases", default="deflated,sequence,large")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the response")
    args = parser.parse_args()
    for name in args.cases.split(","):
        print(run_case(name, args.radx_path, args.timeout), flush=True)


if __name__ == "__main__":
    main()
