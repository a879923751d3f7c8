"""DICOM over TLS (PS3.15 B.9) with real peers: DCMTK +tls, pynetdicom's ssl_context, and refusals.

Every certificate is made by the test (tests/certificates.py). The server
listens on 127.0.0.1 only, on ephemeral ports.
"""

from __future__ import annotations

import os
import socket
import ssl
import warnings

from OpenSSL import SSL
from twisted.internet import defer, endpoints, protocol, reactor, task, threads
from twisted.trial.unittest import SynchronousTestCase

from radx import tls
from radx.scp.secure import TLSServerFactory
from radx.testing import associate_rq
from radx.ul.framing import PDUReader
from radx.ul.pdu import AAssociateAC
from tests import dicomfiles
from tests.certificates import PKI, ChainPKI
from tests.interop import ServerTestCase, keep_responses, require_dcmtk
from tests.test_security_access import LogCapture

VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


class TLSServerTestCase(ServerTestCase):
    """A radx SCP with a plain listener (self.port) and a TLS listener (self.tls_port)."""

    timeout = 60

    def setUp(self):
        self.echoscu = require_dcmtk("echoscu")
        self.storescu = require_dcmtk("storescu")
        self.pki = PKI(self.mktemp())
        self.logs = LogCapture(self)

    def start_tls_server(self, mutual: bool = True, config=None, identity=None, ca=None):
        """A TLS listener beside the plain one: self.pki's server certificate and CA unless others are given."""
        factory = self.start_server(config)
        identity = identity or self.pki.server
        options = tls.server_options(identity.cert, identity.key, (ca or self.pki.ca.cert) if mutual else None)
        self.tls_listening_port = reactor.listenTCP(0, TLSServerFactory(options, factory), interface="127.0.0.1")
        self.addCleanup(self.tls_listening_port.stopListening)
        self.tls_port = self.tls_listening_port.getHost().port
        return factory

    def dcmtk_tls(self, identity=None) -> list[str]:
        """DCMTK's TLS options: a client certificate (or anonymous), the test CA trusted for the server."""
        if identity is None:
            return ["+tla", "+cf", self.pki.ca.cert]
        return ["+tls", identity.key, identity.cert, "+cf", self.pki.ca.cert]

    def echo(self, *tls_options: str, port=None):
        return self.run_tool(
            self.echoscu, "-v", *tls_options, "-aec", "RADX-SCP", "127.0.0.1", str(port or self.tls_port)
        )

    def client_context(self, identity=None, maximum=None) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.pki.ca.cert)
        if identity is not None:
            context.load_cert_chain(identity.cert, identity.key)
        if maximum is not None:
            # OpenSSL 3 allows TLS 1.0/1.1 only at security level 0.
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
            context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
            context.maximum_version = maximum
        return context

    @defer.inlineCallbacks
    def wait_for_log(self, text: str, timeout: float = 5.0):
        for _ in range(int(timeout / 0.01)):
            if self.logs.matching(text):
                return self.logs.matching(text)
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.fail(f"no log line with {text!r} within {timeout}s:\n" + "\n".join(self.logs.lines()))


