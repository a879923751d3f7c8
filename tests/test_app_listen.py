"""--listen and --trusted-proxy: Twisted server endpoints beside PORT and --bind, in the options and the ScpService both commands share.

The in-process tests listen on a memory reactor; the subprocess ones on
a port the system picks (tcp:0, or a socket the test binds to port 0
and hands to systemd-socket-activate), at 127.0.0.1 only.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import subprocess
import sys

from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from radx.app import tap
from radx.scp.proxied import ProxiedFactory
from tests.test_app_cli import CliTestCase, RadxServer, expected_path, radx_command, stored_files, testdata
from tests.test_app_options import parse


class ListenOptionsTests(SynchronousTestCase):
    def test_repeatable(self):
        options = parse("--listen", "tcp:4107", "--listen", "systemd:domain=INET:index=0")
        self.assertEqual(options["listen"], ["tcp:4107", "systemd:domain=INET:index=0"])

    def test_port_without_listen(self):
        self.assertTrue(parse().listens_on_port)

    def test_listen_alone_leaves_the_default_port_out(self):
        self.assertFalse(parse("--listen", "tcp:4107").listens_on_port)

    def test_listen_with_port_or_bind_adds_it(self):
        for arguments in (("4104",), ("--port", "4104"), ("--bind", "127.0.0.1")):
            self.assertTrue(parse("--listen", "tcp:4107", *arguments).listens_on_port, arguments)

    def test_empty_endpoint(self):
        error = self.assertRaises(usage.UsageError, parse, "--listen", " ")
        self.assertIn("--listen", str(error))

    def test_tls_needs_a_port_beside_listen(self):
        """--listen endpoints are plain: --tls-cert with --listen alone would serve TLS nowhere."""
        error = self.assertRaises(
            usage.UsageError, parse, "--listen", "tcp:4107", "--tls-cert", "c.pem", "--tls-key", "k.pem"
        )
        self.assertIn("PORT or --tls-port", str(error))


class TrustedProxyOptionsTests(SynchronousTestCase):
    def test_haproxy_needs_trusted_proxy(self):
        """Anyone can write a PROXY header: without --trusted-proxy, a haproxy: endpoint is a usage error."""
        error = self.assertRaises(usage.UsageError, parse, "--listen", "haproxy:tcp:4109")
        self.assertIn("--trusted-proxy", str(error))
        self.assertIn("haproxy:tcp:4109", str(error))

    def test_trusted_proxy_needs_haproxy(self):
        error = self.assertRaises(usage.UsageError, parse, "--trusted-proxy", "10.0.0.1", "--listen", "tcp:4109")
        self.assertIn("haproxy:", str(error))

    def test_networks(self):
        options = parse(
            "--listen", "haproxy:tcp:4109", "--trusted-proxy", "10.0.0.0/24", "--trusted-proxy", "2001:db8::1"
        )
        self.assertEqual(
            options["trusted-proxy"], [ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("2001:db8::1/128")]
        )

    def test_not_a_network(self):
        error = self.assertRaises(
            usage.UsageError, parse, "--listen", "haproxy:tcp:4109", "--trusted-proxy", "proxy.example"
        )
        self.assertIn("--trusted-proxy: 'proxy.example' is not", str(error))


class ListenServiceTests(SynchronousTestCase):
    """ScpService on a memory reactor: where it listens."""

    def start(self, *arguments: str):
        reactor = MemoryReactorClock()
        service = tap.ScpService(parse("--output-dir", os.path.abspath(self.mktemp()), *arguments).config, reactor)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        return reactor, service

    def test_only_the_endpoints(self):
        reactor, service = self.start(
            "--listen", "tcp:4107:interface=127.0.0.1", "--listen", "tcp6:4108:interface=\\:\\:1"
        )
        self.assertEqual(
            [(port, interface) for port, _, _, interface in reactor.tcpServers],
            [(4107, "127.0.0.1"), (4108, "::1")],
        )
        self.assertTrue(all(factory is service.factory for _, factory, _, _ in reactor.tcpServers))
        self.assertIsNone(service.port)
        self.assertEqual([description for description, _ in service.listeners], ["tcp:4107:interface=127.0.0.1", "tcp6:4108:interface=\\:\\:1"])
        self.successResultOf(service.stopService())
        self.assertEqual(service.listeners, [])

    def test_endpoints_and_port(self):
        reactor, service = self.start("--listen", "tcp:4107:interface=127.0.0.1", "--bind", "127.0.0.1", "4104")
        self.assertEqual(
            [(port, interface) for port, _, _, interface in reactor.tcpServers],
            [(4104, "127.0.0.1"), (4107, "127.0.0.1")],
        )
        self.successResultOf(service.stopService())

    def test_haproxy_endpoint_reads_the_header_first(self):
        """haproxy:ENDPOINT listens on ENDPOINT with the association's factory behind a PROXY header reader."""
        reactor, service = self.start(
            "--listen", "haproxy:tcp:4109:interface=127.0.0.1", "--trusted-proxy", "127.0.0.5", "--artim-timeout", "7"
        )
        [(port, factory, _, interface)] = reactor.tcpServers
        self.assertEqual((port, interface), (4109, "127.0.0.1"))
        self.assertIsInstance(factory, ProxiedFactory)
        self.assertIs(factory.wrappedFactory, service.factory)
        self.assertEqual((factory.trusted, factory.timeout), ((ipaddress.ip_network("127.0.0.5/32"),), 7.0))
        self.successResultOf(service.stopService())

    def test_systemd_without_its_socket(self):
        """Outside socket activation, --listen systemd:... says what is missing, not Twisted's IndexError."""
        options = parse("--output-dir", os.path.abspath(self.mktemp()), "--listen", "systemd:domain=INET:index=0")
        service = tap.ScpService(options.config, MemoryReactorClock())
        error = self.assertRaises(tap.StartupError, service.prepare)
        self.assertIn("--listen systemd:domain=INET:index=0: systemd passed no such socket (LISTEN_FDS", str(error))

    def test_systemd_socket_of_another_domain(self):
        """An IPv6 socket adopted as INET would give peers meaningless addresses: refused at start."""
        from twisted.internet.endpoints import AdoptedStreamServerEndpoint

        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as ipv6:
            endpoint = AdoptedStreamServerEndpoint(MemoryReactorClock(), ipv6.fileno(), socket.AF_INET)
            error = self.assertRaises(tap.StartupError, tap.check_adopted_family, endpoint, "systemd:domain=INET:index=0")
            self.assertIn("the socket passed is domain=INET6, not domain=INET", str(error))
            # The socket itself stays open: only a duplicate was looked at.
            self.assertEqual(ipv6.family, socket.AF_INET6)
            tap.check_adopted_family(AdoptedStreamServerEndpoint(MemoryReactorClock(), ipv6.fileno(), socket.AF_INET6), "")
            ipv6.getsockname()

    def test_bad_endpoint_is_a_startup_error_that_closes_the_others(self):
        reactor = MemoryReactorClock()
        output_dir = os.path.abspath(self.mktemp())
        options = parse("--output-dir", output_dir, "4104", "--listen", "tcp:4107", "--listen", "nonsense:1")
        service = tap.ScpService(options.config, reactor)
        error = self.assertRaises(tap.StartupError, service.prepare)
        self.assertIn("--listen nonsense:1", str(error))
        self.assertIsNone(service.port)
        self.assertEqual(service.listeners, [])
        self.assertFalse(os.path.exists(output_dir))


