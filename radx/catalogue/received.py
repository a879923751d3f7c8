# -*- test-case-name: tests.test_catalogue_received -*-
"""The server's catalogue: a row for each instance stored, written by its storage thread before the Success.

Blocking, and safe from any thread. With SQLite, the storage threads
share one connection under the catalogue's lock: separate connections,
one a thread, wrote as fast but contended for SQLite's own lock, whose
busy handler sleeps: now and then a write waited 0.2 to 0.3 s instead
of 0.03 s. With PostgreSQL, each thread has a connection of its own:
the server commits several at once, where under one lock each commit
waited for the others' (three times the rows a second, the slowest
write 33 ms instead of 240: bench/catalogue_postgresql.py, and
docs/architecture.rst). A catalogue that fails never fails the
instance: record() says why it wrote nothing, the file on disk stays the
record, and catch_up() indexes what was missed.

A PostgreSQL server that cannot be reached may cost each connection
attempt seconds (its connect timeout), which the instance's Success
would wait. So after a failed connection the catalogue is not tried
again for a while (5 s, doubling to 60 s): the instances in between are
answered at once, not recorded, and one thread tries again when the
time is up. The server is told when the catalogue goes down and when it
is back (on_down, on_back), to say so once and catch up what was missed.
A SQLite catalogue that cannot be opened fails in microseconds, and one
locked by another process is worth its short wait at each instance: it
is tried every time.
"""

from __future__ import annotations

import os
import threading
import time

from radx.catalogue.database import CatalogueError
from radx.catalogue.indexer import index, now_utc
from radx.catalogue.instance import NotCatalogued, attribute_values, read_row
from radx.catalogue.opening import is_postgresql, open_catalogue, own_files, shown
from radx.catalogue.schema import ATTRIBUTES

# Milliseconds a storage thread waits for another process's write (the
# command indexing, a reader's checkpoint) before it gives up and leaves
# the instance to the next start. Long against the milliseconds a write
# takes; short, since the Success waits.
SERVER_BUSY_TIMEOUT_MS = 1000

# Seconds a catalogue that could not be connected to is left alone: the
# first wait, doubled after each failed attempt, up to the last.
BACK_OFF_FIRST_S = 5.0
BACK_OFF_MOST_S = 60.0

_ATTRIBUTE_COLUMNS = tuple(a.column for a in ATTRIBUTES)
_SOP_CLASS_UID = _ATTRIBUTE_COLUMNS.index("sop_class_uid")
_SOP_INSTANCE_UID = _ATTRIBUTE_COLUMNS.index("sop_instance_uid")
# Seconds between two looks at a SQLite catalogue's file (its inode), to
# notice it removed or replaced: a stat before every row cost the storage
# thread 11 to 14 us an instance (bench/catalogue_parts.py). Rows written
# in between go to the file open, and are kept until the next look: if the
# file was replaced, they are written again into the one now there.
IDENTITY_CHECK_S = 1.0
# Folders whose absolute form is remembered (record's _absolute): a few
# series' at a time, forgotten all at once past this many.
_FOLDERS_REMEMBERED = 256


def _identity(path: str):
    if is_postgresql(path):
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _close(catalogue) -> None:
    try:
        catalogue.close()
    except catalogue.errors:
        pass


class Stopped(Exception):
    """The server is stopping: the catch-up ends where it is."""


class _StopWhenAsked:
    """The indexer's progress, which ends the catch-up once the server stops."""

    def __init__(self, received: "ReceivedCatalogue") -> None:
        self.received = received

    def start(self, total: int) -> None:
        self.advance()

    def advance(self) -> None:
        if self.received.stopping:
            raise Stopped()


