"""`radx dicom catalogue` as a command, in a subprocess, on real files; its progress bar in process."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

from radx.app.catalogue_cli import ROW_LIMIT, CatalogueOptions, run_catalogue
from radx.catalogue.sqlite import SQLiteCatalogue
from tests.catalogue_files import charset_file, write_instance

# A safety net for a hung command, not a measure of speed.
TOOL_TIMEOUT = 60


def _radx(arguments) -> dict:
    """How the tests run `radx ARGUMENTS`: the command line and its environment, for subprocess."""
    return {"args": [sys.executable, "-m", "radx.app.cli", *arguments], "env": dict(os.environ, PYTHONIOENCODING="utf-8")}


def radx(*arguments: str, cwd: str) -> tuple[str, str, int]:
    """Run `radx ARGUMENTS` in ``cwd``: (stdout, stderr, exit status)."""
    done = subprocess.run(**_radx(arguments), cwd=cwd, capture_output=True, timeout=TOOL_TIMEOUT)
    return done.stdout.decode(), done.stderr.decode(), done.returncode


def _sigint_as_a_terminal_sends_it() -> None:
    # In the child, before radx starts: a test runner may ignore SIGINT, and
    # a child inherits that; Ctrl+C at a terminal finds the default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupted(*arguments: str, cwd: str, ready) -> tuple[str, str, int]:
    """
    Run `radx ARGUMENTS` in ``cwd`` and press Ctrl+C (SIGINT) once
    ``ready()`` holds: (stdout, stderr, exit status), once it has ended.
    The test fails if radx ends first: its work must outlast the wait.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            **_radx(arguments), cwd=cwd, stdout=out, stderr=err, preexec_fn=_sigint_as_a_terminal_sends_it
        )
        try:
            deadline = time.monotonic() + TOOL_TIMEOUT
            while not ready():
                if process.poll() is not None:
                    raise AssertionError(f"radx {' '.join(arguments)} ended (status {process.returncode}) before Ctrl+C")
                if time.monotonic() > deadline:
                    raise AssertionError(f"radx {' '.join(arguments)}: not ready after {TOOL_TIMEOUT} s")
                time.sleep(0.01)
            if process.poll() is not None:
                raise AssertionError(f"radx {' '.join(arguments)} ended (status {process.returncode}) before Ctrl+C")
            process.send_signal(signal.SIGINT)
            process.wait(TOOL_TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        out.seek(0)
        err.seek(0)
        return out.read().decode(), err.read().decode(), process.returncode


class CommandTestCase(SynchronousTestCase):
    def setUp(self):
        self.cwd = os.path.abspath(self.mktemp())
        self.received = os.path.join(self.cwd, "dicom-received")
        for number in (1, 2):
            write_instance(os.path.join(self.received, "1.2.3", "1.2.3.4", f"{number}.dcm"), number=number)
        write_instance(
            os.path.join(self.received, "9.8", "9.8.7", "1.dcm"),
            PatientName="ROE^RICHARD",
            PatientID="PID-2",
            StudyInstanceUID="9.8",
            SeriesInstanceUID="9.8.7",
            Modality="MR",
            StudyDescription="Knee",
        )
        shutil.copy(charset_file("chrRuss.dcm"), os.path.join(self.received, "russ.dcm"))

    def radx(self, *arguments: str) -> tuple[str, str, int]:
        return radx(*arguments, cwd=self.cwd)


class IndexCommandTests(CommandTestCase):
    def test_as_the_reference_writes_it(self):
        out, err, code = self.radx("dicom", "catalogue", "./dicom-received", "--database", "received.db")
        self.assertEqual((err, code), ("", 0))
        self.assertIn(f"Indexed {self.received} in ", out)
        self.assertIn(": 4 new, 0 changed, 0 removed, 0 unchanged\n", out)
        self.assertIn(
            "Catalogue: received.db\n"
            "  Files:     4 (",
            out,
        )
        self.assertIn("  Patients:  3\n  Studies:   3\n  Series:    3\n", out)
        self.assertIn("  Modalities:\n    CT  2\n    MR  1\n    OT  1\n", out)
        self.assertTrue(os.path.isfile(os.path.join(self.cwd, "received.db")))

    def test_watch_runs_again(self):
        """The QA workflow's `watch` line: each run after the first reads only what is new."""
        command = ("dicom", "catalogue", self.received, "--database", "qa.db")
        self.radx(*command)
        out, err, code = self.radx(*command)
        self.assertEqual((err, code), ("", 0))
        self.assertIn(": 0 new, 0 changed, 0 removed, 4 unchanged\n", out)
        write_instance(os.path.join(self.received, "1.2.3", "1.2.3.4", "3.dcm"), number=3)
        os.remove(os.path.join(self.received, "russ.dcm"))
        out, err, code = self.radx(*command)
        self.assertIn(": 1 new, 0 changed, 1 removed, 3 unchanged\n", out)

    def test_default_database(self):
        out, err, code = self.radx("dicom", "catalogue", "dicom-received")
        self.assertEqual(code, 0)
        self.assertIn("Catalogue: dicom-catalogue.db\n", out)
        self.assertTrue(os.path.isfile(os.path.join(self.cwd, "dicom-catalogue.db")))

    def test_not_recursive(self):
        out, err, code = self.radx("dicom", "catalogue", "dicom-received", "--recursive=false")
        self.assertIn(": 1 new,", out)
        self.assertIn("  Files:     1 (", out)
        out, err, code = self.radx("dicom", "catalogue", "dicom-received", "-R", "-d", "dicom-catalogue.db")
        self.assertIn(": 3 new, 0 changed, 0 removed, 1 unchanged\n", out)

    def test_rebuild(self):
        self.radx("dicom", "catalogue", "dicom-received")
        out, err, code = self.radx("dicom", "catalogue", "dicom-received", "--rebuild")
        self.assertEqual(code, 0)
        self.assertIn(": 4 new, 0 changed, 0 removed, 0 unchanged\n", out)

    def test_not_dicom_counted_and_named(self):
        with open(os.path.join(self.received, "README.txt"), "w") as fp:
            fp.write("notes\n")
        out, err, code = self.radx("dicom", "catalogue", "dicom-received")
        self.assertEqual(code, 0)
        self.assertIn(
            "Not indexed, not DICOM or unreadable: 1 file\n"
            f"  {self.received}/README.txt: not a DICOM Part 10 file (no DICM prefix)\n",
            out,
        )

    def test_database_inside_the_folder(self):
        out, err, code = self.radx("dicom", "catalogue", ".", "--database", "here.db")
        self.radx("dicom", "catalogue", ".", "--database", "here.db")
        out, err, code = self.radx("dicom", "catalogue", ".", "--database", "here.db")
        self.assertNotIn("Not indexed", out)

    def test_no_progress_bar_when_piped(self):
        out, err, code = self.radx("dicom", "catalogue", "dicom-received")
        self.assertEqual(err, "")
        self.assertNotIn("\r", out)


class InterruptTests(SynchronousTestCase):
    """Ctrl+C while indexing: one line, no traceback; what was committed stays, and the next run goes on from it."""

    # Rows are committed BATCH at a time: enough files for many batches, so
    # that the first is seen long before the last.
    FILES = 20 * SQLiteCatalogue.BATCH

    def setUp(self):
        self.cwd = os.path.abspath(self.mktemp())
        first = write_instance(os.path.join(self.cwd, "tree", "0", "0.dcm"))
        # Links to one file: FILES paths, FILES rows, made in a moment.
        for number in range(1, self.FILES):
            folder = os.path.join(self.cwd, "tree", str(number % 20))
            os.makedirs(folder, exist_ok=True)
            os.link(first, os.path.join(folder, f"{number}.dcm"))
        self.database = os.path.join(self.cwd, "tree.db")

    def rows(self) -> int:
        """Rows committed, as another reader sees them; 0 before the table exists."""
        try:
            connection = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True)
            try:
                return connection.execute("SELECT COUNT(*) FROM dicom_metadata").fetchone()[0]
            finally:
                connection.close()
        except sqlite3.Error:
            return 0

    def test_ctrl_c_after_the_first_commit(self):
        out, err, code = interrupted("dicom", "catalogue", "tree", "--database", "tree.db", cwd=self.cwd, ready=self.rows)
        # Ended by SIGINT, as Python ends a program Ctrl+C stops: 130 in a shell.
        self.assertEqual(code, -signal.SIGINT, err)
        self.assertNotIn("Traceback", err)
        self.assertEqual(out, "")
        found = re.fullmatch(r"Interrupted: (\d+) files indexed so far, kept in tree\.db; run again to index the rest\n", err)
        self.assertIsNotNone(found, err)
        indexed = int(found.group(1))
        self.assertGreaterEqual(indexed, SQLiteCatalogue.BATCH)
        self.assertLess(indexed, self.FILES)
        self.assertEqual(self.rows(), indexed)

        out, err, code = radx("dicom", "catalogue", "tree", "--database", "tree.db", cwd=self.cwd)
        self.assertEqual((err, code), ("", 0))
        self.assertIn(f": {self.FILES - indexed} new, 0 changed, 0 removed, {indexed} unchanged\n", out)
        self.assertEqual(self.rows(), self.FILES)


