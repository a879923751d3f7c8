# -*- test-case-name: tests.test_scp_protocol -*-
"""The server: configuration, the association limit and the counters every association shares."""

from __future__ import annotations

import ipaddress
import os
import time
from dataclasses import dataclass

from twisted.internet import defer
from twisted.internet.protocol import ServerFactory
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger, globalLogPublisher

from radx.scp.accepting import AcceptFailureObserver
from radx.scp.config import ServerConfig
from radx.scp.protocol import AssociationProtocol
from radx.storage.tree import OutputTree
from radx.ul import negotiation
from radx.ul.pdu import AAssociateRJ, PresentationRejectReason, RejectResult, RejectSource


def describe_peer(addr) -> str:
    """host:port for the log; an IPv4 peer on a dual-stack socket shows as IPv4."""
    host = getattr(addr, "host", None)
    if host is None:
        return str(addr)
    if host.startswith("::ffff:") and "." in host:
        host = host[len("::ffff:") :]
    if ":" in host:
        return f"[{host}]:{addr.port}"
    return f"{host}:{addr.port}"


def peer_ip(addr):
    """The peer's IP address; an IPv4 peer on a dual-stack socket (``::ffff:a.b.c.d``) as IPv4."""
    host = getattr(addr, "host", None)
    if host is None:
        return None
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def peer_subject(transport) -> str | None:
    """The subject of the TLS peer's certificate (RFC 4514), or None: plain TCP, or no certificate."""
    get_certificate = getattr(transport, "getPeerCertificate", None)
    if get_certificate is None:
        return None
    try:
        certificate = get_certificate()
    except Exception:
        return None
    if certificate is None:
        return None
    return certificate.to_cryptography().subject.rfc4514_string()


@dataclass
class Statistics:
    echo_requests: int = 0
    store_requests: int = 0
    stores_succeeded: int = 0
    store_failures: int = 0
    associations: int = 0
    # Bytes read from DICOM connections, PDU headers included.
    bytes_received: int = 0
    # Instances stored but not recorded in the catalogue; None without one.
    catalogue_failures: int | None = None
    # Hook runs that exited 0, and those that did not (a status, a signal,
    # killed past --exec-timeout, not started); None without hooks.
    hooks_succeeded: int | None = None
    hook_failures: int | None = None


