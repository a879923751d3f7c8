"""`twistd radx-scp`: the plugin's options, foreground and daemon runs, and makeService in process.

The subprocess tests listen on a free ephemeral port, talk only to
127.0.0.1, run in a temporary folder, bound every wait, and kill what
they started if a test stops half-way.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import time

from twisted.application.service import IService, MultiService
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from pydicom.data import get_testdata_file
from twisted.trial.unittest import SynchronousTestCase

from radx.app import tap
from radx.app.heap import release_free_memory
from radx.app.options import ScpOptions
from tests.interop import DCMTK_ENV, require_dcmtk, reserved_port
from tests.test_app_cli import as_nobody, handles_signal, help_entries, radx_command, searchable_by_all

START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0

ECHO_LINE = "C-ECHO request received calling_ae=ECHOSCU count=1"


def twistd_command(*arguments: str) -> list[str]:
    """twistd, on the interpreter running the tests (`python -m twisted` is `twist`, not twistd)."""
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", *arguments]


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped yet has ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(predicate, timeout: float, what: str, describe=lambda: ""):
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout}s\n{describe()}")
        time.sleep(0.05)


# A line of twistd's log: its timestamp, then [namespace#level] or [system].
_TWISTD_LOG_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[(?P<source>[^\]]*)\] (?P<text>.*)")


def split_twistd_output(output: str) -> tuple[list[str], list[str]]:
    """twistd's log lines, and the other lines: those written straight to the console, as radx's start-up error is."""
    logged, written = [], []
    for line in output.splitlines():
        (logged if _TWISTD_LOG_LINE.fullmatch(line) else written).append(line)
    return logged, written


def logs_an_error(line: str) -> bool:
    """Whether a twistd log line reports an error: logged at level error or critical, or a legacy "Unhandled Error"."""
    found = _TWISTD_LOG_LINE.fullmatch(line)
    return found["source"].endswith(("#error", "#critical")) or found["text"].startswith("Unhandled Error")


def read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as stream:
            return stream.read()
    except FileNotFoundError:
        return ""


class TwistdTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.port = reserved_port(self)

    def echo(self, aet: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [require_dcmtk("echoscu"), "-aec", aet, "127.0.0.1", str(self.port)],
            env=DCMTK_ENV,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def foreground(self, *arguments: str):
        """`twistd -n ...` in this test's folder; its output in a file."""
        output = os.path.join(self.folder, "twistd.out")
        with open(output, "wb") as out:
            process = subprocess.Popen(
                twistd_command("-n", *arguments),
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

        def kill():
            if process.poll() is None:
                process.kill()
                process.wait(STOP_TIMEOUT)

        self.addCleanup(kill)
        return process, output


class HelpTests(SynchronousTestCase):
    def test_same_flags_as_radx_dicom_scp(self):
        folder = self.mktemp()
        os.makedirs(folder)
        twistd = subprocess.run(
            twistd_command("radx-scp", "--help"), cwd=folder, capture_output=True, text=True, timeout=START_TIMEOUT
        )
        radx = subprocess.run(
            radx_command("dicom", "scp", "--help"), cwd=folder, capture_output=True, text=True, timeout=START_TIMEOUT
        )
        self.assertEqual(twistd.returncode, 0, twistd.stderr)
        self.assertEqual(radx.returncode, 0, radx.stderr)
        twistd_entries, radx_entries = help_entries(twistd.stdout), help_entries(radx.stdout)
        self.assertEqual(set(twistd_entries), set(radx_entries))
        # Same defaults too, and they are the reference's flags.
        self.assertEqual(twistd_entries, radx_entries)
        self.assertTrue(
            {"--aet", "--output-dir", "--max-pdu", "--max-conns", "--organize", "--accept-echo", "--sop-class",
             "--layout", "--on-duplicate"}
            <= set(twistd_entries)
        )


class TwistdOutputTests(SynchronousTestCase):
    """What ForegroundTests tell apart in twistd's output: its log lines by their shape, not by what a path holds."""

    OUTPUT = (
        "2026-01-02T03:04:05+0000 [twisted.scripts._twistd_unix.UnixAppLogger#info] twistd 26.10.0"
        " (/work/wt/errors/.venv/bin/python 3.11.7) starting up.\n"
        "2026-01-02T03:04:05+0000 [-] SCPFactory starting on 11112\n"
        "Error: failed to start server: address already in use\n"
    )

    def test_log_lines_apart_from_what_radx_wrote(self):
        logged, written = split_twistd_output(self.OUTPUT)
        self.assertEqual(len(logged), 2)
        self.assertEqual(written, ["Error: failed to start server: address already in use"])
        self.assertEqual([line for line in logged if logs_an_error(line)], [])

    def test_errors_logged_are_found(self):
        for line in (
            "2026-01-02T03:04:05-0500 [-] Unhandled Error",
            "2026-01-02T03:04:05+0000 [radx.app.tap#critical] the service did not start",
            "2026-01-02T03:04:05+0000 [radx.scp.factory#error] something failed",
        ):
            logged, written = split_twistd_output(line)
            self.assertEqual((written, [logs_an_error(each) for each in logged]), ([], [True]), line)


class ForegroundTests(TwistdTestCase):
    def test_runs_answers_echo_and_stops_on_sigterm(self):
        """twistd -n radx-scp --aet X --output-dir D PORT"""
        output_dir = os.path.join(self.folder, "received")
        process, output = self.foreground("radx-scp", "--aet", "TAP-SCP", "--output-dir", output_dir, str(self.port))
        wait_until(
            lambda: listening(self.port) or process.poll() is not None,
            START_TIMEOUT,
            "listening port",
            lambda: read(output),
        )
        self.assertIsNone(process.poll(), read(output))
        done = self.echo("TAP-SCP")
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr + read(output))
        wait_until(lambda: ECHO_LINE in read(output), 10, "C-ECHO log line", lambda: read(output))
        self.assertTrue(os.path.isdir(output_dir))

        process.send_signal(signal.SIGTERM)
        # twistd shuts down cleanly, then re-raises the signal that stopped
        # it (Twisted's choice, so that the exit status reports it).
        self.assertIn(process.wait(STOP_TIMEOUT), (0, -signal.SIGTERM), read(output))
        self.assertIn("Server Shut Down.", read(output))
        self.assertFalse(listening(self.port))

    def test_sighup_stops_as_sigterm_does(self):
        """
        twistd leaves SIGHUP at the system's default, which ends the process
        on the spot; radx makes it a graceful stop, and twistd then ends by
        that signal, as it does after SIGTERM.
        """
        process, output = self.foreground("radx-scp", "--bind", "127.0.0.1", "--output-dir", "received", str(self.port))
        wait_until(
            lambda: handles_signal(process.pid, signal.SIGHUP) or process.poll() is not None,
            START_TIMEOUT,
            "a SIGHUP handler",
            lambda: read(output),
        )
        process.send_signal(signal.SIGHUP)
        self.assertEqual(process.wait(STOP_TIMEOUT), -signal.SIGHUP, read(output))
        self.assertIn("Received SIGHUP, shutting down.", read(output))
        self.assertIn("Server Shut Down.", read(output))

    def as_nobody(self, *arguments: str):
        """`twistd -n --uid nobody ... radx-scp --bind 127.0.0.1 ARGUMENTS PORT`, from a folder nobody can reach."""
        as_nobody([])  # needs root and setpriv, as the user switch does
        searchable_by_all(self.folder)
        return self.foreground(
            "--uid", "nobody", "--gid", "nogroup", "--pidfile", "",
            "radx-scp", "--bind", "127.0.0.1", *arguments, str(self.port),
        )

    def test_uid_makes_the_output_dir_as_that_user(self):
        """The folder is made, and checked, after twistd switched user: the files can be written."""
        data = os.path.join(self.folder, "data")
        os.makedirs(data)
        os.chown(data, pwd.getpwnam("nobody").pw_uid, -1)
        output_dir = os.path.join(data, "received")
        process, output = self.as_nobody("--output-dir", output_dir)
        # twistd binds the port as root, before the switch; the folder is
        # made after it, as the service starts: wait for both.
        wait_until(
            lambda: (listening(self.port) and os.path.isdir(output_dir)) or process.poll() is not None,
            START_TIMEOUT,
            "listening port and output folder",
            lambda: read(output),
        )
        self.assertIsNone(process.poll(), read(output))
        self.assertEqual(os.stat(output_dir).st_uid, pwd.getpwnam("nobody").pw_uid)
        image = get_testdata_file("CT_small.dcm")
        done = subprocess.run(
            [require_dcmtk("storescu"), "-aec", "RADX-SCP", "127.0.0.1", str(self.port), image],
            env=DCMTK_ENV, capture_output=True, text=True, timeout=30,
        )
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        wait_until(lambda: "Stored DICOM file" in read(output), 10, "a stored file", lambda: read(output))
        process.send_signal(signal.SIGTERM)
        process.wait(STOP_TIMEOUT)

    def test_uid_refuses_an_output_dir_that_user_cannot_write(self):
        output_dir = os.path.join(self.folder, "root-only")
        os.makedirs(output_dir, mode=0o700)
        process, output = self.as_nobody("--output-dir", output_dir)
        self.assertEqual(process.wait(START_TIMEOUT), 1, read(output))
        self.assertStartupError(read(output), "output directory is not writable: permission denied")
        self.assertFalse(listening(self.port))

    def test_port_in_use_ends_twistd(self):
        """A port radx cannot listen on ends twistd with a failure, as it ends `radx dicom scp`."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            self.port = taken.getsockname()[1]
            process, output = self.foreground(
                "radx-scp", "--bind", "127.0.0.1", "--output-dir", "received", str(self.port)
            )
            try:
                code = process.wait(5)
            except subprocess.TimeoutExpired:
                self.fail(f"twistd still runs, listening nowhere\n{read(output)}")
            self.assertEqual(code, 1, read(output))
            self.assertStartupError(read(output), "failed to start server: address already in use")

    def assertStartupError(self, output: str, message: str) -> None:
        """One line, the words of `radx dicom scp`: no traceback, and nothing twistd logged is an error."""
        self.assertNotIn("Traceback", output)
        logged, written = split_twistd_output(output)
        self.assertEqual(written, [f"Error: {message}"], output)
        self.assertEqual([line for line in logged if logs_an_error(line)], [], output)

    def test_startup_error_in_one_line(self):
        with open(os.path.join(self.folder, "a-file"), "w"):
            pass
        process, output = self.foreground("radx-scp", "--bind", "127.0.0.1", "--output-dir", "a-file", str(self.port))
        self.assertEqual(process.wait(START_TIMEOUT), 1, read(output))
        self.assertStartupError(read(output), "failed to create output directory: not a directory")
        self.assertFalse(os.path.exists(os.path.join(self.folder, "twistd.pid")), read(output))

    def test_port_in_use_fails_the_daemon_start(self):
        """Daemonizing: the parent reports the child's failure and exits non-zero."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            self.port = taken.getsockname()[1]
            pidfile = os.path.join(self.folder, "radx.pid")
            started = subprocess.run(
                twistd_command(
                    "--pidfile", pidfile, "--logfile", os.path.join(self.folder, "radx.log"),
                    "radx-scp", "--bind", "127.0.0.1", "--output-dir", "received", str(self.port),
                ),
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=30,
            )
        self.assertEqual(started.returncode, 1)
        # twistd's parent prints the daemon's error line in its own words.
        self.assertEqual(
            started.stdout + started.stderr,
            "An error has occurred: b'Error: failed to start server: address already in use'\n"
            "Please look at log file for more information.\n",
        )
        # The daemon removes its PID file after it told the parent.
        wait_until(lambda: not os.path.exists(pidfile), 10, "PID file removal")
        log = read(os.path.join(self.folder, "radx.log"))
        self.assertIn("Error: failed to start server: address already in use", log)
        self.assertNotIn("Traceback", log)


