"""The requestor protocol on an in-memory transport and a hand-moved clock: no sockets, no real time."""

from __future__ import annotations

import dataclasses
import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from radx import uids
from radx.dimse.commands import CEchoRQ, CEchoRSP, CStoreRQ, CStoreRSP, decode_command
from radx.dimse.fragmenting import message_pdus
from radx.scu.association import (
    AssociationAborted,
    AssociationRejected,
    associate,
    associate_request,
)
from radx.scu.echo import echo
from radx.scu.sources import Part10Source
from radx.scu.store import StoreJob
from radx.testing import MemoryEndpoint
from radx.ul.fsm import State
from radx.ul.pdu import (
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AReleaseRP,
    AReleaseRQ,
    AsynchronousOperationsWindowSubItem,
    MaximumLengthSubItem,
    PDataTF,
    PresentationContextItemAC,
    UserInformationItem,
)

VERIFICATION = uids.VERIFICATION_SOP_CLASS
CT = "1.2.840.10008.5.1.4.1.1.2"
ECHO_CONTEXTS = {(VERIFICATION, uids.IMPLICIT_VR_LITTLE_ENDIAN): 1}


def accept_for(request: AAssociateRQ, results=None, maximum_length: int = 16384) -> AAssociateAC:
    """The A-ASSOCIATE-AC accepting every proposed context (or with ``results`` by context ID)."""
    results = results or {}
    return AAssociateAC(
        called_ae_title=request.called_ae_title,
        calling_ae_title=request.calling_ae_title,
        presentation_contexts=tuple(
            PresentationContextItemAC(item.context_id, results.get(item.context_id, 0), item.transfer_syntaxes[0])
            for item in request.presentation_contexts
        ),
        user_information=UserInformationItem((MaximumLengthSubItem(maximum_length),)),
    )


def response_bytes(response, context_id: int = 1) -> bytes:
    return b"".join(p.encode() for p in message_pdus(context_id, response.encode(), 16384, command=True))


def write_source(path: str, size: int, instance: str = "1.2.3.4") -> tuple[Part10Source, bytes]:
    """A file of a 6-byte stand-in header and ``size`` random bytes of data set; its source and data set."""
    data = os.urandom(size)
    with open(path, "wb") as fp:
        fp.write(b"HEADER" + data)
    return Part10Source(path, CT, instance, uids.EXPLICIT_VR_LITTLE_ENDIAN, 6, size), data


class RequestorTestsMixin:
    def setUp(self):
        self.clock = Clock()
        self.endpoint = MemoryEndpoint()

    def associate(self, contexts=ECHO_CONTEXTS, timeout: float = 10.0):
        request = associate_request("RADX-SCP", "RADX-SCU", contexts, 16384)
        d = associate(self.endpoint, request, self.clock, timeout)
        return request, d

    def established(self, contexts=ECHO_CONTEXTS, timeout: float = 10.0, **accept):
        """An accepted association, and its peer with nothing left to read."""
        request, d = self.associate(contexts, timeout)
        (peer,) = self.endpoint.peers
        peer.received_pdus()
        peer.send(accept_for(request, **accept).encode())
        return peer, self.successResultOf(d)

    def assertClean(self):
        self.assertEqual(self.clock.getDelayedCalls(), [])


