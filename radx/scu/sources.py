# -*- test-case-name: tests.test_scu_sources -*-
"""The files a C-STORE SCU sends: their file meta read, their data sets located, contexts planned.

Pure: no Twisted. A PS3.10 file names its SOP
Class, SOP Instance and Transfer Syntax in its file meta group (PS3.10
7.1); the data set after the group is sent as it is stored, never decoded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from radx.storage.header import scan_header
from radx.storage.part10 import DEFLATED_TRANSFER_SYNTAXES, META_START, NotPart10, parse_file_meta
from radx.uids import EXPLICIT_VR_BIG_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, MEDIA_STORAGE_DIRECTORY_STORAGE

# The file meta group is small; a group longer than this is not a file meta.
_MAXIMUM_META = 1 << 16
# What is read first: the preamble, a usual file meta and the head of the
# data set, which holds its SOP Class and Instance UIDs in almost every file.
_FIRST_READ = 8192
# How much of the data set is scanned for those UIDs, at most.
_DATA_SET_HEAD = 64 * 1024
_MEDIA_STORAGE_SOP_CLASS_UID = 0x0002
_MEDIA_STORAGE_SOP_INSTANCE_UID = 0x0003
_TRANSFER_SYNTAX_UID = 0x0010

# PS3.8 9.3.2.2: presentation context IDs are odd integers from 1 to 255.
MAXIMUM_CONTEXTS = 128


@dataclass(frozen=True)
class Part10Source:
    """One PS3.10 file to send: what it holds, and where its data set lies."""

    path: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    data_set_offset: int
    data_set_length: int

    @property
    def presentation(self) -> tuple[str, str]:
        """The (abstract syntax, transfer syntax) it must be sent in."""
        return (self.sop_class_uid, self.transfer_syntax_uid)


def _uid(value: bytes) -> str:
    # PS3.5 6.2: UI values are padded to even length with a NUL.
    return value.rstrip(b"\x00 ").decode("ascii", "replace")


def read_source(path: str) -> Part10Source:
    """
    Read what sending ``path`` needs from its file meta.

    @raise NotPart10: the file is not a PS3.10 file radx can send as it is.
    @raise OSError: the file cannot be read.
    """
    with open(path, "rb") as fp:
        size = os.fstat(fp.fileno()).st_size
        head = fp.read(_FIRST_READ)
        try:
            offset, values = parse_file_meta(head)
        except NotPart10:
            if len(head) < _FIRST_READ:
                raise
            # A long file meta (private elements): read all it may be.
            head += fp.read(META_START + _MAXIMUM_META - len(head))
            offset, values = parse_file_meta(head)
        found = {}
        for element, name in (
            (_MEDIA_STORAGE_SOP_CLASS_UID, "Media Storage SOP Class UID (0002,0002)"),
            (_MEDIA_STORAGE_SOP_INSTANCE_UID, "Media Storage SOP Instance UID (0002,0003)"),
            (_TRANSFER_SYNTAX_UID, "Transfer Syntax UID (0002,0010)"),
        ):
            value = _uid(values.get(element, b""))
            if not value:
                raise NotPart10(f"the file meta has no {name}")
            found[element] = value
        sop_class_uid = found[_MEDIA_STORAGE_SOP_CLASS_UID]
        sop_instance_uid = found[_MEDIA_STORAGE_SOP_INSTANCE_UID]
        if sop_class_uid == MEDIA_STORAGE_DIRECTORY_STORAGE:
            # Its records have no SOP Class or Instance UID of their own to
            # store under; a receiver can only refuse it.
            raise NotPart10("a DICOMDIR (Media Storage Directory Storage) indexes files; it is not sent")
        # PS3.4 B.2.3: the receiver checks the command's UIDs against the data
        # set's (0008,0016) and (0008,0018), not the file meta's; where a file's
        # meta disagrees with its data set, the data set's are the ones to send.
        length = size - offset
        data_set_head = head[offset:]
        header = _data_set_uids(data_set_head, found[_TRANSFER_SYNTAX_UID], length)
        if header is None and len(data_set_head) < min(_DATA_SET_HEAD, length):
            # Long elements before (0008,0018): scan a longer head.
            data_set_head += fp.read(_DATA_SET_HEAD - len(data_set_head))
            header = _data_set_uids(data_set_head, found[_TRANSFER_SYNTAX_UID], length)
    if header is not None:
        sop_class_uid, sop_instance_uid = header
    return Part10Source(
        path=path,
        sop_class_uid=sop_class_uid,
        sop_instance_uid=sop_instance_uid,
        transfer_syntax_uid=found[_TRANSFER_SYNTAX_UID],
        data_set_offset=offset,
        data_set_length=length,
    )


def _data_set_uids(head: bytes, transfer_syntax_uid: str, length: int) -> tuple[str, str] | None:
    """The data set's own SOP Class and Instance UIDs from its first bytes, or None if they cannot be read so."""
    if transfer_syntax_uid in DEFLATED_TRANSFER_SYNTAXES:
        return None
    # PS3.5 A.1-A.4: implicit VR little endian, explicit VR big endian,
    # explicit VR little endian for every other (native or encapsulated).
    header = scan_header(
        head,
        transfer_syntax_uid == IMPLICIT_VR_LITTLE_ENDIAN,
        transfer_syntax_uid != EXPLICIT_VR_BIG_ENDIAN,
        complete=len(head) >= length,
        sop_only=True,
    )
    if header is None:
        return None
    sop_class_uid = header.sop_class_uid.rstrip("\x00 ")
    sop_instance_uid = header.sop_instance_uid.rstrip("\x00 ")
    if not sop_class_uid or not sop_instance_uid:
        return None
    return sop_class_uid, sop_instance_uid


def list_files(files: list[str], directory: str | None = None, recursive: bool = False) -> list[str]:
    """
    The files named, then those of ``directory``: the files directly in it,
    or, with ``recursive``, in its folders too, in name order. Hidden files
    and folders (a leading dot) in a directory are left out.
    """
    found = list(files)
    if directory is None:
        return found
    if not recursive:
        names = sorted(os.listdir(directory))
        found.extend(
            os.path.join(directory, name)
            for name in names
            if not name.startswith(".") and os.path.isfile(os.path.join(directory, name))
        )
        return found
    for root, folders, names in os.walk(directory):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        found.extend(os.path.join(root, name) for name in sorted(names) if not name.startswith("."))
    return found


@dataclass
class Batch:
    """Files whose presentation contexts fit one A-ASSOCIATE-RQ, and the context ID of each."""

    context_ids: dict[tuple[str, str], int] = field(default_factory=dict)
    sources: list[Part10Source] = field(default_factory=list)


def plan_batches(sources: list[Part10Source], maximum: int = MAXIMUM_CONTEXTS) -> list[Batch]:
    """
    Group ``sources`` so that each group needs at most ``maximum`` presentation
    contexts: one per (SOP class, transfer syntax), the file's own, since
    its bytes are sent as stored. Context IDs are 1, 3, 5... (PS3.8 9.3.2.2).
    Files keep their order within a batch.
    """
    batches: list[Batch] = []
    where: dict[tuple[str, str], Batch] = {}
    for source in sources:
        key = source.presentation
        batch = where.get(key)
        if batch is None:
            if not batches or len(batches[-1].context_ids) >= maximum:
                batches.append(Batch())
            batch = batches[-1]
            batch.context_ids[key] = 2 * len(batch.context_ids) + 1
            where[key] = batch
        batch.sources.append(source)
    return batches