class ListenCommandTests(CliTestCase):
    """`radx dicom scp --listen`: the banner names the endpoint as given and what it got; peers reach it."""

    def test_banner_and_echo(self):
        server = self.start("--listen", "tcp:0:interface=127.0.0.1", "--output-dir", "received")
        text = server.stdout()
        found = re.search(r"^  Listen Address:    tcp:0:interface=127\.0\.0\.1 \(127\.0\.0\.1:(\d+)\)$", text, re.M)
        self.assertIsNotNone(found, text)
        # Only the endpoint: no line for the default port.
        self.assertEqual(text.count("Listen Address:"), 1, text)
        self.port = int(found.group(1))
        self.assertEchoWorks(server)
        self.assertStopsCleanly(server)


class SocketActivatedServer(RadxServer):
    """
    `radx dicom scp ARGUMENTS` under systemd-socket-activate, which hands it
    ``listening`` as file descriptor 3 (LISTEN_FDS, as systemd's .socket
    unit does) and starts it at the first connection.

    The socket is bound to port 0 by the test and passed on through
    LISTEN_FDS (systemd-socket-activate passes such sockets through, in
    their place): its port is known before anything runs, with no window
    in which another process could take it.
    """

    def __init__(self, case, arguments, cwd: str, listening: socket.socket) -> None:
        program = shutil.which("systemd-socket-activate")
        if program is None:
            raise AssertionError("systemd-socket-activate is not installed: run scripts/test.sh, which installs systemd")
        self.cwd = cwd
        self.stdout_path = os.path.join(cwd, "radx.stdout")
        self.stderr_path = os.path.join(cwd, "radx.stderr")
        fd = listening.fileno()
        # A small Python step makes the socket descriptor 3 (sh takes only
        # one digit), and sets LISTEN_PID to its own process, which exec
        # keeps for systemd-socket-activate; that one sets radx's.
        # --fdname: systemd's units name each socket, and Twisted takes only named ones.
        shim = (
            "import os, sys\n"
            f"os.dup2({fd}, 3)\n"
            f"if {fd} != 3: os.close({fd})\n"
            "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid()))\n"
            "os.execv(sys.argv[1], sys.argv[1:])\n"
        )
        command = [sys.executable, "-c", shim, program, "--fdname=radx-scp", "--", *radx_command("dicom", "scp", *arguments)]
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, pass_fds=(fd,)
            )
        case.addCleanup(self.kill)



