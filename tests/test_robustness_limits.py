"""
Robustness of the real `radx dicom scp` process: its timeouts over real
sockets, and its limits (idle connections, associations in a row,
concurrent 1 GiB transfers).

Every server here is a subprocess started as an operator would start it,
with short timeouts given by flag.  Peers are DCMTK's storescu and raw
sockets driven from the test; every wait is bounded and every child
process is killed in cleanup.  The figures measured are printed (see
docs/robustness.rst, "Timeouts, limits and crashes").

The helpers at the top are shared with tests/test_robustness_crash.py.
"""

from __future__ import annotations

import functools
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from twisted.internet import defer, reactor, task
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase

from radx import uids
from radx.dimse.commands import CEchoRSP, CStoreRQ, decode_command
from radx.dimse.fragmenting import message_pdus
from radx.scp.factory import SCPFactory
from radx.storage.store import INCOMING
from radx.testing import associate_rq, echo_rq_bytes
from radx.ul.framing import PDUReader
from radx.ul.pdu import AAbort, AAssociateAC, AAssociateRJ, AReleaseRP, AReleaseRQ, PDataTF
from tests import dicomfiles, interop
from tests.interop import DCMTK_ENV, LISTEN_ADDRESS, listening_port, process_status, require_dcmtk

GIB = 1 << 30
MIB = 1 << 20
SERVER_AE = "RADX-SCP"
CALLING_AE = "ROBUST-SCU"
STARTED = "DICOM SCP server started"
# Bounds on waits that are not what a test measures.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 60.0


def report(message: str) -> None:
    """A figure worth quoting, on trial's output."""
    print(f"\n    {message}", flush=True)


def open_sockets(pid: int) -> int:
    """How many sockets the process holds open."""
    count = 0
    folder = f"/proc/{pid}/fd"
    for name in os.listdir(folder):
        try:
            if os.readlink(os.path.join(folder, name)).startswith("socket:"):
                count += 1
        except FileNotFoundError:
            continue
    return count


def wait_until(condition, timeout: float, what: str, interval: float = 0.05):
    """Poll ``condition`` until it is true (its value is returned), for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def walk_files(root) -> tuple[set[str], set[str]]:
    """(instance files, files in the temporary folder) under ``root``, relative to it."""
    stored, incoming = set(), set()
    for folder, _, names in os.walk(root):
        for name in names:
            relative = os.path.relpath(os.path.join(folder, name), root)
            (incoming if relative.split(os.sep)[0] == INCOMING else stored).add(relative)
    return stored, incoming


def incoming_files(output_dir) -> dict[str, int]:
    """The temporary files in OUTPUT/.radx-incoming: name -> size."""
    folder = os.path.join(output_dir, INCOMING)
    found = {}
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return found
    for entry in entries:
        try:
            found[entry.name] = entry.stat().st_size
        except FileNotFoundError:
            continue
    return found


def organized_path(output_dir, source) -> str:
    study, series, sop_instance = dicomfiles.instance_uids(source)
    return os.path.join(output_dir, study, series, f"{sop_instance}.dcm")


def make_scratch(case: SynchronousTestCase) -> str:
    """A folder under the trial temporary folder, removed after the test whatever its outcome."""
    path = os.path.abspath(case.mktemp())
    os.makedirs(path)
    case.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def raise_own_fd_limit(case: SynchronousTestCase, needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise AssertionError(f"the hard limit on open files is {hard}, this test needs {needed}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        case.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))


def _limit_open_files(count: int) -> None:
    """In the child, before exec: its soft limit on open files."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (count, hard))


