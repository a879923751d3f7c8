# -*- test-case-name: tests.test_dimse_assembly -*-
"""Reassembly of DIMSE messages from the PDV fragments of P-DATA-TF PDUs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from radx.dimse.commands import (
    Command,
    DIMSEDecodeError,
    command_from_elements,
    decode_command_set,
    has_data_set,
)

# PS3.8 E.2: the Message Control Header's bits; bits 2 to 7 are "always set
# to 0 by the sender and never checked by the receiver", so radx ignores them.
COMMAND_BIT = 0x01
LAST_FRAGMENT_BIT = 0x02


class DIMSEProtocolError(Exception):
    """
    The peer broke the sequencing of message fragments: the caller answers
    with an A-ABORT (PS3.8 7.3).  The assembler is unusable after.

    @ivar message: what the peer did.
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class CommandReceived:
    """
    A whole command set arrived and was decoded.

    @ivar has_data_set: whether a data set follows (PS3.7 E.1), as its
        L{DataSetFragment}s.
    """

    context_id: int
    command: Command
    has_data_set: bool


@dataclass(slots=True)
class DataSetFragment:
    """
    A fragment of the data set of the last command, passed on as it came,
    with no copy: the caller consumes it (or copies it) before the next
    call to L{MessageAssembler.feed}.

    Not frozen: one is made for each PDV of a data set, and a frozen
    dataclass's C{__init__} costs about three times a plain one's.
    """

    context_id: int
    data: Union[bytes, bytearray, memoryview]
    last: bool


Event = Union[CommandReceived, DataSetFragment]


class MessageAssembler:
    """
    Turns the PDVs of one association, in order, into DIMSE events.

    A message is a command set followed, if it says so, by a data set (PS3.7
    6.3.1), each sent as fragments on one presentation context; fragments
    of two messages never interleave (PS3.8 E.1).

    After a L{DIMSEDecodeError}, the assembler is ready for the next message;
    when the undecodable command's elements said a data set follows
    (L{DIMSEDecodeError.has_data_set}), it drops that data set's fragments,
    so the caller can answer with a failure status and go on.  After a
    L{DIMSEProtocolError} every call raises one.
    """

    def __init__(self, maximum_command_length: int = 65536):
        self._maximum_command_length = maximum_command_length
        # The fragments of a command set not yet complete, and their context.
        self._command_fragments: list[bytes] = []
        self._command_length = 0
        self._command_context: int | None = None
        # The context of the data set expected, None when none is.
        self._data_set_context: int | None = None
        # Whether that data set is dropped, its command having been bad.
        self._discarding = False
        self._failure: str | None = None

    def feed(
        self,
        context_id: int,
        message_control_header: int,
        data: bytes | bytearray | memoryview,
    ) -> list[Event]:
        """
        Take the next PDV.

        @param context_id: its Presentation Context ID.
        @param message_control_header: its Message Control Header (PS3.8 E.2).
        @param data: its fragment.
        @return: the events it completes, in order.
        @raise DIMSEProtocolError: if it breaks the sequencing.
        @raise DIMSEDecodeError: if it completes a command set that does not
            decode, or does not make a valid command.
        """
        # The hot path first: a data set fragment that was expected.
        if (
            context_id == self._data_set_context
            and not message_control_header & COMMAND_BIT
        ):
            last = bool(message_control_header & LAST_FRAGMENT_BIT)
            if last:
                self._data_set_context = None
            if self._discarding:
                self._discarding = not last
                return []
            return [DataSetFragment(context_id, data, last)]
        return self._feed_other(context_id, message_control_header, data)

    def _fail(self, message: str) -> DIMSEProtocolError:
        self._failure = message
        self._command_fragments = []
        self._data_set_context = None
        return DIMSEProtocolError(message)

    def _feed_other(
        self,
        context_id: int,
        message_control_header: int,
        data: bytes | bytearray | memoryview,
    ) -> list[Event]:
        if self._failure is not None:
            raise DIMSEProtocolError(f"assembler stopped earlier: {self._failure}")
        is_command = message_control_header & COMMAND_BIT
        if self._data_set_context is not None:
            # PS3.8 E.1: a data set comes whole on the context of its
            # command, before any fragment of another message.
            if is_command:
                raise self._fail(
                    f"command fragment on presentation context {context_id} "
                    f"while the data set on context {self._data_set_context} "
                    f"has not ended"
                )
            raise self._fail(
                f"data set fragment on presentation context {context_id}, but "
                f"its command came on context {self._data_set_context}"
            )
        if not is_command:
            if self._command_fragments:
                raise self._fail(
                    f"data set fragment on presentation context {context_id} "
                    f"before the last fragment of its command"
                )
            raise self._fail(
                f"data set fragment with no command, on presentation context "
                f"{context_id}"
            )
        if self._command_fragments and context_id != self._command_context:
            # PS3.8 E.1: a message's fragments share one presentation context.
            raise self._fail(
                f"command fragment on presentation context {context_id}, but "
                f"the command started on context {self._command_context}"
            )
        self._command_length += len(data)
        if self._command_length > self._maximum_command_length:
            raise self._fail(
                f"command set longer than {self._maximum_command_length} bytes"
            )
        self._command_fragments.append(bytes(data))
        self._command_context = context_id
        if not message_control_header & LAST_FRAGMENT_BIT:
            return []
        command_set = b"".join(self._command_fragments)
        self._command_fragments = []
        self._command_length = 0
        self._command_context = None
        try:
            elements = decode_command_set(command_set)
            command = command_from_elements(elements)
        except DIMSEDecodeError as e:
            if e.has_data_set:
                self._data_set_context = context_id
                self._discarding = True
            raise
        data_set = has_data_set(elements)
        if data_set:
            self._data_set_context = context_id
        return [CommandReceived(context_id, command, data_set)]
