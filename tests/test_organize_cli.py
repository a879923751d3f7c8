"""`radx dicom organize` as a command, in a subprocess, on real files; its progress bar in process."""

from __future__ import annotations

import io
import os
import re
import signal

from twisted.trial.unittest import SynchronousTestCase

from radx.app.organize_cli import OrganizeOptions, run_organize
from radx.app.scu_cli import EXIT_USAGE
from tests import dicomfiles
from tests.catalogue_files import write_instance
from tests.test_catalogue_cli import interrupted, radx
from tests.test_interop_store import walk_files
from tests.test_scp_catalogue import rows


class OrganizeCommandTestCase(SynchronousTestCase):
    def setUp(self):
        self.cwd = os.path.abspath(self.mktemp())
        self.incoming = os.path.join(self.cwd, "incoming")
        self.files = sorted(dicomfiles.write_ct_series(os.path.join(self.incoming, "ct"), 3, rows=16, columns=16, seed=11))
        with open(os.path.join(self.incoming, "notes.txt"), "w") as f:
            f.write("not DICOM\n")

    def radx(self, *arguments: str) -> tuple[str, str, int]:
        return radx("dicom", "organize", *arguments, cwd=self.cwd)

    def expected(self, output: str) -> list[str]:
        """Where each file goes under Study/Series/Instance, in the order of self.files."""
        return [
            os.path.join(output, *dicomfiles.instance_uids(path)[:2], dicomfiles.instance_uids(path)[2] + ".dcm")
            for path in self.files
        ]


class CommandTests(OrganizeCommandTestCase):
    def test_copy(self):
        out, err, code = self.radx("incoming", "--output-dir", "archive", "--recursive")
        self.assertEqual((err, code), ("", 0))
        self.assertIn("\n  Organized:      3\n  Skipped:        1\n  Failed:         0\n", out)
        stored = walk_files(os.path.join(self.cwd, "archive"))[0]
        self.assertEqual(sorted(os.path.join("archive", p) for p in stored), sorted(self.expected("archive")))
        for path in self.files:
            self.assertTrue(os.path.exists(path))

    def test_catalogue(self):
        """--catalogue: each file filed recorded by its absolute path, as radx dicom catalogue would index it; none in a dry run."""
        out, err, code = self.radx("incoming", "-o", "archive", "-r", "--dry-run", "--catalogue", "dry.db")
        self.assertEqual((err, code), ("", 0))
        self.assertFalse(os.path.exists(os.path.join(self.cwd, "dry.db")))

        out, err, code = self.radx("incoming", "-o", "archive", "-r", "--catalogue", "filed.db")
        self.assertEqual((err, code), ("", 0))
        found = rows(os.path.join(self.cwd, "filed.db"), "file_path, sop_instance_uid, modality, file_size")
        expected = sorted(os.path.join(self.cwd, path) for path in self.expected("archive"))
        self.assertEqual([row[0] for row in found], expected)
        for path, uid, modality, size in found:
            self.assertEqual((uid, modality, size), (os.path.basename(path)[: -len(".dcm")], "CT", os.path.getsize(path)))

        # The same rows as indexing the output folder gives.
        out, err, code = radx("dicom", "catalogue", "archive", "--database", "filed.db", cwd=self.cwd)
        self.assertEqual((err, code), ("", 0))
        self.assertEqual(rows(os.path.join(self.cwd, "filed.db"), "file_path, sop_instance_uid, modality, file_size"), found)

    def test_catalogue_that_cannot_be_opened(self):
        out, err, code = self.radx("incoming", "-o", "archive", "-r", "--catalogue", os.path.join("missing", "c.db"))
        self.assertEqual((out, code), ("", 1))
        self.assertTrue(err.startswith("Error: cannot open the catalogue "), err)
        self.assertFalse(os.path.exists(os.path.join(self.cwd, "archive")))

    def test_not_recursive(self):
        """Without --recursive, only DIR's own files: here, none that is DICOM."""
        out, _, code = self.radx("incoming", "--output-dir", "archive")
        self.assertEqual(code, 0)
        self.assertIn("  Organized:      0\n  Skipped:        1\n", out)

    def test_dry_run(self):
        out, err, code = self.radx("incoming", "-o", "archive", "-r", "--dry-run")
        self.assertEqual((err, code), ("", 0))
        plan = [line for line in out.splitlines() if " -> " in line]
        self.assertEqual(plan, [f"{os.path.relpath(s, self.cwd)} -> {d}" for s, d in zip(self.files, self.expected("archive"))])
        self.assertIn("  Would organize: 3\n", out)
        self.assertFalse(os.path.exists(os.path.join(self.cwd, "archive")))

    def test_move_with_layout(self):
        expected = {os.path.join("RADX-0001", "20240102", dicomfiles.instance_uids(p)[2] + ".dcm") for p in self.files}
        out, err, code = self.radx(
            "incoming", "-o", "by-patient", "-r", "--move", "--layout", "{PatientID}/{StudyDate}/{SOPInstanceUID}.dcm"
        )
        self.assertEqual((err, code), ("", 0))
        self.assertEqual(walk_files(os.path.join(self.cwd, "by-patient"))[0], expected)
        self.assertEqual(os.listdir(os.path.join(self.incoming, "ct")), [])
        self.assertEqual(sorted(os.listdir(self.incoming)), ["ct", "notes.txt"])

    def test_flat(self):
        _, _, code = self.radx("incoming", "-o", "flat", "-r", "--organize=false")
        self.assertEqual(code, 0)
        self.assertEqual(
            sorted(os.listdir(os.path.join(self.cwd, "flat"))),
            sorted([".radx-incoming"] + [dicomfiles.instance_uids(p)[2] + ".dcm" for p in self.files]),
        )

    def test_failures_named_and_exit_status(self):
        os.symlink(os.path.join(self.cwd, "gone"), os.path.join(self.incoming, "ct", "dangling.dcm"))
        out, err, code = self.radx("incoming", "-o", "archive", "-r")
        self.assertEqual(code, 1)
        self.assertIn("Failed: incoming/ct/dangling.dcm: No such file or directory", err)
        self.assertIn("  Organized:      3\n  Skipped:        1\n  Failed:         1\n", out)

    def test_on_duplicate_reject(self):
        self.radx("incoming", "-o", "archive", "-r")
        out, err, code = self.radx("incoming", "-o", "archive", "-r", "--on-duplicate", "reject")
        self.assertEqual(code, 1)
        self.assertEqual(err.count("(status 0x0111)"), 3, err)
        self.assertIn("  Failed:         3\n", out)

    def test_usage_errors(self):
        for arguments, message in [
            (["incoming"], "--output-dir: the folder to file into is required"),
            (["nowhere", "-o", "x"], "DIR: 'nowhere' is not a folder"),
            (["incoming", "-o", "x", "--layout", "{PatientID}.dcm"], "--layout: the file name"),
            (["incoming", "-o", "x", "--move", "--dry-run"], "do not go together"),
            (["incoming", "-o", "x", "--on-duplicate", "skip"], "--on-duplicate: expected one of"),
        ]:
            out, err, code = self.radx(*arguments)
            self.assertEqual(code, EXIT_USAGE, arguments)
            self.assertIn(message, err)
            self.assertFalse(os.path.exists(os.path.join(self.cwd, "x")))

    def test_listed_in_the_usage(self):
        out, err, code = radx("--help", cwd=self.cwd)
        self.assertEqual(code, 0)
        self.assertIn("radx dicom organize DIR --output-dir OUT [flags]", out + err)


