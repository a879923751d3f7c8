# -*- test-case-name: tests.test_scu_association,tests.test_scu_tls -*-
"""One association, requestor side: a thin Twisted Protocol over the pure upper layer and DIMSE.

``associate()`` opens the transport through any client endpoint (TCP now;
a TLS endpoint wrapping it is the same call), sends the A-ASSOCIATE-RQ and
fires with the protocol once the association is accepted. The protocol
then runs operations (C-ECHO, C-STORE), several at once where the peer
granted an Asynchronous Operations Window, and releases or aborts.
Time lives here: one timer bounds every wait on the peer, ARTIM bounds the
wait for the peer to close after an A-ABORT.
"""

from __future__ import annotations

import os
import socket

from twisted.internet import defer
from twisted.internet.endpoints import connectProtocol
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import ISSLTransport

from radx import uids
from radx.association import AssociationBase
from radx.dimse.assembly import MessageAssembler
from radx.scu.config import DEFAULT_TIMEOUT
from radx.scu.operations import Operations
from radx.ul import fsm
from radx.ul.framing import PDUReader
from radx.ul.fsm import Event, State
from radx.ul.negotiation import (  # noqa: F401 (ContextResult, associate_request: for the requestor's users)
    ContextResult,
    InvalidAccept,
    associate_request,
    check_accept,
    describe_reject,
)
from radx.ul.pdu import AAssociateRQ, AbortReason

# Seconds the peer has to close after radx's A-ABORT (PS3.8 AA-1 in Sta13).
DEFAULT_ARTIM = 5.0


