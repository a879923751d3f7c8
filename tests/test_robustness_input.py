"""Hostile input: property tests through the whole protocol, and malformed PDUs over real sockets.

``docs/robustness.rst`` ("Hostile input") lists every fault tried here and
what radx does about it.

The property tests drive an ``AssociationProtocol`` through
``radx.testing.ScpHarness`` (no sockets, a clock moved by hand). Whatever
bytes arrive, in whatever chunks:

- ``dataReceived`` never raises, and nothing is logged at error level or
  with a failure (trial itself only fails a test for a logged *failure*,
  so the tests watch for error and critical events too, example by
  example, so that hypothesis can shrink them);
- what radx writes back parses as PDUs, and is nothing, or an
  A-ASSOCIATE-AC followed by P-DATA and perhaps an A-RELEASE-RP, or an
  A-ASSOCIATE-RJ, and after that only A-ABORTs;
- once the clock has run long enough, radx has closed the connection,
  and when it is gone no timer is left;
- the output folder never holds a file that is not the instance of a
  complete, valid C-STORE, nor a temporary file once the connection is
  gone.

A model of PS3.8 Table 9-10 for the acceptor checks radx's answer to each
PDU of a random sequence of well-formed PDUs and waits.

The socket tests send each malformed input from a raw client to a radx
server on 127.0.0.1, check the exact answer, that exactly one log line
names the peer and the reason, and that DCMTK's ``echoscu`` still gets
an answer from the same server afterwards.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import struct
import tempfile
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from twisted.internet import defer, threads
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from radx import uids
from radx.dimse.commands import (
    CEchoRQ,
    CEchoRSP,
    CStoreRQ,
    CStoreRSP,
    decode_command,
    encode_command_set,
)
from radx.scp.factory import ServerConfig
from radx.storage.store import INCOMING
from radx.testing import ScpHarness, associate_rq, echo_rq_bytes, store_rq_bytes
from radx.ul.framing import PDUReader
from radx.ul.fsm import State
from radx.ul.pdu import (
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AReleaseRP,
    AReleaseRQ,
    PDataTF,
    PresentationContextItemAC,
    PresentationDataValueItem,
    UserInformationItem,
)
from tests.interop import ServerTestCase, require_dcmtk

CT = "1.2.840.10008.5.1.4.1.1.2"
# A SOP class radx does not serve: its presentation context is rejected.
FIND = "1.2.840.10008.5.1.4.1.2.1.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = uids.IMPLICIT_VR_LITTLE_ENDIAN
VERIFICATION = uids.VERIFICATION_SOP_CLASS

# Context 1: Verification; 3: CT, Explicit VR LE; 5: CT, Implicit VR LE;
# 7: Study Root C-FIND, which radx rejects (abstract syntax not supported).
CONTEXTS = (
    (1, VERIFICATION, (IMPLICIT_LE,)),
    (3, CT, (EXPLICIT_LE,)),
    (5, CT, (IMPLICIT_LE,)),
    (7, FIND, (IMPLICIT_LE,)),
)
ASSOCIATE_RQ = associate_rq(contexts=CONTEXTS).encode()

# Timeouts of the in-memory server: distinct, so the model can tell them apart.
ARTIM = 10.0
IDLE = 100.0
DIMSE = 60.0

ACCEPTOR_STATES = (State.STA1, State.STA2, State.STA6, State.STA8, State.STA13)

# What an acceptor may ever send (PS3.8 9.3.1).
ANSWER_TYPES = (AAssociateAC, AAssociateRJ, PDataTF, AReleaseRP, AAbort)

_PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def radx_lines(events) -> list[str]:
    """radx's own log lines, formatted."""
    return [formatEvent(e) for e in events if e.get("log_namespace", "").startswith("radx")]


class LogWatch:
    """Every log event while a test runs; ``errors()`` are the failures and error/critical events.

    trial fails a test that logs a *failure* (``log.failure``, an
    unhandled error in a Deferred), but not one that logs ``log.error``
    or ``log.critical`` without one; radx must do neither for anything
    a peer sends.
    """

    def __init__(self, test) -> None:
        self.events: list = []
        globalLogPublisher.addObserver(self.events.append)
        test.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def clear(self) -> None:
        del self.events[:]

    def lines(self) -> list[str]:
        return radx_lines(self.events)

    def errors(self) -> list[str]:
        return [
            formatEvent(e) + ("\n" + e["log_failure"].getTraceback() if "log_failure" in e else "")
            for e in self.events
            if "log_failure" in e or e.get("log_level") in (LogLevel.error, LogLevel.critical)
        ]


def chunks(data: bytes, cuts) -> list[bytes]:
    """``data`` cut at the positions ``cuts`` (taken modulo its length)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


def check_answer_sequence(test, pdus) -> None:
    """radx's PDUs on one connection follow ``(AC P-DATA* RP? | RJ)? A-ABORT*``."""
    phase = "start"
    for pdu in pdus:
        test.assertIsInstance(pdu, ANSWER_TYPES)
        kind = type(pdu)
        if kind is AAbort:
            phase = "aborted"
        elif phase == "start" and kind is AAssociateAC:
            phase = "associated"
        elif phase == "start" and kind is AAssociateRJ:
            phase = "rejected"
        elif phase == "associated" and kind is PDataTF:
            pass
        elif phase == "associated" and kind is AReleaseRP:
            phase = "released"
        else:
            test.fail(f"{kind.__name__} after {phase}: {pdus!r}")


def responses(pdus) -> list:
    """The DIMSE commands in radx's P-DATA (radx sends each command in one PDV here)."""
    out = []
    for pdu in pdus:
        if isinstance(pdu, PDataTF):
            for item in pdu.items:
                if item.is_command:
                    out.append(decode_command(bytes(item.data)))
    return out


