"""Helpers for testing code that uses radx, and radx itself: no sockets, no real time, no threads.

``ScpHarness`` connects an SCP association to an in-memory transport, on
a clock that only moves when told and a threadpool that runs work only
when told::

    harness = ScpHarness(ServerConfig(output_dir=path))
    harness.send(associate_rq_bytes("RADX-SCP", contexts=[(1, VERIFICATION)]))
    harness.received_pdus()  # [AAssociateAC(...)]

``MemoryEndpoint`` does the same for the sending side (``radx.scu``): each
connection it makes is a StringTransport, whose far end the test plays.
"""

from __future__ import annotations

import os
import shutil

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from radx import uids
from radx.dimse.commands import CEchoRQ, CStoreRQ
from radx.dimse.fragmenting import message_pdus
from radx.ul.framing import PDUReader
from radx.ul.negotiation import DEFAULT_AE_TITLE
from radx.ul.pdu import (
    DEFAULT_MAXIMUM_LENGTH,
    AAssociateRQ,
    ImplementationClassUIDSubItem,
    MaximumLengthSubItem,
    PresentationContextItemRQ,
    UserInformationItem,
)


class ThreadlessReactor(MemoryReactorClock):
    """A memory reactor with a clock whose callFromThread runs at once (we have one thread)."""

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class SteppedThreadPool:
    """Runs each piece of 'thread' work only when the test says so, in order."""

    def __init__(self) -> None:
        self.jobs: list = []

    def callInThreadWithCallback(self, on_result, f, *args, **kwargs):
        self.jobs.append((on_result, f, args, kwargs))

    def run_one(self) -> bool:
        if not self.jobs:
            return False
        on_result, f, args, kwargs = self.jobs.pop(0)
        try:
            result = f(*args, **kwargs)
        except BaseException:
            from twisted.python.failure import Failure

            on_result(False, Failure())
        else:
            on_result(True, result)
        return True

    def run_all(self) -> int:
        count = 0
        while self.run_one():
            count += 1
        return count


class ImmediateThreadPool(SteppedThreadPool):
    """Runs work as soon as it is submitted."""

    def callInThreadWithCallback(self, on_result, f, *args, **kwargs):
        super().callInThreadWithCallback(on_result, f, *args, **kwargs)
        self.run_all()


def associate_rq(
    called_ae_title: str = DEFAULT_AE_TITLE,
    calling_ae_title: str = "TEST-SCU",
    contexts=((1, uids.VERIFICATION_SOP_CLASS, (uids.IMPLICIT_VR_LITTLE_ENDIAN,)),),
    maximum_length: int = DEFAULT_MAXIMUM_LENGTH,
) -> AAssociateRQ:
    """An A-ASSOCIATE-RQ proposing ``contexts``: (id, abstract syntax, transfer syntaxes)."""
    return AAssociateRQ(
        called_ae_title=called_ae_title,
        calling_ae_title=calling_ae_title,
        presentation_contexts=tuple(
            PresentationContextItemRQ(cid, abstract, tuple(syntaxes)) for cid, abstract, syntaxes in contexts
        ),
        user_information=UserInformationItem(
            (MaximumLengthSubItem(maximum_length), ImplementationClassUIDSubItem("1.2.826.0.1.3680043.9.9999"))
        ),
    )


def echo_rq_bytes(context_id: int = 1, message_id: int = 1, maximum_length: int = DEFAULT_MAXIMUM_LENGTH) -> bytes:
    """A C-ECHO-RQ as P-DATA-TF PDU bytes."""
    command = CEchoRQ(message_id=message_id).encode()
    return b"".join(p.encode() for p in message_pdus(context_id, command, maximum_length, command=True))


