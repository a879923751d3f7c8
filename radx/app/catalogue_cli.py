# -*- test-case-name: tests.test_catalogue_cli -*-
"""`radx dicom catalogue`: index a folder of DICOM files into a catalogue (SQLite, PostgreSQL), summarise it, query it."""

from __future__ import annotations

import os
import sys
import unicodedata
from dataclasses import dataclass

from twisted.python import usage

from radx.app import flag_values as values
from radx.app.config import Flag, part_from
from radx.app.interrupted import EXIT_INTERRUPTED
from radx.app.options import CommandOptions
from radx.app.scu_cli import EXIT_FAILED, EXIT_OK, Progress, _parse, _write

# Rows a query prints at most.
ROW_LIMIT = 1000


@dataclass(frozen=True)
class CatalogueConfig:
    """`radx dicom catalogue [DIR]`, typed: each default written once, here."""

    database: str = "dicom-catalogue.db"
    # With a postgresql:// database: the machine DIR's rows belong to; None: this host's name.
    node: str | None = None
    recursive: bool = True
    sql: str | None = None
    rebuild: bool = False
    # -q/--query, as given; and as the SQL condition and parameters they make (radx.catalogue.query).
    query: tuple[str, ...] = ()
    condition: tuple[str, tuple] = ("", ())
    # DIR, the folder to index; None: summarise or query only.
    folder: str | None = None


CATALOGUE_FLAGS = (
    Flag("database", CatalogueConfig, "database", "SQLite file of the catalogue, or a postgresql:// URL.", values.catalogue_target, short="d"),
    Flag("node", CatalogueConfig, "node", "With a postgresql:// database: the machine DIR's rows belong to (default: this host's name)."),
    Flag("recursive", CatalogueConfig, "recursive", "Index DIR's folders too (--recursive=false: DIR's own files only).", values.boolean, short="R"),
    Flag("sql", CatalogueConfig, "sql", "Print the rows of this read-only SQL query (one statement) on table dicom_metadata."),
    Flag("rebuild", CatalogueConfig, "rebuild", "Empty the catalogue, then index DIR afresh.", switch=True),
    Flag("query", CatalogueConfig, "query", "FIELD=VALUE (FIELD a DICOM keyword or a column; * and ? in VALUE match anything), or a word to find in names, IDs, descriptions, modality, manufacturer or institution; repeat: all must hold.", short="q", repeatable=True),
)  # fmt: skip


# Short flags spelled out, so that the value after -d or -q is not taken
# for DIR; and --recursive alone means --recursive=true.
_SPELLED_OUT = {"-d": "--database", "-q": "--query", "-R": "--recursive=true", "--recursive": "--recursive=true"}


class CatalogueOptions(CommandOptions):
    """radx dicom catalogue [DIR] [flags]"""

    longdesc = (
        "Index the DICOM files in DIR (new and changed ones only, from the second run on) into a SQLite"
        " or PostgreSQL catalogue, then summarise it; without DIR, summarise or query the catalogue as it is."
    )
    flags = CATALOGUE_FLAGS

    def __init__(self) -> None:
        super().__init__()
        self._folder: str | None = None
        self._condition: tuple[str, tuple] = ("", ())
        # Set by postOptions: the whole parsed, typed.
        self.config: CatalogueConfig | None = None

    def getSynopsis(self) -> str:
        return "Usage: radx dicom catalogue [DIR] [flags]"

    def parseOptions(self, options=None) -> None:
        if options is None:
            options = sys.argv[1:]
        super().parseOptions([_SPELLED_OUT.get(a, a) for a in options])

    def parseArgs(self, directory=None) -> None:
        self._folder = directory

    def postOptions(self) -> None:
        if self._folder is not None and not os.path.isdir(self._folder):
            raise usage.UsageError(f"DIR: {self._folder!r} is not a folder")
        if self["rebuild"] and self._folder is None:
            raise usage.UsageError("--rebuild goes with DIR, the folder to index afresh")
        if self["sql"] is not None and self["query"]:
            raise usage.UsageError("--sql and -q/--query do not go together")
        from radx.catalogue.opening import is_postgresql
        from radx.catalogue.query import QueryError, condition

        if self["node"] is not None and not is_postgresql(self["database"]):
            raise usage.UsageError("--node goes with a postgresql:// --database; a SQLite catalogue is one machine's")
        try:
            where, parameters = condition(self["query"], "%s" if is_postgresql(self["database"]) else "?")
        except QueryError as error:
            raise usage.UsageError(str(error)) from None
        self._condition = (where, tuple(parameters))
        # Parsed: from here on, the command reads this, typed, and never the options.
        self.config = self.configuration()

    def configuration(self) -> CatalogueConfig:
        return part_from(CatalogueConfig, self.flags, self, condition=self._condition, folder=self._folder)


