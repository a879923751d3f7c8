"""Two radx servers behind a real HAProxy (PROXY v2, leastconn, health checks): each sender seen as itself.

HAProxy (Debian's package) runs in the foreground with a configuration
written to the test's folder, connects to the servers from 127.0.0.5,
their only --trusted-proxy, and sends a PROXY v2 header on every
connection, health checks included (LOCAL). The servers listen on
127.0.0.2 and 127.0.0.3 with --allow-ip 127.0.0.7 (and the proxy's own
address, for its checks); radx's own client sends from 127.0.0.7 and
127.0.0.8. Everything is stopped by the test, and killed in cleanup if
a test stops half-way.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess

import pydicom
from pydicom.uid import generate_uid
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial.unittest import TestCase

from radx.scu.store import StoreJob
from tests import dicomfiles
from tests.interop import can_bind, reserved_port
from tests.test_app_cli import RadxServer, stored_files, testdata
from tests.test_app_tap import wait_until

PROXY = "127.0.0.5"
ALLOWED = "127.0.0.7"
REFUSED = "127.0.0.8"
HAPROXY_START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0

CONFIGURATION = """\
global
    maxconn 100

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend dicom
    bind 127.0.0.1:{port}
    default_backend radx

backend radx
    balance leastconn
    source {proxy}
    default-server send-proxy-v2 check inter 1s
    server radx-a 127.0.0.2:{port_a}
    server radx-b 127.0.0.3:{port_b}
"""


def haproxy_program() -> str:
    path = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
    if path is None:
        raise AssertionError("HAProxy is not installed: run scripts/test.sh, which installs the haproxy package")
    return path


def ct_copies(folder: str, count: int) -> list[str]:
    """pydicom's CT image under ``count`` new SOP Instance UIDs."""
    os.makedirs(folder)
    paths = []
    for index in range(count):
        data_set = pydicom.dcmread(testdata("CT_small.dcm"))
        data_set.SOPInstanceUID = data_set.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        path = os.path.join(folder, f"CT{index}.dcm")
        data_set.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


