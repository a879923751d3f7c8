# -*- test-case-name: tests.test_app_workers,tests.test_app_worker_parts -*-
"""The supervisor's worker processes: started, watched, replaced when they end, their counts summed.

Each worker is ``python -m radx.app.worker``, started with
``reactor.spawnProcess`` (a fresh interpreter, never a fork of this
one), with the listening sockets on its descriptors from FIRST_SOCKET
on, the supervisor's messages on its stdin and its own on descriptor 3
(radx.app.channel); what it prints on stdout and stderr is logged line
by line. A worker that ends while the server runs is logged and
started again on the same sockets, at once if it ran a while, after a
growing pause if it ends as soon as it starts; the counts it last
reported stay in the totals.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sys

from twisted.internet import defer
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, globalLogPublisher

from radx.app.channel import CONTROL_IN, FIRST_SOCKET, MESSAGES_OUT, REPORTED, ChannelError, FrameDecoder, encode
from radx.app.logformat import printable
from radx.app.logrelay import event_from_message
from radx.app.worker import SETTINGS

log = Logger(namespace="radx.scp.workers")

# A worker's report holds the counts so far (radx.app.channel.REPORTED), then two open now.
CUMULATIVE = len(REPORTED)
# A worker that ran at least this long is started again at once.
STEADY_SECONDS = 1.0
# The pause before starting again one that ended sooner: doubled each time, up to the last.
RESTART_FIRST_S = 0.5
RESTART_MOST_S = 10.0
# Seconds a report asked for may take before the totals go without it.
REPORT_TIMEOUT = 5.0
# Seconds past --drain-timeout a stopping worker has before it is killed.
STOP_GRACE = 15.0
# A line of a worker's stdout or stderr is cut past this many bytes.
MAX_LINE = 4096


def how_it_ended(reason) -> str:
    value = reason.value
    if isinstance(value, ProcessDone):
        return "exit status 0"
    if isinstance(value, ProcessTerminated):
        if value.signal is not None:
            try:
                name = signal.Signals(value.signal).name
            except ValueError:
                name = str(value.signal)
            return f"killed by signal {value.signal} ({name})"
        return f"exit status {value.exitCode}"
    return str(value)


class WorkerProcess(ProcessProtocol):
    """One worker as its supervisor sees it: messages in and out, output lines, its end."""

    def __init__(self, pool: "WorkerPool", index: int) -> None:
        self.pool = pool
        self.index = index
        self.pid: int | None = None
        self.ready = False
        self.ended = False
        # The counts it last reported (WorkerService.counts), or None.
        self.counts: tuple | None = None
        # Why it could not start, as it said, or its last line on stderr.
        self.failure: str | None = None
        self.started = pool.reactor.seconds()
        self.kill_timer = None
        self._decoder = FrameDecoder()
        self._partial = {1: b"", 2: b""}

    def connectionMade(self) -> None:
        self.pid = self.transport.pid

    def childDataReceived(self, fd: int, data: bytes) -> None:
        if fd == MESSAGES_OUT:
            try:
                messages = self._decoder.feed(data)
            except ChannelError as error:
                log.error("Worker {worker} pid={pid} sent {why}: stopping it", worker=self.index, pid=self.pid, why=str(error))
                self.kill()
                return
            for message in messages:
                self.pool.received(self, message)
            return
        lines = (self._partial.get(fd, b"") + data).split(b"\n")
        self._partial[fd] = lines.pop()
        if len(self._partial[fd]) > MAX_LINE:
            lines.append(self._partial[fd])
            self._partial[fd] = b""
        for line in lines:
            self._output(fd, line)

    def _output(self, fd: int, line: bytes) -> None:
        text = printable(line[:MAX_LINE].decode("utf-8", "replace").rstrip("\r"))
        if not text:
            return
        stream = "stderr" if fd == 2 else "stdout"
        if fd == 2:
            self.failure = text
        log.warn("Worker {worker} pid={pid} {stream}: {line}", worker=self.index, pid=self.pid, stream=stream, line=text)

    def send(self, message: tuple) -> None:
        if self.ended or self.transport is None:
            return
        try:
            self.transport.writeToChild(CONTROL_IN, encode(message))
        except (KeyError, OSError):
            pass

    def kill(self) -> None:
        try:
            self.transport.signalProcess("KILL")
        except (ProcessExitedAlready, OSError):
            pass

    def processEnded(self, reason) -> None:
        self.ended = True
        for fd, rest in self._partial.items():
            if rest:
                self._output(fd, rest)
        if self.kill_timer is not None and self.kill_timer.active():
            self.kill_timer.cancel()
        self.pool.ended(self, reason)


class WorkerPool:
    """
    C{count} workers, each given C{settings} (and its index) and the
    listening sockets C{sockets} (the supervisor's descriptors, in the
    order of C{settings["listeners"]}). C{handler(worker, message)} takes
    the messages that are the supervisor's business (an instance stored,
    a Success sent, a catch-up asked for).
    """

    def __init__(self, reactor, count: int, settings: dict, sockets: list[int], handler, slots, metrics_dir: str | None = None, stop_grace: float = STOP_GRACE) -> None:
        self.reactor = reactor
        self.count = count
        self.settings = settings
        self.sockets = sockets
        self.handler = handler
        self.slots = slots
        self.metrics_dir = metrics_dir
        self.stop_grace = stop_grace
        self.workers: dict[int, WorkerProcess] = {}
        # What the workers that ended had counted.
        self.retired = [0] * CUMULATIVE
        self.starting = True
        self.stopping = False
        # Fires once every worker has started; fails with a StartupError if one could not.
        self.ready: defer.Deferred = defer.Deferred()
        self._pauses: dict[int, float] = {}
        self._restarts: dict[int, object] = {}
        self._requests = itertools.count(1)
        self._reports: dict[int, tuple[set, defer.Deferred, object]] = {}
        self._all_ended: list[defer.Deferred] = []
        # Where the workers' log lines go (their own observers made them), when they send lines.
        self.write_lines = None

    # Starting ------------------------------------------------------------------

    def start(self) -> None:
        for index in range(self.count):
            self.spawn(index)

    def arguments(self) -> list[str]:
        """The worker's command line: this interpreter, as this process was started (-P kept), the worker's module."""
        flags = ["-P"] if getattr(sys.flags, "safe_path", False) else []
        return [sys.executable, *flags, "-m", "radx.app.worker"]

    def environment(self, index: int) -> dict:
        import radx

        # systemd's sockets are this process's: a worker finds its own on its descriptors.
        env = {name: value for name, value in os.environ.items() if name not in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")}
        # The radx this process runs, whatever put it on its path.
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(radx.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        env[SETTINGS] = json.dumps(dict(self.settings, index=index))
        if self.metrics_dir is not None:
            env["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        return env

    def spawn(self, index: int) -> None:
        self._restarts.pop(index, None)
        worker = WorkerProcess(self, index)
        descriptors = {CONTROL_IN: "w", 1: "r", 2: "r", MESSAGES_OUT: "r"}
        for offset, fd in enumerate(self.sockets):
            descriptors[FIRST_SOCKET + offset] = fd
        self.workers[index] = worker
        try:
            self.reactor.spawnProcess(worker, sys.executable, self.arguments(), env=self.environment(index), childFDs=descriptors)
        except OSError as error:
            del self.workers[index]
            self._not_started(worker, str(error))

    # Messages ------------------------------------------------------------------

    def received(self, worker: WorkerProcess, message: tuple) -> None:
        kind = message[0]
        if kind == "lines":
            if self.write_lines is not None:
                self.write_lines(message[1])
        elif kind == "log":
            globalLogPublisher(event_from_message(message))
        elif kind == "stats":
            worker.counts = message[3]
            if message[1]:
                self._reported(message[1], worker)
        elif kind == "ready":
            self._started(worker)
        elif kind == "failed":
            worker.failure = message[1]
        else:
            self.handler(worker, message)

    def _started(self, worker: WorkerProcess) -> None:
        worker.ready = True
        log.info("Worker {worker} started pid={pid}", worker=worker.index, pid=worker.pid)
        if self.stopping:
            worker.send(("stop",))
            return
        if self.starting and all(w.ready for w in self.workers.values()) and len(self.workers) == self.count:
            self.starting = False
            self.ready.callback(None)

    # Counts --------------------------------------------------------------------

    def totals(self) -> list[int]:
        """The cumulative counts over every worker, those that ended included."""
        totals = list(self.retired)
        for worker in self.workers.values():
            if worker.counts is not None:
                for i in range(CUMULATIVE):
                    totals[i] += worker.counts[i] or 0
        return totals

    def open_now(self) -> tuple[int, int]:
        """Associations, and connections, open in the workers now (as they last reported)."""
        counted = [w.counts for w in self.workers.values() if w.counts is not None]
        return sum(c[CUMULATIVE] for c in counted), sum(c[CUMULATIVE + 1] for c in counted)

    def refresh(self, timeout: float = REPORT_TIMEOUT) -> defer.Deferred:
        """Ask every worker for its counts: fires once all have answered, ended, or C{timeout} passed."""
        waiting = {worker for worker in self.workers.values() if worker.ready and not worker.ended}
        if not waiting:
            return defer.succeed(None)
        request = next(self._requests)
        done = defer.Deferred()
        timer = self.reactor.callLater(timeout, self._report_done, request)
        self._reports[request] = (waiting, done, timer)
        for worker in list(waiting):
            worker.send(("report", request))
        return done

    def _reported(self, request: int, worker: WorkerProcess) -> None:
        entry = self._reports.get(request)
        if entry is not None:
            entry[0].discard(worker)
            if not entry[0]:
                self._report_done(request)

    def _report_done(self, request: int) -> None:
        entry = self._reports.pop(request, None)
        if entry is None:
            return
        _, done, timer = entry
        if timer.active():
            timer.cancel()
        done.callback(None)

    # Ends ----------------------------------------------------------------------

    def ended(self, worker: WorkerProcess, reason) -> None:
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
        if worker.counts is not None:
            for i in range(CUMULATIVE):
                self.retired[i] += worker.counts[i] or 0
        self.slots.empty(worker.index)
        if self.metrics_dir is not None and worker.pid is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(worker.pid, self.metrics_dir)
        for request in list(self._reports):
            self._reported(request, worker)
        how = how_it_ended(reason)
        if self.stopping:
            if not isinstance(reason.value, ProcessDone):
                log.warn("Worker {worker} pid={pid} ended: {how}", worker=worker.index, pid=worker.pid, how=how)
            if not self.workers and not self._restarts:
                waiters, self._all_ended = self._all_ended, []
                for waiter in waiters:
                    waiter.callback(None)
            return
        if not worker.ready:
            self._not_started(worker, worker.failure or how)
            return
        lived = self.reactor.seconds() - worker.started
        pause = 0.0 if lived >= STEADY_SECONDS else self._pause(worker.index)
        if lived >= STEADY_SECONDS:
            self._pauses.pop(worker.index, None)
        log.warn(
            "Worker {worker} pid={pid} ended: {how}; starting another in its place{when}",
            worker=worker.index,
            pid=worker.pid,
            how=how,
            when=f" in {pause:g} s" if pause else "",
        )
        self._restart(worker.index, pause)

    def _pause(self, index: int) -> float:
        pause = min(RESTART_MOST_S, self._pauses.get(index, RESTART_FIRST_S / 2) * 2)
        self._pauses[index] = pause
        return pause

    def _restart(self, index: int, pause: float) -> None:
        self._restarts[index] = self.reactor.callLater(pause, self.spawn, index)

    def _not_started(self, worker: WorkerProcess, why: str) -> None:
        """A worker ended before it served: the server's start fails, or it is tried again later."""
        if self.starting:
            from radx.app.tap import StartupError

            self.starting = False
            self.ready.errback(StartupError(f"worker {worker.index} did not start: {why}"))
            return
        pause = self._pause(worker.index)
        log.warn(
            "Worker {worker} pid={pid} did not start: {why}; trying again in {pause:g} s",
            worker=worker.index,
            pid=worker.pid,
            why=why,
            pause=pause,
        )
        self._restart(worker.index, pause)

    def stop(self, drain_timeout: float) -> defer.Deferred:
        """Each worker drains and ends (killed if it takes past C{drain_timeout} and a grace); fires once all have."""
        self.stopping = True
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        if not self.workers:
            return defer.succeed(None)
        for worker in self.workers.values():
            worker.send(("stop",))
            worker.kill_timer = self.reactor.callLater(drain_timeout + self.stop_grace, self._kill_late, worker)
        done = defer.Deferred()
        self._all_ended.append(done)
        return done

    def _kill_late(self, worker: WorkerProcess) -> None:
        log.warn("Worker {worker} pid={pid} did not end after its drain: killing it", worker=worker.index, pid=worker.pid)
        worker.kill()

    def stop_now(self) -> None:
        """Cut every worker's drain short."""
        for worker in self.workers.values():
            worker.send(("stop_now",))
