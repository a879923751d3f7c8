# -*- test-case-name: tests.test_app_workers,tests.test_app_worker_parts -*-
"""`--workers N`: this process listens, N worker processes serve what it listens on.

The supervisor opens every listening port as the single process does
(PORT, --bind, --listen with ``systemd:`` and ``haproxy:``, TLS), then
stops accepting on them itself and hands the sockets to its workers
(radx.app.workerpool). It keeps what must be one for the whole server:
the output folder's preparation and the catalogue's catch-up, the
events journal and the hooks (radx.scp.hooks; the workers send each
instance stored and wait for it to be durable here), /metrics,
/healthz and /readyz (prometheus_client's multiprocess mode: each
worker's metrics in its files of a private folder, summed here), and
the totals of the statistics line and the shutdown block. The banner
comes once every worker serves.
"""

from __future__ import annotations

import base64
import os
import pickle
import shutil
import tempfile

from twisted.internet import defer
from twisted.logger import ILogObserver, Logger

from radx.app import slots as slots_table
from radx.app.channel import FIRST_SOCKET, REPORTED
from radx.app.jsonlog import JsonLogObserver
from radx.app.logformat import ClassicTextObserver
from radx.app.logrelay import console_levels
from radx.app.tap import ScpService, StartupError, _LoggingService
from radx.metrics import ServerCollector
from radx.scp.factory import SCPFactory

log = Logger(namespace="radx.scp.workers")

# Where the private folder goes when there is a tmpfs there: shared memory in name and in fact.
SHARED_MEMORY = "/dev/shm"


class SupervisorFactory(SCPFactory):
    """The supervisor's factory: no connection of its own; its drain is the workers'; its counts their totals."""

    pool = None

    @defer.inlineCallbacks
    def shut_down(self):
        if self.pool is not None:
            # Before the journal and the hooks stop: the workers' last instances come in meanwhile.
            yield self.pool.stop(self.config.drain_timeout)
        yield super().shut_down()

    def stop_now(self) -> None:
        super().stop_now()
        if self.pool is not None:
            self.pool.stop_now()


class SupervisedCollector(ServerCollector):
    """What /metrics reads at each scrape, over every worker."""

    def __init__(self, factory, supervisor: "SupervisorService") -> None:
        super().__init__(factory)
        self.supervisor = supervisor

    def open_now(self) -> tuple[int, int]:
        pool = self.supervisor.pool
        return (0, 0) if pool is None else pool.open_now()