class DcmtkTLSTests(TLSServerTestCase):
    @defer.inlineCallbacks
    def test_echoscu_with_client_certificate(self):
        """Mutual TLS: echoscu +tls with a certificate the CA signed; the audit names its subject."""
        self.start_tls_server(mutual=True)
        out, err, code = yield self.echo(*self.dcmtk_tls(self.pki.client))
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        self.assertIn(b"Received Echo Response (Success)", out + err)
        self.assertEqual(self.factory.stats.echo_requests, 1)
        yield self.wait_for_log("Association ended")
        [audit] = self.logs.audits()
        self.assertEqual(audit["tls_subject"], self.pki.client.subject)
        self.assertEqual(audit["calling_ae"], "ECHOSCU")
        self.assertEqual(audit["outcome"], "released")

    @defer.inlineCallbacks
    def test_storescu_with_client_certificate_stores_bytes(self):
        """storescu +tls sends 3 CT images; each is stored byte for byte."""
        sources = dicomfiles.write_ct_series(self.mktemp(), 3, rows=64, columns=64, seed=7)
        self.start_tls_server(mutual=True)
        out, err, code = yield self.run_tool(
            self.storescu, *self.dcmtk_tls(self.pki.client), "-aec", "RADX-SCP",
            "127.0.0.1", str(self.tls_port), *sources,
        )
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        output = self.factory.config.output_dir
        for source in sources:
            study, series, instance = dicomfiles.instance_uids(source)
            stored = os.path.join(output, study, series, f"{instance}.dcm")
            self.assertTrue(dicomfiles.same_data_set(stored, source), stored)
        self.assertEqual(self.factory.stats.stores_succeeded, 3)
        yield self.wait_for_log("Association ended")
        [audit] = self.logs.audits()
        self.assertEqual((audit["stored"], audit["failed"]), (3, 0))
        # storescu proposes every storage class; the record names the one used.
        self.assertEqual(audit["contexts"], f"{CT_IMAGE_STORAGE}/1.2.840.10008.1.2.1")
        self.assertGreater(audit["accepted"], 1)

    @defer.inlineCallbacks
    def test_server_authentication_only(self):
        """Without --tls-ca, an anonymous client (+tla) that verifies the server is served."""
        self.start_tls_server(mutual=False)
        out, err, code = yield self.echo(*self.dcmtk_tls(None))
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        yield self.wait_for_log("Association ended")
        self.assertEqual(self.logs.audits()[0]["tls_subject"], "-")

    @defer.inlineCallbacks
    def test_client_without_certificate_is_refused(self):
        """Mutual TLS: no client certificate, no association; one log line says why."""
        self.start_tls_server(mutual=True)
        out, err, code = yield self.echo(*self.dcmtk_tls(None))
        self.assertNotEqual(code, 0, (out + err).decode(errors="replace"))
        [line] = yield self.wait_for_log("TLS handshake failed")
        self.assertIn("peer=127.0.0.1:", line)
        self.assertIn("certificate", line)
        self.assertEqual((self.factory.stats.echo_requests, self.factory.stats.associations), (0, 0))

    @defer.inlineCallbacks
    def test_client_of_another_ca_is_refused(self):
        self.start_tls_server(mutual=True)
        out, err, code = yield self.echo(*self.dcmtk_tls(self.pki.stranger))
        self.assertNotEqual(code, 0, (out + err).decode(errors="replace"))
        [line] = yield self.wait_for_log("TLS handshake failed")
        self.assertIn("certificate verify failed", line)
        self.assertEqual(self.factory.stats.associations, 0)

    @defer.inlineCallbacks
    def test_plain_client_on_tls_port_is_dropped(self):
        """echoscu without TLS on the TLS port: dropped, logged, and both ports serve on."""
        self.start_tls_server(mutual=True)
        out, err, code = yield self.echo()
        self.assertNotEqual(code, 0)
        [line] = yield self.wait_for_log("TLS handshake failed")
        self.assertIn("peer=127.0.0.1:", line)
        self.assertEqual(self.factory.stats.associations, 0)
        out, err, code = yield self.echo(*self.dcmtk_tls(self.pki.client))
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        out, err, code = yield self.echo(port=self.port)
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        self.assertEqual(self.factory.stats.echo_requests, 2)


    @defer.inlineCallbacks
    def test_address_outside_allow_ip_is_closed_before_the_handshake(self):
        import ipaddress

        self.start_tls_server(mutual=True, config=self.server_config(allowed_networks=(ipaddress.ip_network("10.0.0.0/8"),)))
        out, err, code = yield self.echo(*self.dcmtk_tls(self.pki.client))
        self.assertNotEqual(code, 0)
        yield self.wait_for_log("not in --allow-ip")
        self.assertEqual(self.logs.matching("TLS handshake failed"), [])
        self.assertEqual(self.factory.stats.associations, 0)


