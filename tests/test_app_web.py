"""--http: /metrics scraped before and after real DCMTK peers, /healthz, /readyz draining, read-only and full.

The server runs in this process on the real reactor, or as the `radx
dicom scp` command; everything listens on 127.0.0.1 on ports the system
chooses, and is read back from the listening ports or the banner.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile

from prometheus_client.parser import text_string_to_metric_families
from pydicom.data import get_testdata_file
from twisted.internet import defer, error, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody

from radx import uids
from radx.app import tap, web
from radx.app.options import ScpOptions
from radx.dimse.fragmenting import message_pdus
from radx.dimse.commands import CStoreRQ
from radx.scp.factory import SCPFactory, ServerConfig
from radx.testing import ImmediateThreadPool, ThreadlessReactor, associate_rq
from tests import dicomfiles
from tests.interop import DCMTK_ENV, require_dcmtk
from tests.test_interop_store import poll, spawn

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
HTTP = "tcp:0:interface=127.0.0.1"


def parse(*arguments: str) -> ScpOptions:
    options = ScpOptions()
    options.parseOptions(list(arguments))
    return options


def metric_values(text: str) -> dict:
    """{(sample name, sorted labels): value} of a /metrics page."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def delta(before: dict, after: dict, name: str, **labels) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0) - before.get(key, 0)


class HeldAssociation(protocol.Protocol):
    """A peer that associates, starts a C-STORE and sends only part of its data set: the association stays busy."""

    def __init__(self) -> None:
        self.accepted = defer.Deferred()
        self.closed = defer.Deferred()
        self.received = b""

    def connectionMade(self) -> None:
        request = associate_rq(
            calling_ae_title="HOLDER",
            contexts=((1, CT_IMAGE_STORAGE, (uids.IMPLICIT_VR_LITTLE_ENDIAN,)),),
        )
        self.transport.write(request.encode())

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.accepted is not None and self.received[:1] == b"\x02":
            accepted, self.accepted = self.accepted, None
            command = CStoreRQ(
                message_id=1, affected_sop_class_uid=CT_IMAGE_STORAGE, affected_sop_instance_uid="1.2.3.4"
            ).encode()
            pdus = message_pdus(1, command, 16384, command=True)
            # The first of several data-set PDUs: the data set has begun, not ended.
            pdus += message_pdus(1, b"\x08\x00\x16\x00" + b"\x00" * 40000, 16384, command=False)[:1]
            self.transport.write(b"".join(pdu.encode() for pdu in pdus))
            accepted.callback(None)

    def connectionLost(self, reason=None) -> None:
        self.closed.callback(None)


class WebServerTestCase(TestCase):
    timeout = 120

    def setUp(self):
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(self.pool.closeCachedConnections)
        self.agent = Agent(reactor, pool=self.pool)

    def start(self, *arguments: str, output_dir: str | None = None) -> tap.ScpService:
        if output_dir is None:
            output_dir = self.mktemp()
        options = parse("0", "--bind", "127.0.0.1", "--output-dir", output_dir, "--http", HTTP, *arguments)
        self.service = tap.ScpService(options.config, reactor)
        # Not the concern here, and its timer would outlive the test.
        self.service.factory.release_memory = None
        self.service.startService()
        self.addCleanup(lambda: self.service.running and self.service.stopService())
        self.dicom_port = self.service.port.getHost().port
        self.http_port = self.service.http_port.getHost().port
        return self.service

    @defer.inlineCallbacks
    def get(self, path: str, port: int | None = None):
        """(status code, body text) of GET path."""
        url = f"http://127.0.0.1:{port or self.http_port}{path}".encode("ascii")
        response = yield self.agent.request(b"GET", url)
        body = yield readBody(response)
        return response.code, body.decode("utf-8")

    @defer.inlineCallbacks
    def scrape(self, port: int | None = None):
        code, text = yield self.get("/metrics", port)
        self.assertEqual(code, 200, text)
        return metric_values(text)

    def run_dcmtk(self, tool: str, *arguments: str):
        return defer.ensureDeferred(self._run_tool(require_dcmtk(tool), arguments))

    async def _run_tool(self, path, arguments):
        from twisted.internet import utils

        out, err, code = await utils.getProcessOutputAndValue(path, arguments, env=DCMTK_ENV)
        return (out + err).decode("utf-8", "replace"), code


