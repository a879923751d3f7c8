"""Where the catalogue's time goes inside a running server: each part of an instance's row timed, with and without.

    python bench/catalogue_parts.py [--scenario small|ct] [--runs 3] [--checkout DIR]

Runs ``radx dicom scp`` (radx's defaults, tmpfs) with and without
``--catalogue``, alternately, ``--runs`` times each, and sends it the
benchmark corpus (``storescu +sd``, one association, as bench/run.py's
``small`` and ``ct1`` scenarios do). The server runs in a child process of
this script, which wraps, before radx starts, the storage thread's steps
in timers (wall clock, ``perf_counter_ns``; their own cost is about 1 us
each), and writes their totals when the server stops. Printed per
instance: the whole commit job (the data set written, the file committed,
the row recorded), the file's commit, and the row's parts: its values
decoded from the walk's, the catalogue checked (its file's ``stat``), the
SQL (the upsert, committed), the rest of ``ReceivedCatalogue.record``.
The job's time without the catalogue, beside it, gives the rest: the walk
keeping the row's values as the data set is written. ``--checkout DIR``
adds a third server, ``--catalogue`` with the radx of ``DIR`` (an export
of an earlier commit): before and after, in the same minutes.

Timers stay on every instance, so what they say is the server's warm or
cold state as it is, not a loop's. A job's wall clock includes any wait
for the interpreter lock; on this code none was seen (the thread's CPU
time matched it).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import corpus  # noqa: E402
import procs  # noqa: E402

OUT = os.path.join(HERE, "out")

# (label, module, object, attributes): what the server's child wraps, the
# first of the attributes it has (earlier code named some otherwise).
TIMED = (
    ("job", "radx.scp.storing", "InstanceReception", ("_commit_job",)),
    ("file commit", "radx.storage.store", "InstanceWriter", ("commit",)),
    ("row, in all", "radx.catalogue.received", "ReceivedCatalogue", ("record",)),
    ("row: values decoded", "radx.catalogue.received", None, ("attribute_values", "walked_values")),
    ("row: catalogue checked", "radx.catalogue.received", "ReceivedCatalogue", ("_current",)),
    ("row: SQL", "radx.catalogue.database", "Catalogue", ("record_values", "record")),
)


def serve(out: str, arguments: list[str]) -> int:
    """The child: radx with TIMED wrapped, its totals written to ``out`` at exit."""
    import importlib
    import threading

    totals: dict[str, list[int]] = {}
    lock = threading.Lock()

    def timed(label, function):
        def wrapper(*args, **kwargs):
            started = time.perf_counter_ns()
            try:
                return function(*args, **kwargs)
            finally:
                spent = time.perf_counter_ns() - started
                with lock:
                    entry = totals.setdefault(label, [0, 0])
                    entry[0] += 1
                    entry[1] += spent

        return wrapper

    for label, module_name, owner_name, attributes in TIMED:
        module = importlib.import_module(module_name)
        owner = module if owner_name is None else getattr(module, owner_name)
        attribute = next(a for a in attributes if hasattr(owner, a))
        setattr(owner, attribute, timed(label, getattr(owner, attribute)))

    def write():
        with open(out, "w") as fp:
            json.dump(totals, fp)

    atexit.register(write)
    from radx.app import cli

    sys.argv = ["radx", *arguments]
    return cli.main(arguments)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(folder: str, catalogue: bool, work: str, checkout: str | None = None) -> dict:
    """
    One server (radx from ``checkout``, if given), one storescu of
    ``folder``: files/s and the parts' means, in us an instance.
    """
    from radx.testing import dcmtk_tool

    port = free_port()
    out = os.path.join(work, "received")
    totals = os.path.join(work, "totals.json")
    argv = [sys.executable, __file__, "--serve", totals, "dicom", "scp", str(port), "--output-dir", out,
            "--aet", "RADX-SCP", "--bind", "127.0.0.1", "--max-pdu", "16384"]  # fmt: skip
    if catalogue:
        argv += ["--catalogue", out + ".db"]
    env = None
    if checkout is not None:
        # As bench/run.py's --baseline: that checkout's radx first on the path.
        argv.insert(1, "-P")
        env = dict(os.environ, PYTHONPATH=os.path.abspath(checkout))
    with open(os.path.join(work, "server.log"), "wb") as log:
        server = procs.spawn(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            procs.wait_listening(server, port)
            files = len(os.listdir(folder))
            started = time.perf_counter()
            subprocess.run([dcmtk_tool("storescu"), "-aec", "RADX-SCP", "+sd", "127.0.0.1", str(port), folder],
                           env=dict(os.environ, TCP_NODELAY="1"), check=True, capture_output=True, timeout=600)  # fmt: skip
            seconds = time.perf_counter() - started
        finally:
            procs.stop(server, signal.SIGINT)
    with open(totals) as fp:
        found = json.load(fp)
    parts = {label: total / count / 1000 for label, (count, total) in found.items() if count}
    return {"files/s": files / seconds, **parts}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=("small", "ct"), default="small")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--checkout", help="also time the radx of this checkout (an export of an earlier commit, say)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    options, rest = parser.parse_known_args(argv)
    if options.serve:
        return serve(options.serve, rest)
    corpus.build(os.path.join(OUT, "corpus"))
    folder = os.path.join(OUT, "corpus", options.scenario)
    kinds = [("plain", False, None), ("--catalogue", True, None)]
    if options.checkout:
        kinds.append(("checkout --catalogue", True, options.checkout))
    results = {name: [] for name, *_ in kinds}
    for number in range(options.runs):
        for name, catalogue, checkout in kinds:
            with tempfile.TemporaryDirectory(dir="/dev/shm", prefix="radx-parts-") as work:
                result = run(folder, catalogue, work, checkout)
            results[name].append(result)
            shown = ", ".join(f"{k} {v:.1f}" for k, v in result.items())
            print(f"run {number + 1} {name}: {shown}")
    print(f"\nMedians of {options.runs} runs, us an instance ({options.scenario}; files/s as sent):")
    print(f"  {'':24s} " + "  ".join(f"{name:>20s}" for name, *_ in kinds))
    for label in ["files/s"] + [label for label, *_ in TIMED]:
        row = []
        for name, *_ in kinds:
            values = [r[label] for r in results[name] if label in r]
            row.append(f"{statistics.median(values):20.1f}" if values else f"{'-':>20}")
        print(f"  {label:24s} " + "  ".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
