"""README's check commands, run as written against a real server (on a free port, not 11112)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.interop import listening_port, require_dcmtk
from tests.test_app_cli import RadxServer
from tests.test_environment import CHECKOUT


def literal_blocks(text: str) -> list[str]:
    """The reStructuredText literal blocks (after a '::' line) of ``text``, dedented."""
    blocks = []
    for match in re.finditer(r"::\n\n((?:    .*\n|\n)+)", text):
        lines = [line[4:] for line in match.group(1).rstrip("\n").splitlines()]
        blocks.append("\n".join(lines) + "\n")
    return blocks


class QuickStartTests(SynchronousTestCase):
    def test_check_commands_work_as_written(self):
        """
        The radx and DCMTK commands of the Quick start, from a folder whose
        .venv is the environment under test, with that environment's bin
        folder first on PATH, as once it is activated.
        """
        require_dcmtk("storescu")
        with open(os.path.join(CHECKOUT, "README.rst"), encoding="utf-8") as readme:
            blocks = [block for block in literal_blocks(readme.read()) if "11112" in block and "dicom scp" not in block]
        self.assertEqual(len(blocks), 2, blocks)
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        os.symlink(sys.prefix, os.path.join(folder, ".venv"))
        server = RadxServer(self, ["0", "--bind", "127.0.0.1"], folder)
        port = listening_port(server.wait_ready())
        script = "set -e\n" + "".join(blocks).replace("11112", str(port))
        environment = dict(os.environ, PATH=f"{os.path.join(sys.prefix, 'bin')}:/usr/bin:/bin")
        done = subprocess.run(
            ["bash", "-c", script], cwd=folder, env=environment, capture_output=True, text=True, timeout=120
        )
        self.assertEqual(done.returncode, 0, f"{script}\n{done.stdout}{done.stderr}")
        self.assertEqual(server.stop(), 0, server.describe())
        self.assertIn("Successful Stores:  3\n", server.stdout())
