"""Tests for radx.dimse.assembly."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from radx.dimse.assembly import (
    CommandReceived,
    DataSetFragment,
    DIMSEProtocolError,
    MessageAssembler,
)
from radx.dimse.commands import (
    AFFECTED_SOP_INSTANCE_UID,
    CEchoRQ,
    CStoreRQ,
    DIMSEDecodeError,
    UnknownCommand,
    encode_command_set,
)

quick = settings(
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# PS3.8 E.2: Message Control Header values.
DATA = 0x00
COMMAND = 0x01
LAST_DATA = 0x02
LAST_COMMAND = 0x03

ECHO = CEchoRQ(message_id=1)
STORE = CStoreRQ(
    message_id=2,
    affected_sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
    affected_sop_instance_uid="1.2.3.4.5",
)
DATA_SET = bytes(range(256)) * 3


def chunks(data, size):
    """Cut data into pieces of size bytes."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def command_pdvs(context_id, data, size=None):
    """The PDVs of a command set, in pieces of size bytes (whole if None)."""
    pieces = chunks(data, size) if size else [data]
    return [
        (context_id, LAST_COMMAND if i == len(pieces) - 1 else COMMAND, piece)
        for i, piece in enumerate(pieces)
    ]


def data_set_pdvs(context_id, data, size=None):
    """The PDVs of a data set, in pieces of size bytes (whole if None)."""
    pieces = chunks(data, size) if size else [data]
    return [
        (context_id, LAST_DATA if i == len(pieces) - 1 else DATA, piece)
        for i, piece in enumerate(pieces)
    ]


def feed_all(assembler, pdvs):
    events = []
    for pdv in pdvs:
        events.extend(assembler.feed(*pdv))
    return events


class CommandTests(SynchronousTestCase):
    """Commands, whole or in fragments."""

    def test_one_fragment(self):
        assembler = MessageAssembler()
        self.assertEqual(
            assembler.feed(1, LAST_COMMAND, ECHO.encode()),
            [CommandReceived(1, ECHO, False)],
        )

    def test_many_fragments(self):
        """A command split anywhere, 1-byte fragments too, comes out once whole."""
        data = STORE.encode()
        for size in (1, 2, 3, 7, 12, 50, len(data) - 1):
            assembler = MessageAssembler()
            pdvs = command_pdvs(5, data, size)
            for pdv in pdvs[:-1]:
                self.assertEqual(assembler.feed(*pdv), [])
            self.assertEqual(
                assembler.feed(*pdvs[-1]), [CommandReceived(5, STORE, True)], size
            )

    def test_memoryview_fragments(self):
        """Fragments may be memoryviews of a buffer reused afterwards."""
        data = bytearray(ECHO.encode())
        assembler = MessageAssembler()
        self.assertEqual(assembler.feed(1, COMMAND, memoryview(data)[:10]), [])
        data[:10] = b"\xff" * 10  # the caller reuses its buffer
        self.assertEqual(
            assembler.feed(1, LAST_COMMAND, memoryview(ECHO.encode())[10:]),
            [CommandReceived(1, ECHO, False)],
        )

    def test_zero_length_fragments(self):
        """Empty command fragments are allowed, even the last."""
        data = ECHO.encode()
        assembler = MessageAssembler()
        events = feed_all(
            assembler,
            [(1, COMMAND, b""), (1, COMMAND, data[:5]), (1, COMMAND, b""),
             (1, COMMAND, data[5:]), (1, LAST_COMMAND, b"")],
        )
        self.assertEqual(events, [CommandReceived(1, ECHO, False)])

    def test_unknown_command(self):
        """A command radx does not implement comes out as UnknownCommand."""
        find = encode_command_set(
            {0x0002: "1.2.840.10008.5.1.4.1.2.1.1", 0x0100: 0x0020,
             0x0110: 9, 0x0700: 0, 0x0800: 0x0001}
        )
        assembler = MessageAssembler()
        [event] = assembler.feed(3, LAST_COMMAND, find)
        self.assertIsInstance(event.command, UnknownCommand)
        self.assertEqual(event.command.message_id, 9)
        self.assertTrue(event.has_data_set)
        self.assertEqual(
            assembler.feed(3, LAST_DATA, b"\x08\x00"),
            [DataSetFragment(3, b"\x08\x00", True)],
        )


