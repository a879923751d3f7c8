# -*- test-case-name: tests.test_scp_protocol -*-
"""The server: configuration, the association limit and the counters every association shares."""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger

from radx.scp.protocol import AssociationProtocol
from radx.ul import negotiation
from radx.ul.negotiation import AcceptorPolicy
from radx.ul.pdu import AAssociateRJ


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


@dataclass(frozen=True)
class ServerConfig:
    """Everything an association needs to know about the server it belongs to."""

    policy: AcceptorPolicy = field(default_factory=AcceptorPolicy)
    output_dir: str = "./dicom-received"
    organize: bool = True
    # Durable writes (fsync of file and folder before Success); only tests
    # of the protocol turn it off.
    fsync: bool = True
    max_conns: int = 10
    # PS3.8 9.1.5: ARTIM bounds the wait for an A-ASSOCIATE-RQ and for the
    # peer to close after a release or abort.
    artim_timeout: float = 30.0
    # An established association on which nothing arrives is aborted.
    idle_timeout: float = 120.0


@dataclass
class Statistics:
    echo_requests: int = 0
    store_requests: int = 0
    stores_succeeded: int = 0
    store_failures: int = 0
    associations: int = 0


class SCPFactory(ServerFactory):
    """Builds one AssociationProtocol per TCP connection."""

    log = Logger()
    noisy = False

    def __init__(self, config: ServerConfig, reactor, threadpool) -> None:
        self.config = config
        self.reactor = reactor
        self.threadpool = threadpool
        self.stats = Statistics()
        # Every open connection, and those of them that are associations.
        self.connections: set[AssociationProtocol] = set()
        self.active: set[AssociationProtocol] = set()
        self.accepting = True

    def buildProtocol(self, addr) -> AssociationProtocol:
        return AssociationProtocol(self, describe_peer(addr))

    def provider_check(self, request) -> AAssociateRJ | None:
        """AE-6: may the provider take this association at all?"""
        reject = negotiation.provider_reject(request)
        if reject is not None:
            return reject
        if not self.accepting or len(self.active) >= self.config.max_conns:
            # PS3.8 9.3.4: transient, service-provider (presentation),
            # local-limit-exceeded.
            return AAssociateRJ(
                negotiation.RESULT_REJECTED_TRANSIENT,
                negotiation.SOURCE_SERVICE_PROVIDER_PRESENTATION,
                negotiation.REASON_PRESENTATION_LOCAL_LIMIT_EXCEEDED,
            )
        return None

    def reject_reason(self, reject: AAssociateRJ) -> str:
        if reject.source == negotiation.SOURCE_SERVICE_PROVIDER_ACSE:
            return "protocol version not supported"
        if not self.accepting:
            return "server is shutting down"
        return f"local limit exceeded: {len(self.active)} associations already open (--max-conns {self.config.max_conns})"

    def association_started(self, protocol: AssociationProtocol) -> None:
        self.active.add(protocol)
        self.stats.associations += 1

    def association_ended(self, protocol: AssociationProtocol) -> None:
        self.active.discard(protocol)
