# -*- test-case-name: tests.test_storage_store,tests.test_dimse_service -*-
"""Why an instance could not be stored, in storage's own words: what the service layer answers is its business."""

from __future__ import annotations


class StorageError(Exception):
    """
    An instance could not be stored; nothing of it was left on disk.

    Each subclass names one reason.  None carries a DIMSE status: storage
    knows files, not the network; radx.dimse.service maps them.

    @ivar message: why, for the Error Comment and the log.
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class MalformedSOPInstanceUID(StorageError):
    """The SOP Instance UID is no UID (PS3.5 9.1), so it cannot name a file; nothing was written."""


class MalformedSOPClassUID(StorageError):
    """The SOP Class UID is no UID (PS3.5 9.1); nothing was written."""


class FileMetaUnencodable(StorageError):
    """The file meta cannot be written: a UID it would hold cannot be encoded as its VR requires (PS3.10 7.1)."""


class MalformedDataSet(StorageError):
    """
    The data set does not parse in its transfer syntax, or does not say
    what it is: it ends inside a value, lacks its SOP Class or SOP Instance
    UID, or holds them beyond the first bytes read for filing.
    """


class DataSetMismatch(StorageError):
    """The data set's SOP Class or SOP Instance UID is not the one it was announced with."""


class DuplicateInstance(StorageError):
    """A file of this instance is there already, and --on-duplicate reject keeps it."""


class WriteFailed(StorageError):
    """The file system refused a write, a rename or an fsync: no space, no permission, an I/O error..."""


class NamesExhausted(StorageError):
    """Under --on-duplicate unique, every name an instance's file may take is taken."""


class WriterClosed(StorageError):
    """The instance's file was closed already: committed, discarded, or refused before."""
