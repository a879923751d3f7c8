"""`radx dicom echo` and `radx dicom store` over DICOM TLS (PS3.15 B.9), in subprocesses, against real peers.

The peers are radx's own SCP (a plain listener and a TLS one, with and
without client certificates) and DCMTK's storescp with +tls, all on
127.0.0.1 and ephemeral ports. Every certificate is made by the test
(tests/certificates.py: the server's names localhost and 127.0.0.1).
"""

from __future__ import annotations

import os

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from radx.app.scu_cli import EchoOptions, StoreOptions
from radx.tls import client_options
from tests import dicomfiles
from tests.interop import reserved_port
from tests.test_interop_store import organized_path
from tests.test_scu_cli import CommandTestCase
from tests.test_security_tls import TLSServerTestCase

UNTRUSTED = "certificate verify failed (the server's certificate is not from a trusted CA, or not valid now)"


class SCUTLSTestCase(CommandTestCase, TLSServerTestCase):
    """A radx SCP with a plain port (self.port) and a TLS port (self.tls_port); radx run as a command."""

    timeout = 60

    def trusting(self, identity=None, ca=None) -> list[str]:
        """The client's TLS flags: the CA it trusts for the server, and its own certificate if any."""
        flags = ["--tls-ca", ca or self.pki.ca.cert]
        if identity is not None:
            flags += ["--tls-cert", identity.cert, "--tls-key", identity.key]
        return flags

    def echo_command(self, host: str, port: int, *flags: str):
        return self.radx("dicom", "echo", host, str(port), *flags)

    def assertOneLine(self, err: str, expected: str) -> None:
        self.assertEqual(err, expected + "\n")
        self.assertNotIn("Traceback", err)


