"""The parts of --workers, in one process with no socket: the worker's factory and events, the supervisor's pool."""

from __future__ import annotations

import json
import os
import sys
import threading

from twisted.internet import task
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from radx.app import slots
from radx.app.channel import FrameDecoder
from radx.app.tap import StartupError
from radx.app.workerpool import RESTART_FIRST_S, WorkerPool
from radx.app.workerservice import EvenAccepts, RemoteEvents, WorkerFactory
from radx.scp.factory import ServerConfig
from radx.storage.errors import WriteFailed
from radx.testing import ScpHarness, associate_rq
from radx.ul.pdu import AAssociateAC, AAssociateRJ
from tests.test_scp_hooks_clock import FakeStored, FakeWriter
from tests.test_scp_protocol import LogCapture, PDUReaderFor


class SharedLimitTests(SynchronousTestCase):
    """--max-conns over two workers' factories that share one table."""

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        slots.create(self.path, 2)
        self.log = LogCapture(self)
        self.workers = [self.worker(slot) for slot in range(2)]
        self.table = slots.AssociationSlots(self.path)
        self.addCleanup(self.table.close)

    def worker(self, slot: int) -> ScpHarness:
        output = os.path.abspath(self.mktemp())
        harness = ScpHarness(ServerConfig(output_dir=output, max_conns=2), factory_class=WorkerFactory)
        harness.factory.slots = slots.AssociationSlots(self.path, slot)
        self.addCleanup(harness.factory.slots.close)
        return harness

    def test_third_association_refused_by_either(self):
        first, second = self.workers
        first.send(associate_rq().encode())
        second.send(associate_rq().encode())
        self.assertIsInstance(first.received_pdus()[0], AAssociateAC)
        self.assertIsInstance(second.received_pdus()[0], AAssociateAC)
        self.assertEqual(self.table.total(), 2)
        # Each worker has one: alone, either would take another.
        for harness in self.workers:
            third = harness.connect(("127.0.0.1", 40001))
            third.dataReceived(associate_rq().encode())
            # PS3.8 9.3.4: rejected-transient, service-provider (presentation), local-limit-exceeded.
            self.assertEqual(PDUReaderFor(third), [AAssociateRJ(2, 3, 2)])
        self.assertIn("local limit exceeded: 2 associations already open (--max-conns 2)", " ".join(self.log.messages()))
        # The first ends: its place is free for the other worker.
        first.disconnect()
        self.assertEqual(self.table.total(), 1)
        again = second.connect(("127.0.0.1", 40002))
        again.dataReceived(associate_rq().encode())
        self.assertIsInstance(PDUReaderFor(again)[0], AAssociateAC)
        self.assertEqual(self.table.total(), 2)

    def test_rejected_by_the_service_user_gives_its_place_back(self):
        first, _ = self.workers
        first.send(associate_rq(called_ae_title="SOMEONE-ELSE").encode())
        [answer] = first.received_pdus()
        self.assertIsInstance(answer, AAssociateRJ)
        self.assertEqual(int(answer.source), 1)
        self.assertEqual(self.table.total(), 0)

    def test_a_connection_that_never_associated_takes_no_place(self):
        first, _ = self.workers
        first.disconnect()
        self.assertEqual(self.table.total(), 0)


class FakePort:
    """A listening port as EvenAccepts sees it: reading or not, and how many it may accept."""

    connected = True
    disconnecting = False

    def __init__(self) -> None:
        self.reading = True
        self.accepted: list[int] = []
        self.numberAccepts = 100

    def doRead(self):
        self.accepted.append(self.numberAccepts)

    def stopReading(self) -> None:
        self.reading = False

    def startReading(self) -> None:
        self.reading = True