class HAProxyTests(TestCase):
    timeout = 120
    # Flags every server gets besides its listener's.
    radx_arguments: tuple = ()

    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.servers = [self.radx("a", "127.0.0.2"), self.radx("b", "127.0.0.3")]
        self.port = self.start_haproxy()

    def radx(self, name: str, address: str):
        """`radx dicom scp` behind the proxy on ``address``: (server, port it got, output folder)."""
        cwd = os.path.join(self.folder, name)
        os.makedirs(cwd)
        output_dir = os.path.join(cwd, "received")
        server = RadxServer(
            self,
            (
                "--listen", f"haproxy:tcp:0:interface={address}",
                "--trusted-proxy", PROXY,
                "--allow-ip", ALLOWED,
                "--allow-ip", PROXY,
                "--output-dir", output_dir,
                *self.radx_arguments,
            ),
            cwd,
        )  # fmt: skip
        text = server.wait_ready()
        found = re.search(rf"^  Listen Address:    haproxy:tcp:0:interface={re.escape(address)} \({re.escape(address)}:(\d+)\)$", text, re.M)
        self.assertIsNotNone(found, text)
        return server, int(found.group(1)), output_dir

    def start_haproxy(self) -> int:
        """HAProxy in the foreground on a port of 127.0.0.1 kept for this test (another if it could not bind it)."""
        for _ in range(5):
            port = reserved_port(self)
            configuration = os.path.join(self.folder, "haproxy.cfg")
            with open(configuration, "w") as stream:
                stream.write(
                    CONFIGURATION.format(
                        port=port, proxy=PROXY, port_a=self.servers[0][1], port_b=self.servers[1][1]
                    )
                )
            self.haproxy_output = os.path.join(self.folder, "haproxy.out")
            with open(self.haproxy_output, "wb") as out:
                self.haproxy = subprocess.Popen(
                    [haproxy_program(), "-db", "-f", configuration],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            self.addCleanup(self.kill_haproxy, self.haproxy)
            # HAProxy listens once it no longer lets another bind the port; it exits if it cannot bind it.
            wait_until(
                lambda: self.haproxy.poll() is not None or not can_bind(port),
                HAPROXY_START_TIMEOUT,
                "HAProxy listening",
                self.describe,
            )
            if self.haproxy.poll() is None:
                return port
            if "cannot bind socket" not in self.read(self.haproxy_output):
                raise AssertionError(f"HAProxy did not start\n{self.describe()}")
        raise AssertionError(f"HAProxy found no free port\n{self.describe()}")

    @staticmethod
    def kill_haproxy(process) -> None:
        if process.poll() is None:
            process.kill()
            process.wait(STOP_TIMEOUT)

    @staticmethod
    def read(path: str) -> str:
        with open(path, encoding="utf-8", errors="replace") as stream:
            return stream.read()

    def describe(self) -> str:
        parts = [f"--- haproxy\n{self.read(self.haproxy_output)}"] if hasattr(self, "haproxy_output") else []
        parts += [server.describe() for server, _, _ in self.servers]
        return "\n".join(parts)

    def send(self, source: str, paths: list[str]) -> defer.Deferred:
        """radx's own client, bound to ``source``, through HAProxy: one association per file."""
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, timeout=10, bindAddress=(source, 0))

        @defer.inlineCallbacks
        def one_by_one():
            results = []
            for path in paths:
                job = StoreJob(endpoint, reactor, "RADX-SCP", f"SENDER-{source.rsplit('.', 1)[1]}", timeout=10)
                results += (yield job.run([path]))
            return results

        return one_by_one()

    def logs(self) -> str:
        return "".join(server.stdout() for server, _, _ in self.servers)

    @defer.inlineCallbacks
    def test_senders_seen_as_themselves(self):
        sent = ct_copies(os.path.join(self.folder, "sent"), 4)
        results = yield self.send(ALLOWED, sent)
        self.assertEqual([(r.path, r.status) for r in results], [(path, 0) for path in sent], self.describe())
        refused = yield self.send(REFUSED, sent[:1])
        self.assertIsNone(refused[0].status, self.describe())

        # Every file on disk, its data set bit for bit as sent; leastconn used both servers.
        stored = {name: stored_files(output_dir) for name, (_, _, output_dir) in zip("ab", self.servers)}
        self.assertTrue(stored["a"] and stored["b"], stored)
        by_uid = {pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID: path for path in sent}
        received = stored["a"] + stored["b"]
        self.assertEqual(len(received), len(sent))
        for path in received:
            source = by_uid[pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID]
            self.assertTrue(dicomfiles.same_data_set(path, source), f"{path} differs from {source}")

        # The log and the audit record name the sender, never the proxy; --allow-ip judged the sender.
        def lines(pattern: str) -> list[str]:
            return re.findall(pattern, self.logs(), re.M)

        wait_until(lambda: len(lines(r"^INFO: Association ended peer=.*$")) == 4, STOP_TIMEOUT, "4 audit records", self.describe)
        accepted = lines(r"^INFO: Association accepted peer=(\S+) calling_ae=(\S+)")
        self.assertEqual(len(accepted), 4, self.describe())
        self.assertTrue(all(re.fullmatch(r"127\.0\.0\.7:\d+", peer) and title == "SENDER-7" for peer, title in accepted))
        ended = lines(r"^INFO: Association ended peer=(\S+) .*calling_ae=SENDER-7 .*stored=1 failed=0 .*outcome=released$")
        self.assertEqual(sorted(ended), sorted(peer for peer, _ in accepted), self.describe())
        wait_until(lambda: lines(r"^INFO: Refused connection from 127\.0\.0\.8:\d+: not in --allow-ip$"), STOP_TIMEOUT, "the refusal", self.describe)
        self.assertEqual(lines(r"peer=127\.0\.0\.5:"), [], self.describe())
        self.assertEqual(lines(r"not in --trusted-proxy|invalid PROXY header|No PROXY header"), [], self.describe())

        # HAProxy's health checks are PROXY v2 LOCAL connections, which the servers took without a line.
        self.assertNotIn("is DOWN", self.read(self.haproxy_output), self.describe())
        self.stop_all()

    @defer.inlineCallbacks
    def test_forged_header_straight_to_a_server(self):
        """A sender that skips the proxy and writes its own header is refused before it is read."""
        import socket

        from tests.test_scp_proxied import REQUEST, v2_header

        _, port, output_dir = self.servers[0]

        def forge():
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.bind((REFUSED, 0))
                sock.connect(("127.0.0.2", port))
                sock.sendall(v2_header((ALLOWED, 4000)) + REQUEST)
                try:
                    return sock.recv(65536)
                except ConnectionResetError:
                    return b""

        from twisted.internet import threads

        answer = yield threads.deferToThread(forge)
        self.assertEqual(answer, b"")
        wait_until(
            lambda: re.search(r"^INFO: Refused connection from 127\.0\.0\.8:\d+: not in --trusted-proxy", self.logs(), re.M),
            STOP_TIMEOUT,
            "the refusal",
            self.describe,
        )
        self.assertNotIn("peer=127.0.0.7", self.logs())
        self.assertEqual(stored_files(output_dir), [])
        self.stop_all()

    def stop_all(self) -> None:
        """HAProxy, then each server: all end by themselves, radx with status 0."""
        self.haproxy.send_signal(signal.SIGTERM)
        self.haproxy.wait(STOP_TIMEOUT)
        for server, _, _ in self.servers:
            self.assertEqual(server.stop(signal.SIGTERM), 0, server.describe())


class HAProxyWorkersTests(HAProxyTests):
    """The same, each server with two worker processes: the supervisor's haproxy: socket, read by either."""

    radx_arguments = ("--workers", "2")
