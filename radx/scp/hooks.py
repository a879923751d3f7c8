# -*- test-case-name: tests.test_scp_hooks,tests.test_scp_hooks_clock -*-
"""Hooks as child processes and events as JSON lines: the reactor's side of radx.events.

The storage thread records each instance in the journal before its
Success (L{ServerEvents.record}); once the Success is sent, the reactor
starts its store hook (L{ServerEvents.instance_answered}). Quiet periods
are data in the journal: a C{callLater} only wakes the server to look at
the earliest due time. Each hook is a child process started with
C{reactor.spawnProcess} from an argument list, never a shell, at most
C{concurrency} at once, killed past its timeout; its output is logged
line by line, bounded, and its end recorded in the journal, so that a
hook that did not end runs again after a restart.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque

from twisted.internet import defer
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from radx.events.command import STORE, HookSettings, find_program, hook_values
from radx.events.journal import EventState, Hook, Journal
from radx.storage.part10 import read_instance_header
from radx.storage.errors import WriteFailed

# PS3.6: Study and Series Instance UID, which the storage's walk keeps for every instance.
_STUDY_INSTANCE_UID = 0x0020000D
_SERIES_INSTANCE_UID = 0x0020000E

# A line of a hook's output is cut past this many bytes.
MAX_LINE = 1024
# A hook's output lines are logged at most at this rate: a burst, then so many a second.
LINE_BURST = 100
LINES_PER_SECOND = 10.0
# After so many appends, the journal is written again compacted.
COMPACT_AFTER = 10_000
# Seconds a hook has to end after SIGTERM at shutdown, before SIGKILL.
STOP_GRACE = 5.0
# Seconds the output pipes stay open after the hook's process has exited,
# for its last lines: a program it started and left running may hold them.
PIPE_GRACE = 1.0


def _printable(data: bytes) -> str:
    return data.decode("utf-8", "replace").replace("\r", "")


class _OutputLines:
    """One stream of a hook's output, cut into lines: bounded in length, bounded in rate."""

    def __init__(self, process: "HookProcess", stream: str) -> None:
        self.process = process
        self.stream = stream
        self.buffer = b""
        self.cut = False  # the current line was too long: the rest of it is dropped

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\n")
            if end < 0:
                break
            line, self.buffer = self.buffer[:end], self.buffer[end + 1 :]
            if self.cut:
                self.cut = False
                continue
            self.process.line(self.stream, line[:MAX_LINE], len(line) > MAX_LINE)
        if len(self.buffer) > MAX_LINE:
            if not self.cut:
                self.process.line(self.stream, self.buffer[:MAX_LINE], True)
                self.cut = True
            self.buffer = b""

    def flush(self) -> None:
        if self.buffer and not self.cut:
            self.process.line(self.stream, self.buffer, False)
        self.buffer = b""


class HookProcess(ProcessProtocol):
    """One run of a hook: its output logged, its end reported to the runner."""

    log = Logger(namespace="radx.scp.hooks")

    def __init__(self, runner: "HookRunner", hook: Hook, name: str) -> None:
        self.runner = runner
        self.hook = hook
        self.name = name
        self.started = runner.reactor.seconds()
        self.timer = None
        self.timed_out = False
        self.exit_reason = None
        self._closing = None
        self.stopped = False  # killed because the server stops: not done
        self.lines_dropped = 0
        self._tokens = float(LINE_BURST)
        self._refilled = self.started
        self._out = _OutputLines(self, "stdout")
        self._err = _OutputLines(self, "stderr")

    def connectionMade(self) -> None:
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self._out.feed(data)

    def errReceived(self, data: bytes) -> None:
        self._err.feed(data)

    def line(self, stream: str, data: bytes, cut: bool) -> None:
        now = self.runner.reactor.seconds()
        self._tokens = min(LINE_BURST, self._tokens + (now - self._refilled) * LINES_PER_SECOND)
        self._refilled = now
        if self._tokens < 1:
            self.lines_dropped += 1
            return
        self._tokens -= 1
        self.log.info(
            "Hook {hook} {stream}: {line}{cut}",
            hook=self.name,
            stream=stream,
            line=_printable(data),
            cut=" [cut]" if cut else "",
            hook_id=self.hook.id,
        )

    def kill(self, signal: str) -> None:
        try:
            self.transport.signalProcess(signal)
        except (ProcessExitedAlready, OSError):
            pass

    def time_out(self) -> None:
        self.timer = None
        self.timed_out = True
        self.kill("KILL")

    def processExited(self, reason) -> None:
        # The pipes may outlive the process (a program it started holds
        # them): they are closed soon after, so that the run ends.
        self.exit_reason = reason
        self._closing = self.runner.reactor.callLater(PIPE_GRACE, self.transport.loseConnection)

    def processEnded(self, reason) -> None:
        self._out.flush()
        self._err.flush()
        for call in (self.timer, self._closing):
            if call is not None and call.active():
                call.cancel()
        self.timer = self._closing = None
        self.runner.ended(self, self.exit_reason or reason)


