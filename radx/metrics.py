# -*- test-case-name: tests.test_metrics -*-
"""The server's Prometheus metrics: their names and labels, in one place, bound to a registry given at start.

Two kinds. What the factory counts already (its Statistics, its sets of
connections) is read when /metrics is scraped, by L{ServerCollector}: no
second count on the receive path. What nothing counted before (rejections
by reason, C-STORE responses by status and calling AE, storage time, hook
runs) is a prometheus_client metric made by L{ServerMetrics} in the
registry it is given: a registry of its own per server, so that several
servers in one process do not share series. With --workers, each
worker makes the same L{ServerMetrics} under prometheus_client's
multiprocess mode (their values then live in its files) and the
supervisor serves their sum (radx.app.supervisor).
"""

from __future__ import annotations

import os

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from radx.ul.pdu import ACSERejectReason, PresentationRejectReason, RejectSource, UserRejectReason

# The label of every calling AE title past the bound (see CallingAELabels).
OTHER = "other"
# Calling AE titles with a label of their own when --allow-calling-aet is not given.
CALLING_AE_LABELS = 32

# Seconds on the storage threads for one instance: from a small file on a
# fast disk (a millisecond) to a large one, or a slow disk, fsync included.
STORAGE_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# PS3.8 9.3.4, A-ASSOCIATE-RJ (source, reason): the label of each reason radx gives.
REJECT_REASONS = {
    (RejectSource.SERVICE_USER, UserRejectReason.NO_REASON_GIVEN): "no_reason_given",
    (RejectSource.SERVICE_USER, UserRejectReason.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED): "application_context_not_supported",
    (RejectSource.SERVICE_USER, UserRejectReason.CALLING_AE_TITLE_NOT_RECOGNIZED): "calling_ae_not_recognized",
    (RejectSource.SERVICE_USER, UserRejectReason.CALLED_AE_TITLE_NOT_RECOGNIZED): "called_ae_not_recognized",
    (RejectSource.SERVICE_PROVIDER_ACSE, ACSERejectReason.NO_REASON_GIVEN): "no_reason_given",
    (RejectSource.SERVICE_PROVIDER_ACSE, ACSERejectReason.PROTOCOL_VERSION_NOT_SUPPORTED): "protocol_version_not_supported",
    (RejectSource.SERVICE_PROVIDER_PRESENTATION, PresentationRejectReason.TEMPORARY_CONGESTION): "shutting_down",
    (RejectSource.SERVICE_PROVIDER_PRESENTATION, PresentationRejectReason.LOCAL_LIMIT_EXCEEDED): "max_conns",
}  # fmt: skip


class CallingAELabels:
    """
    The label value of a calling AE title, from a bounded set: a peer that
    sends a new title with each association must not make a new series each
    time. With --allow-calling-aet, its titles (no other title associates);
    without, the first C{limit} distinct titles seen, then L{OTHER}.
    """

    def __init__(self, allowed: frozenset[str] | None = None, limit: int = CALLING_AE_LABELS) -> None:
        self.allowed = allowed
        self.limit = limit
        # Only titles with a label of their own: at most limit, or the allowed ones.
        self._labels: dict[str, str] = {}

    def __call__(self, title: str) -> str:
        label = self._labels.get(title)
        if label is not None:
            return label
        if self.allowed is not None:
            if title not in self.allowed:
                return OTHER
        elif len(self._labels) >= self.limit:
            return OTHER
        self._labels[title] = title
        return title


