"""radx.app.channel and radx.app.logrelay: frames between supervisor and workers, and log events carried over them."""

from __future__ import annotations

import json
import os
import threading

from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from radx.app.channel import MAX_FRAME, ChannelError, ChannelWriter, FrameDecoder, encode
from radx.app.jsonlog import event_as_json
from radx.app.logformat import classic_text, format_event
from radx.app.logrelay import LogRelay, RelayedFailure, console_levels, event_from_message, event_message, worker_observer


def read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    data = b""
    try:
        while chunk := os.read(fd, 65536):
            data += chunk
    except BlockingIOError:
        pass
    return data


class FrameTests(SynchronousTestCase):
    def test_byte_at_a_time(self):
        messages = [("ready", 1234), ("stats", 0, False, (1, 2, 3, None)), ("stored", 7, {"path": "/x", "time": 1.5, "remote": None})]
        data = b"".join(encode(message) for message in messages)
        decoder = FrameDecoder()
        received = []
        for index in range(len(data)):
            received.extend(decoder.feed(data[index : index + 1]))
        self.assertEqual(received, messages)

    def test_several_in_one_piece(self):
        data = encode(("a", 1)) + encode(("b", 2)) + encode(("c",))[:3]
        decoder = FrameDecoder()
        self.assertEqual(decoder.feed(data), [("a", 1), ("b", 2)])
        self.assertEqual(decoder.feed(encode(("c",))[3:]), [("c",)])

    def test_length_past_the_bound(self):
        self.assertRaises(ChannelError, FrameDecoder().feed, (MAX_FRAME + 1).to_bytes(4, "big"))

    def test_not_a_message(self):
        for payload in (b"\xff\xff", __import__("marshal").dumps([1, 2]), __import__("marshal").dumps(())):
            frame = len(payload).to_bytes(4, "big") + payload
            self.assertRaises(ChannelError, FrameDecoder().feed, frame)


class ChannelWriterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.read_end, self.write_end = os.pipe()
        self.addCleanup(os.close, self.read_end)
        self.clock = Clock()
        self.writer = ChannelWriter(self.write_end, self.clock, delay=0.05)

    def tearDown(self) -> None:
        try:
            os.close(self.write_end)
        except OSError:
            pass

    def received(self) -> list:
        return FrameDecoder().feed(read_all(self.read_end))

    def test_send_writes_at_once(self):
        self.writer.send(("ready", 1))
        self.assertEqual(self.received(), [("ready", 1)])

    def test_send_soon_on_the_reactor_waits_for_the_delay(self):
        """Log lines from the reactor thread go out together, at most the delay later."""
        self.writer.send_soon(("log", 1))
        self.writer.send_soon(("log", 2))
        self.assertEqual(self.received(), [])
        self.clock.advance(0.05)
        self.assertEqual(self.received(), [("log", 1), ("log", 2)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_send_keeps_the_order(self):
        """A message sent at once goes after the lines kept before it."""
        self.writer.send_soon(("log", 1))
        self.writer.send(("stats", 0))
        self.assertEqual(self.received(), [("log", 1), ("stats", 0)])
        self.clock.advance(0.05)
        self.assertEqual(self.received(), [])

    def test_send_soon_from_another_thread_writes_at_once(self):
        thread = threading.Thread(target=self.writer.send_soon, args=(("log", "from a storage thread"),))
        thread.start()
        thread.join()
        self.assertEqual(self.received(), [("log", "from a storage thread")])

    def test_lines_kept_go_as_one_message(self):
        """Log lines kept together are one message; a message sent after them comes after them."""
        self.writer.send_line("INFO: a\n")
        self.writer.send_line("INFO: b\n")
        self.writer.send_soon(("log", 1))
        self.writer.send_line("INFO: c\n")
        self.assertEqual(self.received(), [])
        self.clock.advance(0.05)
        self.assertEqual(self.received(), [("lines", "INFO: a\nINFO: b\n"), ("log", 1), ("lines", "INFO: c\n")])
        self.writer.send_line("INFO: d\n")
        self.writer.send(("stats", 0))
        self.assertEqual(self.received(), [("lines", "INFO: d\n"), ("stats", 0)])

    def test_many_bytes_go_at_once(self):
        writer = ChannelWriter(self.write_end, self.clock, most=100)
        writer.send_soon(("log", "x" * 200))
        self.assertEqual(self.received(), [("log", "x" * 200)])

    def test_reader_gone(self):
        """EPIPE: the writer drops what follows, and raises nothing."""
        os.close(self.read_end)
        self.read_end = os.open(os.devnull, os.O_RDONLY)
        self.writer.send(("ready", 1))
        self.assertTrue(self.writer.broken)
        self.writer.send(("ready", 2))


def capture(emit) -> dict:
    """The event a Logger call makes."""
    events = []
    emit(Logger(namespace="radx.scp.protocol", observer=events.append))
    [event] = events
    return event


class LogRelayTests(SynchronousTestCase):
    def relayed(self, event) -> dict:
        message = event_message(event, worker=1)
        # As the channel carries it.
        [message] = FrameDecoder().feed(encode(message))
        return event_from_message(message)

    def assertSameLines(self, event) -> dict:
        """A relayed event reads as the original in text, in twistd's text log and in JSON."""
        relayed = self.relayed(event)
        self.assertEqual(format_event(relayed), format_event(event))
        self.assertEqual(classic_text(relayed), classic_text(event))
        original, copy = json.loads(event_as_json(event)), json.loads(event_as_json(relayed))
        self.assertEqual(copy.pop("worker"), 1)
        self.assertEqual(copy, original)
        return relayed

    def test_plain_fields(self):
        event = capture(lambda log: log.info("C-STORE request received calling_ae={calling_ae} count={count} seconds={seconds:.3f}", calling_ae="A\nB", count=3, seconds=0.5))
        relayed = self.assertSameLines(event)
        self.assertEqual(relayed["log_level"], LogLevel.info)
        self.assertEqual(relayed["log_namespace"], "radx.scp.protocol")
        self.assertEqual(relayed["worker"], 1)

    def test_values_that_are_not_plain_are_formatted_in_the_worker(self):
        event = capture(lambda log: log.warn("Hook {hook} arguments={arguments!r} kind={kind}", hook="h", arguments=["a", "b"], kind=LogLevel.warn))
        relayed = self.assertSameLines(event)
        self.assertEqual(relayed["arguments"], ["a", "b"])

    def test_audit_record_keeps_every_field(self):
        event = capture(lambda log: log.info("Association ended peer={peer}", peer="127.0.0.1:1", accepted_contexts=["1.2/1.2.3"], stored=4, audit=True))
        relayed = self.assertSameLines(event)
        self.assertEqual(relayed["accepted_contexts"], ["1.2/1.2.3"])

    def test_failure_as_text(self):
        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()
        event = capture(lambda log: log.failure("Unexpected error filing sop_instance={uid}", failure, uid="1.2.3"))
        relayed = self.relayed(event)
        self.assertIsInstance(relayed["log_failure"], RelayedFailure)
        self.assertEqual(relayed["log_failure"].getErrorMessage(), failure.getErrorMessage())
        self.assertIn("ZeroDivisionError", relayed["log_failure"].getTraceback())
        self.assertEqual(format_event(relayed), format_event(event))
        self.assertIn("ZeroDivisionError", classic_text(relayed))

    def test_levels(self):
        """The console's levels: radx's events from --log-level, the others' from warn; None: all of them."""
        self.assertEqual(console_levels("info"), ("info", "warn"))
        self.assertEqual(console_levels("error"), ("error", "error"))
        sent = []

        class Channel:
            def send_soon(self, message):
                sent.append(message[3])

        relay = LogRelay(Channel(), 0, console_levels("info"))
        for namespace, level in [("radx.scp", LogLevel.info), ("radx.scp", LogLevel.debug), ("twisted", LogLevel.info), ("twisted", LogLevel.warn)]:
            relay({"log_namespace": namespace, "log_level": level, "log_format": "x", "log_time": 0.0})
        self.assertEqual(sent, ["radx.scp", "twisted"])
        every = LogRelay(Channel(), 0, None)
        every({"log_namespace": "twisted", "log_level": LogLevel.debug, "log_format": "x", "log_time": 0.0})
        self.assertEqual(sent[-1], "twisted")


class Lines:
    """A channel that keeps the lines sent."""

    def __init__(self) -> None:
        self.text = ""

    def send_line(self, text: str) -> None:
        self.text += text


class WorkerObserverTests(SynchronousTestCase):
    """A worker's lines are those its supervisor's observer writes for the same event."""

    def event(self) -> dict:
        return capture(lambda log: log.info("Association accepted peer={peer} contexts={accepted}/{proposed}", peer="127.0.0.1:1", accepted=1, proposed=2))

    def lines(self, render) -> str:
        channel = Lines()
        worker_observer(render, channel, 1, None)(self.event())
        return channel.text

    def test_console_text(self):
        from radx.app.cli import ConsoleObserver

        written = []
        ConsoleObserver(LogLevel.info, write=written.append)(self.event())
        self.assertEqual(self.lines({"kind": "console", "level": "info", "json": False}), "".join(written))
        self.assertEqual(self.lines({"kind": "console", "level": "warn", "json": False}), "")

    def test_console_json_names_the_worker(self):
        line = json.loads(self.lines({"kind": "console", "level": "info", "json": True}))
        self.assertEqual((line["message"], line["worker"], line["peer"]), ("Association accepted peer=127.0.0.1:1 contexts=1/2", 1, "127.0.0.1:1"))

    def test_twistd_text_and_json(self):
        event = self.event()
        self.assertEqual(self.lines({"kind": "twistd", "json": False}), classic_text(event))
        self.assertEqual(json.loads(self.lines({"kind": "twistd", "json": True}))["worker"], 1)

    def test_events_where_lines_cannot_go(self):
        """twistd's --syslog: the supervisor's own observer gets each event."""
        self.assertIsInstance(worker_observer(None, Lines(), 1, None), LogRelay)
