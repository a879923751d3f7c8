"""Tests for radx.catalogue.postgresql, against a real PostgreSQL server: the shared table, its node key, read-only SQL, the command."""

from __future__ import annotations

import io
import os
import threading
import time

import psycopg
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from radx.app.catalogue_cli import CatalogueOptions, run_catalogue
from radx.catalogue.database import CatalogueError, ReadOnlyRefused
from radx.catalogue.indexer import index
from radx.catalogue.opening import check_target, open_catalogue, open_read_only, own_files, shown
from radx.catalogue.postgresql import PostgreSQLCatalogue, default_node, redacted
from radx.catalogue.received import ReceivedCatalogue
from radx.catalogue.schema import COLUMNS, INDEXED, TABLE
from radx.catalogue.sqlite import SQLiteCatalogue
from tests.catalogue_files import write_instance
from tests.postgresql import Cluster
from tests.test_catalogue_received import CT, EXPLICIT_LE, data_set_of, walked

# This module's server: started by its first test, stopped when the tests end.
CLUSTER = Cluster()


def row(path: str, **values) -> dict:
    return {"file_path": path, "file_name": os.path.basename(path), **values}


class PostgreSQLTestCase(SynchronousTestCase):
    def setUp(self):
        CLUSTER.start()
        self.url = CLUSTER.database()
        self.catalogue = PostgreSQLCatalogue.open(self.url, node="scp-1")
        self.addCleanup(self.catalogue.close)

    def connect(self):
        connection = psycopg.connect(self.url, autocommit=True)
        self.addCleanup(connection.close)
        return connection

    def read_only(self) -> PostgreSQLCatalogue:
        catalogue = PostgreSQLCatalogue.open_read_only(self.url)
        self.addCleanup(catalogue.close)
        return catalogue

    def all_rows(self, columns="node, file_path"):
        return self.connect().execute(f"SELECT {columns} FROM {TABLE} ORDER BY node, file_path").fetchall()


