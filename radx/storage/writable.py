# -*- test-case-name: tests.test_storage_writable -*-
"""The check at start that the output folder takes files the way a C-STORE files them."""

from __future__ import annotations

import errno
import os
import uuid

_CHECK_PREFIX = ".radx-write-check-"
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def check_writable(root: int, incoming: int, file_mode: int | None = None, into_root: bool = True) -> None:
    """
    Do once, with a file of four bytes, what filing an instance does:
    create it in the L{INCOMING<radx.storage.tree.INCOMING>} folder
    (``incoming``, a descriptor), write and fsync it, rename it into the
    output folder (``root``), fsync that folder, and remove it.

    Run as the user the server runs as, it proves before any association
    that a C-STORE can be filed; an ``OSError`` says why not. Nothing is
    left behind, whatever step fails.

    With C{into_root} false, as while the server runs, the file stays in
    the incoming folder, which a walk of the output folder skips, and the
    output folder is only asked whether this user may write in it: no
    file of the check ever shows beside the instances.
    """
    if not into_root:
        # The file first: on a read-only file system its error says so.
        _made_and_removed(incoming, file_mode)
        if not os.access(".", os.W_OK | os.X_OK, dir_fd=root):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return
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


def _made_and_removed(incoming: int, file_mode: int | None) -> None:
    """A file of four bytes created, written and fsynced in the incoming folder, then removed."""
    name = f"{_CHECK_PREFIX}{uuid.uuid4().hex}"
    fd = os.open(name, _CREATE, 0o600 if file_mode is None else file_mode, dir_fd=incoming)
    try:
        os.write(fd, b"radx")
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(name, dir_fd=incoming)
