"""Several servers, one catalogue in PostgreSQL: real peers on loopback, a real PostgreSQL server, going down and coming back."""

from __future__ import annotations

import os
import sys

import psycopg
from twisted.internet import defer, reactor, task, utils
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from radx.app import tap
from radx.app.options import ScpOptions
from tests import dicomfiles
from tests.interop import DCMTK_ENV, require_dcmtk
from tests.postgresql import Cluster
from tests.test_interop_store import organized_path

# This module's server: started by its first test, stopped when the tests end.
CLUSTER = Cluster()
CALLING_AE = "CATALOGUE-SCU"
PASSWORD = "s3cret"


class SharedCatalogueTests(TestCase):
    timeout = 180

    def setUp(self):
        self.storescu = require_dcmtk("storescu")
        CLUSTER.start()
        # Whatever a test does to the server, the next finds it running.
        self.addCleanup(CLUSTER.start)
        self.url = CLUSTER.database()
        # The servers' URL holds a password (the tests' server trusts
        # anyone): it must show nowhere.
        self.server_url = self.url.replace("postgresql://radx@", f"postgresql://radx:{PASSWORD}@", 1)
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def start(self, node: str) -> tap.ScpService:
        """`radx dicom scp 0 --bind 127.0.0.1 --catalogue URL --catalogue-node NODE` in this process, its own output folder."""
        options = ScpOptions()
        output = os.path.join(self.base, node)
        options.parseOptions(
            ["--output-dir", output, "--catalogue", self.server_url, "--catalogue-node", node, "--bind", "127.0.0.1", "0"]
        )
        service = tap.ScpService(options.config, reactor)
        service.prepare_output_dir()
        service.listen()
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        return service

    def store(self, service: tap.ScpService, *arguments: str):
        port = service.port.getHost().port
        return utils.getProcessOutputAndValue(
            self.storescu, ["-aet", CALLING_AE, "-aec", "RADX-SCP", "127.0.0.1", str(port), *arguments], env=DCMTK_ENV
        )

    def rows(self) -> list:
        with psycopg.connect(self.url) as connection:
            return connection.execute("SELECT node, file_path FROM dicom_metadata ORDER BY node, file_path").fetchall()

    def command(self, *arguments: str):
        return utils.getProcessOutputAndValue(
            sys.executable, ["-m", "radx.app.cli", "dicom", "catalogue", "--database", self.url, *arguments], env=dict(os.environ)
        )

    def lines(self, text: str) -> list[str]:
        return [formatEvent(e) for e in self.events if text in e.get("log_format", "")]

    def all_logged(self) -> str:
        return "\n".join(formatEvent(e) or "" for e in self.events)

    @defer.inlineCallbacks
    def test_two_servers_one_catalogue(self):
        """
        Two servers store at once, each its own series, into one catalogue:
        every instance has its row, with the node that stored it, and
        `radx dicom catalogue --database URL -q` finds the rows of both.
        """
        first_sources = dicomfiles.write_ct_series(self.mktemp(), 20, rows=16, columns=16, seed=41)
        second_sources = dicomfiles.write_ct_series(self.mktemp(), 20, rows=16, columns=16, seed=42)
        first, second = self.start("scp-a"), self.start("scp-b")
        yield defer.gatherResults([first.catching_up, second.catching_up])
        results = yield defer.gatherResults(
            [self.store(first, "+sd", os.path.dirname(first_sources[0])),
             self.store(second, "+sd", os.path.dirname(second_sources[0]))]
        )  # fmt: skip
        for out, err, code in results:
            self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        expected = sorted(
            [("scp-a", organized_path(os.path.join(self.base, "scp-a"), s)) for s in first_sources]
            + [("scp-b", organized_path(os.path.join(self.base, "scp-b"), s)) for s in second_sources]
        )
        self.assertEqual(self.rows(), expected)
        for service in (first, second):
            self.assertEqual(service.factory.stats.catalogue_failures, 0)
        self.assertEqual(self.lines("Not recorded in the catalogue"), [])

        out, err, code = yield self.command("-q", "Modality=CT")
        self.assertEqual((code, err), (0, b""))
        text = out.decode()
        self.assertIn("(40 rows)", text)
        self.assertEqual(text.count(" scp-a "), 20)
        self.assertEqual(text.count(" scp-b "), 20)
        out, err, code = yield self.command(
            "--sql", "SELECT node, COUNT(*) AS files, COUNT(DISTINCT calling_ae_title) AS callers FROM dicom_metadata GROUP BY node ORDER BY node"
        )
        self.assertEqual((out.decode(), code), ("node   files  callers\n-----  -----  -------\nscp-a  20     1\nscp-b  20     1\n(2 rows)\n", 0))
        out, err, code = yield self.command()
        self.assertIn("  Files:     40 ", out.decode())
        self.assertIn("  Nodes:     2\n", out.decode())
        self.assertNotIn(PASSWORD, self.all_logged())

    @defer.inlineCallbacks
    def test_database_down_then_back_then_restart(self):
        """
        PostgreSQL stops while a server runs: storescu still gets Success
        for each instance, one connection attempt for them all (the others
        wait for the back-off), one WARN line (no password, no patient
        data) and the count. Back up and the back-off over: the next
        instance is recorded, one INFO line, and those missed are caught up
        without a restart. The server restarted: nothing left to catch up.
        """
        sources = dicomfiles.write_ct_series(self.mktemp(), 5, rows=16, columns=16, seed=43)
        output = os.path.join(self.base, "scp-a")
        service = self.start("scp-a")
        yield service.catching_up
        catalogue = service.factory.catalogue
        clock = task.Clock()
        catalogue.now = clock.seconds
        out, err, code = yield self.store(service, sources[0])
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        self.assertEqual(len(self.rows()), 1)

        CLUSTER.stop()
        # The connection a thread holds fails at its next write: it is dropped, and that one instance said.
        out, err, code = yield self.store(service, sources[1])
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        attempts = catalogue.connect_attempts
        out, err, code = yield self.store(service, *sources[2:4])
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        for source in sources[1:4]:
            self.assertTrue(os.path.isfile(organized_path(output, source)))
        self.assertEqual((service.factory.stats.stores_succeeded, service.factory.stats.catalogue_failures), (4, 3))
        self.assertEqual(catalogue.connect_attempts, attempts + 1)
        [warning] = self.lines("Catalogue down")
        self.assertIn("postgresql://radx:***@/radx_test_", warning)
        self.assertIn("tried again after 5 s", warning)
        self.assertLessEqual(len(self.lines("Not recorded in the catalogue")), 1)
        for line in self.lines("Catalogue down") + self.lines("Not recorded in the catalogue"):
            for secret in (PASSWORD, "Test^Radx", "RADX-0001"):
                self.assertNotIn(secret, line)
        service.log_statistics()
        statistics = self.lines("Server statistics")
        self.assertIn("catalogue_failures=3", statistics[-1])

        CLUSTER.start()
        clock.advance(5)
        out, err, code = yield self.store(service, sources[4])
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        self.assertEqual(service.factory.stats.catalogue_failures, 3)
        [back] = self.lines("Catalogue back")
        self.assertIn("2 instances stored meanwhile not recorded", back)
        yield service.factory.catching_up
        self.assertEqual([path for _, path in self.rows()], sorted(organized_path(output, s) for s in sources))
        self.assertIn("3 new, 0 changed, 0 removed", self.lines("Catalogue brought up to date")[-1])
        yield service.stopService()

        again = self.start("scp-a")
        yield again.catching_up
        self.assertEqual([path for _, path in self.rows()], sorted(organized_path(output, s) for s in sources))
        self.assertIn("0 new, 0 changed, 0 removed", self.lines("Catalogue brought up to date")[-1])
        self.assertNotIn(PASSWORD, self.all_logged())