class PythonTLSClientTests(TLSServerTestCase):
    @defer.inlineCallbacks
    def test_pynetdicom_with_ssl_context(self):
        from pynetdicom import AE

        self.start_tls_server(mutual=True)
        context = self.client_context(self.pki.client)

        def echo():
            ae = AE(ae_title="PYNETDICOM")
            ae.add_requested_context(VERIFICATION)
            association = ae.associate("127.0.0.1", self.tls_port, ae_title="RADX-SCP", tls_args=(context, "localhost"))
            try:
                if not association.is_established:
                    return None
                return keep_responses(association).send_c_echo().Status
            finally:
                association.release()

        status = yield threads.deferToThread(echo)
        self.assertEqual(status, 0x0000)
        yield self.wait_for_log("Association ended")
        self.assertEqual(self.logs.audits()[0]["tls_subject"], self.pki.client.subject)

    @defer.inlineCallbacks
    def test_tls_1_1_is_refused(self):
        """A client that offers at most TLS 1.1 gets no connection (PS3.15 B.9, RFC 8996)."""
        self.start_tls_server(mutual=False)
        try:
            context = self.client_context(maximum=ssl.TLSVersion.TLSv1_1)
        except (ValueError, ssl.SSLError) as error:
            self.fail(f"cannot make a TLS 1.1 client here: {error}")

        def handshake():
            with socket.create_connection(("127.0.0.1", self.tls_port), timeout=10) as raw:
                with context.wrap_socket(raw, server_hostname="localhost") as wrapped:
                    return wrapped.version()

        try:
            version = yield threads.deferToThread(handshake)
        except (ssl.SSLError, OSError):
            pass
        else:
            self.fail(f"a TLS 1.1 client negotiated {version}")
        [line] = yield self.wait_for_log("TLS handshake failed")
        # The client really offered TLS 1.1, and radx's side said no.
        self.assertIn("unsupported protocol", line)
        # Whatever the local OpenSSL policy refused, radx's own context refuses too.
        flags = tls.server_options(self.pki.server.cert, self.pki.server.key).getContext().set_options(0)
        self.assertTrue(flags & SSL.OP_NO_TLSv1_1 and flags & SSL.OP_NO_TLSv1 and flags & SSL.OP_NO_SSLv3)

    @defer.inlineCallbacks
    def test_tls_1_2_and_1_3_are_accepted(self):
        self.start_tls_server(mutual=True)
        versions = []
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            context = self.client_context(self.pki.client)
            context.minimum_version = context.maximum_version = version

            def handshake():
                with socket.create_connection(("127.0.0.1", self.tls_port), timeout=10) as raw:
                    with context.wrap_socket(raw, server_hostname="localhost") as wrapped:
                        return wrapped.version(), wrapped.cipher()[0]

            versions.append((yield threads.deferToThread(handshake)))
        self.assertEqual([v for v, _ in versions], ["TLSv1.2", "TLSv1.3"])
        # TLS 1.2: a BCP 195 suite, forward secret and AEAD.
        self.assertRegex(versions[0][1], r"^ECDHE-(RSA|ECDSA)-(AES\d+-GCM|CHACHA20-POLY1305)")


class AbortOverTLSTests(TLSServerTestCase):
    @defer.inlineCallbacks
    def test_a_abort_reaches_the_peer_through_tls(self):
        """An invalid PDU on a TLS association: radx's A-ABORT arrives through the TLS layer."""
        from radx.ul.pdu import AAbort

        self.start_tls_server(mutual=True)
        context = self.client_context(self.pki.client)
        rq = associate_rq(contexts=((1, VERIFICATION, ("1.2.840.10008.1.2",)),)).encode()

        def exchange():
            with socket.create_connection(("127.0.0.1", self.tls_port), timeout=10) as raw:
                with context.wrap_socket(raw, server_hostname="localhost") as wrapped:
                    wrapped.sendall(rq)
                    reader = PDUReader(maximum_pdata_length=0)
                    pdus = []
                    while len(pdus) < 1:
                        pdus += reader.feed(wrapped.recv(65536))
                    # A PDU type no version of PS3.8 defines.
                    wrapped.sendall(b"\x55\x00\x00\x00\x00\x00")
                    # PS3.8 AA-8: radx waits (ARTIM) for the requestor to close.
                    while not isinstance(pdus[-1], AAbort):
                        data = wrapped.recv(65536)
                        if not data:
                            break
                        pdus += reader.feed(data)
                    return pdus

        pdus = yield threads.deferToThread(exchange)
        self.assertIsInstance(pdus[0], AAssociateAC)
        self.assertIsInstance(pdus[-1], AAbort)
        yield self.wait_for_log("Association ended")
        self.assertEqual(self.logs.audits()[0]["outcome"], "aborted")


class _AssociateOnce(protocol.Protocol):
    """Sends one A-ASSOCIATE-RQ; ``answered`` fires with the first PDU back."""

    def __init__(self) -> None:
        self.answered = defer.Deferred()
        self.reader = PDUReader(maximum_pdata_length=0)

    def connectionMade(self) -> None:
        self.transport.write(associate_rq(contexts=((1, VERIFICATION, ("1.2.840.10008.1.2",)),)).encode())

    def dataReceived(self, data: bytes) -> None:
        pdus = self.reader.feed(data)
        if pdus and not self.answered.called:
            self.answered.callback(pdus[0])
            self.transport.loseConnection()

    def connectionLost(self, reason=None) -> None:
        if not self.answered.called:
            self.answered.errback(reason)