class SchemaTests(PostgreSQLTestCase):
    def test_columns(self):
        """SQLite's columns in SQLite's order, then node: the SQL users write runs on both."""
        found = self.connect().execute(
            "SELECT column_name, data_type, collation_name FROM information_schema.columns"
            " WHERE table_name = %s ORDER BY ordinal_position",
            (TABLE,),
        ).fetchall()
        self.assertEqual([c[0] for c in found], ["id", *COLUMNS, "node"])
        types = {name: kind for name, kind, _ in found}
        self.assertEqual((types["id"], types["file_size"], types["file_mtime"], types["series_number"]),
                         ("bigint", "bigint", "bigint", "integer"))  # fmt: skip
        collations = {name: collation for name, _, collation in found}
        # Byte order, as SQLite's: what files_under's range relies on.
        self.assertEqual(collations["file_path"], "C")

    def test_indexes(self):
        definitions = [d for (d,) in self.connect().execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s", (TABLE,))]
        for column in INDEXED:
            self.assertTrue(any(d.endswith(f"({column})") for d in definitions), (column, definitions))
        self.assertTrue(any("UNIQUE" in d and d.endswith("(node, file_path)") for d in definitions), definitions)

    def test_open_twice_and_at_once(self):
        """Servers started together each find or make the table: none fails for the other's CREATE."""
        url = CLUSTER.database()
        failures = []

        def open_and_close():
            try:
                PostgreSQLCatalogue.open(url).close()
            except Exception as error:  # noqa: BLE001
                failures.append(error)

        threads = [threading.Thread(target=open_and_close) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(failures, [])
        PostgreSQLCatalogue.open(url).close()

    def test_chosen_by_its_url(self):
        for target in (self.url, self.url.replace("postgresql://", "postgres://", 1)):
            catalogue = open_catalogue(target)
            self.addCleanup(catalogue.close)
            self.assertIsInstance(catalogue, PostgreSQLCatalogue)
            self.assertEqual(catalogue.node, default_node())
        self.assertEqual(own_files(self.url), set())
        self.assertIsInstance(open_catalogue(self.mktemp()), SQLiteCatalogue)


class NodeTests(PostgreSQLTestCase):
    def test_record_and_replace(self):
        self.catalogue.record(row("/a/1.dcm", modality="CT", file_size=10))
        self.catalogue.record(row("/a/1.dcm", modality="MR", file_size=20))
        self.assertEqual(self.all_rows("node, file_path, modality, file_size"), [("scp-1", "/a/1.dcm", "MR", 20)])

    def test_same_path_on_two_nodes(self):
        """A path names a file on one machine: the same path stored by two servers is two rows."""
        other = PostgreSQLCatalogue.open(self.url, node="scp-2")
        self.addCleanup(other.close)
        self.catalogue.record(row("/data/1.dcm", modality="CT"))
        other.record(row("/data/1.dcm", modality="MR"))
        other.record(row("/data/1.dcm", modality="US"))
        self.assertEqual(
            self.all_rows("node, file_path, modality"), [("scp-1", "/data/1.dcm", "CT"), ("scp-2", "/data/1.dcm", "US")]
        )

    def test_files_under_is_this_nodes(self):
        other = PostgreSQLCatalogue.open(self.url, node="scp-2")
        self.addCleanup(other.close)
        for path in ("/a/1.dcm", "/a/b/2.dcm", "/ab/3.dcm", "/a.dcm", "/a-b/4.dcm", "/a/\u00e9.dcm"):
            self.catalogue.record(row(path, file_size=1, file_mtime=5))
        other.record(row("/a/9.dcm", file_size=2, file_mtime=6))
        self.assertEqual(
            self.catalogue.files_under("/a"), {"/a/1.dcm": (1, 5), "/a/b/2.dcm": (1, 5), "/a/\u00e9.dcm": (1, 5)}
        )
        self.assertEqual(other.files_under("/a"), {"/a/9.dcm": (2, 6)})

    def test_remove_and_clear_this_nodes(self):
        """An index of a folder, even --rebuild, forgets this node's rows only, never another server's."""
        other = PostgreSQLCatalogue.open(self.url, node="scp-2")
        self.addCleanup(other.close)
        self.catalogue.record_many([row("/a/1.dcm"), row("/a/2.dcm")])
        other.record_many([row("/a/1.dcm"), row("/a/2.dcm")])
        self.catalogue.remove(["/a/2.dcm"])
        self.assertEqual(self.all_rows(), [("scp-1", "/a/1.dcm"), ("scp-2", "/a/1.dcm"), ("scp-2", "/a/2.dcm")])
        self.catalogue.clear()
        self.assertEqual(self.all_rows(), [("scp-2", "/a/1.dcm"), ("scp-2", "/a/2.dcm")])

    def test_many_in_batches(self):
        self.patch(self.catalogue, "BATCH", 3)
        self.catalogue.record_many(row(f"/a/{i}.dcm") for i in range(10))
        self.assertEqual(self.read_only().summary().files, 10)

    def test_threads(self):
        """Storage threads record at once over the one connection."""

        def record(first):
            for i in range(first, first + 25):
                self.catalogue.record(row(f"/t/{i}.dcm"))

        threads = [threading.Thread(target=record, args=(n * 100,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(len(self.all_rows()), 100)

    def test_no_transaction_left_open(self):
        """A read ends its transaction: a connection idle in one would hold back VACUUM and others' DDL."""
        self.catalogue.record(row("/a/1.dcm"))
        self.catalogue.files_under("/a")
        reader = self.read_only()
        reader.summary()
        reader.select(reader.shown, "", [], 10)
        reader.query("SELECT 1", 10)
        for catalogue in (self.catalogue, reader):
            self.assertEqual(catalogue.connection.info.transaction_status, psycopg.pq.TransactionStatus.IDLE)

    def test_index_a_folder(self):
        """The indexer over PostgreSQL: the rows SQLite gets, and the second run reads nothing."""
        folder = os.path.abspath(self.mktemp())
        for number in (1, 2, 3):
            write_instance(os.path.join(folder, "s", f"{number}.dcm"), number=number)
        first = index(self.catalogue, folder)
        self.assertEqual((first.added, first.failures), (3, []))
        second = index(self.catalogue, folder)
        self.assertEqual((second.added, second.unchanged), (0, 3))
        database = self.mktemp()
        sqlite = SQLiteCatalogue.open(database)
        self.addCleanup(sqlite.close)
        index(sqlite, folder)
        columns = ", ".join(c for c in COLUMNS if c != "indexed_at")
        statement = f"SELECT {columns} FROM dicom_metadata ORDER BY file_path"
        self.assertEqual(
            [tuple(r) for r in self.read_only().query(statement, 10).rows],
            SQLiteCatalogue.open_read_only(database).query(statement, 10).rows,
        )


class ReadOnlyTests(PostgreSQLTestCase):
    def setUp(self):
        super().setUp()
        self.catalogue.record_many([row(f"/a/{i}.dcm", modality="CT", patient_name="DOE^JANE") for i in range(5)])

    def test_query(self):
        rows = self.read_only().query("SELECT modality, COUNT(*) AS n FROM dicom_metadata GROUP BY modality", 10)
        self.assertEqual((rows.columns, rows.rows, rows.cut), (["modality", "n"], [("CT", 5)], False))

    def test_percent_is_sql(self):
        """The user's SQL goes as it is: a % is LIKE's, not a parameter marker."""
        rows = self.read_only().query("SELECT COUNT(*) FROM dicom_metadata WHERE patient_name LIKE 'DOE%'", 10)
        self.assertEqual(rows.rows, [(5,)])

    def test_no_rows(self):
        rows = self.read_only().query("SELECT file_path FROM dicom_metadata WHERE modality = 'MR'", 10)
        self.assertEqual((rows.columns, rows.rows, rows.cut), (["file_path"], [], False))

    def test_limit(self):
        rows = self.read_only().query("SELECT file_path FROM dicom_metadata ORDER BY file_path", 3)
        self.assertEqual((len(rows.rows), rows.cut), (3, True))
        # The cut query cancelled, its transaction gone: the next one runs.
        self.assertEqual(self.read_only().query("SELECT 1", 3).rows, [(1,)])

    def test_limit_streams(self):
        """Past the cap, no row is fetched: a query of a billion rows answers at once."""
        catalogue = self.read_only()
        rows = catalogue.query("SELECT generate_series(1, 1000000000)", 3)
        self.assertEqual((rows.rows, rows.cut), ([(1,), (2,), (3,)], True))
        self.assertEqual(catalogue.query("SELECT 2", 3).rows, [(2,)])

    def test_writes_refused(self):
        catalogue = self.read_only()
        for statement in (
            "DELETE FROM dicom_metadata",
            "UPDATE dicom_metadata SET modality = 'MR'",
            "INSERT INTO dicom_metadata (file_path, node) VALUES ('/x', 'n')",
            "DROP TABLE dicom_metadata",
            "CREATE TABLE t (a int)",
            "TRUNCATE dicom_metadata",
            "WITH gone AS (DELETE FROM dicom_metadata RETURNING 1) SELECT COUNT(*) FROM gone",
            "SELECT nextval('dicom_metadata_id_seq')",
        ):
            with self.assertRaises(ReadOnlyRefused, msg=statement) as caught:
                catalogue.query(statement, 10)
            self.assertIn("--sql runs read-only queries", caught.exception.message)
            self.assertIn("read-only transaction", caught.exception.message)
        self.assertEqual(catalogue.summary().files, 5)
        self.assertEqual(len(self.all_rows()), 5)

    def test_one_statement(self):
        """A second statement could end the read-only transaction (COMMIT) and write in the next: refused whole."""
        catalogue = self.read_only()
        for statement in (
            "SELECT 1; DELETE FROM dicom_metadata",
            "COMMIT; DELETE FROM dicom_metadata",
            "SELECT 1; SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; DELETE FROM dicom_metadata",
        ):
            error = self.assertRaises(CatalogueError, catalogue.query, statement, 10)
            self.assertIn("multiple commands", error.message)
        self.assertEqual(len(self.all_rows()), 5)

    def test_read_write_refused(self):
        """The transaction's mode cannot be turned back: SET TRANSACTION READ WRITE after the first query fails."""
        catalogue = self.read_only()
        self.assertRaises(CatalogueError, catalogue.query, "SET TRANSACTION READ WRITE", 10)
        self.assertRaises(ReadOnlyRefused, catalogue.query, "DELETE FROM dicom_metadata", 10)
        self.assertEqual(len(self.all_rows()), 5)

    def test_timeout(self):
        catalogue = self.read_only()
        catalogue.sql_timeout_ms = 200
        error = self.assertRaises(CatalogueError, catalogue.query, "SELECT pg_sleep(30)", 10)
        self.assertEqual(error.message, "--sql: the query ran longer than 0.2 s and was cancelled")
        self.assertEqual(catalogue.query("SELECT 3", 10).rows, [(3,)])

    def test_bad_sql(self):
        """PostgreSQL's first line of why, not a refusal to write; the session goes on."""
        catalogue = self.read_only()
        for statement, why in (
            ("SELEC 1", '--sql: syntax error at or near "SELEC"'),
            ("SELECT nothing FROM dicom_metadata", '--sql: column "nothing" does not exist'),
        ):
            error = self.assertRaises(CatalogueError, catalogue.query, statement, 10)
            self.assertEqual((type(error), error.message), (CatalogueError, why))
            self.assertEqual(catalogue.query("SELECT 4", 10).rows, [(4,)])

    def test_summary_and_select_read_only(self):
        """-q and the summary run read-only too: the session's default."""
        catalogue = self.read_only()
        self.assertEqual(
            catalogue.connection.execute("SHOW default_transaction_read_only").fetchone()[0], "on"
        )
        catalogue.connection.rollback()
        rows = catalogue.select(catalogue.shown, "modality = %s", ["CT"], 10)
        self.assertEqual(rows.columns[-2:], ["node", "file_path"])
        self.assertEqual({r[-2] for r in rows.rows}, {"scp-1"})

    def test_no_table(self):
        url = CLUSTER.database()
        error = self.assertRaises(CatalogueError, PostgreSQLCatalogue.open_read_only, url)
        self.assertIn("has no catalogue (index a folder into it first", error.message)
        error = self.assertRaises(CatalogueError, open_read_only, url)
        self.assertIn("has no catalogue", error.message)


class PasswordTests(SynchronousTestCase):
    """A URL's password is never shown: not in messages, not in logs."""

    def test_redacted(self):
        self.assertEqual(redacted("postgresql://radx:s3cret@db:5432/pacs"), "postgresql://radx:***@db:5432/pacs")
        self.assertEqual(redacted("postgresql://radx@db/pacs"), "postgresql://radx@db/pacs")
        self.assertEqual(redacted("postgresql://db/pacs?password=s3cret&sslmode=require"), "postgresql://db/pacs?password=***&sslmode=require")
        self.assertEqual(redacted("postgres://u:p%40ss@h/d"), "postgres://u:***@h/d")
        self.assertEqual(redacted("postgresql://[::1/x"), "postgresql://***")
        self.assertEqual(shown("postgresql://radx:s3cret@db/pacs"), "postgresql://radx:***@db/pacs")
        self.assertEqual(shown("received.db"), "received.db")

    def test_not_in_errors(self):
        url = "postgresql://radx:s3cret@/radx?host=/nonexistent-radx-folder&connect_timeout=2"
        for opening in (PostgreSQLCatalogue.open, PostgreSQLCatalogue.open_read_only):
            error = self.assertRaises(CatalogueError, opening, url)
            self.assertNotIn("s3cret", error.message)
            self.assertIn("postgresql://radx:***@/radx", error.message)
        # libpq quotes a malformed part of a URL in its message: the password's too.
        for malformed in ("postgresql://radx:s3cret%zz@/radx?host=/nowhere", "postgresql://radx@/radx?password=s3cret%zz&host=/x"):
            error = self.assertRaises(CatalogueError, PostgreSQLCatalogue.open, malformed)
            self.assertNotIn("s3cret", error.message)
            self.assertIn("***", error.message)
        received = ReceivedCatalogue(url)
        why = received.record("/nothing.dcm", {}, EXPLICIT_LE, CT, "1.2.3", None, None)
        self.assertNotIn("s3cret", why)


class ReceivedTests(SynchronousTestCase):
    """The server's rows in PostgreSQL: a server that goes down, comes back; the catch-up."""

    def setUp(self):
        CLUSTER.start()
        self.url = CLUSTER.database()
        self.folder = os.path.abspath(self.mktemp())
        # The back-off's time, advanced by the tests.
        self.clock = Clock()
        self.down, self.back = [], []
        self.received = ReceivedCatalogue(
            CLUSTER.url(self.url.split("/")[3].split("?")[0], password="s3cret"),
            node="scp-7",
            now=self.clock.seconds,
            on_down=lambda why, seconds: self.down.append(seconds),
            on_back=self.back.append,
        )
        self.addCleanup(self.received.close)
        # Whatever a test does to the server, the next finds it running.
        self.addCleanup(CLUSTER.start)

    def record(self, number: int) -> str | None:
        path = write_instance(os.path.join(self.folder, "s", f"{number}.dcm"), number=number)
        return self.received.record(path, walked(data_set_of(path)), EXPLICIT_LE, CT, "1.2.3.9", "MODALITY", "127.0.0.1:4242")

    def rows(self):
        with psycopg.connect(self.url) as connection:
            return connection.execute(f"SELECT node, file_name, calling_ae_title FROM {TABLE} ORDER BY file_name").fetchall()

    def test_recorded_with_its_node(self):
        self.assertIsNone(self.record(1))
        self.assertEqual(self.rows(), [("scp-7", "1.dcm", "MODALITY")])

    def connections(self) -> int:
        name = self.url.split("/")[3].split("?")[0]
        with psycopg.connect(self.url) as connection:
            return connection.execute(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (name,)
            ).fetchone()[0]

    def test_a_connection_a_thread(self):
        """Storage threads write through connections of their own, so that PostgreSQL commits them together; all closed at the end."""
        failures = []
        threads = [threading.Thread(target=lambda n=n: failures.append(self.record(n))) for n in range(1, 4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(failures, [None, None, None])
        self.assertEqual(len(self.rows()), 3)
        self.assertEqual(self.connections(), 3)
        self.received.close()
        # A backend leaves pg_stat_activity a moment after its client closed.
        deadline = time.monotonic() + 10
        while self.connections() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(self.connections(), 0)

    def test_a_row_locked_elsewhere(self):
        """A write that waits past the server's second on another's lock is given up, the connection kept for the next."""
        self.received.busy_timeout_ms = 300
        self.assertIsNone(self.record(1))
        catalogue = self.received._current()
        locker = psycopg.connect(self.url)
        self.addCleanup(locker.close)
        locker.execute("LOCK TABLE dicom_metadata IN EXCLUSIVE MODE")
        started = time.monotonic()
        why = self.record(2)
        self.assertLess(time.monotonic() - started, 5)
        self.assertIn("canceling statement due to statement timeout", why)
        locker.rollback()
        self.assertIsNone(self.record(3))
        self.assertIs(self.received._current(), catalogue)
        self.assertEqual([r[1] for r in self.rows()], ["1.dcm", "3.dcm"])

    def test_server_down_then_back(self):
        """
        Down: the write says why, without the password; back up and the
        back-off over: the next instance opens a connection again and is
        recorded.
        """
        self.assertIsNone(self.record(1))
        CLUSTER.stop()
        for number in (2, 3):
            why = self.record(number)
            self.assertIsNotNone(why)
            self.assertIn(" catalogue postgresql://radx:***@/radx_test_", why)
            self.assertNotIn("s3cret", why)
        CLUSTER.start()
        self.clock.advance(5)
        self.assertIsNone(self.record(4))
        self.assertEqual([r[1] for r in self.rows()], ["1.dcm", "4.dcm"])
        result = self.received.catch_up(self.folder, 2**62)
        self.assertEqual((result.added, result.unchanged), (2, 2))
        self.assertEqual([r[1] for r in self.rows()], ["1.dcm", "2.dcm", "3.dcm", "4.dcm"])

    def test_login_refused(self):
        """A login the database refuses: said, without the password, and tried again once the back-off is over."""
        name = self.url.split("/")[3].split("?")[0]
        self.received = ReceivedCatalogue(f"postgresql://intruder:pa55word@/{name}?host={CLUSTER.folder}", now=self.clock.seconds)
        self.addCleanup(self.received.close)
        for number in (1, 2, 3):
            why = self.record(number)
            self.clock.advance(2.5)
            self.assertEqual(self.received.connect_attempts, (number + 1) // 2)
            self.assertIn('role "intruder" does not exist', why)
            self.assertIn("postgresql://intruder:***@/", why)
            self.assertNotIn("pa55word", why)
        with psycopg.connect(self.url) as connection:
            # Not even the table was made.
            self.assertFalse(connection.execute("SELECT to_regclass('dicom_metadata') IS NOT NULL").fetchone()[0])

    def test_back_off(self):
        """
        Down: one connection attempt, then none until the back-off is over,
        5 s doubling to 60; the instances in between answered at once, not
        recorded, and counted; on_down once. Back: one attempt records, and
        on_back says how many were missed.
        """
        self.assertIsNone(self.record(1))
        CLUSTER.stop()
        # The first failure is the write's on the connection open: it is dropped and opened again at the next.
        self.assertIn("terminating connection", self.record(2))
        number = 3
        self.assertIn("cannot open the catalogue", self.record(number))
        self.assertEqual((self.received.connect_attempts, self.down, self.received.down), (2, [5.0], True))
        for tried, delay in enumerate((5, 10, 20, 40, 60, 60)):
            for _ in range(3):
                number += 1
                why = self.record(number)
                self.assertIn("not tried again", why)
                self.assertNotIn("s3cret", why)
                self.clock.advance(delay / 3 - 0.001)
            self.assertEqual(self.received.connect_attempts, 2 + tried)
            self.clock.advance(0.003)
            number += 1
            self.assertIsNotNone(self.record(number))
        self.assertEqual(self.down, [5.0])
        self.assertEqual(self.back, [])
        CLUSTER.start()
        attempts = self.received.connect_attempts
        self.clock.advance(60)
        number += 1
        self.assertIsNone(self.record(number))
        self.assertEqual(self.received.connect_attempts, attempts + 1)
        # 3 and those after it, up to the one recorded.
        self.assertEqual(self.back, [number - 3])
        self.assertFalse(self.received.down)
        number += 1
        self.assertIsNone(self.record(number))
        self.assertEqual(self.received.connect_attempts, attempts + 1)
        self.assertEqual([r[1] for r in self.rows()], sorted(f"{n}.dcm" for n in (1, number - 1, number)))

    def test_down_at_the_start(self):
        """The start's catch-up cannot connect: the back-off begins there, and the count of instances missed is theirs alone."""
        CLUSTER.stop()
        self.assertRaises(CatalogueError, self.received.catch_up, self.folder, 2**62)
        self.assertEqual((self.down, self.received.down, self.received.connect_attempts), ([5.0], True, 1))
        self.assertIn("not tried again", self.record(1))
        self.assertEqual(self.received.connect_attempts, 1)
        CLUSTER.start()
        self.clock.advance(5)
        self.assertIsNone(self.record(2))
        self.assertEqual(self.back, [1])

    def test_catch_up_fails_clearly(self):
        self.received.catch_up(self.folder, 2**62)
        CLUSTER.stop()
        error = self.assertRaises(CatalogueError, self.received.catch_up, self.folder, 2**62)
        self.assertNotIn("s3cret", error.message)


class CommandTests(PostgreSQLTestCase):
    """`radx dicom catalogue --database postgresql://...`: index, summary, -q, --sql, as with SQLite."""

    def run_command(self, *arguments: str):
        options = CatalogueOptions()
        options.parseOptions(list(arguments))
        out, err = io.StringIO(), io.StringIO()
        code = run_catalogue(options.config, out, err, tty=False)
        return out.getvalue(), err.getvalue(), code

    def setUp(self):
        super().setUp()
        self.folder = os.path.abspath(self.mktemp())
        for number in (1, 2):
            write_instance(os.path.join(self.folder, "1.2.3", f"{number}.dcm"), number=number)
        write_instance(os.path.join(self.folder, "9.8", "1.dcm"), PatientID="PID-2", Modality="MR", StudyInstanceUID="9.8")

    def test_index_summary_query(self):
        url = CLUSTER.url(self.url.split("/")[3].split("?")[0], password="s3cret")
        out, err, code = self.run_command(self.folder, "--database", url, "--node", "archive-1")
        self.assertEqual((err, code), ("", 0))
        self.assertIn(": 3 new, 0 changed, 0 removed, 0 unchanged\n", out)
        self.assertIn("Catalogue: postgresql://radx:***@/radx_test_", out)
        self.assertIn("  Files:     3 ", out)
        self.assertIn("  Studies:   2\n  Series:    1\n  Nodes:     1\n", out)
        self.assertNotIn("s3cret", out)
        out, err, code = self.run_command("--database", url, "-q", "Modality=MR")
        self.assertEqual((err, code), ("", 0))
        self.assertIn("archive-1", out)
        self.assertIn(os.path.join(self.folder, "9.8", "1.dcm"), out)
        self.assertIn("(1 row)", out)
        out, err, code = self.run_command("--database", url, "-q", "node=archive-1", "-q", "Pat*")
        self.assertEqual((out.splitlines()[-1], code), ("(0 rows)", 0))
        out, err, code = self.run_command("--database", url, "-q", "node=archive-1", "-q", "pid-*")
        self.assertIn("(3 rows)", out)
        out, err, code = self.run_command(
            "--database", url, "--sql", "SELECT node, COUNT(*) AS files FROM dicom_metadata GROUP BY node"
        )
        self.assertEqual((out, code), ("node       files\n---------  -----\narchive-1  3\n(1 row)\n", 0))
        out, err, code = self.run_command("--database", url, "--sql", "DELETE FROM dicom_metadata")
        self.assertEqual(code, 1)
        self.assertIn("Error: --sql runs read-only queries", err)
        self.assertEqual(len(self.all_rows()), 3)

    def test_node_needs_postgresql(self):
        options = CatalogueOptions()
        error = self.assertRaises(Exception, options.parseOptions, [self.folder, "--database", "x.db", "--node", "n"])
        self.assertIn("--node goes with a postgresql:// --database", str(error))

    def test_rebuild_keeps_other_nodes(self):
        other = PostgreSQLCatalogue.open(self.url, node="elsewhere")
        self.addCleanup(other.close)
        other.record(row("/far/away.dcm"))
        out, err, code = self.run_command(self.folder, "--database", self.url, "--node", "here", "--rebuild")
        self.assertEqual((err, code), ("", 0))
        out, err, code = self.run_command(self.folder, "--database", self.url, "--node", "here", "--rebuild")
        self.assertEqual([n for n, _ in self.all_rows()], ["elsewhere"] + ["here"] * 3)

    def test_check_target(self):
        self.assertEqual(check_target(self.url), self.url)
