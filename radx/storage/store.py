# -*- test-case-name: tests.test_storage_store -*-
"""Durable, bit-preserving writes of received instances (blocking; off the reactor)."""

from __future__ import annotations

import errno
import os
import threading
import uuid
from dataclasses import dataclass, field

from radx.storage.errors import (
    DataSetMismatch,
    DuplicateInstance,
    FileMetaUnencodable,
    MalformedDataSet,
    MalformedSOPClassUID,
    MalformedSOPInstanceUID,
    NamesExhausted,
    WriteFailed,
    WriterClosed,
)
from radx.storage.filing import KEEP, REJECT, REPLACE
from radx.storage.layout import (
    FLAT_LAYOUT,
    ORGANIZED_LAYOUT,
    InvalidUID,
    Layout,
    is_valid_uid,
    relative_instance_path,
    uid_for_log,
)
from radx.storage.tree import INCOMING, OpenFolders, OutputTree, open_folder
from radx.storage.values import SPECIFIC_CHARACTER_SET, decoded_values, read_values
from radx.storage.part10 import (
    UnreadableDataSet,
    data_set_offset,
    file_meta_bytes,
)
from radx.storage.walk import DataSetWalk

PART_SUFFIX = ".part"

# Names tried under UNIQUE, <name>_1 to <name>_<this>, before giving up.
_MOST_UNIQUE_NAMES = 9999

try:
    _IOV_MAX = os.sysconf("SC_IOV_MAX")
except (AttributeError, ValueError, OSError):
    _IOV_MAX = 1024
if _IOV_MAX <= 0:
    _IOV_MAX = 1024


_RENAME_LOCK = threading.Lock()


@dataclass
class StoredInstance:
    """An instance on disk, whole and durable."""

    path: str
    replaced: bool
    warnings: list[str] = field(default_factory=list)
    # KEEP: the file found is kept, this one not stored ("kept"); UNIQUE:
    # a file with the same data set is there already ("identical").
    duplicate: str | None = None
    # Why the catalogue (--catalogue) has no row of it; None if it has, or if there is none.
    not_catalogued: str | None = None


def _strip_padding(uid: str) -> str:
    # PS3.5 6.2: a UI value is padded with a trailing NUL; spaces are common.
    return uid.rstrip("\x00 ") if isinstance(uid, str) else uid


def _describe(error: OSError) -> str:
    what = error.strerror or str(error)
    return f"{what}: {error.filename}" if error.filename else what


