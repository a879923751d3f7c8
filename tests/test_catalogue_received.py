"""Tests for radx.catalogue.received and radx.catalogue.opening: the server's rows, a failing catalogue, the catch-up at start."""

from __future__ import annotations

import os
import sqlite3

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from radx.catalogue.database import CatalogueError
from radx.catalogue.instance import ROW_TAGS
from radx.catalogue.opening import check_target, open_catalogue
from radx.catalogue.received import IDENTITY_CHECK_S, ReceivedCatalogue
from radx.catalogue.sqlite import SQLiteCatalogue
from radx.storage.part10 import parse_file_meta
from radx.storage.walk import DataSetWalk
from tests.catalogue_files import write_instance

EXPLICIT_LE = "1.2.840.10008.1.2.1"
CT = "1.2.840.10008.5.1.4.1.1.2"


def data_set_of(path: str) -> bytes:
    """The data set of a PS3.10 file, without its preamble and file meta."""
    with open(path, "rb") as f:
        content = f.read()
    offset, _ = parse_file_meta(content)
    return content[offset:]


def walked(data_set: bytes, transfer_syntax: str = EXPLICIT_LE) -> dict | None:
    """The values of the catalogue's tags that the storage's walk of ``data_set`` keeps."""
    walk = DataSetWalk(transfer_syntax, ROW_TAGS)
    walk.feed(data_set)
    walk.end()
    return walk.values()


class ReceivedTestCase(SynchronousTestCase):
    def setUp(self):
        self.folder = os.path.abspath(self.mktemp())
        self.database = os.path.join(os.path.dirname(self.folder), "received.db")
        self.clock = Clock()
        self.received = ReceivedCatalogue(self.database, busy_timeout_ms=0, now=self.clock.seconds)
        self.addCleanup(self.received.close)

    def stored(self, number: int = 1, **attributes) -> str:
        return write_instance(os.path.join(self.folder, "study", f"{number}.dcm"), number=number, **attributes)

    def record(self, path: str, values: dict | None = None) -> str | None:
        """Record the file at ``path``, its values as the storage's walk of ``values`` (a data set) keeps them, by default its own."""
        values = walked(data_set_of(path) if values is None else values)
        return self.received.record(path, values, EXPLICIT_LE, CT, "1.2.3.9", "MODALITY", "127.0.0.1:4242")

    def rows(self, columns="file_name, patient_name"):
        catalogue = SQLiteCatalogue.open_read_only(self.database)
        try:
            return catalogue.query(f"SELECT {columns} FROM dicom_metadata ORDER BY file_path", 100).rows
        finally:
            catalogue.close()


