"""The server with --catalogue, against real peers on loopback: rows before Success, a failing catalogue, the next start, readers."""

from __future__ import annotations

import os
import signal
import sqlite3
import sys

from twisted.internet import defer, reactor, utils
from twisted.logger import Logger, LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from radx.app import tap
from radx.app.options import ScpOptions
from radx.catalogue.sqlite import SQLiteCatalogue, own_files
from radx.testing import SteppedThreadPool, ThreadlessReactor
from tests import dicomfiles
from tests.interop import DCMTK_ENV, require_dcmtk
from tests.catalogue_files import write_instance
from tests.test_app_cli import CliTestCase, expected_path, shutdown_block, testdata
from tests.test_interop_store import organized_path

CALLING_AE = "CATALOGUE-SCU"


def rows(database: str, columns: str = "file_path") -> list:
    catalogue = SQLiteCatalogue.open_read_only(database)
    try:
        return catalogue.query(f"SELECT {columns} FROM dicom_metadata ORDER BY file_path", 10_000).rows
    finally:
        catalogue.close()


class CatalogueServerTests(TestCase):
    timeout = 120

    def setUp(self):
        self.storescu = require_dcmtk("storescu")
        base = os.path.abspath(self.mktemp())
        self.output = os.path.join(base, "received")
        self.database = os.path.join(base, "received.db")
        os.makedirs(base)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def start(self) -> tap.ScpService:
        """`radx dicom scp 0 --bind 127.0.0.1 --catalogue DB` in this process; its catch-up started."""
        options = ScpOptions()
        options.parseOptions(["--output-dir", self.output, "--catalogue", self.database, "--bind", "127.0.0.1", "0"])
        service = tap.ScpService(options.config, reactor)
        service.prepare_output_dir()
        service.listen()
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        self.port = service.port.getHost().port
        return service

    def store(self, *arguments: str):
        return utils.getProcessOutputAndValue(
            self.storescu,
            ["-aet", CALLING_AE, "-aec", "RADX-SCP", "127.0.0.1", str(self.port), *arguments],
            env=DCMTK_ENV,
        )

    def lines(self, text: str) -> list[str]:
        return [formatEvent(e) for e in self.events if text in e.get("log_format", "")]

    @defer.inlineCallbacks
    def test_storescu_instances_recorded(self):
        """storescu stores 12 CT images: each has its row, with what the server knows of how it came."""
        sources = dicomfiles.write_ct_series(self.mktemp(), 12, rows=64, columns=64, series=2, seed=31)
        service = self.start()
        yield service.catching_up
        out, err, code = yield self.store("+sd", os.path.dirname(sources[0]))
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        found = rows(
            self.database,
            "file_path, patient_name, patient_id, modality, study_date, series_number, calling_ae_title,"
            " peer, transfer_syntax_uid, received_at IS NOT NULL, file_size, file_mtime",
        )
        expected = sorted(organized_path(self.output, source) for source in sources)
        self.assertEqual([row[0] for row in found], expected)
        for row in found:
            self.assertEqual(row[1:7], ("Test^Radx", "RADX-0001", "CT", "20240102", row[5], CALLING_AE))
            self.assertRegex(row[7], r"^127\.0\.0\.1:\d+$")
            self.assertEqual(row[8:10], ("1.2.840.10008.1.2.1", 1))
            # The file's as it is in place: the next indexing finds it unchanged.
            found_stat = os.stat(row[0])
            self.assertEqual(row[10:], (found_stat.st_size, found_stat.st_mtime_ns))
        self.assertEqual(sorted({row[5] for row in found}), [1, 2])
        self.assertEqual(service.factory.stats.catalogue_failures, 0)
        self.assertEqual(self.lines("Not recorded in the catalogue"), [])

    @defer.inlineCallbacks
    def test_locked_catalogue_then_next_start(self):
        """
        A catalogue locked by another connection: storescu still gets
        Success, the file is stored, one WARN line says why (no patient
        data) and the count goes up. Started again with the lock gone, the
        server indexes the files it did not record.
        """
        sources = dicomfiles.write_ct_series(self.mktemp(), 2, rows=16, columns=16, seed=32)
        first = self.start()
        yield first.catching_up
        locker = sqlite3.connect(self.database)
        self.addCleanup(locker.close)
        locker.execute("BEGIN EXCLUSIVE")
        out, err, code = yield self.store("+sd", os.path.dirname(sources[0]))
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        for source in sources:
            self.assertTrue(os.path.isfile(organized_path(self.output, source)))
        self.assertEqual(first.factory.stats.stores_succeeded, 2)
        self.assertEqual(first.factory.stats.catalogue_failures, 2)
        warnings = self.lines("Not recorded in the catalogue")
        self.assertEqual(len(warnings), 2)
        self.assertIn("database is locked", warnings[0])
        self.assertNotIn("Test^Radx", warnings[0])
        self.assertNotIn("RADX-0001", warnings[0])
        yield first.stopService()
        locker.rollback()
        self.assertEqual(rows(self.database), [])

        second = self.start()
        yield second.catching_up
        expected = sorted(organized_path(self.output, source) for source in sources)
        self.assertEqual([row[0] for row in rows(self.database)], expected)
        [before, after] = self.lines("Catalogue brought up to date")
        self.assertIn("0 new", before)
        self.assertIn("2 new", after)

    @defer.inlineCallbacks
    def test_command_reads_while_the_server_writes(self):
        """`radx dicom catalogue -q` again and again while storescu stores 300 files: every query answers, none is "locked"."""
        sources = dicomfiles.write_ct_series(self.mktemp(), 300, rows=16, columns=16, seed=33)
        service = self.start()
        yield service.catching_up
        storing = self.store("+sd", os.path.dirname(sources[0]))
        finished = []
        storing.addCallback(lambda result: finished.append(result) or result)
        queries = []
        while not finished or not queries:
            out, err, code = yield utils.getProcessOutputAndValue(
                sys.executable,
                ["-m", "radx.app.cli", "dicom", "catalogue", "--database", self.database, "-q", "Modality=CT"],
                env=dict(os.environ),
            )
            queries.append((code, err.decode(errors="replace"), out.count(b"Test^Radx"), bool(finished)))
        out, err, code = yield storing
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        for code, err, _, _ in queries:
            self.assertEqual(code, 0, err)
            self.assertNotIn("locked", err)
        during = [count for _, _, count, after in queries if not after]
        self.assertTrue(during, "no query ran while storescu stored")
        self.assertEqual(sorted(during), during)
        self.assertEqual(len(rows(self.database)), 300)