class ReceivedCatalogue:
    """
    The catalogue ``target`` names (see radx.catalogue.opening), opened at
    the first need and again after a failure, or once its file is seen
    removed or replaced (IDENTITY_CHECK_S; made again if need be), so
    that a catalogue made writable, unlocked, put back or a database
    server back up is used from the next instance on. ``node`` names this
    machine's rows in a PostgreSQL catalogue (the host name by default).
    ``now``, a seconds clock, times both the file's looks and the back-off.
    """

    def __init__(
        self,
        target: str,
        busy_timeout_ms: int = SERVER_BUSY_TIMEOUT_MS,
        node: str | None = None,
        now=time.monotonic,
        on_down=lambda why, seconds: None,
        on_back=lambda missed: None,
    ) -> None:
        self.target = target
        self.busy_timeout_ms = busy_timeout_ms
        self.node = node
        self.stopping = False
        # The back-off (PostgreSQL only): the seconds clock, and what to
        # call, from the thread that saw it, when the catalogue goes down
        # (why, the seconds until the next attempt) and when it is back
        # (the instances not recorded meanwhile).
        self.now = now
        self._on_down = on_down
        self._on_back = on_back
        self._backing_off = is_postgresql(target)
        self._state = threading.Lock()
        self._retry_at: float | None = None  # None: up
        self._delay = 0.0
        self._why_down = ""
        self._probing = False
        self._missed = 0
        # Connections attempted, for the record.
        self.connect_attempts = 0
        self._catalogue = None
        self._folders: dict[str, str] = {}
        # The open file's (st_dev, st_ino): SQLite would go on writing
        # into a file removed or replaced, which nobody reads any more;
        # looked at again once self.now() reaches _check_at; the rows
        # written since the last look, for the file now there if it changed.
        self._identity = None
        self._check_at = 0.0
        self._unchecked: list[tuple] = []
        self._opening = threading.Lock()
        # PostgreSQL: a connection a thread, in _own.catalogue; every one
        # open, to close at the end.
        self._per_thread = is_postgresql(target)
        self._own = threading.local()
        self._connections: set = set()

    def _current(self):
        if self._per_thread:
            catalogue = getattr(self._own, "catalogue", None)
            if catalogue is None:
                # Not under _opening: a connection that takes its time
                # (a database server unreachable) holds up no other thread.
                self.connect_attempts += 1
                catalogue = open_catalogue(self.target, self.busy_timeout_ms, self.node)
                self._own.catalogue = catalogue
                with self._opening:
                    self._connections.add(catalogue)
            return catalogue
        with self._opening:
            catalogue = self._catalogue
            if catalogue is not None:
                now = self.now()
                if now < self._check_at:
                    return catalogue
                self._check_at = now + IDENTITY_CHECK_S
                if _identity(self.target) == self._identity:
                    self._unchecked = []
                    return catalogue
                self._catalogue = None
                _close(catalogue)
            self.connect_attempts += 1
            self._catalogue = catalogue = open_catalogue(self.target, self.busy_timeout_ms, self.node)
            self._identity = _identity(self.target)
            self._check_at = self.now() + IDENTITY_CHECK_S
            unchecked, self._unchecked = self._unchecked, []
            self._rewrite(catalogue, unchecked)
            return catalogue

    def _rewrite(self, catalogue, rows: list[tuple]) -> None:
        """
        The rows written since the last look at the file, into
        ``catalogue``, just opened: the file they went to may be gone, and
        an upsert of a row already there changes nothing.
        """
        try:
            for row in rows:
                catalogue.record_values(row)
        except catalogue.errors:
            pass  # not lost: the next start's catch-up indexes their files

    def _forget(self, catalogue) -> None:
        """Drop a connection that failed, so that the next record opens the catalogue again."""
        if self._per_thread:
            if getattr(self._own, "catalogue", None) is catalogue:
                self._own.catalogue = None
            with self._opening:
                self._connections.discard(catalogue)
            _close(catalogue)
            return
        with self._opening:
            if self._catalogue is not catalogue:
                return
            self._catalogue = None
        _close(catalogue)

    def record(
        self,
        path: str,
        values: dict | None,
        transfer_syntax_uid: str,
        sop_class_uid: str,
        sop_instance_uid: str,
        calling_ae_title: str | None,
        peer: str | None,
        stat: os.stat_result | None = None,
    ) -> str | None:
        """
        Record the instance just stored at ``path``: ``values``, the raw
        top-level values of instance.ROW_TAGS its data set holds, by tag (as
        the storage's walk kept them), give the row's; None, and the file is
        read. ``stat``, the file's, if the caller has it. None once the row
        is committed; else why it is not, in words that hold no patient
        data.

        The storage thread runs this for every instance, before its
        Success: the row goes from the walk's values to the statement's
        parameters with no dict between.
        """
        path, name = self._absolute(path)
        try:
            if values is None:
                row = read_row(path)
                attributes = [row[column] for column in _ATTRIBUTE_COLUMNS]
            else:
                attributes = attribute_values(values)
            if stat is None:
                stat = os.stat(path, follow_symlinks=False)
        except NotCatalogued as error:
            return f"its data set cannot be read: {error.reason}"
        except OSError as error:
            return f"cannot read the file: {error.strerror or error}"
        if attributes[_SOP_CLASS_UID] is None:
            attributes[_SOP_CLASS_UID] = sop_class_uid
        if attributes[_SOP_INSTANCE_UID] is None:
            attributes[_SOP_INSTANCE_UID] = sop_instance_uid
        stamp = now_utc()
        # schema.FILE_COLUMNS, in their order.
        attributes += (
            path,
            name,
            stat.st_size,
            stamp,
            transfer_syntax_uid,
            stamp,
            calling_ae_title,
            peer,
            stat.st_mtime_ns,
        )
        return self._write(tuple(attributes))

    def _absolute(self, path: str) -> tuple[str, str]:
        """
        ``path`` made absolute, and its file's name; its folder's absolute
        form remembered, since a series' instances share it.
        """
        folder, _, name = path.rpartition(os.sep)
        if not folder:
            return os.path.abspath(path), name
        absolute = self._folders.get(folder)
        if absolute is None:
            if len(self._folders) >= _FOLDERS_REMEMBERED:
                self._folders.clear()
            absolute = self._folders[folder] = os.path.abspath(folder)
        return os.path.join(absolute, name), name

    @property
    def down(self) -> bool:
        """Whether the catalogue is being left alone after a failed connection."""
        return self._retry_at is not None

    def _may_try(self) -> bool | None:
        """None: leave the catalogue alone (counted as missed); True: try it, as the one attempt after a back-off; False: try it."""
        if not self._backing_off:
            return False
        with self._state:
            if self._retry_at is None:
                return False
            if self._probing or self.now() < self._retry_at:
                self._missed += 1
                return None
            self._probing = True
            return True

    def _went_down(self, why: str, probe: bool, instance: bool = True) -> None:
        """
        A connection failed: ``probe`` if it was the one attempt after a
        back-off (which then doubles), ``instance`` if an instance goes
        without its row for it (not the catch-up's).
        """
        with self._state:
            first = self._retry_at is None
            if instance:
                self._missed += 1
            if not first and not probe:
                return  # another thread's attempt, made as the first failed: the back-off stands
            self._delay = BACK_OFF_FIRST_S if first else min(self._delay * 2, BACK_OFF_MOST_S)
            self._retry_at = self.now() + self._delay
            self._probing = False
            self._why_down = why
            delay = self._delay
        if first:
            self._on_down(why, delay)

    def _came_back(self) -> None:
        with self._state:
            if self._retry_at is None:
                return
            self._retry_at = None
            self._probing = False
            missed, self._missed = self._missed, 0
        self._on_back(missed)

    def _write(self, row: tuple) -> str | None:
        """Record ``row``, schema.COLUMNS' values: None once committed, else why not."""
        probing = self._may_try() if self._backing_off else False
        if probing is None:
            return f"{self._why_down} (not tried again before {self._delay:g} s have passed)"
        try:
            catalogue = self._current()
        except CatalogueError as error:
            if self._backing_off:
                self._went_down(error.message, probing)
            return error.message
        try:
            catalogue.record_values(row)
        except catalogue.errors as error:
            if catalogue.broken(error):
                self._forget(catalogue)
            if probing:
                self._went_down(self._failed(error), probe=True)
            return self._failed(error)
        if not self._per_thread:
            with self._opening:
                self._unchecked.append(row)
        if probing:
            self._came_back()
        return None

    def _failed(self, error: Exception) -> str:
        """Why a write failed, the catalogue named without its password, the driver's words' first line."""
        why = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return f"the catalogue {shown(self.target)}: {why}"

    def catch_up(self, folder: str, modified_before: int):
        """
        Index the files in ``folder`` that this server stored but did not
        record (the catalogue failed, or the server stopped between the
        rename and the row), and those added or removed while it was not
        running; not those modified at or after ``modified_before``, which
        the server records itself. The indexer's result, or None if the
        server stopped first.

        @raise CatalogueError: the catalogue cannot be opened, or written.
        """
        try:
            catalogue = self._current()
        except CatalogueError as error:
            # Down at the start: caught up once it is back.
            if self._backing_off:
                self._went_down(error.message, probe=False, instance=False)
            raise
        try:
            return index(catalogue, folder, skip=own_files(self.target), progress=_StopWhenAsked(self), modified_before=modified_before)
        except Stopped:
            return None
        except catalogue.errors as error:
            self._forget(catalogue)
            raise CatalogueError(self._failed(error)) from None

    def close(self) -> None:
        """Close the connections, once the storage threads are done with them."""
        with self._opening:
            catalogue, self._catalogue = self._catalogue, None
            connections, self._connections = self._connections, set()
        if catalogue is not None:
            catalogue.close()
        for connection in connections:
            _close(connection)
        # A thread's connection, closed: the thread opens another if it records again.
        self._own = threading.local()