class EchoOverTLSTests(SCUTLSTestCase):
    @defer.inlineCallbacks
    def test_server_authentication_only(self):
        """A server without --tls-ca: the client verifies it against --tls-ca and sends no certificate."""
        self.start_tls_server(mutual=False)
        out, err, code = yield self.echo_command("localhost", self.tls_port, *self.trusting())
        self.assertEqual(code, 0, err)
        self.assertRegex(out, rf"^C-ECHO to RADX-SCP@localhost:{self.tls_port}: Success \(\d+\.\d ms\)\n$")
        yield self.wait_for_log("Association ended")
        self.assertEqual(self.logs.audits()[0]["tls_subject"], "-")

    @defer.inlineCallbacks
    def test_mutual_tls(self):
        """A server with --tls-ca: the client's certificate is presented, and named in the audit record."""
        self.start_tls_server(mutual=True)
        out, err, code = yield self.echo_command("127.0.0.1", self.tls_port, *self.trusting(self.pki.client), "--count", "2")
        self.assertEqual(code, 0, err)
        self.assertEqual(out.count("Success"), 2, out)
        yield self.wait_for_log("Association ended")
        [audit] = self.logs.audits()
        self.assertEqual((audit["tls_subject"], audit["outcome"]), (self.pki.client.subject, "released"))
        self.assertEqual(self.factory.stats.echo_requests, 2)

    @defer.inlineCallbacks
    def test_untrusted_server_certificate(self):
        """The client trusts another CA: no association, one line with OpenSSL's reason, exit 4."""
        self.start_tls_server(mutual=True)
        out, err, code = yield self.echo_command(
            "localhost", self.tls_port, *self.trusting(self.pki.client, ca=self.pki.other_ca.cert)
        )
        self.assertEqual(code, 4)
        self.assertOneLine(err, f"C-ECHO to RADX-SCP@localhost:{self.tls_port}: TLS handshake failed: {UNTRUSTED}")
        self.assertEqual(self.factory.stats.associations, 0)

    @defer.inlineCallbacks
    def test_tls_alone_trusts_the_system_store(self):
        """--tls without --tls-ca: the test CA is in no system store, so the server is not trusted."""
        self.start_tls_server(mutual=False)
        out, err, code = yield self.echo_command("localhost", self.tls_port, "--tls")
        self.assertEqual(code, 4)
        self.assertOneLine(err, f"C-ECHO to RADX-SCP@localhost:{self.tls_port}: TLS handshake failed: {UNTRUSTED}")

    @defer.inlineCallbacks
    def test_no_client_certificate_for_a_server_that_requires_one(self):
        self.start_tls_server(mutual=True)
        out, err, code = yield self.echo_command("localhost", self.tls_port, *self.trusting())
        self.assertEqual(code, 4)
        # TLS 1.3 says "certificate required" in an alert; TLS 1.2 fails the handshake.
        self.assertRegex(
            err,
            rf"^C-ECHO to RADX-SCP@localhost:{self.tls_port}: TLS handshake failed: "
            r"(tlsv13 alert certificate required \(the server requires a client certificate\)"
            r"|sslv3 alert handshake failure \(the server refused the handshake\))\n$",
        )
        [line] = yield self.wait_for_log("TLS handshake failed")
        self.assertIn("certificate", line)

    @defer.inlineCallbacks
    def test_name_the_certificate_does_not_carry(self):
        self.start_tls_server(mutual=True)
        out, err, code = yield self.echo_command(
            "127.0.0.1", self.tls_port, *self.trusting(self.pki.client), "--tls-server-name", "pacs.example.org"
        )
        self.assertEqual(code, 4)
        self.assertOneLine(
            err,
            f"C-ECHO to RADX-SCP@127.0.0.1:{self.tls_port}: TLS handshake failed:"
            " the certificate does not name pacs.example.org",
        )

    @defer.inlineCallbacks
    def test_server_name_other_than_host(self):
        """Dialling an address, verifying a DNS name: --tls-server-name localhost (the certificate's)."""
        self.start_tls_server(mutual=False)
        out, err, code = yield self.echo_command(
            "127.0.0.1", self.tls_port, "--tls-server-name", "localhost", "--tls-ca", self.pki.ca.cert
        )
        self.assertEqual(code, 0, err)

    @defer.inlineCallbacks
    def test_tls_client_on_the_plain_port(self):
        self.start_tls_server(mutual=True)
        out, err, code = yield self.echo_command("127.0.0.1", self.port, *self.trusting(self.pki.client))
        self.assertEqual(code, 4)
        self.assertOneLine(
            err,
            f"C-ECHO to RADX-SCP@127.0.0.1:{self.port}: TLS handshake failed:"
            " wrong version number (the server does not speak TLS on this port)",
        )

    @defer.inlineCallbacks
    def test_plain_client_on_the_tls_port(self):
        self.start_tls_server(mutual=True)
        out, err, code = yield self.echo_command("127.0.0.1", self.tls_port)
        self.assertEqual(code, 4)
        self.assertRegex(err, rf"^C-ECHO to RADX-SCP@127.0.0.1:{self.tls_port}: Association aborted: .+\n$")
        [line] = yield self.wait_for_log("TLS handshake failed")
        self.assertEqual(self.factory.stats.associations, 0)

    @defer.inlineCallbacks
    def test_unusable_files(self):
        """Each refused before connecting, naming the flag and the file; exit 2."""
        missing = os.path.join(os.path.dirname(self.pki.ca.cert), "missing.crt")
        cases = [
            (["--tls-ca", missing], f"Error: --tls-ca {missing}: no such file or directory\n"),
            (
                ["--tls-cert", self.pki.client.cert, "--tls-key", self.pki.server.key],
                f"Error: --tls-key {self.pki.server.key}: the key does not match the certificate in {self.pki.client.cert}\n",
            ),
            (["--tls-cert", self.pki.client.key, "--tls-key", self.pki.client.key], f"Error: --tls-cert {self.pki.client.key}: no PEM certificate in the file\n"),
        ]  # fmt: skip
        for flags, expected in cases:
            out, err, code = yield self.echo_command("127.0.0.1", reserved_port(self), *flags)
            self.assertEqual((code, err), (1, expected))
        out, err, code = yield self.echo_command("127.0.0.1", reserved_port(self), "--tls-cert", self.pki.client.cert)
        self.assertEqual(code, 1)
        self.assertTrue(err.startswith("Error: --tls-cert and --tls-key go together\n"), err)