class DaemonTests(TwistdTestCase):
    def test_daemonizes_and_stops_on_sigterm(self):
        """twistd --pidfile P --logfile L radx-scp ... PORT: the command returns, the daemon serves."""
        pidfile = os.path.join(self.folder, "radx.pid")
        logfile = os.path.join(self.folder, "radx.log")
        output_dir = os.path.join(self.folder, "received")
        started = subprocess.run(
            twistd_command(
                "--pidfile", pidfile, "--logfile", logfile,
                "radx-scp", "--aet", "DAEMON-SCP", "--output-dir", output_dir, str(self.port),
            ),
            cwd=self.folder,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
        )
        self.assertEqual(started.returncode, 0, started.stdout + started.stderr)

        def pid_in_file():
            text = read(pidfile).strip()
            return int(text) if text.isdigit() else None

        pid = wait_until(pid_in_file, START_TIMEOUT, "pidfile", lambda: read(logfile))

        def kill():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)

        self.addCleanup(kill)
        self.assertTrue(alive(pid))
        self.assertNotEqual(pid, os.getpid())
        wait_until(lambda: listening(self.port) or not alive(pid), START_TIMEOUT, "listening port", lambda: read(logfile))
        self.assertTrue(alive(pid), read(logfile))

        done = self.echo("DAEMON-SCP")
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr + read(logfile))
        wait_until(lambda: ECHO_LINE in read(logfile), 10, "C-ECHO log line", lambda: read(logfile))

        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not alive(pid), STOP_TIMEOUT, "daemon exit", lambda: read(logfile))
        wait_until(lambda: not os.path.exists(pidfile), 5, "pidfile removal", lambda: read(logfile))
        self.assertIn("Server Shut Down.", read(logfile))


