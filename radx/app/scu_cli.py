# -*- test-case-name: tests.test_scu_cli,tests.test_scu_tls -*-
"""`radx dicom echo` and `radx dicom store`: the sending side, on the same reactor as the server."""

from __future__ import annotations

import os
import sys
import time

from twisted.python import usage

from radx.app import flag_values as values
from radx.app.client_config import ECHO_FLAGS, STORE_FLAGS, ClientTLS, EchoConfig, Peer, StoreConfig
from radx.app.config import part_from
from radx.app.options import CommandOptions
from radx.app.startup import resume_collector, without_tls
from radx.dimse.status import describe_status, is_failure
from radx.scu.config import RequestorConfig

# Exit statuses (documented in docs/usage.rst).
EXIT_OK = 0
EXIT_FAILED = 1  # an operation answered with a failure status, or a file was not stored
EXIT_USAGE = 1  # a wrong flag or value: 1, as for radx dicom scp and every radx command
EXIT_REJECTED = 3
EXIT_NO_ASSOCIATION = 4  # no connection, an abort, or a timeout


class ClientOptions(CommandOptions):
    """What echo's and store's options share: TLS's flags checked, and the peer and association they describe."""

    def __init__(self) -> None:
        super().__init__()
        # What positionals say of the peer (echo's HOST and PORT), typed.
        self._peer: dict = {}
        # Set by postOptions: the whole parsed, typed.
        self.config = None

    def _check_tls(self) -> None:
        """Any --tls-* flag turns TLS on; a client certificate needs its key and the key its certificate."""
        if (self["tls-cert"] is None) != (self["tls-key"] is None):
            raise usage.UsageError("--tls-cert and --tls-key go together")
        if any(self[flag] is not None for flag in ("tls-ca", "tls-cert", "tls-server-name")):
            self["tls"] = True
        if self["tls-server-name"] == "":
            raise usage.UsageError("--tls-server-name: a name, not nothing")

    def _parts(self) -> dict:
        """The peer and the association, typed."""
        tls = part_from(ClientTLS, self.flags, self) if self["tls"] else None
        return {
            "peer": part_from(Peer, self.flags, self, tls=tls, **self._peer),
            "association": part_from(RequestorConfig, self.flags, self),
        }


class EchoOptions(ClientOptions):
    """radx dicom echo HOST [PORT] [flags]"""

    longdesc = "Open an association, send C-ECHO (Verification), print the status and round-trip time."
    flags = ECHO_FLAGS

    def getSynopsis(self) -> str:
        return "Usage: radx dicom echo HOST [PORT] [flags]"

    def parseArgs(self, host, port=None) -> None:
        self._peer = {"host": host}
        if port is not None:
            self._peer["port"] = _positional_port(port)

    def postOptions(self) -> None:
        self._check_tls()
        # Parsed: from here on, the command reads this, typed, and never the options.
        self.config = self.configuration()

    def configuration(self) -> EchoConfig:
        return part_from(EchoConfig, self.flags, self, **self._parts())


class StoreOptions(ClientOptions):
    """radx dicom store FILE... | --dir DIR [flags]"""

    longdesc = (
        "Send DICOM Part 10 files with C-STORE, their data sets exactly as stored, in their own"
        " SOP classes and transfer syntaxes."
    )
    flags = STORE_FLAGS

    def __init__(self) -> None:
        super().__init__()
        self._files: tuple[str, ...] = ()

    def getSynopsis(self) -> str:
        return "Usage: radx dicom store FILE... | --dir DIR [flags]"

    def parseArgs(self, *files) -> None:
        self._files = files

    def postOptions(self) -> None:
        if not self._files and self["dir"] is None:
            raise usage.UsageError("name files to send, or a folder with --dir")
        if self["dir"] is not None and not os.path.isdir(self["dir"]):
            raise usage.UsageError(f"--dir: {self['dir']!r} is not a folder")
        if self["recursive"] and self["dir"] is None:
            raise usage.UsageError("--recursive goes with --dir")
        self._check_tls()
        # Parsed: from here on, the command reads this, typed, and never the options.
        self.config = self.configuration()

    def configuration(self) -> StoreConfig:
        return part_from(StoreConfig, self.flags, self, files=self._files, **self._parts())


def _endpoint(peer: Peer, timeout: float, reactor, stderr):
    """The client endpoint of ``peer``, TLS when asked for; None (said on ``stderr``) when a TLS file is unusable."""
    from radx.scu.association import client_endpoint

    tls_options = None
    if peer.tls is not None:
        from radx.tls import TLSConfigurationError, client_options

        try:
            tls_options = client_options(peer.tls.server_name or peer.host, peer.tls.ca, peer.tls.certificate, peer.tls.key)
        except TLSConfigurationError as error:
            _write(stderr, f"Error: {error}\n")
            return None
    return client_endpoint(reactor, peer.host, peer.port, timeout, tls_options)