class RecordTests(ReceivedTestCase):
    def test_row(self):
        path = self.stored(7, StudyDescription="CHEST")
        self.assertIsNone(self.record(path))
        [row] = self.rows(
            "file_path, file_name, file_size, file_mtime, patient_name, patient_id, study_description, instance_number,"
            " modality, transfer_syntax_uid, calling_ae_title, peer, received_at, indexed_at"
        )
        stat = os.stat(path)
        self.assertEqual(
            row[:12],
            (path, "7.dcm", stat.st_size, stat.st_mtime_ns, "DOE^JANE", "PID-1", "CHEST", 7, "CT", EXPLICIT_LE,
             "MODALITY", "127.0.0.1:4242"),
        )  # fmt: skip
        self.assertRegex(row[12], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertEqual(row[12], row[13])

    def test_the_same_as_the_command_indexes(self):
        """The server's row is the one `radx dicom catalogue` reads from the file, but for what only the server knows."""
        path = self.stored(3, ReferringPhysicianName="WHO^DOCTOR", Manufacturer="ACME")
        self.record(path)
        server = self.rows("*")
        os.remove(self.database)
        from radx.catalogue.indexer import index

        catalogue = SQLiteCatalogue.open(self.database)
        index(catalogue, self.folder)
        catalogue.close()
        indexed = self.rows("*")
        different = {"id", "indexed_at", "received_at", "calling_ae_title", "peer"}
        columns = [d[1] for d in sqlite3.connect(self.database).execute("PRAGMA table_info(dicom_metadata)")]
        keep = [i for i, c in enumerate(columns) if c not in different]
        self.assertEqual([server[0][i] for i in keep], [indexed[0][i] for i in keep])

    def test_values_from_the_walk(self):
        """The file is not read again: the values are those the storage's walk kept."""
        path = self.stored()
        self.record(path, data_set_of(self.stored(2, PatientName="WALK^ONLY")))
        self.assertEqual(self.rows(), [("1.dcm", "WALK^ONLY")])

    def test_file_read_when_a_value_is_too_long_to_keep(self):
        """A value longer than the walk keeps: the values come from the file."""
        path = self.stored(StudyDescription="D" * 1500, PatientName="FROM^FILE")
        self.assertIsNone(walked(data_set_of(path)))
        self.assertIsNone(self.record(path))
        self.assertEqual(self.rows("patient_name, length(study_description)"), [("FROM^FILE", 1500)])

    def test_relative_path_recorded_absolute(self):
        """The row of a file named relative to the working folder has its absolute path, as the command's indexing has."""
        path = self.stored()
        relative = os.path.relpath(path)
        values = walked(data_set_of(path))
        for _ in range(2):  # the folder's absolute form remembered, then used
            self.assertIsNone(self.received.record(relative, values, EXPLICIT_LE, CT, "1.2.3.9", None, None))
        self.assertEqual(self.rows("file_path, file_name"), [(path, "1.dcm")])

    def test_stat_given(self):
        """The file's size and modification time as the storage had them, the file not looked at again."""
        path = self.stored()
        given = os.stat_result((0o100644, 0, 0, 1, 0, 0, 1234, 0, 0, 0), {"st_mtime_ns": 5678})
        self.received.record(path, walked(data_set_of(path)), EXPLICIT_LE, CT, "1.2.3.9", None, None, stat=given)
        self.assertEqual(self.rows("file_size, file_mtime"), [(1234, 5678)])

    def test_replaced(self):
        path = self.stored()
        self.record(path)
        self.stored(PatientName="NEW^NAME")
        self.record(path)
        self.assertEqual(self.rows(), [("1.dcm", "NEW^NAME")])


class FailureTests(ReceivedTestCase):
    def test_locked(self):
        """A catalogue another connection holds: no row, the reason without patient data; the next instance is recorded once it is free."""
        self.record(self.stored(1))
        locker = sqlite3.connect(self.database)
        self.addCleanup(locker.close)
        locker.execute("BEGIN EXCLUSIVE")
        why = self.record(self.stored(2, PatientName="SECRET^NAME", PatientID="SECRET-ID"))
        self.assertIn("database is locked", why)
        self.assertNotIn("SECRET", why)
        locker.rollback()
        self.assertIsNone(self.record(self.stored(3)))
        self.assertEqual([name for name, _ in self.rows()], ["1.dcm", "3.dcm"])

    def test_cannot_be_opened_then_can(self):
        """A catalogue in a folder that is not there: no row; once the folder exists, the next instance is recorded."""
        self.received = ReceivedCatalogue(os.path.join(self.folder, "later", "received.db"))
        self.addCleanup(self.received.close)
        why = self.record(self.stored(1))
        self.assertIn("cannot open the catalogue", why)
        os.makedirs(os.path.join(self.folder, "later"))
        self.assertIsNone(self.record(self.stored(2)))
        self.database = self.received.target
        self.assertEqual([name for name, _ in self.rows()], ["2.dcm"])

    def remove_catalogue(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            os.remove(self.database + suffix)

    def test_replaced(self):
        """
        A catalogue file replaced: the next instance once it is seen goes
        to the file now there, not the one open; once that is a catalogue,
        with the rows written since the last look at the old one.
        """
        self.record(self.stored(1))
        self.remove_catalogue()
        with open(self.database, "wb") as f:
            f.write(b"not a database, " * 64)
        self.clock.advance(IDENTITY_CHECK_S)
        self.assertIn("not a database", self.record(self.stored(2)))
        os.remove(self.database)
        self.assertIsNone(self.record(self.stored(3)))
        self.assertEqual(sorted(name for name, _ in self.rows()), ["1.dcm", "3.dcm"])

    def test_removed(self):
        """
        A catalogue file removed is made again once it is seen, with the
        rows written since the last look at the old one (the next start
        indexes the others).
        """
        self.record(self.stored(1))
        self.clock.advance(IDENTITY_CHECK_S)
        self.record(self.stored(2))  # a look: the file is the one open
        self.remove_catalogue()
        self.clock.advance(IDENTITY_CHECK_S)
        self.assertIsNone(self.record(self.stored(3)))
        self.assertEqual(sorted(name for name, _ in self.rows()), ["2.dcm", "3.dcm"])

    def test_file_looked_at_once_a_second(self):
        """
        The catalogue file is looked at (a stat) once in IDENTITY_CHECK_S,
        not before every row: one removed is written on until then, and
        made again from the first instance after, with the rows written
        since the last look, so that none is lost.
        """
        self.record(self.stored(1))
        self.remove_catalogue()
        self.clock.advance(IDENTITY_CHECK_S * 0.99)
        self.assertIsNone(self.record(self.stored(2)))
        self.assertFalse(os.path.exists(self.database))
        self.clock.advance(IDENTITY_CHECK_S * 0.01)
        self.assertIsNone(self.record(self.stored(3)))
        self.assertEqual(sorted(name for name, _ in self.rows()), ["1.dcm", "2.dcm", "3.dcm"])
        # Looked at again a second after the file was opened, not before.
        self.remove_catalogue()
        self.clock.advance(IDENTITY_CHECK_S * 0.99)
        self.record(self.stored(4))
        self.assertFalse(os.path.exists(self.database))
        self.clock.advance(IDENTITY_CHECK_S * 0.01)
        self.record(self.stored(5))
        self.assertEqual(sorted(name for name, _ in self.rows()), ["3.dcm", "4.dcm", "5.dcm"])

    def test_rows_kept_for_one_look_only(self):
        """Rows seen safe in the file at a look are not written again after a later replacement."""
        self.record(self.stored(1))
        self.clock.advance(IDENTITY_CHECK_S)
        self.record(self.stored(2))  # a look first: the file is the same, row 1 in it
        self.clock.advance(IDENTITY_CHECK_S * 0.5)
        self.record(self.stored(3))
        self.remove_catalogue()
        self.clock.advance(IDENTITY_CHECK_S * 0.5)
        self.record(self.stored(4))
        self.assertEqual(sorted(name for name, _ in self.rows()), ["2.dcm", "3.dcm", "4.dcm"])

    def test_file_gone(self):
        path = self.stored()
        head = data_set_of(path)
        os.remove(path)
        self.assertIn("cannot read the file", self.record(path, head))


class CatchUpTests(ReceivedTestCase):
    def test_unrecorded_files_indexed(self):
        """What the server stored but did not record is indexed; its own files are not; nor what it stores meanwhile."""
        self.record(self.stored(1))
        missed = self.stored(2)
        recorded_since = self.stored(3)
        started = os.stat(missed).st_mtime_ns + 1
        os.utime(recorded_since, ns=(started, started))
        result = self.received.catch_up(self.folder, started)
        self.assertEqual((result.added, result.unchanged, result.failures), (1, 1, []))
        self.assertEqual([name for name, _ in self.rows()], ["1.dcm", "2.dcm"])

    def test_database_in_the_folder_skipped(self):
        self.received = ReceivedCatalogue(os.path.join(self.folder, "received.db"))
        self.addCleanup(self.received.close)
        self.stored(1)
        self.record(self.stored(2))
        result = self.received.catch_up(self.folder, 2**62)
        self.assertEqual((result.added, result.unchanged, result.failures), (1, 1, []))

    def test_stops_when_the_server_does(self):
        self.stored(1)
        self.received.stopping = True
        self.assertIsNone(self.received.catch_up(self.folder, 2**62))

    def test_cannot_be_opened(self):
        self.received = ReceivedCatalogue(os.path.join(self.folder, "missing", "received.db"))
        self.assertRaises(CatalogueError, self.received.catch_up, self.folder, 2**62)


class OpeningTests(SynchronousTestCase):
    def test_sqlite_file(self):
        catalogue = open_catalogue(self.mktemp())
        self.addCleanup(catalogue.close)
        self.assertIsInstance(catalogue, SQLiteCatalogue)

    def test_urls_refused(self):
        for target in ("mysql://x", "sqlite://x.db"):
            self.assertRaises(ValueError, check_target, target)
            error = self.assertRaises(CatalogueError, open_catalogue, target)
            self.assertIn("not supported", error.message)

    def test_postgresql_urls(self):
        for target in ("postgresql://radx@db/radx", "postgres://db", "PostgreSQL:///radx?host=/run/postgresql"):
            self.assertEqual(check_target(target), target)

    def test_paths(self):
        for target in ("received.db", "/var/lib/radx/received.db", "C:\\radx\\received.db", "a:b.db"):
            self.assertEqual(check_target(target), target)
        self.assertRaises(ValueError, check_target, "")