def parse(*arguments: str) -> ScpOptions:
    options = tap.Options()
    options.parseOptions(list(arguments))
    return options


class MakeServiceTests(SynchronousTestCase):
    """makeService and ScpService, in process, on a memory reactor."""

    def test_make_service(self):
        service = tap.makeService(
            parse("--aet", "MADE-SCP", "--max-conns", "7", "--max-pending", "9", "--output-dir", self.mktemp(), "4104")
        )
        self.assertTrue(IService.providedBy(service))
        self.assertIsInstance(service, MultiService)
        self.assertEqual(service.factory.config.policy.ae_title, "MADE-SCP")
        self.assertEqual(service.factory.config.max_conns, 7)
        self.assertEqual(service.factory.config.max_pending, 9)
        self.assertIs(service.factory.release_memory, release_free_memory)
        self.assertFalse(service.running)

    def test_make_service_with_filing_rules(self):
        """twistd radx-scp --layout ... --on-duplicate keep: the factory files by them."""
        template = "{PatientID}/{SOPInstanceUID}.dcm"
        service = tap.makeService(parse("--layout", template, "--on-duplicate", "keep", "--output-dir", self.mktemp()))
        self.assertEqual(service.factory.config.filing.layout.template, template)
        self.assertEqual(service.factory.config.filing.on_duplicate, "keep")

    def test_accept_any_called_aet(self):
        """Off by default: the called AE title is checked; the flag reaches the negotiation policy."""
        for arguments, expected in (((), False), (("--accept-any-called-aet",), True)):
            service = tap.makeService(parse("--output-dir", self.mktemp(), *arguments))
            self.assertIs(service.factory.config.policy.accept_any_called_ae_title, expected)

    def start(self, *arguments: str):
        reactor = MemoryReactorClock()
        output_dir = os.path.abspath(self.mktemp())
        service = tap.ScpService(parse("--output-dir", output_dir, "--stats-interval", "5", *arguments).config, reactor)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        self.assertTrue(os.path.isdir(output_dir))
        return reactor, service

    def assertStops(self, reactor, service) -> None:
        self.successResultOf(service.stopService())
        self.assertFalse(service.running)
        self.assertEqual(reactor.getDelayedCalls(), [])
        self.assertFalse(service.threadpool.started)

    def test_listens_on_configured_port_and_interface(self):
        reactor, service = self.start("--bind", "127.0.0.1", "4104")
        [(port, factory, _, interface)] = reactor.tcpServers
        self.assertEqual((port, interface), (4104, "127.0.0.1"))
        self.assertIs(factory, service.factory)
        self.assertTrue(service.threadpool.started)
        self.assertStops(reactor, service)

    def test_listens_on_ipv6_interface(self):
        reactor, service = self.start("--bind", "::1", "4105")
        [(port, _, _, interface)] = reactor.tcpServers
        self.assertEqual((port, interface), (4105, "::1"))
        self.assertStops(reactor, service)

    def test_statistics_with_catalogue_failures(self):
        """With --catalogue, the statistics line counts the instances stored but not recorded."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        service = tap.ScpService(parse("--catalogue", self.mktemp()).config, MemoryReactorClock())
        service.factory.stats.catalogue_failures = 3
        service.log_statistics()
        [line] = [formatEvent(e) for e in events if "Server statistics" in e.get("log_format", "")]
        self.assertEqual(line, "Server statistics echo_count=0 store_count=0 store_failures=0 catalogue_failures=3")

    def test_statistics_every_interval(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        reactor, service = self.start("--bind", "127.0.0.1", "4106")

        def statistics():
            return [e for e in events if "Server statistics" in e.get("log_format", "")]

        reactor.advance(4.9)
        self.assertEqual(statistics(), [])
        reactor.advance(0.1)
        reactor.advance(5)
        lines = statistics()
        self.assertEqual(len(lines), 2)
        self.assertEqual(
            formatEvent(lines[0]), "Server statistics echo_count=0 store_count=0 store_failures=0"
        )
        self.assertStops(reactor, service)
        reactor.advance(60)
        self.assertEqual(len(statistics()), 2)
