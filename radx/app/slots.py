# -*- test-case-name: tests.test_app_slots -*-
"""The associations and connections open in each worker process, in a small shared file.

Two 8-byte counts a worker, in a file every worker maps. Associations:
--max-conns over all of them. A worker admits an association under an
exclusive ``flock`` of the file: it adds the counts, and takes one more
in its own slot only if the total is under the limit, so two workers
admitting at once cannot both take the last place. Connections: how
busy each worker is, so that the busiest lets the others accept first
(radx.app.workerservice); written without the lock, read as a hint.
Each slot is written by its worker only, and by the supervisor, which
empties the slot of a worker that has ended (connections -1: no worker).
Blocking, but each call is a few system calls at most: it runs on the
reactor thread of the worker.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from contextlib import contextmanager

_COUNT = struct.Struct("<q")
# A slot: its associations, then its connections.
_SLOT = 2 * _COUNT.size
_CONNECTIONS = _COUNT.size


def create(path: str, workers: int) -> None:
    """Make the table for ``workers`` workers, every count zero (the supervisor, at start)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, _SLOT * workers)
    finally:
        os.close(fd)


class AssociationSlots:
    """The table as one process sees it; ``slot`` is its own count (None: the supervisor's view)."""

    def __init__(self, path: str, slot: int | None = None) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        size = os.fstat(self._fd).st_size
        self.workers = size // _SLOT
        if slot is not None and not 0 <= slot < self.workers:
            os.close(self._fd)
            raise ValueError(f"slot {slot} is not in a table of {self.workers}")
        self._map = mmap.mmap(self._fd, size)
        self.slot = slot

    @contextmanager
    def _locked(self):
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _count(self, slot: int, offset: int = 0) -> int:
        return _COUNT.unpack_from(self._map, slot * _SLOT + offset)[0]

    def _set(self, slot: int, value: int, offset: int = 0) -> None:
        _COUNT.pack_into(self._map, slot * _SLOT + offset, value)

    def _total(self) -> int:
        return sum(self._count(slot) for slot in range(self.workers))

    def claim(self, limit: int) -> bool:
        """Take a place for one more association in this worker's slot, if all of them hold fewer than ``limit``."""
        with self._locked():
            if self._total() >= limit:
                return False
            self._set(self.slot, self._count(self.slot) + 1)
            return True

    def release(self) -> None:
        """Give back a place this worker took."""
        with self._locked():
            self._set(self.slot, max(0, self._count(self.slot) - 1))

    def total(self) -> int:
        """The associations open in every worker now."""
        with self._locked():
            return self._total()

    def empty(self, slot: int) -> None:
        """The worker of ``slot`` has ended: its associations ended with it, and nobody is there."""
        with self._locked():
            self._set(slot, 0)
            self._set(slot, -1, _CONNECTIONS)

    def set_connections(self, count: int) -> None:
        """How many connections this worker has open now."""
        self._set(self.slot, count, _CONNECTIONS)

    def fewer_elsewhere(self) -> bool:
        """Whether another worker has fewer connections open than this one (a hint: read without the lock)."""
        mine = self._count(self.slot, _CONNECTIONS)
        return any(0 <= self._count(slot, _CONNECTIONS) < mine for slot in range(self.workers) if slot != self.slot)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
            os.close(self._fd)