def _positional_port(port: str) -> int:
    try:
        return values.port(port)
    except ValueError:
        raise usage.UsageError(f"PORT: {port!r} is not a port number") from None


def _parse(options: CommandOptions, arguments: list[str], command: str) -> int | None:
    """Parse; an exit status when there is nothing more to do."""
    try:
        options.parseOptions(arguments)
    except usage.UsageError as error:
        sys.stderr.write(f"Error: {error}\n\n{options.getSynopsis()}\n")
        sys.stderr.write(f"Run 'radx dicom {command} --help' for the flags.\n")
        return EXIT_USAGE
    except SystemExit as exit:
        # --help prints and exits with 0.
        return exit.code or 0
    return None


def _write(stream, text: str) -> None:
    try:
        stream.write(text)
        stream.flush()
    except OSError:
        pass


def _run_reactor(reactor, start) -> int:
    """Run ``start()`` (a Deferred of an exit status) on the reactor until it fires."""
    from twisted.internet import defer
    from twisted.internet.error import ReactorNotRunning

    outcome = []

    def begin():
        d = defer.maybeDeferred(start)

        def done(result):
            outcome.append(result)
            try:
                reactor.stop()
            except ReactorNotRunning:
                pass  # already stopping: Ctrl+C or SIGTERM

        d.addBoth(done)

    reactor.callWhenRunning(resume_collector)
    reactor.callWhenRunning(begin)
    reactor.run()
    result = outcome[0] if outcome else EXIT_NO_ASSOCIATION
    if not isinstance(result, int):
        _write(sys.stderr, f"Error: {result.getErrorMessage() if hasattr(result, 'getErrorMessage') else result}\n")
        return EXIT_NO_ASSOCIATION
    return result


def _association_exit(error) -> int:
    from radx.scu.association import AssociationAborted, AssociationRejected

    if isinstance(error, AssociationRejected):
        return EXIT_REJECTED
    if isinstance(error, AssociationAborted):
        return EXIT_NO_ASSOCIATION
    return EXIT_FAILED  # associated, but the Verification context was not accepted


# echo ------------------------------------------------------------------------


def run_echo(config: EchoConfig, reactor=None, stdout=None) -> int:
    if reactor is None:
        from twisted.internet import reactor
    from radx.scu.association import AssociationError
    from radx.scu.echo import echo

    stdout = stdout or sys.stdout
    association = config.association
    endpoint = _endpoint(config.peer, association.timeout, reactor, sys.stderr)
    if endpoint is None:
        return EXIT_USAGE
    host, port, called = config.peer.host, config.peer.port, association.called_ae_title
    where = f"{called}@[{host}]:{port}" if ":" in host else f"{called}@{host}:{port}"
    failed = []

    def show(result):
        if is_failure(result.status):
            failed.append(result)
        text = "Success" if result.status == 0 else describe_status(result.status)
        _write(stdout, f"C-ECHO to {where}: {text} ({result.seconds * 1e3:.1f} ms)\n")

    def start():
        d = echo(
            endpoint,
            reactor,
            called,
            association.calling_ae_title,
            count=config.count,
            timeout=association.timeout,
            maximum_length=association.maximum_length,
            on_result=show,
        )
        d.addCallback(lambda _: EXIT_FAILED if failed else EXIT_OK)

        def association_failed(failure):
            failure.trap(AssociationError)
            _write(sys.stderr, f"C-ECHO to {where}: {failure.value.message}\n")
            return _association_exit(failure.value)

        return d.addErrback(association_failed)

    return _run_reactor(reactor, start)


def _command_main(options: ClientOptions, arguments: list[str], command: str, run) -> int:
    """Parse ``arguments`` for ``radx dicom COMMAND``, then ``run(options.config)``: its exit status."""
    code = _parse(options, arguments, command)
    if code is not None:
        return code
    if options.config.peer.tls is None:
        without_tls()
    return run(options.config)


def echo_main(arguments: list[str]) -> int:
    return _command_main(EchoOptions(), arguments, "echo", run_echo)


# store -----------------------------------------------------------------------


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


