# -*- test-case-name: tests.test_scp_protocol,tests.test_scp_store -*-
"""The DIMSE operations of one association, acceptor side: requests answered as radx.dimse.service says.

``Operations`` takes the commands and data-set fragments the acceptor's
protocol reassembles, hands each C-STORE's data set to its own
``InstanceReception`` (the threadpool), and gives each response back to
the protocol to send (``operation_done``). It counts what the audit
record reports, and pauses reading while the peer has more operations
outstanding than it negotiated.
"""

from __future__ import annotations

from radx.dimse import service
from radx.dimse.assembly import CommandReceived, DataSetFragment
from radx.dimse.commands import C_STORE_RQ, CEchoRQ, CEchoRSP, CStoreRQ, CStoreRSP, DIMSEDecodeError
from radx.dimse.status import Status
from radx.scp.storing import Backlog, InstanceReception
from radx.storage.store import InstanceWriter
from radx.ul.pdu import AbortReason


class PendingStore:
    """A C-STORE-RQ whose data set is arriving."""

    __slots__ = ("request", "context", "reception", "refusal")

    def __init__(self, request, context, reception, refusal: service.Refusal | None = None):
        self.request = request
        self.context = context
        # None when the request is refused before anything is written; the
        # data set is then read and dropped, and ``refusal`` answered.
        self.reception = reception
        self.refusal = refusal


