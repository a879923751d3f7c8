# -*- test-case-name: tests.test_app_tap -*-
"""`twistd radx-scp`: the Options and the makeService the plugin names."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys
import time

from twisted.application import service
from twisted.internet import defer, endpoints, task
from twisted.internet.threads import deferToThreadPool
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from radx.app.heap import keep_large_buffers_in_heap, release_free_memory
from radx.app.jsonlog import JsonLogObserver
from radx.app.logformat import ClassicTextObserver
from radx.app.openfiles import descriptors_needed, raise_open_file_limit
from radx.app.config import ScpConfig, TwistdLog, twistd_log_from
from radx.app.options import PROXIED_PREFIX, ScpOptions, is_proxied
from radx.app.signals import StopOnSignal
from radx.scp.factory import SCPFactory
from radx.storage.store import clean_incoming
from radx.storage.writable import check_writable

Options = ScpOptions


class StartupError(Exception):
    """The server cannot start; the message is what follows "Error: "."""


class TwistdStartupError(Exception):
    """A StartupError as twistd passes it on: its line reads ``Error: ...``, as radx dicom scp's does."""

    # traceback.format_exception_only names a builtin exception without
    # its module: "Error: failed to start server: ...".
    __module__ = "builtins"
    __qualname__ = "Error"


def print_alone_at_exit(error: BaseException) -> None:
    """If ``error`` ends the process uncaught, print ``Error: ...`` instead of its traceback."""
    previous = sys.excepthook

    def excepthook(kind, value, traceback):
        if value is error:
            # twistd sends sys.stderr to its log; this goes to the console.
            stream = sys.__stderr__ or sys.stderr
            stream.write(f"Error: {value}\n")
            stream.flush()
        else:
            previous(kind, value, traceback)

    sys.excepthook = excepthook


def describe_os_error(error: OSError) -> str:
    """The reference's words for the errors it names, the system's for others."""
    if error.errno == errno.EADDRINUSE:
        return "address already in use"
    if error.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return (error.strerror or str(error)).lower()

log = Logger(namespace="radx.scp")

# See ScpService.prepare_output_dir.
FILE_CLOCK_MARGIN_NS = 50_000_000


def server_endpoint(reactor, port: int, bind: str | None):
    """TCP on ``bind`` (an IPv4 or IPv6 address), or on every interface."""
    if bind and ":" in bind:
        return endpoints.TCP6ServerEndpoint(reactor, port, interface=bind)
    if bind:
        return endpoints.TCP4ServerEndpoint(reactor, port, interface=bind)
    # "::" listens on IPv6 and, dual-stack, IPv4 too where the host has
    # IPv6 and does not make IPv6 sockets IPv6-only.
    if _has_ipv6() and not _ipv6_only_by_default():
        return endpoints.TCP6ServerEndpoint(reactor, port, interface="::")
    return endpoints.TCP4ServerEndpoint(reactor, port)


def listen_endpoint(reactor, description: str, given: str | None = None):
    """The server endpoint a --listen string describes (Twisted's endpoint syntax), or StartupError naming ``given``."""
    try:
        endpoint = endpoints.serverFromString(reactor, description)
    except Exception as error:
        if description.startswith("systemd:") and isinstance(error, (IndexError, KeyError)):
            # Twisted takes a descriptor only with its name, as systemd's .socket units give them.
            raise StartupError(
                f"--listen {given or description}: systemd passed no such socket (LISTEN_FDS, LISTEN_PID and"
                " LISTEN_FDNAMES, as a .socket unit sets them; systemd-socket-activate needs --fdname)"
            ) from None
        raise StartupError(f"--listen {given or description}: {error or type(error).__name__}") from None
    check_adopted_family(endpoint, given or description)
    return endpoint


_FAMILIES = {socket.AF_INET: "INET", socket.AF_INET6: "INET6", socket.AF_UNIX: "UNIX"}