def tiny_data_set(sop_instance_uid: str, implicit: bool = False) -> bytes:
    """A small but valid CT data set naming ``sop_instance_uid``."""
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = sop_instance_uid
    ds.PatientID = "HOSTILE"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.1.1"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.1.2"
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = implicit
    write_dataset(fp, ds)
    return fp.getvalue()


def files_under(folder: str) -> tuple[list[str], list[str]]:
    """(stored files, temporary files) under an output folder."""
    stored, temporary = [], []
    for root, _, names in os.walk(folder):
        into = temporary if os.path.basename(root) == INCOMING else stored
        into.extend(os.path.join(root, name) for name in names)
    return stored, temporary


def pdv_pdu(*items) -> bytes:
    return PDataTF(tuple(PresentationDataValueItem(c, m, d) for c, m, d in items)).encode()


# Strategies -----------------------------------------------------------------

_VALID_PIECES = [
    ASSOCIATE_RQ,
    associate_rq().encode(),
    echo_rq_bytes(),
    echo_rq_bytes(context_id=3, message_id=2),
    AReleaseRQ().encode(),
    AReleaseRP().encode(),
    AAbort(0, 0).encode(),
    AAbort(2, 1).encode(),
    AAssociateRJ(1, 1, 1).encode(),
    AAssociateAC("RADX-SCP", "TEST-SCU", presentation_contexts=(PresentationContextItemAC(1, 0, IMPLICIT_LE),),
                 user_information=UserInformationItem()).encode(),
    store_rq_bytes(b"\x08\x00\x18\x00\x02\x00\x00\x00", CT, "1.2.3", context_id=3),
]

_header = st.builds(
    lambda t, length: struct.pack(">BBL", t, 0, length),
    st.integers(0, 255),
    st.one_of(st.integers(0, 300), st.integers(0, 0xFFFFFFFF)),
)
_framed = st.builds(
    lambda t, body: struct.pack(">BBL", t, 0, len(body)) + body,
    st.integers(1, 7),
    st.binary(max_size=120),
)
_piece = st.one_of(st.binary(max_size=64), st.sampled_from(_VALID_PIECES), _header, _framed)


def _mutate(data: bytes, mutations) -> bytes:
    buffer = bytearray(data)
    for position, value in mutations:
        if buffer:
            buffer[position % len(buffer)] = value
    return bytes(buffer)


_stream = st.lists(_piece, max_size=8).map(b"".join)
_mutated_stream = st.builds(
    _mutate, _stream, st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 255)), min_size=1, max_size=4)
)
hostile_bytes = st.one_of(st.binary(max_size=400), _stream, _mutated_stream)
cut_points = st.lists(st.integers(0, 5000), max_size=12)

# Command sets, good and bad, for PDVs with arbitrary headers.
_COMMAND_SETS = [
    CEchoRQ(message_id=11).encode(),
    CEchoRQ(message_id=12, affected_sop_class_uid=CT).encode(),
    CStoreRQ(13, CT, "1.2.826.0.1.3680043.10.2.1").encode(),
    CStoreRQ(14, CT, "not a uid").encode(),
    CStoreRQ(15, "1.2.3.4.5", "1.2.826.0.1.3680043.10.2.2").encode(),
    CEchoRSP(message_id_being_responded_to=1).encode(),
    CStoreRSP(1, 0, CT, "1.2.3").encode(),
    encode_command_set({0x00000002: VERIFICATION, 0x00000100: 0x0020, 0x00000110: 16, 0x00000800: 0x0101}),
    encode_command_set({0x00000002: VERIFICATION, 0x00000100: 0x0020, 0x00000110: 17, 0x00000800: 0x0001}),
    encode_command_set({0x00000100: 0x0FFF, 0x00000120: 1, 0x00000800: 0x0101}),  # C-CANCEL-RQ
    encode_command_set({0x00000100: 0x0001, 0x00000110: 18, 0x00000800: 0x0001}),  # C-STORE-RQ, no UIDs
    encode_command_set({0x00000100: 0x0001, 0x00000110: 19, 0x00000800: 0x0101,
                        0x00000002: CT, 0x00001000: "1.2.3"}),  # C-STORE-RQ without a data set
    encode_command_set({0x00000100: 0x0030, 0x00000800: 0x0101}),  # C-ECHO-RQ, no message ID
    encode_command_set({0x00000110: 20}),  # no command field
]
_payload = st.one_of(
    st.binary(max_size=48),
    st.sampled_from(_COMMAND_SETS),
    st.builds(lambda c, a, b: c[min(a, b):max(a, b)], st.sampled_from(_COMMAND_SETS),
              st.integers(0, 120), st.integers(0, 120)),
    st.just(tiny_data_set("1.2.826.0.1.3680043.10.2.1")),
)
_pdv = st.tuples(
    st.one_of(st.sampled_from([1, 3, 5, 7]), st.integers(0, 255)),
    st.one_of(st.sampled_from([0, 1, 2, 3]), st.integers(0, 255)),
    _payload,
)
# A message is a P-DATA-TF of arbitrary PDVs, or (as a marker) a complete valid C-STORE or C-ECHO.
_message = st.one_of(
    st.lists(_pdv, min_size=1, max_size=3).map(lambda items: ("pdata", items)),
    st.sampled_from([("store", 3), ("store", 5), ("echo", 1)]),
)

# Well-formed PDUs and waits for the model of Table 9-10.
PEER_STEPS = (
    "rq",  # acceptable A-ASSOCIATE-RQ
    "rq_wrong_ae",  # A-ASSOCIATE-RQ to another AE: A-ASSOCIATE-RJ
    "rq_even_id",  # A-ASSOCIATE-RQ with an even context ID: an invalid PDU (Evt19)
    "ac",
    "rj",
    "echo",  # P-DATA-TF with a C-ECHO-RQ on context 1
    "release_rq",
    "release_rp",
    "abort_user",
    "abort_provider",
    "unknown_type",  # a PDU of type 08H: unrecognized (Evt19); the stream is lost after it
    "wait_3",
    "wait_11",
    "wait_101",
)