class StoreOverTLSTests(SCUTLSTestCase):
    @defer.inlineCallbacks
    def store_and_check(self, mutual: bool, *flags: str):
        folder = self.mktemp()
        sources = dicomfiles.write_ct_series(folder, 4, rows=64, columns=64, seed=71)
        self.start_tls_server(mutual=mutual)
        out, err, code = yield self.radx(
            "dicom", "store", "--dir", folder, "--conns", "2", "--host", "localhost", "--port", str(self.tls_port), *flags
        )
        self.assertEqual(code, 0, err)
        self.assertRegex(out, r"^Sent 4 files \(\d+\.\d MB\) in \d+\.\d s: 4 succeeded, 0 failed\n$")
        self.assertEqual((self.factory.stats.stores_succeeded, self.factory.stats.associations), (4, 2))
        for source in sources:
            self.assertTrue(dicomfiles.same_data_set(organized_path(self.factory.config.output_dir, source), source))

    def test_mutual_tls_byte_identical(self):
        return self.store_and_check(True, *self.trusting(self.pki.client))

    def test_server_authentication_only_byte_identical(self):
        return self.store_and_check(False, *self.trusting())

    @defer.inlineCallbacks
    def test_untrusted_server_certificate(self):
        """Nothing sent, every file named with the reason, exit 4 (no association)."""
        sources = dicomfiles.write_ct_series(self.mktemp(), 2, rows=16, columns=16, seed=72)
        self.start_tls_server(mutual=True)
        out, err, code = yield self.radx(
            "dicom", "store", *sources, "--host", "127.0.0.1", "--port", str(self.tls_port),
            *self.trusting(self.pki.client, ca=self.pki.other_ca.cert),
        )  # fmt: skip
        self.assertEqual(code, 4)
        self.assertEqual(
            sorted(err.splitlines()),
            sorted(f"FAILED {source}: not sent: TLS handshake failed: {UNTRUSTED}" for source in sources),
        )
        self.assertRegex(out, r"^Sent 0 files \(0\.0 MB\) in \d+\.\d s: 0 succeeded, 0 failed, 2 not sent\n$")
        self.assertEqual(self.factory.stats.associations, 0)


class DcmtkStorescpOverTLSTests(SCUTLSTestCase):
    """DCMTK storescp +tls, requiring a client certificate (its -rc default)."""

    def start_storescp_tls(self):
        options = client_options("localhost", self.pki.ca.cert, self.pki.client.cert, self.pki.client.key)
        return self.start_storescp(
            "+tls", self.pki.server.key, self.pki.server.cert, "+cf", self.pki.ca.cert, "--require-peer-cert",
            tls_options=options,
        )  # fmt: skip

    @defer.inlineCallbacks
    def test_echo_and_store(self):
        folder = self.mktemp()
        sources = dicomfiles.write_ct_series(folder, 3, rows=64, columns=64, seed=73)
        port, output = yield self.start_storescp_tls()
        out, err, code = yield self.echo_command("localhost", port, *self.trusting(self.pki.client))
        self.assertEqual(code, 0, err)
        self.assertIn("Success", out)
        out, err, code = yield self.radx(
            "dicom", "store", "--dir", folder, "--host", "localhost", "--port", str(port), *self.trusting(self.pki.client)
        )
        self.assertEqual(code, 0, err)
        self.assertIn("3 succeeded, 0 failed", out)
        received = {dicomfiles.instance_uids(os.path.join(output, name))[2]: os.path.join(output, name) for name in os.listdir(output)}
        for source in sources:
            stored = received[dicomfiles.instance_uids(source)[2]]
            self.assertTrue(dicomfiles.same_data_set(stored, source), f"{stored} differs from {source}")

    @defer.inlineCallbacks
    def test_no_client_certificate(self):
        port, output = yield self.start_storescp_tls()
        out, err, code = yield self.echo_command("localhost", port, *self.trusting())
        self.assertEqual(code, 4)
        self.assertTrue(err.startswith(f"C-ECHO to RADX-SCP@localhost:{port}: TLS handshake failed: "), err)
        self.assertNotIn("Traceback", err)


class TLSFlagTests(SynchronousTestCase):
    """What the flags mean before anything connects."""

    def parse(self, options, *arguments: str):
        """The peer the arguments describe, parsed."""
        options.parseOptions(list(arguments))
        return options.config.peer

    def test_any_tls_flag_turns_tls_on(self):
        for flags in (["--tls"], ["--tls-ca", "ca.crt"], ["--tls-cert", "c.crt", "--tls-key", "c.key"], ["--tls-server-name", "pacs"]):
            self.assertIsNotNone(self.parse(EchoOptions(), "pacs", *flags).tls, flags)
            self.assertIsNotNone(self.parse(StoreOptions(), "a.dcm", *flags).tls, flags)
        self.assertIsNone(self.parse(EchoOptions(), "pacs").tls)

    def test_port_stays_11112(self):
        """TLS does not move the default port to 2762: --port (or PORT) says where to go."""
        self.assertEqual(self.parse(EchoOptions(), "pacs", "--tls").port, 11112)
        self.assertEqual(self.parse(StoreOptions(), "a.dcm", "--tls").port, 11112)
        self.assertEqual(self.parse(EchoOptions(), "pacs", "2762", "--tls").port, 2762)

    def test_certificate_and_key_go_together(self):
        from twisted.python import usage

        for flags in (["--tls-cert", "c.crt"], ["--tls-key", "c.key"]):
            with self.assertRaises(usage.UsageError):
                self.parse(EchoOptions(), "pacs", *flags)