class ReservedBitsTests(SynchronousTestCase):
    """
    PS3.8 E.2: bits 2 to 7 of the Message Control Header are "never checked
    by the receiver".
    """

    def test_ignored(self):
        for reserved in (0x04, 0x80, 0xFC):
            assembler = MessageAssembler()
            data = STORE.encode()
            events = feed_all(
                assembler,
                [
                    (1, reserved | COMMAND, data[:10]),
                    (1, reserved | LAST_COMMAND, data[10:]),
                    (1, reserved | DATA, b"ab"),
                    (1, reserved | LAST_DATA, b"cd"),
                ],
            )
            self.assertEqual(
                events,
                [
                    CommandReceived(1, STORE, True),
                    DataSetFragment(1, b"ab", False),
                    DataSetFragment(1, b"cd", True),
                ],
            )


class DataSetTests(SynchronousTestCase):
    """Commands with data sets."""

    def test_data_set_streamed(self):
        """Data set fragments come out as they go in, not copied."""
        assembler = MessageAssembler()
        self.assertEqual(
            assembler.feed(1, LAST_COMMAND, STORE.encode()),
            [CommandReceived(1, STORE, True)],
        )
        pieces = chunks(DATA_SET, 100)
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            [event] = assembler.feed(1, LAST_DATA if last else DATA, piece)
            self.assertEqual(event, DataSetFragment(1, piece, last))
            self.assertIs(event.data, piece)

    def test_memoryview_not_copied(self):
        assembler = MessageAssembler()
        assembler.feed(1, LAST_COMMAND, STORE.encode())
        view = memoryview(DATA_SET)[10:20]
        [event] = assembler.feed(1, LAST_DATA, view)
        self.assertIs(event.data, view)

    def test_command_and_data_set_in_fragments(self):
        for command_size, data_size in [(1, 1), (5, 64), (None, 1000), (33, 7)]:
            assembler = MessageAssembler()
            events = feed_all(
                assembler,
                command_pdvs(7, STORE.encode(), command_size)
                + data_set_pdvs(7, DATA_SET, data_size),
            )
            self.assertEqual(events[0], CommandReceived(7, STORE, True))
            self.assertTrue(all(isinstance(e, DataSetFragment) for e in events[1:]))
            self.assertEqual(b"".join(e.data for e in events[1:]), DATA_SET)
            self.assertEqual([e.last for e in events[1:]][-1], True)
            self.assertEqual(sum(e.last for e in events[1:]), 1)

    def test_zero_length_data_fragments(self):
        """Empty data set fragments are allowed, the last one too."""
        assembler = MessageAssembler()
        events = feed_all(
            assembler,
            command_pdvs(1, STORE.encode())
            + [(1, DATA, b""), (1, DATA, b"ab"), (1, LAST_DATA, b"")],
        )
        self.assertEqual(
            events[1:],
            [DataSetFragment(1, b"", False), DataSetFragment(1, b"ab", False),
             DataSetFragment(1, b"", True)],
        )

    def test_second_message(self):
        """After a data set's last fragment, or a command without one, the next message."""
        assembler = MessageAssembler()
        events = feed_all(
            assembler,
            command_pdvs(1, STORE.encode(), 10)
            + data_set_pdvs(1, DATA_SET, 300)
            + command_pdvs(3, ECHO.encode(), 4)
            + command_pdvs(1, STORE.encode())
            + data_set_pdvs(1, b"xy")
            + command_pdvs(1, ECHO.encode()),
        )
        commands = [e for e in events if isinstance(e, CommandReceived)]
        self.assertEqual(
            commands,
            [CommandReceived(1, STORE, True), CommandReceived(3, ECHO, False),
             CommandReceived(1, STORE, True), CommandReceived(1, ECHO, False)],
        )
        self.assertEqual(events[-2], DataSetFragment(1, b"xy", True))