# Part 1: properties, in memory ---------------------------------------------


class LogWatchTests(SynchronousTestCase):
    def test_sees_what_trial_would_miss(self):
        """An error-level event without a failure passes trial unnoticed; LogWatch reports it, and failures."""
        from twisted.logger import Logger

        log = Logger(namespace="radx.test")
        watch = LogWatch(self)
        log.info("fine")
        log.warn("fine too")
        self.assertEqual(watch.errors(), [])
        log.error("an error without a failure")
        try:
            1 / 0
        except ZeroDivisionError:
            log.failure("a failure")
        self.flushLoggedErrors(ZeroDivisionError)
        errors = watch.errors()
        self.assertEqual(len(errors), 2)
        self.assertEqual(errors[0], "an error without a failure")
        self.assertIn("ZeroDivisionError", errors[1])


class HarnessProperties(SynchronousTestCase):
    """Arbitrary input through ``AssociationProtocol.dataReceived``, via ``ScpHarness``."""

    def setUp(self) -> None:
        self.log = LogWatch(self)
        self.base = self.mktemp()
        os.makedirs(self.base)

    def new_harness(self) -> ScpHarness:
        self.log.clear()
        output = tempfile.mkdtemp(dir=self.base)
        self.addCleanup(shutil.rmtree, output, True)
        self.output = output
        config = ServerConfig(
            output_dir=output, fsync=False, artim_timeout=ARTIM, idle_timeout=IDLE, dimse_timeout=DIMSE
        )
        return ScpHarness(config)

    def finish(self, harness: ScpHarness, written: list) -> None:
        """Let the clock run: radx ends the connection by itself; then the connection goes."""
        for _ in range(6):
            harness.reactor.advance(max(ARTIM, IDLE, DIMSE) + 1)
            written.extend(harness.received_pdus())
        self.assertTrue(harness.closed, "radx left the connection open")
        check_answer_sequence(self, written)
        harness.disconnect()
        self.assertIs(harness.protocol.machine.state, State.STA1)
        self.assertEqual(harness.reactor.getDelayedCalls(), [])
        stored, temporary = files_under(self.output)
        self.assertEqual(temporary, [], "a temporary file outlived the connection")
        self.assertEqual(self.log.errors(), [])

    def feed(self, harness: ScpHarness, data: bytes, cuts, written=()) -> list:
        """Feed ``data`` cut at ``cuts``; return everything radx wrote, after ``written`` (what came before)."""
        written = list(written)
        for piece in chunks(data, cuts):
            harness.protocol.dataReceived(piece)
            # Parses as PDUs (PDUReader raises otherwise), of the acceptor's kinds.
            written.extend(harness.received_pdus())
            # An acceptor's states (PS3.8 Table 9-10); radx never stays in Sta3.
            self.assertIn(harness.protocol.machine.state, ACCEPTOR_STATES)
        check_answer_sequence(self, written)
        self.assertEqual(self.log.errors(), [])
        return written

    @_PROPERTY
    @given(hostile_bytes, cut_points)
    def test_arbitrary_bytes_any_chunking(self, data: bytes, cuts) -> None:
        """(a) From the first byte: never an exception, only acceptor PDUs back, and the connection ends."""
        harness = self.new_harness()
        written = self.feed(harness, data, cuts)
        self.finish(harness, written)

    @_PROPERTY
    @given(hostile_bytes, cut_points)
    def test_valid_association_then_arbitrary_bytes(self, data: bytes, cuts) -> None:
        """(b) After an accepted A-ASSOCIATE-RQ: the same guarantees."""
        harness = self.new_harness()
        harness.send(ASSOCIATE_RQ)
        [ac] = harness.received_pdus()
        self.assertIsInstance(ac, AAssociateAC)
        written = self.feed(harness, data, cuts, [ac])
        self.finish(harness, written)

    @settings(
        max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
    )
    @given(st.lists(_message, min_size=1, max_size=10), cut_points)
    def test_arbitrary_pdvs_on_an_association(self, messages, cuts) -> None:
        """(c) Well-framed P-DATA-TF with arbitrary context IDs, control headers and payloads.

        Mixed with complete valid C-STOREs: a file appears only for one of
        those, answered with Success, and no temporary file is left.
        """
        harness = self.new_harness()
        harness.send(ASSOCIATE_RQ)
        [ac] = harness.received_pdus()
        self.assertEqual([c.result for c in ac.presentation_contexts], [0, 0, 0, 3])
        # _payload's data set and _COMMAND_SETS' C-STORE-RQ can meet as a complete valid C-STORE.
        valid_uids = {"1.2.826.0.1.3680043.10.2.1"}
        counter = itertools.count(1)
        stream = []
        for kind, detail in messages:
            if kind == "pdata":
                stream.append(pdv_pdu(*detail))
            elif kind == "store":
                uid = f"1.2.826.0.1.3680043.10.3.{next(counter)}"
                valid_uids.add(uid)
                stream.append(store_rq_bytes(tiny_data_set(uid, implicit=detail == 5), CT, uid, context_id=detail))
            else:
                stream.append(echo_rq_bytes(context_id=detail, message_id=next(counter)))
        written = self.feed(harness, b"".join(stream), cuts, [ac])
        successes = [
            r.affected_sop_instance_uid for r in responses(written) if isinstance(r, CStoreRSP) and r.status == 0
        ]
        stored_uids = set(successes)  # a UID sent twice replaces its file
        self.assertLessEqual(stored_uids, valid_uids, "Success for a C-STORE that was not a valid one")
        stored, temporary = files_under(self.output)
        self.assertEqual(
            sorted(os.path.basename(p) for p in stored),
            sorted(uid + ".dcm" for uid in stored_uids),
            "a file that no Success answered, or a Success with no file",
        )
        self.assertEqual(harness.factory.stats.stores_succeeded, len(successes))
        self.finish(harness, written)

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.sampled_from(PEER_STEPS), max_size=14), st.lists(st.integers(0, 200), max_size=14))
    def test_well_formed_pdus_in_any_order(self, steps, cuts) -> None:
        """(d) Random well-formed PDUs and waits: radx answers each as Table 9-10 says.

        Some PDUs are sent in two reads (``cuts``), which must not matter.
        """
        harness = self.new_harness()
        model = AcceptorModel()
        message_ids = itertools.count(1)
        for index, step in enumerate(steps):
            expected = model.step(step)
            if step.startswith("wait_"):
                harness.reactor.advance(float(step[5:]))
            else:
                data = peer_pdu(step, next(message_ids))
                cut = cuts[index] % len(data) if index < len(cuts) else 0
                for piece in (data[:cut], data[cut:]):
                    if piece:
                        harness.protocol.dataReceived(piece)
            got = harness.received_pdus()
            self.assertEqual(describe(got), expected, (steps[: index + 1], model))
            self.assertIs(harness.protocol.machine.state, model.state, (steps[: index + 1], model))
            self.assertEqual(harness.closed, model.closed, (steps[: index + 1], model))
        self.assertEqual(self.log.errors(), [])
        self.finish(harness, [])


