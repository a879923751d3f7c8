# -*- test-case-name: tests.test_scp_storing -*-
"""The bridge from the reactor to a threadpool for one C-STORE data set being received."""

from __future__ import annotations

from time import perf_counter
from typing import Callable

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

from radx.storage.store import InstanceWriter, StoredInstance


class Backlog:
    """
    Bytes received but not yet written, over every instance of one
    association: C{on_backlog(True)} when they reach C{high_water} (the
    caller stops reading), C{on_backlog(False)} when they are back to
    C{low_water}.

    One budget for the association, not one per instance: with an
    asynchronous operations window several instances are in flight at
    once, and memory stays bounded by the association, not the window.
    """

    def __init__(
        self,
        on_backlog: Callable[[bool], None] = lambda paused: None,
        high_water: int = 4 << 20,
        low_water: int = 1 << 20,
    ):
        if not 0 <= low_water < high_water:
            raise ValueError("need 0 <= low_water < high_water")
        self.on_backlog = on_backlog
        self.high_water = high_water
        self.low_water = low_water
        self.pending = 0
        self.paused = False

    def add(self, size: int) -> None:
        self.pending += size
        if not self.paused and self.pending >= self.high_water:
            self.paused = True
            self.on_backlog(True)

    def remove(self, size: int) -> None:
        self.pending -= size
        if self.paused and self.pending <= self.low_water:
            self.paused = False
            self.on_backlog(False)


