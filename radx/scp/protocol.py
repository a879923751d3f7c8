# -*- test-case-name: tests.test_scp_protocol -*-
"""One association, acceptor side: a thin Twisted Protocol over the pure upper layer and DIMSE."""

from __future__ import annotations

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from zope.interface import implementer

from radx import uids
from radx.dimse.assembly import (
    CommandReceived,
    DataSetFragment,
    DIMSEProtocolError,
    MessageAssembler,
)
from radx.dimse.commands import (
    C_CANCEL_RQ,
    C_STORE_RQ,
    RESPONSE_BIT,
    CEchoRQ,
    CEchoRSP,
    CStoreRQ,
    CStoreRSP,
    DIMSEDecodeError,
    UnknownCommand,
    encode_response,
)
from radx.dimse.fragmenting import EncodedPDUs, encode_command
from radx.dimse.status import Status
from radx.scp.storing import Backlog, InstanceReception
from radx.storage.layout import is_valid_uid, uid_for_log
from radx.storage.store import InstanceWriter, StorageError
from radx.tcp import MachineDriverOverTCP
from radx.ul import fsm
from radx.ul.framing import PDUReader
from radx.ul.fsm import Event, State
from radx.ul.negotiation import invalid_request_reason, negotiate
from radx.ul.pdu import AAssociateRQ, AbortReason, PDataTF, PDUDecodeError

# Seconds a peer has to read radx's last A-ABORT before the connection is cut.
_CLOSE_GRACE = 1.0

# States in which the local user may send P-DATA (PS3.8 Table 9-10: Evt9
# is DT-1 in Sta6 and AR-7 in Sta8).
_CAN_SEND_DATA = (State.STA6, State.STA8)

# Bytes asked of the socket per read.
_READ_SIZE = 256 * 1024


def _echoed(uid: str) -> str | None:
    """A request's UID as its response repeats it, or None to leave it out.

    PS3.7 9.1.1, 9.1.5 (the service parameters): a response's Affected SOP
    Class and Instance UIDs are U(=), optional; a value that is no UID (over 64 characters,
    say; PS3.5 9.1) cannot be encoded as UI, so it is not repeated.
    """
    return uid if is_valid_uid(uid) else None


def _shown(uid: str) -> str:
    """A request's UID as a log line shows it: itself if it is one, else only its length."""
    return uid if is_valid_uid(uid) else uid_for_log(uid)


class _PendingStore:
    """A C-STORE-RQ whose data set is arriving."""

    __slots__ = ("request", "context", "reception", "status", "comment")

    def __init__(self, request, context, reception, status=None, comment=None):
        self.request = request
        self.context = context
        # None when the request is refused before anything is written; the
        # data set is then read and dropped, and ``status`` answered.
        self.reception = reception
        self.status = status
        self.comment = comment


