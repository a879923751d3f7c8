"""Storage threads writing rows to a PostgreSQL catalogue: one connection under a lock, against one connection a thread.

    python bench/catalogue_postgresql.py [--threads 4] [--rows 500] [--runs 3]

Starts a PostgreSQL server of its own (tests/postgresql.py: Debian's
binaries, a temporary folder, a Unix socket), with fsync on, as a real
one commits. Then, ``--runs`` times each, ``--threads`` threads record
``--rows`` rows each, one committed transaction a row as the server's
storage threads do: through one PostgreSQLCatalogue shared under its
lock (what radx does), then through one PostgreSQLCatalogue a thread.
Prints rows a second and the slowest write of each, median of the runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from radx.catalogue.postgresql import PostgreSQLCatalogue  # noqa: E402
from tests.postgresql import Cluster  # noqa: E402


def row(thread: int, number: int) -> dict:
    path = f"/bench/{thread}/{number}.dcm"
    return {"file_path": path, "file_name": os.path.basename(path), "modality": "CT", "file_size": 1000, "file_mtime": number}


def run(catalogues, rows: int) -> tuple[float, float]:
    """(rows a second, slowest write in seconds) of len(catalogues) threads, thread i writing through catalogues[i]."""
    slowest = [0.0] * len(catalogues)

    def write(index: int) -> None:
        for number in range(rows):
            started = time.perf_counter()
            catalogues[index].record(row(index, number))
            slowest[index] = max(slowest[index], time.perf_counter() - started)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(catalogues))]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(catalogues) * rows / (time.perf_counter() - started), max(slowest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    arguments = parser.parse_args()
    cluster = Cluster()
    cluster.settings = ("fsync=on",)
    cluster.start()
    try:
        results = {"one connection, a lock": [], "a connection a thread": []}
        for _ in range(arguments.runs):
            url = cluster.database()
            shared = PostgreSQLCatalogue.open(url)
            results["one connection, a lock"].append(run([shared] * arguments.threads, arguments.rows))
            shared.close()
            url = cluster.database()
            own = [PostgreSQLCatalogue.open(url) for _ in range(arguments.threads)]
            results["a connection a thread"].append(run(own, arguments.rows))
            for catalogue in own:
                catalogue.close()
        for name, measured in results.items():
            rate = statistics.median(r for r, _ in measured)
            slowest = statistics.median(s for _, s in measured)
            print(f"{name:24}  {rate:7.0f} rows/s  slowest write {slowest * 1000:6.1f} ms")
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