class Findings(SynchronousTestCase):
    """What these tests turned up where radx departed from PS3.8/PS3.7.

    Each was fixed; the tests keep them fixed. docs/robustness.rst
    describes them.
    """

    def setUp(self) -> None:
        self.log = LogWatch(self)
        self.output = self.mktemp()
        os.makedirs(self.output)

    def harness(self, associate: bool = True) -> ScpHarness:
        harness = ScpHarness(ServerConfig(output_dir=self.output, fsync=False))
        if associate:
            harness.send(ASSOCIATE_RQ)
            [ac] = harness.received_pdus()
            self.assertIsInstance(ac, AAssociateAC)
        return harness

    def test_associate_rq_then_undecodable_pdu_in_one_read(self):
        """An A-ASSOCIATE-RQ and an unrecognized PDU arriving in one TCP read.

        PDUs are events in the order they arrive (PS3.8 9.2): Evt6 (AE-6,
        accept) then Evt19 in Sta6 (AA-8: A-ABORT source 2, reason 1).
        radx drops the request because PDUReader.feed discards the PDUs it
        completed in a call that then fails, and answers as if in Sta2.
        """
        harness = self.harness(associate=False)
        harness.send(associate_rq().encode() + b"\x08\x00\x00\x00\x00\x04\x00\x00\x00\x00")
        self.assertEqual(describe(harness.received_pdus()), [("AC",), ("ABORT", 2, 1)])


    def test_echo_then_undecodable_pdu_in_one_read(self):
        """A complete C-ECHO-RQ then a byte that starts no PDU, in one read: the echo is never answered."""
        harness = self.harness()
        harness.send(echo_rq_bytes(message_id=5) + b"\xff")
        self.assertEqual(describe(harness.received_pdus()), [("ECHO-RSP", 5, 0), ("ABORT", 2, 1)])


    def test_a_abort_after_an_invalid_associate_rq_in_one_read(self):
        """An A-ASSOCIATE-RQ with an even context ID, then an A-ABORT, in one read.

        Evt19 in Sta2 (AA-1: A-ABORT, Sta13), then Evt16 in Sta13 (AA-2:
        close at once). radx ignores the rest of the read and closes only
        when ARTIM expires; in two reads it closes at once.
        """
        harness = self.harness(associate=False)
        rq = associate_rq(contexts=((2, VERIFICATION, (IMPLICIT_LE,)),)).encode()
        harness.send(rq + AAbort(0, 0).encode())
        self.assertEqual(describe(harness.received_pdus()), [("ABORT", 0, 0)])
        self.assertTrue(harness.closed)


    def test_c_store_on_a_context_negotiated_for_another_sop_class(self):
        """A CT C-STORE-RQ on the Verification context (PS3.7 D.3.2: a context serves its one abstract syntax).

        radx filed the CT instance and answered Success until commit
        4b76a3c; now 0122H SOP Class Not Supported, as for a C-ECHO on a
        storage context, and nothing is written.
        """
        harness = self.harness()
        uid = "1.2.826.0.1.3680043.10.5.1"
        harness.send(store_rq_bytes(tiny_data_set(uid, implicit=True), CT, uid, context_id=1))
        [response] = responses(harness.received_pdus())
        self.assertEqual(response.status, 0x0122)
        self.assertEqual(files_under(self.output), ([], []))


def peer_pdu(step: str, message_id: int) -> bytes:
    if step == "rq":
        return associate_rq().encode()
    if step == "rq_wrong_ae":
        return associate_rq(called_ae_title="SOMEONE-ELSE").encode()
    if step == "rq_even_id":
        return associate_rq(contexts=((2, VERIFICATION, (IMPLICIT_LE,)),)).encode()
    if step == "ac":
        return AAssociateAC(
            "RADX-SCP",
            "TEST-SCU",
            presentation_contexts=(PresentationContextItemAC(1, 0, IMPLICIT_LE),),
            user_information=UserInformationItem(),
        ).encode()
    if step == "rj":
        return AAssociateRJ(1, 1, 1).encode()
    if step == "echo":
        return echo_rq_bytes(message_id=message_id)
    if step == "release_rq":
        return AReleaseRQ().encode()
    if step == "release_rp":
        return AReleaseRP().encode()
    if step == "abort_user":
        return AAbort(0, 0).encode()
    if step == "abort_provider":
        return AAbort(2, 0).encode()
    if step == "unknown_type":
        return b"\x08\x00\x00\x00\x00\x04\x00\x00\x00\x00"
    raise AssertionError(step)


