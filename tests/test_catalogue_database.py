"""Tests for radx.catalogue.database and radx.catalogue.sqlite: the table, rows recorded, read-only queries."""

from __future__ import annotations

import os
import sqlite3
import threading

from twisted.trial.unittest import SynchronousTestCase

from radx.catalogue.database import CatalogueError, ReadOnlyRefused
from radx.catalogue.schema import COLUMNS, TABLE, field_column
from radx.catalogue.sqlite import SQLiteCatalogue

# The columns users' SQL already names, in this order.
PUBLISHED_COLUMNS = [
    "patient_name", "patient_id", "patient_birth_date", "patient_sex", "study_instance_uid", "study_date",
    "study_description", "series_instance_uid", "series_number", "series_description", "sop_instance_uid",
    "sop_class_uid", "instance_number", "modality", "manufacturer", "institution_name", "accession_number",
    "referring_physician_name", "performing_physician_name", "file_path", "file_name", "file_size", "indexed_at",
]  # fmt: skip


def row(path: str, **values) -> dict:
    return {"file_path": path, "file_name": os.path.basename(path), **values}


class CatalogueTestCase(SynchronousTestCase):
    def setUp(self):
        self.path = self.mktemp() + ".db"
        self.catalogue = SQLiteCatalogue.open(self.path)
        self.addCleanup(self.catalogue.close)

    def read_only(self) -> SQLiteCatalogue:
        catalogue = SQLiteCatalogue.open_read_only(self.path)
        self.addCleanup(catalogue.close)
        return catalogue