class MetricsTests(WebServerTestCase):
    @defer.inlineCallbacks
    def test_counters_match_what_was_sent(self):
        """N C-ECHOs, M C-STOREs (one refused as a duplicate), one rejected association: the counters say so."""
        self.start("--on-duplicate", "reject")
        before = yield self.scrape()
        port = str(self.dicom_port)

        echoes = 3
        for _ in range(echoes):
            text, code = yield self.run_dcmtk("echoscu", "-aet", "ECHOER", "-aec", "RADX-SCP", "127.0.0.1", port)
            self.assertEqual(code, 0, text)
        text, code = yield self.run_dcmtk("echoscu", "-aet", "ECHOER", "-aec", "NOT-RADX", "127.0.0.1", port)
        self.assertIn("Called AE Title Not Recognized", text)

        folder = tempfile.mkdtemp(prefix="radx-metrics-")
        self.addCleanup(shutil.rmtree, folder, ignore_errors=True)
        sources = dicomfiles.write_ct_series(folder, 3, seed=700)
        # The first again, last: refused with 0111 under --on-duplicate reject.
        sent = [*sources, sources[0]]
        text, code = yield self.run_dcmtk("storescu", "-v", "-aet", "STORER", "-aec", "RADX-SCP", "127.0.0.1", port, *sent)
        self.assertEqual(text.count("Received Store Response (Success)"), 3, text)
        # storescu has its A-RELEASE-RP; the server may not yet have seen the close.
        factory = self.service.factory
        yield factory._when(lambda: not factory.connections)

        after = yield self.scrape()
        self.assertEqual(delta(before, after, "radx_c_echo_requests_total"), echoes)
        self.assertEqual(delta(before, after, "radx_associations_accepted_total"), echoes + 1)
        self.assertEqual(
            delta(before, after, "radx_associations_rejected_total", reason="called_ae_not_recognized"), 1
        )
        self.assertEqual(delta(before, after, "radx_c_store_requests_total"), 4)
        self.assertEqual(
            delta(before, after, "radx_c_store_responses_total", status="0000", calling_ae="STORER"), 3
        )
        self.assertEqual(
            delta(before, after, "radx_c_store_responses_total", status="0111", calling_ae="STORER"), 1
        )
        self.assertEqual(delta(before, after, "radx_storage_seconds_count"), 3)
        self.assertGreater(delta(before, after, "radx_storage_seconds_sum"), 0)
        data_set_bytes = sum(len(dicomfiles.data_set_bytes(path)) for path in sent)
        self.assertGreater(delta(before, after, "radx_received_bytes_total"), data_set_bytes)
        self.assertEqual(after[("radx_associations_open", ())], 0)
        self.assertGreater(after[("radx_output_free_bytes", ())], 0)

    @defer.inlineCallbacks
    def test_many_calling_ae_titles_make_at_most_33_series(self):
        """40 calling AE titles, one C-STORE each: 32 titles of their own, the rest counted as other."""
        self.start()
        source = get_testdata_file("CT_small.dcm")
        for number in range(40):
            text, code = yield self.run_dcmtk(
                "storescu", "-aet", f"SCU{number:02}", "-aec", "RADX-SCP", "127.0.0.1", str(self.dicom_port), source
            )
            self.assertEqual(code, 0, text)
        values = yield self.scrape()
        series = {
            dict(labels)["calling_ae"]: value
            for (name, labels), value in values.items()
            if name == "radx_c_store_responses_total"
        }
        self.assertEqual(len(series), 33)
        self.assertEqual(series["other"], 8)
        self.assertEqual(series["SCU00"], 1)
        self.assertEqual(sum(series.values()), 40)

    @defer.inlineCallbacks
    def test_openmetrics_when_asked(self):
        self.start()
        url = f"http://127.0.0.1:{self.http_port}/metrics".encode("ascii")
        from twisted.web.http_headers import Headers

        response = yield self.agent.request(
            b"GET", url, Headers({b"accept": [b"application/openmetrics-text; version=1.0.0"]})
        )
        body = yield readBody(response)
        self.assertTrue(response.headers.getRawHeaders(b"content-type")[0].startswith(b"application/openmetrics-text"))
        self.assertTrue(body.endswith(b"# EOF\n"))


