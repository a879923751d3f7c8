"""Memory before any association: many connections each sending part of a large A-ASSOCIATE-RQ.

Starts ``radx dicom scp`` on 127.0.0.1, opens ``--conns`` connections
(1,000 by default), each sending the header of an A-ASSOCIATE-RQ that
declares ``--declared`` bytes (1 MiB by default) and then as much of its
body as the server takes, without ever finishing it. While they are open
it checks that a real ``echoscu`` still gets its C-ECHO answered; then it
closes them all and waits. It samples the server's ``VmRSS`` all along
and prints, in MiB: before (idle, after one C-ECHO), peak (``VmHWM``),
with the connections open, and after they closed::

    python bench/preassoc.py [--conns N] [--declared BYTES] [--settle S] [-- SERVER FLAGS]

``--declared 65536`` (or any figure within radx's bound) makes each
connection fill what radx will buffer, rather than be refused at its
header.
"""

from __future__ import annotations

import argparse
import errno
import os
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import procs  # noqa: E402
from run import dcmtk, dcmtk_env, free_port  # noqa: E402

MiB = 1 << 20
AE = "RADX-SCP"


def raise_file_limit(needed: int) -> None:
    """Raise this process's soft RLIMIT_NOFILE (the server, its child, inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if wanted < needed:
        print(f"note: RLIMIT_NOFILE is {wanted}, fewer than the {needed} this run wants", file=sys.stderr)


class Sampler(threading.Thread):
    """VmRSS of a process every 50 ms; keeps the largest seen."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.largest = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            rss = procs.status_kib(self.pid, "VmRSS")
            if rss is not None:
                self.largest = max(self.largest, rss)
            self.done.wait(0.05)


def mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def echo(port: int) -> int:
    argv = [dcmtk("echoscu"), "-aec", AE, "-to", "20", "127.0.0.1", str(port)]
    return subprocess.run(argv, env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode


def echo_outcome(status: int, when: str) -> int:
    """Print how ``echoscu`` fared; the script's exit status."""
    print(f"echoscu {when}: {'success' if status == 0 else f'failed ({status})'}")
    return 0 if status == 0 else 1


def open_partial_requests(port: int, count: int, declared: int) -> list[socket.socket]:
    """``count`` connections, each with the header of an A-ASSOCIATE-RQ declaring ``declared`` bytes."""
    header = struct.pack(">BxL", 0x01, declared)
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        try:
            sock.send(header)
        except OSError:
            pass
        sockets.append(sock)
    return sockets


def feed(sockets: list[socket.socket], declared: int, rounds: int = 20) -> tuple[int, int]:
    """Send body bytes on each connection until the server takes no more; (bytes sent, connections closed)."""
    chunk = b"\x00" * 65536
    sent = {id(s): 0 for s in sockets}
    closed: set[int] = set()
    for _ in range(rounds):
        progress = False
        for sock in sockets:
            if id(sock) in closed:
                continue
            while sent[id(sock)] < declared - 1:  # never the last byte: the request stays unfinished
                try:
                    n = sock.send(chunk[: declared - 1 - sent[id(sock)]])
                except BlockingIOError:
                    break
                except OSError as error:
                    if error.errno not in (errno.EPIPE, errno.ECONNRESET):
                        raise
                    closed.add(id(sock))
                    break
                sent[id(sock)] += n
                progress = True
        if not progress:
            break
        time.sleep(0.2)  # the server reads in between
    # A connection the server closed may not have failed a send yet.
    for sock in sockets:
        if id(sock) in closed:
            continue
        try:
            if sock.recv(1, socket.MSG_PEEK) == b"":
                closed.add(id(sock))
        except BlockingIOError:
            pass
        except OSError:
            closed.add(id(sock))
    return sum(sent.values()), len(closed)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conns", type=int, default=1000)
    parser.add_argument("--declared", type=int, default=MiB, help="PDU-length each A-ASSOCIATE-RQ declares")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds to wait after closing them")
    parser.add_argument("server_flags", nargs="*", help="more flags for radx dicom scp (after --)")
    args = parser.parse_args(argv)

    raise_file_limit(args.conns + 256)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="radx-preassoc-") as out:
        server_argv = [
            sys.executable, "-m", "radx", "dicom", "scp", str(port),
            "--output-dir", out, "--aet", AE, "--bind", "127.0.0.1", *args.server_flags,
        ]  # fmt: skip
        server = procs.spawn(server_argv)
        try:
            procs.wait_listening(server, port)
            if echo(port) != 0:
                print("echoscu failed before the connections were opened", file=sys.stderr)
                return 1
            time.sleep(0.5)
            before = procs.status_kib(server.pid, "VmRSS")
            sampler = Sampler(server.pid)
            sampler.start()
            started = time.monotonic()
            sockets = open_partial_requests(port, args.conns, args.declared)
            sent, closed = feed(sockets, args.declared)
            held = procs.status_kib(server.pid, "VmRSS")
            echo_status = echo(port)
            for sock in sockets:
                sock.close()
            time.sleep(args.settle)
            after = procs.status_kib(server.pid, "VmRSS")
            sampler.done.set()
            sampler.join()
            peak = procs.status_kib(server.pid, "VmHWM")
        finally:
            procs.stop(server, 2)
    print(
        f"connections={args.conns} declared={args.declared} body_sent={sent / MiB:.1f}MiB"
        f" closed_by_server={closed} in {time.monotonic() - started - args.settle:.1f}s"
    )
    print(
        f"VmRSS MiB: before={mib(before)} with_them_open={mib(held)} peak_sampled={mib(sampler.largest)}"
        f" VmHWM={mib(peak)} after_close={mib(after)}"
    )
    return echo_outcome(echo_status, "while they were open")


if __name__ == "__main__":
    sys.exit(main())