class HookRunner:
    """Starts hooks as child processes, at most ``concurrency`` at once, each at most ``timeout`` seconds."""

    log = Logger(namespace="radx.scp.hooks")

    def __init__(self, reactor, settings: HookSettings, organize: bool, on_done, on_outcome) -> None:
        self.reactor = reactor
        self.settings = settings
        self.organize = organize
        self.on_done = on_done  # (hook) -> None: the hook ran to its end
        self.on_outcome = on_outcome  # (hook, name, status, succeeded) -> None
        self.programs = {command.kind: find_program(command) for command in settings.commands}
        self.queue: deque[Hook] = deque()
        self.queued: set[str] = set()
        self.running: dict[str, HookProcess] = {}
        self.stopping = False
        self._all_ended: list[defer.Deferred] = []

    def submit(self, hook: Hook) -> None:
        if self.stopping or hook.id in self.queued or hook.id in self.running:
            return
        self.queue.append(hook)
        self.queued.add(hook.id)
        self._start_next()

    def _start_next(self) -> None:
        while not self.stopping and self.queue and len(self.running) < self.settings.concurrency:
            hook = self.queue.popleft()
            self.queued.discard(hook.id)
            self._spawn(hook)

    def _spawn(self, hook: Hook) -> None:
        command = self.settings.command(hook.kind)
        name = f"exec-on-{hook.kind}"
        values = hook_values(hook.kind, hook.instance, hook.count, hook.id, self.organize)
        argv = command.arguments(values)
        env = dict(os.environ, RADX_HOOK_ID=hook.id, RADX_HOOK=hook.kind)
        process = HookProcess(self, hook, name)
        self.running[hook.id] = process
        try:
            self.reactor.spawnProcess(process, self.programs[hook.kind], argv, env=env)
        except Exception as error:
            del self.running[hook.id]
            self.log.warn("Hook {hook} could not start id={hook_id}: {why}", hook=name, hook_id=hook.id, why=str(error))
            self.on_outcome(hook, name, "not started", False)
            self.on_done(hook)
            self.reactor.callLater(0, self._start_next)
            return
        process.timer = self.reactor.callLater(self.settings.timeout, process.time_out)
        self.log.debug("Hook {hook} started id={hook_id} arguments={arguments!r}", hook=name, hook_id=hook.id, arguments=argv)

    def ended(self, process: HookProcess, reason) -> None:
        hook, name = process.hook, process.name
        self.running.pop(hook.id, None)
        seconds = self.reactor.seconds() - process.started
        if process.lines_dropped:
            self.log.warn(
                "Hook {hook} printed {count} more lines, not logged id={hook_id}",
                hook=name,
                count=process.lines_dropped,
                hook_id=hook.id,
            )
        value = reason.value
        if process.stopped and not process.timed_out:
            self.log.info("Hook {hook} stopped with the server id={hook_id}: it runs again at the next start", hook=name, hook_id=hook.id)
        else:
            if process.timed_out:
                status, succeeded = f"killed after {self.settings.timeout:g} s", False
                self.log.warn(
                    "Hook {hook} killed: it ran past --exec-timeout {timeout} s id={hook_id}",
                    hook=name,
                    timeout=self.settings.timeout,
                    hook_id=hook.id,
                )
            elif isinstance(value, ProcessDone):
                status, succeeded = "exit 0", True
                self.log.info("Hook {hook} finished status=0 seconds={seconds:.3f} id={hook_id}", hook=name, seconds=seconds, hook_id=hook.id)
            else:
                if isinstance(value, ProcessTerminated) and value.signal is not None:
                    status = f"signal {value.signal}"
                else:
                    status = f"exit {getattr(value, 'exitCode', '?')}"
                succeeded = False
                self.log.warn(
                    "Hook {hook} failed: {status} seconds={seconds:.3f} id={hook_id}",
                    hook=name,
                    status=status,
                    seconds=seconds,
                    hook_id=hook.id,
                )
            self.on_outcome(hook, name, status, succeeded)
            self.on_done(hook)
        self._start_next()
        if not self.running:
            waiters, self._all_ended = self._all_ended, []
            for waiter in waiters:
                waiter.callback(None)

    def stop(self) -> defer.Deferred:
        """Start nothing more; the hooks running are asked to end (SIGTERM, then SIGKILL), and run again at the next start."""
        self.stopping = True
        self.queue.clear()
        self.queued.clear()
        if not self.running:
            return defer.succeed(None)
        for process in list(self.running.values()):
            process.stopped = True
            if process.timer is not None and process.timer.active():
                process.timer.cancel()
            process.timer = None
            process.kill("TERM")
        done = defer.Deferred()
        self._all_ended.append(done)
        kill = self.reactor.callLater(STOP_GRACE, self._kill_all)
        done.addBoth(lambda result: (kill.cancel() if kill.active() else None, result)[1])
        return done

    def _kill_all(self) -> None:
        for process in list(self.running.values()):
            process.kill("KILL")


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds * 1000) % 1000:03d}Z"


