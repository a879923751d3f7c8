"""Processes: start them so they die with us, wait for a port, watch RSS and CPU, stop by pid."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
import time

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1

try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover
    _libc = None


def _prepare_child() -> None:
    # Runs in the child between fork and exec: if the benchmark dies, so does it.
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # A shell starts a background job with SIGINT ignored, and an ignored
    # signal stays ignored across exec: radx and pynetdicom, stopped with
    # SIGINT, would run on until killed, 40 s later, every run.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn(argv, *, env=None, stdout=None, stderr=None, cwd=None) -> subprocess.Popen:
    return subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stdout if stdout is not None else subprocess.DEVNULL,
        stderr=stderr if stderr is not None else subprocess.STDOUT,
        cwd=cwd,
        preexec_fn=_prepare_child,
    )


def listening(port: int) -> bool:
    """Whether something listens on TCP ``port`` (IPv4 or IPv6), from /proc/net: no connection made."""
    suffix = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fp:
                next(fp)
                for line in fp:
                    fields = line.split()
                    if fields[1].endswith(suffix) and fields[3] == "0A":
                        return True
        except OSError:
            continue
    return False


def wait_listening(process: subprocess.Popen, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the receiver exited with status {process.returncode} before listening")
        if listening(port):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


def wait_for_output(process: subprocess.Popen, path: str, text: bytes, timeout: float = 30.0) -> None:
    """Wait until the file ``path`` (the process's output) holds ``text``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the receiver exited with status {process.returncode} before it was ready")
        with open(path, "rb") as fp:
            if text in fp.read():
                return
        time.sleep(0.02)
    raise RuntimeError(f"the receiver did not print {text!r} within {timeout}s")


def wait(process: subprocess.Popen, timeout: float) -> int | None:
    """
    ``process``'s exit status, the moment it exits; ``None`` if it ran past
    ``timeout`` and was killed.

    ``Popen.wait(timeout)`` polls, sleeping up to 50 ms between looks, which
    would add up to 50 ms to a timed run. This one blocks in ``waitpid`` and
    leaves the timeout to a timer.
    """
    expired = threading.Event()

    def kill() -> None:
        expired.set()
        process.kill()

    timer = threading.Timer(timeout, kill)
    timer.daemon = True
    timer.start()
    try:
        code = process.wait()
    finally:
        timer.cancel()
    return None if expired.is_set() else code


def stop(process: subprocess.Popen, sig: int, timeout: float = 40.0) -> int | None:
    """Signal ``process`` (by its pid), wait up to ``timeout``, then kill it; its exit status."""
    if process.poll() is None:
        try:
            process.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
            return None
    return process.returncode


def children(pid: int) -> list[int]:
    found = []
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fp:
            found = [int(x) for x in fp.read().split()]
    except (OSError, ValueError):
        return []
    for child in list(found):
        found.extend(children(child))
    return found


def status_kib(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fp:
            for line in fp:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _thread_cpu(pid: int, tid: int) -> float | None:
    """CPU seconds of one thread: the scheduler's own count (schedstat, ns), else utime + stime."""
    try:
        with open(f"/proc/{pid}/task/{tid}/schedstat") as fp:
            return int(fp.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/task/{tid}/stat") as fp:
            fields = fp.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the name: state is field 3, utime 14 and stime 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def task_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of ``pid``."""
    result = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return result
    for tid in tids:
        cpu = _thread_cpu(pid, int(tid))
        if cpu is not None:
            result[int(tid)] = cpu
    return result


def process_cpu(pid: int) -> float | None:
    """
    CPU seconds of a whole process: utime + stime of /proc/PID/stat, which
    keep the time of threads that have ended (pynetdicom's association
    threads do); 10 ms granularity.
    """
    try:
        with open(f"/proc/{pid}/stat") as fp:
            fields = fp.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the name: state is field 3, utime 14 and stime 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def switches(pid: int) -> tuple[int, int]:
    """
    (voluntary, involuntary) context switches of every live thread of
    ``pid``. A voluntary one is a sleep (nothing to read yet, a lock
    held): in a request/response exchange, one per request when the
    receiver and its sender run on different CPUs, hardly any when they
    share one and hand it to each other (the involuntary ones); the
    first costs the receiver much more CPU per request than the second.
    """
    voluntary = involuntary = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0, 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as fp:
                for line in fp:
                    if line.startswith("voluntary_ctxt_switches:"):
                        voluntary += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        involuntary += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return voluntary, involuntary


def _spin() -> None:
    _prepare_child()
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


class Spinners:
    """
    One busy loop per CPU at SCHED_IDLE: it runs only when nothing else
    wants the CPU, so it takes no time from the processes measured, but no
    CPU ever goes idle.  On a virtual machine a vCPU that idles halts, and
    waking it costs far more than a context switch: every request/response
    round trip pays that twice.  With --awake, no run pays it.
    """

    def __init__(self, count: int):
        import sys

        self.processes = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=_spin,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(count)
        ]  # fmt: skip

    def cpu(self) -> float:
        return sum(process_cpu(p.pid) or 0.0 for p in self.processes)

    def stop(self) -> None:
        for p in self.processes:
            stop(p, signal.SIGKILL, timeout=10)


def machine_cpu() -> tuple[float, float, float]:
    """(busy, iowait, total) CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as fp:
        fields = [int(x) for x in fp.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq + steal
    total = busy + idle + iowait
    return busy / _CLOCK_TICKS, iowait / _CLOCK_TICKS, total / _CLOCK_TICKS


class Monitor(threading.Thread):
    """
    Polls a receiver's process tree while a scenario runs: the highest
    VmHWM seen in the process or any descendant (a forked storescp child
    that already exited is counted from its last sample), and the CPU time
    of descendants that come and go.
    """

    def __init__(self, pid: int, interval: float = 0.01):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self._stop_event = threading.Event()
        self.peak_kib = {}  # pid -> highest VmHWM seen
        self.child_cpu = {}  # descendant pid -> last CPU seconds seen
        self.samples = 0

    def sample(self) -> None:
        for pid in [self.pid, *children(self.pid)]:
            hwm = status_kib(pid, "VmHWM")
            if hwm is not None and hwm > self.peak_kib.get(pid, 0):
                self.peak_kib[pid] = hwm
            if pid != self.pid:
                cpu = process_cpu(pid)
                if cpu is not None:
                    self.child_cpu[pid] = cpu
        self.samples += 1

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.sample()

    def finish(self) -> None:
        self.sample()
        self._stop_event.set()
        self.join(5)

    @property
    def main_peak_kib(self) -> int:
        return self.peak_kib.get(self.pid, 0)

    @property
    def children_peak_kib(self) -> int:
        return max((v for k, v in self.peak_kib.items() if k != self.pid), default=0)