class QueryCommandTests(CommandTestCase):
    def setUp(self):
        super().setUp()
        self.radx("dicom", "catalogue", "dicom-received")

    def test_summary_alone(self):
        out, err, code = self.radx("dicom", "catalogue", "--database", "dicom-catalogue.db")
        self.assertEqual((err, code), ("", 0))
        self.assertTrue(out.startswith("Catalogue: dicom-catalogue.db\n  Files:     4 ("))

    def test_query_by_keyword(self):
        out, err, code = self.radx("dicom", "catalogue", "-q", "PatientID=PID-2")
        self.assertEqual((err, code), ("", 0))
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["patient_name", "patient_id", "study_date", "modality",
                                            "series_number", "instance_number", "file_path"])  # fmt: skip
        self.assertEqual(lines[2].split(), ["ROE^RICHARD", "PID-2", "MR", "1", "1", f"{self.received}/9.8/9.8.7/1.dcm"])
        self.assertEqual(lines[3:], ["(1 row)"])

    def test_query_by_column(self):
        out, err, code = self.radx("dicom", "catalogue", "--query", "modality=CT", "-q", "instance_number=2")
        self.assertEqual(code, 0)
        self.assertIn("1.2.3.4/2.dcm", out)
        self.assertIn("(1 row)", out)

    def test_bare_word(self):
        out, err, code = self.radx("dicom", "catalogue", "-q", "knee")
        self.assertIn("ROE^RICHARD", out)
        self.assertIn("(1 row)", out)

    def test_non_ascii_decoded(self):
        out, err, code = self.radx("dicom", "catalogue", "-q", "PatientID=SCSRUSS")
        self.assertIn("Люкceмбypг", out)

    def test_unknown_field(self):
        out, err, code = self.radx("dicom", "catalogue", "-q", "Colour=red")
        self.assertEqual((out, code), ("", 1))
        self.assertIn("Error: -q: unknown field 'Colour'", err)

    def test_sql(self):
        out, err, code = self.radx(
            "dicom", "catalogue", "--sql",
            "SELECT modality, COUNT(*) AS files FROM dicom_metadata GROUP BY modality ORDER BY modality",
        )  # fmt: skip
        self.assertEqual((err, code), ("", 0))
        self.assertEqual(out, "modality  files\n--------  -----\nCT        2\nMR        1\nOT        1\n(3 rows)\n")

    def test_sql_write_refused(self):
        out, err, code = self.radx("dicom", "catalogue", "--sql", "DELETE FROM dicom_metadata")
        self.assertEqual((out, code), ("", 1))
        self.assertIn("Error: --sql runs read-only queries", err)
        out, err, code = self.radx("dicom", "catalogue")
        self.assertIn("  Files:     4 (", out)

    def test_bad_sql(self):
        out, err, code = self.radx("dicom", "catalogue", "--sql", "SELECT FROM WHERE")
        self.assertEqual((out, code), ("", 1))
        self.assertIn("Error: --sql: ", err)
        self.assertIn("syntax error", err)

    def test_index_then_query(self):
        write_instance(os.path.join(self.received, "new.dcm"), PatientID="PID-NEW")
        out, err, code = self.radx("dicom", "catalogue", "dicom-received", "-q", "PatientID=PID-NEW")
        self.assertIn(": 1 new,", out)
        self.assertIn("new.dcm", out)
        self.assertNotIn("Catalogue:", out)

    def test_cap(self):
        database = os.path.join(self.cwd, "big.db")
        catalogue = SQLiteCatalogue.open(database)
        catalogue.record_many({"file_path": f"/x/{i:05d}.dcm", "modality": "CT"} for i in range(ROW_LIMIT + 1))
        catalogue.close()
        out, err, code = self.radx("dicom", "catalogue", "-d", "big.db", "--sql", "SELECT file_path FROM dicom_metadata")
        self.assertEqual(code, 0)
        self.assertIn(f"\n({ROW_LIMIT} rows)\n", out)
        self.assertEqual(err, f"Note: only the first {ROW_LIMIT} rows are shown; narrow the query, or use --sql with LIMIT/OFFSET.\n")
        out, err, code = self.radx("dicom", "catalogue", "-d", "big.db", "-q", "Modality=CT")
        self.assertIn("Note: only the first", err)
        out, err, code = self.radx("dicom", "catalogue", "-d", "big.db", "--sql", "SELECT 1 LIMIT 1000")
        self.assertEqual(err, "")


