# -*- test-case-name: tests.test_storage_store -*-
"""Durable, bit-preserving writes of received instances (blocking; off the reactor)."""

from __future__ import annotations

import errno
import os
import threading
import uuid
from dataclasses import dataclass, field

from radx.storage.layout import InvalidUID, is_valid_uid, relative_instance_path
from radx.storage.part10 import UnreadableDataSet, file_meta_bytes
from radx.storage.walk import DataSetWalk

# Temporary files live here, inside the output directory: the same file
# system, so the final rename is atomic.  Hidden, so `find -name '*.dcm'`
# and the like never see a partial instance.
INCOMING = ".radx-incoming"
PART_SUFFIX = ".part"

# PS3.4 B.2.3 (Table B.2-1): C-STORE failures of the Storage SOP Classes.
OUT_OF_RESOURCES = 0xA700
DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
# PS3.7 9.1.1.1.9, PS3.7 C.5: Invalid SOP Instance, "a violation of the UID
# construction rules"; a C-STORE status, and the precise one.
INVALID_SOP_INSTANCE = 0x0117

try:
    _IOV_MAX = os.sysconf("SC_IOV_MAX")
except (AttributeError, ValueError, OSError):
    _IOV_MAX = 1024
if _IOV_MAX <= 0:
    _IOV_MAX = 1024


_RENAME_LOCK = threading.Lock()


class _KnownDirectories:
    """
    Folders seen to exist lately, so that filing an instance into a series
    already begun costs no mkdir or stat.  Bounded: the oldest are
    forgotten first.  A folder removed behind radx's back is forgotten when
    a file cannot be made in it, and made again.
    """

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._paths: dict[str, None] = {}
        self._lock = threading.Lock()

    def __contains__(self, path: str) -> bool:
        return path in self._paths

    def add(self, path: str) -> None:
        with self._lock:
            self._paths[path] = None
            while len(self._paths) > self.size:
                del self._paths[next(iter(self._paths))]

    def forget_under(self, root: str) -> None:
        """Forget ``root`` and every folder below it."""
        prefix = os.path.join(root, "")
        with self._lock:
            for path in [p for p in self._paths if p == root or p.startswith(prefix)]:
                del self._paths[path]


_KNOWN_DIRECTORIES = _KnownDirectories()

class StorageError(Exception):
    """
    An instance could not be stored; nothing of it was left on disk.

    @ivar status: the C-STORE-RSP status to answer.
    @ivar message: why, for the Error Comment and the log.
    """

    def __init__(self, status: int, message: str):
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} (status 0x{self.status:04X})"


@dataclass
class StoredInstance:
    """An instance on disk, whole and durable."""

    path: str
    replaced: bool
    warnings: list[str] = field(default_factory=list)


def _strip_padding(uid: str) -> str:
    # PS3.5 6.2: a UI value is padded with a trailing NUL; spaces are common.
    return uid.rstrip("\x00 ") if isinstance(uid, str) else uid


def _fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _describe(error: OSError) -> str:
    what = error.strerror or str(error)
    return f"{what}: {error.filename}" if error.filename else what


