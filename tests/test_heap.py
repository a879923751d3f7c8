"""radx.app.heap: large reads reuse mapped memory instead of faulting in fresh pages."""

from __future__ import annotations

import platform
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from radx.app.heap import keep_large_buffers_in_heap, release_free_memory

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
        setup = "from radx.app.heap import keep_large_buffers_in_heap, release_free_memory; keep_large_buffers_in_heap()"
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


# Many connections' buffers from the heap, each followed by a small block
# that stays (as a connection's longer-lived objects do), then the buffers
# freed: holes free() cannot give back. Prints VmRSS in KiB before and
# after the call given.
_HOLES = """if True:
    import ctypes
    from radx.app.heap import keep_large_buffers_in_heap, release_free_memory
    keep_large_buffers_in_heap()
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = (ctypes.c_void_p,)
    def rss():
        with open("/proc/self/status") as fp:
            return next(int(line.split()[1]) for line in fp if line.startswith("VmRSS:"))
    buffers, kept = [], []
    for _ in range(256):
        block = libc.malloc(128 * 1024)
        ctypes.memset(block, 1, 128 * 1024)
        buffers.append(block)
        kept.append(libc.malloc(4096))
    for block in buffers:
        libc.free(block)
    before = rss()
    {call}
    print(before, rss())
"""


class ReleaseFreeMemoryTests(SynchronousTestCase):
    def test_takes_effect_with_glibc(self) -> None:
        self.assertEqual(release_free_memory(), platform.libc_ver()[0] == "glibc")

    def test_holes_in_the_heap_go_back(self) -> None:
        """32 MiB freed below memory in use: free() keeps it resident, release_free_memory does not."""
        if platform.libc_ver()[0] != "glibc":
            self.assertFalse(release_free_memory())  # another C library: nothing to do
            return
        results = {}
        for call in ("pass", "release_free_memory()"):
            done = subprocess.run(
                [sys.executable, "-c", _HOLES.format(call=call)], capture_output=True, text=True, timeout=60
            )
            self.assertEqual(done.returncode, 0, done.stderr)
            before, after = map(int, done.stdout.split())
            results[call] = before - after
        self.assertLess(results["pass"], 4 * 1024)
        self.assertGreater(results["release_free_memory()"], 24 * 1024)