class IndexProgress(Progress):
    """The bar while files are read: files done of those to read, and the rate."""

    def __init__(self, stream) -> None:
        super().__init__(stream, 0, 0)

    def start(self, total: int) -> None:
        self.total_files = total
        if total:
            self.draw(force=True)

    def advance(self) -> None:
        self.file_done()

    def line(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        filled = min(self.WIDTH, self.files * self.WIDTH // max(self.total_files, 1))
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        return f"[{bar}] {self.files}/{self.total_files} files  {self.files / elapsed:.0f} files/s"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def index_report(result) -> str:
    text = (
        f"Indexed {result.folder} in {result.seconds:.2f} s: {result.added} new,"
        f" {result.changed} changed, {result.removed} removed, {result.unchanged} unchanged\n"
    )
    if result.failures:
        text += f"Not indexed, not DICOM or unreadable: {_plural(len(result.failures), 'file')}\n"
        text += "".join(f"  {path}: {reason}\n" for path, reason in result.failures)
    return text


def summary_report(database: str, summary) -> str:
    lines = [
        f"Catalogue: {database}",
        f"  Files:     {summary.files} ({summary.size / 1e6:.1f} MB)",
        f"  Patients:  {summary.patients}",
        f"  Studies:   {summary.studies}",
        f"  Series:    {summary.series}",
    ]
    if summary.nodes is not None:
        lines.append(f"  Nodes:     {summary.nodes}")
    if summary.modalities:
        lines.append("  Modalities:")
        width = max(len(m or "(none)") for m, _ in summary.modalities)
        lines += [f"    {(m or '(none)'):<{width}}  {count}" for m, count in summary.modalities]
    return "\n".join(lines) + "\n"


def _width(text: str) -> int:
    """Columns ``text`` takes on a terminal: two for each wide (East Asian) character."""
    if text.isascii():
        return len(text)
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _padded(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def table(rows) -> str:
    """Rows as aligned columns under their names; NULL as nothing."""
    cells = [[("" if v is None else str(v)) for v in row] for row in rows.rows]
    widths = [max([_width(c)] + [_width(r[i]) for r in cells]) for i, c in enumerate(rows.columns)]
    lines = ["  ".join(_padded(c, w) for c, w in zip(rows.columns, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(_padded(c, w) for c, w in zip(row, widths)).rstrip() for row in cells]
    text = "\n".join(lines) + "\n"
    text += f"({_plural(len(rows.rows), 'row')})\n"
    return text


def run_catalogue(config: CatalogueConfig, stdout=None, stderr=None, tty=None) -> int:
    from radx.catalogue.database import CatalogueError
    from radx.catalogue.indexer import Interrupted
    from radx.catalogue.opening import open_catalogue, open_read_only, shown

    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    if tty is None:
        tty = stderr.isatty()
    database = config.database
    where, parameters = config.condition
    try:
        if config.folder is not None:
            catalogue = open_catalogue(database, node=config.node)
            _index(catalogue, config, stdout, IndexProgress(stderr) if tty else None)
        catalogue = open_read_only(database)
        try:
            if config.sql is not None:
                rows = catalogue.query(config.sql, ROW_LIMIT)
            elif config.query:
                rows = catalogue.select(catalogue.shown, where, parameters, ROW_LIMIT)
            else:
                _write(stdout, summary_report(shown(database), catalogue.summary()))
                return EXIT_OK
        finally:
            catalogue.close()
    except CatalogueError as error:
        _write(stderr, f"Error: {error.message}\n")
        return EXIT_FAILED
    except Interrupted as interrupted:
        # Ctrl+C: each batch of rows is committed as it is written, so what was indexed stays.
        _write(
            stderr,
            f"Interrupted: {_plural(interrupted.indexed, 'file')} indexed so far, kept in {shown(database)};"
            " run again to index the rest\n",
        )
        return EXIT_INTERRUPTED
    _write(stdout, table(rows))
    if rows.cut:
        _write(stderr, f"Note: only the first {ROW_LIMIT} rows are shown; narrow the query, or use --sql with LIMIT/OFFSET.\n")
    return EXIT_OK


def _index(catalogue, config: CatalogueConfig, stdout, progress) -> None:
    from radx.catalogue.indexer import index
    from radx.catalogue.opening import own_files

    # The catalogue's own files, should it live in the folder it indexes.
    skip = own_files(config.database)
    try:
        result = index(catalogue, config.folder, config.recursive, config.rebuild, skip, progress)
    finally:
        if progress is not None:
            progress.clear()
        catalogue.close()
    _write(stdout, index_report(result))


def catalogue_main(arguments: list[str]) -> int:
    options = CatalogueOptions()
    code = _parse(options, arguments, "catalogue")
    if code is not None:
        return code
    return run_catalogue(options.config)
