"""Tests for radx.catalogue.indexer: a folder indexed, then again with only what changed read."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from radx.catalogue import indexer
from radx.catalogue.indexer import index, now_utc, walk
from radx.catalogue.sqlite import SQLiteCatalogue
from tests.catalogue_files import write_instance


class Progress:
    def __init__(self):
        self.total = None
        self.done = 0

    def start(self, total):
        self.total = total

    def advance(self):
        self.done += 1


class IndexTests(SynchronousTestCase):
    def setUp(self):
        self.folder = os.path.abspath(self.mktemp())
        for number in (1, 2, 3):
            write_instance(os.path.join(self.folder, "study", f"{number}.dcm"), number=number)
        self.catalogue = SQLiteCatalogue.open(self.mktemp())
        self.addCleanup(self.catalogue.close)

    def paths(self) -> list[str]:
        return sorted(self.catalogue.files_under(self.folder))

    def test_first_run(self):
        progress = Progress()
        result = index(self.catalogue, self.folder, progress=progress)
        self.assertEqual((result.added, result.changed, result.removed, result.unchanged), (3, 0, 0, 0))
        self.assertEqual((progress.total, progress.done), (3, 3))
        self.assertEqual(self.paths(), [os.path.join(self.folder, "study", f"{n}.dcm") for n in (1, 2, 3)])
        summary = self.catalogue.summary()
        self.assertEqual((summary.files, summary.modalities), (3, [("CT", 3)]))

    def test_second_run_reads_nothing_unchanged(self):
        index(self.catalogue, self.folder)
        progress = Progress()
        result = index(self.catalogue, self.folder, progress=progress)
        self.assertEqual((result.added, result.changed, result.removed, result.unchanged), (0, 0, 0, 3))
        self.assertEqual(progress.total, 0)

    def test_added_changed_removed(self):
        index(self.catalogue, self.folder)
        write_instance(os.path.join(self.folder, "study", "4.dcm"), number=4)
        changed = write_instance(os.path.join(self.folder, "study", "2.dcm"), number=2, Modality="MR")
        stat = os.stat(changed)
        os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        os.remove(os.path.join(self.folder, "study", "3.dcm"))
        result = index(self.catalogue, self.folder)
        self.assertEqual((result.added, result.changed, result.removed, result.unchanged), (1, 1, 1, 1))
        self.assertEqual([os.path.basename(p) for p in self.paths()], ["1.dcm", "2.dcm", "4.dcm"])
        self.assertEqual(sorted(self.catalogue.summary().modalities), [("CT", 2), ("MR", 1)])

    def test_files_modified_since_left_to_the_server(self):
        """modified_before: a file written since (a running server's) is neither read nor forgotten; its row stays as the server wrote it."""
        index(self.catalogue, self.folder)
        recorded = os.path.join(self.folder, "study", "2.dcm")
        self.catalogue.record({"file_path": recorded, "file_name": "2.dcm", "calling_ae_title": "MODALITY"})
        new = write_instance(os.path.join(self.folder, "study", "4.dcm"), number=4)
        started = max(os.stat(os.path.join(self.folder, "study", f"{n}.dcm")).st_mtime_ns for n in (1, 3)) + 1
        for path in (recorded, new):
            os.utime(path, ns=(started, started + 10**9))
        result = index(self.catalogue, self.folder, modified_before=started)
        self.assertEqual((result.added, result.changed, result.removed, result.unchanged), (0, 0, 0, 2))
        self.assertEqual([os.path.basename(p) for p in self.paths()], ["1.dcm", "2.dcm", "3.dcm"])
        rows = self.catalogue.select(["calling_ae_title"], "file_name = ?", ["2.dcm"], 10)
        self.assertEqual(rows.rows, [("MODALITY",)])

    def test_a_file_stored_again_while_catching_up_keeps_its_row(self):
        """
        modified_before: a file missing from the walk, stored again by the
        running server (and recorded by it) before the removals, keeps the
        server's row; the catch-up removes only rows whose file is still gone.
        """
        index(self.catalogue, self.folder)
        again = os.path.join(self.folder, "study", "2.dcm")
        with open(again, "rb") as fp:
            data = fp.read()
        os.remove(again)
        started = max(os.stat(os.path.join(self.folder, "study", f"{n}.dcm")).st_mtime_ns for n in (1, 3)) + 1
        catalogue = self.catalogue

        class StoredMeanwhile(Progress):
            # After the walk, before the removals: the server files it and records it.
            def start(self, total):
                super().start(total)
                with open(again, "wb") as fp:
                    fp.write(data)
                os.utime(again, ns=(started, started + 10**9))
                catalogue.record({"file_path": again, "file_name": "2.dcm", "calling_ae_title": "MODALITY"})

        result = index(self.catalogue, self.folder, progress=StoredMeanwhile(), modified_before=started)
        self.assertEqual(result.removed, 0)
        self.assertEqual([os.path.basename(p) for p in self.paths()], ["1.dcm", "2.dcm", "3.dcm"])
        rows = self.catalogue.select(["calling_ae_title"], "file_name = ?", ["2.dcm"], 10)
        self.assertEqual(rows.rows, [("MODALITY",)])

    def test_a_file_no_longer_dicom(self):
        index(self.catalogue, self.folder)
        with open(os.path.join(self.folder, "study", "1.dcm"), "w") as fp:
            fp.write("overwritten")
        result = index(self.catalogue, self.folder)
        self.assertEqual((result.removed, len(result.failures)), (1, 1))
        self.assertEqual(len(self.paths()), 2)

    def test_a_file_no_longer_dicom_while_catching_up(self):
        """modified_before: a file there, but no longer DICOM, still loses its row."""
        index(self.catalogue, self.folder)
        with open(os.path.join(self.folder, "study", "1.dcm"), "w") as fp:
            fp.write("overwritten")
        result = index(self.catalogue, self.folder, modified_before=2**63 - 1)
        self.assertEqual((result.removed, len(result.failures)), (1, 1))
        self.assertEqual(len(self.paths()), 2)

    def test_rebuild(self):
        index(self.catalogue, self.folder)
        self.catalogue.record({"file_path": "/elsewhere/x.dcm"})
        result = index(self.catalogue, self.folder, rebuild=True)
        self.assertEqual((result.added, result.unchanged), (3, 0))
        self.assertEqual(self.catalogue.summary().files, 3)

    def test_not_dicom_counted_and_named(self):
        notes = os.path.join(self.folder, "notes.txt")
        with open(notes, "w") as fp:
            fp.write("not DICOM\n")
        empty = os.path.join(self.folder, "study", "empty.dcm")
        open(empty, "w").close()
        result = index(self.catalogue, self.folder)
        self.assertEqual(result.added, 3)
        self.assertEqual([path for path, _ in result.failures], sorted([notes, empty]))
        self.assertEqual(result.failures[0][1], "not a DICOM Part 10 file (no DICM prefix)")

    def test_server_work_in_progress_skipped(self):
        write_instance(os.path.join(self.folder, ".radx-incoming", "x.dcm"))
        write_instance(os.path.join(self.folder, "study", "5.dcm.part"))
        result = index(self.catalogue, self.folder)
        self.assertEqual((result.added, result.failures), (3, []))

    def test_not_recursive(self):
        top = write_instance(os.path.join(self.folder, "top.dcm"))
        result = index(self.catalogue, self.folder, recursive=False)
        self.assertEqual(result.added, 1)
        self.assertEqual(self.paths(), [top])
        # The rows of files in folders below are kept, not taken for gone.
        index(self.catalogue, self.folder)
        result = index(self.catalogue, self.folder, recursive=False)
        self.assertEqual((result.removed, result.unchanged), (0, 1))
        self.assertEqual(len(self.paths()), 4)

    def test_skip(self):
        database = os.path.join(self.folder, "catalogue.db")
        with open(database, "w") as fp:
            fp.write("database")
        result = index(self.catalogue, self.folder, skip={database})
        self.assertEqual(result.failures, [])

    def test_relative_folder_stored_absolute(self):
        relative = os.path.relpath(self.folder)
        index(self.catalogue, relative)
        self.assertEqual(len(self.paths()), 3)
        self.assertEqual(index(self.catalogue, self.folder).unchanged, 3)

    def test_sibling_folder_untouched(self):
        index(self.catalogue, self.folder)
        sibling = self.folder + "-2"
        write_instance(os.path.join(sibling, "x.dcm"))
        index(self.catalogue, sibling)
        self.assertEqual(index(self.catalogue, self.folder).removed, 0)
        self.assertEqual(self.catalogue.summary().files, 4)


class NowTests(SynchronousTestCase):
    def test_stamp(self):
        """ISO 8601 in UTC, to the second; made anew when the second changes, not only once."""
        clock = [1767225599.75]
        self.patch(indexer.time, "time", lambda: clock[0])
        self.assertEqual(now_utc(), "2025-12-31T23:59:59Z")
        clock[0] = 1767225599.99
        self.assertEqual(now_utc(), "2025-12-31T23:59:59Z")
        clock[0] = 1767225600.0
        self.assertEqual(now_utc(), "2026-01-01T00:00:00Z")


class WalkTests(SynchronousTestCase):
    def test_folder_symlinks_not_followed(self):
        folder = os.path.abspath(self.mktemp())
        path = write_instance(os.path.join(folder, "a", "1.dcm"))
        os.symlink(os.path.join(folder, "a"), os.path.join(folder, "loop"))
        self.assertEqual([p for p, _ in walk(folder, True)], [path])

    def test_missing_folder(self):
        failures = []
        self.assertEqual(list(walk(self.mktemp(), True, failures=failures)), [])
        self.assertEqual(len(failures), 1)