def check_adopted_family(endpoint, description: str) -> None:
    """
    A socket passed by systemd must be of the domain --listen names, or StartupError.

    Twisted takes the domain on trust: an IPv6 socket (systemd's for
    ``ListenStream=11112``, on a host with IPv6) adopted as INET gives
    every peer a meaningless address, which --allow-ip would judge.
    """
    if not isinstance(endpoint, endpoints.AdoptedStreamServerEndpoint):
        return
    probe = socket.socket(fileno=os.dup(endpoint.fileno))
    try:
        actual = probe.family
    finally:
        probe.close()
    if actual != endpoint.addressFamily:
        named = _FAMILIES.get(endpoint.addressFamily, str(endpoint.addressFamily))
        found = _FAMILIES.get(actual, str(actual))
        raise StartupError(
            f"--listen {description}: the socket passed is domain={found}, not domain={named}"
            " (systemd's ListenStream=PORT is INET6 where the host has IPv6; ListenStream=0.0.0.0:PORT is INET)"
        )


def _ipv6_only_by_default() -> bool:
    try:
        with open("/proc/sys/net/ipv6/bindv6only") as setting:
            return setting.read().strip() == "1"
    except OSError:
        return False


def _has_ipv6() -> bool:
    import socket

    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        return False
    try:
        probe.bind(("::", 0))
        return True
    except OSError:
        return False
    finally:
        probe.close()


class _ThreadPoolService(service.Service):
    def __init__(self, pool: ThreadPool) -> None:
        self.pool = pool

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        self.pool.stop()


