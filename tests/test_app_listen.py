"""--listen: Twisted server endpoints beside PORT and --bind, in `radx dicom scp` and `twistd radx-scp`.

The in-process tests listen on a memory reactor; the subprocess ones on
a port the system picks (tcp:0), at 127.0.0.1 only.
"""

from __future__ import annotations

import ipaddress
import os
import re

from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from radx.app import tap
from radx.app.options import ScpOptions
from radx.scp.proxied import ProxiedFactory
from tests.test_app_cli import CliTestCase


def parse(*arguments: str) -> ScpOptions:
    options = ScpOptions()
    options.parseOptions(list(arguments))
    return options


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
        service = tap.ScpService(parse("--output-dir", os.path.abspath(self.mktemp()), *arguments), reactor)
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

    def test_bad_endpoint_is_a_startup_error_that_closes_the_others(self):
        reactor = MemoryReactorClock()
        output_dir = os.path.abspath(self.mktemp())
        options = parse("--output-dir", output_dir, "4104", "--listen", "tcp:4107", "--listen", "nonsense:1")
        service = tap.ScpService(options, reactor)
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
