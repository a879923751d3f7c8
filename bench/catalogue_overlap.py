"""An instance's commit and catalogue row, in one process: the row after the folder's fsync, or beside it.

    python bench/catalogue_overlap.py --checkout EXPORT [--folder DIR] [--instances 500] [--rounds 3]

Times, per instance, ``InstanceWriter.commit`` and
``ReceivedCatalogue.record`` of a small instance (4 KiB of pixels),
written first, with a 0.7 ms pause before each commit (as an instance
comes every millisecond or so in the server, and the CPUs idle in
between), into DIR (default: bench/out/overlap, the disk; /dev/shm for
tmpfs), SQLite beside it. Three ways, alternately, medians in µs:

- ``after``: the commit (the folder's fsync included), then the row, on
  one thread, as the server does;
- ``beside``: the row on this thread once the file is renamed, the
  folder's fsync on a thread of a pool meanwhile;
- ``row-thread``: the row on a thread of its own once the file is
  renamed, the folder's fsync on this thread meanwhile.

The last two need ``InstanceWriter.commit(renamed, folder_syncs)``, which
radx tried and did not keep: EXPORT is an export of the commit
"Catalogue: the row on the storage thread, the folder's fsync on a
thread beside it" (``git archive COMMIT | tar -x -C EXPORT``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
MODES = ("after", "beside", "row-thread")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", required=True)
    parser.add_argument("--folder", default=os.path.join(HERE, "out", "overlap"))
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, os.path.abspath(args.checkout))
    from radx.catalogue.instance import ROW_TAGS
    from radx.catalogue.received import ReceivedCatalogue
    from radx.storage.store import InstanceWriter
    from radx.storage.tree import OutputTree
    from tests.test_storage_store import EXPLICIT_LE, SOP_CLASS, data_set

    folder_syncs = ThreadPoolExecutor(4)
    row_thread = ThreadPoolExecutor(1)
    medians: dict = {mode: [] for mode in MODES}
    for round_ in range(args.rounds):
        for mode in MODES:
            out = os.path.join(args.folder, f"{mode}-{round_}")
            shutil.rmtree(out, ignore_errors=True)
            database = out + ".db"
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(database + suffix):
                    os.remove(database + suffix)
            catalogue = ReceivedCatalogue(database)
            tree = OutputTree(out)
            times = []
            for number in range(args.instances):
                uid = f"1.2.826.0.1.3680043.8.498.{1000 + number}"
                writer = InstanceWriter(
                    tree, sop_class_uid=SOP_CLASS, sop_instance_uid=uid, transfer_syntax_uid=EXPLICIT_LE,
                    calling_ae_title="SCU", values=ROW_TAGS, keep_stat=True,
                )  # fmt: skip
                writer.write([data_set(sop_instance=uid, pixels=b"\x01\x02" * 2000)])

                def record(stored, writer=writer, uid=uid):
                    return catalogue.record(
                        stored.path, writer.walked_values(), EXPLICIT_LE, SOP_CLASS, uid, "SCU", "127.0.0.1",
                        stat=writer.stat,
                    )  # fmt: skip

                time.sleep(0.0007)
                started = time.perf_counter_ns()
                if mode == "after":
                    record(writer.commit())
                elif mode == "beside":
                    writer.commit(record, folder_syncs)
                else:
                    rows = []
                    writer.commit(lambda stored: rows.append(row_thread.submit(record, stored)))
                    rows[0].result()
                times.append((time.perf_counter_ns() - started) / 1000)
            catalogue.close()
            medians[mode].append(statistics.median(times))
    for mode in MODES:
        print(f"{mode:10} µs an instance, medians of each round: {', '.join(f'{m:.0f}' for m in medians[mode])}")


if __name__ == "__main__":
    main()
