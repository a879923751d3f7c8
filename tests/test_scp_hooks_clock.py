"""The reactor's side of hooks on a task.Clock, with a fake process reactor: timers, concurrency, timeouts, output bounds."""

from __future__ import annotations

import os
import sys

from twisted.internet import task
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from radx.events.command import HookSettings, parse_command
from radx.scp.factory import Statistics
from radx.scp.hooks import LINE_BURST, MAX_LINE, ServerEvents, run_outcome


class FakeProcess:
    def __init__(self, protocol, executable, argv, env):
        self.protocol, self.executable, self.argv, self.env = protocol, executable, argv, env
        self.signals = []
        self.stdin_closed = False
        protocol.makeConnection(self)

    def closeStdin(self):
        self.stdin_closed = True

    def signalProcess(self, signal):
        self.signals.append(signal)

    def end(self, code: int = 0, signal=None, pipes_closed: bool = True):
        reason = ProcessDone(0) if code == 0 and signal is None else ProcessTerminated(code, signal)
        self.reason = Failure(reason)
        self.protocol.processExited(self.reason)
        if pipes_closed:
            self.loseConnection()

    def loseConnection(self):
        self.protocol.processEnded(self.reason)


class ProcessClock(task.Clock):
    """A Clock whose spawnProcess records the children it is asked for."""

    def __init__(self):
        super().__init__()
        self.processes: list[FakeProcess] = []

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)

    # Set to an exception: the next spawnProcess raises it, as for a program gone since the start.
    refuse = None

    def spawnProcess(self, protocol, executable, args=(), env=None, path=None, uid=None, gid=None, usePTY=0, childFDs=None):
        if self.refuse is not None:
            raise self.refuse
        process = FakeProcess(protocol, executable, list(args), env)
        self.processes.append(process)
        return process


class FakeWriter:
    transfer_syntax_uid = "1.2.840.10008.1.2.1"
    sop_class_uid = "1.2.840.10008.5.1.4.1.1.2"

    def __init__(self, sop):
        self.sop_instance_uid = sop


class FakeStored:
    def __init__(self, path):
        self.path = path


