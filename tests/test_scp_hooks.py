"""Hooks and events with a real server on loopback: storescu and radx dicom store as senders, real child processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

from twisted.internet import defer, reactor, utils
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from radx.app import tap
from radx.app.options import ScpOptions
from tests import dicomfiles
from tests.hooktools import runs, write_hook
from tests.interop import DCMTK_ENV, require_dcmtk
from tests.test_app_cli import RadxServer


class HookServerCase(TestCase):
    """`radx dicom scp --exec-on-...` in this process, on the real reactor; hooks are real children."""

    timeout = 120

    def setUp(self):
        self.storescu_path = require_dcmtk("storescu")
        self.base = os.path.abspath(self.mktemp())
        self.output = os.path.join(self.base, "received")
        os.makedirs(self.base)
        self.hook, self.record = write_hook(os.path.join(self.base, "hook"))
        self.log = []
        self._waiting = []
        globalLogPublisher.addObserver(self._observe)
        self.addCleanup(globalLogPublisher.removeObserver, self._observe)

    def _observe(self, event):
        self.log.append(event)
        for condition, waiter in list(self._waiting):
            if condition():
                self._waiting.remove((condition, waiter))
                reactor.callLater(0, waiter.callback, None)

    def until(self, condition) -> defer.Deferred:
        """Fires once ``condition()`` holds, looked at after each log event (a hook's end is one)."""
        waiter = defer.Deferred()
        if condition():
            waiter.callback(None)
        else:
            self._waiting.append((condition, waiter))
        return waiter

    def lines(self, text: str) -> list[str]:
        return [formatEvent(e) for e in self.log if text in e.get("log_format", "")]

    def finished(self) -> int:
        return len(self.lines("Hook {hook} finished")) + len(self.lines("Hook {hook} failed")) + len(self.lines("Hook {hook} killed"))

    def start(self, *flags: str) -> tap.ScpService:
        options = ScpOptions()
        options.parseOptions(["--output-dir", self.output, "--bind", "127.0.0.1", *flags, "0"])
        service = tap.ScpService(options.config, reactor)
        service.prepare_output_dir()
        service.listen()
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        self.service = service
        self.port = service.port.getHost().port
        return service

    def storescu(self, *arguments: str, aet: str = "HOOK-SCU"):
        return utils.getProcessOutputAndValue(
            self.storescu_path, ["-aet", aet, "-aec", "RADX-SCP", "127.0.0.1", str(self.port), *arguments], env=DCMTK_ENV
        )

    def radx_store(self, *arguments: str, aet: str = "RADX-SCU"):
        return utils.getProcessOutputAndValue(
            sys.executable,
            ["-m", "radx", "dicom", "store", "--host", "127.0.0.1", "--port", str(self.port), "--calling-ae", aet, *arguments],
            env=os.environ,
        )


class HookServerTests(HookServerCase):
    def test_journal_that_cannot_be_opened_stops_the_start(self):
        """A journal folder that is not one: radx does not start, and says why, rather than lose hooks."""
        os.makedirs(self.output)
        with open(os.path.join(self.output, ".radx-events"), "w"):
            pass
        options = ScpOptions()
        options.parseOptions(["--output-dir", self.output, "--exec-on-store", "true", "0"])
        service = tap.ScpService(options.config, reactor)
        error = self.assertRaises(tap.StartupError, service.prepare_output_dir)
        self.assertIn("cannot open the events journal", str(error))

    @defer.inlineCallbacks
    def test_called_ae_title_is_the_one_the_peer_called(self):
        """With --accept-any-called-aet, #c is the title the association called (DCMTK's ANY-SCP), not --aet."""
        [source] = dicomfiles.write_ct_series(self.mktemp(), 1, rows=16, columns=16, seed=5)
        self.start("--accept-any-called-aet", "--exec-on-store", f"{self.hook} #c #a")
        out, err, code = yield utils.getProcessOutputAndValue(
            self.storescu_path, ["-aet", "HOOK-SCU", "127.0.0.1", str(self.port), source], env=DCMTK_ENV
        )
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        yield self.until(lambda: self.finished() == 1)
        [run] = runs(self.record)
        self.assertEqual(run["argv"], ["ANY-SCP", "HOOK-SCU"])

    @defer.inlineCallbacks
    def test_store_hook_per_instance_from_storescu(self):
        """Each instance storescu sends runs the hook once, after it is stored, with DCMTK's placeholders and the named ones."""
        sources = dicomfiles.write_ct_series(self.mktemp(), 3, rows=16, columns=16, seed=3)
        self.start("--exec-on-store", f"{self.hook} #p #f #a #c #r #{{StudyInstanceUID}} #{{SeriesInstanceUID}}"
                   " #{SOPInstanceUID} #{TransferSyntaxUID} #{count} #{path} #{id} ##")
        out, err, code = yield self.storescu(*sources)
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        yield self.until(lambda: self.finished() == 3)
        found = sorted((run["argv"] for run in runs(self.record)), key=lambda argv: argv[7])
        expected = []
        for source in sources:
            study, series, sop = dicomfiles.instance_uids(source)
            path = os.path.join(self.output, study, series, f"{sop}.dcm")
            self.assertTrue(os.path.exists(path))
            expected.append([os.path.dirname(path), f"{sop}.dcm", "HOOK-SCU", "RADX-SCP", "127.0.0.1", study, series, sop,
                             "1.2.840.10008.1.2.1", "1", path])
        self.assertEqual([argv[:11] for argv in found], sorted(expected, key=lambda argv: argv[7]))
        # The identifier: as the environment has it, 32 hex digits; and a literal "#".
        for run in runs(self.record):
            self.assertEqual(run["argv"][11], run["id"])
            self.assertEqual(len(run["id"]), 32)
            self.assertEqual(run["argv"][12], "#")
            self.assertEqual(run["kind"], "store")
        self.assertEqual(self.service.factory.stats.hooks_succeeded, 3)

    @defer.inlineCallbacks
    def test_one_study_over_two_associations_and_two_senders(self):
        """
        One series of a study from storescu, the other from radx dicom
        store: one study, complete once, with every instance counted; each
        series once; each instance's store hook once, with its sender's AE
        title. (The study's quiet period spans the start of the second
        sender; each series comes over one association.)
        """
        sources = dicomfiles.write_ct_series(self.mktemp(), 6, rows=16, columns=16, series=2, seed=5)
        study = dicomfiles.instance_uids(sources[0])[0]
        self.start(
            "--exec-on-store", f"{self.hook} store #a #{{SOPInstanceUID}}",
            "--exec-on-series", f"{self.hook} series #{{SeriesInstanceUID}} #{{count}} #p",
            "--exec-on-study", f"{self.hook} study #{{StudyInstanceUID}} #{{count}} #p",
            "--series-timeout", "1", "--study-timeout", "5",
        )
        first, second = sources[0::2], sources[1::2]
        out, err, code = yield self.storescu(*first, aet="FIRST-SCU")
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        out, err, code = yield self.radx_store(*second, aet="SECOND-SCU")
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        yield self.until(lambda: any(run["argv"][0] == "study" for run in runs(self.record)) and self.finished() == 9)
        found = runs(self.record)
        store = sorted(run["argv"][1:] for run in found if run["argv"][0] == "store")
        expected = sorted([["FIRST-SCU", dicomfiles.instance_uids(s)[2]] for s in first]
                          + [["SECOND-SCU", dicomfiles.instance_uids(s)[2]] for s in second])
        self.assertEqual(store, expected)
        series = sorted(run["argv"][1:] for run in found if run["argv"][0] == "series")
        self.assertEqual([(uid, count) for uid, count, _ in series], sorted((uid, "3") for uid in {dicomfiles.instance_uids(s)[1] for s in sources}))
        for uid, _, folder in series:
            self.assertEqual(folder, os.path.join(self.output, study, uid))
        self.assertEqual([run["argv"][1:] for run in found if run["argv"][0] == "study"], [[study, "6", os.path.join(self.output, study)]])

    @defer.inlineCallbacks
    def test_failing_hanging_and_chattering_hooks(self):
        """Real children: one exits 3, one hangs past --exec-timeout and is killed, one prints a lot; every instance is stored and answered."""
        sources = dicomfiles.write_ct_series(self.mktemp(), 3, rows=16, columns=16, seed=7)
        self.start("--exec-on-store", f"{self.hook} #{{SOPInstanceUID}}", "--exec-timeout", "1")
        for behaviour, source in zip(("fail", "hang", "chatter"), sources):
            self.patch(os, "environ", dict(os.environ, RADX_TEST_HOOK=behaviour))
            out, err, code = yield self.storescu(source)
            self.assertEqual(code, 0, (out + err).decode(errors="replace"))
            self.assertNotIn(b"E:", out + err)
        yield self.until(lambda: self.finished() == 3)
        stats = self.service.factory.stats
        self.assertEqual((stats.stores_succeeded, stats.hooks_succeeded, stats.hook_failures), (3, 1, 2))
        self.assertEqual(len(self.lines("ran past --exec-timeout")), 1)
        [failed] = [e for e in self.log if "Hook {hook} failed" in e.get("log_format", "")]
        self.assertEqual(failed["status"], "exit 3")
        self.assertIn("failing on purpose", [e["line"] for e in self.log if e.get("stream") == "stderr"])
        printed = [e for e in self.log if e.get("stream") == "stdout"]
        self.assertLessEqual(max(len(e["line"]) for e in printed), 1024)
        self.assertTrue(self.lines("more lines, not logged"))
        self.assertEqual(len(runs(self.record)), 3)
        self.service.log_statistics()
        [statistics] = self.lines("Server statistics")
        self.assertIn("store_count=3 store_failures=0 hooks_succeeded=1 hook_failures=2", statistics)

    @defer.inlineCallbacks
    def test_timeout_kills_a_shell_with_a_child(self):
        """sh -c 'sleep ...': the shell killed past --exec-timeout, its run ends though its sleep holds the output."""
        source = dicomfiles.write_ct_series(self.mktemp(), 1, rows=8, columns=8, seed=8)[0]
        self.start("--exec-on-store", "sh -c 'sleep 300; true'", "--exec-timeout", "0.5")
        out, err, code = yield self.storescu(source)
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        yield self.until(lambda: self.finished() == 1)
        self.assertEqual(len(self.lines("ran past --exec-timeout")), 1)
        self.assertEqual(self.service.factory.stats.hook_failures, 1)

    @defer.inlineCallbacks
    def test_hostile_ae_titles_and_uids(self):
        """
        AE titles and Study and Series UIDs full of shell syntax reach the
        hook as they are, each inside its one argument; no command runs that
        the operator did not write.
        """
        canary = os.path.join(self.base, "pwned")
        titles = ["$(touch pwned)", "`touch pwned`", ";touch pwned;", "'\"&|<>*?~!{}[]", "a b #p #{id}"]
        uids = ["1.2.3;touch pwned", "$(touch pwned)", "1.2\n3 `touch pwned`", "' \" ; |"]
        self.start("--exec-on-store", f"{self.hook} #a <#{{StudyInstanceUID}}> #{{SeriesInstanceUID}} #p",
                   "--exec-on-study", f"sh -c 'echo \"$1\" >> {self.base}/study-args' sh #{{StudyInstanceUID}}",
                   "--study-timeout", "0.5")
        expected = []
        for n, (title, uid) in enumerate(zip(titles, uids + ["1.2.4"])):
            source = dicomfiles.write_ct_series(self.mktemp(), 1, rows=8, columns=8, study_uid=uid, series_uid=uid + " s", seed=n)[0]
            out, err, code = yield self.radx_store(source, aet=title)
            self.assertEqual(code, 0, (out + err).decode(errors="replace"))
            expected.append([title, f"<{uid}>", uid + " s"])
        yield self.until(lambda: self.finished() == 2 * len(titles))
        found = sorted(run["argv"][:3] for run in runs(self.record))
        self.assertEqual(found, sorted(expected))
        self.assertFalse(os.path.exists(canary))
        self.assertFalse(os.path.exists(os.path.join(os.getcwd(), "pwned")))
        with open(os.path.join(self.base, "study-args")) as study_args:
            written = study_args.read()
        for uid in uids:
            self.assertIn(uid, written)


class KilledServerTests(SynchronousTestCase):
    """`radx dicom scp` killed with SIGKILL between a Success and its hook's end: the next start runs it, once."""

    def setUp(self):
        self.storescu = require_dcmtk("storescu")
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.output = os.path.join(self.base, "received")
        self.hook, self.record = write_hook(os.path.join(self.base, "hook"))

    def start(self) -> tuple[RadxServer, int]:
        server = RadxServer(
            self,
            ["--output-dir", self.output, "--bind", "127.0.0.1",
             "--exec-on-store", f"{self.hook} store #{{SOPInstanceUID}}",
             "--exec-on-study", f"{self.hook} study #{{count}}", "--study-timeout", "5", "0"],
            self.base,
        )
        server.wait_ready()
        [port] = re.findall(r"Listen Address:    127\.0\.0\.1:(\d+)\n", server.stdout())
        return server, int(port)

    def test_hook_runs_once_more_after_kill(self):
        fifo = os.path.join(self.base, "fifo")
        os.mkfifo(fifo)
        source = dicomfiles.write_ct_series(self.mktemp(), 1, rows=8, columns=8, seed=9)[0]
        sop = dicomfiles.instance_uids(source)[2]

        # The first run's store hook records itself, then waits on the fifo.
        # In the real environment (os.putenv), which the server's process inherits.
        os.environ["RADX_TEST_HOOK"] = f"wait:{fifo}"
        self.addCleanup(os.environ.pop, "RADX_TEST_HOOK", None)
        server, port = self.start()
        stored = subprocess.run([self.storescu, "-aec", "RADX-SCP", "127.0.0.1", str(port), source],
                                env=DCMTK_ENV, capture_output=True, timeout=60)
        self.assertEqual(stored.returncode, 0, stored)
        server.wait_for(lambda text: runs(self.record), what="the hook's start")
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        # Let the orphaned hook go: a writer on the fifo (opened once the hook reads it) ends its wait.
        os.close(os.open(fifo, os.O_WRONLY))
        [first] = runs(self.record)
        self.assertEqual(first["argv"], ["store", sop])

        # The next start: the store hook again, with the same identifier, and the study once its quiet period ends.
        del os.environ["RADX_TEST_HOOK"]
        server, port = self.start()
        server.wait_for(lambda text: "Hook exec-on-study finished" in text and "Hook exec-on-store finished" in text,
                        timeout=60, what="both hooks' end")
        self.assertIn("Events journal read: 1 hooks due from an earlier run, 1 quiet periods running", server.stdout())
        self.assertEqual(server.stop(), 0)
        self.assertIn("  Hooks Succeeded:    2\n", server.stdout())
        found = runs(self.record)
        self.assertEqual([run["argv"] for run in found], [["store", sop], ["store", sop], ["study", "1"]])
        self.assertEqual(found[1]["id"], first["id"])

        # And once only: a third start has nothing due.
        server, port = self.start()
        self.assertEqual(server.stop(), 0)
        self.assertNotIn("Events journal read", server.stdout())
        self.assertEqual(len(runs(self.record)), 3)


class EventLinesTests(HookServerCase):
    """--events: one JSON line a stored instance, completed series and study, and hook run."""

    @defer.inlineCallbacks
    def test_events_lines(self):
        sources = dicomfiles.write_ct_series(self.mktemp(), 2, rows=8, columns=8, seed=11)
        study, series, _ = dicomfiles.instance_uids(sources[0])
        events_file = os.path.join(self.base, "events.jsonl")
        self.start("--events", events_file, "--exec-on-study", f"{self.hook} #{{count}}",
                   "--series-timeout", "0.5", "--study-timeout", "1")
        out, err, code = yield self.storescu(*sources)
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        yield self.until(lambda: self.finished() == 1)
        with open(events_file) as lines:
            events = [json.loads(line) for line in lines]
        self.assertEqual([(e["event"], e["status"]) for e in events],
                         [("instance", "stored"), ("instance", "stored"), ("series", "complete"), ("study", "complete"), ("hook", "exit 0")])
        instance = events[0]
        self.assertEqual(instance["StudyInstanceUID"], study)
        self.assertEqual(instance["calling_ae_title"], "HOOK-SCU")
        self.assertEqual(instance["TransferSyntaxUID"], "1.2.840.10008.1.2.1")
        self.assertTrue(os.path.exists(instance["path"]))
        self.assertRegex(instance["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertEqual((events[2]["SeriesInstanceUID"], events[2]["count"]), (series, 2))
        self.assertEqual((events[3]["folder"], events[3]["count"]), (os.path.join(self.output, study), 2))
        self.assertEqual(events[4]["id"], events[3]["id"])
        self.assertEqual(runs(self.record)[0]["id"], events[3]["id"])
        self.assertIsNone(events[0]["id"])  # no store hook


class RouterTests(HookServerCase):
    """docs/usage.rst's router: a study, once complete, forwarded by its hook to a second server with radx dicom store."""

    @defer.inlineCallbacks
    def test_study_forwarded_once_complete(self):
        sources = dicomfiles.write_ct_series(self.mktemp(), 6, rows=16, columns=16, series=2, seed=13)
        study = dicomfiles.instance_uids(sources[0])[0]
        # The destination: a second radx.
        options = ScpOptions()
        destination_output = os.path.join(self.base, "destination")
        options.parseOptions(["--output-dir", destination_output, "--bind", "127.0.0.1", "--aet", "ARCHIVE", "0"])
        destination = tap.ScpService(options.config, reactor)
        destination.prepare_output_dir()
        destination.listen()
        destination.startService()
        self.addCleanup(lambda: destination.running and destination.stopService())
        archive_port = destination.port.getHost().port
        # The router, as docs/usage.rst writes it.
        self.start(
            "--exec-on-study",
            f"{sys.executable} -m radx dicom store --dir #p --recursive"
            f" --host 127.0.0.1 --port {archive_port} --called-ae ARCHIVE --calling-ae ROUTER",
            "--study-timeout", "5",
        )
        for half in (sources[:3], sources[3:]):
            out, err, code = yield self.storescu(*half)
            self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        yield self.until(lambda: self.finished() == 1)
        self.assertEqual(self.lines("Hook {hook} failed"), [])
        self.assertEqual(destination.factory.stats.stores_succeeded, 6)
        for source in sources:
            _, series, sop = dicomfiles.instance_uids(source)
            forwarded = os.path.join(destination_output, study, series, f"{sop}.dcm")
            self.assertTrue(dicomfiles.same_data_set(forwarded, source))
        self.assertEqual(len(self.lines("{kind} complete after")), 1)
