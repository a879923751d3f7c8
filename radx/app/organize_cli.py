# -*- test-case-name: tests.test_organize_cli -*-
"""`radx dicom organize DIR --output-dir OUT`: file DICOM files already on disk as the server files what it receives."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

from twisted.python import usage

from radx.app import flag_values as values
from radx.app.catalogue_cli import IndexProgress
from radx.app.config import FILING_FLAGS, Flag, part_from
from radx.app.interrupted import EXIT_INTERRUPTED, BetweenFiles
from radx.app.options import CommandOptions, check_layout, normalise_boolean_flags
from radx.app.scu_cli import EXIT_FAILED, EXIT_OK, _parse, _write
from radx.storage.filing import Filing


@dataclass(frozen=True)
class OrganizeConfig:
    """`radx dicom organize DIR --output-dir OUT`, typed: filed as the server files (Filing, the same flags)."""

    # DIR, the folder whose files are filed.
    folder: str
    # OUT, required: parsing refuses None, not given.
    output_dir: str | None = None
    filing: Filing = field(default_factory=Filing)
    move: bool = False
    dry_run: bool = False
    recursive: bool = False
    # --catalogue: an SQLite file or postgresql:// URL each file filed is recorded in; None: none.
    catalogue: str | None = None


ORGANIZE_FLAGS = (
    Flag("output-dir", OrganizeConfig, "output_dir", "Folder to file into (made if missing).", short="o"),
    *FILING_FLAGS,
    Flag("move", OrganizeConfig, "move", "Remove each source file once its copy is on disk, fsynced.", switch=True),
    Flag("dry-run", OrganizeConfig, "dry_run", "Print where each file would go (SOURCE -> DESTINATION); write nothing.", short="n", switch=True),
    Flag("recursive", OrganizeConfig, "recursive", "Organize the files of DIR's folders too.", short="r", switch=True),
    Flag("catalogue", OrganizeConfig, "catalogue", "SQLite file, or postgresql:// URL, in which each file filed is recorded, as radx dicom catalogue indexes it.", values.catalogue_target),
)  # fmt: skip


# Short flags spelled out, so that the value after -o is not taken for DIR.
_SPELLED_OUT = {"-o": "--output-dir", "-r": "--recursive", "-n": "--dry-run"}


class OrganizeOptions(CommandOptions):
    """radx dicom organize DIR --output-dir OUT [flags]"""

    longdesc = (
        "Copy (or, with --move, move) each DICOM file of DIR under OUT, exactly where and as"
        " `radx dicom scp --output-dir OUT` with the same --layout would have stored it on receipt."
    )
    flags = ORGANIZE_FLAGS

    def __init__(self) -> None:
        super().__init__()
        self._folder = ""
        # Set by postOptions: the whole parsed, typed.
        self.config: OrganizeConfig | None = None

    def getSynopsis(self) -> str:
        return "Usage: radx dicom organize DIR --output-dir OUT [flags]"

    def parseOptions(self, options=None) -> None:
        if options is None:
            options = sys.argv[1:]
        super().parseOptions(normalise_boolean_flags([_SPELLED_OUT.get(a, a) for a in options]))

    def parseArgs(self, directory) -> None:
        self._folder = directory

    def postOptions(self) -> None:
        if not os.path.isdir(self._folder):
            raise usage.UsageError(f"DIR: {self._folder!r} is not a folder")
        if self["output-dir"] is None:
            raise usage.UsageError("--output-dir: the folder to file into is required")
        if self["move"] and self["dry-run"]:
            raise usage.UsageError("--move and --dry-run do not go together")
        check_layout(self)
        # Parsed: from here on, the command reads this, typed, and never the options.
        self.config = self.configuration()

    def configuration(self) -> OrganizeConfig:
        filing = part_from(Filing, self.flags, self)
        return part_from(OrganizeConfig, self.flags, self, folder=self._folder, filing=filing)


def summary(counts: dict, seconds: float, dry_run: bool) -> str:
    """The closing block, as the server's: counts, one a line."""
    verb = "Would organize" if dry_run else "Organized"
    return (
        "\n"
        f"  {verb + ':':<16}{counts['organized']}\n"
        f"  {'Skipped:':<16}{counts['skipped']}\n"
        f"  {'Failed:':<16}{counts['failed']}\n"
        f"  {'Seconds:':<16}{seconds:.2f}\n"
    )