class EvenAcceptsTests(SynchronousTestCase):
    def setUp(self) -> None:
        path = os.path.abspath(self.mktemp())
        slots.create(path, 2)
        self.mine, self.other = (slots.AssociationSlots(path, slot) for slot in range(2))
        self.addCleanup(self.mine.close)
        self.addCleanup(self.other.close)
        self.clock = task.Clock()
        self.port = FakePort()
        EvenAccepts(self.clock, self.mine).watch(self.port)

    def test_one_at_a_time(self):
        self.port.doRead()
        self.port.doRead()
        self.assertEqual(self.port.accepted, [1, 1])

    def test_the_busier_lets_the_other_accept(self):
        self.mine.set_connections(2)
        self.other.set_connections(1)
        self.port.doRead()
        self.assertEqual((self.port.accepted, self.port.reading), ([], False))
        # It looks again a moment later; the other took the connection meanwhile and is as busy.
        self.other.set_connections(2)
        self.clock.advance(EvenAccepts.DEFER_S)
        self.assertTrue(self.port.reading)
        self.port.doRead()
        self.assertEqual(self.port.accepted, [1])

    def test_not_longer_than_a_bound(self):
        """The other does not accept (stopped, stuck): the connection is taken after MOST_S all the same."""
        self.mine.set_connections(1)
        self.other.set_connections(0)
        while not self.port.accepted:
            self.port.doRead()
            self.clock.advance(EvenAccepts.DEFER_S)
        self.assertGreaterEqual(self.clock.seconds(), EvenAccepts.MOST_S)
        self.assertLess(self.clock.seconds(), EvenAccepts.MOST_S + 2 * EvenAccepts.DEFER_S)

    def test_a_port_closed_meanwhile_is_left_closed(self):
        self.mine.set_connections(1)
        self.other.set_connections(0)
        self.port.doRead()
        self.port.connected = False
        self.clock.advance(EvenAccepts.DEFER_S)
        self.assertFalse(self.port.reading)


class FakeChannel:
    def __init__(self) -> None:
        self.sent: list = []
        self.arrived = threading.Event()

    def send(self, message) -> None:
        self.sent.append(message)
        self.arrived.set()


class RemoteEventsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.channel = FakeChannel()
        self.events = RemoteEvents(task.Clock(), self.channel)
        self.patch(sys.modules["radx.scp.hooks"], "_study_and_series", lambda writer, path: ("1.2", "1.2.3"))

    def record_in_a_thread(self) -> list:
        """record(), as a storage thread calls it; its outcome in the list returned once it ends."""
        outcome: list = []

        def record():
            try:
                self.events.record(FakeWriter("1.2.3.4"), FakeStored("/out/1.2/1.2.3/1.2.3.4.dcm"), "MOD", "RADX-SCP", "[::1]:4000")
            except WriteFailed as error:
                outcome.append(error)
            else:
                outcome.append(None)

        self.thread = threading.Thread(target=record)
        self.thread.start()
        self.assertTrue(self.channel.arrived.wait(30))
        return outcome

    def test_waits_for_the_supervisor(self):
        """The storage thread goes on once the supervisor says the instance is durable in its journal."""
        outcome = self.record_in_a_thread()
        [(kind, number, instance)] = self.channel.sent
        self.assertEqual((kind, number), ("stored", 1))
        self.assertEqual(
            {key: instance[key] for key in ("path", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "calling_ae_title", "remote")},
            {"path": "/out/1.2/1.2.3/1.2.3.4.dcm", "StudyInstanceUID": "1.2", "SeriesInstanceUID": "1.2.3",
             "SOPInstanceUID": "1.2.3.4", "calling_ae_title": "MOD", "remote": "::1"},
        )  # fmt: skip
        self.assertEqual(outcome, [])
        self.events.acknowledged(1, None)
        self.thread.join(30)
        self.assertEqual(outcome, [None])

    def test_not_durable_no_success(self):
        outcome = self.record_in_a_thread()
        self.events.acknowledged(1, "No space left on device")
        self.thread.join(30)
        [error] = outcome
        self.assertIsInstance(error, WriteFailed)
        self.assertEqual(error.message, "cannot record it in the events journal: No space left on device")

    def test_supervisor_gone(self):
        """Its pipe closed: what waits fails, and what comes later too."""
        outcome = self.record_in_a_thread()
        self.events.supervisor_gone()
        self.thread.join(30)
        self.assertIn("the supervisor is gone", outcome[0].message)
        self.assertRaises(WriteFailed, self.events.record, FakeWriter("1.2.3.5"), FakeStored("/out/x.dcm"), "MOD", "RADX-SCP", "peer")

    def test_answered(self):
        self.events.instance_answered("/out/x.dcm")
        self.assertEqual(self.channel.sent, [("answered", "/out/x.dcm")])