class ProbeTests(WebServerTestCase):
    @defer.inlineCallbacks
    def test_healthz_and_readyz(self):
        self.start()
        self.assertEqual((yield self.get("/healthz")), (200, "ok\n"))
        self.assertEqual((yield self.get("/readyz")), (200, "ready\n"))
        code, _ = yield self.get("/nothing")
        self.assertEqual(code, 404)

    @defer.inlineCallbacks
    def test_readyz_503_while_draining(self):
        """Shutdown begun with a C-STORE half-received: /readyz says 503 until the port closes after the drain."""
        service = self.start("--drain-timeout", "60")
        self.assertEqual((yield self.get("/readyz")), (200, "ready\n"))
        peer = HeldAssociation()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.dicom_port), peer)
        yield peer.accepted
        yield poll(lambda: any(p.busy for p in service.factory.active), 10, "the association to be busy")
        values = yield self.scrape()
        self.assertEqual(values[("radx_associations_open", ())], 1)

        stopped = service.stopService()
        self.assertNoResult(stopped)
        self.assertEqual((yield self.get("/readyz")), (503, "draining: the server is shutting down\n"))
        self.assertEqual((yield self.get("/healthz")), (200, "ok\n"))

        peer.transport.abortConnection()
        yield peer.closed
        yield stopped
        # After the drain, the HTTP port is closed too.
        with self.assertRaises(error.ConnectionRefusedError):
            yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.http_port), protocol.Protocol())

    def mount_tmpfs(self, size: str) -> str:
        mount_point = tempfile.mkdtemp(prefix="radx-readyz-")
        self.addCleanup(os.rmdir, mount_point)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mount_point], check=True, timeout=30)

        def unmount():
            # The stopped server's folder descriptors may hold it a while yet: then lazily.
            if subprocess.run(["umount", mount_point], capture_output=True, timeout=30).returncode != 0:
                subprocess.run(["umount", "-l", mount_point], check=True, timeout=30)

        self.addCleanup(unmount)
        return mount_point

    @defer.inlineCallbacks
    def test_readyz_503_on_a_read_only_output_folder(self):
        mount_point = self.mount_tmpfs("4m")
        self.start(output_dir=os.path.join(mount_point, "out"))
        subprocess.run(["mount", "-o", "remount,ro", mount_point], check=True, timeout=30)
        self.assertEqual(
            (yield self.get("/readyz")), (503, "output folder not writable: read-only file system\n")
        )

    @defer.inlineCallbacks
    def test_readyz_503_under_min_free_space(self):
        mount_point = self.mount_tmpfs("1m")
        self.start("--min-free-space", "2MiB", output_dir=os.path.join(mount_point, "out"))
        code, text = yield self.get("/readyz")
        self.assertEqual(code, 503)
        self.assertRegex(text, r"^free space \d+ bytes, under --min-free-space 2097152\n$")
        values = yield self.scrape()
        self.assertLessEqual(values[("radx_output_free_bytes", ())], 1 << 20)

    def test_http_port_in_use_stops_the_start(self):
        self.start()
        taken = f"tcp:{self.http_port}:interface=127.0.0.1"
        second = tap.ScpService(parse("0", "--bind", "127.0.0.1", "--output-dir", self.mktemp(), "--http", taken).config, reactor)
        error = self.assertRaises(tap.StartupError, second.prepare)
        self.assertEqual(str(error), f"--http: cannot listen on {taken!r}: address already in use")
        self.assertIsNone(second.port)
        self.assertIsNone(second.http_port)

    def test_not_an_endpoint(self):
        second = tap.ScpService(parse("0", "--bind", "127.0.0.1", "--output-dir", self.mktemp(), "--http", "nope:1").config, reactor)
        error = self.assertRaises(tap.StartupError, second.prepare)
        self.assertIn("--http: 'nope:1' is not a Twisted endpoint", str(error))
        self.assertIsNone(second.port)


