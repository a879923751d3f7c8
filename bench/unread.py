"""A peer that sends C-ECHO-RQs back to back and never reads a response: the server's memory and CPU.

Starts ``radx dicom scp`` on 127.0.0.1, associates from a raw socket,
then for ``--seconds`` (20 by default) sends C-ECHO-RQs as fast as the
socket takes them, reading nothing. Halfway it runs DCMTK's ``echoscu``.
It prints the server's ``VmRSS`` at the start of the stream, halfway and
at the end (MiB), its growth per second, the server's CPU time over the
stream, the C-ECHOs it read (from its statistics at exit) and whether
``echoscu`` succeeded::

    python bench/unread.py [--seconds S] [-- SERVER FLAGS]
"""

from __future__ import annotations

import argparse
import os
import re
import select
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import procs  # noqa: E402
from preassoc import AE, echo, echo_outcome, mib  # noqa: E402
from run import free_port  # noqa: E402

from radx.testing import associate_rq, echo_rq_bytes  # noqa: E402


def associate(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(associate_rq(called_ae_title=AE).encode())
    answer = sock.recv(65536)
    if not answer or answer[0] != 0x02:
        raise SystemExit(f"not associated: {answer[:16].hex()}")
    return sock


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("server_flags", nargs="*", help="more flags for radx dicom scp (after --)")
    args = parser.parse_args(argv)

    port = free_port()
    # 1,000 requests a write, message IDs 1 to 1000.
    burst = b"".join(echo_rq_bytes(message_id=i + 1) for i in range(1000))
    with tempfile.TemporaryDirectory(prefix="radx-unread-") as out:
        server_argv = [
            sys.executable, "-m", "radx", "dicom", "scp", str(port), "--output-dir", out, "--aet", AE,
            "--bind", "127.0.0.1", "--log-level", "warn", *args.server_flags,
        ]  # fmt: skip
        server = procs.spawn(server_argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            procs.wait_listening(server, port)
            sock = associate(port)
            sock.setblocking(False)
            time.sleep(0.5)
            rss_start = procs.status_kib(server.pid, "VmRSS")
            cpu_start = procs.process_cpu(server.pid)
            started = time.monotonic()
            sent = 0
            echo_status = None
            pending = memoryview(burst)
            while (elapsed := time.monotonic() - started) < args.seconds:
                if echo_status is None and elapsed >= args.seconds / 2:
                    rss_mid = procs.status_kib(server.pid, "VmRSS")
                    echo_status = echo(port)
                select.select([], [sock], [], 0.1)
                try:
                    n = sock.send(pending)
                except BlockingIOError:
                    continue
                sent += n
                pending = pending[n:] or memoryview(burst)
            elapsed = time.monotonic() - started
            rss_end = procs.status_kib(server.pid, "VmRSS")
            cpu = procs.process_cpu(server.pid) - cpu_start
            peak = procs.status_kib(server.pid, "VmHWM")
            sock.close()
        finally:
            procs.stop(server, 2)
            output = server.stdout.read().decode(errors="replace")
    found = re.search(r"C-ECHO Requests:\s+(\d+)", output)
    answered = found.group(1) if found else "?"
    print(f"seconds={elapsed:.1f} sent={sent / (1 << 20):.1f}MiB of C-ECHO-RQs, C-ECHOs read by the server={answered}")
    print(
        f"VmRSS MiB: start={mib(rss_start)} halfway={mib(rss_mid)} end={mib(rss_end)}"
        f" growth={(rss_end - rss_start) / 1024 / elapsed:.2f}MiB/s VmHWM={mib(peak)}"
        f" server CPU={cpu:.1f}s ({100 * cpu / elapsed:.0f}% of a core)"
    )
    return echo_outcome(echo_status, "meanwhile")


if __name__ == "__main__":
    sys.exit(main())
