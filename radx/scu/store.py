# -*- test-case-name: tests.test_scu_store -*-
"""C-STORE SCU: files read for their file meta, spread over N associations, each answered by name."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from twisted.internet import defer
from twisted.python.failure import Failure

from radx.dimse.status import describe_status, is_failure, is_warning
from radx.scu.association import (
    DEFAULT_TIMEOUT,
    AssociationError,
    AssociationRejected,
    NotSent,
    associate,
    associate_request,
)
from radx.scu.sources import NotPart10, Part10Source, plan_batches, read_source
from radx.ul.pdu import DEFAULT_MAXIMUM_LENGTH, RejectResult

# Associations in a row that may fail (not made, or ended before their
# files were answered, with no file answered in between) before the files
# left are given up on.
MAXIMUM_FAILURES = 3


@dataclass(frozen=True)
class FileResult:
    """What became of one file: its C-STORE status, or why it was not stored."""

    path: str
    status: int | None = None
    error_comment: str | None = None
    reason: str | None = None  # when there is no status: why not sent, or not answered
    size: int = 0
    # Sent, and the association ended before its response came.
    unanswered: bool = False

    @property
    def sent(self) -> bool:
        """Whether its C-STORE-RQ went out: answered, or sent and the association ended."""
        return self.status is not None or self.unanswered

    @property
    def stored(self) -> bool:
        """Success or a warning (PS3.4 B.2.3: a warning means the instance was stored)."""
        return self.status is not None and not is_failure(self.status)

    @property
    def warning(self) -> bool:
        return self.status is not None and is_warning(self.status)

    def describe(self) -> str:
        if self.status is None:
            return self.reason or "not stored"
        text = f"status {describe_status(self.status)}"
        if self.error_comment:
            text += f": {self.error_comment}"
        return text


class StoreJob:
    """
    Send files with C-STORE over up to ``connections`` associations at once.

    ``endpoint`` is any client endpoint (reused for each association).
    ``operations`` is the Asynchronous Operations Window each association
    proposes: up to that many C-STOREs outstanding at once where the peer
    grants it (PS3.7 D.3.3.3), one at a time where it does not; either
    way the next file is made ready while the window is full, and sent
    the moment a response makes room.
    An association that ends early (A-ABORT, a timeout, a lost connection)
    fails the files it had sent and not had answered; the files not yet
    sent go to a new association, until L{MAXIMUM_FAILURES} associations
    in a row fail (L{gave_up} then says so). A first association that
    cannot be made at all, or a permanent rejection, is not retried.
    ``on_result`` is called with each L{FileResult} as it is known,
    ``on_data_sent`` with the size of each data set fragment written.
    """

    def __init__(
        self,
        endpoint,
        reactor,
        called_ae_title: str,
        calling_ae_title: str,
        connections: int = 1,
        timeout: float = DEFAULT_TIMEOUT,
        maximum_length: int = DEFAULT_MAXIMUM_LENGTH,
        operations: int = 1,
        on_result=None,
        on_data_sent=None,
    ) -> None:
        self.endpoint = endpoint
        self.reactor = reactor
        self.called_ae_title = called_ae_title
        self.calling_ae_title = calling_ae_title
        self.connections = connections
        self.timeout = timeout
        self.maximum_length = maximum_length
        self.operations = operations
        self.on_result = on_result
        self.on_data_sent = on_data_sent
        self.results: list[FileResult] = []
        # Associations established, the window each was granted, and why each that was not failed.
        self.associated = 0
        self.windows: list[int] = []
        self.association_errors: list[AssociationError] = []
        # Set when MAXIMUM_FAILURES associations in a row failed: why the files left were not sent.
        self.gave_up: str | None = None
        self._failures = 0  # associations failed since a file was last answered
        self._interrupted: str | None = None
        self._open: set = set()

    def _record(self, result: FileResult) -> None:
        self.results.append(result)
        if self.on_result is not None:
            self.on_result(result)

    def read(self, paths: list[str]) -> list[Part10Source]:
        """The sources of ``paths``; a file that cannot be sent as it is fails now."""
        sources = []
        for path in paths:
            try:
                sources.append(read_source(path))
            except NotPart10 as error:
                self._record(FileResult(path, reason=error.message))
            except OSError as error:
                self._record(FileResult(path, reason=f"cannot read: {error.strerror or error}"))
        return sources

    def abort(self, why: str, grace: float = 1.0) -> defer.Deferred:
        """
        A-ABORT every association still open (an interrupted job); fires
        when they are closed, or after ``grace`` seconds.
        """
        self._interrupted = why
        closing = []
        for association in list(self._open):
            association.abort(why)
            closing.append(association.closed)
        done = defer.DeferredList(closing).addTimeout(grace, self.reactor)
        return done.addErrback(lambda _: None)

    def run(self, paths: list[str]) -> defer.Deferred:
        """Read and send every file; fires with the list of FileResult (never fails)."""
        return self.send(self.read(paths))

    @defer.inlineCallbacks
    def send(self, sources: list[Part10Source]):
        """Send ``sources``; fires with the list of FileResult (never fails)."""
        why = self._interrupted or "no association"
        for batch in plan_batches(sources):
            queue = deque(batch.sources)
            if self.gave_up is None and self._interrupted is None:
                workers = min(self.connections, len(queue))
                errors = yield defer.gatherResults(
                    [self._worker(batch.context_ids, queue) for _ in range(workers)]
                )
                why = next((e for e in errors if e is not None), why)
            else:
                why = self._interrupted or why
            # Files no association was left to send.
            while queue:
                source = queue.popleft()
                self._record(FileResult(source.path, reason=f"not sent: {why}", size=source.data_set_length))
        return self.results

    def _failed(self, error: AssociationError) -> bool:
        """An association failed with ``error``: whether to open another."""
        self._failures += 1
        if self._interrupted is not None:
            return False
        if isinstance(error, AssociationRejected) and error.reject.result == RejectResult.REJECTED_PERMANENT:
            return False  # PS3.8 9.3.4: permanent, not worth asking again
        if self._failures >= MAXIMUM_FAILURES:
            self.gave_up = f"{self._failures} associations in a row failed; the last: {error.message}"
            return False
        return True

    @defer.inlineCallbacks
    def _worker(self, context_ids: dict[tuple[str, str], int], queue: deque):
        """
        Associations one after the other taking files from ``queue``, a new
        one after each that ends early; fires with why it stopped before
        the queue was empty, or None.
        """
        request = associate_request(
            self.called_ae_title, self.calling_ae_title, context_ids, self.maximum_length, self.operations
        )
        associated = False
        while queue and self._interrupted is None:
            try:
                association = yield associate(self.endpoint, request, self.reactor, self.timeout)
            except AssociationError as error:
                self.association_errors.append(error)
                # A worker's first association not made: a wrong address, port or
                # AE title, or no server; asking again would change nothing.
                if associated and self._failed(error):
                    continue
                return error.message
            associated = True
            self.associated += 1
            ended = yield self._send_files(association, context_ids, queue)
            if ended is None:
                return None
            if not self._failed(ended):
                return ended.message
        return self._interrupted

    @defer.inlineCallbacks
    def _send_files(self, association, context_ids: dict[tuple[str, str], int], queue: deque):
        """Files from ``queue`` on ``association``, then release; fires with what ended it early, or None."""
        association.on_data_sent = self.on_data_sent
        self._open.add(association)
        association.closed.addCallback(lambda _: self._open.discard(association))
        self.windows.append(association.operations_window)
        if self._interrupted is not None:
            association.abort(self._interrupted)  # interrupted while it was being made
        waiting: list[defer.Deferred] = []  # the worker, waiting for an answer
        ended: list[AssociationError] = []  # what ended the association, if anything did

        def answered(outcome, source):
            if not isinstance(outcome, Failure):
                self._failures = 0
                self._record(
                    FileResult(
                        source.path,
                        status=outcome.status,
                        error_comment=outcome.error_comment,
                        size=source.data_set_length,
                    )
                )
            elif outcome.check(NotSent):
                error = outcome.value
                ended.append(error.cause)
                if self._interrupted is None:
                    queue.appendleft(source)  # for the next association
                else:
                    self._record(FileResult(source.path, reason=error.message, size=source.data_set_length))
            elif outcome.check(AssociationError):
                error = outcome.value
                ended.append(error)
                self._record(
                    FileResult(source.path, reason=error.message, size=source.data_set_length, unanswered=True)
                )
            elif outcome.check(OSError):
                error = outcome.value
                self._record(FileResult(source.path, reason=f"cannot read: {error.strerror or error}"))
            else:
                # Nothing a peer or a file causes: the file is named with it, and the job goes on.
                self._record(
                    FileResult(
                        source.path, reason=f"internal error: {outcome.getErrorMessage()}", size=source.data_set_length
                    )
                )
            if waiting:
                waiting.pop().callback(None)
            return None

        def answer():
            wait = defer.Deferred()
            waiting.append(wait)
            return wait

        while queue and not ended:
            source = queue[0]
            context = association.contexts[context_ids[source.presentation]]
            if not context.accepted:
                queue.popleft()
                self._record(FileResult(source.path, reason=context.why, size=source.data_set_length))
                continue
            queue.popleft()
            # Sent at once if the window has room; otherwise made ready now
            # and sent the moment a response makes room.
            sent, response = association.queue_store(source, context.context_id)
            response.addBoth(answered, source)
            yield sent
        while association.outstanding and not ended:
            yield answer()
        if ended:
            yield association.closed
            return ended[0]
        try:
            yield association.release()
        except AssociationError:
            pass  # every file has its answer already
        return None
