# -*- test-case-name: tests.test_storage_tree -*-
"""The output folder held open: every folder below it reached by descriptor, no symbolic link followed."""

from __future__ import annotations

import errno
import os
import stat
import threading

# Temporary files live here, inside the output directory: the same file
# system, so the final rename is atomic.  Hidden, so `find -name '*.dcm'`
# and the like never see a partial instance.
INCOMING = ".radx-incoming"

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# A folder below the output folder: a symbolic link in its place is refused
# (ELOOP), never followed.
_FOLDER_BELOW = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
# The output folder itself: the operator named it, so a link there is theirs.
_ROOT = os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC


def symbolic_link(relative: str) -> OSError:
    """The error for a symbolic link found where radx needs a folder or file of its own."""
    return OSError(errno.ELOOP, f"{relative} is a symbolic link, not followed")


def open_folder(parent_fd: int, name: str, mode: int | None, relative: str, made: list | None = None) -> int:
    """
    The folder ``name`` in ``parent_fd``, opened (the caller closes it);
    made first if missing, with ``mode`` exactly (whatever the umask).

    @param relative: the folder's path below the output folder, for errors.
    @param made: if given, True is appended when the folder was made here.
    @raise OSError: ELOOP for a symbolic link in its place; any other
        error of the file system (ENOTDIR for a file, ENOENT when
        ``parent_fd`` is a folder removed since it was opened).
    """
    try:
        return _open_below(parent_fd, name, relative)
    except FileNotFoundError:
        pass
    try:
        os.mkdir(name, 0o777 if mode is None else mode, dir_fd=parent_fd)
    except FileExistsError:
        # Made by another thread or process meanwhile: theirs has its mode.
        return _open_below(parent_fd, name, relative)
    fd = _open_below(parent_fd, name, relative)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    if made is not None:
        made.append(True)
    return fd


def _open_below(parent_fd: int, name: str, relative: str) -> int:
    try:
        return os.open(name, _FOLDER_BELOW, dir_fd=parent_fd)
    except OSError as error:
        # Linux says ENOTDIR for a link with O_DIRECTORY and O_NOFOLLOW,
        # other systems ELOOP: which it is, the entry itself tells.
        if error.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(parent_fd, name):
            raise symbolic_link(relative) from None
        raise


def _is_link(parent_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def make_root(path: str, mode: int | None) -> None:
    """Make the folder ``path`` and any missing above it, each with ``mode`` exactly."""
    head, tail = os.path.split(path)
    if not tail:
        head, tail = os.path.split(head)
    if head and tail and not os.path.exists(head):
        make_root(head, mode)
    try:
        os.mkdir(path, 0o777 if mode is None else mode)
    except FileExistsError:
        return
    if mode is not None:
        os.chmod(path, mode)


class OpenFolders:
    """
    The output folder and its L{INCOMING} folder, as descriptors, and the
    output folder's identity.  Closed when the last user lets go of it, so
    that a writer never sees a descriptor it holds closed under it.
    """

    __slots__ = ("root", "incoming", "identity")

    def __init__(self, root: int, incoming: int, identity: tuple[int, int]) -> None:
        self.root = root
        self.incoming = incoming
        self.identity = identity

    def __del__(self) -> None:
        for fd in (self.incoming, self.root):
            try:
                os.close(fd)
            except OSError:
                pass


class OutputTree:
    """
    The output folder, opened once and kept open; opened again when the
    folder at its path is no longer the one held (removed, made again,
    renamed away), so that files land in the folder the operator sees.
    Folders it makes (the output folder and those above it, L{INCOMING})
    get ``dir_mode`` exactly.

    Thread-safe: writers on a threadpool share it.
    """

    def __init__(self, path, dir_mode: int | None = None) -> None:
        self.path = os.fspath(path)
        self.dir_mode = dir_mode
        self._current: OpenFolders | None = None
        self._lock = threading.Lock()

    def folders(self, stale: OpenFolders | None = None) -> OpenFolders:
        """
        The folders, opened again if the output folder's path names
        another folder now, or none, or if ``stale`` (found unusable by
        the caller) is what is held.  One C{stat} of the path when
        nothing changed.

        @raise OSError: the output folder or L{INCOMING} cannot be made or
            opened, or L{INCOMING} is a symbolic link (ELOOP).
        """
        current = self._current
        if current is not None and current is not stale and self._names(current):
            return current
        with self._lock:
            if self._current is current:
                # Dropped, not closed: a writer may hold it still.
                self._current = None
                self._current = self._open()
            return self._current

    def _names(self, folders: OpenFolders) -> bool:
        """Whether the path still names the folder held."""
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            return False
        return (found.st_dev, found.st_ino) == folders.identity

    def _open(self) -> OpenFolders:
        if not os.path.isdir(self.path):
            make_root(self.path, self.dir_mode)
        root = os.open(self.path, _ROOT)
        try:
            found = os.fstat(root)
            incoming = open_folder(root, INCOMING, self.dir_mode, INCOMING)
        except BaseException:
            os.close(root)
            raise
        return OpenFolders(root, incoming, (found.st_dev, found.st_ino))
