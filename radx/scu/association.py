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
from dataclasses import dataclass

from twisted.internet import defer
from twisted.internet.endpoints import connectProtocol
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IHandshakeListener, IPushProducer, ISSLTransport
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from radx import uids
from radx.dimse.assembly import CommandReceived, DIMSEProtocolError, MessageAssembler
from radx.dimse.commands import CEchoRQ, CEchoRSP, CStoreRQ, CStoreRSP, DIMSEDecodeError
from radx.dimse.fragmenting import EncodedPDUs, encode_command, encode_fragments, fragment_size
from radx.tcp import MachineDriverOverTCP
from radx.ul import fsm
from radx.ul.framing import PDUReader
from radx.ul.fsm import Event, State
from radx.ul.negotiation import ACCEPTANCE, describe_context_result, describe_reject, operations_window
from radx.ul.pdu import (
    AAssociateRQ,
    AbortReason,
    AsynchronousOperationsWindowSubItem,
    ImplementationClassUIDSubItem,
    ImplementationVersionNameSubItem,
    MaximumLengthSubItem,
    PDUDecodeError,
    PresentationContextItemRQ,
    UserInformationItem,
)

DEFAULT_TIMEOUT = 30.0
# Seconds the peer has to close after radx's A-ABORT (PS3.8 AA-1 in Sta13).
DEFAULT_ARTIM = 5.0

# Twisted's TCP transport hands at most 128 KiB to each send(2).
_STRETCH = 128 * 1024

# States with an association in which radx may send P-DATA (Evt9 is DT-1 in Sta6).
_TRANSFER_STATES = (State.STA6,)


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


def associate_request(
    called_ae_title: str,
    calling_ae_title: str,
    contexts: dict[tuple[str, str], int],
    maximum_length: int,
    operations: int = 1,
) -> AAssociateRQ:
    """
    An A-ASSOCIATE-RQ proposing ``{(abstract syntax, transfer syntax): context ID}``,
    and, when ``operations`` is not 1, an Asynchronous Operations Window
    of that many outstanding operations (0: unlimited).
    """
    sub_items = [
        MaximumLengthSubItem(maximum_length),
        ImplementationClassUIDSubItem(uids.IMPLEMENTATION_CLASS_UID),
    ]
    if operations != 1:
        # PS3.7 D.3.3.3: what radx may invoke; it performs none for the peer.
        sub_items.append(AsynchronousOperationsWindowSubItem(operations, 1))
    sub_items.append(ImplementationVersionNameSubItem(uids.IMPLEMENTATION_VERSION_NAME))
    return AAssociateRQ(
        called_ae_title=called_ae_title,
        calling_ae_title=calling_ae_title,
        application_context_name=uids.APPLICATION_CONTEXT_NAME,
        presentation_contexts=tuple(
            PresentationContextItemRQ(context_id, abstract, (transfer,))
            for (abstract, transfer), context_id in sorted(contexts.items(), key=lambda item: item[1])
        ),
        # PS3.8 D.1 and PS3.7 D.3.3.2: our receive limit and our implementation.
        user_information=UserInformationItem(tuple(sub_items)),
    )


@dataclass(frozen=True)
class ContextResult:
    """A proposed presentation context, as the peer answered it."""

    context_id: int
    abstract_syntax: str
    transfer_syntax: str
    result: int

    @property
    def accepted(self) -> bool:
        return self.result == ACCEPTANCE

    @property
    def why(self) -> str:
        return f"presentation context not accepted: {describe_context_result(self.result)}"