class ProtocolErrorTests(SynchronousTestCase):
    """Sequencing the peer gets wrong raises L{DIMSEProtocolError}."""

    def assertProtocolError(self, assembler, pdvs, *words):
        """Feeding pdvs ends in a protocol error whose message has words."""
        *before, bad = pdvs
        feed_all(assembler, before)
        error = self.assertRaises(DIMSEProtocolError, assembler.feed, *bad)
        for word in words:
            self.assertIn(word, error.message)
        # Once failed, it stays failed: the caller aborts (PS3.8 7.3.1).
        self.assertRaises(DIMSEProtocolError, assembler.feed, 1, LAST_COMMAND, ECHO.encode())
        self.assertRaises(DIMSEProtocolError, assembler.feed, 1, LAST_DATA, b"")
        return error

    def test_data_set_with_no_command(self):
        self.assertProtocolError(
            MessageAssembler(), [(1, LAST_DATA, b"ab")], "data set fragment with no command"
        )

    def test_data_set_after_command_without_one(self):
        self.assertProtocolError(
            MessageAssembler(),
            command_pdvs(1, ECHO.encode()) + [(1, DATA, b"ab")],
            "data set fragment with no command",
        )

    def test_data_set_after_data_set_ended(self):
        self.assertProtocolError(
            MessageAssembler(),
            command_pdvs(1, STORE.encode()) + data_set_pdvs(1, b"ab") + [(1, LAST_DATA, b"")],
            "data set fragment with no command",
        )

    def test_data_set_before_command_ends(self):
        data = STORE.encode()
        self.assertProtocolError(
            MessageAssembler(),
            [(1, COMMAND, data[:10]), (1, DATA, b"ab")],
            "before the last fragment of its command",
        )

    def test_data_set_on_other_context(self):
        self.assertProtocolError(
            MessageAssembler(),
            command_pdvs(1, STORE.encode()) + [(1, DATA, b"ab"), (3, DATA, b"cd")],
            "context 3",
            "context 1",
        )

    def test_command_while_data_set_expected(self):
        for context_id in (1, 3):
            self.assertProtocolError(
                MessageAssembler(),
                command_pdvs(1, STORE.encode()) + [(1, DATA, b"ab")]
                + command_pdvs(context_id, ECHO.encode()),
                "command fragment",
                "not ended",
            )

    def test_command_fragment_on_other_context(self):
        data = ECHO.encode()
        self.assertProtocolError(
            MessageAssembler(),
            [(1, COMMAND, data[:10]), (3, LAST_COMMAND, data[10:])],
            "context 3",
            "context 1",
        )

    def test_command_too_long(self):
        data = STORE.encode()
        assembler = MessageAssembler(maximum_command_length=len(data))
        self.assertEqual(
            feed_all(assembler, command_pdvs(1, data, 9)), [CommandReceived(1, STORE, True)]
        )
        self.assertProtocolError(
            MessageAssembler(maximum_command_length=len(data) - 1),
            command_pdvs(1, data, 9),
            f"longer than {len(data) - 1} bytes",
        )

    def test_command_too_long_never_completed(self):
        """Command fragments without end are refused once past the limit."""
        assembler = MessageAssembler(maximum_command_length=100)
        self.assertProtocolError(
            assembler, [(1, COMMAND, b"\0" * 60), (1, COMMAND, b"\0" * 60)], "longer than 100"
        )


class DecodeErrorTests(SynchronousTestCase):
    """A command set that does not decode raises L{DIMSEDecodeError}."""

    def test_undecodable(self):
        assembler = MessageAssembler()
        error = self.assertRaises(
            DIMSEDecodeError, feed_all, assembler, command_pdvs(1, b"\x01\x02" * 20, 7)
        )
        self.assertIn("(0201,0201)", error.message)
        self.assertIn("outside group 0000", error.message)
        self.assertIsNone(error.has_data_set)
        # Ready for the next message.
        self.assertEqual(
            assembler.feed(1, LAST_COMMAND, ECHO.encode()), [CommandReceived(1, ECHO, False)]
        )

    def test_empty(self):
        assembler = MessageAssembler()
        self.assertRaises(DIMSEDecodeError, assembler.feed, 1, LAST_COMMAND, b"")

    def test_incomplete_command_data_set_dropped(self):
        """
        A C-STORE-RQ lacking an element raises, carrying what a failure
        response needs; its data set is then dropped, and the next message
        comes through.
        """
        elements = STORE.to_elements()
        del elements[AFFECTED_SOP_INSTANCE_UID]
        assembler = MessageAssembler()
        error = self.assertRaises(
            DIMSEDecodeError, feed_all, assembler, command_pdvs(1, encode_command_set(elements), 5)
        )
        self.assertIn("(0000,1000) Affected SOP Instance UID", error.message)
        self.assertEqual((error.command_field, error.message_id, error.has_data_set), (1, 2, True))
        self.assertEqual(feed_all(assembler, data_set_pdvs(1, DATA_SET, 100)), [])
        self.assertEqual(
            feed_all(assembler, command_pdvs(3, ECHO.encode())), [CommandReceived(3, ECHO, False)]
        )

    def test_dropped_data_set_on_other_context(self):
        """Even a dropped data set must keep to its command's context."""
        elements = STORE.to_elements()
        del elements[AFFECTED_SOP_INSTANCE_UID]
        assembler = MessageAssembler()
        self.assertRaises(
            DIMSEDecodeError, assembler.feed, 1, LAST_COMMAND, encode_command_set(elements)
        )
        self.assertRaises(DIMSEProtocolError, assembler.feed, 3, LAST_DATA, b"")


