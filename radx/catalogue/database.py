# -*- test-case-name: tests.test_catalogue_database -*-
"""The catalogue over a DB-API connection, in SQL that SQLite and PostgreSQL both speak.

What a backend spells its own way (opening, the identity column, the
parameter marker, read-only queries) lives in its subclass: sqlite.py.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

from radx.catalogue.schema import COLUMNS, TABLE, create_statements, upsert_statement


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
    # Rows recorded per transaction by record_many.
    BATCH = 1000

    def __init__(self, connection) -> None:
        self.connection = connection
        self._lock = threading.Lock()
        self._upsert = upsert_statement(self.placeholder)

    def create(self) -> None:
        """Create the table and its indexes, unless they exist."""
        with self._lock:
            cursor = self.connection.cursor()
            for statement in create_statements(self.id_column):
                cursor.execute(statement)
            self.connection.commit()

    def record(self, row: dict) -> None:
        """
        Record one file: ``row`` maps column names to values (see
        schema.COLUMNS; file_path at least, the others NULL when absent). A
        row of the same file_path is replaced. One transaction, committed
        when this returns: a server records each instance so, before its
        Success.
        """
        values = tuple(row.get(c) for c in COLUMNS)
        with self._lock:
            self._write(self.connection.execute, values)

    def record_many(self, rows) -> None:
        """Record rows, ``BATCH`` to a transaction."""
        rows = list(rows)
        for start in range(0, len(rows), self.BATCH):
            values = [tuple(row.get(c) for c in COLUMNS) for row in rows[start : start + self.BATCH]]
            with self._lock:
                self._write(self.connection.executemany, values)

    def _write(self, execute, values) -> None:
        """The upsert of ``values`` run by ``execute``, committed; under the lock."""
        try:
            execute(self._upsert, values)
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
        """Forget the rows of these files."""
        statement = f"DELETE FROM {TABLE} WHERE file_path = {self.placeholder}"
        with self._lock:
            self.connection.cursor().executemany(statement, [(p,) for p in paths])
            self.connection.commit()

    def clear(self) -> None:
        """Forget every row."""
        with self._lock:
            self.connection.cursor().execute(f"DELETE FROM {TABLE}")
            self.connection.commit()

    def files_under(self, folder: str) -> dict:
        """{file_path: (file_size, file_mtime)} of the rows of files under ``folder``, at any depth."""
        prefix = os.path.join(folder, "")
        # Every path that starts with prefix sorts between it and the same
        # string with its separator's successor (binary collation).
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        p = self.placeholder
        statement = (
            f"SELECT file_path, file_size, file_mtime FROM {TABLE} WHERE file_path >= {p} AND file_path < {p}"
        )
        with self._lock:
            cursor = self.connection.cursor()
            cursor.execute(statement, (prefix, end))
            return {path: (size, mtime) for path, size, mtime in cursor.fetchall()}

    def summary(self) -> Summary:
        with self._lock:
            cursor = self.connection.cursor()
            cursor.execute(
                "SELECT COUNT(*), COALESCE(SUM(file_size), 0), COUNT(DISTINCT patient_id),"
                f" COUNT(DISTINCT study_instance_uid), COUNT(DISTINCT series_instance_uid) FROM {TABLE}"
            )
            files, size, patients, studies, series = cursor.fetchone()
            cursor.execute(
                f"SELECT modality, COUNT(*) FROM {TABLE} GROUP BY modality ORDER BY COUNT(*) DESC, modality"
            )
            modalities = [tuple(r) for r in cursor.fetchall()]
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
            return _fetch(cursor, limit)

    def close(self) -> None:
        with self._lock:
            self.connection.close()


def _fetch(cursor, limit: int) -> Rows:
    """Up to ``limit`` rows of an executed cursor, and whether there were more."""
    rows = cursor.fetchmany(limit + 1)
    columns = [d[0] for d in cursor.description or ()]
    return Rows(columns, rows[:limit], len(rows) > limit)
