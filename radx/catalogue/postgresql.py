# -*- test-case-name: tests.test_catalogue_postgresql -*-
"""The catalogue in PostgreSQL (psycopg 3): one table that several servers share, a row keyed by node and path.

A file's path names it on one machine only, so each row says which node
stored it (by default the host name) and the key is (node, file_path).
file_path is collated "C": byte order, as SQLite's, so that the files
under a folder are one range of the key's index. Reads (summary, -q,
--sql) run in read-only transactions; --sql streams its rows, so no
more than the cap crosses the network, one statement at a time, under a
statement timeout.
"""

from __future__ import annotations

import socket
import urllib.parse

import psycopg
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict

from radx.catalogue.database import Catalogue, CatalogueError, ReadOnlyRefused, Rows
from radx.catalogue.schema import NODE, TABLE, create_statements

# Seconds a connection may take to be made, unless the URL says
# (connect_timeout): a server down or unreachable costs an instance's
# Success no more than this.
CONNECT_TIMEOUT_S = 5
# Milliseconds a statement of `radx dicom catalogue` may take, a write
# waiting for another's lock included (the server passes its own).
STATEMENT_TIMEOUT_MS = 10_000
# Milliseconds a --sql query may run before PostgreSQL cancels it.
SQL_TIMEOUT_MS = 60_000

# Any constant: the key of the advisory lock under which two servers
# starting at once make the table, lest both try and one fail.
_CREATE_LOCK = 0x7261_6478  # "radx"


