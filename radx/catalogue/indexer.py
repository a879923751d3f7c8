# -*- test-case-name: tests.test_catalogue_indexer -*-
"""Index a folder into the catalogue: new and changed files read, gone ones forgotten, the rest left alone."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from radx.catalogue.instance import NotCatalogued, read_row

# The server's folder of files still arriving, and its temporary files
# (radx.storage.store): not yet instances.
INCOMING_FOLDER = ".radx-incoming"
# The server's events journal (radx.events.journal): not DICOM, never indexed.
EVENTS_FOLDER = ".radx-events"
PARTIAL_SUFFIX = ".part"


@dataclass
class IndexResult:
    folder: str
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    # (path, reason) of each file not indexed: not DICOM, or unreadable.
    failures: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def read(self) -> int:
        """Files read: indexed, or found not to be DICOM."""
        return self.added + self.changed + len(self.failures)


class Interrupted(KeyboardInterrupt):
    """
    Ctrl+C while indexing: still a KeyboardInterrupt, that says how many
    files' rows (``indexed``) were committed before it. They stay: the
    next run reads only the others.
    """

    def __init__(self, indexed: int) -> None:
        super().__init__(indexed)
        self.indexed = indexed


def walk(folder: str, recursive: bool, skip=frozenset(), failures=None):
    """
    (path, stat) of every regular file in ``folder`` (and, if ``recursive``,
    its folders; symbolic links to folders are not followed), but for
    ``skip``, the server's incoming folder and its ``.part`` files. A folder
    that cannot be listed goes to ``failures`` as (path, reason).
    """
    folders = [folder]
    while folders:
        current = folders.pop()
        try:
            entries = list(os.scandir(current))
        except OSError as error:
            if failures is None:
                raise
            failures.append((current, error.strerror or str(error)))
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if recursive and entry.name not in (INCOMING_FOLDER, EVENTS_FOLDER):
                        folders.append(entry.path)
                    continue
                if not entry.is_file() or entry.name.endswith(PARTIAL_SUFFIX) or entry.path in skip:
                    continue
                stat = entry.stat()
            except OSError as error:
                if failures is None:
                    raise
                failures.append((entry.path, error.strerror or str(error)))
                continue
            yield entry.path, stat


# The last timestamp made, and its second: a server records its rows at
# hundreds a second, each with the same few stamps.
_last_stamp = (None, "")


def now_utc() -> str:
    """Now, as the catalogue's timestamps are written: ISO 8601, UTC, to the second."""
    global _last_stamp
    second = int(time.time())
    seen, stamp = _last_stamp
    if second != seen:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
        _last_stamp = (second, stamp)
    return stamp


class _NoProgress:
    def start(self, total: int) -> None:
        pass

    def advance(self) -> None:
        pass


def index(
    catalogue,
    folder: str,
    recursive: bool = True,
    rebuild: bool = False,
    skip=frozenset(),
    progress=None,
    modified_before: int | None = None,
):
    """
    Bring the catalogue's rows of the files in ``folder`` up to date.

    A file already catalogued with the same size and modification time is
    not read again. The rows of files no longer there (or no longer DICOM)
    are removed: those under ``folder`` at any depth, or, without
    ``recursive``, in ``folder`` itself. ``rebuild`` empties the catalogue
    first. ``progress`` (start(total), advance()) hears of each file read.
    A file modified at or after ``modified_before`` (nanoseconds since the
    epoch), if given, is left alone, row and all: a running server's, which
    it records itself.

    @raise Interrupted: Ctrl+C (SIGINT); the rows committed before it stay.
    """
    progress = progress or _NoProgress()
    started = time.monotonic()
    folder = os.path.abspath(folder)
    result = IndexResult(folder)
    indexed = 0  # rows committed
    try:
        if rebuild:
            catalogue.clear()
            known = {}
        else:
            known = catalogue.files_under(folder)
            if not recursive:
                known = {p: v for p, v in known.items() if os.path.dirname(p) == folder}
        skip = frozenset(os.path.abspath(p) for p in skip)
        to_read = []
        for path, stat in walk(folder, recursive, skip, result.failures):
            before = known.pop(path, None)
            if modified_before is not None and stat.st_mtime_ns >= modified_before:
                continue
            if before == (stat.st_size, stat.st_mtime_ns):
                result.unchanged += 1
            else:
                to_read.append((path, stat, before is not None))
        gone = list(known)
        unreadable = set()
        progress.start(len(to_read))
        stamp = now_utc()
        rows = []
        for path, stat, existed in to_read:
            try:
                row = read_row(path, stat)
            except (NotCatalogued, OSError) as error:
                reason = error.reason if isinstance(error, NotCatalogued) else (error.strerror or str(error))
                result.failures.append((path, reason))
                if existed:
                    gone.append(path)
                    unreadable.add(path)
            else:
                row["indexed_at"] = stamp
                rows.append(row)
                if existed:
                    result.changed += 1
                else:
                    result.added += 1
            if len(rows) >= catalogue.BATCH:
                catalogue.record_many(rows)
                indexed += len(rows)
                rows = []
            progress.advance()
        catalogue.record_many(rows)
        indexed += len(rows)
        if modified_before is not None:
            # A running server may have stored a file the walk missed again
            # since, and recorded it: of those, only the rows of files still gone go.
            gone = [path for path in gone if path in unreadable or not os.path.lexists(path)]
        catalogue.remove(gone)
        result.removed = len(gone)
    except KeyboardInterrupt:
        raise Interrupted(indexed) from None
    result.failures.sort()
    result.seconds = time.monotonic() - started
    return result