class InstanceWriter:
    """
    One instance being written: its file meta, then the data set exactly as
    received, into a temporary file under L{INCOMING}; then L{commit} checks
    it and moves it into place durably, or L{discard} removes it.

    Blocking: run it on a threadpool, one call at a time.  Each refusal is
    a L{radx.storage.errors.StorageError} that says why; making one raises
    L{MalformedSOPInstanceUID}, L{MalformedSOPClassUID} or
    L{FileMetaUnencodable} before anything is written, or L{WriteFailed}.

    @ivar temp_path: the temporary file's path, for messages, or C{None}
        once committed or discarded.  Never opened by it: the file is
        reached by descriptor from the L{INCOMING} folder held open, so
        that nothing goes through a link put in that folder's place.
    @ivar stat: with C{keep_stat}, once committed, the file's
        C{os.stat_result} (its size and modification time, for a
        catalogue's row), taken from its descriptor before it is closed;
        else C{None}.
    """

    def __init__(
        self,
        tree: OutputTree,
        *,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax_uid: str,
        calling_ae_title: str | None,
        called_ae_title: str | None = None,
        organize: bool = True,
        fsync: bool = True,
        file_mode: int | None = None,
        layout: Layout | None = None,
        on_duplicate: str = REPLACE,
        values=(),
        keep_stat: bool = False,
    ):
        self.tree = tree
        self.sop_class_uid = _strip_padding(sop_class_uid)
        self.sop_instance_uid = _strip_padding(sop_instance_uid)
        self.transfer_syntax_uid = _strip_padding(transfer_syntax_uid)
        self.organize = organize
        # The fixed layouts of --organize unless a template is given.
        self.layout = layout or (ORGANIZED_LAYOUT if organize else FLAT_LAYOUT)
        self.on_duplicate = on_duplicate
        self.fsync = fsync
        self.file_mode = file_mode
        self.temp_path: str | None = None
        self.keep_stat = keep_stat
        self.stat: os.stat_result | None = None
        self._fd: int | None = None
        # The data set's structure, checked as it is written; its UIDs, and
        # the values of the layout's keywords and of ``values`` (tags: what
        # a catalogue records), read on the way, not from the file after.
        wanted = set(values)
        if self.layout.extra_tags:
            wanted.update(tag for tag, _ in self.layout.extra_tags.values())
            wanted.add(SPECIFIC_CHARACTER_SET)
        self._walk = DataSetWalk(self.transfer_syntax_uid, wanted)
        # The output folder and INCOMING as they were when the file was made:
        # the temporary file's name is relative to the second.
        self._folders: OpenFolders | None = None
        self._temp_name: str | None = None
        self._warnings: list[str] = []

        # Everything that needs no disk first: a refusal writes nothing.
        try:
            relative_instance_path(self.sop_instance_uid, None, None, organize=False)
        except InvalidUID as e:
            raise MalformedSOPInstanceUID(str(e)) from None
        if not is_valid_uid(self.sop_class_uid):
            raise MalformedSOPClassUID(f"malformed SOP Class UID {uid_for_log(self.sop_class_uid)}")
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
                raise FileMetaUnencodable(f"cannot write the file meta: {e}") from None

        try:
            name = uuid.uuid4().hex + PART_SUFFIX
            flags = (
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
            )
            # Created with its final mode (umask can only narrow it), then
            # set exactly: never a moment of wider access.
            mode = 0o666 if file_mode is None else file_mode
            folders = tree.folders()
            try:
                fd = os.open(name, flags, mode, dir_fd=folders.incoming)
            except FileNotFoundError:
                # INCOMING was removed since it was opened: open it again.
                folders = tree.folders(stale=folders)
                fd = os.open(name, flags, mode, dir_fd=folders.incoming)
            self._fd, self._folders, self._temp_name = fd, folders, name
            self.temp_path = os.path.join(tree.path, INCOMING, name)
            if file_mode is not None:
                os.fchmod(fd, file_mode)
            self._write_all([meta])
        except OSError as e:
            self.discard()
            raise WriteFailed(f"cannot start a file: {_describe(e)}") from None

    def _open_directory(self, root: int, components, opened: list, made: list) -> int:
        """
        The folder the file goes in (all of ``components`` but the file's
        name), made where missing: ``root`` for the flat layout, else a
        descriptor added to ``opened`` for the caller to close.  Each new
        folder is in ``made`` with its parent, for their fsyncs.
        """
        directory = root
        for depth, name in enumerate(components[:-1]):
            new: list = []
            relative = "/".join(components[: depth + 1])
            child = open_folder(directory, name, self.tree.dir_mode, relative, new)
            opened.append(child)
            if new:
                made.append((directory, child))
            directory = child
        return directory

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

    def walked_values(self) -> dict | None:
        """
        After commit: the raw top-level values of the tags asked for
        (``values``) that the data set holds, by tag; None if one was too
        long to keep, and must be read from the file.
        """
        return self._walk.values()

    def _closed(self) -> WriterClosed:
        return WriterClosed("the instance's file is already closed")

    def write(self, chunks) -> None:
        """
        Append data set bytes, exactly as received.

        @param chunks: a list of C{bytes} or C{memoryview}s, written in order,
            none of them copied.
        @raise WriteFailed: the file system refused the write.
        @raise MalformedDataSet: as soon as the data set is known not to
            parse in its transfer syntax.
        @raise WriterClosed: the file was closed before.
        Whatever the error, the temporary file is gone.
        """
        if self._fd is None:
            raise self._closed()
        try:
            for chunk in chunks:
                self._walk.feed(chunk)
        except UnreadableDataSet as e:
            self.discard()
            raise MalformedDataSet(e.message) from None
        try:
            self._write_all(chunks)
        except OSError as e:
            self.discard()
            raise WriteFailed(f"cannot write: {_describe(e)}") from None

    def commit(self) -> StoredInstance:
        """
        Check the whole file and move it into place, durably.

        @raise WriteFailed: on any file-system error.
        @raise MalformedDataSet: the data set does not end as it should.
        @raise DataSetMismatch: its SOP Class or SOP Instance UID is not
            the one announced.
        @raise DuplicateInstance: under REJECT, its file is there already.
        @raise NamesExhausted: under UNIQUE, no name is left for it.
        @raise WriterClosed: the file was closed before.
        Whatever the error, the temporary file is gone and the final path
        is as it was before (or, when replacing, holds the complete new file).
        """
        if self._fd is None or self._temp_name is None:
            raise self._closed()
        temp, incoming = self._temp_name, self._folders.incoming
        final = None
        directory = None
        opened: list = []
        renamed = False
        replaced = False
        duplicate = None
        try:
            # 1. The data in the file, then the file closed.
            if self.fsync:
                os.fsync(self._fd)
            if self.keep_stat:
                # By descriptor: no walk of the path, which the rename keeps
                # the file's size and modification time through.
                self.stat = os.fstat(self._fd)
            fd, self._fd = self._fd, None
            os.close(fd)

            # 2. The stored data set is the one the command announced.
            try:
                header = self._walk.end()
            except UnreadableDataSet as e:
                raise MalformedDataSet(e.message) from None
            if _strip_padding(header.sop_class_uid) != self.sop_class_uid:
                raise DataSetMismatch(
                    f"data set SOP Class UID {uid_for_log(header.sop_class_uid)}"
                    f" is not the command's {self.sop_class_uid!r}",
                )
            if _strip_padding(header.sop_instance_uid) != self.sop_instance_uid:
                raise DataSetMismatch(
                    f"data set SOP Instance UID {uid_for_log(header.sop_instance_uid)}"
                    f" is not the command's {self.sop_instance_uid!r}",
                )

            # 3. Where it goes.
            components, warnings = self.layout.relative_path(
                self.sop_instance_uid,
                _strip_padding(header.study_instance_uid),
                _strip_padding(header.series_instance_uid),
                None if self.layout.fixed is not None else self._layout_values(temp, incoming),
            )
            root = self._folders.root
            for attempt in (1, 2):
                try:
                    # 4. Its folders, each made durable with its entry; below
                    # the output folder, a symbolic link is refused, not followed.
                    made: list = []
                    directory = self._open_directory(root, components, opened, made)
                    final = components[-1]
                    if self.fsync:
                        for parent, made_directory in made:
                            os.fsync(made_directory)
                            os.fsync(parent)

                    # 5. Atomic: a reader sees the old file or the new, never a
                    # mix.  A symbolic link in the file's place is replaced, not
                    # followed.  One rename at a time in this process, so that
                    # "replaced" is true of exactly the commits that replaced a file.
                    if self.on_duplicate != REPLACE:
                        final, duplicate = self._place_new(temp, incoming, directory, final)
                    else:
                        with _RENAME_LOCK:
                            replaced = _exists(final, directory)
                            os.rename(temp, final, src_dir_fd=incoming, dst_dir_fd=directory)
                except FileNotFoundError:
                    if attempt == 2 or not _exists(temp, incoming):
                        raise
                    # A folder was removed since it was opened or made (the
                    # output folder itself, maybe): open or make it again.
                    root = self.tree.folders().root
                    continue
                break
            if duplicate is not None:
                self.discard()  # not stored: the file found stays
            renamed = duplicate is None
            self.temp_path = self._temp_name = None

            # 6. The new entry durable.
            if self.fsync and renamed:
                os.fsync(directory)
        except OSError as e:
            self._undo(renamed, replaced, final, directory)
            raise WriteFailed(f"cannot store: {_describe(e)}") from None
        except BaseException:
            self._undo(renamed, replaced, final, directory)
            raise
        finally:
            for fd in opened:
                os.close(fd)
        path = os.path.join(self.tree.path, *components[:-1], final)
        return StoredInstance(path, replaced, self._warnings + warnings, duplicate)

    def _layout_values(self, temp: str, incoming: int) -> dict:
        """The values of a template's keywords beyond the UIDs read for every instance."""
        values = {"SOPClassUID": self.sop_class_uid}
        tags = self.layout.extra_tags
        if tags:
            walked = self._walk.values()
            found = None if walked is None else decoded_values(walked, tags)
            if found is None:
                fd = os.open(temp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=incoming)
                try:
                    with os.fdopen(fd, "rb") as raw:
                        found = read_values(raw, self.transfer_syntax_uid, tags)
                except UnreadableDataSet as e:
                    raise MalformedDataSet(e.message) from None
            values.update(found)
        return values

    def _place_new(self, temp: str, incoming: int, directory: int, name: str) -> tuple[str, str | None]:
        """
        Link the temporary file in as ``name`` only if nothing has that
        name: a link fails where a rename would replace, so two writers
        never both think they stored the file.  Under UNIQUE, the next free
        name of ``<stem>_1<extension>``, ``<stem>_2<extension>``...: "_",
        which no UID holds, so that the second file of ``1.2.3.dcm`` is
        never ``1.2.3.1.dcm``, the name of instance 1.2.3.1; none where
        a file holds the same data set already.

        @return: the name, and None when the file was placed, or
            "kept"/"identical" when it was not (the temporary file stays).
        @raise DuplicateInstance: under REJECT.
        @raise NamesExhausted: under UNIQUE, every name is taken.
        """
        stem, suffix = os.path.splitext(name)
        if suffix[1:].isdigit():
            stem, suffix = name, ""  # a UID's last component, not an extension
        for number in range(_MOST_UNIQUE_NAMES + 1):
            candidate = f"{stem}_{number}{suffix}" if number else name
            try:
                os.link(temp, candidate, src_dir_fd=incoming, dst_dir_fd=directory, follow_symlinks=False)
            except FileExistsError:
                if self.on_duplicate == KEEP:
                    return candidate, "kept"
                if self.on_duplicate == REJECT:
                    # Short enough for the whole Error Comment (64 characters).
                    reason = "this instance's file exists (--on-duplicate reject)"
                    raise DuplicateInstance(reason) from None
                if _same_data_set(temp, incoming, candidate, directory):
                    return candidate, "identical"
                continue
            try:
                os.unlink(temp, dir_fd=incoming)
            except OSError:
                pass  # a second name of the stored file, for clean_incoming
            return candidate, None
        raise NamesExhausted(f"{_MOST_UNIQUE_NAMES} files named after {name} already")

    def _undo(self, renamed: bool, replaced: bool, final: str | None, directory: int | None) -> None:
        if renamed and not replaced and final is not None:
            # Not known durable: take it back, so a failure leaves nothing.
            # (A replaced file stays: the old one is gone either way, and
            # the new one is complete.)
            try:
                os.unlink(final, dir_fd=directory)
            except OSError:
                pass
        self.discard()

    def discard(self) -> None:
        """Close and remove the temporary file, if any.  Idempotent."""
        fd, self._fd = self._fd, None
        name, self._temp_name = self._temp_name, None
        self.temp_path = None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        if name is not None:
            try:
                os.unlink(name, dir_fd=self._folders.incoming)
            except FileNotFoundError:
                pass
            except OSError:
                # Left for clean_incoming at the next start.
                pass