class Progress:
    """A one-line progress bar (files, bytes, rate), redrawn at most ten times a second."""

    WIDTH = 24
    INTERVAL = 0.1

    def __init__(self, stream, total_files: int, total_bytes: int, clock=time.monotonic) -> None:
        self.stream = stream
        self.total_files = total_files
        self.total_bytes = total_bytes
        self.clock = clock
        self.started = clock()
        self.files = 0
        self.sent = 0
        self._drawn_at = None
        self._shown = False

    def data_sent(self, size: int) -> None:
        self.sent += size
        self.draw()

    def file_done(self) -> None:
        self.files += 1
        self.draw()

    def line(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        fraction = self.sent / self.total_bytes if self.total_bytes else self.files / max(self.total_files, 1)
        filled = min(self.WIDTH, int(fraction * self.WIDTH))
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        return (
            f"[{bar}] {self.files}/{self.total_files} files"
            f"  {self.sent / 1e6:.1f}/{self.total_bytes / 1e6:.1f} MB"
            f"  {self.sent / 1e6 / elapsed:.1f} MB/s"
        )

    def draw(self, force: bool = False) -> None:
        now = self.clock()
        if not force and self._drawn_at is not None and now - self._drawn_at < self.INTERVAL:
            return
        self._drawn_at = now
        self._shown = True
        _write(self.stream, "\r" + self.line() + "\x1b[K")

    def clear(self) -> None:
        if self._shown:
            _write(self.stream, "\r\x1b[K")
            self._shown = False

    def say(self, stream, text: str) -> None:
        """Print a line above the bar."""
        self.clear()
        _write(stream, text)


def run_store(config: StoreConfig, reactor=None, stdout=None, stderr=None, tty=None) -> int:
    if reactor is None:
        from twisted.internet import reactor
    from radx.scu.sources import list_files
    from radx.scu.store import FileResult, StoreJob

    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    if tty is None:
        tty = stdout.isatty()
    association = config.association
    endpoint = _endpoint(config.peer, association.timeout, reactor, stderr)
    if endpoint is None:
        return EXIT_USAGE
    try:
        paths = list_files(config.files, config.folder, config.recursive)
    except OSError as error:
        _write(stderr, f"Error: --dir: {error.strerror}: {config.folder}\n")
        return EXIT_FAILED
    progress: Progress | None = None

    def say(stream, text):
        if progress is not None:
            progress.say(stream, text)
        else:
            _write(stream, text)

    def on_result(result):
        if not result.stored:
            say(stderr, f"FAILED {result.path}: {result.describe()}\n")
        elif result.warning:
            say(stderr, f"WARNING {result.path}: {result.describe()}\n")
        if progress is not None:
            progress.file_done()

    job = StoreJob(
        endpoint,
        reactor,
        association.called_ae_title,
        association.calling_ae_title,
        connections=config.connections,
        timeout=association.timeout,
        maximum_length=association.maximum_length,
        operations=config.operations,
        on_result=on_result,
    )
    started = time.monotonic()

    def start():
        nonlocal progress
        sources = job.read(paths)
        if tty:
            progress = Progress(stdout, len(paths), sum(s.data_set_length for s in sources))
            progress.files = len(job.results)
            job.on_data_sent = progress.data_sent
            progress.draw(force=True)
        return job.send(sources).addCallback(lambda _: EXIT_OK)

    # Ctrl+C: the peer is told with an A-ABORT, rather than left with half an instance.
    reactor.addSystemEventTrigger("before", "shutdown", job.abort, "interrupted")
    finished = _run_reactor(reactor, start) == EXIT_OK
    if progress is not None:
        progress.clear()
    elapsed = time.monotonic() - started
    results = job.results
    if not finished:
        answered = {r.path for r in results}
        for path in paths:
            if path not in answered:
                job.results.append(FileResult(path, reason="not sent: interrupted"))
        _write(stderr, f"Interrupted: {len(paths) - len(answered)} files not sent or not answered\n")
    if job.gave_up is not None:
        _write(stderr, f"Gave up: {job.gave_up}\n")
    # A file counts as sent once its C-STORE-RQ went out; the others (not
    # DICOM, unreadable, refused context, no association left) were not.
    sent = [r for r in results if r.sent]
    succeeded = sum(1 for r in sent if r.stored)
    warned = sum(1 for r in sent if r.warning)
    failed = len(sent) - succeeded
    not_sent = len(results) - len(sent)
    size = sum(r.size for r in sent)
    summary = (
        f"Sent {len(sent)} file{'' if len(sent) == 1 else 's'} ({_megabytes(size)}) in {elapsed:.1f} s:"
        f" {succeeded} succeeded"
    )
    if warned:
        summary += f" ({warned} with warnings)"
    summary += f", {failed} failed"
    if not_sent:
        summary += f", {not_sent} not sent"
    _write(stdout, summary + "\n")
    if finished and job.association_errors and not job.associated:
        # Not one association: rejected (3), or no connection, a failed TLS handshake, an abort (4).
        return _association_exit(job.association_errors[0])
    return EXIT_FAILED if failed or not_sent else EXIT_OK


def store_main(arguments: list[str]) -> int:
    return _command_main(StoreOptions(), arguments, "store", run_store)
