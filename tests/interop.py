"""Shared pieces of the interoperability tests: a real radx SCP on a loopback port, real peers."""

from __future__ import annotations

import os
import re
import socket

from twisted.internet import defer, reactor, task, utils
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

from radx.scp.factory import SCPFactory, ServerConfig
from radx.testing import dcmtk_tool

# Debian's DCMTK leaves Nagle's algorithm on unless told: every DIMSE
# message would wait ~40 ms for a delayed ACK.
DCMTK_ENV = {"TCP_NODELAY": "1", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def reserved_port(case) -> int:
    """
    A 127.0.0.1 port kept for ``case`` until it ends, for a server that
    must be given a number (DCMTK's storescp, ``twistd radx-scp``, a port
    argument under test) or for a port where nothing listens.

    Probing a free port and closing the probe leaves the port to whoever
    binds next, other tests running in parallel among them. This socket
    stays bound to it, with SO_REUSEADDR, and never listens: Linux then
    refuses the port to any other bind, and never picks it for bind(0) or
    for a connection's local port, while a server that also sets
    SO_REUSEADDR (Twisted's listenTCP, DCMTK) binds and listens on it.
    A connection to it, before a server listens or after, is refused.
    Where the server can say which port it got (``radx dicom scp 0``,
    ``listenTCP(0)``), port 0 and reading it back is simpler still.
    """
    keeper = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    keeper.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    keeper.bind(("127.0.0.1", 0))
    case.addCleanup(keeper.close)
    return keeper.getsockname()[1]


def can_bind(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:port (a ``reserved_port`` does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


LISTEN_ADDRESS = re.compile(r"^  Listen Address: +\S*:(\d+)$", re.M)


def listening_port(banner: str) -> int:
    """The port in the "Listen Address:" line of radx dicom scp's banner (given 0, radx prints the one it got)."""
    found = LISTEN_ADDRESS.search(banner)
    if found is None:
        raise AssertionError(f"no Listen Address line in:\n{banner}")
    return int(found.group(1))


def process_status(pid: int, field: str) -> int:
    """A size field of /proc/PID/status (VmHWM, VmRSS...), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                value, unit = line.split()[1:3]
                assert unit == "kB", line
                return int(value) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def keep_responses(association):
    """
    ``association`` (pynetdicom's, as requestor), with the race in
    pynetdicom 3.0 that loses a response worked around; returned.

    ``send_c_echo()`` and the other ``send_c_*()`` pause the association's
    own thread before sending, so that it leaves the response to them:
    they clear ``_reactor_checkpoint`` and wait until that thread says
    ``_is_paused``. But the thread sets ``_is_paused`` just before it
    waits on the checkpoint, and clears it just after: caught between the
    two, it looks paused while it goes on to take the next message off the
    queue. When that is the response, it drops it ("Received unexpected
    C-ECHO service message") and the caller waits out its DIMSE timeout
    and aborts. The peer plays no part: on a loaded machine about one
    C-ECHO in 600 is lost so, against DCMTK's storescp as against radx
    (docs/testing.rst, bench/pynetdicom_race.py). Here a response that thread takes goes back on the
    queue the caller reads, so the caller gets what the peer sent.
    """
    serve = association._serve_request

    def serve_requests_only(message, context_id):
        if message.is_valid_request:
            return serve(message, context_id)
        association.dimse.msg_queue.put((context_id, message))

    association._serve_request = serve_requests_only
    return association


def require_dcmtk(name: str) -> str:
    path = dcmtk_tool(name)
    if path is None:
        raise AssertionError(
            f"DCMTK's {name} is not installed: run scripts/test.sh, which installs the dcmtk package"
        )
    return path


class ServerTestCase(TestCase):
    """Runs a radx SCP on 127.0.0.1 (an ephemeral port) for each test, on the real reactor."""

    timeout = 120

    def server_config(self, **kwargs) -> ServerConfig:
        defaults = dict(output_dir=self.mktemp(), artim_timeout=5.0, idle_timeout=30.0)
        defaults.update(kwargs)
        return ServerConfig(**defaults)

    def start_server(self, config: ServerConfig | None = None, interface: str = "127.0.0.1") -> SCPFactory:
        if config is None:
            config = self.server_config()
        os.makedirs(config.output_dir, exist_ok=True)
        self.threadpool = ThreadPool(minthreads=1, maxthreads=4, name="test-storage")
        self.threadpool.start()
        self.addCleanup(self.threadpool.stop)
        self.factory = SCPFactory(config, reactor, self.threadpool)
        self.listening_port = reactor.listenTCP(0, self.factory, interface=interface)
        self.addCleanup(self._stop)
        self.port = self.listening_port.getHost().port
        return self.factory

    @defer.inlineCallbacks
    def _stop(self):
        yield self.listening_port.stopListening()
        for protocol in list(self.factory.connections):
            protocol.transport.abortConnection()
        # Leave the reactor clean: wait for every connection to be gone.
        for _ in range(200):
            if not self.factory.connections:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)

    def run_tool(self, path: str, *arguments: str, env=None):
        """Run a program; a Deferred of (stdout, stderr, exit code)."""
        return utils.getProcessOutputAndValue(path, arguments, env=env or DCMTK_ENV)


def abort_at_c_store(test: TestCase, abort) -> list:
    """
    Make the radx server in this process abort an association (A-ABORT) as
    the C-STORE-RQ arrives for which ``abort(association, request)`` is true:
    the association's number (1, 2... in the order of their first C-STORE)
    and the request's on it (1, 2...). The list returned collects each
    (association, request) aborted.
    """
    from radx.scp.operations import Operations

    c_store = Operations.c_store
    numbers: dict = {}
    aborted: list = []

    def aborting_c_store(operations, context, request):
        protocol = operations.protocol
        association = numbers.setdefault(protocol, [len(numbers) + 1, 0])
        association[1] += 1
        if abort(*association):
            aborted.append(tuple(association))
            protocol._local_abort(f"a test aborts C-STORE {association[1]} of association {association[0]}")
            return
        c_store(operations, context, request)

    test.patch(Operations, "c_store", aborting_c_store)
    return aborted