class ServerProcess:
    """
    `python -m radx.app.cli dicom scp 0 --output-dir D --aet RADX-SCP
    --bind 127.0.0.1 [flags]`, its stdout and stderr in a log file.
    """

    def __init__(self, case, output_dir: str, *flags: str, log_path: str, open_files: int | None = None):
        self.case = case
        self.output_dir = output_dir
        self.log_path = log_path
        preexec = None if open_files is None else functools.partial(_limit_open_files, open_files)
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "radx.app.cli", "dicom", "scp", "0",
                    "--output-dir", output_dir, "--aet", SERVER_AE, "--bind", "127.0.0.1", *flags,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=preexec,
            )
        case.addCleanup(self.kill)
        started = time.monotonic()
        self.wait_for_text(STARTED, START_TIMEOUT)
        # From spawning to the banner: a Python start, imports, the output folder prepared.
        self.start_seconds = time.monotonic() - started
        # Given port 0, radx prints the port it got.
        self.port = listening_port(self.wait_for_text(LISTEN_ADDRESS, START_TIMEOUT))

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)

    def text(self) -> str:
        with open(self.log_path, "rb") as log:
            return log.read().decode("utf-8", "replace")

    def wait_for_text(self, marker, timeout: float) -> str:
        """Wait until the log holds ``marker`` (a string or a compiled pattern); the log."""

        def found():
            text = self.text()
            hit = marker.search(text) if isinstance(marker, re.Pattern) else marker in text
            if hit:
                return text
            if self.process.poll() is not None:
                raise AssertionError(f"the server ended ({self.process.returncode}) before {marker!r}:\n{text}")
            return None

        return wait_until(found, timeout, f"{marker!r} in the server's log")

    def status(self, field: str) -> int:
        return process_status(self.pid, field)

    def stop(self, sig=signal.SIGINT, timeout: float = STOP_TIMEOUT) -> tuple[int, float]:
        """Send ``sig``; (exit status, seconds it took to exit)."""
        started = time.monotonic()
        self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the server did not exit within {timeout}s of {sig!r}:\n{self.text()}")
        return code, time.monotonic() - started


def shutdown_counts(text: str) -> tuple[int, int, int]:
    """(C-ECHO requests, C-STORE requests, successful stores) from the shutdown block."""
    found = re.search(
        r"Server shutting down\.\.\.\n(?:.*\n)*?\n"
        r"  C-ECHO Requests:    (\d+)\n  C-STORE Requests:   (\d+)\n  Successful Stores:  (\d+)\n\Z",
        text,
    )
    if found is None:
        raise AssertionError(f"no shutdown block at the end of the server's output:\n{text[-3000:]}")
    return tuple(int(n) for n in found.groups())


class Storescu:
    """DCMTK storescu -v, in the background: one association, the files in order."""

    def __init__(self, case, port: int, files, log_path: str, *options: str):
        self.log_path = log_path
        self.files = list(files)
        with open(log_path, "wb") as log, open(log_path + ".stdout", "wb") as out:
            # The -v lines go to stderr; stdout has only the XMIT progress dots.
            self.process = subprocess.Popen(
                [require_dcmtk("storescu"), "-v", *options, "-aet", CALLING_AE, "-aec", SERVER_AE,
                 "127.0.0.1", str(port), *self.files],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=log,
                env=DCMTK_ENV,
            )
        case.addCleanup(self.kill)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"storescu did not end within {timeout}s:\n{self.text()[-3000:]}")

    def text(self) -> str:
        with open(self.log_path, "rb") as log:
            return log.read().decode("utf-8", "replace")

    def successes(self) -> int:
        return self.text().count("I: Received Store Response (Success)")

    def outcomes(self) -> dict[str, str | None]:
        """Each file storescu began to send -> the status it got back ("Success", ...), or None."""
        outcomes: dict[str, str | None] = {}
        current = None
        for found in re.finditer(r"I: Sending file: (\S+)|I: Received Store Response \(([^)\n]*)\)", self.text()):
            if found.group(1) is not None:
                current = found.group(1)
                outcomes[current] = None
            elif current is not None:
                outcomes[current] = found.group(2)
                current = None
        return outcomes