def store_rq_bytes(
    data_set: bytes,
    sop_class_uid: str,
    sop_instance_uid: str,
    context_id: int = 1,
    message_id: int = 1,
    maximum_length: int = DEFAULT_MAXIMUM_LENGTH,
) -> bytes:
    """A C-STORE-RQ and its data set as P-DATA-TF PDU bytes."""
    command = CStoreRQ(
        message_id=message_id,
        affected_sop_class_uid=sop_class_uid,
        affected_sop_instance_uid=sop_instance_uid,
    ).encode()
    pdus = message_pdus(context_id, command, maximum_length, command=True)
    pdus += message_pdus(context_id, data_set, maximum_length, command=False)
    return b"".join(p.encode() for p in pdus)


class ScpHarness:
    """One SCP association over a StringTransport, driven by hand."""

    def __init__(self, config, threadpool=None, peer=("127.0.0.1", 40000), factory_class=None) -> None:
        from radx.scp.factory import SCPFactory

        self.reactor = ThreadlessReactor()
        self.threadpool = threadpool if threadpool is not None else ImmediateThreadPool()
        self.factory = (factory_class or SCPFactory)(config, self.reactor, self.threadpool)
        self.protocol = self.connect(peer)
        self.transport = self.protocol.transport
        self._reader = PDUReader(maximum_pdata_length=0)

    def connect(self, peer=("127.0.0.1", 40000)):
        address = IPv4Address("TCP", *peer)
        protocol = self.factory.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        return protocol

    def send(self, data: bytes, one_byte_at_a_time: bool = False) -> None:
        _feed(self.protocol, data, one_byte_at_a_time)

    def received_pdus(self) -> list:
        """The PDUs radx wrote since the last call."""
        return _written_pdus(self.transport, self._reader)

    def disconnect(self) -> None:
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        self.transport.loseConnection()
        self.protocol.connectionLost(Failure(ConnectionLost()))

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting


def _feed(protocol, data: bytes, one_byte_at_a_time: bool) -> None:
    if one_byte_at_a_time:
        for i in range(len(data)):
            protocol.dataReceived(data[i : i + 1])
    else:
        protocol.dataReceived(data)


def _written_pdus(transport: StringTransport, reader: PDUReader) -> list:
    data = transport.value()
    transport.clear()
    return reader.feed(data)


class AcceptorPeer:
    """The far end of one requestor connection made by a MemoryEndpoint: what radx wrote, what it is sent."""

    def __init__(self, protocol, transport: StringTransport) -> None:
        self.protocol = protocol
        self.transport = transport
        self._reader = PDUReader(maximum_pdata_length=0)

    def received_pdus(self) -> list:
        """The PDUs radx wrote since the last call."""
        return _written_pdus(self.transport, self._reader)

    def send(self, data: bytes, one_byte_at_a_time: bool = False) -> None:
        _feed(self.protocol, data, one_byte_at_a_time)

    def disconnect(self) -> None:
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        self.protocol.connectionLost(Failure(ConnectionLost()))


class MemoryEndpoint:
    """
    A client endpoint for ``radx.scu`` whose connections are StringTransports,
    made at once; ``peers`` holds an AcceptorPeer for each. ``refuse`` makes
    connecting fail, ``hang`` makes it never finish.
    """

    def __init__(self, refuse: bool = False, hang: bool = False) -> None:
        self.refuse = refuse
        self.hang = hang
        self.peers: list[AcceptorPeer] = []

    def connect(self, factory):
        from twisted.internet import defer
        from twisted.internet.error import ConnectionRefusedError

        if self.refuse:
            return defer.fail(ConnectionRefusedError())
        if self.hang:
            return defer.Deferred()
        address = IPv4Address("TCP", "127.0.0.1", 11112)
        protocol = factory.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        self.peers.append(AcceptorPeer(protocol, transport))
        return defer.succeed(protocol)


def dcmtk_tool(name: str) -> str | None:
    """The DCMTK program ``name``; pynetdicom installs Python scripts of the same names."""
    for folder in ("/usr/bin", "/usr/local/bin"):
        path = os.path.join(folder, name)
        if os.access(path, os.X_OK):
            with open(path, "rb") as program:
                if program.read(2) != b"#!":
                    return path
    found = shutil.which(name)
    if found is not None:
        with open(found, "rb") as program:
            if program.read(2) != b"#!":
                return found
    return None
