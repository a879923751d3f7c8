"""The test environment scripts/test.sh makes: a virtual environment, DCMTK's commands not shadowed."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

import radx

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(radx.__file__)))
TEST_SCRIPT = os.path.join(CHECKOUT, "scripts", "test.sh")

# The DCMTK programs the README and the tests run, which pynetdicom's
# console scripts are also named.
DCMTK_NAMES = ("echoscu", "storescu", "storescp")


class ShadowingTests(SynchronousTestCase):
    def test_no_python_program_named_as_dcmtk_s_beside_the_interpreter(self):
        """With the environment's bin folder on PATH, echoscu is still DCMTK's."""
        folder = os.path.dirname(sys.executable)
        shadowing = [name for name in DCMTK_NAMES if os.path.exists(os.path.join(folder, name))]
        self.assertEqual(shadowing, [], f"in {folder}")


class VirtualEnvironmentTests(SynchronousTestCase):
    def test_pip_runs_only_in_the_virtual_environment(self):
        """
        scripts/test.sh, given a python3 that is no virtual environment,
        creates .venv with it and installs with .venv's pip, never with
        python3's own.
        """
        python3 = shutil.which("python3")
        if python3 is None:
            self.fail("python3 is not on PATH")
        root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(root, "scripts"))
        os.makedirs(os.path.join(root, "bin"))
        shutil.copy(TEST_SCRIPT, os.path.join(root, "scripts", "test.sh"))
        calls = os.path.join(root, "python3-calls")
        wrapper = os.path.join(root, "bin", "python3")
        with open(wrapper, "w") as script:
            script.write(f'#!/bin/sh\necho "$*" >> {calls}\nexec {python3} "$@"\n')
        os.chmod(wrapper, stat.S_IRWXU)
        environment = dict(os.environ, PATH=f"{os.path.join(root, 'bin')}:/usr/bin:/bin")
        environment.pop("VIRTUAL_ENV", None)
        # There is no project in that folder: the install fails, after the choice of interpreter.
        subprocess.run(
            ["sh", os.path.join(root, "scripts", "test.sh")],
            cwd=root, env=environment, stdin=subprocess.DEVNULL, capture_output=True, timeout=300,
        )
        with open(calls) as record:
            invocations = record.read().splitlines()
        self.assertEqual([call for call in invocations if "pip" in call], [])
        self.assertTrue(any(call.startswith("-m venv") for call in invocations), invocations)
        self.assertTrue(os.path.exists(os.path.join(root, ".venv", "bin", "python")))