class SupervisorService(ScpService):
    """The SCP as N worker processes on the ports this one opened."""

    factory_class = SupervisorFactory

    def __init__(self, config, reactor=None) -> None:
        # Not super(): under twistd the next class is _LoggingService, whose
        # own setting its subclass below makes.
        ScpService.__init__(self, config, reactor)
        self.count = config.workers
        # (port, kind) of each listening socket the workers serve.
        self.shared: list = []
        self.private_dir: str | None = None
        self.metrics_dir: str | None = None
        self.slots = None
        self.pool = None
        self.ready = defer.Deferred()
        # How the workers make their log lines, like this process's
        # observer (radx.app.logrelay), and where those lines go; None:
        # they send events, from these levels (the console's; under
        # twistd, every event).
        self.render: dict | None = None
        self.write_lines = None
        self.log_levels = console_levels(config.log_level)

    # Listening: the ports are opened here, as in one process, and served by the workers.

    def _listen(self, endpoint, factory):
        port = super()._listen(endpoint, factory)
        # The workers accept; this process only keeps the socket open.
        port.stopReading()
        self.shared.append((port, self._kind(factory)))
        return port

    def _kind(self, factory) -> str:
        if factory is self.factory:
            return "plain"
        from radx.scp.proxied import ProxiedFactory

        return "proxied" if isinstance(factory, ProxiedFactory) else "tls"

    def close_ports(self):
        self.shared = []
        return super().close_ports()

    # Starting.

    def prepare(self) -> None:
        if self.private_dir is None:
            self.private_dir = _private_folder()
            if self.config.http:
                self.metrics_dir = os.path.join(self.private_dir, "metrics")
                os.mkdir(self.metrics_dir, 0o700)
        try:
            super().prepare()
        except StartupError:
            self._remove_private_dir()
            raise

    def log_lines_to(self, render: dict, write) -> None:
        self.render = render
        self.write_lines = write

    def metrics_registry(self):
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        from radx.metrics import server_metrics

        registry = CollectorRegistry()
        # The workers' metrics, from their files.
        MultiProcessCollector(registry, path=self.metrics_dir)
        # This process's: the hooks' runs only (the workers count none).
        metrics = server_metrics(self.factory, None)
        registry.register(metrics.hook_runs)
        registry.register(SupervisedCollector(self.factory, self))
        return registry, self.refresh

    def startService(self) -> None:
        super().startService()
        self.reactor.callWhenRunning(self.start_workers)

    def start_workers(self) -> None:
        path = os.path.join(self.private_dir, "associations")
        slots_table.create(path, self.count)
        self.slots = slots_table.AssociationSlots(path)
        settings = {
            # The configuration itself, as parsed here: the workers' is this one.
            "config": base64.b64encode(pickle.dumps(self.config)).decode("ascii"),
            "parent": os.getpid(),
            "listeners": [],
            "slots": path,
            "levels": self.log_levels,
            "render": self.render,
        }
        from radx.app.workerpool import WorkerPool

        for offset, (port, kind) in enumerate(self.shared):
            settings["listeners"].append((FIRST_SOCKET + offset, port.socket.family, kind))
        sockets = [port.fileno() for port, _ in self.shared]
        self.pool = WorkerPool(self.reactor, self.count, settings, sockets, self.worker_message, self.slots, self.metrics_dir)
        self.pool.write_lines = self.write_lines
        self.factory.pool = self.pool
        self.pool.ready.chainDeferred(self.ready)
        self.pool.start()

    # The workers' business.

    def worker_message(self, worker, message: tuple) -> None:
        kind = message[0]
        events = self.factory.events
        if kind == "stored":
            self._journal(worker, message[1], message[2])
        elif kind == "answered" and events is not None:
            events.instance_answered(message[1])
        elif kind == "catch_up" and self.factory.catalogue is not None:
            self.factory.catch_up(message[1])

    def _journal(self, worker, number: int, instance: dict) -> None:
        events = self.factory.events
        if events is None:
            worker.send(("ack", number, "no events journal"))
            return

        def failed(failure):
            error = failure.value
            worker.send(("ack", number, getattr(error, "strerror", None) or str(error)))

        d = events.record_soon(instance)
        d.addCallbacks(lambda _: worker.send(("ack", number, None)), failed)

    def refresh(self) -> defer.Deferred:
        """The workers' counts, fresh, in the factory's statistics."""
        if self.pool is None:
            return defer.succeed(None)
        d = self.pool.refresh()
        d.addCallback(lambda _: self.apply_totals())
        return d

    def apply_totals(self) -> None:
        stats = self.factory.stats
        for name, total in zip(REPORTED, self.pool.totals()):
            # Not Catalogued: only with a catalogue.
            if getattr(stats, name) is not None:
                setattr(stats, name, total)

    def log_statistics(self):
        d = self.refresh()
        d.addCallback(lambda _: super(SupervisorService, self).log_statistics())
        return d

    # Stopping.

    @defer.inlineCallbacks
    def stopService(self):
        # As one process stops; the factory's drain is the workers' (SupervisorFactory.shut_down).
        yield super().stopService()
        if self.pool is not None:
            self.apply_totals()
        if self.slots is not None:
            self.slots.close()
        self._remove_private_dir()

    def _remove_private_dir(self) -> None:
        if self.private_dir is not None:
            shutil.rmtree(self.private_dir, ignore_errors=True)
            self.private_dir = None


class TwistdSupervisorService(SupervisorService, _LoggingService):
    """Under twistd: its log (every event the workers log goes there), and a start that fails stops twistd."""

    def __init__(self, config, twistd_log, reactor=None) -> None:
        super().__init__(config, reactor)
        self.twistd_log = twistd_log
        self.log_levels = None

    def setServiceParent(self, parent) -> None:
        super().setServiceParent(parent)
        # The observer _LoggingService gave twistd, if it did (not with --syslog).
        get_component = getattr(parent, "getComponent", None)
        observer = get_component(ILogObserver, None) if get_component is not None else None
        if isinstance(observer, (JsonLogObserver, ClassicTextObserver)):
            self.log_lines_to({"kind": "twistd", "json": isinstance(observer, JsonLogObserver)}, observer.write)

    def startService(self) -> None:
        super().startService()
        self.ready.addErrback(self._failed_to_start)

    def _failed_to_start(self, failure) -> None:
        failure.trap(StartupError)
        log.error("Error: {message}", message=str(failure.value))
        self.reactor.stop()


PRIVATE_PREFIX = "radx-workers-"


def _private_folder() -> str:
    """
    A folder of this server's own, for as long as it runs: in shared
    memory where there is some. Its name holds the supervisor's pid: the
    folders of supervisors that were killed (and could not remove theirs)
    are removed here, once their pid runs nothing.
    """
    where = SHARED_MEMORY if os.path.isdir(SHARED_MEMORY) and os.access(SHARED_MEMORY, os.W_OK) else tempfile.gettempdir()
    _remove_abandoned(where)
    return tempfile.mkdtemp(prefix=f"{PRIVATE_PREFIX}{os.getpid()}-", dir=where)


def _remove_abandoned(where: str) -> None:
    try:
        names = os.listdir(where)
    except OSError:
        return
    for name in names:
        pid = name[len(PRIVATE_PREFIX) :].split("-", 1)[0]
        if name.startswith(PRIVATE_PREFIX) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            shutil.rmtree(os.path.join(where, name), ignore_errors=True)
