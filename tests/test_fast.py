"""The fast set (tests/fast.py): its modules exist, and pass with sockets and other programs forbidden."""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests import fast

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=CHECKOUT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=600,
    )


class FastSetTests(SynchronousTestCase):
    def test_every_module_listed_is_a_test_module(self):
        for name in fast.MODULES:
            package, _, module = name.partition(".")
            self.assertEqual(package, "tests", name)
            self.assertTrue(module.startswith("test_"), name)
            self.assertTrue(os.path.isfile(os.path.join(CHECKOUT, "tests", module + ".py")), name)
        self.assertEqual(len(set(fast.MODULES)), len(fast.MODULES))

    def test_the_guard_refuses_sockets_and_programs_but_python(self):
        done = run_python(
            "import socket, subprocess, sys\n"
            "from tests import fast\n"
            "fast.forbid_sockets_and_processes()\n"
            "def outcome(call):\n"
            "    try:\n"
            "        call()\n"
            "    except fast.SlowTest:\n"
            "        return 'refused'\n"
            "    return 'ran'\n"
            "print(outcome(lambda: socket.socket().bind(('127.0.0.1', 0))))\n"
            "print(outcome(lambda: socket.create_connection(('127.0.0.1', 1))))\n"
            "print(outcome(lambda: subprocess.run(['true'])))\n"
            "print(outcome(lambda: subprocess.run('true', shell=True)))\n"
            "print(outcome(lambda: subprocess.run([sys.executable, '-c', 'pass'], check=True)))\n"
        )
        self.assertEqual(done.stdout.split(), ["refused", "refused", "refused", "refused", "ran"], done.stderr)

    def test_the_fast_set_passes_so(self):
        """What `sh scripts/test.sh --fast` runs: a module that opens a socket or starts a program fails here."""
        temporary = os.path.abspath(self.mktemp())
        done = subprocess.run(
            [sys.executable, "-m", "tests.fast", "--temp-directory", temporary], cwd=CHECKOUT, stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=900,
        )
        self.assertEqual(done.returncode, 0, done.stdout[-5000:] + done.stderr[-2000:])
        self.assertTrue(done.stdout.rstrip().splitlines()[-1].startswith("PASSED"), done.stdout[-2000:])