class CatalogueCommandTests(CliTestCase):
    """`radx dicom scp --catalogue` as a process: a read-only catalogue, its count, and the next start."""

    def test_read_only_catalogue_then_fixed(self):
        ct = testdata("CT_small.dcm")
        database = os.path.join(self.folder, "received.db")
        SQLiteCatalogue.open(database).close()
        os.chmod(database, 0o444)
        arguments = (str(self.port), "--bind", "127.0.0.1", "--output-dir", "received", "--catalogue", database)
        server = self.start(*arguments, "--stats-interval", "1", privileged=False)
        self.assertStoreWorks(server, ct)
        stored = os.path.join(self.folder, expected_path("received", ct))
        self.assertTrue(os.path.isfile(stored))
        server.wait_for_line(
            "INFO: Server statistics echo_count=0 store_count=1 store_failures=0 catalogue_failures=1", timeout=10
        )
        [warning] = [line for line in server.stdout().splitlines() if "Not recorded in the catalogue" in line]
        self.assertTrue(warning.startswith("WARN: "), warning)
        self.assertIn("readonly database", warning)
        self.assertEqual(server.stop(signal.SIGINT), 0, server.describe())
        self.assertTrue(server.stdout().endswith(shutdown_block(0, 1, 1) + "  Not Catalogued:     1\n"), server.describe())

        # SQLite made its -shm file with the database's mode: both are fixed, as `chmod u+w received.db*` does.
        for name in own_files(database):
            if os.path.exists(name):
                os.chmod(name, 0o644)
        server = self.start(*arguments, privileged=False)
        server.wait_for(lambda text: "Catalogue brought up to date" in text, what="the catch-up line")
        self.assertIn("1 new, 0 changed, 0 removed, 0 unchanged", server.stdout())
        self.assertEqual(rows(database), [(stored,)])
        self.assertEqual(server.stop(signal.SIGINT), 0, server.describe())
        self.assertTrue(server.stdout().endswith(shutdown_block(0, 0, 0) + "  Not Catalogued:     0\n"), server.describe())