class ClockTests(SynchronousTestCase):
    def setUp(self):
        self.output = os.path.abspath(self.mktemp())
        self.clock = ProcessClock()
        self.clock.advance(1_000_000)
        self.stats = Statistics(hooks_succeeded=0, hook_failures=0)
        self.logged = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)
        self.uids = {}
        self.patch(sys.modules["radx.scp.hooks"], "_study_and_series", lambda writer, path: self.uids[path])

    def events(self, threadpool=None, **settings) -> ServerEvents:
        commands = tuple(parse_command(kind, settings.pop(kind)) for kind in ("store", "series", "study") if kind in settings)
        events = ServerEvents(
            HookSettings(commands=commands, **settings),
            self.output,
            organize=True,
            fsync=False,
            dir_mode=0o700,
            reactor=self.clock,
            threadpool=threadpool,
            stats=self.stats,
        )
        events.open()
        events.start()
        self.addCleanup(events.journal.close)
        return events

    def receive(self, events, n, study="1.2.3", series="1.2.3.4", calling="MOD", answer=True):
        path = os.path.join(self.output, study, series, f"{series}.{n}.dcm")
        self.uids[path] = (study, series)
        events.record(FakeWriter(f"{series}.{n}"), FakeStored(path), calling, "RADX-SCP", "127.0.0.1:4000")
        if answer:
            events.instance_answered(path)
        return path

    def messages(self, text):
        return [e for e in self.logged if text in e.get("log_format", "")]

    def test_store_hook_after_the_answer(self):
        """Recorded in the storage thread, the hook starts only once the Success is sent."""
        events = self.events(store="/bin/echo #f #a #r")
        path = self.receive(events, 1, answer=False)
        self.assertEqual(self.clock.processes, [])
        events.instance_answered(path)
        [process] = self.clock.processes
        self.assertEqual(process.executable, "/bin/echo")
        self.assertEqual(process.argv, ["/bin/echo", "1.2.3.4.1.dcm", "MOD", "127.0.0.1"])
        self.assertEqual(process.env["RADX_HOOK"], "store")
        self.assertEqual(len(process.env["RADX_HOOK_ID"]), 32)
        self.assertTrue(process.stdin_closed)
        process.end(0)
        self.assertEqual(self.stats.hooks_succeeded, 1)
        self.assertEqual(events.journal.pending(), [])

    def test_study_over_its_quiet_period(self):
        """Series then study hooks run after their quiet periods; an instance during one restarts it."""
        events = self.events(series="/bin/echo series #{SeriesInstanceUID} #{count}", study="/bin/echo study #p #{count}",
                             series_timeout=10.0, study_timeout=30.0)
        self.receive(events, 1)
        self.clock.advance(9)
        self.receive(events, 2, series="1.2.3.5")
        self.clock.advance(9.9)
        self.assertEqual([p.argv[1:] for p in self.clock.processes], [["series", "1.2.3.4", "1"]])
        self.clock.advance(0.1)
        self.assertEqual([p.argv[1:] for p in self.clock.processes][1:], [["series", "1.2.3.5", "1"]])
        self.clock.advance(29.9 - 10)
        self.assertEqual(len(self.clock.processes), 2)
        self.clock.advance(0.1)
        self.assertEqual(self.clock.processes[2].argv[1:], ["study", os.path.join(self.output, "1.2.3"), "2"])
        # Nothing left to wake for: the delayed calls are the hooks' timeouts.
        self.assertIsNone(events._timer)
        self.assertEqual(len(self.clock.getDelayedCalls()), 3)

    def test_two_studies_apart(self):
        events = self.events(study="/bin/echo #{StudyInstanceUID}", study_timeout=5.0)
        self.receive(events, 1, study="1.1")
        self.receive(events, 1, study="2.2", series="2.2.1")
        self.clock.advance(5)
        self.assertEqual(sorted(p.argv[1] for p in self.clock.processes), ["1.1", "2.2"])

    def test_concurrency(self):
        """Past --exec-concurrency, hooks wait their turn."""
        events = self.events(store="/bin/echo #f", concurrency=2)
        for n in range(5):
            self.receive(events, n)
        self.assertEqual(len(self.clock.processes), 2)
        self.clock.processes[0].end(0)
        self.assertEqual(len(self.clock.processes), 3)
        for process in self.clock.processes[1:]:
            process.end(0)
        self.assertEqual(len(self.clock.processes), 5)

    def test_timeout_kills(self):
        """A hook past --exec-timeout is killed, logged, counted as failed, and done: it does not run again."""
        events = self.events(store="/bin/echo", timeout=3.0)
        self.receive(events, 1)
        [process] = self.clock.processes
        self.clock.advance(2.9)
        self.assertEqual(process.signals, [])
        self.clock.advance(0.1)
        self.assertEqual(process.signals, ["KILL"])
        process.end(signal=9)
        self.assertEqual(self.stats.hook_failures, 1)
        self.assertEqual(len(self.messages("ran past --exec-timeout")), 1)
        self.assertEqual(events.journal.pending(), [])

    def test_pipes_held_open(self):
        """A hook that exits while a program it started holds its output ends its run soon after, killed or not."""
        events = self.events(store="/bin/echo", timeout=3.0)
        self.receive(events, 1)
        self.receive(events, 2)
        first, second = self.clock.processes
        first.end(0, pipes_closed=False)
        self.assertEqual(self.stats.hooks_succeeded, 0)
        self.clock.advance(1.0)
        self.assertEqual(self.stats.hooks_succeeded, 1)
        self.clock.advance(2.0)
        self.assertEqual(second.signals, ["KILL"])
        second.end(signal=9, pipes_closed=False)
        self.clock.advance(1.0)
        self.assertEqual(self.stats.hook_failures, 1)
        self.assertEqual(events.journal.pending(), [])

    def test_journal_unwritable_no_success(self):
        """An instance the journal cannot record fails, as a failed write: no Success whose hook could be lost."""
        from radx.storage.errors import WriteFailed

        events = self.events(store="/bin/echo")
        os.close(events.journal._fd)
        events.journal._fd = os.open(os.devnull, os.O_RDONLY)
        path = os.path.join(self.output, "1.2.3", "1.2.3.4", "1.dcm")
        self.uids[path] = ("1.2.3", "1.2.3.4")
        error = self.assertRaises(WriteFailed, events.record, FakeWriter("1"), FakeStored(path), "A", "B", "C")
        self.assertIn("events journal", error.message)

    def test_workers_instances_journaled_in_batches(self):
        """--workers: instances sent by workers while a batch is written go in the next one; each Deferred fires once its own is durable."""
        from radx.scp.hooks import instance_record
        from radx.testing import SteppedThreadPool

        pool = SteppedThreadPool()
        events = self.events(threadpool=pool, store="/bin/echo #f")
        batches = []
        written = events.journal.instances_stored
        self.patch(events.journal, "instances_stored", lambda instances: (batches.append(len(instances)), written(instances))[1])
        paths = [os.path.join(self.output, "1.2.3", "1.2.3.4", f"{n}.dcm") for n in range(3)]
        durable = []
        for n, path in enumerate(paths):
            self.uids[path] = ("1.2.3", "1.2.3.4")
            instance = instance_record(FakeWriter(f"1.2.3.4.{n}"), FakeStored(path), "MOD", "RADX-SCP", "127.0.0.1:4000", self.clock.seconds())
            events.record_soon(instance).addCallback(lambda _, n=n: durable.append(n))
        self.assertEqual((batches, durable), ([], []))
        pool.run_one()
        self.assertEqual((batches, durable), ([1], [0]))
        pool.run_one()
        self.assertEqual((batches, durable), ([1, 2], [0, 1, 2]))
        self.assertEqual(pool.jobs, [])
        # Each one's hook once its Success is sent, as for the storage threads' own.
        events.instance_answered(paths[1])
        [process] = self.clock.processes
        self.assertEqual(process.argv, ["/bin/echo", "1.dcm"])

    def test_workers_instance_not_journaled(self):
        from radx.scp.hooks import instance_record
        from radx.testing import ImmediateThreadPool

        events = self.events(threadpool=ImmediateThreadPool(), store="/bin/echo")
        os.close(events.journal._fd)
        events.journal._fd = os.open(os.devnull, os.O_RDONLY)
        path = os.path.join(self.output, "1.dcm")
        self.uids[path] = ("1.2.3", "1.2.3.4")
        failures = []
        events.record_soon(instance_record(FakeWriter("1"), FakeStored(path), "A", "B", "C", 0.0)).addErrback(failures.append)
        [failure] = failures
        self.assertIsInstance(failure.value, OSError)

    def test_compacted_as_it_runs(self):
        """Past COMPACT_AFTER lines, with or without hooks, the journal is written again on a storage thread: it stays small."""
        from radx.testing import ImmediateThreadPool

        self.patch(sys.modules["radx.scp.hooks"], "COMPACT_AFTER", 10)
        events = self.events(threadpool=ImmediateThreadPool(), events=os.path.join(self.output, "events.jsonl"), series_timeout=1.0, study_timeout=1.0)
        for n in range(25):
            self.receive(events, n, study=f"1.{n}", series=f"1.{n}.1")
            self.clock.advance(1.0)
        self.assertLess(events.journal.appended, 10)
        with open(events.journal.path, "rb") as journal:
            self.assertLess(journal.read().count(b"\n"), 10)
        events.lines.close()

    def test_program_gone(self):
        """A program removed since the start: the run is refused, logged, counted as failed and done; the next one starts."""
        events = self.events(store="/bin/echo")
        self.clock.refuse = FileNotFoundError(2, "No such file or directory")
        self.receive(events, 1)
        self.clock.refuse = None
        self.assertEqual(self.stats.hook_failures, 1)
        [refused] = self.messages("could not start")
        self.assertIn("No such file", refused["why"])
        self.assertEqual(events.journal.pending(), [])
        self.receive(events, 2)
        self.assertEqual(len(self.clock.processes), 1)

    def test_failure_counted(self):
        events = self.events(store="/bin/echo")
        self.receive(events, 1)
        self.clock.processes[0].end(3)
        self.assertEqual((self.stats.hooks_succeeded, self.stats.hook_failures), (0, 1))
        [failed] = self.messages("Hook {hook} failed")
        self.assertEqual(failed["status"], "exit 3")

    def test_output_bounded(self):
        """Lines cut at MAX_LINE, logged at most LINE_BURST at once, the rest counted; a line without end is cut, not kept."""
        events = self.events(store="/bin/echo")
        self.receive(events, 1)
        [process] = self.clock.processes
        process.protocol.outReceived(b"a" * (MAX_LINE * 3) + b"\nshort\n")
        process.protocol.errReceived(b"b" * (MAX_LINE * 10))
        self.assertLessEqual(len(process.protocol._err.buffer), MAX_LINE)
        process.protocol.outReceived(b"".join(b"line %d\n" % n for n in range(1000)))
        lines = self.messages("Hook {hook} {stream}")
        self.assertEqual(len(lines), LINE_BURST)
        self.assertEqual(len(lines[0]["line"]), MAX_LINE)
        self.assertEqual(lines[0]["cut"], " [cut]")
        self.assertEqual(lines[1]["line"], "short")
        self.assertEqual(lines[2]["stream"], "stderr")
        self.clock.advance(1.0)
        process.protocol.outReceived(b"later\n")
        self.assertEqual(self.messages("Hook {hook} {stream}")[-1]["line"], "later")
        process.end(0)
        [dropped] = self.messages("more lines, not logged")
        self.assertEqual(dropped["count"], 1000 + 3 - LINE_BURST)

    def test_stop_leaves_running_hooks_due(self):
        """At shutdown a running hook is asked to end, and is not done: the next start runs it."""
        events = self.events(store="/bin/echo")
        self.receive(events, 1)
        [process] = self.clock.processes
        stopped = events.stop()
        self.assertEqual(process.signals, ["TERM"])
        self.assertNoResult(stopped)
        process.end(signal=15)
        self.successResultOf(stopped)
        self.assertEqual(self.stats.hook_failures, 0)
        again = self.events(store="/bin/echo")
        self.assertEqual(len(again.journal.pending()), 1)
        self.assertEqual(self.clock.processes[1].env["RADX_HOOK_ID"], process.env["RADX_HOOK_ID"])

    def test_quiet_period_survives_restart(self):
        """A study whose quiet period ran when the server stopped completes after the next start, at its due time."""
        events = self.events(study="/bin/echo #{count}", study_timeout=30.0)
        self.receive(events, 1)
        self.receive(events, 2)
        self.successResultOf(events.stop())
        self.clock.advance(10)
        self.events(study="/bin/echo #{count}", study_timeout=30.0)
        self.clock.advance(19.9)
        self.assertEqual(self.clock.processes, [])
        self.clock.advance(0.1)
        self.assertEqual(self.clock.processes[0].argv[1:], ["2"])