class ServerMetrics:
    """The metrics the server updates as things happen, made in C{registry}."""

    def __init__(self, registry, calling_ae_titles: frozenset[str] | None = None, limit: int = CALLING_AE_LABELS) -> None:
        self.associations_rejected = Counter(
            "radx_associations_rejected",
            "Associations rejected (A-ASSOCIATE-RJ), by reason.",
            ["reason"],
            registry=registry,
        )
        self.connections_refused = Counter(
            "radx_connections_refused",
            "Connections closed before any association, by reason (allow_ip: not in --allow-ip).",
            ["reason"],
            registry=registry,
        )
        self.c_store_responses = Counter(
            "radx_c_store_responses",
            "C-STORE responses sent, by status (4 hexadecimal digits) and calling AE title (bounded).",
            ["status", "calling_ae"],
            registry=registry,
        )
        self.storage_seconds = Histogram(
            "radx_storage_seconds",
            "Seconds the storage threads spent filing one instance stored with Success, fsync included.",
            buckets=STORAGE_SECONDS_BUCKETS,
            registry=registry,
        )
        self.hook_runs = Counter(
            "radx_hook_runs",
            "Hook runs, by hook and outcome.",
            ["hook", "outcome"],
            registry=registry,
        )
        self.calling_ae_label = CallingAELabels(calling_ae_titles, limit)
        # (calling AE label, status) -> the child counter: labels() costs a
        # few microseconds, a dictionary look-up a tenth of that. Bounded,
        # as its labels are.
        self._c_store_children: dict = {}

    def association_rejected(self, source: int, reason: int) -> None:
        self.associations_rejected.labels(REJECT_REASONS.get((source, reason), OTHER)).inc()

    def connection_refused(self, reason: str) -> None:
        self.connections_refused.labels(reason).inc()

    def c_store_answered(self, calling_ae_title: str, status: int, storage_seconds: float | None) -> None:
        """One C-STORE response; with its time on the storage threads if it was filed."""
        key = (self.calling_ae_label(calling_ae_title), status)
        child = self._c_store_children.get(key)
        if child is None:
            child = self._c_store_children[key] = self.c_store_responses.labels(f"{status:04X}", key[0])
        child.inc()
        if storage_seconds is not None:
            self.storage_seconds.observe(storage_seconds)


class ServerCollector:
    """What the factory knows already, read at each scrape: its Statistics, its connections, the free space."""

    def __init__(self, factory) -> None:
        self.factory = factory

    def describe(self):
        # Names only: registering must not read the disk.
        return list(self._families())

    def collect(self):
        factory = self.factory
        stats = factory.stats
        families = self._families()
        associations_open, connections_open = self.open_now()
        values = {
            "radx_associations_accepted": stats.associations,
            "radx_associations_open": associations_open,
            "radx_connections_open": connections_open,
            "radx_c_echo_requests": stats.echo_requests,
            "radx_c_store_requests": stats.store_requests,
            "radx_received_bytes": stats.bytes_received,
            "radx_catalogue_failures": stats.catalogue_failures,
        }
        free = free_space(factory.config.output_dir)
        values["radx_output_free_bytes"] = free
        for family in families:
            value = values.get(family.name)
            if value is not None:
                family.add_metric([], value)
                yield family

    def open_now(self) -> tuple[int, int]:
        """The associations, and the connections, open now."""
        return len(self.factory.active), len(self.factory.connections)

    @staticmethod
    def _families():
        return [
            CounterMetricFamily("radx_associations_accepted", "Associations accepted."),
            GaugeMetricFamily("radx_associations_open", "Associations open now."),
            GaugeMetricFamily("radx_connections_open", "TCP connections open now, associated or not."),
            CounterMetricFamily("radx_c_echo_requests", "C-ECHO requests received."),
            CounterMetricFamily("radx_c_store_requests", "C-STORE requests received."),
            CounterMetricFamily("radx_received_bytes", "Bytes received on DICOM connections."),
            CounterMetricFamily("radx_catalogue_failures", "Instances stored but not recorded in the catalogue (--catalogue)."),
            GaugeMetricFamily("radx_output_free_bytes", "Bytes free for radx in the file system of the output folder."),
        ]  # fmt: skip


def server_metrics(factory, registry) -> ServerMetrics:
    """Give the factory its metrics, made in C{registry} (None: in none, as a worker process makes them)."""
    allowed = factory.config.policy.calling_ae_titles
    factory.metrics = ServerMetrics(registry, frozenset(allowed) if allowed else None)
    if getattr(factory, "events", None) is not None:
        factory.events.metrics = factory.metrics
    return factory.metrics


def instrument(factory, registry) -> ServerMetrics:
    """Give the factory its metrics in C{registry}, and register what is read from it at each scrape."""
    metrics = server_metrics(factory, registry)
    registry.register(ServerCollector(factory))
    return metrics


def free_space(folder: str) -> int | None:
    """Bytes an unprivileged user may still write in C{folder}'s file system, or None if it cannot be read."""
    try:
        info = os.statvfs(folder)
    except OSError:
        return None
    return info.f_bavail * info.f_frsize