class FailureTests(SynchronousTestCase):
    def setUp(self):
        self.cwd = os.path.abspath(self.mktemp())
        os.makedirs(self.cwd)

    def test_missing_database(self):
        for arguments in ([], ["-q", "CT"], ["--sql", "SELECT 1"], ["--database", "nothing.db"]):
            out, err, code = radx("dicom", "catalogue", *arguments, cwd=self.cwd)
            self.assertEqual((out, code), ("", 1))
            self.assertIn("Error: no catalogue at ", err)
        self.assertEqual(os.listdir(self.cwd), [])

    def test_help(self):
        out, err, code = radx("dicom", "catalogue", "--help", cwd=self.cwd)
        self.assertEqual((err, code), ("", 0))
        self.assertTrue(out.startswith("Usage: radx dicom catalogue [DIR] [flags]\n"))
        for flag in ("--database", "-d,", "--rebuild", "--recursive", "-R,", "--query", "-q,", "--sql"):
            self.assertIn(flag, out)

    def test_listed_in_radx_usage(self):
        out, err, code = radx("--help", cwd=self.cwd)
        self.assertIn("radx dicom catalogue [DIR] [flags]", out)

    def test_usage_errors(self):
        for arguments, message in (
            (["missing-folder"], "DIR: 'missing-folder' is not a folder"),
            (["--rebuild"], "--rebuild goes with DIR"),
            (["--sql", "SELECT 1", "-q", "CT"], "--sql and -q/--query do not go together"),
            (["--recursive=maybe"], "--recursive: expected true or false"),
            (["-q", "SeriesNumber=one"], "-q: SeriesNumber is a number"),
            (["a", "b"], "Wrong number of arguments"),
        ):
            out, err, code = radx("dicom", "catalogue", *arguments, cwd=self.cwd)
            self.assertEqual((out, code), ("", 1), arguments)
            self.assertIn(message, err)
            self.assertIn("Usage: radx dicom catalogue [DIR] [flags]", err)


class ProgressBarTests(SynchronousTestCase):
    def test_on_a_terminal(self):
        folder = self.mktemp()
        for number in range(3):
            write_instance(os.path.join(folder, f"{number}.dcm"), number=number)
        options = CatalogueOptions()
        options.parseOptions([folder, "--database", self.mktemp()])
        stdout, stderr = io.StringIO(), io.StringIO()
        self.assertEqual(run_catalogue(options.config, stdout, stderr, tty=True), 0)
        self.assertIn("\r[", stderr.getvalue())
        self.assertIn("/3 files", stderr.getvalue())
        # Cleared before the report.
        self.assertTrue(stderr.getvalue().endswith("\r\x1b[K"))
        self.assertNotIn("\r", stdout.getvalue())


class TableTests(SynchronousTestCase):
    def test_wide_characters_aligned(self):
        from radx.app.catalogue_cli import table
        from radx.catalogue.database import Rows

        text = table(Rows(["patient_name", "n"], [("王^小東", 1), ("Äneas", None)], False))
        self.assertEqual(text, "patient_name  n\n------------  -\n王^小東       1\nÄneas\n(2 rows)\n")
