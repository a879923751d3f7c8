"""A fast DICOM client on a raw socket, for C-ECHO and association rates.

pynetdicom as a client tops out near 250 C-ECHOs a second, which would
measure pynetdicom, not the receiver.  This client builds its PDUs once,
with radx's own encoders (``radx.testing``), and then only sends bytes and
reads PDU headers: one request in flight at a time, as a real SCU does.

    python bench/rawclient.py echo PORT [--count N] [--seconds S]
    python bench/rawclient.py assoc PORT [--count N] [--seconds S]
    python bench/rawclient.py store PORT --dir DIR [--count N] [--seconds S]

``store`` sends the files of DIR (the benchmark's corpus: one SOP Class,
Explicit VR Little Endian), each C-STORE-RQ and its data set built
before the clock starts, in turn and again until ``--count`` are sent.

It prints one JSON line: how many operations completed, the time they
took (the loop only, not process start or the association set-up for
echo), the rate, failures, and the client's own CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import time

from radx import uids
from radx.testing import associate_rq, echo_rq_bytes, store_rq_bytes
from radx.ul.pdu import AReleaseRQ

_HEADER = struct.Struct(">BxL")
# (0000,0900) Status, implicit VR little endian, length 2, value 0000H.
_STATUS_SUCCESS = b"\x00\x00\x00\x09\x02\x00\x00\x00\x00\x00"

P_DATA_TF = 0x04
A_ASSOCIATE_AC = 0x02
A_RELEASE_RP = 0x06


class PDUStream:
    """Reads whole PDUs from a socket: the 6-byte header, then its body."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = bytearray()

    def read(self) -> tuple[int, bytes]:
        buffer = self.buffer
        while True:
            if len(buffer) >= 6:
                pdu_type, length = _HEADER.unpack_from(buffer)
                end = 6 + length
                if len(buffer) >= end:
                    body = bytes(buffer[6:end])
                    del buffer[:end]
                    return pdu_type, body
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the peer closed the connection")
            buffer += chunk


def _connect(port: int, timeout: float) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def echo(port: int, count: int, seconds: float, timeout: float = 10.0) -> dict:
    """C-ECHO ``count`` times (or for ``seconds``) in one association."""
    messages = [echo_rq_bytes(message_id=(i % 65535) + 1) for i in range(count)]
    return _exchange("echo", associate_rq(called_ae_title="RADX-SCP").encode(), messages, port, seconds, timeout)


def store(port: int, count: int, seconds: float, directory: str, timeout: float = 10.0) -> dict:
    """C-STORE the files of ``directory``, ``count`` in all (or for ``seconds``), in one association."""
    from pydicom import dcmread

    names = sorted(os.listdir(directory))
    if not names:
        raise RuntimeError(f"no files in {directory}")
    instances = []
    for name in names[:count]:
        path = os.path.join(directory, name)
        meta = dcmread(path, stop_before_pixels=True).file_meta
        if meta.TransferSyntaxUID != uids.EXPLICIT_VR_LITTLE_ENDIAN:
            raise RuntimeError(f"{path}: not Explicit VR Little Endian")
        with open(path, "rb") as source:
            raw = source.read()
        # PS3.10 7.1: 128-byte preamble, "DICM", then (0002,0000) gives the meta's length.
        (group_length,) = struct.unpack_from("<L", raw, 140)
        instances.append((str(meta.MediaStorageSOPClassUID), str(meta.MediaStorageSOPInstanceUID), raw[144 + group_length :]))
    sop_classes = {sop_class for sop_class, _, _ in instances}
    if len(sop_classes) != 1:
        raise RuntimeError(f"{directory}: {len(sop_classes)} SOP Classes, one expected")
    rq = associate_rq(
        called_ae_title="RADX-SCP",
        contexts=((1, sop_classes.pop(), (uids.EXPLICIT_VR_LITTLE_ENDIAN,)),),
    ).encode()
    messages = []
    for i in range(count):
        sop_class, sop_instance, data_set = instances[i % len(instances)]
        messages.append(store_rq_bytes(data_set, sop_class, sop_instance, message_id=(i % 65535) + 1))
    return _exchange("store", rq, messages, port, seconds, timeout)


def _exchange(kind: str, rq: bytes, messages: list, port: int, seconds: float, timeout: float) -> dict:
    """Associate, send each message and wait for its answer, release."""
    release = AReleaseRQ().encode()
    failures = 0
    sock = _connect(port, timeout)
    try:
        stream = PDUStream(sock)
        sock.sendall(rq)
        pdu_type, body = stream.read()
        if pdu_type != A_ASSOCIATE_AC:
            raise RuntimeError(f"association not accepted: PDU type {pdu_type:#04x}")
        cpu0 = time.process_time()
        started = time.perf_counter()
        deadline = started + seconds
        done = 0
        send = sock.sendall
        read = stream.read
        for message in messages:
            send(message)
            pdu_type, body = read()
            if pdu_type != P_DATA_TF or _STATUS_SUCCESS not in body:
                failures += 1
            done += 1
            # Look at the clock now and then only: it costs as much as an echo.
            if not done & 255 and time.perf_counter() > deadline:
                break
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu0
        sock.sendall(release)
        pdu_type, _ = stream.read()
        if pdu_type != A_RELEASE_RP:
            failures += 1
    finally:
        sock.close()
    return _result(kind, done, elapsed, failures, cpu)


def associations(port: int, count: int, seconds: float, timeout: float = 10.0) -> dict:
    """Associate and release ``count`` times (or for ``seconds``), one connection each."""
    rq = associate_rq(called_ae_title="RADX-SCP").encode()
    release = AReleaseRQ().encode()
    failures = 0
    done = 0
    cpu0 = time.process_time()
    started = time.perf_counter()
    deadline = started + seconds
    for _ in range(count):
        sock = _connect(port, timeout)
        try:
            stream = PDUStream(sock)
            sock.sendall(rq)
            pdu_type, _ = stream.read()
            if pdu_type == A_ASSOCIATE_AC:
                sock.sendall(release)
                pdu_type, _ = stream.read()
                if pdu_type != A_RELEASE_RP:
                    failures += 1
            else:
                failures += 1
        finally:
            sock.close()
        done += 1
        if time.perf_counter() > deadline:
            break
    elapsed = time.perf_counter() - started
    return _result("assoc", done, elapsed, failures, time.process_time() - cpu0)


def _result(kind, done, elapsed, failures, cpu) -> dict:
    return {
        "kind": kind,
        "count": done,
        "seconds": elapsed,
        "rate": done / elapsed if elapsed > 0 else 0.0,
        "failures": failures,
        "client_cpu_seconds": cpu,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=("echo", "assoc", "store"))
    parser.add_argument("port", type=int)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--dir", help="for store: the files to send")
    args = parser.parse_args(argv)
    if args.kind == "store":
        if not args.dir:
            parser.error("store needs --dir")
        run = lambda port, count, seconds: store(port, count, seconds, args.dir)  # noqa: E731
    else:
        run = echo if args.kind == "echo" else associations
    try:
        result = run(args.port, args.count, args.seconds)
    except (OSError, RuntimeError, ConnectionError) as error:
        result = {"kind": args.kind, "error": f"{type(error).__name__}: {error}"}
        print(json.dumps(result))
        return 1
    print(json.dumps(result))
    return 0 if not result["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
