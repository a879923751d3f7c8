"""CPU per C-ECHO, per association and per small file: storescp, radx, and the floor radx's shape sets.

    python bench/floor.py [--rounds 3] [--echoes 20000] [--associations 3000] [--stores 2000]

Starts DCMTK's storescp, radx's server (``--fsync=false``: storescp does
not fsync either) and bench/twisted_floor.py (a Twisted server with
canned answers, no DICOM; it writes each data set from a threadpool, as
radx does), twice: with Twisted's ThreadPool and with ``--bare``, one
SimpleQueue thread. All listen on loopback ports. In each round, each
server in turn gets bench/rawclient.py (echo, associations, then the
corpus's small files, ``bench/out/corpus/small``), and its CPU time is
read from /proc before and after. Prints the median CPU per operation of
each, and the ratios: how much of radx's cost is that of its shape
(Twisted's reactor, and for a file one round trip to a thread) before
radx does anything, and how far each floor is from storescp's whole
cost. See bench/README.rst, "Floor".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import corpus  # noqa: E402
import procs  # noqa: E402
from run import AE, OUT, dcmtk, dcmtk_env, free_port  # noqa: E402

KINDS = ("echo", "assoc", "store")


def _servers(base: str) -> list[tuple[str, Callable[[int], list[str]], dict]]:
    """(name, its command line for a port, its environment) of each server; their output under ``base``."""
    python_env = dict(os.environ)
    return [
        ("storescp", lambda port: [dcmtk("storescp"), "--output-directory", base, "-aet", AE, str(port)], dcmtk_env()),
        ("radx", lambda port: [sys.executable, "-m", "radx", "dicom", "scp", str(port), "--output-dir",
                               os.path.join(base, "radx"), "--aet", AE, "--bind", "127.0.0.1", "--fsync=false"],
         python_env),
        ("twisted floor", lambda port: [sys.executable, os.path.join(HERE, "twisted_floor.py"), str(port),
                                        os.path.join(base, "floor")], python_env),
        ("bare floor", lambda port: [sys.executable, os.path.join(HERE, "twisted_floor.py"), str(port),
                                     os.path.join(base, "bare"), "--bare"], python_env),
    ]  # fmt: skip


def _remove_files(base: str) -> None:
    """Remove the files stored under ``base``, keeping the folders: each round stores the same instances anew."""
    for folder, _, names in os.walk(base):
        for name in names:
            os.unlink(os.path.join(folder, name))


def _drive(pid: int, kind: str, port: int, count: int, extra=()) -> tuple[float, float]:
    """CPU milliseconds the server spent per operation of ``kind``, and the operations per second."""
    before = procs.process_cpu(pid)
    done = subprocess.run(
        [sys.executable, os.path.join(HERE, "rawclient.py"), kind, str(port), "--count", str(count), "--seconds", "60",
         *extra],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    after = procs.process_cpu(pid)
    result = json.loads(done.stdout)
    if result["failures"] or not result["count"]:
        raise SystemExit(f"{kind} against port {port}: {result}")
    return (after - before) * 1000 / result["count"], result["rate"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each server in turn within one (default 3)")
    parser.add_argument("--echoes", type=int, default=20000, help="C-ECHOs per measurement (default 20000)")
    parser.add_argument("--associations", type=int, default=3000, help="associations per measurement (default 3000)")
    parser.add_argument("--stores", type=int, default=2000, help="small files per measurement (default 2000)")
    args = parser.parse_args(argv)
    corpus_dir = os.path.join(OUT, "corpus")
    corpus.build(corpus_dir)
    small = ("--dir", os.path.join(corpus_dir, "small"))

    base = f"/dev/shm/radx-bench-floor-{os.getpid()}"
    running = []
    try:
        os.makedirs(base)  # storescp's output folder; radx makes its own
        for name, command, env in _servers(base):
            port = free_port()
            process = procs.spawn(command(port), env=env)
            procs.wait_listening(process, port)
            running.append((name, process, port))
        figures: dict[tuple[str, str], list[float]] = {}
        for index in range(1, args.rounds + 1):
            for kind, count, extra in (
                ("echo", args.echoes, ()),
                ("assoc", args.associations, ()),
                ("store", args.stores, small),
            ):
                for name, process, port in running:
                    if kind == "store":
                        _remove_files(base)
                    cpu, rate = _drive(process.pid, kind, port, count, extra)
                    figures.setdefault((name, kind), []).append(cpu)
                    print(f"  round {index}  {kind:5s}  {name:14s} {cpu:.3f} ms  {rate:7.0f}/s", flush=True)
    finally:
        for name, process, _ in running:
            procs.stop(process, signal.SIGINT if name == "radx" else signal.SIGTERM)
        shutil.rmtree(base, ignore_errors=True)

    print(f"\nServer CPU per operation, ms, median of {args.rounds} round(s):")
    print(f"{'':8s} {'storescp':>9s} {'radx':>9s} {'floor':>9s} {'bare':>9s} {'radx/floor':>11s} {'floor/storescp':>15s}"
          f" {'bare/storescp':>14s}")  # fmt: skip
    names = ("storescp", "radx", "twisted floor", "bare floor")
    for kind in KINDS:
        storescp, radx, floor, bare = (statistics.median(figures[(name, kind)]) for name in names)
        print(f"{kind:8s} {storescp:9.3f} {radx:9.3f} {floor:9.3f} {bare:9.3f} {radx / floor:10.2f}x"
              f" {floor / storescp:14.2f}x {bare / storescp:13.2f}x")  # fmt: skip
    print("floor: bench/twisted_floor.py, a Twisted server with canned answers and no DICOM;")
    print("store: one small file (~1.8 KB) written from a threadpool, no fsync, by each of them;")
    print("bare: the same floor with one SimpleQueue thread in place of Twisted's ThreadPool.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