class SCPFactory(ServerFactory):
    """Builds one AssociationProtocol per TCP connection."""

    log = Logger()
    noisy = False
    peer_subject = staticmethod(peer_subject)

    def __init__(self, config: ServerConfig, reactor, threadpool) -> None:
        self.config = config
        self.reactor = reactor
        self.threadpool = threadpool
        self.stats = Statistics()
        # Written by the storage threads only (radx.catalogue.received).
        self.catalogue = None
        if config.catalogue is not None:
            # Loaded only with --catalogue: sqlite3 and the catalogue's modules are no start-up cost otherwise.
            from radx.catalogue.received import ReceivedCatalogue

            self.catalogue = ReceivedCatalogue(
                config.catalogue,
                node=config.catalogue_node,
                on_down=lambda why, seconds: reactor.callFromThread(self.catalogue_down, why, seconds),
                on_back=lambda missed: reactor.callFromThread(self.catalogue_back, missed),
            )
            self.stats.catalogue_failures = 0
        # The hooks and events (radx.scp.hooks): recorded by the storage
        # threads beside the catalogue, run by the reactor.
        self.events = None
        if config.hooks is not None:
            from radx.scp.hooks import ServerEvents

            self.events = ServerEvents(
                config.hooks,
                config.output_dir,
                # A study's folder is its files' grandparent only in --organize's layout.
                organize=config.filing.layout.fixed is True,
                fsync=config.fsync,
                dir_mode=config.dir_mode,
                reactor=reactor,
                threadpool=threadpool,
                stats=self.stats,
            )
            if config.hooks.commands:
                self.stats.hooks_succeeded = 0
                self.stats.hook_failures = 0
        # radx.metrics.ServerMetrics with --http; None: nothing to update.
        self.metrics = None
        # Whether the catalogue is left alone after a failed connection, as
        # the reactor last heard; the catch-up running, and whether another
        # is due once it ends.
        self.catalogue_is_down = False
        self.catching_up: defer.Deferred | None = None
        self._catch_up_again: int | None = None
        # The output folder, opened at the first use and kept open.
        self.tree = OutputTree(config.output_dir, config.dir_mode)
        # Every open connection, those of them that are associations, and
        # those not (yet) associated, oldest first.
        self.connections: set[AssociationProtocol] = set()
        self.active: set[AssociationProtocol] = set()
        self.pending: dict[AssociationProtocol, None] = {}
        self.accepting = True
        # Called, at most once a second, after a connection that never
        # associated has closed: gives what it freed back to the system
        # (radx.app.heap.release_free_memory), so a flood of them does not
        # leave the server larger. None: nothing to do.
        self.release_memory = None
        self._release_call = None
        # The drain of shut_down while it waits, and whether stop_now cut it short.
        self._drain: defer.Deferred | None = None
        self._stopping_now = False
        # (condition, Deferred) pairs fired when a connection ends and the condition holds.
        self._waiters: list = []

    def startFactory(self) -> None:
        # Connections the port could not take (no descriptor left) get a radx line.
        self._accept_failures = AcceptFailureObserver(self.reactor)
        globalLogPublisher.addObserver(self._accept_failures)

    def stopFactory(self) -> None:
        globalLogPublisher.removeObserver(self._accept_failures)

    def buildProtocol(self, addr) -> AssociationProtocol | None:
        if not self.admits(addr):
            return None
        return AssociationProtocol(self, describe_peer(addr))

    def admits(self, addr) -> bool:
        """Whether the peer's address is in --allow-ip; None from buildProtocol closes at once."""
        networks = self.config.allowed_networks
        if networks is None:
            return True
        address = peer_ip(addr)
        if address is not None and any(address in network for network in networks):
            return True
        self.log.info("Refused connection from {peer}: not in --allow-ip", peer=describe_peer(addr))
        if self.metrics is not None:
            self.metrics.connection_refused("allow_ip")
        return False

    def provider_check(self, request) -> AAssociateRJ | None:
        """AE-6: may the provider take this association at all?"""
        reject = negotiation.provider_reject(request)
        if reject is not None:
            return reject
        # PS3.8 9.3.4: transient, service-provider (presentation related):
        # temporary-congestion while shutting down, local-limit-exceeded
        # at --max-conns.
        if not self.accepting:
            reason = PresentationRejectReason.TEMPORARY_CONGESTION
        elif not self.admit_association():
            reason = PresentationRejectReason.LOCAL_LIMIT_EXCEEDED
        else:
            return None
        return AAssociateRJ(
            RejectResult.REJECTED_TRANSIENT,
            RejectSource.SERVICE_PROVIDER_PRESENTATION,
            reason,
        )

    def admit_association(self) -> bool:
        """Whether one more association fits under --max-conns."""
        return len(self.active) < self.config.max_conns

    def associations_open(self) -> int:
        """The associations --max-conns counts now."""
        return len(self.active)

    def reject_reason(self, reject: AAssociateRJ) -> str:
        if reject.source == RejectSource.SERVICE_PROVIDER_ACSE:
            return "protocol version not supported"
        if not self.accepting:
            return "the server is shutting down"
        count = self.associations_open()
        return (
            f"local limit exceeded: {count} association{'' if count == 1 else 's'} already open"
            f" (--max-conns {self.config.max_conns})"
        )

    def connection_made(self, protocol: AssociationProtocol) -> None:
        """Count a new connection as pending; past --max-pending, close the oldest pending one.

        A peer that means to associate sends its A-ASSOCIATE-RQ at once, so
        the oldest connection without an association is the one least
        likely to be a real peer: closing it, rather than refusing the
        newest, means idle or trickling sockets cannot lock a real peer out.
        """
        self.connections.add(protocol)
        self.pending[protocol] = None
        if len(self.pending) > self.config.max_pending:
            oldest = next(iter(self.pending))
            del self.pending[oldest]
            self.log.info(
                "Closing peer={peer}: the oldest of {count} connections not associated (--max-pending {limit})",
                peer=oldest.peer,
                count=self.config.max_pending + 1,
                limit=self.config.max_pending,
            )
            oldest.close_unassociated()

    def connection_lost(self, protocol: AssociationProtocol) -> None:
        self.connections.discard(protocol)
        self.active.discard(protocol)
        self.pending.pop(protocol, None)
        if not protocol.associated:
            self._release_memory_soon()
        waiting, self._waiters = self._waiters, []
        for condition, waiter in waiting:
            if condition():
                waiter.callback(None)
            else:
                self._waiters.append((condition, waiter))

    def _release_memory_soon(self) -> None:
        if self.release_memory is None or self._release_call is not None:
            return

        def release():
            self._release_call = None
            self.release_memory()

        self._release_call = self.reactor.callLater(1.0, release)

    def _when(self, condition) -> defer.Deferred:
        if condition():
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._waiters.append((condition, waiter))
        return waiter

    @defer.inlineCallbacks
    def shut_down(self):
        """Refuse new associations, let operations in progress finish, then close everything.

        Bounded by ``drain_timeout``: associations still open then are
        aborted, and a data set still arriving is discarded, never
        half-written. Connections that never associated are closed last.
        """
        self.accepting = False
        busy = [p for p in self.active if p.busy]
        if busy:
            self.log.info(
                "Waiting up to {timeout}s for {count} association(s) to finish their operations",
                timeout=self.config.drain_timeout,
                count=len(busy),
            )
        for protocol in list(self.active):
            protocol.shut_down()
        drained = self._drain = self._when(lambda: not self.active)
        timer = self.reactor.callLater(self.config.drain_timeout, drained.cancel)
        if self._stopping_now:
            drained.cancel()
        try:
            yield drained
        except defer.CancelledError:
            if self._stopping_now:
                self.log.warn("Stopping now: aborting {count} association(s) still open", count=len(self.active))
                reason = "the server is stopping now"
            else:
                self.log.warn(
                    "Drain timeout: aborting {count} association(s) still open",
                    count=len(self.active),
                )
                reason = "the server is shutting down (drain timeout)"
            for protocol in list(self.active):
                protocol.abort_now(reason)
        finally:
            self._drain = None
            if timer.active():
                timer.cancel()
        # Connections that never associated have nothing to finish; the
        # aborted associations close themselves once their A-ABORT is out.
        for protocol in list(self.connections):
            if not protocol.associated:
                protocol.transport.abortConnection()
        yield self._when(lambda: not self.connections)

    def stop_now(self) -> None:
        """Cut the drain short: abort the associations still open, as the drain timeout would."""
        self._stopping_now = True
        if self._drain is not None:
            self._drain.cancel()

    def cataloguer(self, calling_ae_title: str | None, called_ae_title: str | None, peer: str):
        """What records an association's instances from the storage thread (see InstanceReception), or None.

        The catalogue's row, then the events journal's record (radx.scp.hooks):
        both before the Success.
        """
        catalogue = self.catalogue
        events = self.events
        if events is not None:
            # The title the peer called: radx's own, or with
            # --accept-any-called-aet any (DCMTK's #c is the association's).
            in_catalogue = self._catalogue_recorder(calling_ae_title, peer)

            def record_both(writer, stored) -> str | None:
                not_catalogued = in_catalogue(writer, stored) if in_catalogue is not None else None
                events.record(writer, stored, calling_ae_title, called_ae_title, peer)
                return not_catalogued

            return record_both
        if catalogue is None:
            return None
        return self._catalogue_recorder(calling_ae_title, peer)

    def _catalogue_recorder(self, calling_ae_title: str | None, peer: str):
        catalogue = self.catalogue
        if catalogue is None:
            return None

        def record(writer, stored) -> str | None:
            return catalogue.record(
                stored.path,
                writer.walked_values(),
                writer.transfer_syntax_uid,
                writer.sop_class_uid,
                writer.sop_instance_uid,
                calling_ae_title,
                peer,
                stat=writer.stat,
            )

        return record

    @property
    def catalogue_tags(self) -> frozenset:
        """The tags whose values a storage writer keeps for the catalogue's row: none without one."""
        if self.catalogue is None:
            return frozenset()
        from radx.catalogue.instance import ROW_TAGS

        return ROW_TAGS

    def not_catalogued(self, sop_instance_uid: str, why: str) -> None:
        """
        An instance stored (and answered Success) that the catalogue has no
        row of: counted, one line, no patient data; while the catalogue is
        down, counted only (its one line said so, and the catch-up once it
        is back records them).
        """
        self.stats.catalogue_failures += 1
        if self.catalogue_is_down:
            return
        self.log.warn(
            "Not recorded in the catalogue sop_instance={uid}: {why}; the file is stored, the next start indexes it",
            uid=sop_instance_uid,
            why=why,
        )

    def association_rejected(self, reject: AAssociateRJ) -> None:
        if self.metrics is not None:
            self.metrics.association_rejected(reject.source, reject.reason)

    def store_answered(self, calling_ae_title: str, status: int, reception=None) -> None:
        """A C-STORE response goes out; C{reception}, if its data set was filed, knows the time that took."""
        metrics = self.metrics
        if metrics is not None:
            seconds = reception.storage_seconds if reception is not None and status == 0 else None
            metrics.c_store_answered(calling_ae_title, int(status), seconds)

    def catalogue_down(self, why: str, seconds: float) -> None:
        """The catalogue could not be connected to: one line, until it is back."""
        from radx.catalogue.received import BACK_OFF_MOST_S

        self.catalogue_is_down = True
        self.log.warn(
            "Catalogue down: {why}; instances are stored and answered without their rows, the catalogue is tried"
            " again after {seconds:g} s (then at most every {most:g} s), and what it missed is caught up once it is back",
            why=why,
            seconds=seconds,
            most=BACK_OFF_MOST_S,
        )

    def catalogue_back(self, missed: int) -> None:
        """The catalogue is back: one line, and the catch-up of the instances it missed."""
        self.catalogue_is_down = False
        self.log.info("Catalogue back: {missed} instances stored meanwhile not recorded; catching up", missed=missed)
        self.catch_up(time.time_ns())

    def catch_up(self, modified_before: int) -> defer.Deferred:
        """
        Index, on the storage threadpool, the files in the output folder
        that have no row (see ReceivedCatalogue.catch_up), not those
        modified at or after ``modified_before`` (ns), which the storage
        threads record. One at a time: asked while one runs, another
        follows it, up to the latest time asked. The reactor goes on
        meanwhile. Fires when the catch-up asked ends, never with an error.
        """
        if self.catching_up is not None:
            self._catch_up_again = max(self._catch_up_again or 0, modified_before)
            return self.catching_up
        folder = os.path.abspath(self.config.output_dir)
        d = deferToThreadPool(self.reactor, self.threadpool, self.catalogue.catch_up, folder, modified_before)

        def done(result):
            if result is None:
                return
            counts = {name: getattr(result, name) for name in ("folder", "added", "changed", "removed", "unchanged")}
            self.log.info(
                "Catalogue brought up to date with {folder}: {added} new, {changed} changed,"
                " {removed} removed, {unchanged} unchanged, {failures} not DICOM or unreadable, in {seconds:.2f} s",
                failures=len(result.failures),
                seconds=result.seconds,
                **counts,
            )

        def failed(failure):
            from radx.catalogue.database import CatalogueError

            why = failure.value.message if failure.check(CatalogueError) else str(failure.value)
            self.log.warn(
                "Catalogue not brought up to date with {folder}: {why}; tried again once it is back, or at the next start",
                folder=folder,
                why=why,
            )

        def ended(_):
            self.catching_up = None
            again, self._catch_up_again = self._catch_up_again, None
            if again is not None:
                return self.catch_up(again)

        d.addCallbacks(done, failed)
        d.addCallback(ended)
        self.catching_up = d
        return d

    def association_started(self, protocol: AssociationProtocol) -> None:
        self.pending.pop(protocol, None)
        self.active.add(protocol)
        self.stats.associations += 1