class ClientOptionsTests(TLSServerTestCase):
    """radx.tls.client_options, for an SCU: the server verified by CA and name, a client certificate sent."""

    @defer.inlineCallbacks
    def connect(self, hostname: str, identity, ca=None):
        options = tls.client_options(
            hostname, ca or self.pki.ca.cert, identity.cert if identity else None, identity.key if identity else None
        )
        endpoint = endpoints.SSL4ClientEndpoint(reactor, "127.0.0.1", self.tls_port, options)
        client = yield endpoint.connect(protocol.Factory.forProtocol(_AssociateOnce))
        pdu = yield client.answered
        return pdu

    @defer.inlineCallbacks
    def test_associates(self):
        self.start_tls_server(mutual=True)
        pdu = yield self.connect("localhost", self.pki.client)
        self.assertIsInstance(pdu, AAssociateAC)

    @defer.inlineCallbacks
    def test_no_deprecated_pyopenssl_objects(self):
        """Both identities reach OpenSSL as cryptography objects: pyOpenSSL's X509 and PKey there are deprecated."""
        self.start_tls_server(mutual=True)
        pdu = yield self.connect("localhost", self.pki.client)
        self.assertIsInstance(pdu, AAssociateAC)
        deprecated = [w["message"] for w in self.flushWarnings() if "pyOpenSSL" in str(w["message"])]
        self.assertEqual(deprecated, [])

    @defer.inlineCallbacks
    def test_client_sends_its_chain(self):
        """A client certificate from an intermediate CA: its file's chain goes with it, to a server that trusts the root."""
        chain = ChainPKI(self.mktemp())
        self.start_tls_server(mutual=True, ca=chain.root.cert)
        pdu = yield self.connect("localhost", chain.client)
        self.assertIsInstance(pdu, AAssociateAC)
        self.assertEqual(self.factory.stats.associations, 1)

    @defer.inlineCallbacks
    def test_server_sends_its_chain(self):
        """A server certificate from an intermediate CA, to a client that trusts the root."""
        chain = ChainPKI(self.mktemp())
        self.start_tls_server(mutual=False, identity=chain.server)
        pdu = yield self.connect("localhost", None, ca=chain.root.cert)
        self.assertIsInstance(pdu, AAssociateAC)

    @defer.inlineCallbacks
    def test_wrong_server_name_is_refused(self):
        self.start_tls_server(mutual=True)
        with self.assertRaises(Exception):
            yield self.connect("pacs.example.org", self.pki.client)
        self.assertEqual(self.factory.stats.associations, 0)


class ServerOptionsTests(SynchronousTestCase):
    """Files that cannot be used are refused at start, each with a message that names it."""

    def setUp(self):
        self.pki = PKI(self.mktemp())
        self.folder = os.path.dirname(self.pki.server.cert)

    def refusal(self, cert=None, key=None, ca=None) -> str:
        with self.assertRaises(tls.TLSConfigurationError) as caught:
            tls.server_options(cert or self.pki.server.cert, key or self.pki.server.key, ca)
        return str(caught.exception)

    def write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.folder, name)
        with open(path, "wb") as out:
            out.write(data)
        return path

    def test_good_files(self):
        options = tls.server_options(self.pki.server.cert, self.pki.server.key, self.pki.ca.cert)
        self.assertTrue(options.requireCertificate)

    def test_no_deprecated_pyopenssl_objects(self):
        """The identity reaches OpenSSL as cryptography objects: pyOpenSSL's X509 and PKey there are deprecated."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tls.server_options(self.pki.server.cert, self.pki.server.key).getContext()
        self.assertEqual([str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)], [])

    def test_missing_certificate(self):
        missing = os.path.join(self.folder, "missing.crt")
        self.assertEqual(self.refusal(cert=missing), f"--tls-cert {missing}: no such file or directory")

    def test_not_a_certificate(self):
        path = self.write("garbage.crt", b"not a certificate\n")
        self.assertEqual(self.refusal(cert=path), f"--tls-cert {path}: no PEM certificate in the file")

    def test_key_of_another_certificate(self):
        message = self.refusal(key=self.pki.client.key)
        self.assertEqual(
            message, f"--tls-key {self.pki.client.key}: the key does not match the certificate in {self.pki.server.cert}"
        )

    def test_encrypted_key(self):
        from cryptography.hazmat.primitives import serialization

        encrypted = self.pki.server.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
        path = self.write("encrypted.key", encrypted)
        self.assertIn("the key is encrypted", self.refusal(key=path))

    def test_bad_ca(self):
        path = self.write("empty-ca.crt", b"")
        self.assertEqual(self.refusal(ca=path), f"--tls-ca {path}: no PEM certificate in the file")

    def test_minimum_version_and_ciphers(self):
        context = tls.server_options(self.pki.server.cert, self.pki.server.key).getContext()
        flags = context.set_options(0)
        for old in (SSL.OP_NO_SSLv3, SSL.OP_NO_TLSv1, SSL.OP_NO_TLSv1_1):
            self.assertTrue(flags & old)
        ciphers = SSL.Connection(context, None).get_cipher_list()
        tls12 = [name for name in ciphers if not name.startswith("TLS_")]
        self.assertTrue(tls12)
        for name in tls12:
            self.assertRegex(name, r"^ECDHE-(RSA|ECDSA)-(AES\d+-GCM-SHA\d+|CHACHA20-POLY1305)$")
