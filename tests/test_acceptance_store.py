"""The C-STORE acceptance: volume, a 1 GiB instance in bounded memory, a full disk, a vanished sender."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from twisted.internet import defer
from twisted.logger import Logger

from radx.storage.store import INCOMING
from tests import dicomfiles
from tests import test_interop_store as interop
from tests.interop import listening_port, process_status

log = Logger()

GIB = 1 << 30
# The server's peak resident set size allowed while it receives 1 GiB.
PEAK_RSS_LIMIT = 150 * 1024 * 1024


def report(message: str) -> None:
    """A figure worth quoting: on trial's output and in its log."""
    print(f"\n    {message}")
    log.info("{message}", message=message)


class AcceptanceTests(interop.StoreTestCase):
    timeout = 240

    def storescu_args_for(self, port: int, *arguments: str) -> list[str]:
        return ["-aet", interop.CALLING_AE, "-aec", "RADX-SCP", "127.0.0.1", str(port), *arguments]

    def scratch_dir(self) -> str:
        """A folder removed after the test, whatever its outcome: these tests make big files."""
        path = tempfile.mkdtemp(prefix="radx-acceptance-")
        self.addCleanup(shutil.rmtree, path, ignore_errors=True)
        return path

    @defer.inlineCallbacks
    def test_500_images_over_4_associations(self):
        """500 CT images of 512x512 (5 series), storescu +sd over 4 associations at once: all filed, bit for bit."""
        scratch = self.scratch_dir()
        started = time.monotonic()
        sources = dicomfiles.write_ct_series(os.path.join(scratch, "all"), 500, series=5, seed=100)
        folders = [os.path.join(scratch, f"sender-{i}") for i in range(4)]
        for folder in folders:
            os.makedirs(folder)
        for index, source in enumerate(sources):
            os.rename(source, os.path.join(folders[index % 4], os.path.basename(source)))
        sources = [os.path.join(folder, name) for folder in folders for name in sorted(os.listdir(folder))]
        generated = time.monotonic() - started

        self.start_server(self.server_config(output_dir=os.path.join(scratch, "received")))
        output = self.factory.config.output_dir
        started = time.monotonic()
        results = yield defer.gatherResults(
            [self.run_tool(self.storescu, "+sd", *self.storescu_args(folder)) for folder in folders],
            consumeErrors=True,
        )
        elapsed = time.monotonic() - started
        for out, err, code in results:
            self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        report(
            f"500 images of 512x512 ({sum(os.path.getsize(s) for s in sources) / 1e6:.0f} MB) over 4 storescu "
            f"associations: {elapsed:.1f} s ({500 / elapsed:.0f} images/s); corpus made in {generated:.1f} s"
        )

        expected = {os.path.relpath(interop.organized_path(output, source), output) for source in sources}
        stored, incoming = interop.walk_files(output)
        self.assertEqual(stored, expected)
        self.assertEqual(incoming, set())
        self.assertEqual(len({path.split(os.sep)[0] for path in stored}), 1)
        self.assertEqual(len({path.split(os.sep)[1] for path in stored}), 5)
        for source in sources:
            received = interop.organized_path(output, source)
            self.assertTrue(dicomfiles.same_data_set(received, source), f"{received} differs from {source}")
        self.assertEqual(self.factory.stats.stores_succeeded, 500)
        self.assertEqual(self.factory.stats.store_failures, 0)
        self.assertEqual(self.factory.stats.associations, 4)

    @defer.inlineCallbacks
    def test_1_gib_instance_in_bounded_memory(self):
        """
        The `radx dicom scp` process receives a 1 GiB instance with a peak
        RSS under 150 MB, bit for bit; a second send of it, killed half-way,
        leaves the stored file as it was and no partial file.
        """
        scratch = self.scratch_dir()
        started = time.monotonic()
        large = dicomfiles.write_large_multiframe(os.path.join(scratch, "large.dcm"), GIB, seed=200)
        generated = time.monotonic() - started
        self.assertGreaterEqual(os.path.getsize(large), GIB)
        output = os.path.join(scratch, "received")
        server = interop.spawn(
            sys.executable,
            "-m", "radx.app.cli", "dicom", "scp", "0",
            "--output-dir", output, "--aet", "RADX-SCP", "--bind", "127.0.0.1",
            env=dict(os.environ),
        )

        def stop_server():
            if server.transport.pid is not None:
                server.transport.signalProcess("KILL")
            return server.ended

        self.addCleanup(stop_server)
        yield server.wait_for_output(b"Press Ctrl+C to stop the server", 30)
        port = listening_port(server.text)
        pid = server.transport.pid
        baseline = process_status(pid, "VmHWM")

        started = time.monotonic()
        out, err, code = yield self.run_tool(self.storescu, "-v", *self.storescu_args_for(port, large))
        elapsed = time.monotonic() - started
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        self.assertIn(b"Received Store Response (Success)", out + err)
        peak = process_status(pid, "VmHWM")
        received = interop.organized_path(output, large)
        self.assertTrue(os.path.isfile(received))

        # The same instance again, its sender killed half-way: the stored
        # copy is untouched and the partial one removed.
        incoming = os.path.join(output, INCOMING)
        sender = interop.spawn(self.storescu, *self.storescu_args_for(port, large))
        yield interop.poll(lambda: os.path.isdir(incoming) and os.listdir(incoming), 30, "a temporary file")
        os.kill(sender.transport.pid, signal.SIGKILL)
        ended = yield sender.ended
        self.assertEqual(getattr(ended, "signal", None), signal.SIGKILL, sender.text)
        yield interop.poll(lambda: not os.listdir(incoming), 30, "the temporary file to be removed")
        peak_after_kill = process_status(pid, "VmHWM")

        server.transport.signalProcess("INT")
        ended = yield server.ended
        self.assertEqual(getattr(ended, "exitCode", None), 0, server.text)
        self.assertIn("Successful Stores:  1", server.text)
        report(
            f"1 GiB instance ({os.path.getsize(large)} bytes): server VmHWM {peak / 2**20:.1f} MiB "
            f"(after start {baseline / 2**20:.1f} MiB); transfer {elapsed:.1f} s "
            f"({os.path.getsize(large) / elapsed / 1e6:.0f} MB/s); file made in {generated:.1f} s"
        )
        self.assertLess(peak, PEAK_RSS_LIMIT)
        self.assertLess(peak_after_kill, PEAK_RSS_LIMIT)

        self.assertTrue(dicomfiles.same_data_set(received, large))
        self.assertEqual(interop.walk_files(output), ({os.path.relpath(received, output)}, set()))

    def mount_tmpfs(self, size: str) -> str:
        mount_point = self.scratch_dir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mount_point], check=True, timeout=30)

        def unmount():
            if subprocess.run(["umount", mount_point], timeout=30).returncode != 0:
                subprocess.run(["umount", "-l", mount_point], check=True, timeout=30)

        self.addCleanup(unmount)
        return mount_point

    @defer.inlineCallbacks
    def test_full_disk(self):
        """On a full 8 MiB file system: 0xA700 for what does not fit, no partial file; room again, Success."""
        sources = dicomfiles.write_ct_series(os.path.join(self.scratch_dir(), "ct"), 24, seed=300)
        output = self.mount_tmpfs("8m")
        # The mount is removed after the server stops (cleanups run last first).
        self.start_server(self.server_config(output_dir=output))

        out, err, code = yield self.run_tool(
            self.storescu, "-v", "-nh", "+sd", *self.storescu_args(os.path.dirname(sources[0]))
        )
        text = (out + err).decode(errors="replace")
        self.assertEqual(code, 0, text)
        succeeded = text.count("Received Store Response (Success)")
        refused = text.count("Received Store Response (Refused: OutOfResources)")
        self.assertEqual(succeeded + refused, 24, text)
        self.assertGreater(succeeded, 0, text)
        self.assertGreater(refused, 0, text)
        stored, incoming = interop.walk_files(output)
        self.assertEqual(incoming, set())
        self.assertEqual(len(stored), succeeded)
        kept = [source for source in sources if os.path.exists(interop.organized_path(output, source))]
        self.assertEqual(len(kept), succeeded)
        for source in kept:
            self.assertTrue(dicomfiles.same_data_set(interop.organized_path(output, source), source))
        self.assertEqual(self.factory.stats.store_failures, refused)

        # Free the space; the refused instances, sent again, are stored.
        for name in os.listdir(output):
            if name != INCOMING:
                shutil.rmtree(os.path.join(output, name))
        retry = os.path.join(self.scratch_dir(), "retry")
        os.makedirs(retry)
        for source in sources:
            if source not in kept:
                shutil.copy(source, retry)
        out, err, code = yield self.run_tool(self.storescu, "-v", "+sd", *self.storescu_args(retry))
        text = (out + err).decode(errors="replace")
        self.assertEqual(code, 0, text)
        self.assertEqual(text.count("Received Store Response (Success)"), refused, text)
        stored, incoming = interop.walk_files(output)
        self.assertEqual((len(stored), incoming), (refused, set()))
        for source in sources:
            if source not in kept:
                self.assertTrue(dicomfiles.same_data_set(interop.organized_path(output, source), source))
