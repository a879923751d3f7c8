"""radx.app.heap: large reads reuse mapped memory instead of faulting in fresh pages."""

from __future__ import annotations

import platform
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from radx.app.heap import keep_large_buffers_in_heap

# After SETUP, page faults per round of the receiver's pattern: a read that
# gets less than it asked for (the bytes object shrunk to that), the last
# few reads kept alive, as fragments waiting for the writer thread are.
# radx reads 256 KiB; this reads 1 MiB, which no module's import has
# already lifted glibc's sliding mmap threshold over.
_READS = """if True:
    import resource, socket
    {setup}
    sender, receiver = socket.socketpair()
    # Room for a whole message: one thread sends it, then reads it.
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    message = bytes(600 * 1024)
    kept = []
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for warm_up in (True, False):
        before = faults()
        for _ in range(200):
            sender.sendall(message)
            got = 0
            while got < len(message):
                data = receiver.recv(1024 * 1024)
                got += len(data)
                kept.append(data)
                del kept[:-4]
    print((faults() - before) / 200)
"""


def faults_per_read(setup: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _READS.format(setup=setup)], capture_output=True, text=True, timeout=60
    )
    if done.returncode:
        raise AssertionError(done.stderr)
    return float(done.stdout.split()[-1])


class KeepLargeBuffersInHeapTests(SynchronousTestCase):
    # At glibc's defaults a round here took 152 faults: the 600 KiB, faulted in.
    BOUND = 4

    def test_takes_effect_with_glibc(self) -> None:
        self.assertEqual(keep_large_buffers_in_heap(), platform.libc_ver()[0] == "glibc")

    def test_reads_reuse_memory(self) -> None:
        setup = "from radx.app.heap import keep_large_buffers_in_heap; keep_large_buffers_in_heap()"
        self.assertLess(faults_per_read(setup), self.BOUND)

    def test_every_radx_command(self) -> None:
        """`radx` (here `radx --version`) tunes the heap before anything else."""
        setup = "from radx.app import lean; lean.main(['--version'])"
        self.assertLess(faults_per_read(setup), self.BOUND)

    def test_twistd_service(self) -> None:
        """`twistd radx-scp` tunes it when it makes the service."""
        setup = (
            "from radx.app import tap; from radx.app.options import ScpOptions; "
            "options = ScpOptions(); options.parseOptions([]); tap.makeService(options)"
        )
        self.assertLess(faults_per_read(setup), self.BOUND)
