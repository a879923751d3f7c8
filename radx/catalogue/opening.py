# -*- test-case-name: tests.test_catalogue_received,tests.test_catalogue_postgresql -*-
"""Which backend a catalogue's name means, decided in this one place: a SQLite file, or a postgresql:// URL."""

from __future__ import annotations

import re

from radx.catalogue.database import Catalogue, CatalogueError
from radx.catalogue.sqlite import BUSY_TIMEOUT_MS, SQLiteCatalogue, own_files as sqlite_files

# scheme://... (RFC 3986 3.1); a Windows drive letter is not one.
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
# libpq's URL schemes.
POSTGRESQL_SCHEMES = ("postgresql", "postgres")

_NO_DRIVER = "PostgreSQL catalogues need psycopg 3: pip install 'radx[postgresql]'"


def is_postgresql(target: str) -> bool:
    url = _URL.match(target)
    return url is not None and url.group(1).lower() in POSTGRESQL_SCHEMES


def check_target(target: str) -> str:
    """
    ``target`` if it names a catalogue radx can open (a SQLite file's path,
    or a postgresql:// URL with psycopg installed), for the option's parser.

    @raise ValueError: a URL of a database radx does not speak, or no psycopg.
    """
    if not target:
        raise ValueError("the catalogue's file name is empty")
    url = _URL.match(target)
    if url is not None and not is_postgresql(target):
        raise ValueError(
            f"{url.group(1)}:// catalogues are not supported; give the path of a SQLite file or a postgresql:// URL"
        )
    if url is not None:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise ValueError(_NO_DRIVER) from None
    return target


def shown(target: str) -> str:
    """``target`` as printed and logged: a URL's password replaced by ***."""
    if is_postgresql(target):
        from radx.catalogue.postgresql import redacted

        return redacted(target)
    return target


def own_files(target: str) -> set[str]:
    """The files of the catalogue ``target`` names, which an index of its folder leaves out: none for a URL."""
    return set() if is_postgresql(target) else sqlite_files(target)


def _postgresql():
    try:
        from radx.catalogue.postgresql import PostgreSQLCatalogue
    except ImportError:
        raise CatalogueError(_NO_DRIVER) from None
    return PostgreSQLCatalogue


def open_catalogue(target: str, busy_timeout_ms: int = BUSY_TIMEOUT_MS, node: str | None = None) -> Catalogue:
    """
    The catalogue ``target`` names, open for writing, its table made if
    need be; a write waits ``busy_timeout_ms`` at most for another's
    lock. ``node`` names this machine's rows in a catalogue that several
    share (PostgreSQL; the host name by default); SQLite has no node.

    @raise CatalogueError: it cannot be opened, or radx does not speak its kind.
    """
    try:
        check_target(target)
    except ValueError as error:
        raise CatalogueError(str(error)) from None
    if is_postgresql(target):
        return _postgresql().open(target, busy_timeout_ms, node)
    return SQLiteCatalogue.open(target, busy_timeout_ms)


def open_read_only(target: str) -> Catalogue:
    """
    The catalogue ``target`` names, open so that nothing can change it.

    @raise CatalogueError: no catalogue there, or radx does not speak its kind.
    """
    try:
        check_target(target)
    except ValueError as error:
        raise CatalogueError(str(error)) from None
    if is_postgresql(target):
        return _postgresql().open_read_only(target)
    return SQLiteCatalogue.open_read_only(target)
