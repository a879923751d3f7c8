"""`radx dicom scp --workers N` and `twistd radx-scp --workers N`: the supervisor and its workers as real processes.

Which worker accepts a connection is the kernel's choice. The tests
assert on totals, or make the choice themselves: while a connection is
made, every other worker is stopped (SIGSTOP), so the one left accepts
it. Every server listens on 127.0.0.1, in a temporary folder; every wait
is bounded; what a test starts is killed in cleanup if it is left running.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import signal
import socket
import subprocess
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from radx import uids
from radx.dimse.commands import decode_command
from radx.storage.store import INCOMING
from radx.testing import associate_rq, store_rq_bytes
from radx.ul.framing import PDUReader
from radx.ul.pdu import AAssociateAC, AAssociateRJ, AReleaseRQ, PDataTF
from tests import dicomfiles
from tests.hooktools import runs, write_hook
from tests.interop import DCMTK_ENV, listening_port, require_dcmtk, reserved_port
from tests.test_app_cli import radx_command
from tests import test_app_tap as tap_tests
from tests.test_app_tap import alive, read, twistd_command

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
# A bound on each wait, so that a broken server fails the test rather than hanging it.
WAIT = 60.0
READY = "Press Ctrl+C to stop the server...\n"
WORKER_STARTED = re.compile(r"Worker (\d+) started pid=(\d+)")


def wait_until(predicate, what: str, describe=lambda: ""):
    return tap_tests.wait_until(predicate, WAIT, what, describe)


class Server:
    """A server with workers, its log in a file (JSON lines by default), the rest of its console in another."""

    def __init__(self, case, *arguments: str, workers: str = "2", json_log: bool = True, twistd: bool = False) -> None:
        self.case = case
        self.folder = os.path.abspath(case.mktemp())
        os.makedirs(self.folder)
        self.output_dir = os.path.join(self.folder, "received")
        self.log_path = os.path.join(self.folder, "log")
        self.console_path = os.path.join(self.folder, "console")
        self.json_log = json_log
        common = ["--output-dir", self.output_dir, "--workers", workers, *(["--log-format", "json"] if json_log else [])]
        if twistd:
            self.port = reserved_port(case)
            command = twistd_command("-n", "--logfile", self.log_path, "radx-scp", str(self.port), "--bind", "127.0.0.1", *common, *arguments)
        else:
            command = radx_command("dicom", "scp", "0", "--bind", "127.0.0.1", *common, *arguments)
        with open(self.console_path, "wb") as console, open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                stdout=console if twistd else log,
                stderr=console,
            )
        case.addCleanup(self.kill)
        if not twistd:
            # The banner: in the console, with the log as JSON lines; among the lines, as text.
            banner_path = self.console_path if json_log else self.log_path
            wait_until(lambda: READY in read(banner_path) or self.process.poll() is not None, "banner", self.describe)
            if self.process.poll() is not None:
                raise AssertionError(f"the server ended\n{self.describe()}")
            self.port = listening_port(read(banner_path))
        # The lines that say so may come a moment after the banner.
        wait_until(lambda: len(self.workers()) == int(workers) or self.process.poll() is not None, "workers", self.describe)
        if self.process.poll() is not None:
            raise AssertionError(f"the server ended\n{self.describe()}")

    def describe(self) -> str:
        return f"exit={self.process.poll()}\n--- console:\n{read(self.console_path)}\n--- log:\n{read(self.log_path)}"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(WAIT)

    def events(self) -> list[dict]:
        events = []
        for line in read(self.log_path).splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                pass
        return events

    def messages(self) -> list[str]:
        return [event["message"] for event in self.events()]

    def workers(self) -> dict[int, int]:
        """The pid of each worker, the latest one started."""
        found = {}
        text = "\n".join(self.messages()) if self.json_log else read(self.log_path)
        for match in WORKER_STARTED.finditer(text):
            found[int(match.group(1))] = int(match.group(2))
        return found

    def worker_of(self, association: "Association") -> int:
        """The worker that accepted ``association``, from its log line."""
        prefix = f"Association accepted peer=127.0.0.1:{association.local_port} "

        def find():
            for event in self.events():
                if event["message"].startswith(prefix):
                    return [event["worker"]]
            return None

        return wait_until(find, "Association accepted line", self.describe)[0]

    @contextlib.contextmanager
    def only(self, index: int):
        """Every other worker stopped (SIGSTOP) meanwhile: worker ``index`` accepts what connects."""
        others = [pid for other, pid in self.workers().items() if other != index]
        for pid in others:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in others:
                os.kill(pid, signal.SIGCONT)

    def wait_for_message(self, pattern: str) -> dict:
        compiled = re.compile(pattern)

        def find():
            return next((event for event in self.events() if compiled.search(event["message"])), None)

        return wait_until(find, f"log line {pattern!r}", self.describe)

    def stop(self, number: int = signal.SIGTERM) -> tuple[int, str]:
        """Signal the supervisor; its exit status and its console."""
        self.process.send_signal(number)
        code = self.process.wait(WAIT)
        return code, read(self.console_path)


class Association:
    """An association from a raw socket (radx's own encoders): opened at once, kept until told."""

    def __init__(self, port: int, calling_ae_title: str = "RAW-SCU") -> None:
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.local_port = self.socket.getsockname()[1]
        self._reader = PDUReader(maximum_pdata_length=0)
        self._pdus: list = []
        self._message_id = 0
        request = associate_rq(
            called_ae_title="RADX-SCP",
            calling_ae_title=calling_ae_title,
            contexts=[(1, uids.VERIFICATION_SOP_CLASS, (uids.IMPLICIT_VR_LITTLE_ENDIAN,)), (3, CT_IMAGE_STORAGE, (EXPLICIT_VR_LITTLE_ENDIAN,))],
        )
        self.socket.sendall(request.encode())
        self.answer = self.read()

    @property
    def accepted(self) -> bool:
        return isinstance(self.answer, AAssociateAC)

    def read(self):
        while not self._pdus:
            data = self.socket.recv(65536)
            if not data:
                raise ConnectionError("closed by the server")
            self._pdus.extend(self._reader.feed(data))
        return self._pdus.pop(0)

    def store(self, path: str) -> int:
        """C-STORE one file; the status of the response."""
        _, _, sop_instance_uid = dicomfiles.instance_uids(path)
        self._message_id += 1
        self.socket.sendall(
            store_rq_bytes(dicomfiles.data_set_as_sent(path), CT_IMAGE_STORAGE, sop_instance_uid, context_id=3, message_id=self._message_id)
        )
        while True:
            pdu = self.read()
            if isinstance(pdu, PDataTF):
                return decode_command(bytes(pdu.items[0].data)).status

    def release(self) -> None:
        self.socket.sendall(AReleaseRQ().encode())
        self.read()
        self.socket.close()

    def close(self) -> None:
        self.socket.close()


def ct_files(case, count: int, seed: int, size: int = 64) -> list[str]:
    return dicomfiles.write_ct_series(case.mktemp(), count, rows=size, columns=size, seed=seed)


def assert_stored(case, output_dir: str, sources: list[str]) -> None:
    """Each source's data set, byte for byte, where the reference files it."""
    for source in sources:
        study, series, sop_instance = dicomfiles.instance_uids(source)
        received = os.path.join(output_dir, study, series, f"{sop_instance}.dcm")
        case.assertTrue(os.path.exists(received), received)
        case.assertTrue(dicomfiles.same_data_set(received, source), received)


def send_at_once(case, server: Server, groups: list[list[str]]) -> None:
    """DCMTK's storescu, a process for each group of files, all at once; each must succeed."""
    storescu = require_dcmtk("storescu")
    senders = [
        subprocess.Popen([storescu, "-aec", "RADX-SCP", "127.0.0.1", str(server.port), *files], env=DCMTK_ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
        for files in groups
    ]
    for sender in senders:
        output = sender.communicate(timeout=WAIT)[0]
        case.assertEqual(sender.returncode, 0, output)


def pids_gone(pids) -> bool:
    return not any(alive(pid) for pid in pids)


class ConcurrentStoreTests(SynchronousTestCase):
    def test_four_storescu_at_once(self):
        """Four storescu processes at once: every file stored byte for byte, one banner, the totals in one statistics line and the shutdown block."""
        groups = [ct_files(self, 6, seed=seed, size=128 if seed else 512) for seed in range(4)]
        server = Server(self, "--stats-interval", "0.5", json_log=False)
        send_at_once(self, server, groups)
        sources = [path for files in groups for path in files]
        assert_stored(self, server.output_dir, sources)
        self.assertEqual(os.listdir(os.path.join(server.output_dir, INCOMING)), [])
        # The statistics line counts every worker's instances: the supervisor's, one for all.
        wait_until(
            lambda: "INFO: Server statistics echo_count=0 store_count=24 store_failures=0\n" in read(server.log_path),
            "statistics line with the totals",
            server.describe,
        )
        code, _ = server.stop(signal.SIGINT)
        self.assertEqual(code, 0, server.describe())
        log = read(server.log_path)
        self.assertEqual(log.count("✓ DICOM SCP server started"), 1, log)
        self.assertEqual(log.count("INFO: Stored DICOM file path="), 24, log)
        self.assertEqual(log.count("INFO: Association accepted peer=127.0.0.1:"), 4, log)
        self.assertEqual(log.count("Server shutting down..."), 1, log)
        self.assertIn("\n  C-ECHO Requests:    0\n  C-STORE Requests:   24\n  Successful Stores:  24\n", log)
        # Each statistics line is the supervisor's: as many as intervals, never one a worker.
        lines = [line for line in log.splitlines() if line.startswith("INFO: Server statistics")]
        counts = [int(re.search(r"store_count=(\d+)", line).group(1)) for line in lines]
        self.assertEqual(counts, sorted(counts))

    def test_catalogue_written_by_every_worker(self):
        """--catalogue (SQLite): each worker records its instances; the catch-up at start runs once, in the supervisor."""
        import sqlite3

        groups = [ct_files(self, 5, seed=30 + seed) for seed in range(4)]
        database = os.path.abspath(self.mktemp()) + ".db"
        server = Server(self, "--catalogue", database)
        send_at_once(self, server, groups)
        code, console = server.stop()
        self.assertEqual(code, 0, server.describe())
        self.assertIn("  Successful Stores:  20\n  Not Catalogued:     0\n", console)
        with contextlib.closing(sqlite3.connect(database)) as connection:
            uids = {row[0] for row in connection.execute("SELECT sop_instance_uid FROM dicom_metadata")}
        self.assertEqual(uids, {dicomfiles.instance_uids(path)[2] for files in groups for path in files})
        caught_up = [event for event in server.events() if event["message"].startswith("Catalogue brought up to date")]
        self.assertEqual(len(caught_up), 1)
        self.assertNotIn("worker", caught_up[0])

    def test_json_lines_name_the_worker(self):
        """With --log-format json, a worker's line says which worker it came from; the supervisor's do not."""
        server = Server(self)
        first = Association(server.port)
        self.assertTrue(first.accepted)
        worker = server.worker_of(first)
        first.release()
        self.assertIn(worker, (0, 1))
        started = [event for event in server.events() if WORKER_STARTED.match(event["message"])]
        self.assertEqual(len(started), 2)
        self.assertTrue(all(event["namespace"] == "radx.scp.workers" for event in started))
        code, console = server.stop()
        self.assertEqual(code, 0, server.describe())
        self.assertEqual(console.count("✓ DICOM SCP server started"), 1, console)


class KilledWorkerTests(SynchronousTestCase):
    def test_kill_9_mid_transfer(self):
        """A worker killed -9 in the middle of an instance: each instance answered Success is whole on disk; another worker takes its place and serves."""
        files = ct_files(self, 12, seed=7, size=256)
        server = Server(self)
        association = Association(server.port)
        self.assertTrue(association.accepted, server.describe())
        index = server.worker_of(association)
        pid = server.workers()[index]
        succeeded = []
        for path in files[:8]:
            self.assertEqual(association.store(path), 0x0000)
            succeeded.append(path)
        # Half of the next instance, then the worker is killed.
        _, _, sop_instance = dicomfiles.instance_uids(files[8])
        message = store_rq_bytes(dicomfiles.data_set_as_sent(files[8]), CT_IMAGE_STORAGE, sop_instance, context_id=3, message_id=99)
        association.socket.sendall(message[: len(message) // 2])
        os.kill(pid, signal.SIGKILL)
        with self.assertRaises(OSError):
            association.socket.sendall(message[len(message) // 2 :])
            association.read()
        association.close()
        assert_stored(self, server.output_dir, succeeded)
        study, series, _ = dicomfiles.instance_uids(files[8])
        self.assertFalse(os.path.exists(os.path.join(server.output_dir, study, series, f"{sop_instance}.dcm")))
        server.wait_for_message(rf"^Worker {index} pid={pid} ended: killed by signal 9 \(SIGKILL\); starting another in its place( in [0-9.]+ s)?$")
        replacement = wait_until(lambda: server.workers()[index] != pid and server.workers()[index], "replacement worker", server.describe)
        self.assertNotEqual(replacement, pid)
        # The new worker serves: with the other stopped, it accepts.
        wait_until(lambda: f"Worker {index} started pid={replacement}" in server.messages(), "its start", server.describe)
        with server.only(index):
            again = Association(server.port)
        self.assertTrue(again.accepted)
        self.assertEqual(server.worker_of(again), index)
        self.assertEqual(again.store(files[9]), 0x0000)
        again.release()
        assert_stored(self, server.output_dir, [files[9]])
        code, console = server.stop()
        self.assertEqual(code, 0, server.describe())
        self.assertTrue(pids_gone(server.workers().values()))
        # The killed worker's instances up to its last report, and the new one's.
        stored = int(re.search(r"Successful Stores:  (\d+)", console).group(1))
        self.assertGreaterEqual(stored, 1)
        self.assertLessEqual(stored, 9)

    def test_supervisor_killed(self):
        """The supervisor killed -9: its workers do not linger, and the next supervisor removes the folder it left."""
        server = Server(self)
        pids = list(server.workers().values())
        self.assertEqual(len(pids), 2)
        # Its private folder, in shared memory (or the temporary folder).
        [left] = glob.glob(f"/dev/shm/radx-workers-{server.process.pid}-*") + glob.glob(f"/tmp/radx-workers-{server.process.pid}-*")
        server.process.kill()
        server.process.wait(WAIT)
        wait_until(lambda: pids_gone(pids), "end of the workers", server.describe)
        self.assertTrue(os.path.isdir(left))
        again = Server(self)
        self.assertFalse(os.path.exists(left))
        code, _ = again.stop()
        self.assertEqual(code, 0, again.describe())


class MaxConnsTests(SynchronousTestCase):
    def test_limit_over_all_workers(self):
        """--max-conns 2 with an association on each worker: a third is rejected, whichever worker it reaches."""
        server = Server(self, "--max-conns", "2")
        first = Association(server.port, "FIRST")
        self.assertTrue(first.accepted, server.describe())
        one = server.worker_of(first)
        with server.only(1 - one):
            second = Association(server.port, "SECOND")
        self.assertTrue(second.accepted, server.describe())
        self.assertEqual(server.worker_of(second), 1 - one)
        third = Association(server.port, "THIRD")
        # PS3.8 9.3.4: rejected-transient, service-provider (presentation related), local-limit-exceeded.
        self.assertIsInstance(third.answer, AAssociateRJ)
        self.assertEqual((int(third.answer.result), int(third.answer.source), int(third.answer.reason)), (2, 3, 2))
        third.close()
        server.wait_for_message(
            r"^Association rejected peer=127\.0\.0\.1:\d+ calling_ae=THIRD called_ae=RADX-SCP result=2 source=3 reason=2:"
            r" local limit exceeded: 2 associations already open \(--max-conns 2\)$"
        )
        first.release()
        # Its place is free once the worker has seen the connection close.
        def accepted():
            fourth = Association(server.port, "FOURTH")
            if fourth.accepted:
                return fourth
            fourth.close()
            return None

        fourth = wait_until(accepted, "association after a release", server.describe)
        second.release()
        fourth.release()
        code, _ = server.stop()
        self.assertEqual(code, 0, server.describe())


class HookTests(SynchronousTestCase):
    def test_one_study_over_two_workers(self):
        """A study sent over two associations on different workers: one study hook run, for all its instances; a store hook each."""
        hook, record = write_hook(os.path.abspath(self.mktemp()))
        files = ct_files(self, 8, seed=11)
        server = Server(
            self,
            "--exec-on-study", f"{hook} study #{{StudyInstanceUID}} #{{count}}",
            "--exec-on-store", f"{hook} store #{{SOPInstanceUID}}",
            "--study-timeout", "8",
        )  # fmt: skip
        first = Association(server.port)
        one = server.worker_of(first)
        with server.only(1 - one):
            second = Association(server.port)
        self.assertEqual(server.worker_of(second), 1 - one)
        for association, part in ((first, files[:3]), (second, files[3:6]), (first, files[6:])):
            for path in part:
                self.assertEqual(association.store(path), 0x0000)
        first.release()
        second.release()
        study, _, _ = dicomfiles.instance_uids(files[0])
        wait_until(lambda: [run for run in runs(record) if run["kind"] == "study"], "study hook", server.describe)
        wait_until(lambda: len(runs(record)) == 9, "every hook", server.describe)
        [study_run] = [run for run in runs(record) if run["kind"] == "study"]
        self.assertEqual(study_run["argv"], ["study", study, "8"])
        stored = sorted(run["argv"][1] for run in runs(record) if run["kind"] == "store")
        self.assertEqual(stored, sorted(dicomfiles.instance_uids(path)[2] for path in files))
        complete = server.wait_for_message(rf"^Study complete after 8 s of quiet uid={re.escape(study)} count=8$")
        self.assertNotIn("worker", complete)
        code, console = server.stop()
        self.assertEqual(code, 0, server.describe())
        self.assertIn("  Hooks Succeeded:    9\n  Hooks Failed:       0\n", console)


class TwistdTests(SynchronousTestCase):
    def test_twistd_with_workers(self):
        """twistd radx-scp --workers 2: its log holds the supervisor's lines and each worker's."""
        echoscu = require_dcmtk("echoscu")
        server = Server(self, twistd=True, json_log=False)
        done = subprocess.run([echoscu, "-aec", "RADX-SCP", "127.0.0.1", str(server.port)], env=DCMTK_ENV, capture_output=True, timeout=WAIT)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        wait_until(lambda: "C-ECHO request received calling_ae=ECHOSCU count=1" in read(server.log_path), "echo line", server.describe)
        pids = list(server.workers().values())
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(WAIT)
        log = read(server.log_path)
        self.assertIn("[radx.scp.protocol.AssociationProtocol#info] Association accepted peer=127.0.0.1:", log)
        self.assertIn("[radx.scp.workers#info] Worker 0 started pid=", log)
        self.assertIn("[radx.scp.workers#info] Worker 1 started pid=", log)
        self.assertTrue(pids_gone(pids))


def scrape(address: str, path: str = "/metrics") -> tuple[int, str]:
    """An HTTP GET of the supervisor's: its status and its text."""
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=WAIT) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


class MetricsTests(SynchronousTestCase):
    def test_metrics_over_workers(self):
        """/metrics, served by the supervisor, counts what every worker did, a worker that was killed included."""
        groups = [ct_files(self, 5, seed=20 + seed) for seed in range(3)]
        server = Server(self, "--http", "tcp:0:interface=127.0.0.1")
        address = re.search(r"HTTP Address:      (\S+)", read(server.console_path)).group(1)
        send_at_once(self, server, groups)

        def values(text: str) -> dict[str, float]:
            found = {}
            for line in text.splitlines():
                if line and not line.startswith("#"):
                    name, value = line.rsplit(" ", 1)
                    found[name] = float(value)
            return found

        expected = {
            "radx_c_store_requests_total": 15.0,
            "radx_associations_accepted_total": 3.0,
            'radx_c_store_responses_total{calling_ae="STORESCU",status="0000"}': 15.0,
            "radx_storage_seconds_count": 15.0,
        }
        status, text = scrape(address)
        self.assertEqual(status, 200)
        seen = values(text)
        self.assertEqual({name: seen.get(name) for name in expected}, expected, text)
        self.assertEqual(scrape(address, "/readyz"), (200, "ready\n"))
        # A worker killed: its counts stay in the sums.
        index, pid = next(iter(server.workers().items()))
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: server.workers()[index] != pid, "replacement worker", server.describe)
        seen = values(scrape(address)[1])
        self.assertEqual({name: seen.get(name) for name in expected}, expected)
        code, _ = server.stop()
        self.assertEqual(code, 0, server.describe())



class TLSTests(SynchronousTestCase):
    def test_tls_port_beside_the_plain_one(self):
        """--tls-cert with --tls-port: each worker serves both; a client certificate reaches the audit record."""
        from tests.certificates import PKI

        echoscu = require_dcmtk("echoscu")
        pki = PKI(os.path.abspath(self.mktemp()))
        server = Server(self, "--tls-cert", pki.server.cert, "--tls-key", pki.server.key, "--tls-ca", pki.ca.cert, "--tls-port", "0")
        tls_port = int(re.search(r"TLS Address:       127\.0\.0\.1:(\d+) \(client certificate required\)", read(server.console_path)).group(1))
        secure = ["+tls", pki.client.key, pki.client.cert, "+cf", pki.ca.cert]
        for port, options in ((tls_port, secure), (server.port, [])):
            done = subprocess.run([echoscu, *options, "-aec", "RADX-SCP", "127.0.0.1", str(port)], env=DCMTK_ENV, capture_output=True, timeout=WAIT)
            self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        audits = wait_until(lambda: len([e for e in server.events() if e.get("audit")]) == 2 and [e for e in server.events() if e.get("audit")], "audit records", server.describe)
        self.assertEqual(sorted(audit["tls_subject"] for audit in audits), sorted(["-", pki.client.subject]))
        code, _ = server.stop()
        self.assertEqual(code, 0, server.describe())


class DrainTests(SynchronousTestCase):
    def test_stop_lets_an_instance_in_progress_finish(self):
        """SIGTERM with an instance half sent: /readyz says draining, the instance gets its Success, then the totals."""
        files = ct_files(self, 1, seed=40, size=256)
        server = Server(self, "--http", "tcp:0:interface=127.0.0.1")
        address = re.search(r"HTTP Address:      (\S+)", read(server.console_path)).group(1)
        association = Association(server.port)
        self.assertTrue(association.accepted)
        _, _, sop_instance = dicomfiles.instance_uids(files[0])
        message = store_rq_bytes(dicomfiles.data_set_as_sent(files[0]), CT_IMAGE_STORAGE, sop_instance, context_id=3, message_id=1)
        association.socket.sendall(message[: len(message) // 2])
        server.wait_for_message(r"^C-STORE request received calling_ae=RAW-SCU ")
        server.process.send_signal(signal.SIGTERM)
        # The supervisor stays up while its workers drain; its /readyz says why it takes nothing new.
        wait_until(lambda: scrape(address, "/readyz") == (503, "draining: the server is shutting down\n"), "503", server.describe)
        association.socket.sendall(message[len(message) // 2 :])
        while True:
            pdu = association.read()
            if isinstance(pdu, PDataTF):
                break
        self.assertEqual(decode_command(bytes(pdu.items[0].data)).status, 0x0000)
        association.close()
        code = server.process.wait(WAIT)
        self.assertEqual(code, 0, server.describe())
        assert_stored(self, server.output_dir, files)
        self.assertIn("  C-STORE Requests:   1\n  Successful Stores:  1\n", read(server.console_path))