class ReadinessTests(SynchronousTestCase):
    """The cache of the folder's probe, on a clock."""

    def setUp(self):
        self.clock = ThreadlessReactor()
        self.factory = SCPFactory(ServerConfig(output_dir=self.mktemp()), self.clock, None)
        os.makedirs(self.factory.config.output_dir)
        self.probes = 0
        self.readiness = web.Readiness(self.clock, ImmediateThreadPool(), self.factory)
        probe = self.readiness.probe

        def counted():
            self.probes += 1
            return probe()

        self.readiness.probe = counted

    def test_probe_cached_for_two_seconds(self):
        self.assertEqual(self.successResultOf(self.readiness.check()), (True, "ready"))
        self.clock.advance(web.READY_CACHE_SECONDS - 0.5)
        self.assertEqual(self.successResultOf(self.readiness.check()), (True, "ready"))
        self.assertEqual(self.probes, 1)
        self.clock.advance(0.5)
        self.successResultOf(self.readiness.check())
        self.assertEqual(self.probes, 2)

    def test_draining_needs_no_probe(self):
        self.factory.accepting = False
        self.assertEqual(self.successResultOf(self.readiness.check()), (False, "draining: the server is shutting down"))
        self.assertEqual(self.probes, 0)


class CommandTests(WebServerTestCase):
    """`radx dicom scp --http`, the real command."""

    @defer.inlineCallbacks
    def test_radx_dicom_scp_serves_metrics(self):
        output = self.mktemp()
        server = spawn(
            sys.executable,
            "-m", "radx.app.cli", "dicom", "scp", "0", "--bind", "127.0.0.1",
            "--output-dir", output, "--http", HTTP, "--min-free-space", "1MiB",
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        self.addCleanup(lambda: server.ended.called or server.transport.signalProcess("KILL"))
        yield server.wait_for_output(b"Press Ctrl+C", 30)
        lines = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in server.text.splitlines() if ":" in line}
        dicom_port = lines["Listen Address"].rsplit(":", 1)[-1]
        http_port = int(lines["HTTP Address"].split()[0].rsplit(":", 1)[-1])

        self.assertEqual((yield self.get("/healthz", http_port)), (200, "ok\n"))
        self.assertEqual((yield self.get("/readyz", http_port)), (200, "ready\n"))
        for _ in range(2):
            text, code = yield self.run_dcmtk("echoscu", "-aec", "RADX-SCP", "127.0.0.1", dicom_port)
            self.assertEqual(code, 0, text)
        values = yield self.scrape(http_port)
        self.assertEqual(values[("radx_c_echo_requests_total", ())], 2)
        self.assertEqual(values[("radx_associations_accepted_total", ())], 2)

        server.transport.signalProcess(signal.SIGINT)
        ended = yield server.ended
        self.assertEqual(getattr(ended, "exitCode", None), 0, server.text)
        self.assertIn("C-ECHO Requests:    2", server.text)

    @defer.inlineCallbacks
    def test_twistd_radx_scp_serves_probes(self):
        folder = self.mktemp()
        os.makedirs(folder)
        server = spawn(
            sys.executable,
            "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=", "radx-scp", "--output-dir", os.path.join(folder, "out"), "--bind", "127.0.0.1",
            "--http", HTTP, "0",
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        self.addCleanup(lambda: server.ended.called or server.transport.signalProcess("KILL"))
        yield server.wait_for_output(b"paths=/metrics,/healthz,/readyz", 30)
        http_port = int(server.text.split("HTTP listening address=127.0.0.1:", 1)[1].split()[0])
        self.assertEqual((yield self.get("/readyz", http_port)), (200, "ready\n"))
        values = yield self.scrape(http_port)
        self.assertEqual(values[("radx_c_echo_requests_total", ())], 0)

        server.transport.signalProcess(signal.SIGTERM)
        yield server.ended
        self.assertIn("Server Shut Down.", server.text)
