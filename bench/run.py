"""radx against DCMTK storescp and pynetdicom: one command, real processes, loopback only.

    python bench/run.py [--quick] [--runs 3] [--output-fs tmpfs|disk|both] [--profile]

See bench/README.rst for what each scenario measures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import corpus  # noqa: E402
import procs  # noqa: E402
from verify import verify  # noqa: E402

OUT = os.path.join(HERE, "out")
AE = "RADX-SCP"
# The same Maximum Length for every receiver, given explicitly; it is also
# the default of radx (16384) and of storescp (16384); pynetdicom's is 16382.
MAX_PDU = 16384
MiB = 1 << 20


def dcmtk(name: str) -> str:
    # pynetdicom installs Python scripts named storescu/storescp that shadow DCMTK's.
    from radx.testing import dcmtk_tool

    path = dcmtk_tool(name)
    if path is None:
        raise SystemExit(f"DCMTK's {name} is not installed (apt-get install dcmtk)")
    return path


def dcmtk_env() -> dict:
    # Debian's DCMTK leaves Nagle's algorithm on unless told: ~40 ms per message.
    return {"TCP_NODELAY": "1", "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C"}


# --- receivers -------------------------------------------------------------------


@dataclass
class Receiver:
    key: str
    label: str
    argv: Callable[[int, str], list]
    env: Callable[[], dict]
    stop_signal: int
    note: str
    python: bool = False  # a Python process (py-spy / cProfile apply)
    # A line the receiver prints once it serves, waited for in its output
    # after its port listens: radx --workers listens before its workers run.
    ready: str | None = None


def _radx_argv(*extra):
    def argv(port, out):
        return [
            sys.executable, "-m", "radx", "dicom", "scp", str(port),
            "--output-dir", out, "--aet", AE, "--bind", "127.0.0.1", "--max-pdu", str(MAX_PDU), *extra,
        ]  # fmt: skip

    return argv


def _radx_catalogue_argv(port, out):
    """radx's defaults with --catalogue: a fresh SQLite file beside the output folder, not in it."""
    database = out + ".db"
    for name in (database, database + "-wal", database + "-shm"):
        if os.path.exists(name):
            os.remove(name)
    return _radx_argv("--catalogue", database)(port, out)


def _storescp_argv(*extra):
    def argv(port, out):
        return [dcmtk("storescp"), *extra, "--output-directory", out, "-aet", AE, "-pdu", str(MAX_PDU), str(port)]

    return argv


def _pynetdicom_argv(port, out):
    return [
        sys.executable, "-m", "pynetdicom", "storescp", str(port),
        "-aet", AE, "-od", out, "-pdu", str(MAX_PDU), "-ba", "127.0.0.1",
    ]  # fmt: skip


def _python_env():
    return dict(os.environ)


# The banner's last line: radx --workers prints it once every worker serves.
WORKERS_READY = b"Press Ctrl+C to stop the server..."