class EventLines:
    """--events: one JSON line a stored instance, completed series or study, and hook run; written as it happens."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def write(self, fields: dict) -> None:
        line = json.dumps(fields, separators=(",", ":")) + "\n"
        os.write(self._fd, line.encode("ascii"))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def run_outcome(status: str, succeeded: bool) -> str:
    """A hook run's outcome as a metric's label: one of four words, whatever the status said."""
    if succeeded:
        return "succeeded"
    if status == "not started":
        return "not_started"
    if status.startswith("killed"):
        return "timed_out"
    return "failed"


class ServerEvents:
    """The server's hooks and events: the journal, the quiet periods' timer, the runner and --events."""

    log = Logger(namespace="radx.scp.hooks")

    def __init__(self, settings: HookSettings, output_dir: str, *, organize: bool, fsync: bool, dir_mode: int, reactor, threadpool, stats) -> None:
        self.settings = settings
        self.output_dir = os.path.abspath(output_dir)
        self.organize = organize
        self.reactor = reactor
        self.threadpool = threadpool
        self.stats = stats
        # radx.metrics.ServerMetrics once --http serves them; None: nothing to count.
        self.metrics = None
        hooks = {command.kind for command in settings.commands}
        periods = {"series", "study"} if settings.events else hooks
        state = EventState(hooks, periods, settings.series_timeout, settings.study_timeout)
        self.journal = Journal(self.output_dir, state, fsync=fsync, dir_mode=dir_mode)
        self.runner = HookRunner(reactor, settings, organize, self._hook_done, self._hook_outcome)
        self.lines: EventLines | None = None
        # Instances recorded by a storage thread whose Success is not sent yet, by path.
        self._answering: dict[str, list] = {}
        self._answering_lock = threading.Lock()
        self._timer = None
        self._compacting = False
        self.opened = False
        # Instances from workers waiting to be journaled, and the batch being written.
        self._batch: list = []
        self._writing: defer.Deferred | None = None

    def open(self) -> None:
        """Blocking, at start: read the journal an earlier run left, open --events."""
        self.journal.open()
        if self.settings.events:
            self.lines = EventLines(self.settings.events)
        self.opened = True

    def start(self) -> None:
        """On the reactor: run the hooks an earlier run left due, and wait for the quiet periods it left running."""
        pending = self.journal.pending()
        state = self.journal.state
        if pending or state.quiet or state.dropped or self.journal.unreadable:
            self.log.info(
                "Events journal read: {hooks} hooks due from an earlier run, {periods} quiet periods running,"
                " {dropped} due hooks no flag asks for any more, {unreadable} unreadable lines",
                hooks=len(pending),
                periods=len(state.quiet),
                dropped=len(state.dropped),
                unreadable=self.journal.unreadable,
            )
        for hook in pending:
            self.runner.submit(hook)
        self._schedule()

    # On a storage thread, before the Success.

    def record(self, writer, stored, calling_ae_title: str | None, called_ae_title: str | None, peer: str | None) -> None:
        """Record the instance just stored in the journal, durably; its hook starts once its Success is sent."""
        instance = instance_record(writer, stored, calling_ae_title, called_ae_title, peer, self.reactor.seconds())
        try:
            self.record_instances([instance])
        except OSError as error:
            # No Success without the record: the peer sends it again, and
            # its hook is then not lost.
            raise WriteFailed(f"cannot record it in the events journal: {error.strerror or error}") from None

    def record_instances(self, instances: list[dict]) -> None:
        """Blocking: journal instances stored (L{instance_record}), durably, with one sync; or OSError."""
        hooks = self.journal.instances_stored(instances)
        with self._answering_lock:
            for instance, hook in zip(instances, hooks):
                self._answering.setdefault(instance["path"], []).append((instance, hook))

    # On the reactor.

    def record_soon(self, instance: dict) -> defer.Deferred:
        """
        Journal an instance another process stored (a worker's), on the
        threadpool: fires once it is durable, or fails with the OSError.
        What arrives while a batch is being written goes in the next, with
        one sync for all of it: a worker's storage thread waits for this
        before its Success, as the single process's waits for L{record}.
        """
        waiter = defer.Deferred()
        self._batch.append((instance, waiter))
        if self._writing is None:
            self._journal_batch()
        return waiter

    def _journal_batch(self) -> None:
        batch, self._batch = self._batch, []
        d = self._writing = deferToThreadPool(self.reactor, self.threadpool, self.record_instances, [instance for instance, _ in batch])

        def written(result) -> None:
            self._writing = None
            for _, waiter in batch:
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(None)
            if self._batch:
                self._journal_batch()
            self._compact_if_long()

        d.addBoth(written)
        d.addErrback(lambda failure: self.log.failure("Events journal batch", failure))

    def instance_answered(self, path: str) -> None:
        """The Success of the instance stored at ``path`` is sent: its event, its store hook, the timer."""
        with self._answering_lock:
            waiting = self._answering.get(os.path.abspath(path))
            if not waiting:
                return
            instance, hook = waiting.pop(0)
            if not waiting:
                del self._answering[os.path.abspath(path)]
        if self.lines is not None:
            fields = hook_values(STORE, instance, 1, hook.id if hook else None, self.organize)
            self._event("instance", "stored", instance["time"], fields)
        if hook is not None:
            self.runner.submit(hook)
        self._schedule()
        self._compact_if_long()

    def _schedule(self) -> None:
        due = self.journal.get_timer()
        if due is None:
            return
        if self._timer is not None and self._timer.active():
            if self._timer.getTime() <= due:
                return  # it wakes first, and looks again
            self._timer.cancel()
        self._timer = self.reactor.callLater(max(0.0, due - self.reactor.seconds()), self._wake)

    def _wake(self) -> None:
        self._timer = None
        for period, hook in self.journal.handle_timer(self.reactor.seconds()):
            self.log.info(
                "{kind} complete after {timeout:g} s of quiet uid={uid} count={count}",
                kind=period.kind.capitalize(),
                timeout=self.journal.state.timeouts[period.kind],
                uid=period.key,
                count=period.count,
            )
            if self.lines is not None:
                fields = hook_values(period.kind, period.instance, period.count, hook.id if hook else None, self.organize)
                self._event(period.kind, "complete", self.reactor.seconds(), fields)
            if hook is not None:
                self.runner.submit(hook)
        self._schedule()
        self._compact_if_long()

    def _event(self, event: str, status: str, when: float, fields: dict) -> None:
        line = {"event": event, "status": status, "time": _utc(when)}
        line.update((key, value) for key, value in fields.items() if key != "kind")
        try:
            self.lines.write(line)
        except OSError as error:
            self.log.warn("Event not written to {path}: {why}", path=self.lines.path, why=error.strerror or str(error))

    def _hook_outcome(self, hook: Hook, name: str, status: str, succeeded: bool) -> None:
        if succeeded:
            self.stats.hooks_succeeded += 1
        else:
            self.stats.hook_failures += 1
        if self.metrics is not None:
            self.metrics.hook_runs.labels(hook=hook.kind, outcome=run_outcome(status, succeeded)).inc()
        if self.lines is not None:
            self._event("hook", status, self.reactor.seconds(), {"hook": name, "id": hook.id})

    def _hook_done(self, hook: Hook) -> None:
        try:
            self.journal.hook_done(hook.id)
        except OSError as error:
            self.log.warn("Hook's end not recorded id={hook_id}: {why}; it may run again at the next start", hook_id=hook.id, why=error.strerror or str(error))
        self._compact_if_long()

    def _compact_if_long(self) -> None:
        """Past COMPACT_AFTER lines, the journal is written again with what is pending only, on a storage thread."""
        if self.journal.appended >= COMPACT_AFTER and not self._compacting and self.threadpool is not None:
            self._compacting = True
            d = deferToThreadPool(self.reactor, self.threadpool, self.journal.compact)
            d.addErrback(lambda failure: self.log.warn("Events journal not compacted: {why}", why=str(failure.value)))
            d.addBoth(lambda _: setattr(self, "_compacting", False))

    @defer.inlineCallbacks
    def stop(self):
        """Wake no more; the hooks running end and run again at the next start; the files closed."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        while self._writing is not None:
            # The workers' last instances, being journaled.
            yield self._writing
        yield self.runner.stop()
        if self.lines is not None:
            self.lines.close()
        self.journal.close()


def instance_record(writer, stored, calling_ae_title: str | None, called_ae_title: str | None, peer: str | None, now: float) -> dict:
    """What the journal keeps of an instance just stored at ``now``, as plain values: for the hooks' placeholders."""
    study, series = _study_and_series(writer, stored.path)
    return {
        "time": now,
        "path": os.path.abspath(stored.path),
        "StudyInstanceUID": study,
        "SeriesInstanceUID": series,
        "SOPInstanceUID": writer.sop_instance_uid,
        "SOPClassUID": writer.sop_class_uid,
        "TransferSyntaxUID": writer.transfer_syntax_uid,
        "calling_ae_title": calling_ae_title,
        "called_ae_title": called_ae_title,
        "remote": _host(peer),
    }


def _study_and_series(writer, path: str) -> tuple[str | None, str | None]:
    """The stored instance's Study and Series Instance UIDs, as the walk of its data set kept them, else from its file."""
    values = writer.walked_values()
    if values is not None:
        return _uid(values.get(_STUDY_INSTANCE_UID)), _uid(values.get(_SERIES_INSTANCE_UID))
    try:
        header = read_instance_header(path, writer.transfer_syntax_uid)
    except Exception:
        return None, None
    return _uid(header.study_instance_uid), _uid(header.series_instance_uid)


def _host(peer: str | None) -> str | None:
    """The peer's address without its port, as DCMTK's #r: ``127.0.0.1``, ``::1``."""
    if not peer or ":" not in peer:
        return peer
    host = peer.rsplit(":", 1)[0]
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _uid(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return value.rstrip("\x00 ")
