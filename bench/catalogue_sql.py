"""What one catalogue row costs SQLite alone, and what each part of its cost is: a loop of upserts, variants side by side.

    python bench/catalogue_sql.py [--rows 1500] [--rounds 3] [--pause-ms 0.7]

Each variant records ``--rows`` rows like the benchmark's small files (one
study and series, a random SOP Instance UID, the output path of radx's
layout, the values a server records) into a new database on tmpfs, one
row a transaction through ``sqlite3`` as the server writes them, with a
pause of ``--pause-ms`` before each: in the server, a row comes once an
instance (a millisecond or so), and the CPU runs other work between two,
so each row meets cold caches; without a pause (``--pause-ms 0``) the
loop is warm, and costs about half. Printed: the median microseconds a
row, in each round, per variant:

- ``catalogue``: the table, its indexes and the upsert as radx makes
  them (radx.catalogue.sqlite), WAL, ``synchronous=NORMAL``, autocommit;
- ``no secondary index``: without the five indexes that ``-q`` selects
  by (patient, modality, the three UIDs);
- ``exclusive lock``: ``locking_mode=EXCLUSIVE``, which would keep
  readers out (what the locks of a transaction cost);
- ``in memory``: the same table and indexes in ``:memory:`` (no file,
  no WAL: the B-trees and the statement alone);
- ``one column``: a table of one text column, no index (the floor of a
  transaction in WAL through ``sqlite3``);
- ``SELECT 1``: a statement that touches no table.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from radx.catalogue.schema import COLUMNS, INDEXED, TABLE, create_statements, upsert_statement  # noqa: E402

VARIANTS = ("catalogue", "no secondary index", "exclusive lock", "in memory", "one column", "SELECT 1")


def rows(count: int) -> list[tuple]:
    """``count`` rows of one series of small files, in COLUMNS' order."""
    generator = random.Random(1)
    study, series = (f"2.25.{generator.getrandbits(120)}" for _ in range(2))
    made = []
    for number in range(count):
        sop = f"2.25.{generator.getrandbits(120)}"
        row = dict.fromkeys(COLUMNS)
        row.update(
            patient_name="Bench^Radx", patient_id="RADX-BENCH", patient_sex="O", study_instance_uid=study,
            study_date="20240102", series_instance_uid=series, series_number=1, sop_instance_uid=sop,
            instance_number=number + 1, sop_class_uid="1.2.840.10008.5.1.4.1.1.7", modality="OT",
            file_path=f"/dev/shm/radx-bench/received/{study}/{series}/{sop}.dcm", file_name=f"{sop}.dcm",
            file_size=1846, indexed_at="2026-12-06T09:00:00Z", received_at="2026-12-06T09:00:00Z",
            transfer_syntax_uid="1.2.840.10008.1.2.1", calling_ae_title="STORESCU", peer="127.0.0.1:40000",
            file_mtime=1796547600123456789,
        )  # fmt: skip
        made.append(tuple(row[c] for c in COLUMNS))
    return made


def run(variant: str, values: list[tuple], pause: float, folder: str) -> float:
    """The median seconds of one row's statement, committed."""
    path = ":memory:" if variant == "in memory" else os.path.join(folder, "catalogue.db")
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        if variant == "exclusive lock":
            connection.execute("PRAGMA locking_mode=EXCLUSIVE")
        if variant == "one column":
            connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, p TEXT)")
            statement = "INSERT INTO t (p) VALUES (?)"
            values = [(v[COLUMNS.index("file_path")],) for v in values]
        elif variant == "SELECT 1":
            statement, values = "SELECT 1", [()] * len(values)
        else:
            for created in create_statements("id INTEGER PRIMARY KEY"):
                connection.execute(created)
            if variant == "no secondary index":
                for column in INDEXED:
                    connection.execute(f"DROP INDEX idx_{TABLE}_{column}")
            statement = upsert_statement("?")
        cursor = connection.cursor()
        spent = []
        for row in values:
            if pause:
                time.sleep(pause)
            started = time.perf_counter()
            cursor.execute(statement, row)
            spent.append(time.perf_counter() - started)
    finally:
        connection.close()
        for suffix in ("", "-wal", "-shm"):
            if path != ":memory:" and os.path.exists(path + suffix):
                os.remove(path + suffix)
    return statistics.median(spent)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pause-ms", type=float, default=0.7)
    options = parser.parse_args(argv)
    values = rows(options.rows)
    found = {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory(dir="/dev/shm", prefix="radx-sql-") as folder:
        for _ in range(options.rounds):
            for variant in VARIANTS:
                found[variant].append(run(variant, values, options.pause_ms / 1000, folder))
    print(f"us a row, median of {options.rows}, each round ({options.pause_ms:g} ms before each row):")
    for variant, medians in found.items():
        print(f"  {variant:20s} " + " ".join(f"{m * 1e6:7.1f}" for m in medians))
    return 0


if __name__ == "__main__":
    sys.exit(main())
