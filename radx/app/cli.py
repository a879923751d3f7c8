# -*- test-case-name: tests.test_app_cli -*-
"""The `radx` command: `radx dicom scp`, the foreground wrapper over the twistd service."""

from __future__ import annotations

import errno
import sys

from twisted.internet import error as internet_error
from twisted.logger import (
    LogLevel,
    formatEvent,
    globalLogBeginner,
)
from twisted.python import usage

from radx import __version__
from radx.app.options import ScpOptions

USAGE = """\
usage: radx dicom scp [PORT] [flags]

Commands:
  radx dicom scp    Run a DICOM SCP server to receive DICOM files

Run 'radx dicom scp --help' for its flags.
"""

_LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
}


def banner(options: ScpOptions) -> str:
    organization = "Enabled (Study/Series/Instance)" if options["organize"] else "Disabled (flat)"
    echo = "Enabled" if options["accept-echo"] else "Disabled"
    return (
        "✓ DICOM SCP server started\n"
        "\n"
        f"  Listen Address:    {options['bind']}:{options['port']}\n"
        f"  AE Title:          {options['aet']}\n"
        f"  Output Directory:  {options['output-dir']}\n"
        f"  Organization:      {organization}\n"
        f"  C-ECHO:           {echo}\n"
        f"  Max Connections:   {options['max-conns']}\n"
        "\n"
        "Press Ctrl+C to stop the server...\n"
    )


def shutdown_summary(stats) -> str:
    return (
        "\n"
        f"  C-ECHO Requests:    {stats.echo_requests}\n"
        f"  C-STORE Requests:   {stats.store_requests}\n"
        f"  Successful Stores:  {stats.stores_succeeded}\n"
    )


class ConsoleObserver:
    """`INFO: message` lines: radx's own events from the chosen level, others' warnings and worse."""

    def __init__(self, stream, level: LogLevel) -> None:
        self.stream = stream
        self.level = level

    def __call__(self, event) -> None:
        level = event.get("log_level", LogLevel.info)
        namespace = event.get("log_namespace", "")
        threshold = self.level if namespace.startswith("radx") else max(self.level, LogLevel.warn, key=_rank)
        if _rank(level) < _rank(threshold):
            return
        text = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None and self.level is LogLevel.debug:
            text = f"{text}\n{failure.getTraceback()}"
        elif failure is not None:
            text = f"{text}: {failure.getErrorMessage()}"
        self.stream.write(f"{level.name.upper()}: {text}\n")
        self.stream.flush()


def _rank(level: LogLevel) -> int:
    return [LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical].index(level)


def _fail(message: str) -> int:
    sys.stderr.write(f"Error: {message}\n")
    sys.stderr.flush()
    return 1


def _listen_error_message(failure_value) -> str:
    socket_error = getattr(failure_value, "socketError", None)
    code = getattr(socket_error, "errno", None)
    if code == errno.EADDRINUSE:
        return "address already in use"
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if socket_error is not None:
        return str(getattr(socket_error, "strerror", socket_error)).lower()
    return str(failure_value)


def run_scp(options: ScpOptions, reactor=None) -> int:
    """Run the SCP in the foreground until SIGINT or SIGTERM; the exit status."""
    if reactor is None:
        from twisted.internet import reactor
    from radx.app.tap import ScpService

    scp = ScpService(options, reactor)
    try:
        scp.prepare_output_dir()
    except PermissionError:
        return _fail("failed to create output directory: permission denied")
    except OSError as error:
        return _fail(f"failed to create output directory: {(error.strerror or str(error)).lower()}")

    listening = scp.listen()
    outcome = []
    listening.addBoth(outcome.append)
    if not outcome:
        # Every endpoint radx uses listens synchronously.
        return _fail("failed to start server: listening did not complete")
    if isinstance(outcome[0], Exception) or hasattr(outcome[0], "value"):
        value = getattr(outcome[0], "value", outcome[0])
        if isinstance(value, internet_error.CannotListenError):
            return _fail(f"failed to start server: {_listen_error_message(value)}")
        return _fail(f"failed to start server: {value}")

    globalLogBeginner.beginLoggingTo(
        [ConsoleObserver(sys.stdout, _LEVELS[options["log-level"]])],
        redirectStandardIO=False,
    )
    scp.startService()
    sys.stdout.write(banner(options))
    sys.stdout.flush()

    def shutting_down():
        sys.stdout.write("\nServer shutting down...\n")
        sys.stdout.flush()
        return scp.stopService()

    reactor.addSystemEventTrigger("before", "shutdown", shutting_down)
    reactor.run()
    sys.stdout.write(shutdown_summary(scp.factory.stats))
    sys.stdout.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] in (["--version"], ["version"]):
        print(f"radx {__version__.public()}")
        return 0
    if argv[:2] != ["dicom", "scp"]:
        sys.stderr.write(USAGE)
        return 0 if argv[:1] in (["--help"], ["-h"]) else 2
    options = ScpOptions()
    try:
        options.parseOptions(argv[2:])
    except usage.UsageError as error:
        sys.stderr.write(f"Error: {error}\n\nusage: radx dicom scp {options.synopsis}\n")
        sys.stderr.write("Run 'radx dicom scp --help' for the flags.\n")
        return 1
    except SystemExit as exit:
        # --help and --version print and exit with 0.
        return exit.code or 0
    return run_scp(options)


if __name__ == "__main__":
    sys.exit(main())
