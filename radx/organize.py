# -*- test-case-name: tests.test_organize -*-
"""DICOM files already on disk filed under an output folder, by the server's own layout, rules and durable writer.

Pure: no Twisted. Each file's data set is fed, in chunks and bit for
bit, to the L{InstanceWriter} the server feeds from the network: the same
file meta (from the SOP Class, SOP Instance and Transfer Syntax UIDs),
the same checks, the same layout, the same fsync and rename before a file
counts as organized.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from radx.dimse.service import storage_failure_status
from radx.scu.sources import list_files, read_source
from radx.storage.errors import StorageError
from radx.storage.filing import REPLACE
from radx.storage.header import scan_header
from radx.storage.layout import InvalidUID, Layout
from radx.storage.part10 import NotPart10, UnreadableDataSet, read_instance_header
from radx.storage.store import InstanceWriter, StoredInstance, _describe, _strip_padding
from radx.storage.tree import OutputTree
from radx.storage.values import read_values, scan_values
from radx.uids import EXPLICIT_VR_BIG_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN

# The data set is copied in chunks of this size: bounded memory, whatever the file's size.
CHUNK = 1 << 20
# What of a data set is read for its UIDs and values in a dry run, as the writer keeps it.
_HEAD = 64 * 1024

# What became of a file.
ORGANIZED, SKIPPED, FAILED = "organized", "skipped", "failed"


@dataclass
class Outcome:
    """One source file: where it went (or would go), or why not."""

    source: str
    state: str
    destination: str | None = None
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)


class Organizer:
    """
    Files each DICOM file under C{output_dir} as C{radx dicom scp} would
    have stored it on receipt. Blocking.

    @param on_stored: called with each source path and its
        L{StoredInstance} once the copy is durable, before a move removes
        the source: where a record of what was filed may be kept.
    """

    def __init__(
        self,
        output_dir: str,
        layout: Layout,
        on_duplicate: str = REPLACE,
        move: bool = False,
        fsync: bool = True,
        file_mode: int | None = 0o600,
        dir_mode: int | None = 0o700,
        on_stored=None,
    ) -> None:
        self.tree = OutputTree(output_dir, dir_mode)
        self.layout = layout
        self.on_duplicate = on_duplicate
        self.move = move
        self.fsync = fsync
        self.file_mode = file_mode
        self.on_stored = on_stored

    def sources(self, directory: str, recursive: bool) -> list[str]:
        """The files of C{directory} to organize: never those of the output folder, should it lie inside."""
        output = os.path.realpath(self.tree.path)
        return [
            path
            for path in list_files([], directory, recursive)
            if os.path.commonpath([output, os.path.realpath(path)]) != output
        ]

    def organize(self, path: str) -> Outcome:
        """Copy (or move) one file into place; never raises for a file's fault."""
        return self._each(path, self._organize)

    def plan(self, path: str) -> Outcome:
        """Where C{path} would go, reading it only; nothing is written."""
        return self._each(path, self._plan)

    @staticmethod
    def _each(path: str, step) -> Outcome:
        """C{step(path, source)} for a PS3.10 file; a file that is not one skipped, any error of a file's a failure."""
        try:
            source = read_source(path)
        except NotPart10 as error:
            return Outcome(path, SKIPPED, reason=str(error))
        except OSError as error:
            return Outcome(path, FAILED, reason=_describe(error))
        try:
            return step(path, source)
        except StorageError as error:
            return Outcome(path, FAILED, reason=_refused(error))
        except (InvalidUID, UnreadableDataSet) as error:
            return Outcome(path, FAILED, reason=str(error))
        except OSError as error:
            return Outcome(path, FAILED, reason=_describe(error))

    def _organize(self, path: str, source) -> Outcome:
        identity = os.stat(path)
        stored = self._copy(source)
        if self.on_stored is not None:
            self.on_stored(path, stored)
        outcome = Outcome(path, ORGANIZED, stored.path, warnings=stored.warnings)
        if stored.duplicate == "kept":
            outcome.state, outcome.reason = SKIPPED, "an instance with this path is there already (kept)"
            return outcome
        if stored.duplicate == "identical":
            outcome.state, outcome.reason = SKIPPED, "the same data set is there already"
        if self.move:
            outcome.reason = self._remove(path, identity, outcome.reason)
        return outcome

    def _copy(self, source) -> StoredInstance:
        writer = InstanceWriter(
            self.tree,
            sop_class_uid=source.sop_class_uid,
            sop_instance_uid=source.sop_instance_uid,
            transfer_syntax_uid=source.transfer_syntax_uid,
            calling_ae_title=None,
            layout=self.layout,
            on_duplicate=self.on_duplicate,
            fsync=self.fsync,
            file_mode=self.file_mode,
        )
        try:
            with open(source.path, "rb") as raw:
                raw.seek(source.data_set_offset)
                while chunk := raw.read(CHUNK):
                    writer.write([chunk])
        except BaseException:
            writer.discard()
            raise
        return writer.commit()

    @staticmethod
    def _remove(path: str, identity: os.stat_result, reason: str | None) -> str | None:
        """Remove the source, unless it is no longer the file that was copied (the copy replaced it, or another did)."""
        try:
            now = os.stat(path)
            if (now.st_dev, now.st_ino) != (identity.st_dev, identity.st_ino):
                return "not removed: the source is no longer the file copied"
            os.unlink(path)
        except OSError as error:
            return f"not removed: {_describe(error)}"
        return reason

    def _plan(self, path: str, source) -> Outcome:
        components, warnings = self._where(source)
        return Outcome(path, ORGANIZED, os.path.join(self.tree.path, *components), warnings=warnings)

    def _where(self, source) -> tuple[tuple[str, ...], list[str]]:
        syntax = source.transfer_syntax_uid
        with open(source.path, "rb") as raw:
            raw.seek(source.data_set_offset)
            head = raw.read(_HEAD)
            complete = len(head) == source.data_set_length
            # PS3.5 A.1-A.4: implicit VR little endian, explicit VR big
            # endian, explicit VR little endian for every other.
            header = scan_header(head, syntax == IMPLICIT_VR_LITTLE_ENDIAN, syntax != EXPLICIT_VR_BIG_ENDIAN, complete)
            if header is None:
                header = read_instance_header(source.path, syntax)
            values = None
            if self.layout.fixed is None:
                values = {"SOPClassUID": source.sop_class_uid}
                tags = self.layout.extra_tags
                found = scan_values(head, syntax, tags, complete) if tags else {}
                values.update(found if found is not None else read_values(raw, syntax, tags))
        return self.layout.relative_path(
            source.sop_instance_uid,
            _strip_padding(header.study_instance_uid),
            _strip_padding(header.series_instance_uid),
            values,
        )


def _refused(error: StorageError) -> str:
    """Why storage refused a file, with the status the server would have answered it, as its log says."""
    status = storage_failure_status(error)
    return str(error) if status is None else f"{error} (status 0x{status:04X})"
