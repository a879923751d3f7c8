# -*- test-case-name: tests.test_dimse_service -*-
"""What the SCP answers to each DIMSE request, pure: C-ECHO, C-STORE, and the requests it does not serve.

Given the negotiated presentation context, the request and, for a
C-STORE, what storage made of it, these functions say which status to
answer and build the response. The acceptor's protocol decides nothing
of this; it carries the answer out (``radx.scp.operations``).
"""

from __future__ import annotations

from dataclasses import dataclass

from radx import uids
from radx.dimse.commands import (
    C_CANCEL_RQ,
    C_STORE_RQ,
    RESPONSE_BIT,
    CEchoRQ,
    CEchoRSP,
    CStoreRQ,
    CStoreRSP,
    DIMSEDecodeError,
    UnknownCommand,
    encode_response,
)
from radx.dimse.status import Status
from radx.uids import is_valid_uid, uid_for_log
from radx.storage.store import StorageError

__all__ = [
    "Refusal",
    "c_echo_rsp",
    "c_store_failure",
    "c_store_refusal",
    "c_store_rsp",
    "echoed",
    "shown",
    "undecodable_command_rsp",
    "unknown_command_rsp",
]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A C-STORE answered with a failure status, and why, in words (the Error Comment and the log)."""

    status: Status
    comment: str


def echoed(uid: str) -> str | None:
    """A request's UID as its response repeats it, or None to leave it out.

    PS3.7 9.1.1, 9.1.5 (the service parameters): a response's Affected SOP
    Class and Instance UIDs are U(=), optional; a value that is no UID (over 64 characters,
    say; PS3.5 9.1) cannot be encoded as UI, so it is not repeated.
    """
    return uid if is_valid_uid(uid) else None


def shown(uid: str) -> str:
    """A request's UID as a log line shows it: itself if it is one, else only its length."""
    return uid if is_valid_uid(uid) else uid_for_log(uid)


def c_echo_rsp(context, request: CEchoRQ) -> CEchoRSP:
    """The answer to a C-ECHO-RQ received on ``context``."""
    status = Status.SUCCESS
    if (
        context.abstract_syntax != uids.VERIFICATION_SOP_CLASS
        or request.affected_sop_class_uid != uids.VERIFICATION_SOP_CLASS
    ):
        # PS3.7 9.3.5: C-ECHO belongs to the Verification SOP Class.
        status = Status.SOP_CLASS_NOT_SUPPORTED
    return CEchoRSP(
        message_id_being_responded_to=request.message_id,
        status=status,
        affected_sop_class_uid=echoed(request.affected_sop_class_uid),
    )


def c_store_refusal(context, request: CStoreRQ) -> Refusal | None:
    """Why a C-STORE-RQ is refused before any of its data set is written, or None to store it."""
    if request.affected_sop_class_uid != context.abstract_syntax:
        # PS3.7 9.1.1.1.9 / PS3.4 B.2.3: the request's SOP class must be
        # the abstract syntax of the context it came on.
        return Refusal(
            Status.SOP_CLASS_NOT_SUPPORTED,
            f"SOP class {shown(request.affected_sop_class_uid)} sent on presentation context"
            f" {context.context_id}, negotiated for {context.abstract_syntax}",
        )
    if not is_valid_uid(request.affected_sop_instance_uid):
        # PS3.7 9.1.1.1.9: Invalid SOP Instance; nothing is written.
        return Refusal(
            Status.INVALID_OBJECT_INSTANCE,
            f"malformed Affected SOP Instance UID {uid_for_log(request.affected_sop_instance_uid)}",
        )
    return None


def c_store_failure(error: BaseException) -> Refusal:
    """What to answer when filing an instance failed with ``error``."""
    if isinstance(error, StorageError):
        return Refusal(error.status, error.message)
    # Not storage's own refusal: a bug, or the system; the requestor may retry.
    return Refusal(Status.OUT_OF_RESOURCES, "internal error")


def c_store_rsp(request: CStoreRQ, status: int, comment: str | None = None) -> CStoreRSP:
    """The C-STORE-RSP to ``request``; ``comment`` is cut to the Error Comment's 64 characters (PS3.7 C.4)."""
    return CStoreRSP(
        message_id_being_responded_to=request.message_id,
        status=status,
        affected_sop_class_uid=echoed(request.affected_sop_class_uid),
        affected_sop_instance_uid=echoed(request.affected_sop_instance_uid),
        error_comment=comment[:64] if comment else None,
    )


def unknown_command_rsp(command: UnknownCommand) -> bytes | None:
    """A command radx does not serve: 0211H Unrecognized Operation (PS3.7 C.5), or None for one without a response."""
    if not command.expects_response:
        return None
    return encode_response(command.command_field, command.message_id or 0, Status.UNRECOGNIZED_OPERATION)


def undecodable_command_rsp(error: DIMSEDecodeError) -> tuple[Status, bytes] | None:
    """
    A command set that decoded but is not a valid command: its failure
    status and response, or None when it cannot be answered (no request
    field or Message ID, a response, a C-CANCEL) and the association is aborted.
    """
    field, message_id = error.command_field, error.message_id
    if field is None or message_id is None or field & RESPONSE_BIT or field == C_CANCEL_RQ:
        return None
    # PS3.4 B.2.3: C-STORE's "Cannot understand"; PS3.7 C.5: others' "Mistyped argument".
    status = Status.CANNOT_UNDERSTAND if field == C_STORE_RQ else Status.MISTYPED_ARGUMENT
    return status, encode_response(field, message_id, status, error_comment=error.message)
