"""radx.app.openfiles: the open-file limit raised at start to what radx's limits need."""

from __future__ import annotations

import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from radx.app.openfiles import SPARE, descriptors_needed

# Sets this child's soft and hard limits, raises, prints the soft limit
# before and after as returned, and as the kernel has it.
_RAISE = """if True:
    import resource
    from radx.app.openfiles import raise_open_file_limit
    resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))
    before, after = raise_open_file_limit({needed})
    print(before, after, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""

# A ScpService on a memory reactor, started with a low soft limit: its
# limit afterwards and the log lines about it.
_SERVICE = """if True:
    import os, resource, sys, tempfile
    from twisted.internet.testing import MemoryReactorClock
    from twisted.logger import formatEvent, globalLogPublisher
    from radx.app.options import ScpOptions
    from radx.app.tap import ScpService
    resource.setrlimit(resource.RLIMIT_NOFILE, (100, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    events = []
    globalLogPublisher.addObserver(events.append)
    options = ScpOptions()
    options.parseOptions(["--output-dir", tempfile.mkdtemp(), "--max-pending", "300", "0"])
    ScpService(options.config, MemoryReactorClock()).startService()
    print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    print("|".join(formatEvent(e) for e in events if "open-file" in formatEvent(e)), flush=True)
    os._exit(0)  # the storage threads it started
"""


def run(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    if done.returncode:
        raise AssertionError(done.stderr)
    return done.stdout.splitlines()


class OpenFileLimitTests(SynchronousTestCase):
    def test_what_the_defaults_need(self):
        """256 pending, 10 associations each with a window of 16 and one instance arriving."""
        self.assertEqual(descriptors_needed(256, 10, 16), 256 + 10 * 18 + SPARE)

    def test_raised_when_short(self):
        self.assertEqual(run(_RAISE.format(soft=200, hard=4096, needed=500)), ["200 500 500"])

    def test_raised_only_as_far_as_the_hard_limit(self):
        self.assertEqual(run(_RAISE.format(soft=200, hard=300, needed=500)), ["200 300 300"])

    def test_never_lowered(self):
        self.assertEqual(run(_RAISE.format(soft=2000, hard=4096, needed=500)), ["2000 2000 2000"])

    def test_the_service_raises_it_before_listening(self):
        limit, logged = run(_SERVICE)
        needed = descriptors_needed(300, 10, 16)
        self.assertEqual(int(limit), needed)
        self.assertEqual(logged, f"Raised the open-file limit from 100 to {needed}")
