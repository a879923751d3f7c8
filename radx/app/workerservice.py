# -*- test-case-name: tests.test_app_workers,tests.test_app_worker_parts -*-
"""One worker process of `--workers N`: the SCP on the sockets its supervisor passed, reporting to it.

The worker serves associations as the single process does, with its
own reactor and storage threads, on listening sockets it adopts
(``reactor.adoptStreamPort``). What must be one for the whole server
is the supervisor's (radx.app.supervisor): --max-conns is counted over
every worker in a shared table (radx.app.slots); each instance stored
is sent to the supervisor, which journals it for the hooks and answers
once it is durable, before the storage thread lets the Success go
(L{RemoteEvents}); the counts go to the supervisor, for the statistics
line, /metrics and the shutdown block; and so do the log events
(radx.app.logrelay).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace

from twisted.application import service
from twisted.internet import defer, error, task
from twisted.logger import Logger, globalLogBeginner

from radx.app.channel import CONTROL_IN, MESSAGES_OUT, REPORTED, ChannelReader, ChannelWriter
from radx.app.logrelay import worker_observer
from radx.app.signals import StopOnSignal, run_until_stopped
from radx.app.slots import AssociationSlots
from radx.app.tap import ScpService, StartupError, describe_os_error
from radx.scp.factory import SCPFactory
from radx.scp.hooks import instance_record
from radx.storage.errors import WriteFailed

log = Logger(namespace="radx.scp.workers")

# Seconds between two reports of the counts, when they changed.
REPORT_INTERVAL = 1.0


class WorkerFactory(SCPFactory):
    """
    A worker's factory: --max-conns over every worker (the table of
    radx.app.slots), and a catalogue's catch-up left to the supervisor.
    """

    # The shared table, and what asks the supervisor for a catch-up; set by the worker.
    slots: AssociationSlots | None = None
    ask_catch_up = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Places taken in the table by an association being negotiated:
        # AE-6's check and the indication that follows are one reactor turn.
        self._claimed = 0

    def admit_association(self) -> bool:
        if self.slots is None:
            return super().admit_association()
        if not self.slots.claim(self.config.max_conns):
            return False
        self._claimed += 1
        return True

    def associations_open(self) -> int:
        return super().associations_open() if self.slots is None else self.slots.total()

    def association_started(self, protocol) -> None:
        super().association_started(protocol)
        if self._claimed:
            self._claimed -= 1

    def association_rejected(self, reject) -> None:
        super().association_rejected(reject)
        if self._claimed:
            # Taken at AE-6, then rejected by the service-user: given back.
            self._claimed -= 1
            self.slots.release()

    def connection_made(self, protocol) -> None:
        super().connection_made(protocol)
        if self.slots is not None:
            self.slots.set_connections(len(self.connections))

    def connection_lost(self, protocol) -> None:
        associated = protocol in self.active
        super().connection_lost(protocol)
        if self.slots is not None:
            self.slots.set_connections(len(self.connections))
            if associated:
                self.slots.release()

    def catch_up(self, modified_before: int) -> defer.Deferred:
        # One catch-up for the whole server, by the supervisor.
        if self.ask_catch_up is not None:
            self.ask_catch_up(modified_before)
        return defer.succeed(None)


class _Waiter:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.why: str | None = None


class RemoteEvents:
    """
    The factory's ``events`` in a worker: each instance stored goes to the
    supervisor, whose journal records it; the storage thread waits until
    it is durable there, as it waits for its own journal in one process.
    """

    opened = True
    metrics = None

    def __init__(self, reactor, channel: ChannelWriter) -> None:
        self.reactor = reactor
        self.channel = channel
        self._lock = threading.Lock()
        self._waiting: dict[int, _Waiter] = {}
        self._next = 0
        self._gone = False

    def open(self) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> defer.Deferred:
        return defer.succeed(None)

    def record(self, writer, stored, calling_ae_title, called_ae_title, peer) -> None:
        """On a storage thread, before the Success: the supervisor's journal has the instance, or WriteFailed."""
        instance = instance_record(writer, stored, calling_ae_title, called_ae_title, peer, time.time())
        waiter = _Waiter()
        with self._lock:
            if self._gone:
                waiter.why = "the supervisor is gone"
            else:
                self._next += 1
                number = self._next
                self._waiting[number] = waiter
        if waiter.why is None:
            self.channel.send(("stored", number, instance))
            waiter.done.wait()
        if waiter.why is not None:
            # No Success without the record, as in one process.
            raise WriteFailed(f"cannot record it in the events journal: {waiter.why}")

    def acknowledged(self, number: int, why: str | None) -> None:
        """The supervisor's answer: durable (``why`` None), or not and why."""
        with self._lock:
            waiter = self._waiting.pop(number, None)
        if waiter is not None:
            waiter.why = why
            waiter.done.set()

    def supervisor_gone(self) -> None:
        with self._lock:
            self._gone = True
            waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            waiter.why = "the supervisor is gone"
            waiter.done.set()

    def instance_answered(self, path: str) -> None:
        self.channel.send(("answered", os.path.abspath(path)))