def _same_data_set(name: str, directory: int, other: str, other_directory: int) -> bool:
    """
    Whether two PS3.10 files hold the same data set, byte for byte (their
    file meta may differ: it says who sent the instance): lengths first,
    then contents. A symbolic link, or a file without a file meta, is
    never the same.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    files = []
    try:
        for file_name, folder in ((name, directory), (other, other_directory)):
            files.append(os.fdopen(os.open(file_name, flags, dir_fd=folder), "rb"))
        offsets = [data_set_offset(f) for f in files]
        lengths = {os.fstat(f.fileno()).st_size - offset for f, offset in zip(files, offsets)}
        if len(lengths) != 1:
            return False
        for f, offset in zip(files, offsets):
            f.seek(offset)
        first, second = files
        while True:
            chunk = first.read(1 << 20)
            if chunk != second.read(len(chunk)):
                return False
            if not chunk:
                return True
    except (OSError, UnreadableDataSet):
        return False
    finally:
        for f in files:
            f.close()


def _exists(name: str, directory: int) -> bool:
    """Whether ``directory`` has an entry ``name``, a symbolic link included (never followed)."""
    try:
        os.stat(name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def clean_incoming(tree: OutputTree) -> list[str]:
    """
    Open the output folder (made if missing) and remove the temporary
    files a crash left in its L{INCOMING} folder; nothing through a
    symbolic link.  Run it at start, before any association: it does not
    know the files of writers still running.

    @return: the names of the files removed, for a log line.
    @raise OSError: the folders cannot be made or opened, or
        L{INCOMING} is a symbolic link (ELOOP): nothing was removed.
    """
    incoming = tree.folders().incoming
    removed = []
    with os.scandir(incoming) as entries:
        stale = [e.name for e in entries if e.name.endswith(PART_SUFFIX) and e.is_file(follow_symlinks=False)]
    for name in stale:
        try:
            os.unlink(name, dir_fd=incoming)
        except FileNotFoundError:
            continue
        removed.append(name)
    return sorted(removed)
