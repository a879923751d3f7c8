# -*- test-case-name: tests.test_app_cli -*-
"""The `radx` command: `radx dicom scp`, the foreground wrapper over the twistd service."""

from __future__ import annotations

import io
import os
import sys
import threading
from dataclasses import replace

from twisted.logger import (
    LogLevel,
    globalLogBeginner,
)
from twisted.python import threadable, usage

from radx import __version__
from radx.app.heap import keep_large_buffers_in_heap
from radx.app.interrupted import EXIT_INTERRUPTED, end_by_sigint
from radx.app.jsonlog import event_as_json
from radx.app.startup import pause_collector, resume_collector, without_tls
from radx.app.logformat import format_event, printable
from radx.app.config import ScpConfig
from radx.app.options import ScpOptions
from radx.app.signals import StopOnSignal, run_until_stopped

USAGE = """\
Usage: radx dicom scp [PORT] [flags]
       radx dicom echo HOST [PORT] [flags]
       radx dicom store FILE... | --dir DIR [flags]
       radx dicom catalogue [DIR] [flags]
       radx dicom organize DIR --output-dir OUT [flags]

Commands:
  radx dicom scp    Run a DICOM SCP server to receive DICOM files
  radx dicom echo   Test connectivity to an SCP with C-ECHO
  radx dicom store  Send DICOM files to an SCP with C-STORE
  radx dicom catalogue  Index received files into a catalogue (SQLite, PostgreSQL), query it
  radx dicom organize   File DICOM files on disk as the server files what it receives

Run 'radx dicom COMMAND --help' for its flags.
"""

_LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
}


def listen_address(bind: str | None, port: int) -> str:
    """":11112" for all interfaces, as the reference shows it; IPv6 in brackets."""
    bind = bind or ""
    if ":" in bind:
        bind = f"[{bind}]"
    return f"{bind}:{port}"


def endpoint_lines(listeners) -> str:
    """A banner line for each --listen endpoint, as given, with the address it got where it has one."""
    lines = []
    for description, port in listeners:
        address = port.getHost()
        host = getattr(address, "host", None)
        if host is not None and getattr(address, "port", None) is not None:
            bound = f"[{host}]:{address.port}" if ":" in host else f"{host}:{address.port}"
            description = f"{description} ({bound})"
        lines.append(f"  Listen Address:    {description}\n")
    return "".join(lines)


def tls_line(config: ScpConfig) -> str:
    """The banner's TLS line, or nothing without TLS."""
    tls = config.tls
    if tls is None:
        return ""
    bind = config.listening.bind
    address = listen_address(bind, config.listening.port if tls.port is None else tls.port)
    notes = []
    if tls.port is None:
        notes.append("TLS only")
    if tls.ca:
        notes.append("client certificate required")
    suffix = f" ({', '.join(notes)})" if notes else ""
    return f"  TLS Address:       {address}{suffix}\n"


def http_line(address: str | None) -> str:
    """The banner's --http line, the address as bound, or nothing without --http."""
    if not address:
        return ""
    return f"  HTTP Address:      {address} (/metrics /healthz /readyz)\n"


def banner(config: ScpConfig, listeners=(), http_address: str | None = None) -> str:
    server, listening = config.server, config.listening
    filing = server.filing
    organization = "Enabled (Study/Series/Instance)" if filing.organize else "Disabled (flat)"
    if filing.layout.fixed is None:
        organization = f"Template {filing.layout.template}"
    echo = "Enabled" if server.policy.accept_echo else "Disabled"
    port_line = f"  Listen Address:    {listen_address(listening.bind, listening.port)}\n" if listening.on_port else ""
    return (
        "✓ DICOM SCP server started\n"
        "\n"
        f"{port_line}"
        f"{endpoint_lines(listeners)}"
        f"{tls_line(config)}"
        f"  AE Title:          {server.policy.ae_title}\n"
        f"  Output Directory:  {server.output_dir}\n"
        f"  Organization:      {organization}\n"
        f"  C-ECHO:           {echo}\n"
        f"  Max Connections:   {server.max_conns}\n"
        f"{http_line(http_address)}"
        "\n"
        "Press Ctrl+C to stop the server...\n"
    )


