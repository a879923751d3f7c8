"""Hooks and events with a real server on loopback: storescu and radx dicom store as senders, real child processes."""

from __future__ import annotations

import os

from twisted.internet import defer, reactor, utils
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from radx.app import tap
from radx.app.options import ScpOptions
from tests import dicomfiles
from tests.hooktools import runs, write_hook
from tests.interop import DCMTK_ENV, require_dcmtk


class HookServerTests(TestCase):
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
        service = tap.ScpService(options, reactor)
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