class ScpService(service.MultiService):
    """The SCP: a listening port, a threadpool for the file system, a statistics timer."""

    factory_class = SCPFactory

    def __init__(self, config: ScpConfig, reactor=None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.config = config
        self.threadpool = ThreadPool(minthreads=1, maxthreads=config.threads, name="radx-storage")
        _ThreadPoolService(self.threadpool).setServiceParent(self)
        self.factory = self.factory_class(config.server, reactor, self.threadpool)
        self.factory.release_memory = release_free_memory
        self.port = None
        # The TLS port when it is not PORT (--tls-port).
        self.tls_port = None
        # (description, port) of each --listen endpoint.
        self.listeners: list = []
        self.listening = False
        self.output_ready = False
        # --http's listening port, once prepare has opened it.
        self.http_port = None
        # The catalogue's catch-up with the output folder, started with the service.
        self.catching_up: defer.Deferred = defer.succeed(None)
        self._statistics = task.LoopingCall(self.log_statistics)
        self._statistics.clock = reactor
        # Fires once the server serves, after startService (with --workers,
        # once every worker has started), or fails with a StartupError.
        self.ready: defer.Deferred = defer.succeed(None)

    def prepare_output_dir(self) -> None:
        """Create the output folder, prove it takes files, clean what a crash left in its temporary folder.

        A folder radx creates gets --dir-mode; an existing one keeps its
        mode. A symbolic link in place of the temporary folder stops the
        start. Run as the user the server runs as: under ``twistd --uid``,
        after the switch.
        """
        existed = os.path.isdir(self.config.server.output_dir)
        try:
            stale = clean_incoming(self.factory.tree)
        except OSError as error:
            # An existing folder this user may not enter or write in.
            denied = existed and error.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
            what = "output directory is not writable" if denied else "failed to create output directory"
            raise StartupError(f"{what}: {describe_os_error(error)}") from error
        try:
            folders = self.factory.tree.folders()
            check_writable(folders.root, folders.incoming, self.config.server.file_mode)
        except OSError as error:
            raise StartupError(f"output directory is not writable: {describe_os_error(error)}") from error
        events = self.factory.events
        if events is not None and not events.opened:
            try:
                events.open()
            except OSError as error:
                raise StartupError(f"cannot open the events journal or --events file: {describe_os_error(error)}: {error.filename}") from error
        self.output_ready = True
        for name in stale:
            log.warn("Removed a partial file left by an earlier run name={name}", name=name)
        # Files modified from now on are this run's, which it records
        # itself. A file's time comes from the kernel's coarse clock, up to
        # a tick (10 ms at most) behind this one: the margin keeps a file
        # stored at once from looking older. No file of an earlier run is
        # that recent: a Python start-up alone takes longer.
        self.started_ns = time.time_ns() - FILE_CLOCK_MARGIN_NS

    def prepare(self) -> None:
        """Listen, then prepare the output folder, or raise StartupError.

        In that order, so that a port radx cannot have leaves no new folder
        behind; a folder that fails closes the ports again.
        """
        if not self.listening:
            self.listen()
        if not self.output_ready:
            try:
                self.prepare_output_dir()
            except StartupError:
                self.close_ports()
                raise
        if self.config.http and self.http_port is None:
            self.serve_http()

    def serve_http(self) -> None:
        """
        --http: /metrics, /healthz and /readyz, counted from here on. A child
        service holds the port, so that it closes after the drain: /readyz
        says 503 while associations finish.
        """
        from radx.app import web

        registry, refresh = self.metrics_registry()
        readiness = web.Readiness(self.reactor, self.threadpool, self.factory, self.config.min_free_space)
        try:
            self.http_port = web.listen_http(self.reactor, self.config.http, web.make_site(registry, readiness, refresh))
        except web.HTTPError as error:
            self.factory.metrics = None
            self.close_ports()
            raise StartupError(str(error)) from None
        web.ListeningService(self.http_port).setServiceParent(self)
        log.info("HTTP listening address={address} paths=/metrics,/healthz,/readyz", address=web.address(self.http_port))

    def log_lines_to(self, render: dict, write) -> None:
        """Where log lines go (``write``), and how they are made (radx.app.logrelay): the supervisor's business, with --workers."""

    def metrics_registry(self):
        """The registry /metrics shows, with the factory's metrics in it; and what refreshes it first (None)."""
        from prometheus_client import CollectorRegistry

        from radx.metrics import instrument

        registry = CollectorRegistry()
        instrument(self.factory, registry)
        return registry, None

    def close_ports(self):
        """Stop listening on every port; a Deferred that fires once they are closed."""
        ports = [port for port in (self.port, self.tls_port) if port is not None]
        ports += [port for _, port in self.listeners]
        self.port = self.tls_port = None
        self.listeners = []
        return defer.gatherResults([defer.maybeDeferred(port.stopListening) for port in ports])

    def tls_factory(self):
        """The factory of the TLS listener (PS3.15 B.9), or StartupError for unusable files."""
        from radx.scp.secure import TLSServerFactory
        from radx.tls import TLSConfigurationError, server_options

        tls = self.config.tls
        try:
            certificate_options = server_options(tls.certificate, tls.key, tls.ca)
        except TLSConfigurationError as error:
            raise StartupError(str(error)) from None
        return TLSServerFactory(certificate_options, self.factory)

    def check_open_files(self) -> None:
        """Raise the open-file limit to what --max-pending and --max-conns need, or warn that it is short."""
        config = self.config.server
        needed = descriptors_needed(config.max_pending, config.max_conns, config.policy.maximum_operations_invoked)
        before, after = raise_open_file_limit(needed)
        if after < needed:
            log.warn(
                "The open-file limit is {limit}, under the {needed} that --max-pending {pending} and"
                " --max-conns {conns} may need: past it, connections are refused before radx sees them",
                limit=after,
                needed=needed,
                pending=config.max_pending,
                conns=config.max_conns,
            )
        elif after > before:
            log.info("Raised the open-file limit from {before} to {after}", before=before, after=after)

    def listen(self) -> None:
        """Listen now, or raise StartupError (TCP and systemd endpoints listen synchronously).

        Without TLS, PORT is plain TCP; with --tls-cert and --tls-port, PORT
        is plain and --tls-port TLS; with --tls-cert alone, PORT is TLS only.
        Each --listen endpoint is plain; with --listen, PORT only if given.
        """
        listening = self.config.listening
        self.check_open_files()
        self.listening = True
        try:
            if listening.on_port:
                self._listen_on_port()
            for description in listening.endpoints:
                self.listeners.append((description, self._listen_on(description)))
        except StartupError:
            self.close_ports()
            raise

    def _listen_on_port(self) -> None:
        port = self.config.listening.port
        if self.config.tls is None:
            self.port = self._listen_port(port, self.factory)
            return
        tls = self.tls_factory()
        if self.config.tls.port is None:
            self.port = self._listen_port(port, tls)
            return
        self.port = self._listen_port(port, self.factory)
        self.tls_port = self._listen_port(self.config.tls.port, tls)

    def _listen_on(self, description: str):
        """A --listen endpoint; behind ``haproxy:``, the PROXY header is read from --trusted-proxy only."""
        if not is_proxied(description):
            return self._listen(listen_endpoint(self.reactor, description), self.factory)
        from radx.scp.proxied import ProxiedFactory

        endpoint = listen_endpoint(self.reactor, description[len(PROXIED_PREFIX) :], description)
        listening, server = self.config.listening, self.config.server
        proxied = ProxiedFactory(self.factory, listening.trusted_proxies, self.reactor, server.artim_timeout)
        return self._listen(endpoint, proxied)

    def _listen_port(self, port_number: int, factory):
        return self._listen(server_endpoint(self.reactor, port_number, self.config.listening.bind), factory)

    def _listen(self, endpoint, factory):
        outcome: list = []
        endpoint.listen(factory).addBoth(outcome.append)
        if not outcome:
            raise StartupError("failed to start server: listening did not complete")
        if isinstance(outcome[0], Failure):
            error = outcome[0].value
            socket_error = getattr(error, "socketError", None)
            if isinstance(socket_error, OSError):
                raise StartupError(f"failed to start server: {describe_os_error(socket_error)}")
            raise StartupError(f"failed to start server: {error}")
        return outcome[0]

    def privilegedStartService(self) -> None:
        # twistd calls this before it drops privileges (--uid/--gid), so a
        # port below 1024 can be opened; the output folder waits for
        # startService, to be made and checked as the user radx runs as.
        # A StartupError raised in either ends twistd with its message,
        # before the reactor runs.
        if not self.listening:
            self.listen()
        super().privilegedStartService()

    def startService(self) -> None:
        self.prepare()
        super().startService()
        # The first statistics line comes one interval after start.
        self._statistics.start(self.config.stats_interval, now=False)
        if self.factory.catalogue is not None:
            self.catching_up = self.catch_up()
        if self.factory.events is not None:
            self.factory.events.start()

    def catch_up(self) -> defer.Deferred:
        """
        Index, on the storage threadpool, the files an earlier run stored
        but did not record (its catalogue failed, or it stopped between a
        rename and the row), and those changed while radx was not running.
        The reactor goes on meanwhile: associations are served at once.
        """
        return self.factory.catch_up(self.started_ns)

    @defer.inlineCallbacks
    def stopService(self):
        self.factory.accepting = False
        if self._statistics.running:
            self._statistics.stop()
        yield self.close_ports()
        catalogue = self.factory.catalogue
        if catalogue is not None:
            catalogue.stopping = True
        yield self.factory.shut_down()
        if self.factory.events is not None:
            # After the associations: each Success sent has had its hook started.
            yield self.factory.events.stop()
        if catalogue is not None and self.threadpool.started:
            # On a storage thread, once the instances in progress are done
            # (closing checkpoints the WAL into the database: disk work).
            yield self.catching_up
            yield deferToThreadPool(self.reactor, self.threadpool, catalogue.close)
        yield super().stopService()

    def log_statistics(self) -> None:
        stats = self.factory.stats
        text = "Server statistics echo_count={echo} store_count={store} store_failures={failures}"
        fields = {"echo": stats.echo_requests, "store": stats.store_requests, "failures": stats.store_failures}
        if stats.catalogue_failures is not None:
            text += " catalogue_failures={catalogue_failures}"
            fields["catalogue_failures"] = stats.catalogue_failures
        if stats.hooks_succeeded is not None:
            text += " hooks_succeeded={hooks_succeeded} hook_failures={hook_failures}"
            fields["hooks_succeeded"] = stats.hooks_succeeded
            fields["hook_failures"] = stats.hook_failures
        log.info(text, **fields)


class _LoggingService(ScpService):
    """Under twistd: the application's log observer writes JSON lines, or text lines formatted the fast way."""

    def __init__(self, config: ScpConfig, twistd_log: TwistdLog, reactor=None) -> None:
        super().__init__(config, reactor)
        self.twistd_log = twistd_log

    def setServiceParent(self, parent) -> None:
        super().setServiceParent(parent)
        # twistd's AppLogger uses an ILogObserver component of the
        # application, unless --logger names another observer; with
        # --syslog, twistd's syslog observer stays.
        set_component = getattr(parent, "setComponent", None)
        if set_component is not None and not self.twistd_log.syslog:
            write = _twistd_log_writer(self.twistd_log)
            json = self.config.log_format == "json"
            set_component(ILogObserver, JsonLogObserver(write) if json else ClassicTextObserver(write))

    def privilegedStartService(self) -> None:
        with self._startup_error_in_one_line():
            super().privilegedStartService()

    def startService(self) -> None:
        with self._startup_error_in_one_line():
            super().startService()
        # Once the reactor runs, after it installed its own handlers.
        self.reactor.callWhenRunning(StopOnSignal(self.reactor, self.factory.stop_now).install)

    @contextlib.contextmanager
    def _startup_error_in_one_line(self):
        """
        A StartupError ends twistd as it ends ``radx dicom scp``: ``Error:
        ...`` and status 1, not a traceback.

        twistd handles an exception from starting the application itself:
        it removes its PID file, hands a daemon's error to the parent it
        started from (which prints ``An error has occurred:`` and the
        exception's line, and exits 1), and lets it end the process. So
        the error is raised again as L{TwistdStartupError}, whose line is
        ``Error: ...``, and in the foreground the interpreter prints that
        line alone.
        """
        try:
            yield
        except StartupError as error:
            failure = TwistdStartupError(str(error))
            # A daemon's console is its parent's; its log gets the line.
            if not self.twistd_log.nodaemon:
                log.error("Error: {message}", message=str(error))
            print_alone_at_exit(failure)
            raise failure from None


def _twistd_log_writer(twistd_log: TwistdLog):
    """Where twistd would log (--logfile, or stdout with -n, else twistd.log): a write function."""
    from twisted.python import logfile

    name = twistd_log.logfile
    if name == "-" or (not name and twistd_log.nodaemon):
        target = sys.stdout
    else:
        target = logfile.LogFile.fromFullPath(name or "twistd.log")

    def write(text):
        target.write(text)
        target.flush()

    return write


def scp_service(config: ScpConfig, reactor=None) -> ScpService:
    """The server in this process; with --workers 2 or more, the supervisor of its worker processes."""
    if config.workers > 1:
        from radx.app.supervisor import SupervisorService

        return SupervisorService(config, reactor)
    return ScpService(config, reactor)


def makeService(options: ScpOptions) -> ScpService:
    """twistd's call, once it has parsed its own flags and radx-scp's: the service, on their typed configuration."""
    keep_large_buffers_in_heap()
    if options.config.workers > 1:
        from radx.app.supervisor import TwistdSupervisorService

        return TwistdSupervisorService(options.config, twistd_log_from(options.parent))
    return _LoggingService(options.config, twistd_log_from(options.parent))