def redacted(url: str) -> str:
    """``url`` with its password, in the user part or as a parameter, replaced by ``***``: how it is shown."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "postgresql://***"
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        if ":" in user:
            user = user.split(":", 1)[0] + ":***"
        netloc = f"{user}@{host}"
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        if any(k == "password" for k, _ in pairs):
            query = "&".join(f"{k}=***" if k == "password" else f"{k}={urllib.parse.quote(v, safe='/')}" for k, v in pairs)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def default_node() -> str:
    """The node a server's rows carry unless told: the host's name."""
    return socket.gethostname()


def _connect(url: str, read_only: bool, timeout_ms: int):
    settings = conninfo_to_dict(url)
    extra = {} if "connect_timeout" in settings else {"connect_timeout": CONNECT_TIMEOUT_S}
    connection = psycopg.connect(url, autocommit=False, **extra)
    try:
        cursor = connection.cursor()
        cursor.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(int(timeout_ms))))
        if read_only:
            cursor.execute("SET default_transaction_read_only = on")
        connection.commit()
    except BaseException:
        connection.close()
        raise
    return connection


def _secrets(url: str) -> list[str]:
    """The password ``url`` holds, as written and decoded: what no message may repeat."""
    try:
        parts = urllib.parse.urlsplit(url)
        found = [parts.password or ""]
        found += [v for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k == "password"]
        found += [p.split("&")[0] for p in parts.query.split("password=")[1:]]
    except ValueError:
        return []
    found += [urllib.parse.unquote(f) for f in found]
    return sorted({f for f in found if f}, key=len, reverse=True)


def _why(error: Exception, url: str = "") -> str:
    """
    PostgreSQL's words for ``error``: its first line (the others point
    into the statement), without ``url``'s password should libpq quote it
    (a malformed URL).
    """
    why = (str(error).strip().splitlines() or [type(error).__name__])[0]
    for secret in _secrets(url):
        why = why.replace(secret, "***")
    return why


class PostgreSQLCatalogue(Catalogue):
    placeholder = "%s"
    id_column = "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
    path_type = 'TEXT COLLATE "C"'
    key = (NODE, "file_path")
    errors = (psycopg.Error,)

    def __init__(self, connection, node: str | None = None, url: str = "") -> None:
        super().__init__(connection, node or default_node())
        self.url = url

    @classmethod
    def open(cls, url: str, timeout_ms: int = STATEMENT_TIMEOUT_MS, node: str | None = None) -> PostgreSQLCatalogue:
        """
        Connect to the catalogue at ``url`` for writing as ``node`` (the host
        name by default), making its table and indexes if need be. A
        statement (a write waiting for a lock among them) is cancelled after
        ``timeout_ms``.
        """
        try:
            connection = _connect(url, read_only=False, timeout_ms=timeout_ms)
        except psycopg.Error as error:
            raise CatalogueError(f"cannot open the catalogue {redacted(url)}: {_why(error, url)}") from None
        catalogue = cls(connection, node, url)
        try:
            catalogue.create()
        except psycopg.Error as error:
            catalogue.close()
            raise CatalogueError(f"cannot open the catalogue {redacted(url)}: {_why(error, url)}") from None
        return catalogue

    @classmethod
    def open_read_only(cls, url: str, timeout_ms: int = SQL_TIMEOUT_MS) -> PostgreSQLCatalogue:
        """
        Connect to the catalogue at ``url`` so that nothing can change it:
        every transaction read-only (default_transaction_read_only).

        @raise CatalogueError: cannot connect, or no catalogue there.
        """
        try:
            connection = _connect(url, read_only=True, timeout_ms=timeout_ms)
            found = connection.execute("SELECT to_regclass(%s) IS NOT NULL", (TABLE,)).fetchone()[0]
            connection.rollback()
        except psycopg.Error as error:
            raise CatalogueError(f"cannot read the catalogue {redacted(url)}: {_why(error, url)}") from None
        if not found:
            connection.close()
            raise CatalogueError(
                f"{redacted(url)} has no catalogue (index a folder into it first: radx dicom catalogue DIR --database URL)"
            )
        catalogue = cls(connection, None, url)
        catalogue.sql_timeout_ms = timeout_ms
        return catalogue

    def create(self) -> None:
        """The table and its indexes, unless there; under a lock, since servers may start at once."""
        with self._lock:
            cursor = self.connection.cursor()
            try:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK,))
                cursor.execute("SELECT to_regclass(%s) IS NOT NULL", (TABLE,))
                if not cursor.fetchone()[0]:
                    for statement in create_statements(self.id_column, self.path_type, self.key):
                        cursor.execute(statement)
                self.connection.commit()
            except BaseException:
                self._roll_back()
                raise

    def broken(self, error: Exception) -> bool:
        return self.connection.closed or self.connection.broken

    def _end_read(self) -> None:
        self.connection.rollback()

    def files_under(self, folder):
        return self._reading(super().files_under, folder)

    def summary(self):
        summary = self._reading(super().summary)
        summary.nodes = self._reading(self._count_nodes)
        return summary

    def _count_nodes(self) -> int:
        with self._lock:
            nodes = self.connection.execute(f"SELECT COUNT(DISTINCT {NODE}) FROM {TABLE}").fetchone()[0]
            self._end_read()
        return nodes

    def select(self, columns, where, parameters, limit):
        return self._reading(super().select, columns, where, parameters, limit)

    def _reading(self, read, *arguments):
        try:
            return read(*arguments)
        except psycopg.Error as error:
            with self._lock:
                self._roll_back()
            raise CatalogueError(f"cannot read the catalogue {redacted(self.url)}: {_why(error, self.url)}") from None

    sql_timeout_ms = SQL_TIMEOUT_MS

    def _columns_of(self, statement: str) -> list:
        """
        The names of the columns ``statement`` returns, asked of the server
        (Parse, Describe) without running it: a streamed query that returns
        no rows says nothing of them.
        """
        pgconn = self.connection.pgconn
        prepared = pgconn.prepare(b"", statement.encode(self.connection.info.encoding))
        if prepared.status != psycopg.pq.ExecStatus.COMMAND_OK:
            return []
        described = pgconn.describe_prepared(b"")
        if described.status != psycopg.pq.ExecStatus.COMMAND_OK:
            return []
        return [described.fname(i).decode(self.connection.info.encoding) for i in range(described.nfields)]

    def query(self, statement: str, limit: int) -> Rows:
        """
        The rows of one SQL statement of the user's, at most ``limit``, in a
        READ ONLY transaction that is rolled back after, cancelled past
        sql_timeout_ms. Sent alone (the extended protocol takes one
        statement) and streamed: the rows past the cap are never sent.

        @raise ReadOnlyRefused: the statement would change something.
        @raise CatalogueError: it is not valid SQL, not one statement, or too slow.
        """
        with self._lock:
            cursor = self.connection.cursor()
            try:
                cursor.execute("SET TRANSACTION READ ONLY")
                cursor.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(int(self.sql_timeout_ms))))
                rows = []
                columns = None
                for row in cursor.stream(statement):
                    if columns is None:
                        columns = [d[0] for d in cursor.description or ()]
                    rows.append(row)
                    if len(rows) > limit:
                        break
                if columns is None:
                    columns = self._columns_of(statement)
                return Rows(columns, rows[:limit], len(rows) > limit)
            except errors.ReadOnlySqlTransaction as error:
                raise ReadOnlyRefused(
                    f"--sql runs read-only queries (SELECT, WITH); this one would change something ({_why(error)})"
                ) from None
            except errors.QueryCanceled:
                raise CatalogueError(
                    f"--sql: the query ran longer than {self.sql_timeout_ms / 1000:g} s and was cancelled"
                ) from None
            except psycopg.Error as error:
                raise CatalogueError(f"--sql: {_why(error)}") from None
            finally:
                self._roll_back()
