# -*- test-case-name: tests.test_scp_protocol,tests.test_scu_association,tests.test_tcp -*-
"""One association over a Twisted transport: what the acceptor and requestor protocols share.

The pure ``UpperLayer`` decides; this class carries out its effects in
order (PDUs to send, ARTIM, closing the transport) and feeds it what the
transport brings: bytes through the ``PDUReader``, decoding errors as
Evt19, P-DATA-TF PDUs straight to the role's DIMSE where the machine says
the table allows it (``pdata_received``, ``can_send_pdata``). Each role
adds only what differs: the acceptor answers requests
(``radx.scp.protocol``), the requestor opens the association and sends
them (``radx.scu.association``).
"""

from __future__ import annotations

from twisted.internet.interfaces import IHandshakeListener, IPushProducer
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from radx.tcp import write_now
from radx.ul import fsm
from radx.ul.fsm import Event, State
from radx.ul.pdu import PDUDecodeError, ReceivedPDataTF, pdv_values

__all__ = ["AssociationBase", "CLOSE_GRACE"]

# Seconds a peer has to read radx's last PDU before the connection is cut.
CLOSE_GRACE = 1.0


@implementer(IPushProducer, IHandshakeListener)
class AssociationBase(Protocol):
    """
    Feeds bytes to ``machine`` and carries out its effects in order.

    A subclass gives ``dispatch`` (its own effects: the indications and
    confirmations for its user), ``_pdata_items`` (the items of a
    P-DATA-TF, for its DIMSE, as (presentation context ID, message control
    header, fragment) tuples), and a ``reader`` that gives P-DATA-TF PDUs
    as ``ReceivedPDataTF`` (``PDUReader(pdata_values=True)``). It may be
    its transport's push producer (``_register_as_producer``): reading is
    then paused for as long as any reason to pause it holds.
    """

    # Bytes asked of the socket per read; None leaves Twisted's 64 KiB.
    read_size: int | None = None
    # States in which nothing more the peer sends is of interest.
    done_states: tuple[State, ...] = (State.STA1,)

    def __init__(self, machine: fsm.UpperLayer, reader, reactor, artim_timeout: float, dispatch: dict) -> None:
        self.machine = machine
        self.reader = reader
        self.reactor = reactor
        self.artim_timeout = artim_timeout
        self._artim = None
        self._close_timer = None
        # After the first decoding error the reader is dead: later bytes are dropped.
        self._reader_failed = False
        self._producing = False  # registered as the transport's producer
        # Why reading is paused, if it is (a role's reasons, and "responses":
        # the transport's write buffer is full, the peer does not read).
        self._pauses: set[str] = set()
        self._tls_handshake_done = False
        self._dispatch = {
            fsm.SendPDU: self._send_pdu,
            fsm.StartARTIM: self._start_artim,
            fsm.StopARTIM: self._stop_artim,
            fsm.CloseTransport: self._close_transport,
            fsm.DataIndication: lambda effect: self._pdata_items(pdv_values(effect.pdata)),
            **dispatch,
        }

    # Twisted's side -------------------------------------------------------

    def connectionMade(self) -> None:
        # DIMSE is request/response: Nagle's algorithm would hold each PDU back.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        if self.read_size is not None and hasattr(self.transport, "bufferSize"):
            self.transport.bufferSize = self.read_size

    def dataReceived(self, data: bytes) -> None:
        if self._reader_failed or self.machine.state in self.done_states:
            return
        self._data_arrived()
        try:
            pdus = self.reader.feed(data)
        except PDUDecodeError as error:
            self._reader_failed = True
            # PS3.8 9.2: the valid PDUs before the bad one come first.
            if self._receive(error.pdus_before):
                self.invalid_pdu(error.reason, error.message)
            return
        self._pdus_read(bool(pdus))
        self._receive(pdus)

    def _receive(self, pdus) -> bool:
        """Feed PDUs to the machine in order; False once nothing more is of interest."""
        machine = self.machine
        done = self.done_states
        for pdu in pdus:
            if type(pdu) is ReceivedPDataTF:
                if machine.pdata_received():
                    # PS3.8 Table 9-10, (Sta6, Evt10): DT-2, a P-DATA indication,
                    # staying in Sta6. The hot path, without the transition's objects.
                    self._pdata_items(pdu.values)
                else:
                    self._run(machine.receive(pdu.pdu()))
            else:
                self._run(machine.receive(pdu))
            if machine.state in done:
                return False
        return True

    def handshakeCompleted(self) -> None:
        # IHandshakeListener: a TLS transport says its handshake is done.
        self._tls_handshake_done = True

    def _data_arrived(self) -> None:
        """Bytes came from the peer (before they are decoded)."""

    def _pdus_read(self, progressed: bool) -> None:
        """The reader has been fed; ``progressed``: it completed at least one PDU."""

    def _pdata_items(self, items) -> None:
        raise NotImplementedError

    # The machine's effects ---------------------------------------------------

    def _handle(self, event: Event, payload=None) -> None:
        self._run(self.machine.handle(event, payload))

    def _run(self, transition: fsm.Transition) -> None:
        for effect in transition.effects:
            self._dispatch[type(effect)](effect)

    def _send_pdu(self, effect) -> None:
        write_now(self.transport, effect.pdu.encode())

    def send_pdata(self, pdus: bytes) -> bool:
        """Evt9 for P-DATA-TF PDUs encoded back to back, in one write; False when the machine allows none now."""
        if not self.machine.can_send_pdata():
            return False
        # PS3.8 Table 9-10, Evt9: DT-1 in Sta6 (AR-7 in Sta8) sends the
        # P-DATA-TF PDUs and stays. The hot path, without the transition's objects.
        write_now(self.transport, pdus)
        return True

    def invalid_pdu(self, reason, message: str) -> None:
        """Evt19: the peer sent an invalid PDU (or DIMSE message); A-ABORT with ``reason`` (PS3.8 9.3.8)."""
        self._handle(Event.EVT19, fsm.InvalidPDU(reason, f"invalid PDU: {message}"))

    def _start_artim(self, effect=None) -> None:
        self._stop_artim()
        self._artim = self.reactor.callLater(self.artim_timeout, self._artim_expired)

    def _stop_artim(self, effect=None) -> None:
        if self._artim is not None:
            if self._artim.active():
                self._artim.cancel()
            self._artim = None

    def _artim_expired(self) -> None:
        self._artim = None
        self._handle(Event.EVT18)

    def _close_transport(self, effect=None) -> None:
        # Twisted does not close a connection whose producer is registered;
        # and one whose peer reads nothing never flushes: cut it after a grace.
        self._stop_producing_for_transport()
        self.transport.loseConnection()
        if self._close_timer is None:
            self._close_timer = self.reactor.callLater(CLOSE_GRACE, self.transport.abortConnection)

    def _cancel_timers(self, *names: str) -> None:
        """ARTIM, the close grace, and the role's timers named, cancelled."""
        self._stop_artim()
        for name in ("_close_timer", *names):
            timer = getattr(self, name)
            if timer is not None and timer.active():
                timer.cancel()
            setattr(self, name, None)

    # The transport's side, as its producer ------------------------------

    def _register_as_producer(self) -> None:
        self.transport.registerProducer(self, True)
        self._producing = True

    def pauseProducing(self) -> None:
        """The transport's write buffer is full: read no more requests until it drains."""
        self.pause_reading("responses")

    def resumeProducing(self) -> None:
        self.resume_reading("responses")

    def stopProducing(self) -> None:
        """The connection is lost; connectionLost follows and does the rest."""

    def _stop_producing_for_transport(self) -> None:
        """Unregister before closing: Twisted would wait for a registered producer to finish."""
        if self._producing:
            self._producing = False
            self.transport.unregisterProducer()
            self.resume_reading("responses")

    def paused_for(self, why: str) -> bool:
        return why in self._pauses

    def pause_reading(self, why: str) -> None:
        """Read nothing more from the peer while ``why`` holds."""
        if not self._pauses:
            self.transport.pauseProducing()
        self._pauses.add(why)

    def resume_reading(self, why: str | None = None) -> None:
        """Lift one reason to pause (or, with None, every one); read again once none is left."""
        if not self._pauses:
            return
        if why is None:
            self._pauses.clear()
        else:
            self._pauses.discard(why)
        if not self._pauses:
            self.transport.resumeProducing()