class ProgressTests(OrganizeCommandTestCase):
    def run_in_process(self, tty: bool) -> tuple[str, str, int]:
        options = OrganizeOptions()
        options.parseOptions([self.incoming, "-o", os.path.join(self.cwd, "archive"), "-r"])
        stdout, stderr = io.StringIO(), io.StringIO()
        code = run_organize(options.config, stdout, stderr, tty=tty)
        return stdout.getvalue(), stderr.getvalue(), code

    def test_bar_on_a_terminal(self):
        out, err, code = self.run_in_process(tty=True)
        self.assertEqual(code, 0)
        self.assertIn("\r[", err)
        self.assertIn("/4 files", err)
        self.assertTrue(err.endswith("\r\x1b[K"))
        self.assertNotIn("\r", out)

    def test_no_bar_otherwise(self):
        out, err, code = self.run_in_process(tty=False)
        self.assertEqual((err, code), ("", 0))


class InterruptTests(SynchronousTestCase):
    """Ctrl+C while organizing: one line, no traceback, no partial file; a run again finishes the job."""

    FILES = 1000

    def setUp(self):
        self.cwd = os.path.abspath(self.mktemp())
        template = write_instance(os.path.join(self.cwd, "template.dcm"))
        with open(template, "rb") as f:
            data = f.read()
        uid = dicomfiles.instance_uids(template)[2].encode()
        self.sources = {}
        os.makedirs(os.path.join(self.cwd, "incoming"))
        # Instances of one series, told apart by the end of their SOP Instance UID (meta and data set).
        for number in range(self.FILES):
            other = uid[:-6] + b"%06d" % number
            path = os.path.join(self.cwd, "incoming", f"{number}.dcm")
            with open(path, "wb") as f:
                f.write(data.replace(uid, other))
            self.sources[other.decode() + ".dcm"] = path
        os.remove(template)
        self.series = os.path.join(self.cwd, "archive", "1.2.3", "1.2.3.4")
        self.incoming = os.path.join(self.cwd, "archive", ".radx-incoming")

    def stored(self) -> list[str]:
        return sorted(os.listdir(self.series)) if os.path.isdir(self.series) else []

    def test_ctrl_c_after_the_first_file(self):
        out, err, code = interrupted("dicom", "organize", "incoming", "-o", "archive", cwd=self.cwd, ready=self.stored)
        self.assertEqual(code, -signal.SIGINT, err)
        self.assertNotIn("Traceback", err)
        self.assertEqual(out, "")
        found = re.fullmatch(
            rf"Interrupted after (\d+) of {self.FILES} files: (\d+) organized, 0 skipped, 0 failed\n", err
        )
        self.assertIsNotNone(found, err)
        done, organized = int(found.group(1)), int(found.group(2))
        self.assertEqual(done, organized)
        self.assertGreaterEqual(organized, 1)
        # Ctrl+C is acted on between two files: the one in hand when it came
        # is finished and counted, each file in place is whole, and nothing
        # is left in the incoming folder.
        stored = self.stored()
        self.assertEqual(len(stored), organized)
        for name in stored:
            self.assertTrue(dicomfiles.same_data_set(os.path.join(self.series, name), self.sources[name]), name)
        self.assertEqual(os.listdir(self.incoming), [])

        # Again: those in place already are found the same, and left; the others filed.
        out, err, code = radx("dicom", "organize", "incoming", "-o", "archive", "--on-duplicate", "unique", cwd=self.cwd)
        self.assertEqual((err, code), ("", 0))
        self.assertIn(f"  Organized:      {self.FILES - len(stored)}\n  Skipped:        {len(stored)}\n", out)
        self.assertEqual(self.stored(), sorted(self.sources))
