"""radx dicom store against DCMTK storescu: the same 500 CT images, the same receiver, real processes.

    python bench/senders.py [--runs 3] [--receivers storescp,radx] [--conns 1,4] [--max-ops 8,1]
                            [--output-fs tmpfs|disk]

Each run starts the receiver afresh (output on tmpfs, or with
``--output-fs disk`` under bench/out on the real disk), sends ``corpus/ct``
with one sender, times it by wall clock from the sender's start to its
exit (every file answered), checks every received data set against the
corpus, and stops the receiver. Senders alternate within a receiver, so a
change of load on the machine falls on all of them alike. See
bench/README.rst, "Senders".
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import corpus  # noqa: E402
import procs  # noqa: E402
from run import AE, OUT, RECEIVERS, dcmtk, dcmtk_env, free_port, interpreter  # noqa: E402
from verify import verify  # noqa: E402


def storescu(port: int, folder: str, conns: int, operations: int) -> list[str]:
    # DCMTK's own program (pynetdicom's storescu shadows it on PATH); +sd scans the folder.
    return [dcmtk("storescu"), "-aec", AE, "+sd", "127.0.0.1", str(port), folder]


def radx_store(port: int, folder: str, conns: int, operations: int) -> list[str]:
    return [
        sys.executable, "-m", "radx", "dicom", "store", "--dir", folder,
        "--host", "127.0.0.1", "--port", str(port), "--called-ae", AE, "--conns", str(conns),
        "--max-ops", str(operations),
    ]  # fmt: skip


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(receiver, sender_key: str, sender, conns: int, operations: int, folder: str, entries, log_dir: str, base: str, index: int) -> dict:
    port = free_port()
    name = f"{receiver.key}-{sender_key}-{index}"
    out = os.path.join(base, name)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    os.sync()
    with open(os.path.join(log_dir, name + ".receiver.log"), "wb") as log:
        process = procs.spawn(receiver.argv(port, out), env=receiver.env(), stdout=log)
    try:
        procs.wait_listening(process, port)
        cpu_before = _cpu_children()
        with open(os.path.join(log_dir, name + ".sender.log"), "wb") as log:
            started = time.perf_counter()
            # TCP_NODELAY=1 matters to DCMTK only; radx sets TCP_NODELAY itself.
            sending = procs.spawn(sender(port, folder, conns, operations), env=dict(os.environ) | dcmtk_env(), stdout=log)
            code = procs.wait(sending, 600)
            wall = time.perf_counter() - started
        sender_cpu = _cpu_children() - cpu_before
        # What a radx process costs before it sends anything: start-up (the
        # interpreter, Twisted's reactor, radx) and one association, timed
        # with a C-ECHO against the same receiver.
        started = time.perf_counter()
        echo = procs.spawn([sys.executable, "-m", "radx", "dicom", "echo", "127.0.0.1", str(port), "--called-ae", AE])
        procs.wait(echo, 60)
        startup = time.perf_counter() - started
    finally:
        procs.stop(process, receiver.stop_signal)
    check = verify(out, entries)
    shutil.rmtree(out, ignore_errors=True)
    ok = code == 0 and check["ok"]
    return {
        "receiver": receiver.key,
        "sender": sender_key,
        "run": index,
        "ok": ok,
        "sender_exit": code,
        "problems": check["problems"],
        "wall_seconds": wall,
        "files_per_second": len(entries) / wall,
        "radx_startup_seconds": startup,
        # Includes the receiver's CPU only when it exits (it does not, while measured).
        "sender_cpu_seconds": sender_cpu,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per receiver and sender (default 3)")
    parser.add_argument("--receivers", default="storescp,radx", help="comma-separated keys of bench/run.py's receivers")
    parser.add_argument("--conns", default="1,4", help="radx dicom store --conns values to run (default 1,4)")
    parser.add_argument(
        "--max-ops", default="8", help="radx dicom store --max-ops values to run (default 8, its own default)"
    )
    parser.add_argument("--corpus", default=os.path.join(OUT, "corpus"), help="the corpus folder (built if missing)")
    parser.add_argument("--output-fs", choices=("tmpfs", "disk"), default="tmpfs",
                        help="where receivers write: /dev/shm (tmpfs) or bench/out on the real disk")  # fmt: skip
    args = parser.parse_args(argv)

    # Bytecode compiled, as an installed package has it (PYTHONDONTWRITEBYTECODE
    # would otherwise make every radx process compile its modules at start).
    import radx

    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.dirname(radx.__file__)], check=True)
    manifest = corpus.build(args.corpus)
    entries = manifest["sets"]["ct"]
    folder = os.path.join(args.corpus, "ct")
    for entry in entries:  # read from the page cache in every run, not the disk
        with open(os.path.join(args.corpus, entry["file"]), "rb") as fp:
            while fp.read(8 << 20):
                pass
    receivers = [r for r in RECEIVERS if r.key in args.receivers.split(",")]
    senders = [("storescu", storescu, 1, 1)] + [
        (f"radx c{n} ops{ops}", radx_store, int(n), int(ops))
        for n in args.conns.split(",")
        if n
        for ops in args.max_ops.split(",")
        if ops
    ]
    # The ratio is the first radx sender's: the first --conns and --max-ops values.
    first_radx = senders[1][0] if len(senders) > 1 else None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_dir = os.path.join(OUT, f"senders-logs-{stamp}")
    os.makedirs(log_dir)
    if args.output_fs == "tmpfs":
        base = f"/dev/shm/radx-bench-senders-{os.getpid()}"
    else:
        base = os.path.join(OUT, f"senders-received-{os.getpid()}")
    os.makedirs(base, exist_ok=True)
    print(f"{len(entries)} CT images, {sum(e['file_bytes'] for e in entries) / 1e6:.1f} MB; output on {base}; load {open('/proc/loadavg').read().split()[:3]}")
    print(f"radx runs on {interpreter()}")
    results = []
    try:
        for receiver in receivers:
            for index in range(args.runs):
                for key, sender, conns, operations in senders:
                    r = run_once(receiver, key, sender, conns, operations, folder, entries, log_dir, base, index)
                    results.append(r)
                    status = "ok" if r["ok"] else f"FAIL exit {r['sender_exit']} {r['problems']}"
                    print(f"  {receiver.key:14s} {key:16s} run {index + 1}: {r['files_per_second']:7.1f} files/s"
                          f"  wall {r['wall_seconds']:.2f} s  sender CPU {r['sender_cpu_seconds']:.2f} s"
                          f"  (radx echo {r['radx_startup_seconds']:.2f} s)  {status}", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(base, ignore_errors=True)

    print()
    print(f"Median files/s of {args.runs} run(s), 500 CT images (~0.5 MB); radx cN opsM is --conns N --max-ops M:")
    print()
    header = (
        f"{'receiver':16s} "
        + " ".join(f"{key:>16s}" for key, *_ in senders)
        + f" {'radx/storescu':>14s} {'by run':>8s}"
    )
    print(header)
    print("-" * len(header))
    summary = {}
    startups = []
    for receiver in receivers:
        row = {}
        for key, *_ in senders:
            values = [r["files_per_second"] for r in results if r["receiver"] == receiver.key and r["sender"] == key and r["ok"]]
            row[key] = statistics.median(values) if values else None
        summary[receiver.key] = row
        ratio = (row[first_radx] / row["storescu"]) if row.get(first_radx) and row.get("storescu") else None
        # Each run's radx and storescu ran back to back: the median of their
        # ratios follows the load on the machine less than a ratio of medians.
        pairs = _paired_ratios(results, receiver.key, first_radx)
        row["paired_ratio_median"] = statistics.median(pairs) if pairs else None
        startup = statistics.median(r["radx_startup_seconds"] for r in results if r["receiver"] == receiver.key)
        row["radx_startup_seconds"] = startup
        cells = " ".join(f"{row[key]:16.1f}" if row[key] else f"{'FAIL':>16s}" for key, *_ in senders)
        paired = f"{row['paired_ratio_median']:8.2f}" if pairs else f"{'-':>8s}"
        print(f"{receiver.label:16s} {cells} {ratio:14.2f} {paired}" if ratio else f"{receiver.label:16s} {cells} {'-':>14s} {paired}")
        startups.append(f"{receiver.label}: {startup:.2f} s")
    print()
    print("by run: the median over runs of radx/storescu within the run (the two sent back to back).")
    print("A radx process's start-up and one association (radx dicom echo, median): " + "; ".join(startups))
    with open(os.path.join(OUT, f"senders-{stamp}.json"), "w") as fp:
        json.dump({"results": results, "summary": summary, "runs": args.runs, "output_fs": args.output_fs,
                   "interpreter": interpreter()}, fp, indent=1)
    return 0 if all(r["ok"] for r in results) else 1


def _paired_ratios(results, receiver: str, radx_key: str | None) -> list[float]:
    """radx/storescu for each run in which both sent to ``receiver`` and were checked whole."""
    by_run: dict[int, dict[str, float]] = {}
    for r in results:
        if r["receiver"] == receiver and r["ok"]:
            by_run.setdefault(r["run"], {})[r["sender"]] = r["files_per_second"]
    return [run[radx_key] / run["storescu"] for run in by_run.values() if radx_key in run and "storescu" in run]


if __name__ == "__main__":
    sys.exit(main())