class HookRunMetricsTests(SynchronousTestCase):
    """With --http, each hook run is counted in radx_hook_runs_total by its hook and one of four outcomes."""

    def test_outcomes(self):
        self.assertEqual(
            [run_outcome(*case) for case in [("exit 0", True), ("exit 3", False), ("signal 9", False),
                                             ("killed after 3 s", False), ("not started", False)]],
            ["succeeded", "failed", "failed", "timed_out", "not_started"],
        )

    def test_counted_in_the_registry(self):
        from prometheus_client import CollectorRegistry

        from radx.metrics import ServerMetrics

        case = ClockTests("test_timeout_kills")
        case.setUp()
        self.addCleanup(case.doCleanups)
        registry = CollectorRegistry()
        events = case.events(store="/bin/echo", timeout=3.0)
        events.metrics = ServerMetrics(registry, None)
        case.receive(events, 1)
        case.receive(events, 2)
        first, second = case.clock.processes
        first.end(0)
        case.clock.advance(3.0)
        second.end(signal=9)
        sample = registry.get_sample_value
        self.assertEqual(sample("radx_hook_runs_total", {"hook": "store", "outcome": "succeeded"}), 1.0)
        self.assertEqual(sample("radx_hook_runs_total", {"hook": "store", "outcome": "timed_out"}), 1.0)


class LayoutTests(SynchronousTestCase):
    def test_study_folder_only_in_organized_layout(self):
        """#p of a study is its files' grandparent with --organize's layout only; else the folder of its last file."""
        from radx.scp.factory import SCPFactory, ServerConfig
        from radx.storage.filing import Filing
        from radx.storage.layout import FLAT_LAYOUT, ORGANIZED_LAYOUT, Layout

        settings = HookSettings(commands=(parse_command("study", "/bin/echo #p"),))
        for layout, organize in [(None, True), (ORGANIZED_LAYOUT, True), (FLAT_LAYOUT, False), (Layout("{PatientID}/{SOPInstanceUID}.dcm"), False)]:
            factory = SCPFactory(ServerConfig(output_dir=self.mktemp(), filing=Filing(layout=layout), hooks=settings), task.Clock(), None)
            self.assertEqual(factory.events.organize, organize, layout)