class InstanceWriter:
    """
    One instance being written: its file meta, then the data set exactly as
    received, into a temporary file under L{INCOMING}; then L{commit} checks
    it and moves it into place durably, or L{discard} removes it.

    Blocking: run it on a threadpool, one call at a time.

    @ivar temp_path: the temporary file, or C{None} once committed or
        discarded.
    """

    def __init__(
        self,
        output_dir,
        *,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax_uid: str,
        calling_ae_title: str | None,
        called_ae_title: str | None = None,
        organize: bool = True,
        fsync: bool = True,
        file_mode: int | None = None,
        dir_mode: int | None = None,
    ):
        self.output_dir = os.fspath(output_dir)
        self.sop_class_uid = _strip_padding(sop_class_uid)
        self.sop_instance_uid = _strip_padding(sop_instance_uid)
        self.transfer_syntax_uid = _strip_padding(transfer_syntax_uid)
        self.organize = organize
        self.fsync = fsync
        self.file_mode = file_mode
        self.dir_mode = dir_mode
        self.temp_path: str | None = None
        self._fd: int | None = None
        # The data set's structure, checked as it is written; its UIDs.
        self._walk = DataSetWalk(self.transfer_syntax_uid)
        self._warnings: list[str] = []

        # Everything that needs no disk first: a refusal writes nothing.
        try:
            relative_instance_path(self.sop_instance_uid, None, None, organize=False)
        except InvalidUID as e:
            # PS3.7 9.1.1.1.9: Invalid SOP Instance; it names no file.
            raise StorageError(INVALID_SOP_INSTANCE, str(e)) from None
        if not is_valid_uid(self.sop_class_uid):
            # PS3.4 B.2.3: Cxxx, Cannot understand; no other status fits.
            raise StorageError(CANNOT_UNDERSTAND, f"malformed SOP Class UID {self.sop_class_uid!r:.80}")
        title = calling_ae_title
        try:
            meta = file_meta_bytes(
                self.sop_class_uid,
                self.sop_instance_uid,
                self.transfer_syntax_uid,
                title,
                sending_application_entity_title=title,
                receiving_application_entity_title=called_ae_title,
            )
        except ValueError:
            # (0002,0016-0018) are Type 3 (PS3.10 7.1): leave out titles it cannot hold.
            self._warnings.append(f"calling AE title {title!r} not recorded in the file meta")
            try:
                meta = file_meta_bytes(self.sop_class_uid, self.sop_instance_uid, self.transfer_syntax_uid, None)
            except ValueError as e:
                raise StorageError(CANNOT_UNDERSTAND, f"cannot write the file meta: {e}") from None

        incoming = os.path.join(self.output_dir, INCOMING)
        try:
            path = os.path.join(incoming, uuid.uuid4().hex + PART_SUFFIX)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
            # Created with its final mode (umask can only narrow it), then
            # set exactly: never a moment of wider access.
            mode = 0o666 if file_mode is None else file_mode
            self._make_directory(incoming)
            try:
                self._fd = os.open(path, flags, mode)
            except FileNotFoundError:
                # The folder went away since radx last made it: again.
                _KNOWN_DIRECTORIES.forget_under(self.output_dir)
                self._make_directory(incoming)
                self._fd = os.open(path, flags, mode)
            self.temp_path = path
            if file_mode is not None:
                os.fchmod(self._fd, file_mode)
            self._write_all([meta])
        except OSError as e:
            self.discard()
            raise StorageError(OUT_OF_RESOURCES, f"cannot start a file: {_describe(e)}") from None

    def _make_directory(self, path: str) -> bool:
        """Make a directory unless it exists; return whether it was made."""
        if path in _KNOWN_DIRECTORIES:
            return False
        try:
            os.makedirs(path, 0o777 if self.dir_mode is None else self.dir_mode)
        except FileExistsError:
            if not os.path.isdir(path):
                raise
            _KNOWN_DIRECTORIES.add(path)
            return False
        if self.dir_mode is not None:
            os.chmod(path, self.dir_mode)
        _KNOWN_DIRECTORIES.add(path)
        return True

    def _make_directories(self, components) -> tuple[str, list]:
        """The folders of ``components`` (all but the file name) made; the innermost, and those made."""
        directory = self.output_dir
        made = []
        for name in components[:-1]:
            parent, directory = directory, os.path.join(directory, name)
            if self._make_directory(directory):
                made.append((parent, directory))
        return directory, made

    def _write_all(self, chunks) -> None:
        views = [view for view in (memoryview(c).cast("B") for c in chunks) if len(view)]
        first = 0
        while first < len(views):
            written = os.writev(self._fd, views[first : first + _IOV_MAX])
            if written <= 0:
                raise OSError(errno.EIO, "no progress writing")
            # A short write: skip what went, resume mid-chunk.
            while written:
                size = len(views[first])
                if written >= size:
                    written -= size
                    first += 1
                else:
                    views[first] = views[first][written:]
                    written = 0

    def _closed(self) -> StorageError:
        return StorageError(OUT_OF_RESOURCES, "the instance's file is already closed")

    def write(self, chunks) -> None:
        """
        Append data set bytes, exactly as received.

        @param chunks: a list of C{bytes} or C{memoryview}s, written in order,
            none of them copied.
        @raise StorageError: 0xA700; or 0xC000 as soon as the data set is
            known not to parse in its transfer syntax. The temporary file
            is gone.
        """
        if self._fd is None:
            raise self._closed()
        try:
            for chunk in chunks:
                self._walk.feed(chunk)
        except UnreadableDataSet as e:
            self.discard()
            # PS3.4 B.2.3: Cxxx, Cannot understand.
            raise StorageError(CANNOT_UNDERSTAND, e.message) from None
        try:
            self._write_all(chunks)
        except OSError as e:
            self.discard()
            raise StorageError(OUT_OF_RESOURCES, f"cannot write: {_describe(e)}") from None

    def commit(self) -> StoredInstance:
        """
        Check the whole file and move it into place, durably.

        @raise StorageError: 0xA700 on any file-system error, 0xC000 for a
            data set that does not end as it should, 0xA900 for one whose SOP Class
            or SOP Instance UID is not the command's.  Whatever the error,
            the temporary file is gone and the final path is as it was
            before (or, when replacing, holds the complete new file).
        """
        if self._fd is None or self.temp_path is None:
            raise self._closed()
        temp = self.temp_path
        final = None
        renamed = False
        replaced = False
        try:
            # 1. The data in the file, then the file closed.
            if self.fsync:
                os.fsync(self._fd)
            fd, self._fd = self._fd, None
            os.close(fd)

            # 2. The stored data set is the one the command announced.
            try:
                header = self._walk.end()
            except UnreadableDataSet as e:
                # PS3.4 B.2.3: Cxxx, Cannot understand.
                raise StorageError(CANNOT_UNDERSTAND, e.message) from None
            # PS3.4 B.2.3: A900, "Data Set does not match SOP Class".
            if _strip_padding(header.sop_class_uid) != self.sop_class_uid:
                raise StorageError(
                    DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                    f"data set SOP Class UID {header.sop_class_uid[:80]!r}"
                    f" is not the command's {self.sop_class_uid!r}",
                )
            if _strip_padding(header.sop_instance_uid) != self.sop_instance_uid:
                raise StorageError(
                    DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                    f"data set SOP Instance UID {header.sop_instance_uid[:80]!r}"
                    f" is not the command's {self.sop_instance_uid!r}",
                )

            # 3. Where it goes.
            components, warnings = relative_instance_path(
                self.sop_instance_uid,
                _strip_padding(header.study_instance_uid),
                _strip_padding(header.series_instance_uid),
                self.organize,
            )
            for attempt in (1, 2):
                # 4. Its folders, each made durable with its entry.
                directory, made = self._make_directories(components)
                final = os.path.join(directory, components[-1])
                if self.fsync:
                    for parent, made_directory in made:
                        _fsync_directory(made_directory)
                        _fsync_directory(parent)

                # 5. Atomic: a reader sees the old file or the new, never a mix.
                # One rename at a time in this process, so that "replaced" is
                # true of exactly the commits that replaced a file.
                try:
                    with _RENAME_LOCK:
                        replaced = os.path.lexists(final)
                        os.replace(temp, final)
                except FileNotFoundError:
                    if attempt == 2 or not os.path.lexists(temp):
                        raise
                    # A folder radx made earlier was removed since: make it again.
                    _KNOWN_DIRECTORIES.forget_under(self.output_dir)
                    continue
                break
            renamed = True
            self.temp_path = None

            # 6. The new entry durable.
            if self.fsync:
                _fsync_directory(directory)
        except OSError as e:
            self._undo(renamed, replaced, final)
            raise StorageError(OUT_OF_RESOURCES, f"cannot store: {_describe(e)}") from None
        except BaseException:
            self._undo(renamed, replaced, final)
            raise
        return StoredInstance(final, replaced, self._warnings + warnings)

    def _undo(self, renamed: bool, replaced: bool, final: str | None) -> None:
        if renamed and not replaced and final is not None:
            # Not known durable: take it back, so a failure leaves nothing.
            # (A replaced file stays: the old one is gone either way, and
            # the new one is complete.)
            try:
                os.unlink(final)
            except OSError:
                pass
        self.discard()

    def discard(self) -> None:
        """Close and remove the temporary file, if any.  Idempotent."""
        fd, self._fd = self._fd, None
        path, self.temp_path = self.temp_path, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        if path is not None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError:
                # Left for clean_incoming at the next start.
                pass


def clean_incoming(output_dir) -> list[str]:
    """
    Remove the temporary files a crash left in the output directory's
    L{INCOMING} folder.  Run it at start, before any association: it does
    not know the files of writers still running.

    @return: the names of the files removed, for a log line.
    """
    incoming = os.path.join(os.fspath(output_dir), INCOMING)
    removed = []
    try:
        entries = list(os.scandir(incoming))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if entry.name.endswith(PART_SUFFIX) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            removed.append(entry.name)
    return sorted(removed)