def describe(pdus) -> list:
    """PDUs as the model writes them: ("AC",), ("RJ", result, source, reason), ("ECHO-RSP", id, status)..."""
    out = []
    for pdu in pdus:
        if isinstance(pdu, AAssociateAC):
            out.append(("AC",))
        elif isinstance(pdu, AAssociateRJ):
            out.append(("RJ", pdu.result, pdu.source, pdu.reason))
        elif isinstance(pdu, AAbort):
            out.append(("ABORT", pdu.source, pdu.reason))
        elif isinstance(pdu, AReleaseRP):
            out.append(("RP",))
        elif isinstance(pdu, PDataTF):
            for response in responses([pdu]):
                out.append(("ECHO-RSP", response.message_id_being_responded_to, response.status))
        else:
            out.append((type(pdu).__name__,))
    return out


class AcceptorModel:
    """PS3.8 Table 9-10 for the association-acceptor, written from the standard, for peer PDUs and time.

    Sta3 and Sta8 are not seen from outside: radx answers an
    A-ASSOCIATE-RQ and an idle A-RELEASE-RQ at once. ``artim`` and
    ``idle`` are the seconds since each timer was (re)started, None when
    it is not running. After an unrecognized PDU the byte stream cannot be
    followed any more: radx reads nothing after it (``dead``), as
    docs/architecture.rst says.
    """

    def __init__(self) -> None:
        self.state = State.STA2  # AE-5: transport connection indication
        self.artim: float | None = 0.0
        self.idle: float | None = None
        self.dead = False
        self.closed = False
        self.next_echo = 0

    def __repr__(self) -> str:
        return f"<model {self.state.value} artim={self.artim} idle={self.idle} dead={self.dead} closed={self.closed}>"

    def _to_sta13(self, restart_artim: bool = True) -> None:
        self.state = State.STA13
        if restart_artim:
            self.artim = 0.0

    def _close(self) -> None:
        self.state = State.STA1
        self.artim = None
        self.closed = True

    def step(self, step: str) -> list:
        if step.startswith("wait_"):
            return self._wait(float(step[5:]))
        self.next_echo += 1  # message IDs are numbered by step, as the test numbers them
        if self.state is State.STA6:
            self.idle = 0.0  # any data restarts the idle timer
        if self.dead or self.state is State.STA1:
            return []
        s = self.state
        if s is State.STA2:
            if step == "rq":  # AE-6, then AE-7: accepted
                self.state, self.artim, self.idle = State.STA6, None, 0.0
                return [("AC",)]
            if step == "rq_wrong_ae":  # AE-6, then AE-8: PS3.8 9.3.4 called-AE-title-not-recognized
                self._to_sta13()
                return [("RJ", 1, 1, 7)]
            if step in ("abort_user", "abort_provider"):  # AA-2
                self._close()
                return []
            if step == "unknown_type":
                self.dead = True
            # AA-1 for Evt3, 4, 10, 12, 13 and 19: A-ABORT, service-user source (reason 0)
            self._to_sta13()
            return [("ABORT", 0, 0)]
        if s is State.STA6:
            if step == "echo":  # DT-2
                return [("ECHO-RSP", self.next_echo, 0)]
            if step == "release_rq":  # AR-2, then AR-4 at once
                self._to_sta13()
                return [("RP",)]
            if step in ("abort_user", "abort_provider"):  # AA-3
                self._close()
                return []
            # AA-8: A-ABORT, service-provider source
            self._to_sta13()
            if step == "unknown_type":
                self.dead = True
                return [("ABORT", 2, 1)]  # unrecognized-PDU
            if step == "rq_even_id":
                return [("ABORT", 2, 6)]  # invalid-PDU-parameter-value (Evt19)
            return [("ABORT", 2, 2)]  # unexpected-PDU (Evt3, 4, 6, 13)
        if s is State.STA13:
            if step in ("abort_user", "abort_provider"):  # AA-2
                self._close()
                return []
            if step in ("rq", "rq_wrong_ae"):  # AA-7 (ARTIM not restarted)
                return [("ABORT", 2, 2)]
            if step == "rq_even_id":  # Evt19: AA-7
                return [("ABORT", 2, 6)]
            if step == "unknown_type":  # Evt19: AA-7
                self.dead = True
                return [("ABORT", 2, 1)]
            return []  # AA-6: ignored
        raise AssertionError(s)

    def _wait(self, seconds: float) -> list:
        out = []
        if self.idle is not None:
            self.idle += seconds
            if self.idle >= IDLE:
                self.idle = None
                if self.state is State.STA6:
                    # radx's idle timeout: an A-ABORT request primitive (Evt15), AA-1
                    self._to_sta13()
                    out.append(("ABORT", 0, 0))
                    return out  # ARTIM starts now, at the end of this wait
        if self.artim is not None:
            self.artim += seconds
            if self.artim >= ARTIM and self.state in (State.STA2, State.STA13):
                self._close()  # Evt18: AA-2
        return out


# Part 2: malformed input over a real socket ---------------------------------


def raw_client(port: int, script, *, shutdown: bool = False, close_on=(), after_send=None, timeout: float = 10.0):
    """Connect from 127.0.0.1, play ``script``, read until the server closes (or a PDU of ``close_on`` comes).

    ``script`` holds bytes to send and PDU classes to wait for (the
    client reads until one of that class has come). Runs in a thread.
    Returns a dict: ``peer`` (this end as "host:port"), ``data`` (every
    byte received), ``closed_by_server``, ``elapsed`` (seconds from the
    end of the script to the end) and ``after_send`` (what that callable
    returned, called once the script has been played).
    """
    result = {"closed_by_server": False, "after_send": None}
    reader = PDUReader(maximum_pdata_length=0)
    received: list[bytes] = []
    deadline = time.monotonic() + timeout

    def read_until(wanted) -> None:
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                result["closed_by_server"] = True
                return
            received.append(chunk)
            if wanted and any(isinstance(p, wanted) for p in reader.feed(chunk)):
                return

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        host, local_port = sock.getsockname()[:2]
        result["peer"] = f"{host}:{local_port}"
        sent = time.monotonic()
        try:
            for step in script:
                if isinstance(step, bytes):
                    sock.sendall(step)
                else:
                    read_until(step)
            if shutdown:
                sock.shutdown(socket.SHUT_WR)
            sent = time.monotonic()
            if after_send is not None:
                result["after_send"] = after_send()
            if not result["closed_by_server"]:
                read_until(close_on)
        except socket.timeout:
            pass
        except ConnectionResetError:
            result["closed_by_server"] = True
        result["elapsed"] = time.monotonic() - sent
        result["data"] = b"".join(received)
    return result