class InstanceReception:
    """
    One C-STORE data set being received: ordered writes on a threadpool,
    bounded memory.

    Fragments are kept by reference (no copy) and handed to the writer in
    batches of at least C{batch_bytes}, one threadpool job at a time, in
    order.  While a job runs, what arrives is buffered and goes in the next
    job, whatever its size.  The bytes received but not yet written count
    in C{backlog}, shared by the association's instances; without one, the
    instance has its own, with C{on_backlog}, C{high_water} and
    C{low_water}.

    The writer is made by C{writer_factory} in the first job, on the
    threadpool, since making it opens a file. C{catalogue}, if given,
    records the instance stored, in the commit's job, before its result
    goes back to the reactor; what it answers (why there is no row, or
    None) is the result's C{not_catalogued}.
    """

    def __init__(
        self,
        reactor,
        threadpool,
        writer_factory: Callable[[], InstanceWriter],
        *,
        batch_bytes: int = 1 << 20,
        backlog: Backlog | None = None,
        on_backlog: Callable[[bool], None] = lambda paused: None,
        high_water: int = 4 << 20,
        low_water: int = 1 << 20,
        catalogue: Callable[[InstanceWriter, StoredInstance], str | None] | None = None,
    ):
        if backlog is None:
            backlog = Backlog(on_backlog, high_water, low_water)
        if not 0 < batch_bytes <= backlog.high_water:
            # Else reading could pause with nothing being written: a stall.
            raise ValueError("need 0 < batch_bytes <= high_water")
        self._reactor = reactor
        self._threadpool = threadpool
        self._writer_factory = writer_factory
        self._batch_bytes = batch_bytes
        self._backlog = backlog
        self._catalogue = catalogue

        self._writer: InstanceWriter | None = None  # made and used on the threadpool
        self._buffer: list = []
        self._buffered = 0
        self._in_flight = 0  # bytes in the job running
        self._running = False
        self._started = False  # whether a job ever ran: a file may exist
        self._finishing = False
        self._committing = False
        self._discard_due = False
        self._aborted = False
        self._failure: Failure | None = None
        self._result: StoredInstance | None = None
        self._finished: Deferred | None = None
        self._abort_waiters: list[Deferred] = []
        # Seconds its jobs took on the threadpool (radx.metrics); read once finish has fired.
        self.storage_seconds = 0.0

    @property
    def pending_bytes(self) -> int:
        """Bytes received but not yet written."""
        return self._buffered + self._in_flight

    def write(self, data) -> None:
        """Take one data set fragment (on the reactor thread)."""
        if self._finishing:
            raise RuntimeError("write after finish")
        if self._aborted or self._failure is not None:
            return  # the instance is lost already: drop, so reading goes on
        kind = type(data)
        if kind is not bytes:
            view = data if kind is memoryview else memoryview(data)
            if not view.readonly:
                data = bytes(view)  # its buffer may be reused
        size = len(data)
        if not size:
            return
        self._buffer.append(data)
        self._buffered += size
        self._backlog.add(size)
        if self._buffered >= self._batch_bytes:
            self._pump()

    def finish(self) -> Deferred:
        """
        After the last fragment: write what is buffered, then commit.

        @return: fires with the L{StoredInstance}; or fails with the first
            error, a L{radx.storage.errors.StorageError} (anything else is a
            bug), once the temporary file is gone; or fires with C{None} if
            L{abort} came before the commit started.
        """
        if self._finishing or self._aborted:
            raise RuntimeError("finish after finish or abort")
        self._finishing = True
        self._finished = Deferred()
        finished = self._finished
        self._pump()
        return finished

    def abort(self) -> Deferred:
        """
        The association is gone: drop what is buffered and, once the job
        running (if any) has ended, discard the temporary file.

        A commit already running is left to end (L{finish}'s result fires):
        a file it stores is whole, and the peer, never told, sends it again.

        @return: fires with C{None} when nothing more will happen on disk.
        """
        if not self._aborted:
            self._aborted = True
            self._drop_buffer()
            self._discard_due = self._started
        waiter = Deferred()
        self._abort_waiters.append(waiter)
        self._pump()
        return waiter

    def _pump(self) -> None:
        """Start the job due, if none runs; else settle what waits."""
        if self._running:
            return
        if self._discard_due:
            self._discard_due = False
            self._run(self._discard_job, [], 0)
        elif self._failure is not None or self._aborted:
            pass
        elif self._finishing and not self._committing:
            self._committing = True
            self._run(self._commit_job, self._buffer, self._buffered)
        elif self._buffered >= self._batch_bytes:
            self._run(self._write_job, self._buffer, self._buffered)
        if not self._running:
            self._settle()

    def _run(self, job, batch: list, size: int) -> None:
        self._buffer, self._buffered = [], 0
        self._running = True
        self._started = True
        self._in_flight = size
        d = deferToThreadPool(self._reactor, self._threadpool, self._timed, job, batch)
        d.addBoth(self._job_done)

    def _job_done(self, result) -> None:
        self._running = False
        written, self._in_flight = self._in_flight, 0
        self._backlog.remove(written)
        if isinstance(result, Failure):
            if self._failure is None:
                # First failure wins: later data is dropped, the file discarded.
                self._failure = result
                self._drop_buffer()
                self._discard_due = True
        elif result is not None:
            self._result = result
        self._pump()

    def _drop_buffer(self) -> None:
        self._backlog.remove(self._buffered)
        self._buffer, self._buffered = [], 0

    def _settle(self) -> None:
        """Nothing runs and nothing is due: fire what waits on that."""
        finished = self._finished
        if finished is not None:
            if self._failure is not None:
                self._finished = None
                finished.errback(self._failure)
            elif self._result is not None or (self._aborted and not self._committing):
                self._finished = None
                finished.callback(self._result)
        if self._aborted:
            waiters, self._abort_waiters = self._abort_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    # The jobs, on the threadpool.

    def _timed(self, job, batch: list):
        # One job at a time per instance: no other thread adds to it meanwhile.
        started = perf_counter()
        try:
            return job(batch)
        finally:
            self.storage_seconds += perf_counter() - started

    def _ensure_writer(self) -> InstanceWriter:
        if self._writer is None:
            self._writer = self._writer_factory()
        return self._writer

    def _write_job(self, batch: list) -> None:
        self._ensure_writer().write(batch)

    def _commit_job(self, batch: list) -> StoredInstance:
        writer = self._ensure_writer()
        if batch:
            writer.write(batch)
        stored = writer.commit()
        # An instance not stored (--on-duplicate keep or unique) has no file of its own to record.
        if self._catalogue is not None and stored.duplicate is None:
            stored.not_catalogued = self._catalogue(writer, stored)
        return stored

    def _discard_job(self, batch: list) -> None:
        if self._writer is not None:
            self._writer.discard()