def baseline_receiver(checkout: str) -> Receiver:
    """radx from another checkout (a git worktree of an earlier commit, say), run beside this one.

    ``-P`` keeps the working directory off ``sys.path`` and ``PYTHONPATH`` puts the checkout
    first, so the same interpreter and dependencies run the other source: a before/after pair
    measured in one run, on the same corpus, the same machine and the same minute.
    """
    checkout = os.path.abspath(checkout)
    revision = subprocess.run(["git", "-C", checkout, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip() or os.path.basename(checkout)  # fmt: skip
    plain = _radx_argv()

    def argv(port, out):
        command = plain(port, out)
        return [command[0], "-P", *command[1:]]

    def env():
        return dict(os.environ, PYTHONPATH=checkout)

    return Receiver("radx-base", f"radx@{revision}", argv, env, signal.SIGINT,
                    f"radx's defaults, from {checkout} at {revision}", True)  # fmt: skip


RECEIVERS = [
    Receiver("radx", "radx", _radx_argv(), _python_env, signal.SIGINT,
             "defaults: fsync of file and folder before Success, bit-preserving, Study/Series/Instance folders", True),
    Receiver("radx-nofsync", "radx (no fsync)", _radx_argv("--fsync=false"), _python_env, signal.SIGINT,
             "--fsync=false: durability as storescp's", True),
    Receiver("radx-catalogue", "radx --catalogue", _radx_catalogue_argv, _python_env, signal.SIGINT,
             "defaults and --catalogue: each instance's row committed in SQLite (WAL) before Success", True),
    Receiver("radx-hooks", "radx --exec-on-store /bin/true", _radx_argv("--exec-on-store", "/bin/true"), _python_env, signal.SIGINT,
             "defaults and --exec-on-store /bin/true: each instance journalled (fdatasync) before Success, then a child process", True),
    Receiver("radx-journal", "radx --events /dev/null", _radx_argv("--events", "/dev/null"), _python_env, signal.SIGINT,
             "defaults and --events /dev/null: each instance journalled (fdatasync) before Success, no child", True),
    Receiver("radx-workers2", "radx --workers 2", _radx_argv("--workers", "2"), _python_env, signal.SIGINT,
             "defaults and --workers 2: two worker processes on the same listening socket, a supervisor", True,
             ready=WORKERS_READY),
    Receiver("radx-workersauto", "radx --workers auto", _radx_argv("--workers", "auto"), _python_env, signal.SIGINT,
             "defaults and --workers auto: a worker process per CPU on the same listening socket, a supervisor", True,
             ready=WORKERS_READY),
    Receiver("storescp", "storescp", _storescp_argv(), dcmtk_env, signal.SIGTERM,
             "DCMTK, single process (default): one association at a time; no fsync; decodes and re-encodes the data set"),
    Receiver("storescp-fork", "storescp --fork", _storescp_argv("--fork"), dcmtk_env, signal.SIGTERM,
             "DCMTK, a forked child per association; no fsync"),
    Receiver("pynetdicom", "pynetdicom", _pynetdicom_argv, _python_env, signal.SIGINT,
             "python -m pynetdicom storescp: a thread per association; no fsync", True),
]  # fmt: skip
RECEIVER_KEYS = [r.key for r in RECEIVERS]


# --- scenarios -------------------------------------------------------------------


@dataclass
class Settings:
    corpus_dir: str
    manifest: dict
    echo_count: int
    assoc_count: int
    seconds: float


@dataclass
class Scenario:
    key: str
    label: str
    unit: str
    kind: str  # store, echo, assoc
    higher_is_better: bool = True
    # store: the manifest sets sent, split into one file list per association
    source: str = ""
    associations: int = 1
    files_per_association: int | None = None
    metric: str = "files"  # files, MB, rss
    note: str = ""
    targets: list = field(default_factory=list)


SCENARIOS = [
    Scenario("ct1", "500 CT, 1 association", "files/s", "store", source="ct",
             note="storescu +sd corpus/ct: 500 CT images 512x512x16 bit (~0.5 MB)"),
    Scenario("ct4", "500 CT, 4 associations", "files/s", "store", source="ct", associations=4,
             note="4 storescu at once, 125 files each; files/s in total"),
    Scenario("small", "2000 small, 1 association", "files/s", "store", source="small",
             note="storescu +sd corpus/small: 2000 Secondary Capture 32x32x8 bit (~1.8 KB)"),
    Scenario("big200", "200 MiB object", "MB/s", "store", source="big200", metric="MB",
             note="one 200 MiB multi-frame object; MB = 10^6 bytes of the file"),
    Scenario("echo", "C-ECHO, 1 association", "echo/s", "echo",
             note="raw-socket client: one C-ECHO-RQ in flight at a time"),
    Scenario("assoc", "associations", "assoc/s", "assoc",
             note="raw-socket client: connect, A-ASSOCIATE-RQ/AC, A-RELEASE-RQ/RP, close"),
    Scenario("rss1g", "peak RSS, 1 GiB object", "MiB", "store", higher_is_better=False, source="big1g", metric="rss",
             note="VmHWM of the receiver (the busiest child for storescp --fork) receiving one 1 GiB object"),
    Scenario("rss10", "peak RSS, 10 x 50 CT", "MiB", "store", higher_is_better=False, source="ct", associations=10,
             files_per_association=50, metric="rss",
             note="VmHWM of the receiver while 10 storescu send 50 CT images each, at once"),
]  # fmt: skip
SCENARIO_KEYS = [s.key for s in SCENARIOS]
THROUGHPUT = [s.key for s in SCENARIOS if s.higher_is_better]


def file_groups(scenario: Scenario, settings: Settings) -> list[list[dict]]:
    entries = settings.manifest["sets"][scenario.source]
    if scenario.files_per_association:
        size = scenario.files_per_association
        groups = [entries[i * size : (i + 1) * size] for i in range(scenario.associations)]
    else:
        n = scenario.associations
        groups = [entries[i::n] for i in range(n)]
    return [g for g in groups if g]


def store_senders(scenario: Scenario, settings: Settings, port: int) -> list[list[str]]:
    storescu = dcmtk("storescu")
    base = [storescu, "-aec", AE]
    if scenario.associations == 1 and len(settings.manifest["sets"][scenario.source]) > 1:
        # As a user would send a folder: storescu scans it.
        return [base + ["+sd", "127.0.0.1", str(port), os.path.join(settings.corpus_dir, scenario.source)]]
    return [
        base + ["127.0.0.1", str(port)] + [os.path.join(settings.corpus_dir, e["file"]) for e in group]
        for group in file_groups(scenario, settings)
    ]


def sent_entries(scenario: Scenario, settings: Settings) -> list[dict]:
    return [e for group in file_groups(scenario, settings) for e in group]


# --- one run ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def filesystem(path: str) -> str:
    """The file system a path is on: type from /proc/mounts (stat -f says ext2/ext3 for ext4), and device."""
    path = os.path.realpath(path)
    best = ("", "?", "?")
    try:
        with open("/proc/mounts") as fp:
            for line in fp:
                device, mount, fstype = line.split()[:3]
                if (path == mount or path.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best[0]):
                    best = (mount, fstype, device)
    except OSError:
        pass
    stat = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True).stdout.strip()
    if not best[0]:
        # In a chroot, /proc/mounts names mounts outside it by their real paths.
        return f"{stat} (stat -f; its mount is not in /proc/mounts)"
    return f"{best[1]} ({best[2]} on {best[0]}; stat -f: {stat})"


class RunContext:
    def __init__(self, args, settings: Settings, output_base: str, log_dir: str):
        self.args = args
        self.settings = settings
        self.output_base = output_base
        self.log_dir = log_dir
        self.sync = args.sync_between_runs
        self.spinners = None


def wait_all(processes, timeout: float) -> list:
    deadline = time.monotonic() + timeout
    codes = []
    for p in processes:
        code = procs.wait(p, max(0.1, deadline - time.monotonic()))
        codes.append("timeout" if code is None else code)
    return codes


def run_once(ctx: RunContext, receiver: Receiver, scenario: Scenario, index: int, wrap=None, attach=None) -> dict:
    """Start ``receiver``, run ``scenario`` against it once, stop it, verify; the result."""
    settings = ctx.settings
    port = free_port()
    name = f"{receiver.key}-{scenario.key}-{index}"
    out = os.path.join(ctx.output_base, name)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    if ctx.sync:
        os.sync()
    argv = receiver.argv(port, out)
    if wrap is not None:
        argv = wrap(argv)
    log_path = os.path.join(ctx.log_dir, name + ".receiver.log")
    result = {"receiver": receiver.key, "scenario": scenario.key, "run": index, "ok": False, "port": port}
    with open(log_path, "wb") as log:
        process = procs.spawn(argv, env=receiver.env(), stdout=log)
    attached = None
    monitor = None
    try:
        procs.wait_listening(process, port)
        if receiver.ready is not None:
            procs.wait_for_output(process, log_path, receiver.ready)
        if attach is not None:
            attached = attach(process.pid)
        result["rss_at_start_mib"] = (procs.status_kib(process.pid, "VmRSS") or 0) / 1024
        if receiver.ready is not None:
            # radx --workers: each worker's, idle.
            result["worker_rss_at_start_mib"] = [(procs.status_kib(child, "VmRSS") or 0) / 1024 for child in procs.children(process.pid)]
        cpu_before = procs.task_cpu(process.pid)
        process_before = procs.process_cpu(process.pid) or 0.0
        machine_before = procs.machine_cpu()
        self_before = resource.getrusage(resource.RUSAGE_SELF)
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        spin_before = ctx.spinners.cpu() if ctx.spinners else 0.0
        # Children that run already (radx --workers): only their CPU from here on counts.
        running_before = {child: procs.process_cpu(child) or 0.0 for child in procs.children(process.pid)}
        switches_before = {pid: procs.switches(pid) for pid in [process.pid, *running_before]}
        monitor = procs.Monitor(process.pid)
        monitor.start()
        started = time.perf_counter()
        if scenario.kind == "store":
            senders = []
            for i, sender in enumerate(store_senders(scenario, settings, port)):
                sender_log = open(os.path.join(ctx.log_dir, f"{name}.sender{i}.log"), "wb")
                senders.append(procs.spawn(sender, env=dcmtk_env(), stdout=sender_log))
                sender_log.close()
            codes = wait_all(senders, ctx.args.sender_timeout)
            wall = time.perf_counter() - started
            client = None
        else:
            count = settings.echo_count if scenario.kind == "echo" else settings.assoc_count
            done = subprocess.run(
                [sys.executable, os.path.join(HERE, "rawclient.py"), scenario.kind, str(port),
                 "--count", str(count), "--seconds", str(settings.seconds)],
                capture_output=True, text=True, timeout=settings.seconds + 120,
                preexec_fn=procs._prepare_child,
            )  # fmt: skip
            wall = time.perf_counter() - started
            codes = [done.returncode]
            try:
                client = json.loads(done.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                client = {"error": (done.stdout + done.stderr)[-500:]}
        monitor.finish()
        cpu_after = procs.task_cpu(process.pid)
        switches_after = {pid: procs.switches(pid) for pid in switches_before}
        process_after = procs.process_cpu(process.pid) or 0.0
        machine_after = procs.machine_cpu()
        self_after = resource.getrusage(resource.RUSAGE_SELF)
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        spin_cpu = (ctx.spinners.cpu() if ctx.spinners else 0.0) - spin_before
    finally:
        if monitor is not None and monitor.is_alive():
            monitor.finish()
        code = procs.stop(process, receiver.stop_signal)
        # storescp --fork: a child still running is ended by its pid.
        for child in list(monitor.peak_kib if monitor is not None else ()):
            if child != process.pid:
                try:
                    os.kill(child, 0)
                except OSError:
                    continue
                try:
                    os.kill(child, signal.SIGTERM)
                except OSError:
                    pass
        if attached is not None:
            try:
                attached.wait(60)
            except subprocess.TimeoutExpired:
                attached.kill()
                attached.wait(10)

    result["receiver_exit"] = code
    result["sender_exit"] = codes
    result["wall_seconds"] = wall
    main_cpu = cpu_after.get(process.pid, 0.0) - cpu_before.get(process.pid, 0.0)
    other_cpu = sum(v - cpu_before.get(t, 0.0) for t, v in cpu_after.items() if t != process.pid)
    # Threads that ended during the run (pynetdicom's) are gone from /proc/PID/task:
    # the process's own total, which keeps them, is the better count when larger.
    other_cpu = max(other_cpu, (process_after - process_before) - main_cpu)
    child_cpu = sum(cpu - running_before.get(child, 0.0) for child, cpu in monitor.child_cpu.items())
    sender_cpu = (children_after.ru_utime + children_after.ru_stime) - (children_before.ru_utime + children_before.ru_stime)
    self_cpu = (self_after.ru_utime + self_after.ru_stime) - (self_before.ru_utime + self_before.ru_stime)
    busy = machine_after[0] - machine_before[0]
    iowait = machine_after[1] - machine_before[1]
    result["cpu"] = {
        "receiver_main_thread": main_cpu,
        "receiver_other_threads": other_cpu,
        "receiver_children": child_cpu,
        "senders": sender_cpu,
        "bench": self_cpu,
        "machine_busy": busy,
        "machine_iowait": iowait,
        "awake_spinners": spin_cpu,
        # CPU seconds the machine spent on processes not of this run: other work on the machine.
        "foreign": max(0.0, busy - main_cpu - other_cpu - child_cpu - sender_cpu - self_cpu - spin_cpu),
    }
    result["peak_rss_mib"] = {
        "process": monitor.main_peak_kib / 1024,
        "busiest_child": monitor.children_peak_kib / 1024,
    }
    errors = []
    if any(c != 0 for c in codes):
        errors.append(f"sender exit status {codes}")
    if scenario.kind == "store":
        entries = sent_entries(scenario, settings)
        check = verify(out, entries)
        result["verify"] = check
        if not check["ok"]:
            errors.append("verification: " + "; ".join(check["problems"]))
        files = len(entries)
        file_bytes = sum(e["file_bytes"] for e in entries)
        result["files"] = files
        result["files_per_second"] = files / wall
        result["mb_per_second"] = file_bytes / 1e6 / wall
        if scenario.metric == "files":
            value = files / wall
        elif scenario.metric == "MB":
            value = file_bytes / 1e6 / wall
        else:
            peak = monitor.children_peak_kib if receiver.key == "storescp-fork" else monitor.main_peak_kib
            value = peak / 1024
    else:
        result["client"] = client
        if "error" in client or client.get("failures"):
            errors.append(f"client: {client}")
        value = client.get("rate", 0.0)
    result["value"] = value
    ops, _ = operations(result)
    receiver_cpu = main_cpu + other_cpu + child_cpu
    result["receiver_cpu_seconds"] = receiver_cpu
    result["receiver_cpu_ms_per_op"] = receiver_cpu / ops * 1e3 if ops else None
    if ops:
        # The receiver's sleeps a request (procs.switches): which way the
        # scheduler placed it and its sender, a large share of its CPU per
        # request, drawn anew each run.
        result["receiver_sleeps_per_op"] = sum(switches_after[p][0] - switches_before[p][0] for p in switches_before) / ops
        if receiver.ready is not None:
            # radx --workers: the supervisor's own CPU apart from its workers'.
            result["supervisor_cpu_ms_per_op"] = (main_cpu + other_cpu) / ops * 1e3
    # The share of the run the receiver's main thread (radx: the reactor) was on a CPU.
    active = (client or {}).get("seconds") or wall
    result["main_thread_busy"] = main_cpu / active if active else None
    result["errors"] = errors
    result["ok"] = not errors
    if not ctx.args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return result


# --- the matrix ------------------------------------------------------------------


def run_matrix(ctx: RunContext, receivers, scenarios, runs: int, log=print) -> list[dict]:
    results = []
    # Runs of the receivers alternate, so a change in the machine's load
    # (other work on it) falls on all of them alike.
    for scenario in scenarios:
        for index in range(runs):
            for receiver in receivers:
                try:
                    r = run_once(ctx, receiver, scenario, index)
                except (RuntimeError, OSError, subprocess.SubprocessError) as error:
                    r = {"receiver": receiver.key, "scenario": scenario.key, "run": index, "ok": False,
                         "value": None, "errors": [f"{type(error).__name__}: {error}"]}  # fmt: skip
                results.append(r)
                shown = "-" if r.get("value") is None else f"{r['value']:.1f}"
                status = "ok" if r["ok"] else "FAIL " + "; ".join(r["errors"])[:300]
                extra = ""
                if r.get("receiver_cpu_ms_per_op") is not None:
                    extra += f", receiver CPU {r['receiver_cpu_ms_per_op']:.3f} ms/op"
                if "cpu" in r:
                    c = r["cpu"]
                    w = r["wall_seconds"]
                    extra = (f" wall {w:.2f}s, receiver main {c['receiver_main_thread'] / w:.0%}"
                             f" other {(c['receiver_other_threads'] + c['receiver_children']) / w:.0%},"
                             f" senders {c['senders'] / w:.0%}, foreign {c['foreign'] / w:.2f} cores")  # fmt: skip
                if r.get("receiver_sleeps_per_op") is not None:
                    extra += f", receiver CPU {r['receiver_cpu_ms_per_op']:.3f} ms/op, sleeps {r['receiver_sleeps_per_op']:.2f}/op"
                if r.get("supervisor_cpu_ms_per_op") is not None:
                    extra += f" (supervisor {r['supervisor_cpu_ms_per_op']:.4f} ms/op)"
                if r.get("worker_rss_at_start_mib"):
                    extra += ", idle RSS of each worker " + " ".join(f"{rss:.1f}" for rss in r["worker_rss_at_start_mib"]) + " MiB"
                log(f"  {scenario.key:7s} {receiver.key:14s} run {index + 1}: {shown} {scenario.unit} {status}{extra}")
    return results


def summarise(results: list[dict], receivers, scenarios) -> dict:
    summary = {}
    for scenario in scenarios:
        row = {}
        for receiver in receivers:
            mine = [r for r in results if r["receiver"] == receiver.key and r["scenario"] == scenario.key]
            if not mine:
                continue
            values = [r["value"] for r in mine if r.get("value") is not None]
            ok = all(r["ok"] for r in mine)
            cpu = [r["receiver_cpu_ms_per_op"] for r in mine if r.get("receiver_cpu_ms_per_op") is not None]
            foreign = [r["cpu"]["foreign"] / r["wall_seconds"] for r in mine if "cpu" in r and r.get("wall_seconds")]
            row[receiver.key] = {
                "cpu_ms_per_op": statistics.median(cpu) if cpu else None,
                "foreign_cores": statistics.median(foreign) if foreign else None,
                "median": statistics.median(values) if values else None,
                "values": values,
                "ok": ok,
                "problems": [e for r in mine for e in r.get("errors", [])][:3],
            }
            workers = [rss for r in mine for rss in r.get("worker_rss_at_start_mib", ())]
            if workers:
                row[receiver.key]["worker_idle_rss_mib"] = max(workers)
        summary[scenario.key] = row
    return summary


def worker_rss_line(summary: dict, receivers) -> str | None:
    """The largest idle RSS of one worker process, for each radx --workers receiver."""
    parts = []
    for receiver in receivers:
        sizes = [row[receiver.key]["worker_idle_rss_mib"] for row in summary.values() if "worker_idle_rss_mib" in row.get(receiver.key, {})]
        if sizes:
            parts.append(f"{receiver.label} {max(sizes):.1f} MiB")
    return "Idle RSS of one worker process at start, the largest seen: " + ", ".join(parts) if parts else None


def _fmt(value, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "MiB" or value < 100:
        return f"{value:.1f}"
    return f"{value:.0f}"


RATIO_PAIRS = [("radx", "radx-base"), ("radx-catalogue", "radx"), ("radx-hooks", "radx"), ("radx-journal", "radx"), ("radx", "storescp"), ("radx", "storescp-fork"),
               ("radx", "pynetdicom"), ("radx-workers2", "radx"), ("radx-workers2", "storescp-fork"), ("radx-workersauto", "storescp-fork")]  # fmt: skip
RATIO_PAIRS_NOFSYNC = [("radx-nofsync", "storescp"), ("radx-nofsync", "storescp-fork"), ("radx-nofsync", "pynetdicom")]


def _ratio(summary_row, a, b):
    x, y = summary_row.get(a), summary_row.get(b)
    if not x or not y or x["median"] is None or y["median"] is None or not y["median"]:
        return None
    return x["median"] / y["median"]


def table(summary: dict, receivers, scenarios, pairs) -> str:
    """An RST simple table: a column per receiver, a row per scenario, radx's ratios."""
    labels = {r.key: r.label for r in [*RECEIVERS, *receivers]}
    header = ["Scenario", "unit"] + [r.label for r in receivers]
    pairs = [(a, b) for a, b in pairs if a in summary_keys(summary) and b in summary_keys(summary)]
    header += [f"{labels[a]}/{labels[b]}".replace("radx (no fsync)", "no-fsync") for a, b in pairs]
    rows = []
    for scenario in scenarios:
        row = summary.get(scenario.key, {})
        line = [scenario.label, scenario.unit]
        for receiver in receivers:
            cell = row.get(receiver.key)
            if cell is None:
                line.append("-")
            else:
                text = _fmt(cell["median"], scenario.unit)
                line.append(text if cell["ok"] else f"FAIL ({text})")
        for a, b in pairs:
            ratio = _ratio(row, a, b)
            line.append("-" if ratio is None else f"{ratio:.2f}x")
        rows.append(line)
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    rule = "  ".join("=" * w for w in widths)
    out = [rule, "  ".join(h.ljust(w) for h, w in zip(header, widths)), rule]
    for line in rows:
        out.append("  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(line, widths))))
    out.append(rule)
    return "\n".join(out)


OPERATION = {"ct1": "file", "ct4": "file", "small": "file", "big200": "object", "echo": "echo",
             "assoc": "association", "rss1g": "object", "rss10": "file"}  # fmt: skip


def cpu_table(summary: dict, receivers, scenarios) -> str:
    """Receiver CPU time (all threads and children) per operation: ms, median of the runs."""
    header = ["Scenario", "per"] + [r.label for r in receivers] + ["radx/storescp"]
    rows = []
    for scenario in scenarios:
        row = summary.get(scenario.key, {})
        line = [scenario.label, OPERATION.get(scenario.key, "op")]
        for receiver in receivers:
            cell = row.get(receiver.key)
            value = None if cell is None else cell.get("cpu_ms_per_op")
            line.append("-" if value is None else (f"{value:.3f}" if value < 10 else f"{value:.0f}"))
        a, b = row.get("radx", {}).get("cpu_ms_per_op"), row.get("storescp", {}).get("cpu_ms_per_op")
        line.append(f"{a / b:.1f}x" if a and b else "-")
        rows.append(line)
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    rule = "  ".join("=" * w for w in widths)
    out = [rule, "  ".join(h.ljust(w) for h, w in zip(header, widths)), rule]
    for line in rows:
        out.append("  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(line, widths))))
    out.append(rule)
    return "\n".join(out)


def summary_keys(summary: dict) -> set:
    return {k for row in summary.values() for k in row}


def targets(summary: dict) -> list[tuple[str, bool | None, str]]:
    """The performance targets, each (what, met?, figures)."""
    checks = []

    def med(s, r):
        cell = summary.get(s, {}).get(r)
        return None if cell is None or not cell["ok"] else cell["median"]

    for s in THROUGHPUT:
        if s not in summary:
            continue
        radx, dcmtk_, pyn = med(s, "radx"), med(s, "storescp"), med(s, "pynetdicom")
        if radx is not None and dcmtk_ is not None:
            checks.append((f"{s}: radx >= storescp", radx >= dcmtk_, f"{radx:.1f} vs {dcmtk_:.1f} ({radx / dcmtk_:.2f}x)"))
        if radx is not None and pyn is not None:
            checks.append((f"{s}: radx >= 10x pynetdicom", radx >= 10 * pyn, f"{radx:.1f} vs {pyn:.1f} ({radx / pyn:.1f}x)"))
    radx, fork = med("ct4", "radx"), med("ct4", "storescp-fork")
    if radx is not None and fork is not None:
        checks.append(("ct4: radx >= storescp --fork", radx >= fork, f"{radx:.1f} vs {fork:.1f} ({radx / fork:.2f}x)"))
    rss = med("rss1g", "radx")
    if rss is not None:
        checks.append(("rss1g: radx peak RSS < 64 MiB", rss < 64, f"{rss:.1f} MiB"))
    rss = med("rss10", "radx")
    if rss is not None:
        checks.append(("rss10: radx peak RSS < 128 MiB", rss < 128, f"{rss:.1f} MiB"))
    return checks


# --- profiling -------------------------------------------------------------------


def profile_scenarios(ctx: RunContext, scenarios, top: int, log=print, tag: str = "") -> dict:
    """radx under cProfile (all threads), then, if py-spy is installed, sampled by py-spy."""
    import pstats
    import io

    radx = RECEIVERS[0]
    report = {}
    pyspy = shutil.which("py-spy")
    for scenario in scenarios:
        entry = {}
        prof = os.path.join(OUT, f"radx-{tag}{scenario.key}.prof")
        for stale in (prof, prof[:-5] + "-threads.prof"):
            if os.path.exists(stale):
                os.unlink(stale)

        def wrap(argv, prof=prof):
            # argv is [python, -m, radx, dicom, scp, ...]
            return [sys.executable, os.path.join(HERE, "profiled_radx.py"), prof, *argv[3:]]

        r = run_once(ctx, radx, scenario, 0, wrap=wrap)
        entry["cprofile_run"] = {k: r.get(k) for k in ("value", "ok", "errors", "wall_seconds", "cpu")}
        log(f"\n=== radx under cProfile: {scenario.label}: {r.get('value', 0):.1f} {scenario.unit}"
            f" ({'ok' if r['ok'] else 'FAIL'}), wall {r.get('wall_seconds', 0):.2f}s ===")  # fmt: skip
        for path, what in ((prof, "main thread (reactor)"), (prof[:-5] + "-threads.prof", "threadpool threads")):
            if not os.path.exists(path):
                log(f"  (no profile {path})")
                continue
            for order in ("tottime", "cumulative"):
                stream = io.StringIO()
                stats = pstats.Stats(path, stream=stream)
                stats.strip_dirs().sort_stats(order).print_stats(top)
                text = stream.getvalue()
                text = text[text.find("   ncalls") :] if "   ncalls" in text else text
                log(f"--- {what}, by {order} ({os.path.relpath(path)})")
                log(text.rstrip())
                entry[f"{os.path.basename(path)}:{order}"] = text
        if pyspy:
            raw = os.path.join(OUT, f"radx-{tag}{scenario.key}.pyspy.txt")

            def attach(pid, raw=raw):
                return procs.spawn(
                    [pyspy, "record", "--pid", str(pid), "--idle", "--threads",
                     "--format", "raw", "-o", raw, "--rate", str(PYSPY_RATE)],
                    stdout=open(os.path.join(ctx.log_dir, f"pyspy-{scenario.key}.log"), "wb"),
                )  # fmt: skip

            r = run_once(ctx, radx, scenario, 0, attach=attach)
            entry["pyspy_run"] = {k: r.get(k) for k in ("value", "ok", "errors", "wall_seconds", "cpu")}
            log(f"\n=== radx sampled by py-spy: {scenario.label}: {r.get('value', 0):.1f} {scenario.unit}"
                f" ({'ok' if r['ok'] else 'FAIL'}) ===")  # fmt: skip
            if os.path.exists(raw):
                summary = pyspy_summary(raw, top, *operations(r))
                entry["pyspy"] = summary
                log(summary["text"])
        report[scenario.key] = entry
    return report


def _frame_name(frame: str) -> str:
    # "func (path/file.py:123)" -> "func (file.py)"
    if " (" in frame and frame.endswith(")"):
        func, where = frame.split(" (", 1)
        where = where[:-1].rsplit(":", 1)[0]
        return f"{func} ({os.path.basename(where)})"
    return frame


# Where a thread waits with nothing to do: the reactor in epoll, a worker for a job.
IDLE_LEAVES = {"EPollReactor.doPoll (epollreactor.py)", "Condition.wait (threading.py)"}
# Frames every busy sample of a thread passes through: left out of the "including callees" lists.
FRAMEWORK_FRAMES = {
    "_run_module_as_main (<frozen runpy>)", "_run_code (<frozen runpy>)", "<module> (cli.py)", "main (cli.py)",
    "run_scp (cli.py)", "ReactorBase.run (base.py)", "ReactorBase.mainLoop (base.py)",
    "EPollReactor.doPoll (epollreactor.py)", "callWithLogger (log.py)", "callWithContext (log.py)",
    "ContextTracker.callWithContext (context.py)", "ThreadedContextTracker.callWithContext (context.py)",
    "_PollLikeMixin._doReadOrWrite (posixbase.py)", "Thread._bootstrap (threading.py)",
    "Thread._bootstrap_inner (threading.py)", "Thread.run (threading.py)",
    "Team._coordinateThisTask.<locals>.doWork (_team.py)", "ThreadWorker.__init__.<locals>.work (_threadworker.py)",
    "ThreadPool.callInThreadWithCallback.<locals>.inContext (threadpool.py)",
    "ThreadPool.callInThreadWithCallback.<locals>.<lambda> (threadpool.py)", "main (profiled_radx.py)",
    "<module> (profiled_radx.py)",
}  # fmt: skip
PYSPY_RATE = 200


def operations(result: dict) -> tuple[float, str]:
    """How many operations a run did, and their name: files, echoes, associations."""
    if result.get("files"):
        return result["files"], "file"
    client = result.get("client") or {}
    if client.get("count"):
        return client["count"], "echo" if client.get("kind") == "echo" else "association"
    return 0, "operation"


def pyspy_summary(path: str, top: int, ops: float = 0, op_name: str = "operation") -> dict:
    """
    Per thread group (main = the reactor; threads = the threadpool), the
    samples in which the thread was busy (not waiting in epoll or for a job),
    and the functions they were in: self and including callees, as a share
    of the busy samples and as time per operation.
    """
    groups = {"main": {}, "threads": {}}
    inclusive = {"main": {}, "threads": {}}
    totals = {"main": 0, "threads": 0}
    idle = {"main": 0, "threads": 0}
    main_tid = None
    lines = []
    with open(path) as fp:
        for line in fp:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, count = line.rpartition(" ")
            try:
                n = int(count)
            except ValueError:
                continue
            frames = stack.split(";")
            lines.append((frames, n))
            if "MainThread" in frames[0]:
                main_tid = frames[0].split(")")[0]
    for frames, n in lines:
        group = "main" if main_tid and frames[0].startswith(main_tid) else "threads"
        totals[group] += n
        leaf = _frame_name(frames[-1]) if len(frames) > 1 else "(no Python frame)"
        if leaf in IDLE_LEAVES:
            idle[group] += n
            continue
        groups[group][leaf] = groups[group].get(leaf, 0) + n
        for name in {_frame_name(f) for f in frames[1:]} - FRAMEWORK_FRAMES:
            inclusive[group][name] = inclusive[group].get(name, 0) + n
    text = []
    out = {"totals": totals, "idle": idle, "rate": PYSPY_RATE, "operations": ops}
    for group, title in (("main", "main thread (reactor)"), ("threads", "threadpool threads")):
        busy = totals[group] - idle[group]
        per_op = f", {busy / PYSPY_RATE / ops * 1e3:.3f} ms per {op_name}" if ops else ""
        text.append(
            f"--- py-spy, {title}: busy in {busy} of {totals[group]} samples"
            f" ({busy / PYSPY_RATE:.2f} s at {PYSPY_RATE} Hz{per_op})"
        )
        for kind, table_ in (("self", groups[group]), ("incl.", inclusive[group])):
            ranked = sorted(table_.items(), key=lambda kv: -kv[1])[:top]
            out[f"{group}_{kind}"] = [(name, n, n / (busy or 1)) for name, n in ranked]
            text.append(f"    {kind} time, share of busy samples{' and ms per ' + op_name if ops else ''}:")
            for name, n in ranked:
                ms = f"  {n / PYSPY_RATE / ops * 1e3:8.4f} ms" if ops else ""
                text.append(f"      {n / (busy or 1):6.1%}{ms}  {name}")
    out["text"] = "\n".join(text)
    return out


# --- main ------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one run, shorter echo/association loops")
    parser.add_argument("--runs", type=int, default=None, help="runs per receiver and scenario (default 3, 1 with --quick)")
    parser.add_argument("--output-fs", choices=("tmpfs", "disk", "both"), default="tmpfs",
                        help="where receivers write: /dev/shm (tmpfs) or bench/out on the real disk")  # fmt: skip
    parser.add_argument("--receivers", default=",".join(RECEIVER_KEYS), help="comma-separated subset of " + ",".join(RECEIVER_KEYS))
    parser.add_argument("--scenarios", default=",".join(SCENARIO_KEYS), help="comma-separated subset of " + ",".join(SCENARIO_KEYS))
    parser.add_argument("--profile", action="store_true", help="also profile radx on each scenario (cProfile, and py-spy if installed)")
    parser.add_argument("--profile-only", action="store_true", help="profile radx, measure nothing else")
    parser.add_argument("--top", type=int, default=15, help="functions shown per profile listing")
    parser.add_argument("--echo-count", type=int, default=None, help="C-ECHOs per run (default 20000, 5000 quick)")
    parser.add_argument("--assoc-count", type=int, default=None, help="associations per run (default 2000, 500 quick)")
    parser.add_argument("--seconds", type=float, default=None, help="cap on an echo/association loop (default 5, 2 quick)")
    parser.add_argument("--sender-timeout", type=float, default=600.0, help="seconds before a sender is killed")
    parser.add_argument("--keep", action="store_true", help="keep what receivers stored")
    parser.add_argument("--awake", action="store_true",
                        help="keep every CPU busy with a SCHED_IDLE loop, so no round trip waits for a halted vCPU to wake")  # fmt: skip
    parser.add_argument("--baseline", metavar="CHECKOUT",
                        help="also run radx from CHECKOUT (e.g. a git worktree of an earlier commit) as 'radx-base'")  # fmt: skip
    parser.add_argument("--no-sync", dest="sync_between_runs", action="store_false",
                        help="skip sync(2) before each run (flushing the previous run's dirty pages)")  # fmt: skip
    args = parser.parse_args(argv)

    runs = args.runs or (1 if args.quick else 3)
    receivers = [r for r in RECEIVERS if r.key in args.receivers.split(",")]
    scenarios = [s for s in SCENARIOS if s.key in args.scenarios.split(",")]
    unknown = set(args.receivers.split(",")) - set(RECEIVER_KEYS) | set(args.scenarios.split(",")) - set(SCENARIO_KEYS)
    if unknown:
        parser.error(f"unknown receiver or scenario: {', '.join(sorted(unknown))}")
    if args.baseline:
        receivers.insert(1, baseline_receiver(args.baseline))

    os.makedirs(OUT, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_dir = os.path.join(OUT, f"logs-{stamp}")
    os.makedirs(log_dir)
    lines: list[str] = []

    def log(text=""):
        print(text, flush=True)
        lines.append(text)

    corpus_dir = os.path.join(OUT, "corpus")
    manifest = corpus.build(corpus_dir, log=log)
    settings = Settings(
        corpus_dir=corpus_dir,
        manifest=manifest,
        echo_count=args.echo_count or (5000 if args.quick else 20000),
        assoc_count=args.assoc_count or (500 if args.quick else 2000),
        seconds=args.seconds or (2.0 if args.quick else 5.0),
    )
    # The corpus is read from the page cache, not the disk, in every run.
    for entry in (e for s in manifest["sets"].values() for e in s):
        with open(os.path.join(corpus_dir, entry["file"]), "rb") as fp:
            while fp.read(8 << 20):
                pass

    filesystems = ["tmpfs", "disk"] if args.output_fs == "both" else [args.output_fs]
    report = {
        "started": stamp,
        "command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
                    "kernel": os.uname().release, "python": sys.version.split()[0]},  # fmt: skip
        "interpreter": interpreter(),
        "versions": versions(),
        "radx_source": radx_source(),
        "max_pdu": MAX_PDU,
        "runs": runs,
        "awake": args.awake,
        "settings": {"echo_count": settings.echo_count, "assoc_count": settings.assoc_count, "seconds": settings.seconds},
        "receivers": {r.key: {"label": r.label, "note": r.note, "command": " ".join(r.argv(0, "OUT"))} for r in receivers},
        "scenarios": {s.key: {"label": s.label, "unit": s.unit, "note": s.note} for s in scenarios},
        "filesystems": {},
    }
    log(f"radx {report['radx_source']}; {report['versions']}")
    log(f"Python processes (radx, pynetdicom) run on {report['interpreter']}")
    started = time.monotonic()
    shm_base = f"/dev/shm/radx-bench-{os.getpid()}"
    try:
        for fs in filesystems:
            base = shm_base if fs == "tmpfs" else os.path.join(OUT, f"received-{os.getpid()}")
            os.makedirs(base, exist_ok=True)
            ctx = RunContext(args, settings, base, log_dir)
            if args.awake:
                ctx.spinners = procs.Spinners(os.cpu_count() or 1)
            where = filesystem(base)
            section = {"output_base": base, "filesystem": where}
            report["filesystems"][fs] = section
            if not args.profile_only:
                log(f"\n## Output on {fs}: {base}: {where}; {runs} run(s) each")
                results = run_matrix(ctx, receivers, scenarios, runs, log=log)
                summary = summarise(results, receivers, scenarios)
                section["results"] = results
                section["summary"] = summary
                log(f"\nMedians of {runs} run(s); output on {where}; max PDU {MAX_PDU} for every receiver"
                    f"{'; CPUs kept awake (--awake)' if args.awake else ''}.")
                log(table(summary, receivers, scenarios, RATIO_PAIRS))
                if worker_rss_line(summary, receivers):
                    log(worker_rss_line(summary, receivers))
                if any(r.key == "radx-nofsync" for r in receivers):
                    log("\nradx without fsync (--fsync=false), the durability storescp and pynetdicom have:")
                    log(table({k: {r: v for r, v in row.items() if r != "radx"} for k, row in summary.items()},
                              [r for r in receivers if r.key != "radx"], scenarios, RATIO_PAIRS_NOFSYNC))  # fmt: skip
                log("\nReceiver CPU time per operation, ms (all threads and children; lower is better;"
                    " unlike wall-clock rates, little affected by other work on the machine):")
                log(cpu_table(summary, receivers, scenarios))
                foreign = [c["foreign_cores"] for row in summary.values() for c in row.values() if c.get("foreign_cores") is not None]
                if foreign:
                    log(f"\nOther work on the machine during the runs (CPU cores busy outside this benchmark):"
                        f" median {statistics.median(foreign):.2f}, max {max(foreign):.2f} of {os.cpu_count()}")
                    section["foreign_cores_median"] = statistics.median(foreign)
                checks = targets(summary)
                section["targets"] = [{"target": t, "met": m, "figures": f} for t, m, f in checks]
                if checks:
                    log("\nTargets:")
                    for what, met, figures in checks:
                        log(f"  {'met ' if met else 'MISS'}  {what}: {figures}")
                for key, row in summary.items():
                    for rkey, cell in row.items():
                        if not cell["ok"]:
                            log(f"  FAIL {key} {rkey}: {'; '.join(cell['problems'])[:500]}")
            if args.profile or args.profile_only:
                # tmpfs profiles are radx-<scenario>.prof; the disk's radx-disk-<scenario>.prof.
                tag = "disk-" if fs == "disk" else ""
                section["profiles"] = profile_scenarios(ctx, scenarios, args.top, log=log, tag=tag)
            if ctx.spinners:
                ctx.spinners.stop()
                ctx.spinners = None
            if fs == "disk":
                shutil.rmtree(base, ignore_errors=True)
    finally:
        spinning = locals().get("ctx")
        if spinning is not None and spinning.spinners:
            spinning.spinners.stop()
        shutil.rmtree(shm_base, ignore_errors=True)
    report["elapsed_seconds"] = time.monotonic() - started
    after = radx_source()
    if after.get("radx_py_sha256") != report["radx_source"].get("radx_py_sha256"):
        report["radx_source_at_end"] = after
        log(f"\nWARNING: radx's source changed during the run ({report['radx_source']} -> {after}):"
            " figures may mix two versions")  # fmt: skip
    path = os.path.join(OUT, f"results-{stamp}.json")
    with open(path, "w") as fp:
        json.dump(report, fp, indent=1, default=str)
    with open(os.path.join(OUT, f"results-{stamp}.txt"), "w") as fp:
        fp.write("\n".join(lines) + "\n")
    log(f"\n{report['elapsed_seconds']:.0f}s in all; results in {os.path.relpath(path)}; logs in {os.path.relpath(log_dir)}")
    return 0


def radx_source() -> dict:
    """Which radx was measured: the commit, and a hash of radx/ as it was (others may be editing it)."""
    import hashlib

    root = os.path.dirname(HERE)
    digest = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(os.path.join(root, "radx"))):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                digest.update(os.path.relpath(path, root).encode())
                with open(path, "rb") as fp:
                    digest.update(fp.read())
    found = {"radx_py_sha256": digest.hexdigest()[:16]}
    try:
        found["commit"] = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                                         capture_output=True, text=True, timeout=10).stdout.strip()
        found["radx_uncommitted_changes"] = bool(subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "radx"], capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return found  # fmt: skip


def interpreter() -> str:
    """
    The interpreter every Python process here runs on (this one's), and
    whether it is a virtual environment. Start-up differs between
    interpreters: the ``.pth`` files in a Python's own site-packages run
    at every start, except in a virtual environment made from it. See
    bench/README.rst, "Which Python".
    """
    version = sys.version.split()[0]
    if sys.prefix != sys.base_prefix:
        return f"{sys.executable} (Python {version}, a virtual environment over {sys.base_prefix})"
    return f"{sys.executable} (Python {version}, not a virtual environment)"


def versions() -> dict:
    found = {}
    try:
        import radx

        version = getattr(radx, "__version__", "?")
        found["radx"] = version.public() if hasattr(version, "public") else str(version)
    except ImportError:
        pass
    for module in ("pynetdicom", "pydicom", "twisted"):
        try:
            found[module] = __import__(module).__version__
        except (ImportError, AttributeError):
            pass
    try:
        text = subprocess.run([dcmtk("storescp"), "--version"], capture_output=True, text=True, timeout=10).stdout
        found["dcmtk"] = text.split("$")[1].strip() if "$" in text else text.strip()[:60]
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        found["py-spy"] = subprocess.run(["py-spy", "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return found


if __name__ == "__main__":
    sys.exit(main())
