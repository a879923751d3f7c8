"""What --http's metrics cost per C-STORE: the factory's calls on the receive path, with and without metrics.

    python bench/metrics_cost.py [--instances 200000]

Per instance, the server does (radx.scp.protocol): one ``bytes_received``
addition per read (a 1 MiB data set is about four reads), one
``store_answered`` call (the counter by status and calling AE, the
storage-time histogram) and, on the storage thread, two ``perf_counter``
calls per job. Timed here on the reactor's side in one thread, best of
five, against the same calls without metrics (``factory.metrics`` None).
"""

from __future__ import annotations

import argparse
import time
from time import perf_counter

from prometheus_client import CollectorRegistry

from radx.dimse.status import Status
from radx.metrics import instrument
from radx.scp.factory import SCPFactory, ServerConfig


class _Filed:
    storage_seconds = 0.004


def per_instance(factory, instances: int, reads: int = 4) -> float:
    """Seconds per instance of what the receive path calls on the factory for it."""
    reception = _Filed()
    titles = [f"SCU{n}" for n in range(8)]
    stats = factory.stats
    store_answered = factory.store_answered
    started = time.perf_counter()
    for number in range(instances):
        for _ in range(reads):
            stats.bytes_received += 262144
        store_answered(titles[number & 7], Status.SUCCESS, reception)
    return (time.perf_counter() - started) / instances


def timing_pair(jobs: int) -> float:
    """Seconds per storage job of the two perf_counter calls and the addition around it."""
    total = 0.0
    started = time.perf_counter()
    for _ in range(jobs):
        begun = perf_counter()
        total += perf_counter() - begun
    return (time.perf_counter() - started) / jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200_000)
    arguments = parser.parse_args()
    plain = SCPFactory(ServerConfig(output_dir="."), None, None)
    counted = SCPFactory(ServerConfig(output_dir="."), None, None)
    instrument(counted, CollectorRegistry())
    without = min(per_instance(plain, arguments.instances) for _ in range(5))
    with_metrics = min(per_instance(counted, arguments.instances) for _ in range(5))
    job = min(timing_pair(arguments.instances) for _ in range(5))
    print(f"without metrics: {without * 1e6:.2f} us per instance")
    print(f"with metrics:    {with_metrics * 1e6:.2f} us per instance (+{(with_metrics - without) * 1e6:.2f} us)")
    print(f"storage timing:  {job * 1e6:.2f} us per storage job")


if __name__ == "__main__":
    main()