class EvenAccepts:
    """
    Connections spread over the workers: each is woken for a new one,
    and without this the first to look would take every one waiting
    (Twisted accepts up to a hundred at a time), and the next burst too.

    A worker accepts one connection each time its socket is readable;
    one with more connections open than another worker (the shared
    table's hint) lets the others take it, looking again DEFER_S later,
    for at most MOST_S: a worker that does not answer (stopped, stuck)
    delays a connection no more than that.
    """

    DEFER_S = 0.002
    MOST_S = 0.02

    def __init__(self, reactor, slots: AssociationSlots) -> None:
        self.reactor = reactor
        self.slots = slots
        # Since when a waiting connection has been left to others, or None.
        self._deferring_since: float | None = None

    def watch(self, port) -> None:
        read = port.doRead

        def do_read():
            if self._leave_to_others():
                port.stopReading()
                self.reactor.callLater(self.DEFER_S, self._look_again, port)
                return None
            port.numberAccepts = 1
            return read()

        port.doRead = do_read

    def _leave_to_others(self) -> bool:
        if not self.slots.fewer_elsewhere():
            self._deferring_since = None
            return False
        now = self.reactor.seconds()
        if self._deferring_since is None:
            self._deferring_since = now
        if now - self._deferring_since < self.MOST_S:
            return True
        self._deferring_since = None
        return False

    @staticmethod
    def _look_again(port) -> None:
        if port.connected and not port.disconnecting:
            port.startReading()


class WorkerService(ScpService):
    """The SCP of one worker: adopted sockets, no output folder of its own to prepare, counts reported."""

    factory_class = WorkerFactory

    def __init__(self, config, reactor, settings: dict, channel: ChannelWriter) -> None:
        # The supervisor runs the hooks and keeps the journal.
        hooks = config.server.hooks
        super().__init__(replace(config, server=replace(config.server, hooks=None)), reactor)
        self.settings = settings
        self.index = settings["index"]
        self.channel = channel
        self.factory.slots = AssociationSlots(settings["slots"], self.index)
        self.factory.slots.set_connections(0)
        self.accepts = EvenAccepts(reactor, self.factory.slots)
        self.factory.ask_catch_up = lambda modified_before: channel.send(("catch_up", modified_before))
        if hooks is not None:
            self.factory.events = RemoteEvents(reactor, channel)
        self._reporting = task.LoopingCall(self.report)
        self._reporting.clock = reactor
        self._reported = None

    def listen(self) -> None:
        self.listening = True
        for fd, family, kind in self.settings["listeners"]:
            factory = self._factory_of(kind)
            try:
                port = self.reactor.adoptStreamPort(fd, family, factory)
            except OSError as error:
                self.close_ports()
                raise StartupError(f"cannot serve the socket passed: {describe_os_error(error)}") from None
            finally:
                os.close(fd)
            self.accepts.watch(port)
            self.listeners.append((kind, port))

    def _factory_of(self, kind: str):
        if kind == "tls":
            return self.tls_factory()
        if kind == "proxied":
            from radx.scp.proxied import ProxiedFactory

            return ProxiedFactory(self.factory, self.config.listening.trusted_proxies, self.reactor, self.config.server.artim_timeout)
        return self.factory

    def prepare_output_dir(self) -> None:
        # The supervisor made and checked it, and cleaned its temporary
        # folder: that must not happen again while other workers write.
        try:
            self.factory.tree.folders()
        except OSError as error:
            raise StartupError(f"output directory: {describe_os_error(error)}") from None
        self.output_ready = True

    def serve_http(self) -> None:
        # The supervisor serves /metrics; the metrics live in this process's files.
        from radx.metrics import server_metrics

        server_metrics(self.factory, None)
        self.http_port = False

    def startService(self) -> None:
        self.prepare()
        service.MultiService.startService(self)
        self._reporting.start(REPORT_INTERVAL, now=False)

    @defer.inlineCallbacks
    def stopService(self):
        if self._reporting.running:
            self._reporting.stop()
        yield super().stopService()

    def counts(self) -> tuple:
        stats = self.factory.stats
        return (*(getattr(stats, name) for name in REPORTED), len(self.factory.active), len(self.factory.connections))

    def report(self, request: int = 0, final: bool = False) -> None:
        """The counts to the supervisor: asked for (``request``), the last, or changed since the last report."""
        counts = self.counts()
        if request or final or counts != self._reported:
            self._reported = counts
            self.channel.send(("stats", request, final, counts))

    def message(self, message: tuple) -> None:
        """A message from the supervisor."""
        kind = message[0]
        if kind == "ack":
            self.factory.events.acknowledged(message[1], message[2])
        elif kind == "report":
            self.report(message[1])
        elif kind == "stop":
            self.stop()
        elif kind == "stop_now":
            self.factory.stop_now()

    def stop(self) -> None:
        """Drain and end, as on SIGTERM."""
        try:
            self.reactor.stop()
        except error.ReactorNotRunning:
            pass

    def supervisor_gone(self) -> None:
        """The supervisor's pipe is closed: it is gone, so this worker drains and ends."""
        events = self.factory.events
        if isinstance(events, RemoteEvents):
            events.supervisor_gone()
        self.stop()


def run_worker(config, settings: dict, reactor=None) -> int:
    """Serve until the supervisor says stop (or a signal, or the supervisor's end); the exit status."""
    if reactor is None:
        from twisted.internet import reactor
    channel = ChannelWriter(MESSAGES_OUT, reactor)
    observer = worker_observer(settings["render"], channel, settings["index"], settings["levels"])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    worker = WorkerService(config, reactor, settings, channel)
    try:
        worker.prepare()
    except StartupError as failure:
        channel.send(("failed", str(failure)))
        return 1
    ChannelReader(reactor, CONTROL_IN, worker.message, worker.supervisor_gone)

    def started():
        StopOnSignal(reactor, worker.factory.stop_now, quiet=True).install()
        worker.startService()
        channel.send(("ready", os.getpid()))

    run_until_stopped(reactor, worker, started)
    worker.report(final=True)
    channel.flush()
    return 0