class Operations:
    """The requests of one association in progress, and what became of them."""

    def __init__(self, protocol) -> None:
        self.protocol = protocol
        self.factory = protocol.factory
        self.log = protocol.log
        self.store: PendingStore | None = None  # the C-STORE whose data set is arriving
        self.busy = 0  # operations whose response is not yet sent
        self.stored_count = 0
        self.failed_count = 0
        self.used_contexts: dict[int, None] = {}  # IDs that carried a command, in order
        # Bytes received and not yet written, over all its instances.
        self.backlog = Backlog(self._on_backlog)
        self._window_exceeded = False  # said once per association

    # In: commands and data-set fragments ------------------------------------

    def command_received(self, event: CommandReceived) -> None:
        protocol = self.protocol
        command = event.command
        context = protocol.negotiated.contexts[event.context_id]
        self.used_contexts[event.context_id] = None
        if isinstance(command, CEchoRQ):
            stats = self.factory.stats
            stats.echo_requests += 1
            self.log.info(
                "C-ECHO request received calling_ae={calling_ae} count={count}",
                calling_ae=protocol.calling_ae_title,
                count=stats.echo_requests,
            )
            protocol.send_message(context.context_id, service.c_echo_rsp(context, command).encode())
        elif isinstance(command, CStoreRQ):
            self.c_store(context, command)
        elif isinstance(command, (CEchoRSP, CStoreRSP)):
            protocol.invalid_pdu(
                AbortReason.UNEXPECTED_PDU_PARAMETER,
                f"DIMSE: unexpected {type(command).__name__} to an SCP",
            )
        else:
            # Its data set, if any, is read and dropped (no PendingStore).
            response = service.unknown_command_rsp(command)
            if response is None:
                self.log.info(
                    "Ignored DIMSE {name} calling_ae={calling_ae}: not a request radx answers",
                    name=command.name,
                    calling_ae=protocol.calling_ae_title,
                )
                return
            self.log.info(
                "Unsupported DIMSE {name} peer={peer} calling_ae={calling_ae}: answered 0x0211 Unrecognized Operation",
                name=command.name,
                peer=protocol.peer,
                calling_ae=protocol.calling_ae_title,
            )
            protocol.send_message(context.context_id, response)

    def undecodable_command(self, context_id: int, error: DIMSEDecodeError) -> None:
        """A command set that decoded but is not a valid command: a failure status if it can be answered."""
        protocol = self.protocol
        answer = service.undecodable_command_rsp(error)
        if answer is None:
            protocol.invalid_pdu(AbortReason.INVALID_PDU_PARAMETER_VALUE, f"DIMSE: {error.message}")
            return
        status, response = answer
        if error.command_field == C_STORE_RQ:
            self.factory.stats.store_requests += 1
            self.factory.stats.store_failures += 1
            self.failed_count += 1
            self.factory.store_answered(protocol.calling_ae_title, status)
        self.log.warn(
            "Invalid DIMSE command peer={peer} calling_ae={calling_ae}: {why}; answered status=0x{status:04X}",
            peer=protocol.peer,
            calling_ae=protocol.calling_ae_title,
            why=error.message,
            status=int(status),
        )
        protocol.send_message(context_id, response)

    def c_store(self, context, request: CStoreRQ) -> None:
        protocol = self.protocol
        stats = self.factory.stats
        stats.store_requests += 1
        self.busy += 1
        self.log.info(
            "C-STORE request received calling_ae={calling_ae} sop_class={sop_class} count={count}",
            calling_ae=protocol.calling_ae_title,
            sop_class=service.shown(request.affected_sop_class_uid),
            count=stats.store_requests,
        )
        refusal = service.c_store_refusal(context, request)
        if refusal is not None:
            self.store = PendingStore(request, context, None, refusal)
            return
        config = protocol.config
        factory = self.factory
        catalogue_tags = factory.catalogue_tags

        def writer_factory():
            return InstanceWriter(
                factory.tree,
                sop_class_uid=request.affected_sop_class_uid,
                sop_instance_uid=request.affected_sop_instance_uid,
                transfer_syntax_uid=context.transfer_syntax,
                calling_ae_title=protocol.calling_ae_title,
                called_ae_title=config.policy.ae_title,
                organize=config.filing.organize,
                layout=config.filing.layout,
                on_duplicate=config.filing.on_duplicate,
                fsync=config.fsync,
                file_mode=config.file_mode,
                values=catalogue_tags,
                keep_stat=bool(catalogue_tags),
            )

        reception = InstanceReception(
            factory.reactor,
            factory.threadpool,
            writer_factory,
            backlog=self.backlog,
            catalogue=factory.cataloguer(protocol.calling_ae_title, protocol.called_ae_title, protocol.peer),
        )
        self.store = PendingStore(request, context, reception)

    def data_set_fragment(self, fragment: DataSetFragment) -> None:
        store = self.store
        if store is None:
            return
        if store.reception is not None:
            store.reception.write(fragment.data)
        if fragment.last:
            self.store = None
            self._data_set_complete(store)

    def _data_set_complete(self, store: PendingStore) -> None:
        if store.reception is None:
            self._answer(store, store.refusal.status, store.refusal.comment)
            return
        finished = store.reception.finish()
        finished.addCallbacks(self._stored, self._store_failed, callbackArgs=(store,), errbackArgs=(store,))
        protocol = self.protocol
        window = protocol.negotiated.operations_window
        if self.busy > window and not protocol.paused_for("window"):
            # PS3.7 D.3.3.3: the peer invoked more operations than the window
            # it negotiated. Stop reading until enough are answered, so what
            # it sends ahead waits in TCP, not in radx's memory.
            if not self._window_exceeded:
                self._window_exceeded = True
                self.log.warn(
                    "Peer exceeded the asynchronous operations window peer={peer} calling_ae={calling_ae}"
                    " window={window} outstanding={outstanding}: reading paused until responses are sent",
                    peer=protocol.peer,
                    calling_ae=protocol.calling_ae_title,
                    window=window,
                    outstanding=self.busy,
                )
            protocol.pause_reading("window")

    # Out: what storage made of it, answered ----------------------------------

    def _stored(self, stored, store: PendingStore) -> None:
        if stored is None:
            return  # abandoned: the association is gone
        for warning in stored.warnings:
            # Not "warning=": that event key means a Python warning to Twisted's observers.
            self.log.warn("{detail} sop_instance={uid}", detail=warning, uid=store.request.affected_sop_instance_uid)
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
        self.stored_count += 1
        self._answer(store, Status.SUCCESS, None, count_failure=False)
        if self.factory.events is not None:
            # The Success is sent: its store hook may start (radx.scp.hooks).
            self.factory.events.instance_answered(stored.path)

    def _store_failed(self, failure, store: PendingStore) -> None:
        if service.storage_failure_status(failure.value) is None:
            self.log.failure(
                "Unexpected error filing sop_instance={uid}", failure, uid=store.request.affected_sop_instance_uid
            )
        refusal = service.c_store_failure(failure.value)
        self._answer(store, refusal.status, refusal.comment)

    def _answer(self, store: PendingStore, status, comment, count_failure=True) -> None:
        request = store.request
        if count_failure:
            self.factory.stats.store_failures += 1
            self.failed_count += 1
            self.log.warn(
                "C-STORE failed status=0x{status:04X} calling_ae={calling_ae} sop_instance={uid}: {why}",
                status=int(status),
                calling_ae=self.protocol.calling_ae_title,
                uid=service.shown(request.affected_sop_instance_uid),
                why=comment,
            )
        self.factory.store_answered(self.protocol.calling_ae_title, status, store.reception)
        self.busy -= 1
        self.protocol.operation_done(store.context.context_id, service.c_store_rsp(request, status, comment).encode())

    # The association ends -------------------------------------------------------

    def abandon(self) -> None:
        """The association is gone: the data set arriving, if any, is dropped."""
        store, self.store = self.store, None
        if store is not None and store.reception is not None:
            store.reception.abort()

    def abandon_unfinished_data_set(self) -> None:
        """An A-RELEASE-RQ came before the data set's last fragment: drop the instance, answer the release.

        PS3.8 7.2.2: after an A-RELEASE request the requestor issues no
        primitive but A-ABORT, so the rest of the data set never comes; and
        the acceptor shall always answer the release affirmatively. Waiting
        would only hold the association until the idle timeout.
        """
        store = self.store
        self.abandon()
        self.busy -= 1
        self.factory.stats.store_failures += 1
        self.failed_count += 1
        self.log.warn(
            "A-RELEASE-RQ in the middle of a data set peer={peer} calling_ae={calling_ae} sop_instance={uid}:"
            " the instance is abandoned, nothing stored, and the release answered",
            peer=self.protocol.peer,
            calling_ae=self.protocol.calling_ae_title,
            uid=service.shown(store.request.affected_sop_instance_uid),
        )

    def _on_backlog(self, paused: bool) -> None:
        if paused:
            self.protocol.pause_reading("backlog")
        else:
            self.protocol.resume_reading("backlog")