class AssociationError(Exception):
    """The association could not be made, or ended before the operation did."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class AssociationRejected(AssociationError):
    """The peer answered A-ASSOCIATE-RJ."""

    def __init__(self, reject):
        super().__init__(f"Association rejected: {describe_reject(reject)}")
        self.reject = reject


class AssociationAborted(AssociationError):
    """A-ABORT either way, a lost connection, a refused connection or a timeout."""


class NotSent(AssociationError):
    """A C-STORE made ready (L{RequestorProtocol.queue_store}) was never started: the association ended."""

    def __init__(self, cause: AssociationError):
        super().__init__(f"not sent: {cause.message}")
        self.cause = cause


def describe_connect_error(error: BaseException) -> str:
    """
    Why a connection could not be made, once: Twisted's ConnectError texts
    say it twice ("Connection was refused by other side: 111: Connection
    refused.").
    """
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    os_error = getattr(error, "osError", None)
    if isinstance(os_error, int):
        # An errno: the system's words for it.
        return os.strerror(os_error).lower()
    if isinstance(os_error, OSError) and os_error.strerror:
        return os_error.strerror.lower()
    if isinstance(os_error, str) and os_error:
        # "111: Connection refused", without the number.
        return os_error.split(": ", 1)[-1].rstrip(".").lower()
    return str(error).rstrip(".")


class RequestorProtocol(AssociationBase):
    """Feeds bytes to the upper layer machine (requestor role) and carries out its effects in order."""

    # Nothing more the peer sends is of interest once radx has aborted (Sta13).
    done_states = (State.STA1, State.STA13)

    def __init__(
        self,
        request: AAssociateRQ,
        reactor,
        timeout: float = DEFAULT_TIMEOUT,
        artim_timeout: float | None = None,
    ) -> None:
        super().__init__(
            fsm.UpperLayer(requestor=True),
            PDUReader(maximum_pdata_length=request.user_information.maximum_length or 0, pdata_values=True),
            reactor,
            min(DEFAULT_ARTIM, timeout) if artim_timeout is None else artim_timeout,
            {
                fsm.OpenTransport: self._open,
                fsm.AssociateAccepted: self._accepted,
                fsm.AssociateRejected: self._rejected,
                fsm.ReleaseIndication: self._release_indication,
                fsm.ReleaseConfirmation: self._release_confirmation,
                fsm.AbortIndication: self._abort_indication,
                fsm.ProviderAbortIndication: self._provider_abort_indication,
            },
        )
        self.request = request
        self.timeout = timeout
        self.assembler = MessageAssembler()
        self.operations = Operations(self)
        self.contexts: dict[int, ContextResult] = {}
        self.peer_maximum_length = 0
        # How many operations may be outstanding at once, as the AC granted;
        # at least 1 (ul.negotiation.granted_window).
        self.operations_window = 1
        self.accept = None
        self.error: AssociationError | None = None
        # Fires with this protocol when the association is accepted.
        self.established: defer.Deferred = defer.Deferred()
        # Fires with None once the transport is closed (and never fails).
        self.closed: defer.Deferred = defer.Deferred()
        self._open_transport = None
        self._connecting: defer.Deferred | None = None
        self._released: defer.Deferred | None = None
        # Called with the size of each data set fragment written (progress).
        self.on_data_sent = None
        self._timer = None

    # Opening ---------------------------------------------------------------

    def request_association(self, open_transport) -> defer.Deferred:
        """Evt1: ask for the association; ``open_transport(protocol)`` connects (a Deferred)."""
        self._open_transport = open_transport
        self.watch()
        self._handle(Event.EVT1, self.request)
        return self.established

    def _open(self, effect) -> None:
        # AE-1: TRANSPORT CONNECT; connectionMade is Evt2.
        connecting = self._open_transport(self)
        self._connecting = connecting

        def connected(result):
            self._connecting = None
            return result

        def failed(failure):
            self._connecting = None
            if self.machine.state is State.STA4:
                self.error = self.error or AssociationAborted(f"Cannot connect: {describe_connect_error(failure.value)}")
                self._handle(Event.EVT17)
                self._finished()

        connecting.addCallbacks(connected, failed)

    # Twisted's side -------------------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        self._handle(Event.EVT2)

    def _data_arrived(self) -> None:
        self.progressed()

    def connectionLost(self, reason=None) -> None:
        if reason is not None and self.error is None and ISSLTransport.providedBy(self.transport):
            # A TLS error, or an end before the handshake: say why, in OpenSSL's words.
            from radx.tls import client_connection_failure

            why = client_connection_failure(reason, self._tls_handshake_done, self.established.called)
            if why is not None:
                self.error = AssociationAborted(why)
        self._handle(Event.EVT17)
        self._finished()

    def _finished(self) -> None:
        self._cancel_timers("_timer")
        self._fail(self.error or AssociationAborted("Connection closed"))
        if not self.closed.called:
            self.closed.callback(None)

    # The user's side --------------------------------------------------------

    def in_transfer(self) -> bool:
        """Whether the association is established and ready for data transfer (Sta6): requests may start."""
        return self.machine.state is State.STA6

    def context_for(self, abstract_syntax: str) -> ContextResult | None:
        """The context proposed for an abstract syntax: an accepted one if any."""
        proposed = [c for c in self.contexts.values() if c.abstract_syntax == abstract_syntax]
        accepted = [c for c in proposed if c.accepted]
        return (accepted or proposed or [None])[0]

    def echo(self) -> defer.Deferred:
        """C-ECHO on the Verification context; fires with the CEchoRSP."""
        context = self.context_for(uids.VERIFICATION_SOP_CLASS)
        if context is None or not context.accepted:
            why = "no Verification context was proposed" if context is None else context.why
            return defer.fail(AssociationError(why))
        if not self.in_transfer():
            return defer.fail(self._not_established())
        return self.operations.echo(context.context_id)

    def store(self, source, context_id: int) -> defer.Deferred:
        """
        C-STORE ``source`` (a Part10Source) on ``context_id``: the command, then
        its data set streamed from the file; fires with the CStoreRSP.
        """
        return self.send_store(source, context_id)[1]

    def send_store(self, source, context_id: int) -> tuple[defer.Deferred, defer.Deferred]:
        """
        Start a C-STORE like L{store}; two Deferreds: the first fires when
        the data set is written (the next C-STORE may start then, within
        L{operations_window}), the second with the CStoreRSP.
        """
        if self.operations.sender is not None:
            raise RuntimeError("a data set is still being sent")
        return self._submit(source, context_id, wait=False)

    def queue_store(self, source, context_id: int) -> tuple[defer.Deferred, defer.Deferred]:
        """
        A C-STORE like L{send_store}, started now if the window has room and
        no data set is being sent, and otherwise made ready (its command
        encoded, its file opened and its first stretch read) and started
        the moment a response or the end of a data set makes room. One at
        a time may wait.
        """
        if self.operations.queued is not None:
            raise RuntimeError("a C-STORE is already waiting for room")
        return self._submit(source, context_id, wait=True)

    def _submit(self, source, context_id: int, wait: bool) -> tuple[defer.Deferred, defer.Deferred]:
        if not self.in_transfer():
            return defer.succeed(None), defer.fail(NotSent(self._not_established()))
        return self.operations.submit(source, context_id, wait)

    def _not_established(self) -> AssociationError:
        return self.error or AssociationAborted("The association has ended")

    def release(self) -> defer.Deferred:
        """A-RELEASE; fires with None once released and closed."""
        if self.machine.state is not State.STA6:
            return self.closed
        self._released = defer.Deferred()
        self.watch()
        self._handle(Event.EVT11)
        released = self._released
        return released.addCallback(lambda _: self.closed)

    def abort(self, why: str = "aborted by the user") -> None:
        """A-ABORT (service-user); what is outstanding fails with ``why``."""
        if self.machine.state in (State.STA1, State.STA13):
            return
        self.error = self.error or AssociationAborted(why)
        if self.machine.state is State.STA4:
            # AA-2: nothing to send yet; stop connecting.
            self._handle(Event.EVT15)
            self._finished()
            return
        self._handle(Event.EVT15)
        self._fail(self.error)

    @property
    def outstanding(self) -> int:
        """Operations sent and not yet answered."""
        return len(self.operations.responses)

    # Timers --------------------------------------------------------------------

    def progressed(self) -> None:
        """The peer did something: restart the wait on it."""
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.timeout)

    def watch(self) -> None:
        """Wait on the peer from now, at most the timeout."""
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.timeout)
        else:
            self._timer = self.reactor.callLater(self.timeout, self._timed_out)

    def unwatch(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        what = {
            State.STA4: "no connection",
            State.STA5: "no answer to the A-ASSOCIATE-RQ",
            State.STA7: "no answer to the A-RELEASE-RQ",
        }.get(self.machine.state, "no response")
        self.abort(f"Timed out: {what} within {self.timeout:g} s")

    def _artim_expired(self) -> None:
        super()._artim_expired()
        if self.transport is not None:
            # The peer may not read at all: what is left unsent is dropped.
            self.transport.abortConnection()

    # The machine's effects ---------------------------------------------------

    def _close_transport(self, effect=None) -> None:
        if self.transport is not None:
            self.transport.loseConnection()
        elif self._connecting is not None:
            self._connecting.cancel()

    def _accepted(self, effect: fsm.AssociateAccepted) -> None:
        try:
            granted = check_accept(self.request, effect.accept)
        except InvalidAccept as error:
            self._handle(Event.EVT15, fsm.AbortRequest(error.message))
            self._fail(self.error)
            return
        self.contexts = granted.contexts
        self.accept = effect.accept
        self.peer_maximum_length = granted.peer_maximum_length
        self.operations_window = granted.operations_window
        self.unwatch()
        self.established.callback(self)

    def _rejected(self, effect: fsm.AssociateRejected) -> None:
        self.error = AssociationRejected(effect.reject)

    def _release_indication(self, effect: fsm.ReleaseIndication) -> None:
        # The peer asks to release (AR-2), or both did at once (AR-8): answer.
        if not effect.collision:
            self.error = self.error or AssociationAborted("The peer released the association")
            self._fail(self.error)
        self._handle(Event.EVT14)

    def _release_confirmation(self, effect) -> None:
        self.unwatch()
        released, self._released = self._released, None
        if released is not None:
            released.callback(None)

    def _abort_indication(self, effect: fsm.AbortIndication) -> None:
        self.error = self.error or AssociationAborted("Association aborted by the peer (A-ABORT, service-user)")

    def _provider_abort_indication(self, effect: fsm.ProviderAbortIndication) -> None:
        self.error = self.error or AssociationAborted(f"Association aborted: {effect.reason}")

    # DIMSE -------------------------------------------------------------------

    def _pdata_items(self, items) -> None:
        self.operations.pdata_items(items)

    def invalid(self, message: str) -> None:
        """The peer broke DIMSE's rules: abort, and what is outstanding fails."""
        self.error = self.error or AssociationAborted(f"Association aborted: {message}")
        self._handle(Event.EVT19, fsm.InvalidPDU(AbortReason.UNEXPECTED_PDU_PARAMETER, message))
        self._fail(self.error)

    def _fail(self, error: AssociationError) -> None:
        """Every outstanding wait fails with ``error``."""
        self.operations.fail(error, NotSent(error))
        released, self._released = self._released, None
        if released is not None:
            released.errback(error)
        if not self.established.called:
            self.established.errback(error)


def client_endpoint(reactor, host: str, port: int, timeout: float = DEFAULT_TIMEOUT, tls_options=None):
    """
    The endpoint an association is opened through: TCP to ``host`` (a name,
    IPv4 or IPv6 address), and with ``tls_options`` (``radx.tls.client_options``)
    TLS over it (PS3.15 B.9); nothing else in the requestor changes.

    An address is connected to as it is; only a name goes through the
    resolver (a thread) and Twisted's tries of each address it resolves to.
    """
    from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS

    if _is_address(socket.AF_INET, host):
        endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
    elif _is_address(socket.AF_INET6, host):
        endpoint = TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
    else:
        endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
    if tls_options is not None:
        endpoint = wrapClientTLS(tls_options, endpoint)
    return endpoint


def _is_address(family: int, host: str) -> bool:
    try:
        socket.inet_pton(family, host)
    except (OSError, ValueError):
        return False
    return True


def associate(endpoint, request: AAssociateRQ, reactor, timeout: float = DEFAULT_TIMEOUT) -> defer.Deferred:
    """Open an association through ``endpoint``; fires with the RequestorProtocol once accepted."""
    protocol = RequestorProtocol(request, reactor, timeout)
    return protocol.request_association(lambda p: connectProtocol(endpoint, p))
