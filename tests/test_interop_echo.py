"""C-ECHO against real peers over loopback: DCMTK echoscu, pynetdicom, and hostile raw clients."""

from __future__ import annotations

import socket

from twisted.internet import defer, threads

from radx.ul.framing import PDUReader
from radx.ul.pdu import AAbort
from tests.interop import ServerTestCase, keep_responses, require_dcmtk

VERIFICATION = "1.2.840.10008.1.1"


def _raw_exchange(port: int, payload: bytes, timeout: float = 10.0) -> bytes:
    """Send ``payload``; return all the server sends until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


class EchoscuTests(ServerTestCase):
    def setUp(self):
        self.echoscu = require_dcmtk("echoscu")

    @defer.inlineCallbacks
    def test_echo_succeeds(self):
        self.start_server()
        out, err, code = yield self.run_tool(self.echoscu, "-v", "-aec", "RADX-SCP", "127.0.0.1", str(self.port))
        self.assertEqual(code, 0, err)
        self.assertIn(b"Received Echo Response (Success)", out + err)
        self.assertEqual(self.factory.stats.echo_requests, 1)

    @defer.inlineCallbacks
    def test_repeated_echoes_in_one_association(self):
        self.start_server()
        out, err, code = yield self.run_tool(
            self.echoscu, "--repeat", "25", "-aec", "RADX-SCP", "127.0.0.1", str(self.port)
        )
        self.assertEqual(code, 0, err)
        self.assertEqual(self.factory.stats.echo_requests, 25)
        self.assertEqual(self.factory.stats.associations, 1)

    @defer.inlineCallbacks
    def test_wrong_called_ae_title_is_rejected(self):
        self.start_server()
        out, err, code = yield self.run_tool(self.echoscu, "-aec", "WRONG-AE", "127.0.0.1", str(self.port))
        self.assertNotEqual(code, 0)
        self.assertIn(b"Called AE Title Not Recognized", out + err)
        self.assertEqual(self.factory.stats.echo_requests, 0)

    @defer.inlineCallbacks
    def test_dcmtk_default_called_ae_title_is_rejected(self):
        """echoscu without -aec calls ANY-SCP: by default not radx's title."""
        self.start_server()
        out, err, code = yield self.run_tool(self.echoscu, "127.0.0.1", str(self.port))
        self.assertNotEqual(code, 0)
        self.assertIn(b"Called AE Title Not Recognized", out + err)

    @defer.inlineCallbacks
    def test_dcmtk_default_called_ae_title_with_accept_any(self):
        """--accept-any-called-aet: echoscu's default ANY-SCP is accepted."""
        from radx.ul.negotiation import AcceptorPolicy

        self.start_server(self.server_config(policy=AcceptorPolicy(accept_any_called_ae_title=True)))
        out, err, code = yield self.run_tool(self.echoscu, "-v", "127.0.0.1", str(self.port))
        self.assertEqual(code, 0, err)
        self.assertIn(b"Received Echo Response (Success)", out + err)
        self.assertEqual(self.factory.stats.echo_requests, 1)

    @defer.inlineCallbacks
    def test_abort_instead_of_release(self):
        self.start_server()
        out, err, code = yield self.run_tool(
            self.echoscu, "--abort", "-aec", "RADX-SCP", "127.0.0.1", str(self.port)
        )
        self.assertEqual(code, 0, err)
        out, err, code = yield self.run_tool(self.echoscu, "-aec", "RADX-SCP", "127.0.0.1", str(self.port))
        self.assertEqual(code, 0, err)
        self.assertEqual(self.factory.stats.echo_requests, 2)

    @defer.inlineCallbacks
    def test_hostile_clients_do_not_stop_the_server(self):
        """Garbage, HTTP and a TLS ClientHello each get A-ABORT; echoscu still works after each.

        After the A-ABORT the server waits ARTIM for the peer to close
        (PS3.8 AA-1), then closes itself: these peers never do.
        """
        self.start_server(self.server_config(artim_timeout=0.5))
        hello = bytes.fromhex("16030100c4010000c00303") + b"\x00" * 190
        for payload in (b"\x00\x01\x02garbage" * 10, b"GET / HTTP/1.1\r\nHost: radx\r\n\r\n", hello):
            answer = yield threads.deferToThread(_raw_exchange, self.port, payload)
            self.assertEqual(PDUReader().feed(answer), [AAbort(0, 0)])
            out, err, code = yield self.run_tool(self.echoscu, "-aec", "RADX-SCP", "127.0.0.1", str(self.port))
            self.assertEqual(code, 0, err)


class PynetdicomEchoTests(ServerTestCase):
    def setUp(self):
        self.start_server()

    def _echoes(self, associations: int, echoes: int) -> list[int]:
        from pynetdicom import AE

        ae = AE(ae_title="PYNETDICOM")
        ae.add_requested_context(VERIFICATION)
        statuses = []
        for _ in range(associations):
            assoc = ae.associate("127.0.0.1", self.port, ae_title="RADX-SCP")
            if not assoc.is_established:
                raise AssertionError("association not established")
            keep_responses(assoc)
            for message_id in range(1, echoes + 1):
                statuses.append(assoc.send_c_echo(msg_id=message_id).get("Status"))
            assoc.release()
        return statuses

    @defer.inlineCallbacks
    def _echoes_counted(self, associations: int, echoes: int):
        """The statuses of ``_echoes``, and the C-ECHOs and associations radx counted for them."""
        stats = self.factory.stats
        echoes_before, associations_before = stats.echo_requests, stats.associations
        statuses = yield threads.deferToThread(self._echoes, associations, echoes)
        return statuses, stats.echo_requests - echoes_before, stats.associations - associations_before

    @defer.inlineCallbacks
    def test_many_echoes_in_one_association(self):
        statuses, echoes, associations = yield self._echoes_counted(1, 100)
        self.assertEqual(statuses, [0] * 100)
        self.assertEqual((echoes, associations), (100, 1))

    @defer.inlineCallbacks
    def test_many_associations_in_a_row(self):
        statuses, echoes, associations = yield self._echoes_counted(30, 1)
        self.assertEqual(statuses, [0] * 30)
        self.assertEqual((echoes, associations), (30, 30))


class SocketSettingsTests(ServerTestCase):
    """What radx sets on each accepted TCP connection."""

    @defer.inlineCallbacks
    def test_no_delay_and_large_reads(self):
        from twisted.internet import reactor, task

        from radx.scp.protocol import _READ_SIZE

        self.start_server()
        client = socket.create_connection(("127.0.0.1", self.port))
        self.addCleanup(client.close)
        for _ in range(200):
            if self.factory.connections:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        (protocol,) = self.factory.connections
        # Nagle off: DIMSE is request/response. Reads of 256 KiB, not Twisted's 64.
        self.assertEqual(protocol.transport.getTcpNoDelay(), True)
        self.assertEqual(protocol.transport.bufferSize, _READ_SIZE)
        self.assertEqual(_READ_SIZE, 256 * 1024)
