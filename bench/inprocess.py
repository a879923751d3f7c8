"""CPU per CT image, small file and C-ECHO through radx's server in-process: no sockets, no threads.

    python bench/inprocess.py [--rounds 5] [--images 100] [--smalls 400] [--echoes 2000] [--reactor-only] [--profile OUT.prof]

``radx.testing.ScpHarness`` runs one association on a StringTransport;
its threadpool runs each storage job at once, on the same thread, so the
CPU time measured (``time.process_time``) is the whole receiver's: PDU
framing, the state machine, DIMSE reassembly, the hand-off and the file
writes (``--fsync=false``, to a tmpfs folder when there is one). The
requests are encoded beforehand, as PDUs of 16 KiB (the default Maximum
Length), and fed in reads of 256 KiB, the size radx asks of the socket.
Prints the median over the rounds of the CPU per operation, in µs. What
it leaves out is the reactor, the system calls of the socket and the
thread hand-off: compare two versions of radx with it, not radx with
another receiver. With ``--reactor-only`` the storage jobs never run
(nothing is written, no response is sent for a C-STORE): what is left is
the reactor thread's share, without the file system's noise.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import shutil
import statistics
import sys
import tempfile
import time

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ImplicitVRLittleEndian

from radx import uids
from radx.scp.config import ServerConfig
from radx.testing import ScpHarness, SteppedThreadPool, associate_rq, echo_rq_bytes, store_rq_bytes

READ = 256 * 1024
CT = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def data_set(sop_class: str, uid: str, rows: int, bits: int) -> bytes:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = "1.2.3.4.5"
    ds.PatientID = "BENCH"
    ds.Modality = "CT" if sop_class == CT else "OT"
    ds.Rows = ds.Columns = rows
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.SamplesPerPixel = 1
    ds.PixelRepresentation = 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = os.urandom(rows * rows * bits // 8)
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, True
    write_dataset(out, ds)
    return out.getvalue()


def requests(sop_class: str, context_id: int, count: int, rows: int, bits: int) -> list[bytes]:
    body = data_set(sop_class, "1.2.3.9.10000", rows, bits)
    out = []
    for index in range(count):
        # As long as the UID in the body, which it replaces: each instance its own file.
        uid = f"1.2.3.9.{10000 + index}"
        out.append(store_rq_bytes(body.replace(b"1.2.3.9.10000\x00", uid.encode() + b"\x00"),
                                  sop_class, uid, context_id=context_id, message_id=index % 65535 + 1))
    return out


def feed(harness: ScpHarness, data: bytes) -> None:
    received = harness.protocol.dataReceived
    for offset in range(0, len(data), READ):
        received(data[offset : offset + READ])
    harness.transport.clear()


class NoThreadPool(SteppedThreadPool):
    """Storage jobs are dropped, never run."""

    def callInThreadWithCallback(self, on_result, f, *args, **kwargs):
        pass


def associated(output: str, reactor_only: bool = False) -> ScpHarness:
    harness = ScpHarness(ServerConfig(output_dir=output, fsync=False), threadpool=NoThreadPool() if reactor_only else None)
    contexts = [(1, uids.VERIFICATION_SOP_CLASS, (uids.IMPLICIT_VR_LITTLE_ENDIAN,)),
                (3, CT, (ImplicitVRLittleEndian,)), (5, SECONDARY_CAPTURE, (ImplicitVRLittleEndian,))]
    harness.send(associate_rq(contexts=contexts).encode())
    harness.transport.clear()
    return harness


def round_of(kind: str, messages: list[bytes], base: str, reactor_only: bool) -> float:
    output = tempfile.mkdtemp(dir=base)
    try:
        harness = associated(output, reactor_only)
        started = time.process_time()
        for message in messages:
            feed(harness, message)
        elapsed = time.process_time() - started
        if not reactor_only:  # else reading is paused (the instances are never filed): just dropped
            harness.disconnect()
        stored = 0 if kind == "echo" or reactor_only else len(messages)
        assert harness.factory.stats.stores_succeeded == stored, kind
        return elapsed / len(messages)
    finally:
        shutil.rmtree(output)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--smalls", type=int, default=400)
    parser.add_argument("--echoes", type=int, default=2000)
    parser.add_argument("--reactor-only", action="store_true", help="drop the storage jobs: the reactor thread's share")
    parser.add_argument("--profile", metavar="OUT", help="profile the CT rounds into OUT (cProfile)")
    args = parser.parse_args()
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    kinds = {
        "ct": requests(CT, 3, args.images, 512, 16),
        "small": requests(SECONDARY_CAPTURE, 5, args.smalls, 32, 8),
        "echo": [echo_rq_bytes(message_id=i % 65535 + 1) for i in range(args.echoes)],
    }
    from twisted.logger import globalLogBeginner

    globalLogBeginner.beginLoggingTo([], discardBuffer=True, redirectStandardIO=False)
    profile = cProfile.Profile() if args.profile else None
    for kind, messages in kinds.items():
        times = []
        for _ in range(args.rounds):
            if profile is not None and kind == "ct":
                profile.enable()
            times.append(round_of(kind, messages, base, args.reactor_only))
            if profile is not None:
                profile.disable()
        print(f"{kind:6s} {statistics.median(times) * 1e6:8.1f} µs  (rounds: {' '.join(f'{t * 1e6:.1f}' for t in times)})")
    if profile is not None:
        profile.dump_stats(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
