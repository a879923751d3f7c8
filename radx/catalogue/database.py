# -*- test-case-name: tests.test_catalogue_database -*-
"""The catalogue over a DB-API connection, in SQL that SQLite and PostgreSQL both speak.

What a backend spells its own way (opening, the identity column, the
parameter marker, the key of a row, read-only queries, its errors) lives
in its subclass: sqlite.py, postgresql.py.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

from radx.catalogue.query import SHOWN
from radx.catalogue.schema import COLUMNS, NODE, TABLE, create_statements, upsert_statement


class CatalogueError(Exception):
    """The catalogue cannot do what was asked; the argument says why, for the user."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ReadOnlyRefused(CatalogueError):
    """A query that would change the catalogue, refused."""


@dataclass
class Summary:
    files: int
    size: int
    patients: int
    studies: int
    series: int
    # (modality or None, files), most files first.
    modalities: list = field(default_factory=list)
    # The nodes with rows, in a catalogue several share; None in one that is one machine's.
    nodes: int | None = None


@dataclass
class Rows:
    columns: list
    rows: list
    # Whether more rows matched than were fetched.
    cut: bool


class Catalogue:
    """
    The ``dicom_metadata`` table: rows recorded, files listed, a summary,
    rows selected. One connection, shared by threads under a lock, so a
    server's storage threads may each record what they stored.
    """

    # The DB-API parameter marker ("?" for sqlite3, "%s" for psycopg).
    placeholder = "?"
    # The identity column, spelled as the backend does.
    id_column = "id INTEGER PRIMARY KEY"
    # file_path's type, if not TEXT (a collation).
    path_type: str | None = None
    # The columns that name a file: its path, or (node, path) in a
    # catalogue several machines share.
    key: tuple = ("file_path",)
    # What the backend's driver raises.
    errors: tuple = ()
    # Rows recorded per transaction by record_many.
    BATCH = 1000

    def __init__(self, connection, node: str | None = None) -> None:
        self.connection = connection
        # The machine whose files this connection records, lists and
        # removes, where the key has a node; None where it has not.
        self.node = node if NODE in self.key else None
        self._lock = threading.Lock()
        # The cursor of the rows recorded one at a time: made once, not at each row.
        self._cursor = connection.cursor()
        self._upsert = upsert_statement(self.placeholder, self.key)
        # The condition that keeps to this node's rows, and its parameters.
        if self.node is None:
            self._mine, self._mine_parameters = "", ()
        else:
            self._mine, self._mine_parameters = f" AND {NODE} = {self.placeholder}", (self.node,)

    def _end_read(self) -> None:
        """After a read, under the lock: end the transaction it began, if the driver began one."""

    def broken(self, error: Exception) -> bool:
        """Whether the connection is no use after ``error``, one of errors: open the catalogue again."""
        return True

    @property
    def shown(self) -> tuple:
        """The columns a query's table shows: the node's too, where there is one."""
        if self.node is None:
            return SHOWN
        return SHOWN[:-1] + (NODE,) + SHOWN[-1:]

    def create(self) -> None:
        """Create the table and its indexes, unless they exist."""
        with self._lock:
            self._begin()
            cursor = self.connection.cursor()
            for statement in create_statements(self.id_column, self.path_type, self.key):
                cursor.execute(statement)
            self.connection.commit()

    def _values(self, row: dict) -> tuple:
        values = tuple(row.get(c) for c in COLUMNS)
        if self.node is not None:
            values += (self.node,)
        return values

    def record(self, row: dict) -> None:
        """
        Record one file: ``row`` maps column names to values (see
        schema.COLUMNS; file_path at least, the others NULL when absent). A
        row of the same file_path is replaced. One transaction, committed
        when this returns: a server records each instance so, before its
        Success.
        """
        self.record_values(tuple(row.get(c) for c in COLUMNS))

    def record_values(self, values: tuple) -> None:
        """L{record} of a row given as its values in schema.COLUMNS' order, every one."""
        if self.node is not None:
            values += (self.node,)
        with self._lock:
            self._write(self._cursor.execute, values)

    def record_many(self, rows) -> None:
        """Record rows, ``BATCH`` to a transaction."""
        rows = list(rows)
        for start in range(0, len(rows), self.BATCH):
            values = [self._values(row) for row in rows[start : start + self.BATCH]]
            with self._lock:
                self._write(self.connection.cursor().executemany, values, several=True)

    def _begin(self) -> None:
        """Before a write of several statements or rows, under the lock: begin their transaction, if the driver does not."""

    def _write(self, execute, values, statement: str | None = None, several: bool = False) -> None:
        """
        ``statement`` (the upsert) with ``values`` run by ``execute``,
        committed; ``several`` if that is more than one row, in one
        transaction. Under the lock.
        """
        try:
            if several:
                self._begin()
            execute(statement or self._upsert, values)
            self.connection.commit()
        except BaseException:
            # A transaction left open would keep its old snapshot: in WAL,
            # every later write on this connection would then fail as
            # busy, even once the lock is free.
            self._roll_back()
            raise

    def _roll_back(self) -> None:
        try:
            self.connection.rollback()
        except Exception:
            pass  # the connection is unusable; the caller hears of the first error

    def remove(self, paths) -> None:
        """Forget the rows of these files (this node's)."""
        paths = list(paths)
        if not paths:
            return
        statement = f"DELETE FROM {TABLE} WHERE file_path = {self.placeholder}{self._mine}"
        with self._lock:
            self._write(
                self.connection.cursor().executemany, [(p,) + self._mine_parameters for p in paths], statement, several=True
            )

    def clear(self) -> None:
        """Forget every row; in a catalogue several nodes share, this node's only."""
        statement = f"DELETE FROM {TABLE}"
        if self.node is not None:
            statement += f" WHERE {NODE} = {self.placeholder}"
        with self._lock:
            self._write(self.connection.cursor().execute, self._mine_parameters, statement)

    def files_under(self, folder: str) -> dict:
        """{file_path: (file_size, file_mtime)} of the rows of files under ``folder``, at any depth (this node's)."""
        prefix = os.path.join(folder, "")
        # Every path that starts with prefix sorts between it and the same
        # string with its separator's successor (binary collation).
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        p = self.placeholder
        statement = (
            f"SELECT file_path, file_size, file_mtime FROM {TABLE} WHERE file_path >= {p} AND file_path < {p}{self._mine}"
        )
        with self._lock:
            cursor = self.connection.cursor()
            cursor.execute(statement, (prefix, end) + self._mine_parameters)
            found = {path: (size, mtime) for path, size, mtime in cursor.fetchall()}
            self._end_read()
        return found

    def summary(self) -> Summary:
        with self._lock:
            cursor = self.connection.cursor()
            cursor.execute(
                # PostgreSQL's SUM of a BIGINT is a NUMERIC (a Decimal): cast back.
                "SELECT COUNT(*), CAST(COALESCE(SUM(file_size), 0) AS BIGINT), COUNT(DISTINCT patient_id),"
                f" COUNT(DISTINCT study_instance_uid), COUNT(DISTINCT series_instance_uid) FROM {TABLE}"
            )
            files, size, patients, studies, series = cursor.fetchone()
            cursor.execute(
                f"SELECT modality, COUNT(*) FROM {TABLE} GROUP BY modality ORDER BY COUNT(*) DESC, modality"
            )
            modalities = [tuple(r) for r in cursor.fetchall()]
            self._end_read()
        return Summary(files, size, patients, studies, series, modalities)

    def select(self, columns, where: str, parameters, limit: int) -> Rows:
        """``columns`` of the rows matching ``where`` (SQL over the table's columns), at most ``limit``."""
        statement = f"SELECT {', '.join(columns)} FROM {TABLE}"
        if where:
            statement += f" WHERE {where}"
        statement += " ORDER BY file_path"
        with self._lock:
            cursor = self.connection.cursor()
            cursor.execute(statement, tuple(parameters))
            rows = _fetch(cursor, limit)
            self._end_read()
        return rows

    def close(self) -> None:
        with self._lock:
            self.connection.close()


def _fetch(cursor, limit: int) -> Rows:
    """Up to ``limit`` rows of an executed cursor, and whether there were more."""
    rows = cursor.fetchmany(limit + 1)
    columns = [d[0] for d in cursor.description or ()]
    return Rows(columns, rows[:limit], len(rows) > limit)
