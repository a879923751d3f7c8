# -*- test-case-name: tests.test_storage_writable -*-
"""The check at start that the output folder takes files the way a C-STORE files them."""

from __future__ import annotations

import os
import uuid

_CHECK_PREFIX = ".radx-write-check-"
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def check_writable(root: int, incoming: int, file_mode: int | None = None) -> None:
    """
    Do once, with a file of four bytes, what filing an instance does:
    create it in the L{INCOMING<radx.storage.tree.INCOMING>} folder
    (``incoming``, a descriptor), write and fsync it, rename it into the
    output folder (``root``), fsync that folder, and remove it.

    Run as the user the server runs as, it proves before any association
    that a C-STORE can be filed; an ``OSError`` says why not. Nothing is
    left behind, whatever step fails.
    """
    name = f"{_CHECK_PREFIX}{uuid.uuid4().hex}"
    fd = os.open(name, _CREATE, 0o600 if file_mode is None else file_mode, dir_fd=incoming)
    try:
        try:
            os.write(fd, b"radx")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(name, name, src_dir_fd=incoming, dst_dir_fd=root)
    except OSError:
        try:
            os.unlink(name, dir_fd=incoming)
        except OSError:
            pass
        raise
    try:
        os.fsync(root)
    finally:
        os.unlink(name, dir_fd=root)