class SchemaTests(CatalogueTestCase):
    def test_columns(self):
        columns = [r[1] for r in sqlite3.connect(self.path).execute(f"PRAGMA table_info({TABLE})")]
        self.assertEqual(columns[0], "id")
        self.assertEqual(columns[1 : 1 + len(PUBLISHED_COLUMNS)], PUBLISHED_COLUMNS)
        self.assertEqual(
            set(columns[1 + len(PUBLISHED_COLUMNS) :]),
            {"transfer_syntax_uid", "received_at", "calling_ae_title", "peer", "file_mtime"},
        )

    def test_indexes(self):
        connection = sqlite3.connect(self.path)
        indexed = {
            connection.execute(f"PRAGMA index_info({name})").fetchone()[2]
            for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
        for column in ("study_instance_uid", "series_instance_uid", "sop_instance_uid", "patient_id", "modality"):
            self.assertIn(column, indexed)

    def test_wal(self):
        self.assertEqual(sqlite3.connect(self.path).execute("PRAGMA journal_mode").fetchone()[0], "wal")

    def test_open_twice(self):
        SQLiteCatalogue.open(self.path).close()

    def test_fields(self):
        self.assertEqual(field_column("PatientID"), "patient_id")
        self.assertEqual(field_column("studyinstanceuid"), "study_instance_uid")
        self.assertEqual(field_column("file_name"), "file_name")
        self.assertEqual(field_column("Modality"), "modality")
        self.assertIsNone(field_column("Nothing"))


class RecordTests(CatalogueTestCase):
    def test_record_and_replace(self):
        self.catalogue.record(row("/a/1.dcm", modality="CT", file_size=10, file_mtime=1))
        self.catalogue.record(row("/a/1.dcm", modality="MR", file_size=20, file_mtime=2))
        rows = self.read_only().query("SELECT file_path, modality, file_size FROM dicom_metadata", 10)
        self.assertEqual(rows.rows, [("/a/1.dcm", "MR", 20)])

    def test_record_as_the_server_will(self):
        """What a storage thread knows of an instance it stored: one call, from any thread."""
        received = row(
            "/r/x.dcm",
            sop_instance_uid="1.2.3",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            calling_ae_title="MODALITY",
            peer="127.0.0.1:4242",
            received_at="2026-01-02T03:04:05Z",
        )
        thread = threading.Thread(target=self.catalogue.record, args=(received,))
        thread.start()
        thread.join()
        rows = self.read_only().query("SELECT calling_ae_title, peer, received_at FROM dicom_metadata", 10)
        self.assertEqual(rows.rows, [("MODALITY", "127.0.0.1:4242", "2026-01-02T03:04:05Z")])

    def test_busy_then_free(self):
        """A write refused while another connection holds the lock leaves no transaction behind: the next one is recorded."""
        catalogue = SQLiteCatalogue.open(self.path, busy_timeout_ms=0)
        self.addCleanup(catalogue.close)
        catalogue.record(row("/a/0.dcm"))
        locker = sqlite3.connect(self.path)
        self.addCleanup(locker.close)
        locker.execute("BEGIN EXCLUSIVE")
        error = self.assertRaises(sqlite3.OperationalError, catalogue.record, row("/a/1.dcm"))
        self.assertIn("locked", str(error))
        self.assertFalse(catalogue.connection.in_transaction)
        locker.execute("INSERT INTO dicom_metadata (file_path) VALUES ('/a/other.dcm')")
        locker.commit()
        catalogue.record(row("/a/2.dcm"))
        rows = self.read_only().query("SELECT file_path FROM dicom_metadata ORDER BY file_path", 10)
        self.assertEqual(rows.rows, [("/a/0.dcm",), ("/a/2.dcm",), ("/a/other.dcm",)])

    def test_many_in_batches(self):
        self.patch(self.catalogue, "BATCH", 3)
        self.catalogue.record_many(row(f"/a/{i}.dcm") for i in range(10))
        self.assertEqual(self.read_only().summary().files, 10)

    def test_one_row_its_own_transaction(self):
        """A row recorded alone is committed by its one statement: no transaction is left open after it."""
        self.catalogue.record(row("/a/1.dcm"))
        self.assertFalse(self.catalogue.connection.in_transaction)
        self.assertEqual(self.read_only().summary().files, 1)

    def test_a_batch_is_one_transaction(self):
        """A batch that fails part-way records none of its rows, though the connection commits single statements by itself."""
        rows = [row("/a/1.dcm"), row("/a/2.dcm"), {"file_name": "no path"}, row("/a/4.dcm")]
        self.assertRaises(sqlite3.IntegrityError, self.catalogue.record_many, rows)
        self.assertFalse(self.catalogue.connection.in_transaction)
        self.assertEqual(self.read_only().summary().files, 0)

    def test_removal_is_one_transaction(self):
        self.catalogue.record_many([row("/a/1.dcm"), row("/a/2.dcm")])
        locker = sqlite3.connect(self.path)
        self.addCleanup(locker.close)
        locker.execute("CREATE TRIGGER refuse BEFORE DELETE ON dicom_metadata WHEN old.file_path = '/a/2.dcm'"
                       " BEGIN SELECT RAISE(ABORT, 'refused'); END")  # fmt: skip
        locker.commit()
        self.assertRaises(sqlite3.IntegrityError, self.catalogue.remove, ["/a/1.dcm", "/a/2.dcm"])
        self.assertEqual(sorted(self.catalogue.files_under("/a")), ["/a/1.dcm", "/a/2.dcm"])

    def test_record_values(self):
        """A row as its values in the columns' order, as the server records it."""
        values = tuple(f"/a/{column}.dcm" if column == "file_path" else None for column in COLUMNS)
        self.catalogue.record_values(values)
        self.assertEqual(list(self.catalogue.files_under("/a")), ["/a/file_path.dcm"])

    def test_files_under(self):
        for path in ("/a/1.dcm", "/a/b/2.dcm", "/ab/3.dcm", "/a.dcm"):
            self.catalogue.record(row(path, file_size=1, file_mtime=5))
        self.assertEqual(self.catalogue.files_under("/a"), {"/a/1.dcm": (1, 5), "/a/b/2.dcm": (1, 5)})

    def test_remove_and_clear(self):
        self.catalogue.record_many([row("/a/1.dcm"), row("/a/2.dcm"), row("/a/3.dcm")])
        self.catalogue.remove(["/a/2.dcm"])
        self.assertEqual(sorted(self.catalogue.files_under("/a")), ["/a/1.dcm", "/a/3.dcm"])
        self.catalogue.clear()
        self.assertEqual(self.catalogue.files_under("/a"), {})


class SummaryTests(CatalogueTestCase):
    def test_counts(self):
        self.catalogue.record_many(
            [
                row("/1", patient_id="P1", study_instance_uid="1", series_instance_uid="1.1", modality="CT", file_size=100),
                row("/2", patient_id="P1", study_instance_uid="1", series_instance_uid="1.2", modality="CT", file_size=100),
                row("/3", patient_id="P2", study_instance_uid="2", series_instance_uid="2.1", modality="MR", file_size=50),
                row("/4", patient_id="P2", study_instance_uid="2", series_instance_uid="2.1", file_size=50),
            ]
        )  # fmt: skip
        summary = self.read_only().summary()
        self.assertEqual((summary.files, summary.size), (4, 300))
        self.assertEqual((summary.patients, summary.studies, summary.series), (2, 2, 3))
        self.assertEqual(summary.modalities, [("CT", 2), (None, 1), ("MR", 1)])

    def test_empty(self):
        summary = self.read_only().summary()
        self.assertEqual((summary.files, summary.size, summary.modalities), (0, 0, []))


class ReadOnlyTests(CatalogueTestCase):
    def setUp(self):
        super().setUp()
        self.catalogue.record_many([row(f"/a/{i}.dcm", modality="CT") for i in range(5)])

    def test_query(self):
        rows = self.read_only().query("SELECT modality, COUNT(*) AS n FROM dicom_metadata GROUP BY modality", 10)
        self.assertEqual((rows.columns, rows.rows, rows.cut), (["modality", "n"], [("CT", 5)], False))

    def test_limit(self):
        rows = self.read_only().query("SELECT file_path FROM dicom_metadata ORDER BY file_path", 3)
        self.assertEqual((len(rows.rows), rows.cut), (3, True))

    def test_writes_refused(self):
        catalogue = self.read_only()
        for statement in (
            "DELETE FROM dicom_metadata",
            "UPDATE dicom_metadata SET modality = 'MR'",
            "INSERT INTO dicom_metadata (file_path) VALUES ('/x')",
            "DROP TABLE dicom_metadata",
            "CREATE TABLE t (a)",
            "PRAGMA journal_mode=DELETE",
            "PRAGMA query_only=OFF",
        ):
            self.assertRaises(ReadOnlyRefused, catalogue.query, statement, 10)
        self.assertEqual(catalogue.summary().files, 5)

    def test_no_new_files(self):
        """ATTACH and VACUUM INTO would create a file: refused."""
        target = os.path.abspath(self.mktemp())
        catalogue = self.read_only()
        self.assertRaises(ReadOnlyRefused, catalogue.query, f"ATTACH '{target}' AS other", 10)
        self.assertRaises(ReadOnlyRefused, catalogue.query, f"VACUUM INTO '{target}'", 10)
        self.assertFalse(os.path.exists(target))

    def test_schema_described(self):
        rows = self.read_only().query("PRAGMA table_info(dicom_metadata)", 100)
        self.assertEqual([r[1] for r in rows.rows][1:], list(COLUMNS))

    def test_bad_sql(self):
        catalogue = self.read_only()
        with self.assertRaises(CatalogueError) as caught:
            catalogue.query("SELEC 1", 10)
        self.assertNotIsInstance(caught.exception, ReadOnlyRefused)
        self.assertIn("syntax error", caught.exception.message)
        self.assertRaises(CatalogueError, catalogue.query, "SELECT 1; SELECT 2", 10)
        self.assertRaises(CatalogueError, catalogue.query, "SELECT nothing FROM dicom_metadata", 10)

    def test_missing(self):
        path = self.mktemp()
        with self.assertRaises(CatalogueError) as caught:
            SQLiteCatalogue.open_read_only(path)
        self.assertIn(f"no catalogue at {path}", caught.exception.message)
        self.assertFalse(os.path.exists(path))

    def test_not_a_catalogue(self):
        path = self.mktemp()
        sqlite3.connect(path).execute("CREATE TABLE other (a)")
        with self.assertRaises(CatalogueError) as caught:
            SQLiteCatalogue.open_read_only(path)
        self.assertIn("not a radx catalogue", caught.exception.message)

    def test_not_sqlite(self):
        path = self.mktemp()
        with open(path, "w") as fp:
            fp.write("not a database" * 100)
        self.assertRaises(CatalogueError, SQLiteCatalogue.open_read_only, path)
        self.assertRaises(CatalogueError, SQLiteCatalogue.open, path)

    def test_reads_while_written(self):
        reader = self.read_only()
        self.catalogue.record(row("/a/new.dcm"))
        self.assertEqual(reader.summary().files, 6)