def _read_fully(read, size: int) -> bytes:
    """``size`` bytes from an unbuffered file's ``read``, fewer only at its end."""
    data = read(size)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = read(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _stretch(peer_maximum_length: int) -> int:
    """Data set bytes read and written at a time: as many whole fragments as one send of the transport carries."""
    size = fragment_size(peer_maximum_length)
    return max(1, _STRETCH // (size + 12)) * size


class _PreparedStore:
    """
    A C-STORE ready to go: its command's PDUs encoded, its file open at
    the data set, the data set's first stretch read.
    """

    __slots__ = ("message_id", "context_id", "command", "fp", "length", "first", "sent", "response")

    def __init__(
        self, message_id: int, context_id: int, command: EncodedPDUs, fp, length: int, first: bytes | None
    ) -> None:
        self.message_id = message_id
        self.context_id = context_id
        self.command = command
        self.fp = fp
        self.length = length
        self.first = first
        # Fires when the data set is written; with the CStoreRSP.
        self.sent = defer.Deferred()
        self.response = defer.Deferred()


@implementer(IPushProducer)
class _DataSetSender:
    """Streams a data set from a file as P-DATA-TF PDUs, as fast as the transport takes them.

    Registered as the transport's streaming producer: the transport pauses
    it when its buffer is full and resumes it when drained, so at most about
    one buffer of the data set is in memory, whatever its size.
    """

    def __init__(
        self, protocol, fp, length: int, context_id: int, message_id: int, done: defer.Deferred, first: bytes | None
    ) -> None:
        self.message_id = message_id  # of the C-STORE-RQ whose data set this is
        self._protocol = protocol
        self._fp = fp
        self._left = length
        self._context_id = context_id
        self._size = fragment_size(protocol.peer_maximum_length)
        self._stretch = _stretch(protocol.peer_maximum_length)
        # The first stretch, read ahead (None: read it when sending).
        self._first = first
        # PS3.5 A.5: an odd deflated data set gets one trailing NULL byte; every
        # other data set is even (PS3.5 7.1.1), and an odd one is padded alike.
        self._pad = length & 1
        self._done = done
        self._paused = False
        self._stopped = False

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        protocol = self._protocol
        protocol.progressed()
        read = self._fp.read
        while not self._paused and not self._stopped:
            size = min(self._stretch, self._left)
            if self._first is not None:
                data, self._first = self._first, None
            else:
                data = _read_fully(read, size)
            if len(data) != size:
                self._finish(OSError(f"the file ended {self._left - len(data)} bytes early"))
                return
            self._left -= size
            last = self._left == 0
            if last and self._pad:
                data += b"\x00"
            # PS3.8 E.2: data set fragments; the last one of the data set says so.
            pdus = EncodedPDUs(encode_fragments(self._context_id, data, self._size, command=False, ends_message=last))
            if not protocol.send_data(pdus):
                self._finish(None)
                return
            if protocol.on_data_sent is not None:
                protocol.on_data_sent(size)
            if last:
                self._finish(None)
                return

    def stopProducing(self) -> None:
        self._finish(None)

    def _finish(self, error) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._fp.close()
        self._protocol.data_set_sent(self, error)
        done, self._done = self._done, None
        if error is not None:
            done.errback(error)
        else:
            done.callback(None)


@implementer(IHandshakeListener)
class RequestorProtocol(MachineDriverOverTCP, Protocol):
    """Feeds bytes to the upper layer machine (requestor role) and carries out its effects in order."""

    def __init__(
        self,
        request: AAssociateRQ,
        reactor,
        timeout: float = DEFAULT_TIMEOUT,
        artim_timeout: float | None = None,
    ) -> None:
        self.request = request
        self.reactor = reactor
        self.timeout = timeout
        self.artim_timeout = min(DEFAULT_ARTIM, timeout) if artim_timeout is None else artim_timeout
        self.machine = fsm.UpperLayer(requestor=True)
        maximum = request.user_information.maximum_length or 0
        self.reader = PDUReader(maximum_pdata_length=maximum)
        self.assembler = MessageAssembler()
        self.contexts: dict[int, ContextResult] = {}
        self.peer_maximum_length = 0
        # How many operations may be outstanding at once, as the AC granted;
        # at least 1 (_granted_window, ul.negotiation.operations_window).
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
        # Message ID -> the Deferred its response fires, in the order sent.
        self._responses: dict[int, defer.Deferred] = {}
        self._sender: _DataSetSender | None = None
        self._early_response = None
        # A C-STORE made ready while the window was full (queue_store): it
        # goes out as soon as a response makes room, before that response
        # is delivered, so that the peer waits for nothing radx does.
        self._queued: _PreparedStore | None = None
        # Called with the size of each data set fragment written (progress).
        self.on_data_sent = None
        self._message_id = 0
        self._tls_handshake_done = False
        self._timer = None
        self._artim = None
        self._dispatch = {
            fsm.SendPDU: self._send_pdu,
            fsm.StartARTIM: self._start_artim,
            fsm.StopARTIM: self._stop_artim,
            fsm.OpenTransport: self._open,
            fsm.CloseTransport: self._close_transport,
            fsm.AssociateAccepted: self._accepted,
            fsm.AssociateRejected: self._rejected,
            fsm.DataIndication: self._data_indication,
            fsm.ReleaseIndication: self._release_indication,
            fsm.ReleaseConfirmation: self._release_confirmation,
            fsm.AbortIndication: self._abort_indication,
            fsm.ProviderAbortIndication: self._provider_abort_indication,
        }

    # Opening ---------------------------------------------------------------

    def request_association(self, open_transport) -> defer.Deferred:
        """Evt1: ask for the association; ``open_transport(protocol)`` connects (a Deferred)."""
        self._open_transport = open_transport
        self._watch()
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
        # DIMSE is request/response: Nagle's algorithm would hold each PDU back.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self._handle(Event.EVT2)

    def dataReceived(self, data: bytes) -> None:
        if self.machine.state in (State.STA1, State.STA13):
            return
        self.progressed()
        try:
            pdus = self.reader.feed(data)
        except PDUDecodeError as error:
            for pdu in error.pdus_before:
                self._run(self.machine.receive(pdu))
            if self.machine.state not in (State.STA1, State.STA13):
                self._handle(Event.EVT19, fsm.InvalidPDU(error.reason, f"invalid PDU: {error.message}"))
            return
        for pdu in pdus:
            self._run(self.machine.receive(pdu))
            if self.machine.state in (State.STA1, State.STA13):
                return

    def handshakeCompleted(self) -> None:
        # IHandshakeListener: called by a TLS transport once its handshake is done.
        self._tls_handshake_done = True

    def connectionLost(self, reason=None) -> None:
        if reason is not None and ISSLTransport.providedBy(self.transport):
            self._tls_lost(reason)
        self._handle(Event.EVT17)
        self._finished()

    def _tls_lost(self, reason) -> None:
        """A TLS connection that ended on a TLS error, or before its handshake: say why, in OpenSSL's words."""
        from OpenSSL import SSL
        from service_identity import VerificationError

        from radx.tls import describe_server_refusal

        tls_error = reason.check(SSL.Error, VerificationError) is not None
        if self.error is not None or (self._tls_handshake_done and not tls_error):
            return
        if self.established.called:
            self.error = AssociationAborted(f"TLS connection failed: {describe_server_refusal(reason)}")
        else:
            # With TLS 1.3 the server checks a client certificate after the
            # client's side of the handshake is done: its alert arrives here.
            self.error = AssociationAborted(f"TLS handshake failed: {describe_server_refusal(reason)}")

    def _finished(self) -> None:
        self._cancel_timers()
        self._fail(self.error or AssociationAborted("Connection closed"))
        if not self.closed.called:
            self.closed.callback(None)

    # The user's side --------------------------------------------------------

    def context_for(self, abstract_syntax: str) -> ContextResult | None:
        """The context proposed for an abstract syntax: an accepted one if any."""
        proposed = [c for c in self.contexts.values() if c.abstract_syntax == abstract_syntax]
        accepted = [c for c in proposed if c.accepted]
        return (accepted or proposed or [None])[0]

    def _next_message_id(self) -> int:
        # PS3.7 9.1.1.1.2 / E.1: Message ID is an unsigned 16-bit value.
        self._message_id = self._message_id % 0xFFFF + 1
        return self._message_id

    def echo(self) -> defer.Deferred:
        """C-ECHO on the Verification context; fires with the CEchoRSP."""
        context = self.context_for(uids.VERIFICATION_SOP_CLASS)
        if context is None or not context.accepted:
            why = "no Verification context was proposed" if context is None else context.why
            return defer.fail(AssociationError(why))
        if self.machine.state not in _TRANSFER_STATES:
            return defer.fail(self._not_established())
        message_id = self._next_message_id()
        response = self._expect(message_id)
        command = CEchoRQ(message_id=message_id).encode()
        self.send_data(EncodedPDUs(encode_command(context.context_id, command, self.peer_maximum_length)))
        return response

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
        if self._sender is not None:
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
        if self._queued is not None:
            raise RuntimeError("a C-STORE is already waiting for room")
        return self._submit(source, context_id, wait=True)

    def _submit(self, source, context_id: int, wait: bool) -> tuple[defer.Deferred, defer.Deferred]:
        if self.machine.state not in _TRANSFER_STATES:
            return defer.succeed(None), defer.fail(NotSent(self._not_established()))
        request = CStoreRQ(
            message_id=self._next_message_id(),
            affected_sop_class_uid=source.sop_class_uid,
            affected_sop_instance_uid=source.sop_instance_uid,
        )
        command = EncodedPDUs(encode_command(context_id, request.encode(), self.peer_maximum_length))
        try:
            # Unbuffered: each stretch in one read(2), straight into its bytes.
            fp = open(source.path, "rb", buffering=0)
        except OSError as error:
            return defer.succeed(None), defer.fail(error)
        first = None
        try:
            fp.seek(source.data_set_offset)
            if wait:
                first = _read_fully(fp.read, min(_stretch(self.peer_maximum_length), source.data_set_length))
        except OSError as error:
            fp.close()
            return defer.succeed(None), defer.fail(error)
        store = _PreparedStore(request.message_id, context_id, command, fp, source.data_set_length, first)
        if wait and not self._has_room():
            self._queued = store
        else:
            self._start(store)
        return store.sent, store.response

    def _has_room(self) -> bool:
        """Whether a C-STORE may start now: no data set being sent, the window not full."""
        return self._sender is None and len(self._responses) < self.operations_window

    def _start(self, store: _PreparedStore) -> None:
        """The C-STORE-RQ, then its data set, streamed."""
        self._expect(store.message_id, store.response)
        self.send_data(store.command)
        done = defer.Deferred()

        def written(result):
            store.sent.callback(None)
            return result

        # The caller learns the data set is out either way; a file that
        # could not be read aborts the association (its response fails).
        done.addBoth(written).addErrback(self._sending_failed)
        self._sender = sender = _DataSetSender(
            self, store.fp, store.length, store.context_id, store.message_id, done, store.first
        )
        self.transport.registerProducer(sender, True)
        sender.resumeProducing()

    def _start_queued(self) -> None:
        if self._queued is not None and self.machine.state is State.STA6 and self._has_room():
            store, self._queued = self._queued, None
            self._start(store)

    def _not_established(self) -> AssociationError:
        return self.error or AssociationAborted("The association has ended")

    def release(self) -> defer.Deferred:
        """A-RELEASE; fires with None once released and closed."""
        if self.machine.state is not State.STA6:
            return self.closed
        self._released = defer.Deferred()
        self._watch()
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

    # Sending -------------------------------------------------------------------

    def send_data(self, pdus: EncodedPDUs) -> bool:
        """Evt9 for P-DATA-TF PDUs encoded back to back; False when the association can carry no more."""
        if not self.machine.can_send_pdata():
            return False
        # PS3.8 Table 9-10, Evt9: DT-1 (AR-7 in Sta8) sends the P-DATA-TF
        # PDUs and stays; written without the transition's objects, as the
        # acceptor writes its responses (radx.scp.protocol).
        self._write(pdus.encode())
        return True

    def data_set_sent(self, sender, error) -> None:
        if sender is not self._sender:
            return
        self._sender = None
        if self.transport is not None and self.machine.state is not State.STA1:
            self.transport.unregisterProducer()
        early, self._early_response = self._early_response, None
        if error is not None:
            return  # the association is aborted next (_sending_failed)
        if early is not None:
            self._respond(early)
        else:
            self._start_queued()

    def _sending_failed(self, failure) -> None:
        self.abort(f"Cannot read the file: {failure.getErrorMessage()}")

    def _expect(self, message_id: int, response: defer.Deferred | None = None) -> defer.Deferred:
        """The Deferred the response to ``message_id`` fires (``response`` if given); its wait starts now."""
        response = self._responses[message_id] = response or defer.Deferred()
        self._watch()
        return response

    @property
    def outstanding(self) -> int:
        """Operations sent and not yet answered."""
        return len(self._responses)

    # Timers --------------------------------------------------------------------

    def progressed(self) -> None:
        """The peer did something: restart the wait on it."""
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.timeout)

    def _watch(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.timeout)
        else:
            self._timer = self.reactor.callLater(self.timeout, self._timed_out)

    def _unwatch(self) -> None:
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

    def _start_artim(self, effect=None) -> None:
        self._stop_artim()
        self._artim = self.reactor.callLater(self.artim_timeout, self._artim_expired)

    def _stop_artim(self, effect=None) -> None:
        if self._artim is not None and self._artim.active():
            self._artim.cancel()
        self._artim = None

    def _artim_expired(self) -> None:
        self._artim = None
        self._handle(Event.EVT18)
        if self.transport is not None:
            # The peer may not read at all: what is left unsent is dropped.
            self.transport.abortConnection()

    def _cancel_timers(self) -> None:
        self._unwatch()
        self._stop_artim()

    # The machine's effects ---------------------------------------------------

    def _close_transport(self, effect=None) -> None:
        if self.transport is not None:
            self.transport.loseConnection()
        elif self._connecting is not None:
            self._connecting.cancel()

    def _accepted(self, effect: fsm.AssociateAccepted) -> None:
        accept = effect.accept
        proposed = {item.context_id: item for item in self.request.presentation_contexts}
        for item in accept.presentation_contexts:
            asked = proposed.get(item.context_id)
            if asked is None:
                continue
            transfer = item.transfer_syntax if item.result == ACCEPTANCE else asked.transfer_syntaxes[0]
            if item.result == ACCEPTANCE and item.transfer_syntax not in asked.transfer_syntaxes:
                # PS3.8 9.3.3.2: the acceptor picks one of the proposed transfer syntaxes.
                self._handle(
                    Event.EVT15,
                    fsm.AbortRequest(
                        f"the peer accepted context {item.context_id} with transfer syntax"
                        f" {item.transfer_syntax}, which was not proposed"
                    ),
                )
                self._fail(self.error)
                return
            self.contexts[item.context_id] = ContextResult(item.context_id, asked.abstract_syntax, transfer, item.result)
        for context_id, asked in proposed.items():
            # PS3.8 9.3.3.2: a context the AC does not answer is not accepted.
            if context_id not in self.contexts:
                self.contexts[context_id] = ContextResult(
                    context_id, asked.abstract_syntax, asked.transfer_syntaxes[0], 2
                )
        self.accept = accept
        self.peer_maximum_length = accept.user_information.maximum_length or 0
        self.operations_window = _granted_window(self.request, accept)
        self._unwatch()
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
        self._unwatch()
        released, self._released = self._released, None
        if released is not None:
            released.callback(None)

    def _abort_indication(self, effect: fsm.AbortIndication) -> None:
        self.error = self.error or AssociationAborted("Association aborted by the peer (A-ABORT, service-user)")

    def _provider_abort_indication(self, effect: fsm.ProviderAbortIndication) -> None:
        self.error = self.error or AssociationAborted(f"Association aborted: {effect.reason}")

    # DIMSE -------------------------------------------------------------------

    def _data_indication(self, effect: fsm.DataIndication) -> None:
        for item in effect.pdata.items:
            try:
                events = self.assembler.feed(item.context_id, item.message_control_header, item.data)
            except (DIMSEProtocolError, DIMSEDecodeError) as error:
                self._invalid(f"DIMSE: {error.message}")
                return
            for event in events:
                if type(event) is CommandReceived:
                    self._command_received(event)
                    if self.machine.state is not State.STA6:
                        return

    def _command_received(self, event: CommandReceived) -> None:
        command = event.command
        if not isinstance(command, (CEchoRSP, CStoreRSP)) or event.has_data_set:
            self._invalid(f"DIMSE: unexpected {type(command).__name__} to an SCU")
            return
        answered = command.message_id_being_responded_to
        if answered not in self._responses:
            self._invalid(f"DIMSE: a response to message {answered}, which is not outstanding")
            return
        if self._sender is not None and answered == self._sender.message_id:
            # An answer before the whole data set: PS3.8 E.1 still wants the
            # message completed, so the rest is sent before the next one.
            self._early_response = command
            return
        self._respond(command)

    def _respond(self, command) -> None:
        response = self._responses.pop(command.message_id_being_responded_to)
        if self._responses:
            self._watch()  # the next answer is due within the timeout from now
        else:
            self._unwatch()
        # The next C-STORE first: the peer is idle until it arrives.
        self._start_queued()
        response.callback(command)

    def _invalid(self, message: str) -> None:
        self.error = self.error or AssociationAborted(f"Association aborted: {message}")
        self._handle(Event.EVT19, fsm.InvalidPDU(AbortReason.UNEXPECTED_PDU_PARAMETER, message))
        self._fail(self.error)

    def _fail(self, error: AssociationError) -> None:
        """Every outstanding wait fails with ``error``."""
        if self._sender is not None:
            self._sender.stopProducing()
        responses, self._responses = self._responses, {}
        for waiting in responses.values():
            waiting.errback(error)
        queued, self._queued = self._queued, None
        if queued is not None:
            queued.fp.close()
            queued.response.errback(NotSent(error))
            queued.sent.callback(None)
        released, self._released = self._released, None
        if released is not None:
            released.errback(error)
        if not self.established.called:
            self.established.errback(error)


def _granted_window(request: AAssociateRQ, accept) -> int:
    """
    How many operations radx may have outstanding: PS3.7 D.3.3.3, the
    acceptor's Maximum-number-operations-invoked, never more than radx
    proposed; 1 when either side has no window; 0 (unlimited) is taken as
    what radx proposed. The acceptor's rule with radx's proposal as its limit.
    """
    proposed = request.user_information.asynchronous_operations_window
    if proposed is None:
        return 1
    return operations_window(
        accept.user_information.asynchronous_operations_window, proposed.maximum_number_operations_invoked or 1 << 16
    )


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
