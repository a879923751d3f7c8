# -*- test-case-name: tests.test_scp_protocol -*-
"""One association, acceptor side: what the acceptor adds to the shared AssociationBase.

Negotiation (``radx.ul.negotiation``), the idle and DIMSE timeouts, the
release that waits for the operations in progress, shutdown, and the
audit record. The requests themselves are answered by ``Operations``
(``radx.scp.operations``), as ``radx.dimse.service`` decides.
"""

from __future__ import annotations

from twisted.internet.interfaces import ISSLTransport
from twisted.logger import Logger

from radx.association import CLOSE_GRACE, AssociationBase
from radx.dimse.assembly import DataSetFragment, DIMSEProtocolError, MessageAssembler
from radx.dimse.commands import DIMSEDecodeError
from radx.dimse.fragmenting import encode_command
from radx.scp.audit import AuditRecord
from radx.scp.operations import Operations
from radx.ul import fsm
from radx.ul.framing import PDUReader
from radx.ul.fsm import Event, State
from radx.ul.negotiation import invalid_request_reason, negotiate
from radx.ul.pdu import AbortReason

# Bytes asked of the socket per read: Twisted reads 64 KiB at a time; a
# data set arrives in fewer, larger reads.
_READ_SIZE = 256 * 1024


class AssociationProtocol(AssociationBase):
    """Feeds bytes to the upper layer machine and carries out its effects in order.

    It is its transport's producer: what it produces is responses, one for
    each request it reads, so when the transport's write buffer passes its
    high-water mark (a peer that does not read them) it stops reading
    requests until the buffer drains.
    """

    log = Logger()
    read_size = _READ_SIZE

    def __init__(self, factory, peer: str) -> None:
        # Bound once: Logger is a descriptor that makes a new Logger at each self.log.
        self.log = type(self).log.__get__(self, type(self))
        self.factory = factory
        self.config = config = factory.config
        self.peer = peer
        super().__init__(
            fsm.UpperLayer(requestor=False, provider_check=factory.provider_check, request_check=invalid_request_reason),
            PDUReader(maximum_pdata_length=config.policy.maximum_pdu_length, pdata_values=True),
            factory.reactor,
            config.artim_timeout,
            {
                fsm.AssociateIndication: self._associate_indication,
                fsm.AssociateRejectedByProvider: self._rejected_by_provider,
                fsm.ReleaseIndication: self._release_indication,
                fsm.ReleaseConfirmation: lambda effect: None,
                fsm.AbortIndication: self._abort_indication,
                fsm.ProviderAbortIndication: self._provider_abort_indication,
            },
        )
        self.assembler = MessageAssembler()
        self.operations = Operations(self)
        self.negotiated = None
        self.calling_ae_title = ""
        self.called_ae_title = ""
        self.associated = False
        self._idle = None
        self._pdu_timer = None
        self._shutting_down = False
        self._release_requested = False
        # For the audit record at the end: who, from where, what, the outcome.
        self.audit = AuditRecord()

    # Twisted's side -------------------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        self.audit.connected_at = self.reactor.seconds()
        self._register_as_producer()
        self.factory.connection_made(self)
        self._handle(Event.EVT5)

    def dataReceived(self, data: bytes) -> None:
        self.factory.stats.bytes_received += len(data)
        super().dataReceived(data)

    def _data_arrived(self) -> None:
        if self._idle is not None:
            self._idle.reset(self.config.idle_timeout)

    def _pdus_read(self, progressed: bool) -> None:
        """Start, restart or stop the DIMSE timer on the PDU being received."""
        timer = self._pdu_timer
        if not self.reader.buffered:
            if timer is not None:
                timer.cancel()
                self._pdu_timer = None
        elif timer is None:
            self._pdu_timer = self.reactor.callLater(self.config.dimse_timeout, self._pdu_timed_out)
        elif progressed:
            timer.reset(self.config.dimse_timeout)

    def connectionLost(self, reason=None) -> None:
        if self.machine.state is State.STA2 and self.reader.buffered and not self._reader_failed:
            # AA-5 issues no indication; say what the peer left unfinished.
            self.log.info(
                "Connection closed by peer={peer} in the middle of a PDU, before any association",
                peer=self.peer,
            )
        if not self._tls_handshake_done and ISSLTransport.providedBy(self.transport):
            from radx.scp.secure import handshake_failed

            handshake_failed(self.peer, reason)
        # The bytes of an unfinished PDU go now, not whenever the collector
        # frees this protocol (its dispatch table makes it a cycle).
        self.reader.discard()
        self._handle(Event.EVT17)
        self._cancel_timers("_idle", "_pdu_timer")
        self._abandon_store()
        if self.audit.request is not None:
            self.audit.log(self.log, self.peer, self.negotiated, self.operations, self.reactor.seconds())
        self.factory.connection_lost(self)

    # Shutdown, as the factory asks ---------------------------------------

    @property
    def busy(self) -> bool:
        """An operation is in progress: a data set arriving or being filed."""
        return self.operations.busy > 0

    def shut_down(self) -> None:
        """Finish the operation in progress, if any, then abort the association."""
        self._shutting_down = True
        if self.associated and not self.busy:
            self.abort_now("the server is shutting down")

    def abort_now(self, reason: str = "the server is shutting down (drain timeout)") -> None:
        """The drain is over (its timeout, or a second stop signal): abort whatever is in progress.

        Closing a socket with unread bytes in it sends a TCP reset, which
        can overtake the A-ABORT: instead radx stops writing (FIN after the
        A-ABORT), reads and drops what still comes, and cuts the connection
        if the peer has not closed within a second.
        """
        self._local_abort(reason)
        self._reader_failed = True
        self._stop_producing_for_transport()
        self.resume_reading()
        half_close = getattr(self.transport, "loseWriteConnection", None)
        if half_close is not None:
            half_close()
        else:
            self.transport.loseConnection()
        self._close_timer = self.reactor.callLater(CLOSE_GRACE, self.transport.abortConnection)

    def close_unassociated(self) -> None:
        """Close a connection that has no association, at once: the factory needs its place."""
        self._reader_failed = True  # what it sent is no longer of interest, nor logged
        self.transport.abortConnection()

    # Timers ----------------------------------------------------------------------

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

    def _artim_expired(self) -> None:
        if self.machine.state is State.STA2:
            self.log.info(
                "No A-ASSOCIATE-RQ within {timeout}s, closing peer={peer}",
                timeout=self.artim_timeout,
                peer=self.peer,
            )
        super()._artim_expired()

    def _idle_expired(self) -> None:
        self._idle = None
        # Nothing arrives because radx stopped reading, or because the peer
        # waits for a response radx still owes it (the instance is being
        # filed): neither is the peer's idleness. Reading paused because the
        # peer does not read its responses is.
        operations = self.operations
        if bool(self._pauses - {"responses"}) or (operations.busy and operations.store is None):
            self._idle = self.reactor.callLater(self.config.idle_timeout, self._idle_expired)
            return
        self._local_abort(f"no data for {self.config.idle_timeout}s (idle timeout)")

    # The machine's indications -----------------------------------------------------

    def _rejected_by_provider(self, effect: fsm.AssociateRejectedByProvider) -> None:
        self._log_reject(effect.request, effect.reject, self.factory.reject_reason(effect.reject))

    def _log_reject(self, request, reject, why) -> None:
        self.audit.requested(request, self.factory.peer_subject(self.transport))
        self.audit.ended("rejected")
        self.factory.association_rejected(reject)
        self.log.info(
            "Association rejected peer={peer} calling_ae={calling_ae} called_ae={called_ae}"
            " result={result} source={source} reason={reason}: {why}",
            peer=self.peer,
            calling_ae=request.calling_ae_title,
            called_ae=request.called_ae_title,
            result=int(reject.result),
            source=int(reject.source),
            reason=int(reject.reason),
            why=why,
        )

    def _associate_indication(self, effect: fsm.AssociateIndication) -> None:
        request = effect.request
        negotiated = negotiate(request, self.config.policy)
        if negotiated.reject is not None:
            self._log_reject(request, negotiated.reject, negotiated.reason)
            self._handle(Event.EVT8, negotiated.reject)
            return
        self.audit.requested(request, self.factory.peer_subject(self.transport))
        self.negotiated = negotiated
        self.calling_ae_title = request.calling_ae_title
        self.called_ae_title = request.called_ae_title
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
        self._handle(Event.EVT7, negotiated.accept)
        self._idle = self.reactor.callLater(self.config.idle_timeout, self._idle_expired)

    def _local_abort(self, why: str) -> None:
        if self.machine.state in (State.STA1, State.STA2, State.STA4, State.STA13):
            return
        self._abandon_store()
        self.audit.ended("aborted")
        self._handle(Event.EVT15, fsm.AbortRequest(why))

    def _release_indication(self, effect: fsm.ReleaseIndication) -> None:
        if self.operations.store is not None:
            self.operations.abandon_unfinished_data_set()
        self.log.info("Association released peer={peer} calling_ae={calling_ae}", peer=self.peer, calling_ae=self.calling_ae_title)
        self._release_requested = True
        self.audit.ended("released")
        self._answer_release_when_idle()

    def _answer_release_when_idle(self) -> None:
        # PS3.8 Table 9-10 AR-7: responses may still go out in Sta8, so a
        # release that arrives while an instance is being filed waits for it.
        if self._release_requested and not self.busy and self.machine.state is State.STA8:
            self._release_requested = False
            self._handle(Event.EVT14)

    def _abort_indication(self, effect: fsm.AbortIndication) -> None:
        self.log.info("Association aborted by the peer peer={peer} calling_ae={calling_ae}", peer=self.peer, calling_ae=self.calling_ae_title)
        self.audit.ended("aborted-by-peer")
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
        self.audit.ended("aborted")
        self._abandon_store()

    # DIMSE: in once per P-DATA-TF, out once per response ------------------------

    def _pdata_items(self, values) -> None:
        contexts = self.negotiated.contexts
        operations = self.operations
        for context_id, message_control_header, data in values:
            if context_id not in contexts:
                self.invalid_pdu(
                    AbortReason.INVALID_PDU_PARAMETER_VALUE,
                    f"P-DATA on presentation context {context_id}, which was not accepted",
                )
                return
            try:
                events = self.assembler.feed(context_id, message_control_header, data)
            except DIMSEProtocolError as error:
                self.invalid_pdu(AbortReason.INVALID_PDU_PARAMETER_VALUE, f"DIMSE: {error}")
                return
            except DIMSEDecodeError as error:
                operations.undecodable_command(context_id, error)
                continue
            for event in events:
                if type(event) is DataSetFragment:
                    operations.data_set_fragment(event)
                else:
                    operations.command_received(event)

    def send_message(self, context_id: int, command: bytes) -> None:
        """A response's command set, as P-DATA-TF PDUs encoded back to back, in one write."""
        self.send_pdata(encode_command(context_id, command, self.negotiated.peer_maximum_pdu_length))

    def operation_done(self, context_id: int, response: bytes) -> None:
        """An operation's response is ready: send it, then what waited on it."""
        self.send_pdata(encode_command(context_id, response, self.negotiated.peer_maximum_pdu_length))
        if self.paused_for("window") and self.operations.busy <= self.negotiated.operations_window:
            self.resume_reading("window")
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.config.idle_timeout)
        self._answer_release_when_idle()
        if self._shutting_down and not self.busy and self.machine.state is State.STA6:
            self.abort_now("the server is shutting down")

    def _abandon_store(self) -> None:
        self.operations.abandon()
        # The association is gone: read (and drop) what still comes, so the connection can close.
        self.resume_reading()