def overrun_context_rq() -> bytes:
    """An A-ASSOCIATE-RQ whose presentation context item declares a length running past the PDU."""
    rq = associate_rq().encode()
    body = bytearray(rq[6:])
    offset = 68  # PS3.8 9.3.2: the variable items start after 68 bytes of fixed fields
    while body[offset] != 0x20:
        (length,) = struct.unpack_from(">H", body, offset + 2)
        offset += 4 + length
    struct.pack_into(">H", body, offset + 2, len(body))
    return rq[:6] + bytes(body)


def wrong_group_length_command() -> bytes:
    """A C-ECHO-RQ whose (0000,0000) Command Group Length counts 2 bytes too many."""
    command = bytearray(CEchoRQ(message_id=1).encode())
    (length,) = struct.unpack_from("<I", command, 8)
    struct.pack_into("<I", command, 8, length + 2)
    return bytes(command)


def c_find_rq(message_id: int) -> bytes:
    """A C-FIND-RQ (0020H) command set with no data set, on the Verification SOP class."""
    return encode_command_set(
        {0x00000002: VERIFICATION, 0x00000100: 0x0020, 0x00000110: message_id, 0x00000800: 0x0101}
    )


class MalformedInputOverSocketTests(ServerTestCase):
    """Each malformed input from a raw client, then a successful echoscu on the same server."""

    timeout = 60

    def setUp(self) -> None:
        self.echoscu = require_dcmtk("echoscu")
        self.log = LogWatch(self)

    def start(self, **config) -> None:
        config.setdefault("artim_timeout", 0.5)
        self.start_server(self.server_config(**config))
        self.output = self.factory.config.output_dir

    @defer.inlineCallbacks
    def exchange(self, script, **kwargs):
        result = yield threads.deferToThread(raw_client, self.port, script, **kwargs)
        result["pdus"] = PDUReader(maximum_pdata_length=0).feed(result["data"])
        return result

    def assert_logged_once(self, result, *needles) -> None:
        """Exactly one radx line names this peer, besides "Association accepted/released/ended", and it gives the reason."""
        lines = [
            line
            for line in self.log.lines()
            if result["peer"] in line
            and not line.startswith(("Association accepted", "Association released", "Association ended"))
        ]
        self.assertEqual(len(lines), 1, self.log.lines())
        for needle in needles:
            self.assertIn(needle, lines[0])

    @defer.inlineCallbacks
    def assert_echo_still_works(self):
        self.assertEqual(self.log.errors(), [])
        out, err, code = yield self.run_tool(self.echoscu, "-aec", "RADX-SCP", "127.0.0.1", str(self.port))
        self.assertEqual(code, 0, out + err)
        self.assertEqual(self.log.errors(), [])
        stored, temporary = files_under(self.output)
        self.assertEqual((stored, temporary), ([], []))

    @defer.inlineCallbacks
    def check_abort(self, payloads, abort, *needles, associate=False):
        """Send ``payloads`` (after an accepted association if ``associate``): exactly ``abort`` comes back."""
        if associate:
            # Wait for the A-ASSOCIATE-AC: see test_pdus_before_an_undecodable_one_in_the_same_read.
            payloads = [associate_rq(contexts=CONTEXTS).encode(), AAssociateAC, *payloads]
        result = yield self.exchange(payloads)
        pdus = result["pdus"]
        if associate:
            self.assertIsInstance(pdus[0], AAssociateAC)
            pdus = pdus[1:]
        self.assertEqual(pdus, [abort])
        self.assertTrue(result["closed_by_server"])
        self.assert_logged_once(result, "Association aborted", *needles)
        yield self.assert_echo_still_works()

    # Truncated PDUs

    @defer.inlineCallbacks
    def test_header_then_close_before_association(self):
        """Four bytes of a PDU header, then the peer closes: nothing to answer, the connection goes."""
        # ARTIM far beyond the client's 10 s wait: a close seen at all is
        # the server answering the peer's close, not its timer.
        self.start(artim_timeout=60)
        result = yield self.exchange([b"\x01\x00\x00\x00"], shutdown=True)
        self.assertEqual(result["pdus"], [])
        self.assertTrue(result["closed_by_server"])
        self.assert_logged_once(result, "Connection closed by peer=")
        yield self.assert_echo_still_works()

    @defer.inlineCallbacks
    def test_header_then_close_before_association_is_logged(self):
        """One line names the peer, although AA-5 (Evt17 in Sta2) issues no indication."""
        self.start()
        result = yield self.exchange([b"\x01\x00\x00\x00"], shutdown=True)
        self.assert_logged_once(result, "closed")


    @defer.inlineCallbacks
    def test_header_then_close_after_association(self):
        """Part of a P-DATA-TF header, then close: AA-4, the association is over, logged once."""
        self.start()
        result = yield self.exchange([ASSOCIATE_RQ, AAssociateAC, b"\x04\x00\x00\x00"], shutdown=True)
        self.assertEqual([type(p) for p in result["pdus"]], [AAssociateAC])
        self.assertTrue(result["closed_by_server"])
        self.assert_logged_once(result, "Association aborted", "transport connection closed by the peer")
        yield self.assert_echo_still_works()

    @defer.inlineCallbacks
    def test_associate_rq_cut_in_the_middle_then_silence(self):
        """Half an A-ASSOCIATE-RQ and nothing more: ARTIM (0.5 s) closes the connection, no answer."""
        self.start()
        result = yield self.exchange([ASSOCIATE_RQ[: len(ASSOCIATE_RQ) // 2]])
        self.assertEqual(result["pdus"], [])
        self.assertTrue(result["closed_by_server"])
        self.assertGreaterEqual(result["elapsed"], 0.4)
        # No upper bound but the client's 10 s wait: the line says ARTIM
        # closed it (the DIMSE timeout, 60 s, is the other timer running).
        self.assert_logged_once(result, "No A-ASSOCIATE-RQ within 0.5s")
        yield self.assert_echo_still_works()

    # Unknown PDU types: PS3.8 9.3.1, Evt19

    @defer.inlineCallbacks
    def test_pdu_type_08_before_association(self):
        """Evt19 in Sta2: AA-1, A-ABORT with service-user source, reason 0."""
        self.start()
        yield self.check_abort(
            [b"\x08\x00\x00\x00\x00\x04\x00\x00\x00\x00"], AAbort(0, 0), "unrecognized PDU type 0x08"
        )

    @defer.inlineCallbacks
    def test_pdu_type_ff_before_association(self):
        self.start()
        yield self.check_abort([b"\xff" * 10], AAbort(0, 0), "unrecognized PDU type 0xFF")

    @defer.inlineCallbacks
    def test_pdu_type_08_after_association(self):
        """Evt19 in Sta6: AA-8, A-ABORT source 2 (service-provider), reason 1 unrecognized-PDU."""
        self.start()
        yield self.check_abort(
            [b"\x08\x00\x00\x00\x00\x04\x00\x00\x00\x00"], AAbort(2, 1), "unrecognized PDU type 0x08", associate=True
        )

    # Declared lengths of 0xFFFFFFFF

    @defer.inlineCallbacks
    def test_pdata_length_ffffffff_after_association(self):
        """Over the Maximum Length radx advertised (PS3.8 D.1): invalid-PDU-parameter-value, before any allocation."""
        self.start()
        yield self.check_abort(
            [bytes.fromhex("0400ffffffff")], AAbort(2, 6), "P-DATA-TF declares PDU-length 4294967295", associate=True
        )

    @defer.inlineCallbacks
    def test_associate_rq_length_ffffffff_before_association(self):
        self.start()
        yield self.check_abort(
            [bytes.fromhex("0100ffffffff") + ASSOCIATE_RQ[6:]],
            AAbort(0, 0),
            "A-ASSOCIATE-RQ declares PDU-length 4294967295",
        )

    # Items that overrun their parent

    @defer.inlineCallbacks
    def test_presentation_context_item_overruns_the_pdu(self):
        self.start()
        yield self.check_abort([overrun_context_rq()], AAbort(0, 0), "item 0x20", "remain in its parent")

    # Presentation context IDs: PS3.8 9.3.2.2, odd and unique

    @defer.inlineCallbacks
    def test_even_presentation_context_id(self):
        self.start()
        rq = associate_rq(contexts=((2, VERIFICATION, (IMPLICIT_LE,)),)).encode()
        yield self.check_abort([rq], AAbort(0, 0), "even presentation context ID 2")

    @defer.inlineCallbacks
    def test_repeated_presentation_context_id(self):
        self.start()
        rq = associate_rq(contexts=((1, VERIFICATION, (IMPLICIT_LE,)), (1, CT, (EXPLICIT_LE,)))).encode()
        yield self.check_abort([rq], AAbort(0, 0), "repeated presentation context ID 1")

    # P-DATA where it does not belong

    @defer.inlineCallbacks
    def test_pdata_before_association(self):
        """Evt10 in Sta2: AA-1, A-ABORT source 0."""
        self.start()
        yield self.check_abort([echo_rq_bytes()], AAbort(0, 0), "unexpected PDataTF PDU in Sta2")

    @defer.inlineCallbacks
    def test_pdata_on_a_context_that_was_not_accepted(self):
        """Context 7 was proposed and rejected; 9 was never proposed."""
        self.start()
        for context_id in (7, 9):
            yield self.check_abort(
                [echo_rq_bytes(context_id=context_id)],
                AAbort(2, 6),
                f"P-DATA on presentation context {context_id}, which was not accepted",
                associate=True,
            )
            self.log.clear()

    # DIMSE

    @defer.inlineCallbacks
    def test_command_set_with_a_wrong_group_length(self):
        self.start()
        yield self.check_abort(
            [pdv_pdu((1, 3, wrong_group_length_command()))],
            AAbort(2, 6),
            "(0000,0000) Command Group Length is",
            associate=True,
        )

    @defer.inlineCallbacks
    def test_unknown_command_field_is_answered_and_the_association_goes_on(self):
        """C-FIND-RQ on the Verification context: 0211H Unrecognized Operation (PS3.7 C.5), then an echo works."""
        self.start()
        result = yield self.exchange(
            [
                associate_rq(contexts=CONTEXTS).encode(),
                pdv_pdu((1, 3, c_find_rq(21))),
                echo_rq_bytes(message_id=22),
                AReleaseRQ().encode(),
            ],
            close_on=(AReleaseRP, AAbort),
        )
        ac, *data, rp = result["pdus"]
        self.assertIsInstance(ac, AAssociateAC)
        self.assertEqual(rp, AReleaseRP())
        find_rsp, echo_rsp = responses(data)
        self.assertEqual(find_rsp.command_field, 0x8020)
        self.assertEqual(find_rsp.elements[0x00000120], 21)
        self.assertEqual(find_rsp.elements[0x00000900], 0x0211)
        self.assertEqual(echo_rsp, CEchoRSP(message_id_being_responded_to=22, status=0))
        self.assertIn(
            f"Unsupported DIMSE C-FIND-RQ peer={result['peer']} calling_ae=TEST-SCU: answered 0x0211 Unrecognized Operation",
            self.log.lines(),
        )
        yield self.assert_echo_still_works()

    @defer.inlineCallbacks
    def test_unknown_command_field_log_names_the_peer(self):
        self.start()
        result = yield self.exchange(
            [associate_rq(contexts=CONTEXTS).encode(), pdv_pdu((1, 3, c_find_rq(21))), AReleaseRQ().encode()],
            close_on=(AReleaseRP, AAbort),
        )
        self.assert_logged_once(result, "C-FIND-RQ", "0x0211")


    @defer.inlineCallbacks
    def test_store_requests_beyond_the_operations_window(self):
        """Three C-STOREs back to back with no window negotiated (1): slowed, not dropped; all stored, said once."""
        self.start()
        uids = [f"1.2.826.0.1.3680043.10.4.{n}" for n in (5, 6, 7)]
        # The three in one send (under 2 KB: one read on loopback), so the second
        # and third arrive before the first can be answered.
        stores = b"".join(
            pdv_pdu((3, 3, CStoreRQ(n, CT, uid).encode())) + pdv_pdu((3, 2, tiny_data_set(uid)))
            for n, uid in enumerate(uids, start=1)
        )
        payloads = [associate_rq(contexts=CONTEXTS).encode(), AAssociateAC, stores, AReleaseRQ().encode()]
        result = yield self.exchange(payloads, close_on=(AReleaseRP, AAbort))
        ac, *data, rp = result["pdus"]
        self.assertIsInstance(ac, AAssociateAC)
        self.assertEqual(rp, AReleaseRP())
        self.assertEqual(sorted((r.message_id_being_responded_to, r.status) for r in responses(data)), [(1, 0), (2, 0), (3, 0)])
        self.assert_logged_once(result, "Peer exceeded the asynchronous operations window", "window=1")
        stored, temporary = files_under(self.output)
        self.assertEqual((len(stored), temporary), (3, []))

    @defer.inlineCallbacks
    def test_data_set_with_no_command(self):
        self.start()
        yield self.check_abort(
            [pdv_pdu((1, 2, tiny_data_set("1.2.3")))],
            AAbort(2, 6),
            "data set fragment with no command",
            associate=True,
        )

    @defer.inlineCallbacks
    def test_data_set_fragment_before_the_last_command_fragment(self):
        """PS3.8 E.2: a data set fragment while the command set is still arriving."""
        self.start()
        command = CStoreRQ(1, CT, "1.2.826.0.1.3680043.10.4.1").encode()
        yield self.check_abort(
            [pdv_pdu((3, 1, command[:20])), pdv_pdu((3, 0, tiny_data_set("1.2.826.0.1.3680043.10.4.1")))],
            AAbort(2, 6),
            "data set fragment on presentation context 3 before the last fragment of its command",
            associate=True,
        )

    @defer.inlineCallbacks
    def test_command_fragment_while_a_data_set_is_pending(self):
        """A C-STORE's data set has begun; a C-ECHO command arrives before its last fragment."""
        self.start()
        uid = "1.2.826.0.1.3680043.10.4.2"
        data_set = tiny_data_set(uid)
        yield self.check_abort(
            [
                pdv_pdu((3, 3, CStoreRQ(1, CT, uid).encode())),
                pdv_pdu((3, 0, data_set[:40])),
                echo_rq_bytes(context_id=1, message_id=2),
            ],
            AAbort(2, 6),
            "command fragment on presentation context 1 while the data set on context 3 has not ended",
            associate=True,
        )

    @defer.inlineCallbacks
    def test_data_set_that_never_ends(self):
        """Command and 1.5 MiB of data set, then silence on an open socket: the idle timeout (1 s) aborts.

        The temporary file exists while the data set arrives; afterwards
        neither it nor a stored file is left.
        """
        self.start(idle_timeout=1.0)
        uid = "1.2.826.0.1.3680043.10.4.3"
        command = CStoreRQ(1, CT, uid).encode()
        # A valid start whose Pixel Data (PS3.5 7.1.2) declares 16 MiB, then
        # 1.6 MB of its zeros: valid as far as it goes, so it is written.
        head = tiny_data_set(uid) + struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, 16 << 20)
        fragment = b"\x00" * 16000
        payloads = [associate_rq(contexts=CONTEXTS).encode(), pdv_pdu((3, 3, command)), pdv_pdu((3, 0, head))]
        payloads += [pdv_pdu((3, 0, fragment))] * 100
        incoming = os.path.join(self.output, INCOMING)

        def temporary_file_seen():
            # Until it appears: it stays at least the idle timeout (1 s)
            # after the last byte, far longer than one 10 ms poll.
            until = time.monotonic() + 10
            while time.monotonic() < until:
                if os.path.isdir(incoming) and os.listdir(incoming):
                    return True
                time.sleep(0.01)
            return False

        result = yield self.exchange(payloads, after_send=temporary_file_seen)
        self.assertTrue(result["after_send"], "no temporary file appeared: the test proves nothing")
        ac, abort = result["pdus"]
        self.assertIsInstance(ac, AAssociateAC)
        # The idle timeout is radx's own A-ABORT request (Evt15): AA-1, service-user source.
        self.assertEqual(abort, AAbort(0, 0))
        self.assertTrue(result["closed_by_server"])
        self.assertGreaterEqual(result["elapsed"], 0.9)
        self.assert_logged_once(result, "Association aborted", "no data for 1.0s (idle timeout)")
        # The discard runs on the threadpool after the abort: give it a moment.
        for _ in range(100):
            stored, temporary = files_under(self.output)
            if not temporary:
                break
            yield threads.deferToThread(time.sleep, 0.02)
        yield self.assert_echo_still_works()