class RawAssociation:
    """A DICOM peer on a plain socket, PDU by PDU."""

    def __init__(self, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = PDUReader(maximum_pdata_length=0)
        self.pending: list = []

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next_pdu(self, timeout: float = 10.0):
        """The next PDU from the server, or None when it closes the connection."""
        self.sock.settimeout(timeout)
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.pending.extend(self.reader.feed(data))
        return self.pending.pop(0)

    def expect(self, kind, timeout: float = 10.0):
        pdu = self.next_pdu(timeout)
        if not isinstance(pdu, kind):
            raise AssertionError(f"expected {kind.__name__}, received {pdu!r}")
        return pdu

    def associate(self, contexts=((1, uids.VERIFICATION_SOP_CLASS, (uids.IMPLICIT_VR_LITTLE_ENDIAN,)),)):
        self.send(associate_rq(called_ae_title=SERVER_AE, calling_ae_title=CALLING_AE, contexts=contexts).encode())
        accept = self.expect(AAssociateAC)
        for item in accept.presentation_contexts:
            if item.result != 0:
                raise AssertionError(f"presentation context refused: {item!r}")
        return accept


def echo_association(port: int) -> None:
    """A-ASSOCIATE-RQ, one C-ECHO, A-RELEASE, as a client does it."""
    peer = RawAssociation(port)
    try:
        peer.associate()
        peer.send(ECHO_RQ)
        response = decode_command(peer.expect(PDataTF).items[0].data)
        if not isinstance(response, CEchoRSP) or response.status != 0:
            raise AssertionError(f"expected a C-ECHO-RSP with status 0, received {response!r}")
        peer.send(RELEASE_RQ)
        peer.expect(AReleaseRP)
    finally:
        peer.close()


ECHO_RQ = echo_rq_bytes()
RELEASE_RQ = AReleaseRQ().encode()


def store_pdus(path: str, context_id: int = 1, maximum_length: int = 16384) -> tuple[list[bytes], list[bytes]]:
    """(the C-STORE-RQ command's PDUs, the data set's PDUs) for a PS3.10 file, encoded."""
    sop_class, sop_instance = _sop_uids(path)
    command = CStoreRQ(message_id=1, affected_sop_class_uid=sop_class, affected_sop_instance_uid=sop_instance)
    data_set = dicomfiles.data_set_bytes(path)
    return (
        [p.encode() for p in message_pdus(context_id, command.encode(), maximum_length, command=True)],
        [p.encode() for p in message_pdus(context_id, data_set, maximum_length, command=False)],
    )


def _sop_uids(path: str) -> tuple[str, str]:
    from pydicom import dcmread

    ds = dcmread(path, stop_before_pixels=True)
    return ds.SOPClassUID, ds.SOPInstanceUID


def store_context(path: str) -> tuple:
    return ((1, _sop_uids(path)[0], (uids.EXPLICIT_VR_LITTLE_ENDIAN,)),)


class TimeoutTests(SynchronousTestCase):
    """ARTIM, the idle timeout and the DIMSE timeout, over real sockets, seconds long."""

    def start(self, *flags: str) -> ServerProcess:
        self.scratch = make_scratch(self)
        self.output = os.path.join(self.scratch, "received")
        return ServerProcess(self, self.output, *flags, log_path=os.path.join(self.scratch, "server.log"))

    def test_silent_connection_closed_by_artim(self):
        """A connection that sends nothing is closed when ARTIM (--artim-timeout 2) expires, not before."""
        server = self.start("--artim-timeout", "2")
        peer = RawAssociation(server.port)
        self.addCleanup(peer.close)
        started = time.monotonic()
        self.assertIsNone(peer.next_pdu(timeout=10), "the server sent something to a silent peer")
        elapsed = time.monotonic() - started
        report(f"silent connection closed by ARTIM after {elapsed:.2f} s (--artim-timeout 2)")
        # Not before ARTIM; after it, no bound but next_pdu's 10 s (a loaded
        # machine is late): the log line below says ARTIM closed it, and
        # the other timers are 60 s (DIMSE) and 120 s (idle).
        self.assertGreaterEqual(elapsed, 1.95)
        server.wait_for_text(re.compile(r"INFO: No A-ASSOCIATE-RQ within 2\.0s, closing peer=127\.0\.0\.1:\d+"), 5)
        # And the server still answers.
        echo_association(server.port)

    def test_stall_in_a_data_set_is_aborted_by_the_idle_timeout(self):
        """
        A peer that stops sending 3 MiB into a 16 MiB data set gets an
        A-ABORT after --idle-timeout 2 (not before); its temporary file is
        removed and no instance is stored.
        """
        server = self.start("--idle-timeout", "2", "--dimse-timeout", "30", "--artim-timeout", "5")
        source = dicomfiles.write_large_multiframe(os.path.join(self.scratch, "large.dcm"), 16 * MIB, seed=401)
        command, data = store_pdus(source)
        peer = RawAssociation(server.port)
        self.addCleanup(peer.close)
        peer.associate(store_context(source))
        # Whole PDUs only: the DIMSE timeout has no part begun to time.
        part = data[: (3 * MIB) // 16384]
        peer.send(b"".join(command + part))
        stalled = time.monotonic()
        wait_until(lambda: incoming_files(self.output), 5, "the temporary file")
        abort = peer.next_pdu(timeout=20)
        elapsed = time.monotonic() - stalled
        self.assertIsInstance(abort, AAbort)
        report(f"stalled data set: {abort!r} {elapsed:.2f} s after the last byte (--idle-timeout 2)")
        # Not before the idle timeout; after it, within next_pdu's 20 s,
        # wide for a loaded machine and below the 30 s DIMSE timeout. The
        # log line below says the idle timer fired.
        self.assertGreaterEqual(elapsed, 1.95)
        peer.close()
        server.wait_for_text("no data for 2.0s (idle timeout)", 5)
        wait_until(lambda: not incoming_files(self.output), 10, "the temporary file to be removed")
        self.assertEqual(walk_files(self.output), (set(), set()))
        echo_association(server.port)
        code, _ = server.stop()
        self.assertEqual(code, 0, server.text())
        self.assertEqual(shutdown_counts(server.text()), (1, 1, 0))

    def trickle(self, peer: RawAssociation, data: bytes, limit: float) -> tuple[float, object]:
        """Send ``data`` one byte a second until the server answers or closes; (seconds, what came)."""
        started = time.monotonic()
        for index in range(len(data)):
            try:
                peer.send(data[index : index + 1])
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - started, None
            try:
                pdu = peer.next_pdu(timeout=1.0)
            except socket.timeout:
                if time.monotonic() - started > limit:
                    raise AssertionError(f"still connected after {limit}s of trickling")
                continue
            return time.monotonic() - started, pdu
        raise AssertionError("the whole PDU went through")

    def test_trickling_sender_cut_off_by_the_dimse_timeout(self):
        """
        One byte a second keeps the idle timeout (2 s) from firing, but a
        PDU must arrive whole within --dimse-timeout 3: trickled in the
        middle of a data set it brings an A-ABORT ~3 s after its first byte
        (no file left); trickled as the A-ASSOCIATE-RQ, the connection is
        closed ~3 s after its first byte although ARTIM is 20 s.
        """
        server = self.start("--idle-timeout", "2", "--dimse-timeout", "3", "--artim-timeout", "20")
        source = dicomfiles.write_large_multiframe(os.path.join(self.scratch, "large.dcm"), 4 * MIB, seed=402)
        command, data = store_pdus(source)

        peer = RawAssociation(server.port)
        self.addCleanup(peer.close)
        peer.associate(store_context(source))
        peer.send(b"".join(command + data[:100]))
        wait_until(lambda: incoming_files(self.output), 5, "the temporary file")
        # Not before the DIMSE timeout; after it, within 15 s of trickling
        # (wide for a loaded machine: without the timeout, trickling one byte
        # a second would last 16,384 s). The log line says which timer fired.
        elapsed, answer = self.trickle(peer, data[100], limit=15)
        report(f"trickled P-DATA-TF: {answer!r} {elapsed:.2f} s after its first byte (--dimse-timeout 3)")
        self.assertIsInstance(answer, AAbort)
        self.assertGreaterEqual(elapsed, 2.95)
        peer.close()
        server.wait_for_text("a PDU did not arrive in full within 3.0s (DIMSE timeout)", 5)
        wait_until(lambda: not incoming_files(self.output), 10, "the temporary file to be removed")
        self.assertEqual(walk_files(self.output), (set(), set()))

        peer = RawAssociation(server.port)
        self.addCleanup(peer.close)
        request = associate_rq(called_ae_title=SERVER_AE, calling_ae_title=CALLING_AE).encode()
        # Within 15 s, below ARTIM's 20 s: the DIMSE timeout closed it, not ARTIM.
        elapsed, answer = self.trickle(peer, request, limit=15)
        report(f"trickled A-ASSOCIATE-RQ: closed {elapsed:.2f} s after its first byte (--dimse-timeout 3)")
        self.assertIsNone(answer)
        self.assertGreaterEqual(elapsed, 2.95)
        server.wait_for_text(
            re.compile(r"Closing peer=127\.0\.0\.1:\d+: a PDU did not arrive in full within 3\.0s"), 5
        )
        echo_association(server.port)
        code, _ = server.stop()
        self.assertEqual(code, 0, server.text())


class IdleTimeoutWhileFilingTests(interop.ServerTestCase):
    """The idle timeout is the peer's silence, not the server's: an in-process server whose storage thread is held."""

    timeout = 60

    @defer.inlineCallbacks
    def test_no_idle_abort_while_the_instance_waits_to_be_filed(self):
        """
        storescu sends a small CT image whole, then waits for the response
        while radx's only storage thread is busy elsewhere for 3 s
        (--idle-timeout 1): the silence is radx's, so the association is not
        aborted and the sender gets Success once the instance is filed.
        """
        scratch = make_scratch(self)
        source = dicomfiles.write_ct_series(os.path.join(scratch, "ct"), 1, rows=64, columns=64, seed=404)[0]
        config = self.server_config(output_dir=os.path.join(scratch, "received"), idle_timeout=1.0)
        os.makedirs(config.output_dir)
        pool = ThreadPool(minthreads=1, maxthreads=1, name="held-storage")
        pool.start()
        self.addCleanup(pool.stop)
        gate = threading.Event()
        self.addCleanup(gate.set)  # cleanups run last first: the thread is let go before the pool stops
        pool.callInThread(gate.wait, 30)
        self.threadpool = pool
        self.factory = SCPFactory(config, reactor, pool)
        self.listening_port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(self._stop)
        self.port = self.listening_port.getHost().port

        sent = self.run_tool(
            require_dcmtk("storescu"), "-v", "-aet", CALLING_AE, "-aec", SERVER_AE, "127.0.0.1", str(self.port), source
        )
        for _ in range(1000):
            if self.factory.stats.store_requests:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(self.factory.stats.store_requests, 1)
        # Three idle timeouts' worth of waiting for the storage thread.
        yield task.deferLater(reactor, 3.0, lambda: None)
        gate.set()
        out, err, code = yield sent
        text = (out + err).decode(errors="replace")
        stored = organized_path(config.output_dir, source)
        for _ in range(500):
            if os.path.exists(stored):
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        report(
            "instance whole, its filing held 3 s (--idle-timeout 1): the sender "
            + ("saw Success" if "Received Store Response (Success)" in text else "did NOT see Success")
            + f"; the file is {'stored' if os.path.exists(stored) else 'absent'}"
        )
        self.assertEqual(code, 0, text)
        self.assertIn("Received Store Response (Success)", text)
        self.assertTrue(dicomfiles.same_data_set(stored, source))



class LimitTests(SynchronousTestCase):
    """Many connections, many associations, many large transfers."""

    def setUp(self):
        self.scratch = make_scratch(self)
        self.output = os.path.join(self.scratch, "received")

    def test_500_idle_connections_do_not_stop_storing(self):
        """
        500 TCP connections that never send a byte are all accepted (the
        server runs with 1024 file descriptors, and --max-pending 600 over
        its default of 256) and do not count against --max-conns 10: ten
        storescu associations at once store all their files; exactly ten
        associations are admitted beside them, the eleventh rejected; the
        500 are still open afterwards.
        """
        idle_count = 500
        raise_own_fd_limit(self, idle_count + 200)
        server = ServerProcess(
            self, self.output, "--artim-timeout", "300", "--max-pending", "600",
            log_path=os.path.join(self.scratch, "server.log"), open_files=1024,
        )
        with open(f"/proc/{server.pid}/limits") as limits:
            line = next(line for line in limits if line.startswith("Max open files"))
        self.assertEqual(line.split()[3], "1024", line)
        listening = open_sockets(server.pid)
        baseline_rss = server.status("VmRSS")

        idle = []

        def close_idle():
            for sock in idle:
                sock.close()

        self.addCleanup(close_idle)
        for _ in range(idle_count):
            idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
        wait_until(lambda: open_sockets(server.pid) >= listening + idle_count, 30, "the server to accept them all")
        idle_rss = server.status("VmRSS")

        folders = [os.path.join(self.scratch, f"sender-{index}") for index in range(10)]
        batches = [
            dicomfiles.write_ct_series(folder, 5, rows=256, columns=256, seed=500 + index)
            for index, folder in enumerate(folders)
        ]
        started = time.monotonic()
        senders = [
            Storescu(self, server.port, files, os.path.join(self.scratch, f"storescu-{index}.log"))
            for index, files in enumerate(batches)
        ]
        for sender in senders:
            self.assertEqual(sender.wait(120), 0, sender.text())
        elapsed = time.monotonic() - started
        for sender in senders:
            self.assertEqual(sender.successes(), 5, sender.text())
        for source in (source for files in batches for source in files):
            self.assertTrue(dicomfiles.same_data_set(organized_path(self.output, source), source), source)
        self.assertEqual(walk_files(self.output)[1], set())

        # Exactly --max-conns associations are admitted beside the 500:
        # ten held open, the eleventh is rejected (transient, local limit
        # exceeded), and once one is released another is accepted.
        held = []

        def release_held():
            for peer in held:
                peer.close()

        self.addCleanup(release_held)
        for _ in range(10):
            peer = RawAssociation(server.port)
            held.append(peer)
            peer.associate()
        extra = RawAssociation(server.port)
        self.addCleanup(extra.close)
        extra.send(associate_rq(called_ae_title=SERVER_AE, calling_ae_title=CALLING_AE).encode())
        reject = extra.expect(AAssociateRJ)
        self.assertEqual((reject.result, reject.source, reject.reason), (2, 3, 2))
        extra.close()
        held[0].send(RELEASE_RQ)
        held[0].expect(AReleaseRP)
        held.pop(0).close()
        wait_until(lambda: open_sockets(server.pid) <= listening + idle_count + len(held), 10, "the release")
        echo_association(server.port)
        for peer in held:
            peer.send(RELEASE_RQ)
            peer.expect(AReleaseRP)
        release_held()

        # The idle connections are all still there, silent.
        for sock in idle:
            sock.setblocking(False)
            with self.assertRaises(BlockingIOError):
                sock.recv(1)
        self.assertGreaterEqual(open_sockets(server.pid), listening + idle_count)
        # radx flushes its console a tenth of a second after a line, not at once.
        text = server.wait_for_text("Association rejected", 10)
        self.assertEqual(text.count("Association rejected"), 1, text)
        self.assertIn("local limit exceeded: 10 associations already open (--max-conns 10)", text)
        self.assertNotIn("No A-ASSOCIATE-RQ", text)
        report(
            f"{idle_count} idle connections: server VmRSS {baseline_rss / MIB:.1f} -> {idle_rss / MIB:.1f} MiB; "
            f"10 storescu x 5 images at once alongside them in {elapsed:.1f} s"
        )
        close_idle()
        wait_until(lambda: open_sockets(server.pid) == listening, 30, "the idle connections to be closed")
        code, _ = server.stop()
        self.assertEqual(code, 0, server.text())
        self.assertEqual(shutdown_counts(server.text()), (1, 50, 50))

    def test_1000_associations_leave_memory_where_it_was(self):
        """
        1,000 associations in a row (A-ASSOCIATE, one C-ECHO, A-RELEASE,
        over raw sockets), after 100 to warm up: the server's VmRSS grows
        by less than 5 MiB, and it holds no more sockets than before.
        """
        server = ServerProcess(self, self.output, log_path=os.path.join(self.scratch, "server.log"))
        listening = open_sockets(server.pid)
        for _ in range(100):
            echo_association(server.port)
        wait_until(lambda: open_sockets(server.pid) == listening, 10, "the warm-up connections to close")
        before = server.status("VmRSS")
        started = time.monotonic()
        for _ in range(1000):
            echo_association(server.port)
        elapsed = time.monotonic() - started
        wait_until(lambda: open_sockets(server.pid) == listening, 10, "the connections to close")
        after = server.status("VmRSS")
        peak = server.status("VmHWM")
        report(
            f"1000 associations in {elapsed:.1f} s ({1000 / elapsed:.0f}/s): server VmRSS "
            f"{before / MIB:.2f} MiB after 100, {after / MIB:.2f} MiB after 1100 "
            f"({(after - before) / 1024:+.0f} KiB); VmHWM {peak / MIB:.2f} MiB"
        )
        self.assertLess(after - before, 5 * MIB)
        code, _ = server.stop()
        self.assertEqual(code, 0, server.text())
        self.assertEqual(shutdown_counts(server.text()), (1100, 0, 0))
        self.assertEqual(server.text().count("INFO: Association accepted"), 1100)

    def test_10_concurrent_1_gib_transfers_in_bounded_memory(self):
        """
        Ten storescu processes send the same 1 GiB instance at once (fsync
        on, the real disk): all get Success, the server's peak RSS stays
        under 300 MB, the file kept is the instance bit for bit (each
        store replaced it atomically) and no temporary file is left.
        """
        started = time.monotonic()
        large = dicomfiles.write_large_multiframe(os.path.join(self.scratch, "large.dcm"), GIB, seed=403)
        generated = time.monotonic() - started
        server = ServerProcess(self, self.output, log_path=os.path.join(self.scratch, "server.log"))
        baseline = server.status("VmHWM")
        started = time.monotonic()
        senders = [
            Storescu(self, server.port, [large], os.path.join(self.scratch, f"storescu-{index}.log"))
            for index in range(10)
        ]
        for sender in senders:
            self.assertEqual(sender.wait(900), 0, sender.text())
        elapsed = time.monotonic() - started
        peak = server.status("VmHWM")
        for sender in senders:
            self.assertEqual(sender.successes(), 1, sender.text())
        size = os.path.getsize(large)
        report(
            f"10 x 1 GiB at once: server VmHWM {peak / MIB:.1f} MiB (after start {baseline / MIB:.1f} MiB); "
            f"{elapsed:.1f} s, {10 * size / elapsed / 1e6:.0f} MB/s in all; file made in {generated:.1f} s"
        )
        self.assertLess(peak, 300 * 1000 * 1000)
        received = organized_path(self.output, large)
        self.assertEqual(walk_files(self.output), ({os.path.relpath(received, self.output)}, set()))
        self.assertTrue(dicomfiles.same_data_set(received, large))
        code, _ = server.stop()
        self.assertEqual(code, 0, server.text())
        self.assertEqual(shutdown_counts(server.text()), (0, 10, 10))
        self.assertEqual(server.text().count("INFO: Replaced existing file"), 9)