@implementer(IPushProducer)
class AssociationProtocol(MachineDriverOverTCP, Protocol):
    """Feeds bytes to the upper layer machine and carries out its effects in order.

    It is its transport's producer: what it produces is responses, one for
    each request it reads, so when the transport's write buffer passes its
    high-water mark (a peer that does not read them) it stops reading
    requests until the buffer drains.
    """

    log = Logger()

    def __init__(self, factory, peer: str) -> None:
        # Bound once: Logger is a descriptor that makes a new Logger at each self.log.
        self.log = type(self).log.__get__(self, type(self))
        self.factory = factory
        self.config = factory.config
        self.peer = peer
        self.machine = fsm.UpperLayer(requestor=False, provider_check=factory.provider_check)
        self.reader = PDUReader(maximum_pdata_length=self.config.policy.maximum_pdu_length)
        self.assembler = MessageAssembler()
        self.negotiated = None
        self.calling_ae_title = ""
        self.associated = False
        self._artim = None
        self._idle = None
        self._pdu_timer = None
        self._close_timer = None
        self._shutting_down = False
        self._reader_failed = False
        self._producing = False  # registered as the transport's producer
        self._store: _PendingStore | None = None
        self._busy = 0  # operations whose response is not yet sent
        self._release_requested = False
        # Why reading is paused, if it is: "backlog" (the writes of its
        # instances are behind), "window" (the peer has more operations
        # outstanding than it negotiated), "responses" (the transport's
        # write buffer is full: the peer does not read what it asked for).
        self._pauses: set[str] = set()
        # Bytes received and not yet written, over all its instances.
        self._backlog = Backlog(self._on_backlog)
        self._window_exceeded = False  # said once per association
        # For the audit record at the end: who, from where, what, the outcome
        # (the facts of a PS3.15 A.5 audit message; not its XML format).
        self._request: AAssociateRQ | None = None
        self._tls_subject: str | None = None
        self._connected_at = 0.0
        self._stored_count = 0
        self._failed_count = 0
        self._outcome: str | None = None
        self._used_contexts: dict[int, None] = {}  # IDs that carried a command, in order
        self._dispatch = {
            fsm.SendPDU: self._send_pdu,
            fsm.StartARTIM: self._start_artim,
            fsm.StopARTIM: self._stop_artim,
            fsm.CloseTransport: self._close_transport,
            fsm.AssociateIndication: self._associate_indication,
            fsm.AssociateRejectedByProvider: self._rejected_by_provider,
            fsm.DataIndication: self._data_indication,
            fsm.ReleaseIndication: self._release_indication,
            fsm.ReleaseConfirmation: lambda effect: None,
            fsm.AbortIndication: self._abort_indication,
            fsm.ProviderAbortIndication: self._provider_abort_indication,
        }

    # Twisted's side -------------------------------------------------------

    def connectionMade(self) -> None:
        # DIMSE is request/response: Nagle's algorithm would hold each PDU back.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        if hasattr(self.transport, "bufferSize"):
            # Twisted reads 64 KiB at a time; a data set arrives in fewer, larger reads.
            self.transport.bufferSize = _READ_SIZE
        self._connected_at = self.factory.reactor.seconds()
        self.transport.registerProducer(self, True)
        self._producing = True
        self.factory.connection_made(self)
        self._handle(Event.EVT5)

    def dataReceived(self, data: bytes) -> None:
        self.factory.stats.bytes_received += len(data)
        if self._reader_failed:
            return
        if self._idle is not None:
            self._idle.reset(self.config.idle_timeout)
        try:
            pdus = self.reader.feed(data)
        except PDUDecodeError as error:
            self._reader_failed = True
            # PS3.8 9.2: the valid PDUs before the bad one come first.
            if self._receive(error.pdus_before):
                self._invalid_pdu(error.reason, error.message)
            return
        self._watch_partial_pdu(bool(pdus))
        self._receive(pdus)

    def _receive(self, pdus) -> bool:
        """Feed PDUs to the machine in order; False once the connection is closed."""
        machine = self.machine
        for pdu in pdus:
            if type(pdu) is PDataTF and machine.state is State.STA6:
                # PS3.8 Table 9-10, (Sta6, Evt10): DT-2, a P-DATA indication,
                # staying in Sta6. The hot path, without the transition's objects.
                self._pdata_items(pdu.items)
                if machine.state is State.STA1:
                    return False
                continue
            if isinstance(pdu, AAssociateRQ):
                invalid = invalid_request_reason(pdu)
                if invalid is not None:
                    self._invalid_pdu(AbortReason.INVALID_PDU_PARAMETER_VALUE, invalid)
                    continue
            self._run(self.machine.receive(pdu))
            if self.machine.state is State.STA1:
                return False
        return True

    def connectionLost(self, reason=None) -> None:
        if self.machine.state is State.STA2 and self.reader.buffered and not self._reader_failed:
            # AA-5 issues no indication; say what the peer left unfinished.
            self.log.info(
                "Connection closed by peer={peer} in the middle of a PDU, before any association",
                peer=self.peer,
            )
        # The bytes of an unfinished PDU go now, not whenever the collector
        # frees this protocol (its dispatch table makes it a cycle).
        self.reader.discard()
        self._handle(Event.EVT17)
        self._cancel_timers()
        self._abandon_store()
        if self._request is not None:
            self._audit()
        self.factory.connection_lost(self)

    def _audit(self) -> None:
        """One record per association: who, over what, what was stored, how it ended. UIDs only.

        The line names the contexts used (a requestor may propose a hundred
        and use one); ``accepted_contexts``, for JSON, lists every accepted one.
        """
        request = self._request
        accepted = self.negotiated.contexts if self.negotiated is not None else {}

        def pairs(ids):
            return list(dict.fromkeys(f"{accepted[i].abstract_syntax}/{accepted[i].transfer_syntax}" for i in ids))

        self.log.info(
            "Association ended peer={peer} tls_subject={tls_subject} calling_ae={calling_ae}"
            " called_ae={called_ae} accepted={accepted}/{proposed} contexts={contexts}"
            " stored={stored} failed={failed} duration={duration:.3f}s outcome={outcome}",
            peer=self.peer,
            tls_subject=self._tls_subject or "-",
            calling_ae=request.calling_ae_title,
            called_ae=request.called_ae_title,
            accepted=len(accepted),
            proposed=len(request.presentation_contexts),
            contexts=",".join(pairs(i for i in self._used_contexts if i in accepted)) or "-",
            accepted_contexts=pairs(accepted),
            stored=self._stored_count,
            failed=self._failed_count,
            duration=self.factory.reactor.seconds() - self._connected_at,
            outcome=self._outcome or "closed",
            audit=True,
        )

    def _ended(self, outcome: str) -> None:
        if self._outcome is None:
            self._outcome = outcome

    # Shutdown, as the factory asks ---------------------------------------

    @property
    def busy(self) -> bool:
        """An operation is in progress: a data set arriving or being filed."""
        return self._busy > 0

    def shut_down(self) -> None:
        """Finish the operation in progress, if any, then abort the association."""
        self._shutting_down = True
        if self.associated and not self.busy:
            self._abort_for_shutdown()

    def abort_now(self, reason: str = "the server is shutting down (drain timeout)") -> None:
        """The drain is over (its timeout, or a second stop signal): abort whatever is in progress."""
        self._local_abort(reason)
        self._close_after_abort()

    def _abort_for_shutdown(self) -> None:
        self._local_abort("the server is shutting down")
        self._close_after_abort()

    def _close_after_abort(self) -> None:
        """Close so that the A-ABORT just written reaches the peer.

        Closing a socket with unread bytes in it sends a TCP reset, which
        can overtake the A-ABORT: instead radx stops writing (FIN after the
        A-ABORT), reads and drops what still comes, and cuts the connection
        if the peer has not closed within a second.
        """
        self._reader_failed = True
        self._stop_producing_for_transport()
        self._resume_reading()
        half_close = getattr(self.transport, "loseWriteConnection", None)
        if half_close is not None:
            half_close()
        else:
            self.transport.loseConnection()
        self._close_timer = self.factory.reactor.callLater(_CLOSE_GRACE, self.transport.abortConnection)

    def close_unassociated(self) -> None:
        """Close a connection that has no association, at once: the factory needs its place."""
        self._reader_failed = True  # what it sent is no longer of interest, nor logged
        self.transport.abortConnection()

    def _watch_partial_pdu(self, progressed: bool) -> None:
        """Start, restart or stop the DIMSE timer on the PDU being received."""
        timer = self._pdu_timer
        if not self.reader.buffered:
            if timer is not None:
                timer.cancel()
                self._pdu_timer = None
        elif timer is None:
            self._pdu_timer = self.factory.reactor.callLater(self.config.dimse_timeout, self._pdu_timed_out)
        elif progressed:
            timer.reset(self.config.dimse_timeout)

    def _pdu_timed_out(self) -> None:
        self._pdu_timer = None
        why = f"a PDU did not arrive in full within {self.config.dimse_timeout}s (DIMSE timeout)"
        if self.machine.state is State.STA2:
            # No association yet: ARTIM's business, but the same cure.
            self._stop_artim()
            self.log.info("Closing peer={peer}: {why}", peer=self.peer, why=why)
            self._close_transport()
            return
        self._reader_failed = True
        self._local_abort(why)

    # The machine's effects ---------------------------------------------

    def _start_artim(self, effect=None) -> None:
        self._stop_artim()
        self._artim = self.factory.reactor.callLater(self.config.artim_timeout, self._artim_expired)

    def _stop_artim(self, effect=None) -> None:
        if self._artim is not None:
            if self._artim.active():
                self._artim.cancel()
            self._artim = None

    def _artim_expired(self) -> None:
        self._artim = None
        if self.machine.state is State.STA2:
            self.log.info(
                "No A-ASSOCIATE-RQ within {timeout}s, closing peer={peer}",
                timeout=self.config.artim_timeout,
                peer=self.peer,
            )
        self._handle(Event.EVT18)

    def _close_transport(self, effect=None) -> None:
        # Twisted does not close a connection whose producer is registered;
        # and one whose peer reads nothing never flushes: cut it after a grace.
        self._stop_producing_for_transport()
        self.transport.loseConnection()
        if self._close_timer is None:
            self._close_timer = self.factory.reactor.callLater(_CLOSE_GRACE, self.transport.abortConnection)

    def _invalid_pdu(self, reason: int, message: str) -> None:
        self._handle(Event.EVT19, reason=reason, message=f"invalid PDU: {message}")

    def _rejected_by_provider(self, effect: fsm.AssociateRejectedByProvider) -> None:
        self._log_reject(effect.request, effect.reject, self.factory.reject_reason(effect.reject))

    def _log_reject(self, request, reject, why) -> None:
        self._request = request
        self._tls_subject = self.factory.peer_subject(self.transport)
        self._ended("rejected")
        self.factory.association_rejected(reject)
        self.log.info(
            "Association rejected peer={peer} calling_ae={calling_ae} called_ae={called_ae}"
            " result={result} source={source} reason={reason}: {why}",
            peer=self.peer,
            calling_ae=request.calling_ae_title,
            called_ae=request.called_ae_title,
            result=reject.result,
            source=reject.source,
            reason=reject.reason,
            why=why,
        )

    def _associate_indication(self, effect: fsm.AssociateIndication) -> None:
        request = effect.request
        negotiated = negotiate(request, self.config.policy)
        if negotiated.reject is not None:
            self._log_reject(request, negotiated.reject, negotiated.reason)
            self._handle(Event.EVT8, pdu=negotiated.reject)
            return
        self._request = request
        self._tls_subject = self.factory.peer_subject(self.transport)
        self.negotiated = negotiated
        self.calling_ae_title = request.calling_ae_title
        self.associated = True
        self.factory.association_started(self)
        self.log.info(
            "Association accepted peer={peer} calling_ae={calling_ae} called_ae={called_ae}"
            " contexts={accepted}/{proposed}",
            peer=self.peer,
            calling_ae=request.calling_ae_title,
            called_ae=request.called_ae_title,
            accepted=len(negotiated.contexts),
            proposed=len(request.presentation_contexts),
        )
        self._handle(Event.EVT7, pdu=negotiated.accept)
        self._idle = self.factory.reactor.callLater(self.config.idle_timeout, self._idle_expired)

    def _idle_expired(self) -> None:
        self._idle = None
        # Nothing arrives because radx stopped reading, or because the peer
        # waits for a response radx still owes it (the instance is being
        # filed): neither is the peer's idleness. Reading paused because the
        # peer does not read its responses is.
        waiting_for_radx = bool(self._pauses - {"responses"}) or (self._busy and self._store is None)
        if waiting_for_radx:
            self._idle = self.factory.reactor.callLater(self.config.idle_timeout, self._idle_expired)
            return
        self._local_abort(f"no data for {self.config.idle_timeout}s (idle timeout)")

    def _local_abort(self, why: str) -> None:
        if self.machine.state in (State.STA1, State.STA2, State.STA4, State.STA13):
            return
        self._abandon_store()
        self._ended("aborted")
        self._handle(Event.EVT15, message=why)

    def _release_indication(self, effect: fsm.ReleaseIndication) -> None:
        if self._store is not None:
            self._abandon_unfinished_data_set()
        self.log.info(
            "Association released peer={peer} calling_ae={calling_ae}",
            peer=self.peer,
            calling_ae=self.calling_ae_title,
        )
        self._release_requested = True
        self._ended("released")
        self._answer_release_when_idle()

    def _abandon_unfinished_data_set(self) -> None:
        """An A-RELEASE-RQ came before the data set's last fragment: drop the instance, answer the release.

        PS3.8 7.2.2: after an A-RELEASE request the requestor issues no
        primitive but A-ABORT, so the rest of the data set never comes; and
        the acceptor shall always answer the release affirmatively. Waiting
        would only hold the association until the idle timeout.
        """
        store, self._store = self._store, None
        if store.reception is not None:
            store.reception.abort()
        self._busy -= 1
        self.factory.stats.store_failures += 1
        self._failed_count += 1
        self.log.warn(
            "A-RELEASE-RQ in the middle of a data set peer={peer} calling_ae={calling_ae} sop_instance={uid}:"
            " the instance is abandoned, nothing stored, and the release answered",
            peer=self.peer,
            calling_ae=self.calling_ae_title,
            uid=_shown(store.request.affected_sop_instance_uid),
        )

    def _answer_release_when_idle(self) -> None:
        # PS3.8 Table 9-10 AR-7: responses may still go out in Sta8, so a
        # release that arrives while an instance is being filed waits for it.
        if self._release_requested and not self._busy and self.machine.state is State.STA8:
            self._release_requested = False
            self._handle(Event.EVT14)

    def _abort_indication(self, effect: fsm.AbortIndication) -> None:
        self.log.info(
            "Association aborted by the peer peer={peer} calling_ae={calling_ae}",
            peer=self.peer,
            calling_ae=self.calling_ae_title,
        )
        self._ended("aborted-by-peer")
        self._abandon_store()

    def _provider_abort_indication(self, effect: fsm.ProviderAbortIndication) -> None:
        # The peer's protocol violation is a warning; a timeout or a dropped connection is not.
        log = self.log.warn if effect.peer_violation else self.log.info
        log(
            "Association aborted peer={peer} calling_ae={calling_ae}: {why}",
            peer=self.peer,
            calling_ae=self.calling_ae_title or "-",
            why=effect.reason,
        )
        self._ended("aborted")
        self._abandon_store()

    # DIMSE -------------------------------------------------------------------

    def _data_indication(self, effect: fsm.DataIndication) -> None:
        self._pdata_items(effect.pdata.items)

    def _pdata_items(self, items) -> None:
        contexts = self.negotiated.contexts
        for item in items:
            if item.context_id not in contexts:
                self._invalid_pdu(
                    AbortReason.INVALID_PDU_PARAMETER_VALUE,
                    f"P-DATA on presentation context {item.context_id}, which was not accepted",
                )
                return
            try:
                events = self.assembler.feed(item.context_id, item.message_control_header, item.data)
            except DIMSEProtocolError as error:
                self._invalid_pdu(AbortReason.INVALID_PDU_PARAMETER_VALUE, f"DIMSE: {error}")
                return
            except DIMSEDecodeError as error:
                self._undecodable_command(item.context_id, error)
                continue
            for event in events:
                if type(event) is DataSetFragment:
                    self._data_set_fragment(event)
                else:
                    self._command_received(event)

    def _command_received(self, event: CommandReceived) -> None:
        command = event.command
        context = self.negotiated.contexts[event.context_id]
        self._used_contexts[event.context_id] = None
        if isinstance(command, CEchoRQ):
            self._c_echo(context, command)
        elif isinstance(command, CStoreRQ):
            self._c_store(context, command)
        elif isinstance(command, (CEchoRSP, CStoreRSP)):
            self._invalid_pdu(
                AbortReason.UNEXPECTED_PDU_PARAMETER,
                f"DIMSE: unexpected {type(command).__name__} to an SCP",
            )
        else:
            self._unknown_command(context, command, event.has_data_set)

    def _send_message(self, context_id: int, command_bytes: bytes) -> None:
        state = self.machine.state
        if state not in _CAN_SEND_DATA:
            return
        # The command's P-DATA-TF PDUs encoded back to back, one write.
        pdus = encode_command(context_id, command_bytes, self.negotiated.peer_maximum_pdu_length)
        if state is State.STA6:
            # PS3.8 Table 9-10, (Sta6, Evt9): DT-1, send the P-DATA-TF PDUs,
            # staying in Sta6. The hot path, without the transition's objects.
            self._write(pdus)
            return
        self._handle(Event.EVT9, pdu=EncodedPDUs(pdus))

    def _c_echo(self, context, request: CEchoRQ) -> None:
        stats = self.factory.stats
        stats.echo_requests += 1
        self.log.info(
            "C-ECHO request received calling_ae={calling_ae} count={count}",
            calling_ae=self.calling_ae_title,
            count=stats.echo_requests,
        )
        status = Status.SUCCESS
        if (
            context.abstract_syntax != uids.VERIFICATION_SOP_CLASS
            or request.affected_sop_class_uid != uids.VERIFICATION_SOP_CLASS
        ):
            # PS3.7 9.3.5: C-ECHO belongs to the Verification SOP Class.
            status = Status.SOP_CLASS_NOT_SUPPORTED
        response = CEchoRSP(
            message_id_being_responded_to=request.message_id,
            status=status,
            affected_sop_class_uid=_echoed(request.affected_sop_class_uid),
        )
        self._send_message(context.context_id, response.encode())

    def _unknown_command(self, context, command: UnknownCommand, has_data_set: bool) -> None:
        # Its data set, if any, is read and dropped (no _PendingStore).
        if not command.expects_response:
            self.log.info(
                "Ignored DIMSE {name} calling_ae={calling_ae}: not a request radx answers",
                name=command.name,
                calling_ae=self.calling_ae_title,
            )
            return
        self.log.info(
            "Unsupported DIMSE {name} peer={peer} calling_ae={calling_ae}: answered 0x0211 Unrecognized Operation",
            name=command.name,
            peer=self.peer,
            calling_ae=self.calling_ae_title,
        )
        self._send_message(
            context.context_id,
            encode_response(command.command_field, command.message_id or 0, Status.UNRECOGNIZED_OPERATION),
        )

    def _undecodable_command(self, context_id: int, error: DIMSEDecodeError) -> None:
        """A command set that decoded but is not a valid command: a failure status if it can be answered."""
        field, message_id = error.command_field, error.message_id
        if field is None or message_id is None or field & RESPONSE_BIT or field == C_CANCEL_RQ:
            self._invalid_pdu(AbortReason.INVALID_PDU_PARAMETER_VALUE, f"DIMSE: {error.message}")
            return
        # PS3.4 B.2.3: C-STORE's "Cannot understand"; PS3.7 C.5: others' "Mistyped argument".
        status = Status.CANNOT_UNDERSTAND if field == C_STORE_RQ else Status.MISTYPED_ARGUMENT
        if field == C_STORE_RQ:
            self.factory.stats.store_requests += 1
            self.factory.stats.store_failures += 1
            self._failed_count += 1
            self.factory.store_answered(self.calling_ae_title, status)
        self.log.warn(
            "Invalid DIMSE command peer={peer} calling_ae={calling_ae}: {why}; answered status=0x{status:04X}",
            peer=self.peer,
            calling_ae=self.calling_ae_title,
            why=error.message,
            status=int(status),
        )
        self._send_message(context_id, encode_response(field, message_id, status, error_comment=error.message))

    def _c_store(self, context, request: CStoreRQ) -> None:
        stats = self.factory.stats
        stats.store_requests += 1
        self._busy += 1
        self.log.info(
            "C-STORE request received calling_ae={calling_ae} sop_class={sop_class} count={count}",
            calling_ae=self.calling_ae_title,
            sop_class=_shown(request.affected_sop_class_uid),
            count=stats.store_requests,
        )
        if request.affected_sop_class_uid != context.abstract_syntax:
            # PS3.7 9.1.1.1.9 / PS3.4 B.2.3: the request's SOP class must be
            # the abstract syntax of the context it came on.
            self._store = _PendingStore(
                request,
                context,
                None,
                Status.SOP_CLASS_NOT_SUPPORTED,
                f"SOP class {_shown(request.affected_sop_class_uid)} sent on presentation context"
                f" {context.context_id}, negotiated for {context.abstract_syntax}",
            )
            return
        if not is_valid_uid(request.affected_sop_instance_uid):
            # PS3.7 9.1.1.1.9: Invalid SOP Instance; nothing is written.
            self._store = _PendingStore(
                request,
                context,
                None,
                Status.INVALID_OBJECT_INSTANCE,
                f"malformed Affected SOP Instance UID {uid_for_log(request.affected_sop_instance_uid)}",
            )
            return
        config = self.config

        def writer_factory():
            return InstanceWriter(
                self.factory.tree,
                sop_class_uid=request.affected_sop_class_uid,
                sop_instance_uid=request.affected_sop_instance_uid,
                transfer_syntax_uid=context.transfer_syntax,
                calling_ae_title=self.calling_ae_title,
                called_ae_title=config.policy.ae_title,
                organize=config.organize,
                layout=config.layout,
                on_duplicate=config.on_duplicate,
                fsync=config.fsync,
                file_mode=config.file_mode,
            )

        reception = InstanceReception(
            self.factory.reactor,
            self.factory.threadpool,
            writer_factory,
            backlog=self._backlog,
            catalogue=self.factory.cataloguer(self.calling_ae_title, self.peer),
        )
        self._store = _PendingStore(request, context, reception)

    def _data_set_fragment(self, fragment: DataSetFragment) -> None:
        store = self._store
        if store is None:
            return
        if store.reception is not None:
            store.reception.write(fragment.data)
        if fragment.last:
            self._store = None
            self._data_set_complete(store)

    def _data_set_complete(self, store: _PendingStore) -> None:
        if store.reception is None:
            self._store_answered(store, store.status, store.comment)
            return
        finished = store.reception.finish()
        finished.addCallbacks(
            self._stored,
            self._store_failed,
            callbackArgs=(store,),
            errbackArgs=(store,),
        )
        window = self.negotiated.operations_window
        if self._busy > window and "window" not in self._pauses:
            # PS3.7 D.3.3.3: the peer invoked more operations than the window
            # it negotiated. Stop reading until enough are answered, so what
            # it sends ahead waits in TCP, not in radx's memory.
            if not self._window_exceeded:
                self._window_exceeded = True
                self.log.warn(
                    "Peer exceeded the asynchronous operations window peer={peer} calling_ae={calling_ae}"
                    " window={window} outstanding={outstanding}: reading paused until responses are sent",
                    peer=self.peer,
                    calling_ae=self.calling_ae_title,
                    window=window,
                    outstanding=self._busy,
                )
            self._pause_reading("window")

    def _stored(self, stored, store: _PendingStore) -> None:
        if stored is None:
            return  # abandoned: the association is gone
        for warning in stored.warnings:
            # Not "warning=": that event key means a Python warning to Twisted's observers.
            self.log.warn(
                "{detail} sop_instance={uid}", detail=warning, uid=store.request.affected_sop_instance_uid
            )
        if stored.not_catalogued is not None:
            self.factory.not_catalogued(store.request.affected_sop_instance_uid, stored.not_catalogued)
        if stored.replaced:
            self.log.info("Replaced existing file path={path}", path=stored.path)
        if stored.duplicate == "kept":
            self.log.info("Duplicate not stored, existing file kept path={path}", path=stored.path)
        elif stored.duplicate == "identical":
            self.log.info("Duplicate not stored, identical file already there path={path}", path=stored.path)
        else:
            self.log.info("Stored DICOM file path={path}", path=stored.path)
        self.factory.stats.stores_succeeded += 1
        self._stored_count += 1
        self._store_answered(store, Status.SUCCESS, None, count_failure=False)

    def _store_failed(self, failure, store: _PendingStore) -> None:
        error = failure.check(StorageError)
        if error is None:
            self.log.failure(
                "Unexpected error filing sop_instance={uid}",
                failure,
                uid=store.request.affected_sop_instance_uid,
            )
            self._store_answered(store, Status.OUT_OF_RESOURCES, "internal error")
            return
        value = failure.value
        self._store_answered(store, value.status, value.message)

    def _store_answered(self, store, status, comment, count_failure=True) -> None:
        request = store.request
        if count_failure:
            self.factory.stats.store_failures += 1
            self._failed_count += 1
            self.log.warn(
                "C-STORE failed status=0x{status:04X} calling_ae={calling_ae}"
                " sop_instance={uid}: {why}",
                status=int(status),
                calling_ae=self.calling_ae_title,
                uid=_shown(request.affected_sop_instance_uid),
                why=comment,
            )
        self.factory.store_answered(self.calling_ae_title, status, store.reception)
        response = CStoreRSP(
            message_id_being_responded_to=request.message_id,
            status=status,
            affected_sop_class_uid=_echoed(request.affected_sop_class_uid),
            affected_sop_instance_uid=_echoed(request.affected_sop_instance_uid),
            error_comment=comment[:64] if comment else None,
        )
        self._operation_done(store.context.context_id, response.encode())

    def _operation_done(self, context_id: int, response: bytes) -> None:
        self._busy -= 1
        self._send_message(context_id, response)
        if "window" in self._pauses and self._busy <= self.negotiated.operations_window:
            self._resume_reading("window")
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.config.idle_timeout)
        self._answer_release_when_idle()
        if self._shutting_down and not self.busy and self.machine.state is State.STA6:
            self._abort_for_shutdown()

    # The transport's side, as its producer ------------------------------

    def pauseProducing(self) -> None:
        """The transport's write buffer is full: read no more requests until it drains."""
        self._pause_reading("responses")

    def resumeProducing(self) -> None:
        self._resume_reading("responses")

    def stopProducing(self) -> None:
        """The connection is lost; connectionLost follows and does the rest."""

    def _stop_producing_for_transport(self) -> None:
        """Unregister before closing: Twisted would wait for a registered producer to finish."""
        if self._producing:
            self._producing = False
            self.transport.unregisterProducer()
            self._resume_reading("responses")

    def _on_backlog(self, paused: bool) -> None:
        if paused:
            self._pause_reading("backlog")
        else:
            self._resume_reading("backlog")

    def _pause_reading(self, why: str) -> None:
        if not self._pauses:
            self.transport.pauseProducing()
        self._pauses.add(why)

    def _resume_reading(self, why: str | None = None) -> None:
        """Lift one reason to pause (or, with None, every one); read again once none is left."""
        if not self._pauses:
            return
        if why is None:
            self._pauses.clear()
        else:
            self._pauses.discard(why)
        if not self._pauses:
            self.transport.resumeProducing()

    def _abandon_store(self) -> None:
        store, self._store = self._store, None
        if store is not None and store.reception is not None:
            store.reception.abort()
        # The association is gone: read (and drop) what still comes, so the connection can close.
        self._resume_reading()

    def _cancel_timers(self) -> None:
        self._stop_artim()
        for name in ("_idle", "_pdu_timer", "_close_timer"):
            timer = getattr(self, name)
            if timer is not None and timer.active():
                timer.cancel()
            setattr(self, name, None)