class CatalogueDownTests(SynchronousTestCase):
    """The server's side of a catalogue that goes down and comes back: its lines, its count, the catch-up, step by step."""

    def setUp(self):
        from radx.scp.factory import SCPFactory, ServerConfig

        self.folder = os.path.abspath(self.mktemp())
        self.database = os.path.join(os.path.dirname(self.folder), "received.db")
        self.pool = SteppedThreadPool()
        config = ServerConfig(output_dir=self.folder, catalogue=self.database)
        self.factory = SCPFactory(config, ThreadlessReactor(), self.pool)
        self.addCleanup(self.factory.catalogue.close)
        self.events = []
        self.factory.log = Logger(observer=self.events.append)
        for number in (1, 2):
            write_instance(os.path.join(self.folder, "s", f"{number}.dcm"), number=number)

    def lines(self, level: LogLevel) -> list[str]:
        return [formatEvent(e) for e in self.events if e["log_level"] == level]

    def rows(self) -> int:
        with sqlite3.connect(self.database) as connection:
            return connection.execute("SELECT COUNT(*) FROM dicom_metadata").fetchone()[0]

    def test_down_then_back(self):
        """Down: one WARN line, the instances counted without one each; back: one INFO line, and the catch-up records them."""
        self.factory.catalogue_down("the catalogue X: connection refused", 5.0)
        for uid in ("1.2.3.1", "1.2.3.2"):
            self.factory.not_catalogued(uid, "the catalogue X: connection refused (not tried again before 5 s have passed)")
        [warning] = self.lines(LogLevel.warn)
        self.assertIn("Catalogue down: the catalogue X: connection refused", warning)
        self.assertEqual(self.factory.stats.catalogue_failures, 2)
        self.factory.catalogue_back(2)
        self.assertEqual(self.lines(LogLevel.info), ["Catalogue back: 2 instances stored meanwhile not recorded; catching up"])
        self.assertEqual(len(self.pool.jobs), 1)
        self.pool.run_all()
        self.assertEqual(self.rows(), 2)
        self.assertIn("2 new", self.lines(LogLevel.info)[-1])
        # Up again: a failure is one line an instance, as before.
        self.factory.not_catalogued("1.2.3.3", "the catalogue X: database is locked")
        self.assertEqual(len(self.lines(LogLevel.warn)), 2)

    def test_one_catch_up_at_a_time(self):
        """Asked again while one runs: the same Deferred, and one more after it, not two at once on the threadpool."""
        first = self.factory.catch_up(2**62)
        self.assertIs(self.factory.catch_up(2**62), first)
        self.assertIs(self.factory.catch_up(2**62), first)
        self.assertEqual(len(self.pool.jobs), 1)
        self.pool.run_one()
        self.assertNoResult(first)
        self.assertEqual(len(self.pool.jobs), 1)
        self.pool.run_one()
        self.successResultOf(first)
        self.assertEqual(self.pool.jobs, [])
        self.assertEqual(self.rows(), 2)
        self.assertEqual(len([line for line in self.lines(LogLevel.info) if "brought up to date" in line]), 2)
