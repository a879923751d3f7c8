"""radx.metrics: bounded calling AE labels, rejection reasons, what is read from the factory at a scrape."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry
from twisted.trial.unittest import SynchronousTestCase

from radx.dimse.status import Status
from radx.metrics import OTHER, CallingAELabels, ServerMetrics, instrument
from radx.scp.factory import SCPFactory, ServerConfig
from radx.ul.negotiation import AcceptorPolicy
from radx.ul.pdu import (
    AAssociateRJ,
    ACSERejectReason,
    PresentationRejectReason,
    RejectResult,
    RejectSource,
    UserRejectReason,
)


def samples(registry) -> dict:
    """{(sample name, sorted labels): value} of every sample in ``registry``."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
    }


def store_series(registry) -> dict:
    """{(status, calling AE): count} of radx_c_store_responses_total."""
    return {
        (dict(labels)["status"], dict(labels)["calling_ae"]): value
        for (name, labels), value in samples(registry).items()
        if name == "radx_c_store_responses_total"
    }


class CallingAELabelsTests(SynchronousTestCase):
    def test_first_titles_then_other(self):
        labels = CallingAELabels(limit=3)
        self.assertEqual([labels(t) for t in ("A", "B", "A", "C", "D", "E", "B")], ["A", "B", "A", "C", OTHER, OTHER, "B"])

    def test_allowed_titles_only(self):
        labels = CallingAELabels(frozenset({"PACS", "CT1"}), limit=1)
        self.assertEqual([labels(t) for t in ("PACS", "CT1", "MR9")], ["PACS", "CT1", OTHER])

    def test_many_titles_make_at_most_limit_plus_one_series(self):
        """A peer sending a new title every time adds no series past the bound, nor memory."""
        registry = CollectorRegistry()
        metrics = ServerMetrics(registry, limit=32)
        for number in range(1000):
            metrics.c_store_answered(f"SCU{number}", Status.SUCCESS, 0.001)
        series = store_series(registry)
        self.assertEqual(len(series), 33)
        self.assertEqual(series[("0000", OTHER)], 1000 - 32)
        self.assertEqual(len(metrics.calling_ae_label._labels), 32)
        self.assertEqual(len(metrics._c_store_children), 33)


class ServerMetricsTests(SynchronousTestCase):
    def setUp(self):
        self.registry = CollectorRegistry()
        self.factory = SCPFactory(ServerConfig(output_dir=self.mktemp()), None, None)
        os.makedirs(self.factory.config.output_dir)
        instrument(self.factory, self.registry)

    def value(self, name, **labels):
        return samples(self.registry).get((name, tuple(sorted(labels.items()))))

    def test_rejections_by_reason(self):
        reasons = {
            (RejectSource.SERVICE_USER, UserRejectReason.CALLED_AE_TITLE_NOT_RECOGNIZED): "called_ae_not_recognized",
            (RejectSource.SERVICE_USER, UserRejectReason.CALLING_AE_TITLE_NOT_RECOGNIZED): "calling_ae_not_recognized",
            (RejectSource.SERVICE_PROVIDER_PRESENTATION, PresentationRejectReason.LOCAL_LIMIT_EXCEEDED): "max_conns",
            (RejectSource.SERVICE_PROVIDER_PRESENTATION, PresentationRejectReason.TEMPORARY_CONGESTION): "shutting_down",
            (RejectSource.SERVICE_PROVIDER_ACSE, ACSERejectReason.PROTOCOL_VERSION_NOT_SUPPORTED): "protocol_version_not_supported",
            (RejectSource.SERVICE_PROVIDER_PRESENTATION, 9): OTHER,
        }  # fmt: skip
        for (source, reason), label in reasons.items():
            self.factory.association_rejected(AAssociateRJ(RejectResult.REJECTED_PERMANENT, source, reason))
            self.assertEqual(self.value("radx_associations_rejected_total", reason=label), 1, label)

    def test_store_answered_by_status_and_calling_ae(self):
        class Filed:
            storage_seconds = 0.02

        self.factory.store_answered("CT1", Status.SUCCESS, Filed())
        self.factory.store_answered("CT1", Status.SUCCESS, Filed())
        self.factory.store_answered("CT1", 0x0111, Filed())
        self.factory.store_answered("MR1", Status.CANNOT_UNDERSTAND)
        self.assertEqual(store_series(self.registry), {("0000", "CT1"): 2, ("0111", "CT1"): 1, ("C000", "MR1"): 1})
        # Only the instances filed with Success have a storage time.
        self.assertEqual(self.value("radx_storage_seconds_count"), 2)
        self.assertAlmostEqual(self.value("radx_storage_seconds_sum"), 0.04)
        self.assertEqual(self.value("radx_storage_seconds_bucket", le="0.025"), 2)
        self.assertEqual(self.value("radx_storage_seconds_bucket", le="0.01"), 0)

    def test_calling_ae_labels_from_allow_calling_aet(self):
        registry = CollectorRegistry()
        config = ServerConfig(output_dir=self.mktemp(), policy=AcceptorPolicy(calling_ae_titles=frozenset({"PACS"})))
        factory = SCPFactory(config, None, None)
        instrument(factory, registry)
        factory.store_answered("PACS", Status.SUCCESS)
        factory.store_answered("FIRST", Status.SUCCESS)
        self.assertEqual(store_series(registry), {("0000", "PACS"): 1, ("0000", OTHER): 1})

    def test_read_from_statistics_at_each_scrape(self):
        stats = self.factory.stats
        stats.echo_requests, stats.store_requests, stats.associations, stats.bytes_received = 3, 5, 4, 12345
        self.assertEqual(self.value("radx_c_echo_requests_total"), 3)
        self.assertEqual(self.value("radx_c_store_requests_total"), 5)
        self.assertEqual(self.value("radx_associations_accepted_total"), 4)
        self.assertEqual(self.value("radx_received_bytes_total"), 12345)
        self.assertEqual(self.value("radx_associations_open"), 0)
        stats.echo_requests += 1
        self.assertEqual(self.value("radx_c_echo_requests_total"), 4)
        # No catalogue: no series of its failures.
        self.assertIsNone(self.value("radx_catalogue_failures_total"))

    def test_free_space_of_the_output_folder(self):
        info = os.statvfs(self.factory.config.output_dir)
        free = self.value("radx_output_free_bytes")
        self.assertEqual(free % info.f_frsize, 0)
        self.assertGreater(free, 0)

    def test_hook_runs_defined_with_their_labels(self):
        metrics = self.factory.metrics
        metrics.hook_runs.labels(hook="on-study", outcome="success").inc()
        self.assertEqual(self.value("radx_hook_runs_total", hook="on-study", outcome="success"), 1)
        self.assertEqual(metrics.hook_runs._labelnames, ("hook", "outcome"))

    def test_two_servers_in_one_process(self):
        """Each server's registry is its own: no clash of names, no shared counts."""
        other = SCPFactory(ServerConfig(output_dir=self.factory.config.output_dir), None, None)
        registry = CollectorRegistry()
        instrument(other, registry)
        other.store_answered("X", Status.SUCCESS)
        self.assertEqual(store_series(registry), {("0000", "X"): 1})
        self.assertEqual(store_series(self.registry), {})

    def test_without_metrics_nothing_is_counted(self):
        factory = SCPFactory(ServerConfig(output_dir=self.mktemp()), None, None)
        self.assertIsNone(factory.metrics)
        factory.store_answered("X", Status.SUCCESS)
        factory.association_rejected(AAssociateRJ(1, 1, 1))
