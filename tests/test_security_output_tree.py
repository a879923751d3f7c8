"""The output tree under attack: symbolic links below the output folder, the folder removed while radx runs."""

from __future__ import annotations

import os
import stat

from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from radx.app.options import ScpOptions
from radx.app.tap import ScpService, StartupError
from radx.dimse.commands import decode_command
from radx.scp.factory import ServerConfig
from radx.storage.filing import Filing
from radx.storage.store import INCOMING
from radx.testing import ScpHarness, associate_rq, store_rq_bytes
from tests import dicomfiles
from tests.interop import ServerTestCase, require_dcmtk
from tests.test_scp_protocol import LogCapture

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"


def mode(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def statuses(harness) -> list[int]:
    return [
        decode_command(bytes(item.data)).status
        for pdu in harness.received_pdus()
        if hasattr(pdu, "items")
        for item in pdu.items
    ]


class OutsideMixin:
    def setUp(self):
        self.base = os.path.abspath(self.mktemp())
        self.output = os.path.join(self.base, "output")
        os.makedirs(self.output)
        # A folder outside the tree, with what looks like radx's own partial file.
        self.outside = os.path.join(self.base, "outside")
        os.makedirs(self.outside)
        with open(os.path.join(self.outside, "x.part"), "wb") as f:
            f.write(b"not radx's")
        [self.first] = dicomfiles.write_ct_series(os.path.join(self.base, "a"), 1, rows=16, columns=16, seed=11)
        [self.second] = dicomfiles.write_ct_series(os.path.join(self.base, "b"), 1, rows=16, columns=16, seed=12)

    def assertOutsideUntouched(self):
        self.assertEqual(os.listdir(self.outside), ["x.part"])
        with open(os.path.join(self.outside, "x.part"), "rb") as f:
            self.assertEqual(f.read(), b"not radx's")

    def stored_path(self, source: str) -> str:
        study, series, instance = dicomfiles.instance_uids(source)
        return os.path.join(self.output, study, series, f"{instance}.dcm")


class SymbolicLinkTests(OutsideMixin, SynchronousTestCase):
    def setUp(self):
        super().setUp()
        self.log = LogCapture(self)

    def harness(self, **kwargs) -> ScpHarness:
        harness = ScpHarness(ServerConfig(output_dir=self.output, fsync=False, **kwargs))
        harness.send(associate_rq(contexts=((1, CT, (EXPLICIT_VR_LITTLE_ENDIAN,)),)).encode())
        harness.received_pdus()
        return harness

    def store(self, harness, source) -> int:
        _, _, instance = dicomfiles.instance_uids(source)
        harness.send(store_rq_bytes(dicomfiles.data_set_bytes(source), CT, instance))
        [status] = statuses(harness)
        return status

    def assertRefusedThenServes(self, link: str, relative: str) -> None:
        """0xA700 and one log line for the instance under the link; the next instance is stored."""
        os.symlink(self.outside, link)
        harness = self.harness()
        self.assertEqual(self.store(harness, self.first), 0xA700)
        failures = [line for line in self.log.messages() if "C-STORE failed" in line]
        self.assertEqual(len(failures), 1, failures)
        self.assertIn("status=0xA700", failures[0])
        self.assertIn(f"{relative} is a symbolic link, not followed", failures[0])
        self.assertOutsideUntouched()
        self.assertEqual(os.listdir(os.path.join(self.output, INCOMING)), [])
        self.assertEqual(self.store(harness, self.second), 0x0000)
        self.assertTrue(dicomfiles.same_data_set(self.stored_path(self.second), self.second))
        self.assertOutsideUntouched()

    def test_study_folder_link(self):
        study, _, _ = dicomfiles.instance_uids(self.first)
        self.assertRefusedThenServes(os.path.join(self.output, study), study)

    def test_series_folder_link(self):
        study, series, _ = dicomfiles.instance_uids(self.first)
        os.mkdir(os.path.join(self.output, study))
        self.assertRefusedThenServes(os.path.join(self.output, study, series), f"{study}/{series}")

    def test_instance_file_link_replaced_flat(self):
        """A link where the file goes is replaced by the file; the file it named is untouched."""
        _, _, instance = dicomfiles.instance_uids(self.first)
        final = os.path.join(self.output, f"{instance}.dcm")
        os.symlink(os.path.join(self.outside, "x.part"), final)
        harness = self.harness(filing=Filing(organize=False))
        self.assertEqual(self.store(harness, self.first), 0x0000)
        self.assertFalse(os.path.islink(final))
        self.assertTrue(dicomfiles.same_data_set(final, self.first))
        self.assertOutsideUntouched()


class IncomingLinkAtStartTests(OutsideMixin, SynchronousTestCase):
    def test_refuses_to_start(self):
        """A link in place of .radx-incoming: radx does not start, and removes nothing where it points."""
        os.symlink(self.outside, os.path.join(self.output, INCOMING))
        options = ScpOptions()
        options.parseOptions(["--output-dir", self.output])
        with self.assertRaises(StartupError) as caught:
            ScpService(options.config, MemoryReactorClock()).prepare_output_dir()
        self.assertEqual(
            str(caught.exception), f"failed to create output directory: {INCOMING} is a symbolic link, not followed"
        )
        self.assertOutsideUntouched()
        self.assertTrue(os.path.islink(os.path.join(self.output, INCOMING)))


class RemovedOutputFolderTests(OutsideMixin, SynchronousTestCase):
    """The output folder removed while radx runs: made again, with --dir-mode exactly, and files land in it."""

    def setUp(self):
        super().setUp()
        previous = os.umask(0o022)
        self.addCleanup(os.umask, previous)
        self.harness = ScpHarness(ServerConfig(output_dir=self.output, fsync=False, dir_mode=0o750))
        self.harness.send(associate_rq(contexts=((1, CT, (EXPLICIT_VR_LITTLE_ENDIAN,)),)).encode())
        self.harness.received_pdus()
        self.assertEqual(SymbolicLinkTests.store(self, self.harness, self.first), 0x0000)

    def assertStoredWithModes(self):
        self.assertEqual(SymbolicLinkTests.store(self, self.harness, self.second), 0x0000)
        stored = self.stored_path(self.second)
        self.assertTrue(dicomfiles.same_data_set(stored, self.second))
        for folder in (os.path.join(self.output, INCOMING), os.path.dirname(stored), os.path.dirname(os.path.dirname(stored))):
            self.assertEqual(oct(mode(folder)), oct(0o750), folder)

    def test_removed(self):
        import shutil

        shutil.rmtree(self.output)
        self.assertStoredWithModes()
        self.assertEqual(oct(mode(self.output)), oct(0o750))

    def test_renamed_away_and_made_again(self):
        """The folder at the path is a new one: files go there, not to the one renamed away."""
        moved = os.path.join(self.base, "moved")
        os.rename(self.output, moved)
        os.mkdir(self.output, 0o755)
        self.assertStoredWithModes()
        self.assertEqual(oct(mode(self.output)), oct(0o755))
        self.assertFalse(os.path.exists(os.path.join(moved, *os.path.relpath(self.stored_path(self.second), self.output).split(os.sep))))


class StorescuTests(OutsideMixin, ServerTestCase):
    """DCMTK's storescu over 127.0.0.1: a Study folder that is a link fails that instance, and the server serves on."""

    timeout = 60

    @defer.inlineCallbacks
    def test_study_folder_link(self):
        storescu = require_dcmtk("storescu")
        study, _, _ = dicomfiles.instance_uids(self.first)
        os.symlink(self.outside, os.path.join(self.output, study))
        log = LogCapture(self)
        self.start_server(self.server_config(output_dir=self.output))
        arguments = ["-v", "-aec", "RADX-SCP", "127.0.0.1", str(self.port)]
        out, err, code = yield self.run_tool(storescu, *arguments, self.first)
        text = (out + err).decode(errors="replace")
        self.assertIn("Received Store Response (Refused: OutOfResources)", text)
        failures = [line for line in log.messages() if "C-STORE failed" in line]
        self.assertEqual(len(failures), 1, failures)
        self.assertIn("status=0xA700", failures[0])
        self.assertIn(f"{study} is a symbolic link, not followed", failures[0])
        self.assertOutsideUntouched()
        out, err, code = yield self.run_tool(storescu, *arguments, self.second)
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        self.assertIn(b"Received Store Response (Success)", out + err)
        self.assertTrue(dicomfiles.same_data_set(self.stored_path(self.second), self.second))
        self.assertOutsideUntouched()
        self.assertEqual(os.listdir(os.path.join(self.output, INCOMING)), [])