class FakeTransport:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.written: list = []
        self.signals: list = []

    def writeToChild(self, fd: int, data: bytes) -> None:
        self.written.extend(FrameDecoder().feed(data))

    def signalProcess(self, signal) -> None:
        self.signals.append(signal)


class PoolClock(task.Clock):
    """A Clock whose spawnProcess records each worker it is asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list = []

    def spawnProcess(self, protocol, executable, args=(), env=None, path=None, uid=None, gid=None, usePTY=0, childFDs=None):
        transport = FakeTransport(1000 + len(self.spawned))
        self.spawned.append((protocol, executable, list(args), env, childFDs))
        protocol.makeConnection(transport)
        return transport


def end(protocol, code: int = 0, signal=None) -> None:
    reason = ProcessDone(0) if code == 0 and signal is None else ProcessTerminated(code, signal)
    protocol.processEnded(Failure(reason))


def counts(*values):
    return (*values, 0, 0)


class WorkerPoolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = PoolClock()
        path = os.path.abspath(self.mktemp())
        slots.create(path, 2)
        self.table = slots.AssociationSlots(path)
        self.addCleanup(self.table.close)
        self.handled: list = []
        settings = {"arguments": ["0"], "parent": 1, "listeners": [(4, 2, "plain")], "slots": path, "levels": ["info", "warn"]}
        self.pool = WorkerPool(self.clock, 2, settings, [17], lambda worker, message: self.handled.append(message), self.table)
        self.logged: list = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def worker(self, index: int):
        return self.pool.workers[index]

    def say(self, index: int, *message) -> None:
        self.pool.received(self.worker(index), message)

    def started(self) -> None:
        self.pool.start()
        for index in range(2):
            self.say(index, "ready", 1000 + index)

    def messages(self) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(event) for event in self.logged if event.get("log_namespace") == "radx.scp.workers"]

    def test_spawned_with_the_sockets_and_settings(self):
        self.pool.start()
        protocol, executable, args, env, descriptors = self.clock.spawned[1]
        self.assertEqual(executable, sys.executable)
        self.assertEqual(args[-2:], ["-m", "radx.app.worker"])
        self.assertEqual(descriptors, {0: "w", 1: "r", 2: "r", 3: "r", 4: 17})
        settings = json.loads(env["RADX_WORKER"])
        self.assertEqual((settings["index"], settings["listeners"]), (1, [[4, 2, "plain"]]))
        import radx

        self.assertEqual(env["PYTHONPATH"].split(os.pathsep)[0], os.path.dirname(os.path.dirname(os.path.abspath(radx.__file__))))

    def test_ready_once_every_worker_is(self):
        self.pool.start()
        ready: list = []
        self.pool.ready.addCallback(ready.append)
        self.say(0, "ready", 1000)
        self.assertEqual(ready, [])
        self.say(1, "ready", 1001)
        self.assertEqual(ready, [None])
        self.assertEqual(self.messages(), ["Worker 0 started pid=1000", "Worker 1 started pid=1001"])

    def test_a_worker_that_does_not_start_fails_the_start(self):
        self.pool.start()
        failures: list = []
        self.pool.ready.addErrback(failures.append)
        self.worker(1).childDataReceived(2, b"Traceback (most recent call last):\nImportError: no radx\n")
        end(self.worker(1), code=1)
        [failure] = failures
        self.assertIsInstance(failure.value, StartupError)
        self.assertEqual(str(failure.value), "worker 1 did not start: ImportError: no radx")

    def test_totals_keep_what_ended_workers_counted(self):
        self.started()
        self.say(0, "stats", 0, False, counts(1, 10, 9, 1, 2, 5000, None))
        self.say(1, "stats", 0, False, (0, 5, 5, 0, 1, 2500, None, 1, 2))
        self.assertEqual(self.pool.totals(), [1, 15, 14, 1, 3, 7500, 0])
        self.assertEqual(self.pool.open_now(), (1, 2))
        table = slots.AssociationSlots(self.table_path(), 1)
        self.addCleanup(table.close)
        self.assertTrue(table.claim(10))
        self.clock.advance(5)
        end(self.worker(1), signal=9)
        # Its counts stay; its open ones go; its places in the table are free.
        self.assertEqual(self.pool.totals(), [1, 15, 14, 1, 3, 7500, 0])
        self.assertEqual(self.pool.open_now(), (0, 0))
        self.assertEqual(self.table.total(), 0)
        self.assertIn("Worker 1 pid=1001 ended: killed by signal 9 (SIGKILL); starting another in its place", self.messages())
        # Another, at once, in its place; it starts counting from nothing.
        self.clock.advance(0)
        self.assertEqual(len(self.clock.spawned), 3)
        self.say(1, "ready", 1002)
        self.say(1, "stats", 0, False, counts(0, 1, 1, 0, 1, 100, None))
        self.assertEqual(self.pool.totals(), [1, 16, 15, 1, 4, 7600, 0])

    def table_path(self) -> str:
        return json.loads(self.clock.spawned[0][3]["RADX_WORKER"])["slots"]

    def test_one_that_ends_young_waits_longer_each_time(self):
        self.started()
        end(self.worker(0), code=1)
        self.assertEqual(len(self.clock.spawned), 2)
        self.clock.advance(RESTART_FIRST_S)
        self.assertEqual(len(self.clock.spawned), 3)
        self.say(0, "ready", 1002)
        end(self.worker(0), code=1)
        self.clock.advance(RESTART_FIRST_S)
        self.assertEqual(len(self.clock.spawned), 3)
        self.clock.advance(RESTART_FIRST_S)
        self.assertEqual(len(self.clock.spawned), 4)

    def test_refresh(self):
        """Asked for their counts, it fires once each worker has answered, or one has ended, or the time is up."""
        self.started()
        done: list = []
        self.pool.refresh().addCallback(done.append)
        requests = [[m for m in self.worker(i).transport.written if m[0] == "report"] for i in range(2)]
        self.assertEqual(requests, [[("report", 1)], [("report", 1)]])
        self.say(0, "stats", 1, False, counts(1, 0, 0, 0, 1, 10, None))
        self.assertEqual(done, [])
        self.clock.advance(10)
        end(self.worker(1))
        self.say(0, "stats", 1, False, counts(1, 0, 0, 0, 1, 10, None))
        self.assertEqual(done, [None])
        second: list = []
        self.pool.refresh().addCallback(second.append)
        self.clock.advance(5)
        self.assertEqual(second, [None])

    def test_stop(self):
        self.started()
        stopped: list = []
        self.pool.stop(drain_timeout=30).addCallback(stopped.append)
        self.assertEqual([self.worker(i).transport.written[-1] for i in range(2)], [("stop",), ("stop",)])
        end(self.worker(0))
        self.assertEqual(stopped, [])
        # One that does not end after its drain and a grace is killed.
        self.clock.advance(30 + 15)
        self.assertEqual(self.worker(1).transport.signals, ["KILL"])
        end(self.worker(1), signal=9)
        self.assertEqual(stopped, [None])
        self.assertEqual(len(self.clock.spawned), 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_log_events_published_here(self):
        self.started()
        self.say(1, "log", 12.5, "warn", "radx.scp.protocol", "Peer {peer} slow", {"peer": "1.2.3.4:5"}, None, None, 1)
        [event] = [event for event in self.logged if event.get("log_namespace") == "radx.scp.protocol"]
        self.assertEqual((event["log_level"], event["peer"], event["worker"], event["log_time"]), (LogLevel.warn, "1.2.3.4:5", 1, 12.5))

    def test_log_lines_written_here(self):
        written = []
        self.pool.write_lines = written.append
        self.started()
        self.say(0, "lines", "INFO: one\nINFO: two\n")
        self.assertEqual(written, ["INFO: one\nINFO: two\n"])

    def test_other_messages_to_the_handler(self):
        self.started()
        self.say(0, "answered", "/out/x.dcm")
        self.assertEqual(self.handled, [("answered", "/out/x.dcm")])