def as_bound(config: ScpConfig, scp) -> ScpConfig:
    """The configuration with its ports as the service bound them: PORT 0 asks the system for one."""
    if scp.port is not None:
        config = replace(config, listening=replace(config.listening, port=scp.port.getHost().port))
    if scp.tls_port is not None:
        config = replace(config, tls=replace(config.tls, port=scp.tls_port.getHost().port))
    return config


def shutdown_summary(stats) -> str:
    text = (
        "\n"
        f"  C-ECHO Requests:    {stats.echo_requests}\n"
        f"  C-STORE Requests:   {stats.store_requests}\n"
        f"  Successful Stores:  {stats.stores_succeeded}\n"
    )
    if stats.catalogue_failures is not None:
        text += f"  Not Catalogued:     {stats.catalogue_failures}\n"
    if stats.hooks_succeeded is not None:
        text += f"  Hooks Succeeded:    {stats.hooks_succeeded}\n"
        text += f"  Hooks Failed:       {stats.hook_failures}\n"
    return text


class ConsoleObserver:
    """`INFO: message` lines (or JSON lines): radx's own events from the chosen level, others' warnings and worse."""

    def __init__(self, level: LogLevel, json: bool = False, reactor=None, flush_delay: float = 0.1, write=None) -> None:
        self.level = level
        if write is not None:
            # Lines to another writer (a worker's, to its supervisor), not the console.
            self.write = write
        self.json = json
        self._radx_rank = _RANK[level]
        self._other_rank = max(_RANK[level], _RANK[LogLevel.warn])
        # On the reactor thread, lines are flushed together at most
        # flush_delay after the first: one write(2) for many lines, instead
        # of one a line, which cost a busy server a tenth of its time.
        self._reactor = reactor
        self.flush_delay = flush_delay
        self._flush_call = None

    def __call__(self, event) -> None:
        level = event.get("log_level", LogLevel.info)
        namespace = event.get("log_namespace", "")
        threshold = self._radx_rank if namespace.startswith("radx") else self._other_rank
        if _RANK[level] < threshold:
            return
        if self.json:
            self.write(event_as_json(event, traceback=self.level is LogLevel.debug) + "\n")
            return
        text = format_event(event)
        failure = event.get("log_failure")
        if failure is not None and self.level is LogLevel.debug:
            text = f"{text}\n{failure.getTraceback()}"
        elif failure is not None:
            text = f"{text}: {printable(failure.getErrorMessage())}"
        self.write(f"{_PREFIX[level]}{text}\n")

    def write(self, line: str) -> None:
        """Write a line (or several) to the console: on the reactor thread, with the others of the next flush."""
        # threadable.isInIOThread(), without looking up the thread's object.
        if self._reactor is None or threadable.ioThread != threading.get_ident():
            say(line)
            return
        say(line, flush=False)
        if self._flush_call is None:
            self._flush_call = self._reactor.callLater(self.flush_delay, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        say("")


_RANK = {
    level: rank
    for rank, level in enumerate([LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical])
}
# "INFO: " and the like, before each line.
_PREFIX = {level: f"{level.name.upper()}: " for level in _RANK}


def _fail(message: str) -> int:
    sys.stderr.write(f"Error: {message}\n")
    sys.stderr.flush()
    return 1


def say(text: str, stream=None, flush: bool = True) -> None:
    """Write to the console; a console that went away must not stop the server."""
    if stream is None:
        stream = sys.stdout
    try:
        stream.write(text)
        if flush:
            stream.flush()
    except OSError:
        # The reader is gone (a closed pipe): send the rest nowhere, so that
        # neither this nor the final flush at exit fails again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


def prepare_console(stream) -> None:
    """
    The server's stdout: a console that cannot show "✓" gets a replacement,
    not a crash; and lines are buffered, as ConsoleObserver flushes them
    itself, at most its flush_delay after each. Without that, an
    environment with PYTHONUNBUFFERED (container images often set it) makes
    every log line its own write(2). A terminal stays line-buffered.
    """
    if isinstance(stream, io.TextIOWrapper):
        stream.reconfigure(errors="replace", write_through=False)


def run_scp(config: ScpConfig, reactor=None) -> int:
    """Run the SCP in the foreground until SIGINT, SIGTERM or SIGHUP; the exit status."""
    if reactor is None:
        from twisted.internet import reactor
    from radx.app.tap import StartupError, scp_service

    prepare_console(sys.stdout)
    scp = scp_service(config, reactor)
    try:
        scp.prepare()
    except StartupError as error:
        return _fail(str(error))
    # The banner shows the ports as bound.
    shown = as_bound(config, scp)
    http_address = None
    if scp.http_port is not None:
        from radx.app.web import address

        http_address = address(scp.http_port)

    json = config.log_format == "json"
    observer = ConsoleObserver(_LEVELS[config.log_level], json=json, reactor=reactor)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    # With --workers, theirs too: rendered there as here.
    scp.log_lines_to({"kind": "console", "level": config.log_level, "json": json}, observer.write)
    # With JSON logs, stdout holds JSON lines only; the banner and the
    # shutdown block go to stderr.
    console = sys.stderr if json else sys.stdout
    # A start that fails once the reactor runs (a worker that does not start): its message.
    failed: list[str] = []

    def started():
        # Inside the reactor, so that radx's SIGINT, SIGTERM and SIGHUP
        # handlers replace the reactor's before the banner invites Ctrl+C.
        StopOnSignal(reactor, scp.factory.stop_now).install()
        scp.startService()
        scp.ready.addCallbacks(lambda _: say(banner(shown, scp.listeners, http_address), console), not_started)

    def not_started(failure):
        failure.trap(StartupError)
        failed.append(str(failure.value))
        reactor.stop()

    def shutting_down():
        if not failed:
            say("\nServer shutting down...\n", console)

    run_until_stopped(reactor, scp, started, shutting_down)
    if failed:
        return _fail(failed[0])
    say(shutdown_summary(scp.factory.stats), console)
    return 0


def not_a_command(argv: list[str]) -> int:
    """``radx``, ``radx dicom``, ``--help`` or an unknown command: the usage, and the exit status."""
    words = argv[1:] if argv[:1] == ["dicom"] else argv
    if words[:1] in (["--help"], ["-h"]):
        sys.stdout.write(USAGE)
        return 0
    if words:
        command = " ".join(argv[:2]) if argv[:1] == ["dicom"] else argv[0]
        sys.stderr.write(f"Error: unknown command {command!r}\n\n")
    sys.stderr.write(USAGE)
    return 1


def main(argv: list[str] | None = None) -> int:
    # The rest of start-up (the reactor, the command's modules) without the
    # cyclic collector; it resumes once the reactor runs (radx.app.startup).
    pause_collector()
    keep_large_buffers_in_heap()
    try:
        status = _main(sys.argv[1:] if argv is None else argv)
        sys.stdout.flush()
    except BrokenPipeError:
        # Whoever read the output has gone (`radx dicom scp --help | head -1`):
        # nothing more to say to it, and no traceback about it, now or when
        # the interpreter flushes stdout on its way out.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        # Ctrl+C before the command could say what it had done: no traceback.
        sys.stderr.write("Interrupted\n")
        status = EXIT_INTERRUPTED
    finally:
        resume_collector()
    if status == EXIT_INTERRUPTED:
        # Ctrl+C stopped the command, which said where (radx dicom catalogue,
        # organize), or the line above did: end as SIGINT ends a program.
        end_by_sigint()
    return status


def _main(argv: list[str]) -> int:
    if argv[:1] in (["--version"], ["version"]):
        print(f"radx {__version__.public()}")
        return 0
    if argv[:2] in (["dicom", "echo"], ["dicom", "store"]):
        from radx.app import scu_cli

        command = scu_cli.echo_main if argv[1] == "echo" else scu_cli.store_main
        return command(argv[2:])
    if argv[:2] == ["dicom", "catalogue"]:
        from radx.app.catalogue_cli import catalogue_main

        return catalogue_main(argv[2:])
    if argv[:2] == ["dicom", "organize"]:
        from radx.app.organize_cli import organize_main

        return organize_main(argv[2:])
    if argv[:2] != ["dicom", "scp"]:
        return not_a_command(argv)
    options = ScpOptions()
    try:
        options.parseOptions(argv[2:])
    except usage.UsageError as error:
        sys.stderr.write(f"Error: {error}\n\n{options.getSynopsis()}\n")
        sys.stderr.write("Run 'radx dicom scp --help' for the flags.\n")
        return 1
    except SystemExit as exit:
        # --help and --version print and exit with 0.
        return exit.code or 0
    if options.config.tls is None:
        without_tls()
    return run_scp(options.config)


if __name__ == "__main__":
    sys.exit(main())
