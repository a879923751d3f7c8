"""How fast `radx dicom catalogue` indexes: a first run over the CT corpus, a re-run over 10,000 unchanged files.

    python bench/catalogue.py [--runs 3]

Builds the benchmark corpus if it is not there yet (bench/corpus.py), and,
once, a tree of 10,000 small files made by copying ``small/`` five times
into ``bench/out/catalogue-tree``. Then, ``--runs`` times each:

- the first run: ``python -m radx dicom catalogue bench/out/corpus/ct
  --database NEW`` (500 CT images, 0.5 MB each) into a database that does
  not exist yet: the command's wall clock, start-up included; and the
  rate of the indexing alone, the same ``index`` call in this process
  into another new database;
- the re-run: the same command over the 10,000-file tree, indexed once
  before, nothing changed since: the wall clock of the whole command, as
  ``watch`` would see it.

The files are in the page cache (the corpus was just built or read), as
they are for a catalogue that follows a server's writes; a cold cache
adds the disk's time to read each header. Prints the median and best of
each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import corpus  # noqa: E402

TREE_COPIES = 5


def radx(*arguments: str) -> tuple[float, str]:
    """Run `python -m radx ARGUMENTS`: (wall-clock seconds, stdout)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "radx", *arguments], capture_output=True, check=True, text=True)
    return time.perf_counter() - started, done.stdout


def indexing_rate(folder: str, database: str) -> float:
    """Files per second of the command's indexing, in this process, into a new ``database``."""
    from radx.catalogue.indexer import index
    from radx.catalogue.sqlite import SQLiteCatalogue

    catalogue = SQLiteCatalogue.open(database)
    started = time.perf_counter()
    result = index(catalogue, folder)
    seconds = time.perf_counter() - started
    catalogue.close()
    return result.added / seconds


def build_tree(corpus_folder: str, tree: str) -> int:
    """10,000 small files in ``tree`` (five copies of small/), made once; how many."""
    small = os.path.join(corpus_folder, "small")
    names = sorted(os.listdir(small))
    if not os.path.isdir(tree) or sum(len(f) for _, _, f in os.walk(tree)) != TREE_COPIES * len(names):
        shutil.rmtree(tree, ignore_errors=True)
        for copy in range(TREE_COPIES):
            shutil.copytree(small, os.path.join(tree, f"copy{copy}"))
    return TREE_COPIES * len(names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    corpus_folder = os.path.join(HERE, "out", "corpus")
    corpus.build(corpus_folder)
    ct = os.path.join(corpus_folder, "ct")
    ct_files = len(os.listdir(ct))
    tree = os.path.join(HERE, "out", "catalogue-tree")
    tree_files = build_tree(corpus_folder, tree)
    with tempfile.TemporaryDirectory(prefix="radx-catalogue-bench-") as scratch:
        tree_database = os.path.join(scratch, "tree.db")
        radx("dicom", "catalogue", tree, "--database", tree_database)
        first_wall, first_rate, rerun_wall = [], [], []
        for run in range(args.runs):
            database = os.path.join(scratch, f"ct-{run}.db")
            wall, report = radx("dicom", "catalogue", ct, "--database", database)
            if f": {ct_files} new," not in report:
                raise SystemExit(f"the first run did not index {ct_files} new files:\n{report}")
            first_wall.append(wall)
            first_rate.append(indexing_rate(ct, os.path.join(scratch, f"ct-{run}-in-process.db")))
            wall, report = radx("dicom", "catalogue", tree, "--database", tree_database)
            if f" {tree_files} unchanged" not in report:
                raise SystemExit(f"the re-run did not find {tree_files} unchanged files:\n{report}")
            rerun_wall.append(wall)
    print(f"first run, {ct_files} CT files, indexing:   median {statistics.median(first_rate):.0f} files/s,"
          f" best {max(first_rate):.0f} files/s")
    print(f"first run, {ct_files} CT files, command:    median {statistics.median(first_wall):.2f} s,"
          f" best {min(first_wall):.2f} s ({ct_files / statistics.median(first_wall):.0f} files/s)")
    print(f"re-run, {tree_files} unchanged files, command: median {statistics.median(rerun_wall):.2f} s,"
          f" best {min(rerun_wall):.2f} s")


if __name__ == "__main__":
    main()