def interrupted_line(counts: dict, total: int, dry_run: bool) -> str:
    """Where Ctrl+C stopped it, in one line."""
    done = sum(counts.values())
    organized = f"{counts['organized']} {'would be organized' if dry_run else 'organized'}"
    return (
        f"Interrupted after {done} of {total} files: {organized}, {counts['skipped']} skipped,"
        f" {counts['failed']} failed\n"
    )


def run_organize(config: OrganizeConfig, stdout=None, stderr=None, tty=None) -> int:
    from radx.organize import Organizer

    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    if tty is None:
        tty = stderr.isatty()
    recorder = None
    if config.catalogue is not None and not config.dry_run:
        from radx.catalogue.database import CatalogueError

        try:
            recorder = _Recorder(config.catalogue)
        except CatalogueError as error:
            _write(stderr, f"Error: {error}\n")
            return EXIT_FAILED
    organizer = Organizer(
        config.output_dir,
        config.filing.layout,
        on_duplicate=config.filing.on_duplicate,
        move=config.move,
        on_stored=None if recorder is None else recorder.record,
    )
    try:
        return _organize_each(config, organizer, stdout, stderr, tty)
    finally:
        if recorder is not None:
            recorder.close()


def _organize_each(config: OrganizeConfig, organizer, stdout, stderr, tty) -> int:
    from radx.organize import FAILED, ORGANIZED, SKIPPED

    started = time.monotonic()
    sources = organizer.sources(config.folder, config.recursive)
    progress = IndexProgress(stderr) if tty else None
    if progress is not None:
        progress.start(len(sources))
    counts = {ORGANIZED: 0, SKIPPED: 0, FAILED: 0}
    dry_run = config.dry_run
    # Ctrl+C is acted on between two files (so OUT holds only whole files,
    # and no temporary file is left behind); those done stay done.
    try:
        with BetweenFiles() as interruption:
            for path in sources:
                outcome = organizer.plan(path) if dry_run else organizer.organize(path)
                counts[outcome.state] += 1
                lines = []
                if outcome.state == FAILED:
                    lines.append((stderr, f"Failed: {path}: {outcome.reason}\n"))
                elif dry_run and outcome.state == ORGANIZED:
                    lines.append((stdout, f"{path} -> {outcome.destination}\n"))
                lines += [(stderr, f"Warning: {path}: {warning}\n") for warning in outcome.warnings]
                if outcome.reason and outcome.state != FAILED and outcome.reason.startswith("not removed"):
                    lines.append((stderr, f"Warning: {path}: {outcome.reason}\n"))
                for stream, line in lines:
                    if progress is not None:
                        progress.say(stream, line)
                    else:
                        _write(stream, line)
                if progress is not None:
                    progress.advance()
                if interruption.asked:
                    break
    finally:
        if progress is not None:
            progress.clear()
    if interruption.asked:
        _write(stderr, interrupted_line(counts, len(sources), dry_run))
        return EXIT_INTERRUPTED
    _write(stdout, summary(counts, time.monotonic() - started, dry_run))
    return EXIT_FAILED if counts[FAILED] else EXIT_OK


class _Recorder:
    """--catalogue: each file filed recorded as radx dicom catalogue indexes it; a failure a warning of its file's, never fatal."""

    def __init__(self, target: str) -> None:
        from radx.catalogue.opening import open_catalogue

        self.catalogue = open_catalogue(target)

    def record(self, source: str, stored) -> None:
        from radx.catalogue.database import CatalogueError
        from radx.catalogue.indexer import now_utc
        from radx.catalogue.instance import NotCatalogued, read_row

        try:
            row = read_row(os.path.abspath(stored.path))
            row["indexed_at"] = now_utc()
            self.catalogue.record(row)
        except NotCatalogued as error:
            stored.warnings.append(f"not recorded in the catalogue: {error.reason}")
        except (CatalogueError, OSError) as error:
            stored.warnings.append(f"not recorded in the catalogue: {error}")

    def close(self) -> None:
        self.catalogue.close()


def organize_main(arguments: list[str]) -> int:
    options = OrganizeOptions()
    code = _parse(options, arguments, "organize")
    if code is not None:
        return code
    return run_organize(options.config)
