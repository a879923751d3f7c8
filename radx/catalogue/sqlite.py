# -*- test-case-name: tests.test_catalogue_database -*-
"""The catalogue in a SQLite file: WAL, so a writer and readers work at once; read-only SQL by construction."""

from __future__ import annotations

import os
import sqlite3
import urllib.parse

from radx.catalogue.database import Catalogue, CatalogueError, ReadOnlyRefused, Rows, _fetch
from radx.catalogue.schema import TABLE

# Milliseconds a connection waits for another's write lock (a server
# recording while the command indexes) before it reports the database busy.
BUSY_TIMEOUT_MS = 10_000

# What the authorizer lets a --sql query do: read tables, call functions,
# recurse in a WITH; and the PRAGMAs that only describe the schema.
_READING = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE})
_DESCRIBING_PRAGMAS = frozenset(
    {"table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo", "function_list"}
)


def own_files(path: str) -> set[str]:
    """The absolute paths of a SQLite catalogue's files: the database, its WAL, shared memory and journal."""
    database = os.path.abspath(path)
    return {database + suffix for suffix in ("", "-wal", "-shm", "-journal")}


def _authorize(action, first, second, database, trigger) -> int:
    if action in _READING:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and first and first.lower() in _DESCRIBING_PRAGMAS:
        return sqlite3.SQLITE_OK
    # Writes, schema changes, ATTACH (which would create a file), VACUUM INTO...
    return sqlite3.SQLITE_DENY


# Primary result codes after which a connection is kept: the lock is
# someone else's, and this connection is sound.
_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


class SQLiteCatalogue(Catalogue):
    placeholder = "?"
    id_column = "id INTEGER PRIMARY KEY"
    errors = (sqlite3.Error,)

    def broken(self, error: Exception) -> bool:
        return getattr(error, "sqlite_errorcode", 0) & 0xFF not in _BUSY

    def _begin(self) -> None:
        self.connection.execute("BEGIN")

    @classmethod
    def open(cls, path: str, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> SQLiteCatalogue:
        """
        Open the catalogue at ``path`` for writing, creating the file, its
        table and indexes if need be. A write waits ``busy_timeout_ms`` at
        most for another connection's.
        """
        try:
            # Autocommit (no isolation level): a row recorded alone is one
            # statement, its own transaction, where the driver would
            # otherwise prepare and run a BEGIN before it and a COMMIT
            # after; writes of several rows begin theirs (_begin).
            connection = sqlite3.connect(
                path, timeout=busy_timeout_ms / 1000, check_same_thread=False, isolation_level=None
            )
            # WAL: readers see the last committed state while a writer
            # writes (the mode is stored in the file). NORMAL: a commit is
            # fsynced at checkpoints, not each time; the files it names
            # are still there to index again after a crash.
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            catalogue = cls(connection)
            catalogue.create()
        except sqlite3.Error as error:
            raise CatalogueError(f"cannot open the catalogue {path}: {error}") from None
        return catalogue

    @classmethod
    def open_read_only(cls, path: str) -> SQLiteCatalogue:
        """
        Open an existing catalogue so that nothing can change it: the file
        opened read-only (``mode=ro``), ``query_only`` on, and an authorizer
        that allows reading only.

        @raise CatalogueError: no such file, or not a catalogue.
        """
        if not os.path.isfile(path):
            raise CatalogueError(f"no catalogue at {path} (index a folder into it first: radx dicom catalogue DIR --database {path})")
        uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
        try:
            connection = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
            connection.execute("PRAGMA query_only=ON")
            found = connection.execute(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,)
            ).fetchone()[0]
        except sqlite3.Error as error:
            raise CatalogueError(f"cannot read the catalogue {path}: {error}") from None
        if not found:
            connection.close()
            raise CatalogueError(f"{path} is not a radx catalogue: it has no {TABLE} table")
        connection.set_authorizer(_authorize)
        return cls(connection)

    def summary(self):
        try:
            return super().summary()
        except sqlite3.Error as error:
            raise CatalogueError(f"cannot read the catalogue: {error}") from None

    def select(self, columns, where, parameters, limit):
        try:
            return super().select(columns, where, parameters, limit)
        except sqlite3.Error as error:
            raise CatalogueError(f"cannot read the catalogue: {error}") from None

    def query(self, statement: str, limit: int) -> Rows:
        """
        The rows of one SQL statement of the user's, at most ``limit``.

        @raise ReadOnlyRefused: the statement would change something.
        @raise CatalogueError: it is not valid SQL, or not one statement.
        """
        with self._lock:
            try:
                cursor = self.connection.execute(statement)
                return _fetch(cursor, limit)
            except sqlite3.Error as error:
                code = getattr(error, "sqlite_errorcode", None)
                if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_AUTH):
                    raise ReadOnlyRefused(
                        f"--sql runs read-only queries (SELECT, WITH); this one would change something ({error})"
                    ) from None
                raise CatalogueError(f"--sql: {error}") from None
            except sqlite3.Warning as error:
                raise CatalogueError(f"--sql: {error}") from None
