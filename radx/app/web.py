# -*- test-case-name: tests.test_app_web -*-
"""--http: /metrics, /healthz and /readyz on twisted.web, beside the DICOM ports."""

from __future__ import annotations

import errno
import os

from twisted.application import service
from twisted.internet import defer, endpoints
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server

from radx.metrics import free_space
from radx.storage.writable import check_writable

log = Logger(namespace="radx.http")

# How long a /readyz answer about the output folder holds: its probe writes
# and fsyncs a small file, too much for each of several probes a second.
READY_CACHE_SECONDS = 2.0


class Readiness:
    """
    Whether the server should be sent associations now, and why not.

    Not while draining (shutdown begun), nor while the output folder does
    not take a file, nor while its file system has less than
    C{min_free_space} bytes free. The folder is probed on the storage
    threadpool, where a C-STORE begins (its incoming folder), at most once
    every L{READY_CACHE_SECONDS}; the reactor never waits for the disk.
    """

    def __init__(self, reactor, threadpool, factory, min_free_space: int = 0) -> None:
        self.reactor = reactor
        self.threadpool = threadpool
        self.factory = factory
        self.min_free_space = min_free_space
        self._answer: tuple[bool, str] | None = None
        self._answered_at = 0.0
        self._probing: list[defer.Deferred] | None = None

    def check(self) -> defer.Deferred:
        """Fires with (ready, why): why is one line for a person."""
        if not self.factory.accepting:
            return defer.succeed((False, "draining: the server is shutting down"))
        now = self.reactor.seconds()
        if self._answer is not None and now - self._answered_at < READY_CACHE_SECONDS:
            return defer.succeed(self._answer)
        waiter = defer.Deferred()
        if self._probing is None:
            self._probing = [waiter]
            probe = deferToThreadPool(self.reactor, self.threadpool, self.probe)
            probe.addErrback(lambda failure: (False, f"output folder not checked: {failure.getErrorMessage()}"))
            probe.addCallback(self._probed)
        else:
            self._probing.append(waiter)
        return waiter

    def _probed(self, answer: tuple[bool, str]) -> None:
        self._answer = answer
        self._answered_at = self.reactor.seconds()
        waiters, self._probing = self._probing or [], None
        for waiter in waiters:
            waiter.callback(answer)

    def probe(self) -> tuple[bool, str]:
        """On a storage thread: the output folder takes a file, and has room."""
        config = self.factory.config
        try:
            folders = self.factory.tree.folders()
            # Not renamed into the output folder: a catalogue's walk must not meet it there.
            check_writable(folders.root, folders.incoming, config.file_mode, into_root=False)
        except OSError as error:
            why = "read-only file system" if error.errno == errno.EROFS else (error.strerror or str(error)).lower()
            return False, f"output folder not writable: {why}"
        free = free_space(config.output_dir)
        if free is None:
            return False, "output folder's free space cannot be read"
        if free < self.min_free_space:
            return False, f"free space {free} bytes, under --min-free-space {self.min_free_space}"
        return True, "ready"


class _Text(resource.Resource):
    isLeaf = True

    def __init__(self, text: bytes = b"ok\n") -> None:
        super().__init__()
        self.text = text

    def render_GET(self, request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return self.text


class ReadyPage(resource.Resource):
    """200 and ``ready``, or 503 and why not, in one line."""

    isLeaf = True

    def __init__(self, readiness: Readiness) -> None:
        super().__init__()
        self.readiness = readiness

    def render_GET(self, request):
        gone: list = []
        request.notifyFinish().addErrback(gone.append)

        def answer(result):
            if gone:
                return
            ready, why = result
            request.setResponseCode(200 if ready else 503)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.write(why.encode("utf-8") + b"\n")
            request.finish()

        self.readiness.check().addCallback(answer)
        return server.NOT_DONE_YET


class MetricsPage(resource.Resource):
    """
    The registry in the text format Prometheus asks for (or OpenMetrics),
    rendered on the reactor: a few hundred series at most, well under a
    millisecond, so it needs neither a thread nor prometheus_client's WSGI
    resource, which runs on the global reactor's own threadpool.
    """

    isLeaf = True

    def __init__(self, registry, refresh=None) -> None:
        super().__init__()
        self.registry = registry
        # With workers: a Deferred that fires once their counts are fresh.
        self.refresh = refresh

    def render_GET(self, request):
        if self.refresh is None:
            return self._render(request)
        gone: list = []
        request.notifyFinish().addErrback(gone.append)

        def answer(_):
            if not gone:
                request.write(self._render(request))
                request.finish()

        self.refresh().addCallback(answer)
        return server.NOT_DONE_YET

    def _render(self, request) -> bytes:
        from prometheus_client.exposition import choose_encoder

        accept = (request.getHeader(b"accept") or b"").decode("latin-1")
        encoder, content_type = choose_encoder(accept)
        request.setHeader(b"content-type", content_type.encode("ascii"))
        return encoder(self.registry)


class HTTPSite(server.Site):
    """No access log: a scrape every few seconds is no news."""

    noisy = False

    def log(self, request) -> None:
        pass


def make_site(registry, readiness: Readiness, refresh=None) -> server.Site:
    root = resource.Resource()
    root.putChild(b"metrics", MetricsPage(registry, refresh))
    root.putChild(b"healthz", _Text())
    root.putChild(b"readyz", ReadyPage(readiness))
    site = HTTPSite(root)
    site.displayTracebacks = False
    return site


class HTTPError(Exception):
    """--http cannot listen; the message says why."""


def listen_http(reactor, description: str, site):
    """Listen on the endpoint C{description} now, or raise HTTPError."""
    try:
        endpoint = endpoints.serverFromString(reactor, description)
    except (ValueError, KeyError, TypeError) as error:
        raise HTTPError(f"--http: {description!r} is not a Twisted endpoint: {error}") from None
    outcome: list = []
    endpoint.listen(site).addBoth(outcome.append)
    if not outcome:
        raise HTTPError(f"--http: {description!r} does not listen at once")
    if isinstance(outcome[0], Failure):
        error = outcome[0].value
        cause = getattr(error, "socketError", error)
        why = os.strerror(cause.errno).lower() if getattr(cause, "errno", None) else str(error)
        raise HTTPError(f"--http: cannot listen on {description!r}: {why}")
    return outcome[0]


class ListeningService(service.Service):
    """Closes a listening port when stopped: as a child of the server, after the server's drain."""

    def __init__(self, port) -> None:
        self.port = port

    def stopService(self):
        super().stopService()
        return self.port.stopListening()


def address(port) -> str:
    """host:port of a listening port, for the banner and the log."""
    host = port.getHost()
    name = getattr(host, "host", None)
    if name is None:
        return str(host)
    return f"[{name}]:{host.port}" if ":" in name else f"{name}:{host.port}"