# Strategies for well-formed streams of messages.
context_ids = st.sampled_from([1, 3, 5, 255])
payloads = st.binary(max_size=600)


@st.composite
def split(draw, data):
    """data cut at random places, empty pieces allowed."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    bounds = [0] + cuts + [len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


@st.composite
def messages(draw):
    """The PDVs of one well-formed message, with its command and data set."""
    context_id = draw(context_ids)
    if draw(st.booleans()):
        command = CEchoRQ(draw(st.integers(0, 0xFFFF)))
        data_set = None
    else:
        command = CStoreRQ(draw(st.integers(0, 0xFFFF)), "1.2.3", "4.5.6.7")
        data_set = draw(payloads)
    pieces = draw(split(command.encode()))
    pdvs = [
        (context_id, LAST_COMMAND if i == len(pieces) - 1 else COMMAND, piece)
        for i, piece in enumerate(pieces)
    ]
    if data_set is not None:
        pieces = draw(split(data_set))
        if draw(st.booleans()):
            pieces = [memoryview(piece) for piece in pieces]
        pdvs += [
            (context_id, LAST_DATA if i == len(pieces) - 1 else DATA, piece)
            for i, piece in enumerate(pieces)
        ]
    return context_id, command, data_set, pdvs


class PropertyTests(SynchronousTestCase):
    """Properties over streams of PDVs."""

    @quick
    @given(st.lists(messages(), min_size=1, max_size=5))
    def test_well_formed(self, stream):
        """
        Well-formed streams give each command once, and data set fragments
        whose concatenation is the data set sent.
        """
        assembler = MessageAssembler()
        for context_id, command, data_set, pdvs in stream:
            events = feed_all(assembler, pdvs)
            self.assertEqual(
                events[0], CommandReceived(context_id, command, data_set is not None)
            )
            fragments = events[1:]
            self.assertTrue(all(isinstance(e, DataSetFragment) for e in fragments))
            self.assertTrue(all(e.context_id == context_id for e in fragments))
            if data_set is None:
                self.assertEqual(fragments, [])
            else:
                self.assertEqual(b"".join(e.data for e in fragments), data_set)
                self.assertEqual(
                    [e.last for e in fragments], [False] * (len(fragments) - 1) + [True]
                )

    @quick
    @given(
        st.lists(
            st.one_of(
                st.tuples(
                    context_ids,
                    st.integers(0, 3) | st.integers(0, 0x1FF),
                    st.binary(max_size=40),
                ),
                # Whole valid commands now and then, so that data sets happen.
                st.tuples(
                    context_ids,
                    st.just(LAST_COMMAND),
                    st.sampled_from([ECHO.encode(), STORE.encode()]),
                ),
            ),
            max_size=30,
        ),
        st.integers(10, 200),
    )
    def test_only_two_errors(self, pdvs, maximum):
        """
        Whatever comes in, only L{DIMSEProtocolError} and L{DIMSEDecodeError}
        come out; once a protocol error is raised, every call raises one.
        """
        assembler = MessageAssembler(maximum_command_length=maximum)
        failed = False
        for pdv in pdvs:
            try:
                events = assembler.feed(*pdv)
            except DIMSEProtocolError:
                failed = True
                continue
            except DIMSEDecodeError:
                self.assertFalse(failed)
                continue
            self.assertFalse(failed)
            for event in events:
                self.assertIsInstance(event, (CommandReceived, DataSetFragment))
