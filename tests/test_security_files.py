"""Received files and the folders radx makes are owner-only by default (--file-mode, --dir-mode), whatever the umask."""

from __future__ import annotations

import os
import stat

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from radx.app.options import ScpOptions
from radx.app.tap import ScpService
from radx.scp.factory import ServerConfig
from radx.storage.store import INCOMING
from radx.testing import ScpHarness, associate_rq, store_rq_bytes
from radx.ul.pdu import AReleaseRQ
from tests import dicomfiles

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


class ReceivedFileModeTests(SynchronousTestCase):
    def setUp(self):
        [self.source] = dicomfiles.write_ct_series(self.mktemp(), 1, rows=16, columns=16, seed=3)
        self.study, self.series, self.instance = dicomfiles.instance_uids(self.source)
        self.output = os.path.abspath(self.mktemp())
        os.makedirs(self.output)

    def receive(self, umask: int, **modes) -> str:
        """One C-STORE through an association, files written for real; the stored path."""
        previous = os.umask(umask)
        self.addCleanup(os.umask, previous)
        harness = ScpHarness(ServerConfig(output_dir=self.output, fsync=False, **modes))
        harness.send(associate_rq(contexts=((1, CT, (EXPLICIT_VR_LITTLE_ENDIAN,)),)).encode())
        harness.send(store_rq_bytes(dicomfiles.data_set_bytes(self.source), CT, self.instance))
        harness.send(AReleaseRQ().encode())
        harness.disconnect()
        self.assertEqual(harness.factory.stats.stores_succeeded, 1)
        return os.path.join(self.output, self.study, self.series, f"{self.instance}.dcm")

    def assertModes(self, stored: str, file_mode: int, dir_mode: int) -> None:
        self.assertEqual(oct(mode(stored)), oct(file_mode))
        for folder in (os.path.dirname(stored), os.path.join(self.output, self.study), os.path.join(self.output, INCOMING)):
            self.assertEqual(oct(mode(folder)), oct(dir_mode), folder)

    def test_owner_only_by_default_even_with_an_open_umask(self):
        stored = self.receive(umask=0)
        self.assertModes(stored, 0o600, 0o700)
        self.assertTrue(dicomfiles.same_data_set(stored, self.source))

    def test_configured_modes_exactly_even_with_a_narrow_umask(self):
        stored = self.receive(umask=0o077, file_mode=0o640, dir_mode=0o750)
        self.assertModes(stored, 0o640, 0o750)

    def test_output_dir_the_user_made_keeps_its_mode(self):
        os.chmod(self.output, 0o755)
        self.receive(umask=0o022)
        self.assertEqual(mode(self.output), 0o755)


class OutputDirectoryTests(SynchronousTestCase):
    def service(self, *arguments: str) -> ScpService:
        options = ScpOptions()
        options.parseOptions(list(arguments))
        return ScpService(options.config, MemoryReactorClock())

    def test_made_with_dir_mode(self):
        output = os.path.join(os.path.abspath(self.mktemp()), "received")
        previous = os.umask(0)
        self.addCleanup(os.umask, previous)
        self.service("--output-dir", output).prepare_output_dir()
        self.assertEqual(mode(output), 0o700)

    def test_existing_left_alone(self):
        output = os.path.abspath(self.mktemp())
        os.makedirs(output)
        os.chmod(output, 0o751)
        self.service("--output-dir", output, "--dir-mode", "0700").prepare_output_dir()
        self.assertEqual(mode(output), 0o751)

    def test_options(self):
        options = ScpOptions()
        options.parseOptions(["--file-mode", "0640", "--dir-mode", "750"])
        self.assertEqual((options["file-mode"], options["dir-mode"]), (0o640, 0o750))
        defaults = ScpOptions()
        defaults.parseOptions([])
        self.assertEqual((defaults["file-mode"], defaults["dir-mode"]), (0o600, 0o700))
