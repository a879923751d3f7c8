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
from radx.storage import errors
from radx.uids import is_valid_uid, uid_for_log

__all__ = [
    "STORAGE_FAILURES",
    "Refusal",
    "c_echo_rsp",
    "c_store_failure",
    "c_store_refusal",
    "c_store_rsp",
    "echoed",
    "shown",
    "storage_failure_status",
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


# What a C-STORE is answered with when storage refuses the instance, by the reason it gives.
STORAGE_FAILURES: dict[type, Status] = {
    # PS3.7 9.1.1.1.9, C.5: 0117H Invalid SOP Instance, "a violation of the UID construction rules".
    errors.MalformedSOPInstanceUID: Status.INVALID_OBJECT_INSTANCE,
    # PS3.4 B.2.3: Cxxx Cannot understand; no other status fits a SOP Class UID that is no UID.
    errors.MalformedSOPClassUID: Status.CANNOT_UNDERSTAND,
    # PS3.4 B.2.3: Cxxx Cannot understand; the UIDs cannot go into a file meta.
    errors.FileMetaUnencodable: Status.CANNOT_UNDERSTAND,
    # PS3.4 B.2.3: Cxxx Cannot understand; the data set does not parse in its transfer syntax.
    errors.MalformedDataSet: Status.CANNOT_UNDERSTAND,
    # PS3.4 B.2.3: A900 Data Set does not match SOP Class; its SOP Class or Instance UID is not the request's.
    errors.DataSetMismatch: Status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    # PS3.7 C.5 (10.1.5.1.6): 0111H Duplicate SOP Instance, under --on-duplicate reject.
    errors.DuplicateInstance: Status.DUPLICATE_SOP_INSTANCE,
    # PS3.4 B.2.3: A7xx Refused: Out of Resources; the file system refused a write.
    errors.WriteFailed: Status.OUT_OF_RESOURCES,
    # PS3.4 B.2.3: A7xx Refused: Out of Resources; no file name left under --on-duplicate unique.
    errors.NamesExhausted: Status.OUT_OF_RESOURCES,
    # PS3.4 B.2.3: A7xx Refused: Out of Resources; the instance's file is gone already.
    errors.WriterClosed: Status.OUT_OF_RESOURCES,
}


def storage_failure_status(error: BaseException) -> Status | None:
    """The status answered for storage's refusal ``error``, or None if it is none of storage's refusals."""
    for kind in type(error).__mro__:
        status = STORAGE_FAILURES.get(kind)
        if status is not None:
            return status
    return None


def c_store_failure(error: BaseException) -> Refusal:
    """What to answer when filing an instance failed with ``error``."""
    status = storage_failure_status(error)
    if status is None:
        # Not storage's own refusal: a bug, or the system; the requestor may retry.
        return Refusal(Status.OUT_OF_RESOURCES, "internal error")
    return Refusal(status, error.message)


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