class SocketActivationTests(CliTestCase):
    def activated(self, *flags: str):
        """radx under systemd-socket-activate, given ``flags`` too, started by an echo: (server, banner, output folder)."""
        listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(listening.close)
        listening.bind(("127.0.0.1", 0))
        listening.listen(16)
        self.port = listening.getsockname()[1]
        output_dir = os.path.join(self.folder, "received")
        server = SocketActivatedServer(
            self, ("--listen", "systemd:domain=INET:index=0", "--output-dir", output_dir, *flags), self.folder, listening
        )
        # Ours closed, the socket is systemd-socket-activate's, then radx's alone.
        listening.close()
        # The first association starts radx; it waits in the socket's backlog meanwhile.
        self.assertEchoWorks(server)
        text = server.wait_ready()
        self.assertIn(f"  Listen Address:    systemd:domain=INET:index=0 (127.0.0.1:{self.port})\n", text)
        self.assertEqual(text.count("Listen Address:"), 1, text)
        return server, text, output_dir

    def assertStoresAndStops(self, server, output_dir: str) -> None:
        ct = testdata("CT_small.dcm")
        self.assertStoreWorks(server, ct)
        self.assertEqual(stored_files(output_dir), [expected_path(output_dir, ct)])
        self.assertStopsCleanly(server)

    def test_systemd_socket(self):
        """--listen systemd:domain=INET:index=0: radx serves the socket systemd-socket-activate passes it."""
        server, _, output_dir = self.activated()
        self.assertIn("Communication attempt on fd 3", server.stderr())
        self.assertStoresAndStops(server, output_dir)

    def test_systemd_socket_with_workers(self):
        """--workers 2: the supervisor takes systemd's socket, its workers serve it."""
        server, text, output_dir = self.activated("--workers", "2")
        self.assertEqual(text.count("✓ DICOM SCP server started"), 1, text)
        self.assertStoresAndStops(server, output_dir)