class AssociationTests(RequestorTestsMixin, SynchronousTestCase):
    def test_request_proposes_contexts_and_limits(self):
        request, d = self.associate({(CT, uids.EXPLICIT_VR_LITTLE_ENDIAN): 1, (VERIFICATION, uids.IMPLICIT_VR_LITTLE_ENDIAN): 3})
        (peer,) = self.endpoint.peers
        (sent,) = peer.received_pdus()
        self.assertEqual(sent, request)
        self.assertEqual([(c.context_id, c.abstract_syntax, c.transfer_syntaxes) for c in sent.presentation_contexts],
                         [(1, CT, (uids.EXPLICIT_VR_LITTLE_ENDIAN,)), (3, VERIFICATION, (uids.IMPLICIT_VR_LITTLE_ENDIAN,))])  # fmt: skip
        self.assertEqual(sent.user_information.maximum_length, 16384)
        self.assertEqual(sent.user_information.implementation_class_uid, uids.IMPLEMENTATION_CLASS_UID)
        self.assertNoResult(d)

    def test_accept_echo_release(self):
        """A-ASSOCIATE-AC, C-ECHO-RQ/RSP, A-RELEASE-RQ/RP: everything fed one byte at a time."""
        request, d = self.associate()
        (peer,) = self.endpoint.peers
        peer.received_pdus()
        peer.send(accept_for(request, maximum_length=4096).encode(), one_byte_at_a_time=True)
        association = self.successResultOf(d)
        self.assertEqual(association.machine.state, State.STA6)
        self.assertEqual(association.peer_maximum_length, 4096)
        self.assertTrue(peer.transport.disconnecting is False)
        answered = association.echo()
        (pdata,) = peer.received_pdus()
        self.assertIsInstance(pdata, PDataTF)
        self.assertEqual(decode_command(pdata.items[0].data), CEchoRQ(message_id=1))
        self.assertNoResult(answered)
        peer.send(response_bytes(CEchoRSP(1, 0x0000)), one_byte_at_a_time=True)
        self.assertEqual(self.successResultOf(answered).status, 0)
        released = association.release()
        self.assertEqual(peer.received_pdus(), [AReleaseRQ()])
        self.assertNoResult(released)
        peer.send(AReleaseRP().encode())
        self.assertTrue(peer.transport.disconnecting)
        peer.disconnect()
        self.assertIsNone(self.successResultOf(released))
        self.assertEqual(association.machine.state, State.STA1)
        self.assertClean()

    def test_echo_helper(self):
        """radx.scu.echo: N echoes on one association, each timed, then a release."""
        ticks = iter(range(100))
        results = []
        d = echo(self.endpoint, self.clock, "RADX-SCP", "RADX-SCU", count=2, on_result=results.append,
                 clock=lambda: next(ticks))  # fmt: skip
        (peer,) = self.endpoint.peers
        (request,) = peer.received_pdus()
        peer.send(accept_for(request).encode())
        for message_id in (1, 2):
            (pdata,) = peer.received_pdus()
            self.assertEqual(decode_command(pdata.items[0].data).message_id, message_id)
            peer.send(response_bytes(CEchoRSP(message_id, 0x0000)))
        self.assertEqual(peer.received_pdus(), [AReleaseRQ()])
        peer.send(AReleaseRP().encode())
        peer.disconnect()
        self.assertEqual([(r.status, r.seconds) for r in self.successResultOf(d)], [(0, 1), (0, 1)])
        self.assertEqual(len(results), 2)
        self.assertClean()

    def test_reject(self):
        request, d = self.associate()
        (peer,) = self.endpoint.peers
        peer.received_pdus()
        peer.send(AAssociateRJ(1, 1, 7).encode())
        self.assertTrue(peer.transport.disconnecting)
        peer.disconnect()
        failure = self.failureResultOf(d, AssociationRejected)
        self.assertEqual(
            failure.value.message,
            "Association rejected: Called AE Title Not Recognized (rejected-permanent, service-user)",
        )
        self.assertEqual(failure.value.reject, AAssociateRJ(1, 1, 7))
        self.assertClean()

    def test_accepted_with_a_transfer_syntax_not_proposed(self):
        """PS3.8 9.3.3.2: the acceptor picks one of the proposed transfer syntaxes; any other is aborted."""
        request, d = self.associate()
        (peer,) = self.endpoint.peers
        peer.received_pdus()
        accept = accept_for(request)
        wrong = dataclasses.replace(accept.presentation_contexts[0], transfer_syntax=uids.EXPLICIT_VR_LITTLE_ENDIAN)
        peer.send(dataclasses.replace(accept, presentation_contexts=(wrong,)).encode())
        self.assertEqual(peer.received_pdus(), [AAbort(0, 0)])
        peer.disconnect()
        failure = self.failureResultOf(d, AssociationAborted)
        self.assertEqual(
            failure.value.message,
            "Association aborted: the peer accepted context 1 with transfer syntax"
            f" {uids.EXPLICIT_VR_LITTLE_ENDIAN}, which was not proposed",
        )
        self.assertClean()

    def test_peer_aborts_during_echo(self):
        peer, association = self.established()
        answered = association.echo()
        peer.send(AAbort(2, 0).encode())
        self.assertTrue(peer.transport.disconnecting)
        peer.disconnect()
        failure = self.failureResultOf(answered, AssociationAborted)
        self.assertIn("A-ABORT from the peer's service provider", failure.value.message)
        self.assertIsNone(self.successResultOf(association.closed))
        self.assertClean()

    def test_connection_lost(self):
        request, d = self.associate()
        (peer,) = self.endpoint.peers
        peer.disconnect()
        failure = self.failureResultOf(d, AssociationAborted)
        self.assertIn("transport connection closed by the peer", failure.value.message)
        self.assertClean()

    def test_connection_refused(self):
        self.endpoint.refuse = True
        request, d = self.associate()
        failure = self.failureResultOf(d, AssociationAborted)
        self.assertTrue(failure.value.message.startswith("Cannot connect: connection refused"), failure.value.message)
        self.assertClean()

    def test_no_connection_times_out(self):
        self.endpoint.hang = True
        request, d = self.associate(timeout=3)
        self.clock.advance(2.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        failure = self.failureResultOf(d, AssociationAborted)
        self.assertEqual(failure.value.message, "Timed out: no connection within 3 s")
        self.assertClean()

    def test_no_answer_to_request_times_out(self):
        """No A-ASSOCIATE-AC: A-ABORT after the timeout, then the transport is cut ARTIM later."""
        request, d = self.associate(timeout=3)
        (peer,) = self.endpoint.peers
        peer.received_pdus()
        self.clock.advance(3)
        failure = self.failureResultOf(d, AssociationAborted)
        self.assertEqual(failure.value.message, "Timed out: no answer to the A-ASSOCIATE-RQ within 3 s")
        self.assertEqual(peer.received_pdus(), [AAbort(0, 0)])
        self.assertFalse(peer.transport.disconnecting)
        self.clock.advance(5)
        self.assertTrue(peer.transport.disconnecting)
        peer.disconnect()
        self.assertClean()

    def test_no_response_times_out(self):
        peer, association = self.established(timeout=3)
        self.assertClean()  # nothing outstanding, nothing timed
        answered = association.echo()
        self.clock.advance(3)
        failure = self.failureResultOf(answered, AssociationAborted)
        self.assertEqual(failure.value.message, "Timed out: no response within 3 s")
        peer.received_pdus()
        peer.disconnect()
        self.assertClean()

    def test_response_to_another_message_aborts(self):
        peer, association = self.established()
        answered = association.echo()
        peer.received_pdus()
        peer.send(response_bytes(CEchoRSP(7, 0x0000)))
        failure = self.failureResultOf(answered, AssociationAborted)
        self.assertIn("a response to message 7, which is not outstanding", failure.value.message)
        self.assertEqual(peer.received_pdus(), [AAbort(2, 5)])
        peer.disconnect()
        self.assertClean()

    def test_verification_not_accepted(self):
        peer, association = self.established(results={1: 3})
        failure = self.failureResultOf(association.echo())
        self.assertEqual(
            failure.value.message,
            "presentation context not accepted: abstract-syntax-not-supported (provider rejection)",
        )


class StoreTests(RequestorTestsMixin, SynchronousTestCase):
    def source(self, size: int) -> tuple[Part10Source, bytes]:
        return write_source(self.mktemp(), size)

    def established(self, maximum_length=16384):
        return super().established({(CT, uids.EXPLICIT_VR_LITTLE_ENDIAN): 1}, maximum_length=maximum_length)

    def test_data_set_streamed_in_fragments_of_the_peers_size(self):
        source, data = self.source(10_000)
        peer, association = self.established(maximum_length=4096)
        sent = []
        association.on_data_sent = sent.append
        answered = association.store(source, 1)
        pdus = peer.received_pdus()
        command, fragments = pdus[0], pdus[1:]
        self.assertEqual(
            decode_command(command.items[0].data),
            CStoreRQ(message_id=1, affected_sop_class_uid=CT, affected_sop_instance_uid="1.2.3.4"),
        )
        self.assertEqual([len(p.items[0].data) for p in fragments], [4090, 4090, 1820])
        self.assertEqual([p.items[0].message_control_header for p in fragments], [0, 0, 2])
        self.assertEqual(b"".join(bytes(p.items[0].data) for p in fragments), data)
        self.assertEqual(sent, [10000])  # read and written at once: one stretch of fragments
        peer.send(response_bytes(CStoreRSP(1, 0xB000, CT, "1.2.3.4")))
        self.assertEqual(self.successResultOf(answered).status, 0xB000)

    def test_every_value_sent_is_even_whatever_the_file(self):
        """
        PS3.5 7.1.1 and A.5: each PDV radx sends is even; an odd data set (a
        deflated one, as pydicom's image_dfl.dcm) gets one trailing NULL byte.
        """
        stretch = 7 * 16378
        for size in (0, 1, 2, 4089, 4090, 4091, 10_001, stretch - 1, stretch, stretch + 1, 300_001):
            for maximum in (4096, 4097, 16384, 0):
                self.endpoint = MemoryEndpoint()
                source, data = self.source(size)
                peer, association = self.established(maximum_length=maximum)
                association.store(source, 1)
                items = [item for pdu in peer.received_pdus() for item in pdu.items]
                self.assertEqual([len(i.data) % 2 for i in items], [0] * len(items), (size, maximum))
                fragments = b"".join(bytes(i.data) for i in items[1:])
                self.assertEqual(fragments, data + b"\x00" * (size % 2), (size, maximum))
                self.assertEqual(items[-1].message_control_header, 2)

    def test_backpressure_pauses_reading(self):
        """The transport's producer: a paused transport gets nothing more until it resumes."""
        source, data = self.source(300_000)
        peer, association = self.established()
        written = []
        original = peer.transport.write

        def write(chunk):
            original(chunk)
            written.append(len(chunk))
            if len(written) == 3:
                peer.transport.producer.pauseProducing()

        peer.transport.write = write
        association.store(source, 1)
        # The command, two stretches of 7 fragments (what one send carries), then paused.
        self.assertEqual(written[1:], [7 * 16390, 7 * 16390])
        self.assertIsNotNone(peer.transport.producer)
        peer.transport.producer.resumeProducing()
        self.assertIsNone(peer.transport.producer)
        received = b"".join(bytes(p.items[0].data) for p in peer.received_pdus()[1:])
        self.assertEqual(received, data)

    def test_stalled_transfer_times_out(self):
        source, data = self.source(300_000)
        peer, association = self.established()
        original = peer.transport.write
        peer.transport.write = lambda chunk: (original(chunk), peer.transport.producer and peer.transport.producer.pauseProducing())
        answered = association.store(source, 1)
        self.clock.advance(10)
        failure = self.failureResultOf(answered, AssociationAborted)
        self.assertEqual(failure.value.message, "Timed out: no response within 10 s")
        self.assertIsNone(peer.transport.producer)
        self.clock.advance(5)  # ARTIM: the peer never closed
        self.assertTrue(peer.transport.disconnecting)
        peer.disconnect()
        self.assertClean()

    def test_early_response_waits_for_the_end_of_the_data_set(self):
        source, data = self.source(300_000)
        peer, association = self.established()
        paused = []
        original = peer.transport.write

        def write(chunk):
            original(chunk)
            if not paused and peer.transport.producer is not None:
                paused.append(True)
                peer.transport.producer.pauseProducing()

        peer.transport.write = write
        answered = association.store(source, 1)
        peer.send(response_bytes(CStoreRSP(1, 0x0122, CT, "1.2.3.4")))
        self.assertNoResult(answered)
        peer.transport.producer.resumeProducing()
        self.assertEqual(self.successResultOf(answered).status, 0x0122)
        received = b"".join(bytes(p.items[0].data) for p in peer.received_pdus()[1:])
        self.assertEqual(received, data)


class OperationsWindowTests(RequestorTestsMixin, SynchronousTestCase):
    """Several C-STOREs outstanding at once, as the peer grants (PS3.7 D.3.3.3)."""

    contexts = {(CT, uids.EXPLICIT_VR_LITTLE_ENDIAN): 1}

    def sources(self, count: int) -> list[Part10Source]:
        return [write_source(self.mktemp(), 100, f"1.2.3.{n + 1}")[0] for n in range(count)]

    def granted(self, proposed: int, answer) -> int:
        """The window radx uses when it proposed ``proposed`` and the AC carries ``answer`` (a sub-item or None)."""
        request = associate_request("RADX-SCP", "RADX-SCU", self.contexts, 16384, proposed)
        d = associate(self.endpoint, request, self.clock, 10)
        peer = self.endpoint.peers[-1]
        [rq] = peer.received_pdus()
        self.assertEqual(rq, request)
        accept = accept_for(request)
        if answer is not None:
            sub_items = accept.user_information.sub_items + (answer,)
            accept = dataclasses.replace(accept, user_information=UserInformationItem(sub_items))
        peer.send(accept.encode())
        return self.successResultOf(d).operations_window

    def test_window_proposed_only_when_asked(self):
        self.assertIsNone(associate_request("A", "B", self.contexts, 16384).user_information.asynchronous_operations_window)
        window = associate_request("A", "B", self.contexts, 16384, 8).user_information.asynchronous_operations_window
        self.assertEqual(window, AsynchronousOperationsWindowSubItem(8, 1))

    def test_window_as_granted(self):
        self.assertEqual(self.granted(8, AsynchronousOperationsWindowSubItem(3, 1)), 3)
        self.assertEqual(self.granted(8, None), 1)  # no answer: synchronous
        self.assertEqual(self.granted(8, AsynchronousOperationsWindowSubItem(0, 0)), 8)  # unlimited: ours
        self.assertEqual(self.granted(8, AsynchronousOperationsWindowSubItem(20, 1)), 8)  # never more than asked

    def start_job(self, sources, granted: int):
        job = StoreJob(self.endpoint, self.clock, "RADX-SCP", "RADX-SCU", operations=8, timeout=10)
        done = job.send(sources)
        (peer,) = self.endpoint.peers
        self.accept(peer, granted)
        return job, done, peer

    def accept(self, peer, granted: int):
        """Accept the association ``peer`` was asked for, granting a window of ``granted``."""
        [request] = peer.received_pdus()
        accept = accept_for(request)
        sub_items = accept.user_information.sub_items + (AsynchronousOperationsWindowSubItem(granted, 1),)
        peer.send(dataclasses.replace(accept, user_information=UserInformationItem(sub_items)).encode())

    def next_association(self, granted: int = 1):
        """The association radx asked for after the last one ended, accepted."""
        peer = self.endpoint.peers[-1]
        self.accept(peer, granted)
        return peer

    def release(self, peer):
        self.assertEqual(peer.received_pdus(), [AReleaseRQ()])
        peer.send(AReleaseRP().encode())
        peer.disconnect()

    def requests(self, peer) -> list[int]:
        """Message IDs of the C-STORE-RQs radx sent since the last call."""
        commands = [p.items[0] for p in peer.received_pdus() if isinstance(p, PDataTF)]
        return [decode_command(i.data).message_id for i in commands if i.message_control_header & 1]

    def answer(self, peer, message_id: int, status: int = 0) -> None:
        peer.send(response_bytes(CStoreRSP(message_id, status, CT, f"1.2.3.{message_id}")))

    def test_keeps_the_granted_window_full(self):
        sources = self.sources(5)
        job, done, peer = self.start_job(sources, granted=3)
        self.assertEqual(self.requests(peer), [1, 2, 3])  # three at once, then it waits
        self.answer(peer, 2)  # answers may come in any order
        self.assertEqual(self.requests(peer), [4])
        self.answer(peer, 1, 0xB000)
        self.answer(peer, 4)
        self.assertEqual(self.requests(peer), [5])
        self.answer(peer, 3)
        self.assertEqual(self.requests(peer), [])
        self.answer(peer, 5)
        self.assertEqual(peer.received_pdus(), [AReleaseRQ()])
        peer.send(AReleaseRP().encode())
        peer.disconnect()
        results = self.successResultOf(done)
        self.assertEqual(
            [(os.path.basename(r.path), r.status) for r in results],
            [(os.path.basename(sources[i].path), s) for i, s in ((1, 0), (0, 0xB000), (3, 0), (2, 0), (4, 0))],
        )

    def test_abort_fails_what_was_sent_and_a_new_association_sends_the_rest(self):
        """
        The files sent and not answered fail (the peer may have stored them,
        and one may be why it aborted); the one made ready and the rest go
        to a new association.
        """
        sources = self.sources(5)
        job, done, peer = self.start_job(sources, granted=2)
        self.assertEqual(self.requests(peer), [1, 2])
        self.answer(peer, 1)
        self.assertEqual(self.requests(peer), [3])
        peer.send(AAbort(0, 0).encode())
        peer.disconnect()
        self.assertEqual(len(self.endpoint.peers), 2)
        peer = self.next_association(granted=2)
        self.assertEqual(self.requests(peer), [1, 2])
        self.answer(peer, 1)
        self.answer(peer, 2)
        self.release(peer)
        results = self.successResultOf(done)
        why = "Association aborted by the peer (A-ABORT, service-user)"
        self.assertEqual(
            [(sources.index(next(s for s in sources if s.path == r.path)), r.status, r.reason, r.sent) for r in results],
            [(0, 0, None, True), (1, None, why, True), (2, None, why, True), (3, 0, None, True), (4, 0, None, True)],
        )
        self.assertEqual((job.associated, job.gave_up), (2, None))
        self.assertClean()

    def test_after_a_timeout_a_new_association_sends_the_rest(self):
        """A peer silent on the first file: A-ABORT after --timeout, that file failed, the others on a new association."""
        sources = self.sources(3)
        job, done, peer = self.start_job(sources, granted=1)
        self.assertEqual(self.requests(peer), [1])
        self.clock.advance(10)
        self.assertEqual(peer.received_pdus(), [AAbort(0, 0)])
        self.assertEqual(len(self.endpoint.peers), 1)  # not before this one is closed
        peer.disconnect()
        peer = self.next_association()
        self.assertEqual(self.requests(peer), [1])
        self.answer(peer, 1)
        self.assertEqual(self.requests(peer), [2])
        self.answer(peer, 2)
        self.release(peer)
        results = self.successResultOf(done)
        self.assertEqual(
            [(r.status, r.reason) for r in results],
            [(None, "Timed out: no response within 10 s"), (0, None), (0, None)],
        )
        self.assertClean()

    def test_gives_up_after_three_associations_in_a_row_fail(self):
        """A peer that aborts at every first C-STORE: three associations, one file failed on each, the rest not sent."""
        sources = self.sources(5)
        job, done, peer = self.start_job(sources, granted=1)
        for association in range(3):
            if association:
                peer = self.next_association()
            self.assertEqual(self.requests(peer), [1])
            peer.send(AAbort(0, 0).encode())
            peer.disconnect()
        results = self.successResultOf(done)
        why = "Association aborted by the peer (A-ABORT, service-user)"
        self.assertEqual(
            [(r.status, r.reason, r.sent) for r in results],
            [(None, why, True)] * 3 + [(None, f"not sent: {why}", False)] * 2,
        )
        self.assertEqual(job.gave_up, f"3 associations in a row failed; the last: {why}")
        self.assertEqual(len(self.endpoint.peers), 3)
        self.assertClean()

    def test_an_answer_starts_the_count_of_failures_again(self):
        """Aborted after answering a file each time: radx goes on until every file has its outcome."""
        sources = self.sources(6)
        job, done, peer = self.start_job(sources, granted=1)
        for association in range(3):
            self.assertEqual(self.requests(peer), [1])
            self.answer(peer, 1)
            self.assertEqual(self.requests(peer), [2])
            peer.send(AAbort(0, 0).encode())
            peer.disconnect()
            if association < 2:
                peer = self.next_association()
        results = self.successResultOf(done)
        self.assertEqual([r.status for r in results], [0, None, 0, None, 0, None])
        self.assertEqual((len(self.endpoint.peers), job.gave_up), (3, None))
        self.assertClean()

    def test_a_new_association_that_cannot_be_made_counts_as_a_failure(self):
        sources = self.sources(4)
        job, done, peer = self.start_job(sources, granted=1)
        self.assertEqual(self.requests(peer), [1])
        self.endpoint.refuse = True
        peer.send(AAbort(0, 0).encode())
        peer.disconnect()
        results = self.successResultOf(done)
        refused = "Cannot connect: connection refused"
        self.assertEqual(
            [(r.reason, r.sent) for r in results],
            [("Association aborted by the peer (A-ABORT, service-user)", True)]
            + [(f"not sent: {refused}", False)] * 3,
        )
        self.assertEqual(job.gave_up, f"3 associations in a row failed; the last: {refused}")
        self.assertEqual(len(job.association_errors), 2)

    def test_a_permanent_rejection_is_not_asked_again(self):
        sources = self.sources(3)
        job, done, peer = self.start_job(sources, granted=1)
        self.assertEqual(self.requests(peer), [1])
        peer.send(AAbort(0, 0).encode())
        peer.disconnect()
        peer = self.endpoint.peers[-1]
        peer.received_pdus()
        peer.send(AAssociateRJ(1, 1, 7).encode())
        peer.disconnect()
        results = self.successResultOf(done)
        self.assertEqual(
            [r.reason for r in results][1:],
            ["not sent: Association rejected: Called AE Title Not Recognized (rejected-permanent, service-user)"] * 2,
        )
        self.assertEqual((len(self.endpoint.peers), job.gave_up), (2, None))
        self.assertClean()

    def test_an_unexpected_error_names_its_file_and_the_job_goes_on(self):
        """Not a response, an association error nor a file error: that file fails with it, the others are sent."""
        from twisted.internet import defer

        from radx.scu.association import RequestorProtocol

        sources = self.sources(3)
        queue_store = RequestorProtocol.queue_store

        def failing_for_the_second(protocol, source, context_id):
            if source is sources[1]:
                return defer.succeed(None), defer.fail(RuntimeError("a bug"))
            return queue_store(protocol, source, context_id)

        self.patch(RequestorProtocol, "queue_store", failing_for_the_second)
        job, done, peer = self.start_job(sources, granted=1)
        self.assertEqual(self.requests(peer), [1])
        self.answer(peer, 1)
        self.assertEqual(self.requests(peer), [2])  # the third file's request, Message ID 2
        peer.send(response_bytes(CStoreRSP(2, 0, CT, "1.2.3.3")))
        self.assertEqual(peer.received_pdus(), [AReleaseRQ()])
        peer.send(AReleaseRP().encode())
        peer.disconnect()
        results = self.successResultOf(done)
        # The second fails as it is made ready, before the first is answered.
        self.assertEqual(
            [(os.path.basename(r.path), r.status, r.reason) for r in results],
            [
                (os.path.basename(sources[1].path), None, "internal error: a bug"),
                (os.path.basename(sources[0].path), 0, None),
                (os.path.basename(sources[2].path), 0, None),
            ],
        )

    def test_a_file_cut_short_aborts_and_the_next_goes_to_a_new_association(self):
        """A file shorter than when it was planned: the association is aborted, the file made ready after it sent on another."""
        sources = self.sources(3)
        with open(sources[1].path, "r+b") as f:
            f.truncate(sources[1].data_set_offset + 10)
        job, done, peer = self.start_job(sources, granted=1)
        self.assertEqual(self.requests(peer), [1])
        self.answer(peer, 1)
        # The second file's C-STORE-RQ and what it had, then A-ABORT.
        pdus = peer.received_pdus()
        self.assertEqual([decode_command(p.items[0].data).message_id for p in pdus[:1]], [2])
        self.assertIsInstance(pdus[-1], AAbort)
        peer.disconnect()
        peer = self.next_association()
        self.assertEqual(self.requests(peer), [1])
        self.answer(peer, 1)
        self.release(peer)
        results = {r.path: (r.status, r.reason) for r in self.successResultOf(done)}
        why = "Cannot read the file: the file ended 90 bytes early"
        self.assertEqual([results[s.path] for s in sources], [(0, None), (None, why), (0, None)])
        self.assertClean()

    def test_next_file_goes_out_before_an_answer_is_handled(self):
        """
        Where the peer grants no window, the next file is made ready (its
        command encoded, its file open, its first stretch read) while the
        peer works on the last one, and goes out before that one's answer
        is handled: the peer waits on nothing radx does.
        """
        sources = self.sources(3)
        job, done, peer = self.start_job(sources, granted=1)
        self.assertEqual(self.requests(peer), [1])
        out_when_answered = []
        job.on_result = lambda result: out_when_answered.append(self.requests(peer))
        self.answer(peer, 1)
        self.assertEqual(out_when_answered, [[2]])
        self.answer(peer, 2)
        self.assertEqual(out_when_answered, [[2], [3]])
        self.answer(peer, 3)
        self.assertEqual(out_when_answered, [[2], [3], []])
        self.assertEqual(peer.received_pdus(), [AReleaseRQ()])
        peer.send(AReleaseRP().encode())
        peer.disconnect()
        self.assertEqual([r.status for r in self.successResultOf(done)], [0, 0, 0])
        self.assertClean()

    def test_silence_with_operations_outstanding_times_out(self):
        """The wait on outstanding responses: each answer restarts it."""
        sources = self.sources(4)
        job, done, peer = self.start_job(sources, granted=3)
        self.assertEqual(self.requests(peer), [1, 2, 3])
        self.clock.advance(6)
        self.answer(peer, 1)
        self.assertEqual(self.requests(peer), [4])
        self.clock.advance(9)  # 15 s since the first requests, 9 since the last answer
        self.assertNoResult(done)
        self.clock.advance(1)
        self.assertEqual(peer.received_pdus(), [AAbort(0, 0)])
        peer.disconnect()
        results = self.successResultOf(done)
        why = "Timed out: no response within 10 s"
        self.assertEqual([(r.status, r.reason) for r in results], [(0, None), (None, why), (None, why), (None, why)])
        self.assertClean()


class ClientEndpointTests(SynchronousTestCase):
    def test_addresses_connect_directly_names_resolve(self):
        from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint

        from radx.scu.association import client_endpoint

        clock = Clock()
        self.assertIsInstance(client_endpoint(clock, "127.0.0.1", 11112), TCP4ClientEndpoint)
        self.assertIsInstance(client_endpoint(clock, "::1", 11112), TCP6ClientEndpoint)
        self.assertIsInstance(client_endpoint(clock, "pacs.example", 11112), HostnameEndpoint)
        self.assertIsInstance(client_endpoint(clock, "localhost", 11112), HostnameEndpoint)

