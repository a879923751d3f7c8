"""The audit record of each association, JSON log lines, and the security flags of the real commands."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess

from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from radx import uids
from radx.app.jsonlog import event_as_json
from radx.scp.factory import ServerConfig
from radx.testing import ScpHarness, associate_rq, echo_rq_bytes, store_rq_bytes
from radx.ul.pdu import AAbort, AReleaseRQ
from tests.certificates import PKI
from tests.interop import DCMTK_ENV, require_dcmtk, reserved_port
from tests.test_app_cli import READY, CliTestCase, RadxServer, run_radx, wait_until_running
from tests.test_app_tap import TwistdTestCase, listening, read, wait_until

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"

AUDIT_LINE = re.compile(
    r"^Association ended peer=(?P<peer>\S+) tls_subject=(?P<tls_subject>.+) calling_ae=(?P<calling_ae>\S+)"
    r" called_ae=(?P<called_ae>\S+) accepted=(?P<accepted>\d+/\d+) contexts=(?P<contexts>\S+) stored=(?P<stored>\d+) failed=(?P<failed>\d+)"
    r" duration=(?P<duration>[\d.]+)s outcome=(?P<outcome>\S+)$"
)


class AuditRecordTests(SynchronousTestCase):
    """One record per association, at its end, whatever the end."""

    def setUp(self):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.harness = ScpHarness(ServerConfig(output_dir=self.mktemp(), fsync=False))

    def audits(self) -> list[dict]:
        return [event for event in self.events if event.get("audit")]

    def audit_line(self) -> dict:
        [event] = self.audits()
        match = AUDIT_LINE.match(formatEvent(event))
        self.assertIsNotNone(match, formatEvent(event))
        return match.groupdict()

    def test_released_association(self):
        contexts = ((1, uids.VERIFICATION_SOP_CLASS, (uids.IMPLICIT_VR_LITTLE_ENDIAN,)),
                    (3, CT, (uids.EXPLICIT_VR_LITTLE_ENDIAN,)))
        self.harness.send(associate_rq(calling_ae_title="CT-1", contexts=contexts).encode())
        self.harness.send(echo_rq_bytes())
        self.harness.send(echo_rq_bytes(message_id=2))
        self.harness.reactor.advance(2.5)
        self.harness.send(AReleaseRQ().encode())
        self.assertEqual(self.audits(), [])  # not before the end
        self.harness.disconnect()
        self.assertEqual(
            self.audit_line(),
            {
                "peer": "127.0.0.1:40000",
                "tls_subject": "-",
                "calling_ae": "CT-1",
                "called_ae": "RADX-SCP",
                "accepted": "2/2",
                "contexts": "1.2.840.10008.1.1/1.2.840.10008.1.2",
                "stored": "0",
                "failed": "0",
                "duration": "2.500",
                "outcome": "released",
            },
        )
        [event] = self.audits()
        self.assertEqual(event["duration"], 2.5)
        self.assertEqual(
            event["accepted_contexts"],
            ["1.2.840.10008.1.1/1.2.840.10008.1.2", "1.2.840.10008.5.1.4.1.1.2/1.2.840.10008.1.2.1"],
        )
        self.assertEqual(event["log_level"], LogLevel.info)

    def test_rejected_association(self):
        self.harness.send(associate_rq(called_ae_title="SOMEONE-ELSE").encode())
        self.harness.disconnect()
        record = self.audit_line()
        self.assertEqual(
            (record["outcome"], record["accepted"], record["contexts"], record["called_ae"]),
            ("rejected", "0/1", "-", "SOMEONE-ELSE"),
        )

    def test_aborted_by_peer(self):
        self.harness.send(associate_rq().encode())
        self.harness.send(AAbort(0, 0).encode())
        self.harness.disconnect()
        self.assertEqual(self.audit_line()["outcome"], "aborted-by-peer")

    def test_connection_closed_without_release(self):
        self.harness.send(associate_rq().encode())
        self.harness.disconnect()
        self.assertEqual(self.audit_line()["outcome"], "aborted")

    def test_idle_timeout_abort(self):
        self.harness.send(associate_rq().encode())
        self.harness.reactor.advance(self.harness.factory.config.idle_timeout + 1)
        self.harness.disconnect()
        self.assertEqual(self.audit_line()["outcome"], "aborted")

    def test_failed_store_is_counted(self):
        """A C-STORE refused (SOP class not that of its context) counts as failed; no UID but UIDs logged."""
        self.harness.send(associate_rq(contexts=((1, CT, (uids.IMPLICIT_VR_LITTLE_ENDIAN,)),)).encode())
        self.harness.send(store_rq_bytes(b"\x08\x00\x16\x00", MR, "1.2.3.4"))
        self.harness.send(AReleaseRQ().encode())
        self.harness.disconnect()
        record = self.audit_line()
        self.assertEqual((record["stored"], record["failed"]), ("0", "1"))

    def test_no_record_without_an_associate_request(self):
        self.harness.send(b"")
        self.harness.disconnect()
        self.assertEqual(self.audits(), [])


class JsonLineTests(SynchronousTestCase):
    def event(self, **fields):
        event = dict(log_time=0.25, log_level=LogLevel.info, log_namespace="radx.scp.protocol")
        event.update(fields)
        return event

    def test_keys_and_fields(self):
        line = event_as_json(self.event(log_format="Stored peer={peer} count={count:03d}", peer="a:1", count=7, other=1))
        self.assertNotIn("\n", line)
        self.assertEqual(
            json.loads(line),
            {
                "time": "1970-01-01T00:00:00.250+00:00",
                "level": "info",
                "namespace": "radx.scp.protocol",
                "message": "Stored peer=a:1 count=007",
                "peer": "a:1",
                "count": 7,
            },
        )

    def test_reserved_names_and_objects(self):
        record = json.loads(
            event_as_json(self.event(log_format="{level} {thing.real}", level="x", thing=complex(1, 2)))
        )
        self.assertEqual((record["level"], record["field_level"], record["thing"]), ("info", "x", "(1+2j)"))

    def test_failure(self):
        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()
        record = json.loads(event_as_json(self.event(log_format="Oops", log_failure=failure)))
        self.assertEqual(record["error"], "division by zero")

    def test_audit_flag(self):
        record = json.loads(
            event_as_json(self.event(log_format="Association ended", audit=True, pairs=("a/b", "c/d"), thing=object))
        )
        self.assertIs(record["audit"], True)
        self.assertEqual(record["pairs"], ["a/b", "c/d"])
        self.assertEqual(record["thing"], "<class 'object'>")


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class CommandTests(CliTestCase):
    """`radx dicom scp` with the security flags, in a subprocess."""

    def setUp(self):
        super().setUp()
        self.pki = PKI(os.path.join(self.folder, "pki"))

    def tls_flags(self, *extra: str) -> list[str]:
        pki = self.pki
        return ["--tls-cert", pki.server.cert, "--tls-key", pki.server.key, "--tls-ca", pki.ca.cert, *extra]

    def dcmtk_client_tls(self) -> list[str]:
        return ["+tls", self.pki.client.key, self.pki.client.cert, "+cf", self.pki.ca.cert]

    def test_json_log_format(self):
        """Every stdout line is a JSON object; the audit record carries its fields; the banner is on stderr."""
        server = self.start_json(str(self.port), "--output-dir", "received")
        self.assertEchoWorks(server)
        server.wait_for(lambda text: '"audit": true' in text, what="the audit record")
        self.assertEqual(server.stop(signal.SIGTERM), 0, server.describe())
        self.assertIn("Server shutting down...\n", server.stderr())
        records = json_lines(server.stdout())
        [audit] = [record for record in records if record.get("audit")]
        self.assertEqual(audit["calling_ae"], "ECHOSCU")
        self.assertEqual(audit["outcome"], "released")
        self.assertEqual(audit["contexts"], "1.2.840.10008.1.1/1.2.840.10008.1.2")
        self.assertEqual(audit["accepted_contexts"], ["1.2.840.10008.1.1/1.2.840.10008.1.2"])
        self.assertTrue(audit["message"].startswith("Association ended peer=127.0.0.1:"))
        self.assertEqual({"time", "level", "namespace", "message"} - set(audit), set())
        self.assertIn("C-ECHO request received calling_ae=ECHOSCU count=1", [r["message"] for r in records])
        self.assertIn("DICOM SCP server started", server.stderr())
        self.assertIn("C-ECHO Requests:    1", server.stderr())

    def start_json(self, *arguments: str) -> RadxServer:
        """`radx dicom scp --log-format json ARGUMENTS`: its banner comes on stderr."""
        server = RadxServer(self, ["--log-format", "json", *arguments], self.folder)
        wait_until(lambda: READY in server.stderr() or server.process.poll() is not None, 20, "the banner",
                   server.describe)
        self.assertIsNone(server.process.poll(), server.describe())
        wait_until_running(server.process)
        return server

    def test_tls_and_plain_listeners_with_allow_lists(self):
        tls_port = reserved_port(self)
        server = self.start(
            str(self.port), *self.tls_flags("--tls-port", str(tls_port), "--require-peer-cert"),
            "--allow-calling-aet", "ECHOSCU", "--allow-ip", "127.0.0.0/8", "--allow-ip", "::1",
            "--output-dir", "received",
        )
        self.assertIn(f"  Listen Address:    :{self.port}\n  TLS Address:       :{tls_port} (client certificate required)\n",
                      server.stdout())
        done = self.tool(self.echoscu, *self.dcmtk_client_tls(), "-aec", "RADX-SCP", "127.0.0.1", str(tls_port))
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr + server.describe())
        self.assertEchoWorks(server)
        refused = self.tool(self.echoscu, "-aet", "OTHER", "-aec", "RADX-SCP", "127.0.0.1", str(self.port))
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("Calling AE Title Not Recognized", refused.stdout + refused.stderr)
        server.wait_for(lambda text: text.count("INFO: Association ended") == 3, what="three audit lines")
        self.assertIn(f"tls_subject={self.pki.client.subject} calling_ae=ECHOSCU", server.stdout())
        self.assertStopsCleanly(server)

    def test_tls_only_on_port(self):
        server = self.start(str(self.port), *self.tls_flags(), "--output-dir", "received")
        self.assertIn(f"  TLS Address:       :{self.port} (TLS only, client certificate required)\n", server.stdout())
        done = self.tool(self.echoscu, *self.dcmtk_client_tls(), "-aec", "RADX-SCP", "127.0.0.1", str(self.port))
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr + server.describe())
        plain = self.echo()
        self.assertNotEqual(plain.returncode, 0)
        server.wait_for(lambda text: "INFO: TLS handshake failed peer=127.0.0.1:" in text, what="the handshake line")
        self.assertNotIn("Traceback", server.stdout() + server.stderr())
        self.assertStopsCleanly(server)

    def test_unusable_tls_files_are_startup_errors(self):
        missing = os.path.join(self.folder, "missing.key")
        cases = [
            (["--tls-key", missing], f"Error: --tls-key {missing}: no such file or directory\n"),
            (["--tls-key", self.pki.client.key],
             f"Error: --tls-key {self.pki.client.key}: the key does not match the certificate in {self.pki.server.cert}\n"),
        ]
        for override, expected in cases:
            flags = self.tls_flags()
            flags[flags.index("--tls-key"):flags.index("--tls-key") + 2] = override
            done = run_radx(self, "dicom", "scp", str(self.port), *flags, cwd=self.folder)
            self.assertEqual((done.returncode, done.stdout, done.stderr), (1, "", expected))

    def test_flag_combinations_are_usage_errors(self):
        for flags, message in (
            (["--tls-cert", self.pki.server.cert], "Error: --tls-cert and --tls-key go together"),
            (["--require-peer-cert"], "Error: --require-peer-cert needs --tls-ca"),
            (["--allow-ip", "10.0.0.1/8"], "Error: --allow-ip: '10.0.0.1/8' is not"),
            (["--log-format", "xml"], "Error: --log-format: 'xml' is not text or json"),
        ):
            done = run_radx(self, "dicom", "scp", *flags, cwd=self.folder)
            self.assertEqual(done.returncode, 1, done.stderr)
            self.assertTrue(done.stderr.startswith(message), done.stderr)


class TwistdSecurityTests(TwistdTestCase):
    def test_tls_and_json_under_twistd(self):
        """twistd -n radx-scp with mutual TLS and --log-format json: TLS echo works, the log is JSON lines."""
        pki = PKI(os.path.join(self.folder, "pki"))
        process, output = self.foreground(
            "radx-scp", "--tls-cert", pki.server.cert, "--tls-key", pki.server.key, "--tls-ca", pki.ca.cert,
            "--log-format", "json", "--output-dir", "received", str(self.port),
        )
        wait_until(lambda: listening(self.port) or process.poll() is not None, 20, "listening port", lambda: read(output))
        self.assertIsNone(process.poll(), read(output))
        done = subprocess.run(
            [require_dcmtk("echoscu"), "+tls", pki.client.key, pki.client.cert, "+cf", pki.ca.cert,
             "-aec", "RADX-SCP", "127.0.0.1", str(self.port)],
            env=DCMTK_ENV, capture_output=True, text=True, timeout=30,
        )
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr + read(output))
        wait_until(lambda: '"audit": true' in read(output), 10, "the audit record", lambda: read(output))
        process.send_signal(signal.SIGTERM)
        self.assertIn(process.wait(20), (0, -signal.SIGTERM), read(output))
        records = json_lines(read(output))
        [audit] = [record for record in records if record.get("audit")]
        self.assertEqual(audit["tls_subject"], pki.client.subject)
        self.assertIn("Server Shut Down.", [record["message"] for record in records])


class TwistdObserverTests(SynchronousTestCase):
    """makeService with --log-format json gives twistd's application a JSON observer, unless syslog is asked for."""

    def application_observer(self, **twistd_options):
        from twisted.application.service import Application
        from twisted.logger import ILogObserver

        from radx.app.options import ScpOptions
        from radx.app.tap import makeService

        options = ScpOptions()
        options.parseOptions(["--log-format", "json"])
        options.parent = dict(twistd_options)
        application = Application("radx-scp")
        makeService(options).setServiceParent(application)
        return application.getComponent(ILogObserver, None)

    def test_json_observer(self):
        from radx.app.jsonlog import JsonLogObserver

        self.assertIsInstance(self.application_observer(nodaemon=True, logfile="-"), JsonLogObserver)

    def test_syslog_keeps_twistd_observer(self):
        self.assertIsNone(self.application_observer(nodaemon=True, syslog=True))


class TwistdStartupErrorTests(TwistdTestCase):
    def test_unusable_key_ends_twistd(self):
        pki = PKI(os.path.join(self.folder, "pki"))
        process, output = self.foreground(
            "radx-scp", "--tls-cert", pki.server.cert, "--tls-key", pki.client.key,
            "--output-dir", "received", str(self.port),
        )
        try:
            code = process.wait(20)
        except subprocess.TimeoutExpired:
            self.fail(f"twistd still runs\n{read(output)}")
        self.assertNotEqual(code, 0, read(output))
        self.assertIn(f"--tls-key {pki.client.key}: the key does not match the certificate", read(output))
        self.assertFalse(listening(self.port))
