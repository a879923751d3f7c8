# -*- test-case-name: tests.test_catalogue_received -*-
"""Which backend a catalogue's name means, decided in this one place: today a SQLite file."""

from __future__ import annotations

import re

from radx.catalogue.database import Catalogue, CatalogueError
from radx.catalogue.sqlite import BUSY_TIMEOUT_MS, SQLiteCatalogue

# scheme://... (RFC 3986 3.1); a Windows drive letter is not one.
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")


def check_target(target: str) -> str:
    """
    ``target`` if it names a catalogue radx can open (a SQLite file's
    path), for the option's parser.

    @raise ValueError: a URL of a database radx does not speak.
    """
    if not target:
        raise ValueError("the catalogue's file name is empty")
    url = _URL.match(target)
    if url is not None:
        raise ValueError(f"{url.group(1)}:// catalogues are not supported; give the path of a SQLite file")
    return target


def open_catalogue(target: str, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> Catalogue:
    """
    The catalogue ``target`` names, open for writing, its table made if
    need be.

    @raise CatalogueError: it cannot be opened, or radx does not speak its kind.
    """
    try:
        check_target(target)
    except ValueError as error:
        raise CatalogueError(str(error)) from None
    return SQLiteCatalogue.open(target, busy_timeout_ms)
