"""Connections the listening port cannot take, with the process truly out of file descriptors."""

from __future__ import annotations

import os
import resource
import socket

from twisted.internet import defer, threads
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from radx.app.logformat import format_event
from tests.interop import ServerTestCase


class OutOfFileDescriptorsTests(ServerTestCase):
    def exhaust_file_descriptors(self) -> None:
        """Lower the soft limit to the descriptors in use and fill every hole below it, until cleanup."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        fillers: list[int] = []

        def restore():
            for fd in fillers:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

        self.addCleanup(restore)
        highest = max(int(name) for name in os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, hard))
        while True:
            try:
                fillers.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                break
        with self.assertRaises(OSError):
            os.open(os.devnull, os.O_RDONLY)

    @defer.inlineCallbacks
    def test_a_connection_dropped_for_want_of_descriptors_is_logged(self):
        self.start_server()
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        # The reactor running, with the descriptors it makes as it starts,
        # and a thread ready to wait on the client's socket.
        yield threads.deferToThread(lambda: None)
        # The client's socket exists before the limit; connect(2) needs no new descriptor.
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(client.close)
        self.exhaust_file_descriptors()
        client.connect(("127.0.0.1", self.port))
        # Twisted's port accepts it with the descriptor it keeps for this and closes it.
        received = yield threads.deferToThread(client.recv, 1)
        self.assertEqual(received, b"")
        lines = [
            (e["log_level"].name, format_event(e)) for e in events if e.get("log_namespace", "").startswith("radx")
        ]
        peer = f"127.0.0.1:{client.getsockname()[1]}"
        self.assertEqual(
            [line for line in lines if peer in line[1]],
            [
                (
                    "warn",
                    f"Connection from {peer} closed at once: radx has no file descriptor left (EMFILE):"
                    " raise its limit (ulimit -n, LimitNOFILE=) or lower --max-conns",
                )
            ],
        )


class RepeatedAcceptFailureTests(SynchronousTestCase):
    """An accept() that fails and leaves the connection waiting fails again at every turn: said once per interval."""

    def test_said_at_most_once_per_interval(self):
        from twisted.internet.task import Clock
        from twisted.logger import Logger, LogPublisher

        from radx.scp.accepting import AcceptFailureObserver

        clock = Clock()
        observer = AcceptFailureObserver(clock, interval=10.0)
        said = []
        observer.log = Logger(namespace="radx.scp", observer=said.append)
        # Twisted's port logs through its own Logger, in its class's namespace.
        port_log = Logger(namespace="twisted.internet.tcp.Port", observer=LogPublisher(observer))
        for _ in range(3):
            port_log.info("Could not accept new connection ({acceptError})", acceptError="ENFILE")
        port_log.info("Could not accept new connection ({acceptError})", acceptError="ECONNABORTED")
        clock.advance(10)
        port_log.info("Could not accept new connection ({acceptError})", acceptError="ENFILE")
        self.assertEqual(
            [format_event(e) for e in said],
            ["Could not accept a connection: the system has no file descriptor left (ENFILE) (said at most every 10s)"] * 2,
        )
