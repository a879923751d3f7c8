# -*- test-case-name: tests.test_negotiation,tests.test_scu_sources,tests.test_scu_association -*-
"""Association negotiation, pure: the acceptor's answer to an A-ASSOCIATE-RQ, the requestor's proposal and its check of the AC.

Acceptor: an A-ASSOCIATE-RQ and local policy in, AC or RJ out
(``negotiate``). Requestor: the A-ASSOCIATE-RQ proposed
(``associate_request``), and what an A-ASSOCIATE-AC grants
(``check_accept``): each context's result, the peer's Maximum Length, the
Asynchronous Operations Window.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from radx import uids
from radx.uids import is_valid_uid
from radx.ul._uid_tables import NOT_STORAGE, TRANSFER_SYNTAXES
from radx.ul.pdu import (
    DEFAULT_MAXIMUM_LENGTH,
    AAssociateAC,
    ACSERejectReason,
    PresentationRejectReason,
    RejectResult,
    RejectSource,
    UserRejectReason,
    AAssociateRJ,
    AAssociateRQ,
    AsynchronousOperationsWindowSubItem,
    ImplementationClassUIDSubItem,
    ImplementationVersionNameSubItem,
    MaximumLengthSubItem,
    PresentationContextItemAC,
    PresentationContextItemRQ,
    SCPSCURoleSelectionSubItem,
    UserInformationItem,
)

# PS3.8 9.3.3.2 Table 9-18: presentation context result/reason.
ACCEPTANCE = 0
USER_REJECTION = 1
PROVIDER_REJECTION = 2
ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
TRANSFER_SYNTAXES_NOT_SUPPORTED = 4

# Every standard transfer syntax: storage is bit-preserving, so radx never
# needs to decode one to accept it.
DEFAULT_TRANSFER_SYNTAXES: tuple[str, ...] = TRANSFER_SYNTAXES


# PS3.5 6.2: an AE value is of the default repertoire without backslash
# (5CH) and without control characters.
_AE_TITLE = re.compile(r"[ -\[\]-~]*")


def is_valid_ae_title(title: str) -> bool:
    """Whether an A-ASSOCIATE-RQ's AE title (already ASCII, 16 at most) holds only what PS3.5 6.2 allows."""
    return _AE_TITLE.fullmatch(title) is not None


def is_storage_sop_class(uid: str) -> bool:
    """True for a Storage SOP Class (PS3.4 B.5), known or private.

    A UID the standard lists as some other SOP class (Query/Retrieve,
    Storage Commitment, worklists...) is not; an unknown UID is taken as a
    private storage class, which a receiving archive must accept.
    """
    return uid != uids.VERIFICATION_SOP_CLASS and uid not in NOT_STORAGE


# The AE title radx's SCP answers to unless told another (--aet), and the
# one radx dicom echo and store call unless told another (--called-ae).
DEFAULT_AE_TITLE = "RADX-SCP"


@dataclass(frozen=True)
class AcceptorPolicy:
    """What this Application Entity accepts."""

    ae_title: str = DEFAULT_AE_TITLE
    # True: any called AE title is answered as if it were ae_title (--accept-any-called-aet).
    accept_any_called_ae_title: bool = False
    maximum_pdu_length: int = DEFAULT_MAXIMUM_LENGTH
    accept_echo: bool = True
    # None: every storage SOP class; otherwise only these.
    sop_classes: frozenset[str] | None = None
    # None: any calling AE title; otherwise only these (--allow-calling-aet).
    calling_ae_titles: frozenset[str] | None = None
    transfer_syntaxes: tuple[str, ...] = DEFAULT_TRANSFER_SYNTAXES
    implementation_class_uid: str = uids.IMPLEMENTATION_CLASS_UID
    implementation_version_name: str = uids.IMPLEMENTATION_VERSION_NAME
    # How many C-STOREs a requestor that proposes an Asynchronous Operations
    # Window may have outstanding at once (PS3.7 D.3.3.3).
    maximum_operations_invoked: int = 16

    def accepts_abstract_syntax(self, uid: str) -> bool:
        if not is_valid_uid(uid):
            # PS3.8 9.3.2.2.1: an abstract syntax name is a UID (PS3.5 9.1:
            # at most 64 characters); no other can name a SOP class.
            return False
        if uid == uids.VERIFICATION_SOP_CLASS:
            return self.accept_echo
        if self.sop_classes is not None:
            return uid in self.sop_classes
        return is_storage_sop_class(uid)


@dataclass(frozen=True)
class AcceptedContext:
    """A presentation context in use on an established association."""

    context_id: int
    abstract_syntax: str
    transfer_syntax: str


@dataclass
class Negotiated:
    """The answer to an A-ASSOCIATE-RQ: an AC or an RJ, and what it means."""

    accept: AAssociateAC | None = None
    reject: AAssociateRJ | None = None
    reason: str = ""
    contexts: dict[int, AcceptedContext] = field(default_factory=dict)
    # The peer's Maximum Length (PS3.8 D.1); 0 means no limit.
    peer_maximum_pdu_length: int = 0
    # How many operations the requestor may have outstanding (PS3.7
    # D.3.3.3); 1, synchronous, unless it proposed a window.
    operations_window: int = 1


def invalid_request_reason(request: AAssociateRQ) -> str | None:
    """Why an A-ASSOCIATE-RQ is not a valid PDU (Evt19), or None.

    PS3.8 9.3.2.2: a presentation context ID is an odd integer between 1
    and 255, unique within the request.
    """
    seen = set()
    for context in request.presentation_contexts:
        if context.context_id % 2 == 0:
            return f"even presentation context ID {context.context_id}"
        if context.context_id in seen:
            return f"repeated presentation context ID {context.context_id}"
        seen.add(context.context_id)
    return None


def provider_reject(request: AAssociateRQ) -> AAssociateRJ | None:
    """AE-6's "acceptable by service-provider" test for the ACSE part."""
    # PS3.8 9.3.2: a receiver implementing only version 1 tests bit 0 only.
    if not request.protocol_version & 1:
        return AAssociateRJ(
            RejectResult.REJECTED_PERMANENT,
            RejectSource.SERVICE_PROVIDER_ACSE,
            ACSERejectReason.PROTOCOL_VERSION_NOT_SUPPORTED,
        )
    return None


def _rejected_by_user(reason: UserRejectReason, why: str) -> Negotiated:
    """PS3.8 9.3.4: rejected-permanent by the DICOM UL service-user, for ``reason``; ``why`` in words for the log."""
    return Negotiated(
        reject=AAssociateRJ(RejectResult.REJECTED_PERMANENT, RejectSource.SERVICE_USER, reason),
        reason=why,
    )


def negotiate(request: AAssociateRQ, policy: AcceptorPolicy) -> Negotiated:
    """Answer an A-ASSOCIATE-RQ as the association-acceptor."""
    if not is_valid_ae_title(request.called_ae_title):
        return _rejected_by_user(
            UserRejectReason.CALLED_AE_TITLE_NOT_RECOGNIZED,
            "called AE title has characters an AE title may not hold (PS3.5 6.2)",
        )
    if not is_valid_ae_title(request.calling_ae_title):
        return _rejected_by_user(
            UserRejectReason.CALLING_AE_TITLE_NOT_RECOGNIZED,
            "calling AE title has characters an AE title may not hold (PS3.5 6.2)",
        )
    if request.called_ae_title != policy.ae_title and not policy.accept_any_called_ae_title:
        return _rejected_by_user(
            UserRejectReason.CALLED_AE_TITLE_NOT_RECOGNIZED,
            f"called AE title {request.called_ae_title!r} is not {policy.ae_title!r}",
        )
    if policy.calling_ae_titles is not None and request.calling_ae_title not in policy.calling_ae_titles:
        # PS3.8 9.3.4: rejected-permanent, service-user, calling-AE-title-not-recognized.
        return _rejected_by_user(
            UserRejectReason.CALLING_AE_TITLE_NOT_RECOGNIZED,
            f"calling AE title {request.calling_ae_title!r} is not in --allow-calling-aet",
        )
    if request.application_context_name != uids.APPLICATION_CONTEXT_NAME:
        return _rejected_by_user(
            UserRejectReason.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED,
            f"application context {request.application_context_name!r} is not DICOM's",
        )
    if not request.presentation_contexts:
        # PS3.8 9.3.2: one or more Presentation Context Items; with none,
        # nothing could ever be exchanged.
        return _rejected_by_user(
            UserRejectReason.NO_REASON_GIVEN,
            "no presentation context proposed (PS3.8 9.3.2: one or more)",
        )

    accepted_ts = set(policy.transfer_syntaxes)
    results = []
    contexts = {}
    for item in request.presentation_contexts:
        if not policy.accepts_abstract_syntax(item.abstract_syntax):
            # PS3.8 9.3.3.2: the transfer syntax is not significant here.
            results.append(
                PresentationContextItemAC(item.context_id, ABSTRACT_SYNTAX_NOT_SUPPORTED, "")
            )
            continue
        # Take the first transfer syntax the requestor proposed that we accept.
        chosen = next((ts for ts in item.transfer_syntaxes if ts in accepted_ts), None)
        if chosen is None:
            results.append(
                PresentationContextItemAC(item.context_id, TRANSFER_SYNTAXES_NOT_SUPPORTED, "")
            )
            continue
        results.append(PresentationContextItemAC(item.context_id, ACCEPTANCE, chosen))
        contexts[item.context_id] = AcceptedContext(item.context_id, item.abstract_syntax, chosen)

    user_information = request.user_information
    sub_items = [
        MaximumLengthSubItem(policy.maximum_pdu_length),
        ImplementationClassUIDSubItem(policy.implementation_class_uid),
    ]
    window = operations_window(user_information.asynchronous_operations_window, policy.maximum_operations_invoked)
    if user_information.asynchronous_operations_window is not None:
        # PS3.7 D.3.3.3: answered only when proposed. radx never invokes
        # operations on the requestor, so it performs one at a time.
        sub_items.append(AsynchronousOperationsWindowSubItem(window, 1))
    accepted_abstract = {c.abstract_syntax for c in contexts.values()}
    answered = set()
    for role in user_information.role_selections:
        # PS3.7 D.3.3.4: answer each proposed SOP class once; the acceptor
        # may not grant a role that was not proposed. radx is only ever the
        # Storage/Verification SCP, so the requestor may be SCU, never SCP.
        if role.sop_class_uid in answered or role.sop_class_uid not in accepted_abstract:
            continue
        answered.add(role.sop_class_uid)
        sub_items.append(SCPSCURoleSelectionSubItem(role.sop_class_uid, role.scu_role, 0))
    sub_items.append(ImplementationVersionNameSubItem(policy.implementation_version_name))
    # SOP Class Extended, Common Extended negotiation and User Identity are
    # not supported: PS3.7 D.3.3.5-7 say an acceptor that does not support
    # them leaves them out of the A-ASSOCIATE-AC.

    accept = AAssociateAC(
        called_ae_title=request.called_ae_title,
        calling_ae_title=request.calling_ae_title,
        application_context_name=uids.APPLICATION_CONTEXT_NAME,
        presentation_contexts=tuple(results),
        user_information=UserInformationItem(tuple(sub_items)),
    )
    peer_maximum = user_information.maximum_length
    return Negotiated(
        accept=accept,
        contexts=contexts,
        peer_maximum_pdu_length=peer_maximum or 0,
        operations_window=window,
    )


def operations_window(proposed: AsynchronousOperationsWindowSubItem | None, limit: int) -> int:
    """
    The Maximum-number-operations-invoked to grant: what the requestor
    proposed, at most ``limit``. (The requestor applies the same rule to
    the acceptor's answer, its own proposal as the limit.)

    PS3.7 D.3.3.3: absent, the window is 1 (synchronous); a proposed 0 is
    unlimited, which the acceptor may negotiate down; the answer is never
    more than the proposal.
    """
    if proposed is None:
        return 1
    invoked = proposed.maximum_number_operations_invoked
    if invoked == 0:
        return max(1, limit)
    return max(1, min(invoked, limit))


# PS3.8 9.3.4 Table 9-21: the reasons of an A-ASSOCIATE-RJ, by source.
_REJECT_REASONS = {
    RejectSource.SERVICE_USER: {
        UserRejectReason.NO_REASON_GIVEN: "No Reason Given",
        UserRejectReason.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED: "Application Context Name Not Supported",
        UserRejectReason.CALLING_AE_TITLE_NOT_RECOGNIZED: "Calling AE Title Not Recognized",
        UserRejectReason.CALLED_AE_TITLE_NOT_RECOGNIZED: "Called AE Title Not Recognized",
    },
    RejectSource.SERVICE_PROVIDER_ACSE: {
        ACSERejectReason.NO_REASON_GIVEN: "No Reason Given",
        ACSERejectReason.PROTOCOL_VERSION_NOT_SUPPORTED: "Protocol Version Not Supported",
    },
    RejectSource.SERVICE_PROVIDER_PRESENTATION: {
        PresentationRejectReason.TEMPORARY_CONGESTION: "Temporary Congestion",
        PresentationRejectReason.LOCAL_LIMIT_EXCEEDED: "Local Limit Exceeded",
    },
}
_REJECT_SOURCES = {
    RejectSource.SERVICE_USER: "service-user",
    RejectSource.SERVICE_PROVIDER_ACSE: "service-provider (ACSE)",
    RejectSource.SERVICE_PROVIDER_PRESENTATION: "service-provider (presentation)",
}
_REJECT_RESULTS = {RejectResult.REJECTED_PERMANENT: "permanent", RejectResult.REJECTED_TRANSIENT: "transient"}


def describe_reject(reject: AAssociateRJ) -> str:
    """``Called AE Title Not Recognized (rejected-permanent, source service-user)``."""
    reason = _REJECT_REASONS.get(reject.source, {}).get(reject.reason, f"reason {reject.reason}")
    source = _REJECT_SOURCES.get(reject.source, f"source {reject.source}")
    result = _REJECT_RESULTS.get(reject.result, f"result {reject.result}")
    return f"{reason} (rejected-{result}, {source})"


# PS3.8 9.3.3.2 Table 9-18: the result/reason of a presentation context.
_CONTEXT_RESULTS = {
    ACCEPTANCE: "acceptance",
    USER_REJECTION: "user-rejection",
    PROVIDER_REJECTION: "no-reason (provider rejection)",
    ABSTRACT_SYNTAX_NOT_SUPPORTED: "abstract-syntax-not-supported (provider rejection)",
    TRANSFER_SYNTAXES_NOT_SUPPORTED: "transfer-syntaxes-not-supported (provider rejection)",
}


def describe_context_result(result: int) -> str:
    return _CONTEXT_RESULTS.get(result, f"result {result}")


# The requestor's side -----------------------------------------------------------


def associate_request(
    called_ae_title: str,
    calling_ae_title: str,
    contexts: dict[tuple[str, str], int],
    maximum_length: int,
    operations: int = 1,
) -> AAssociateRQ:
    """
    An A-ASSOCIATE-RQ proposing ``{(abstract syntax, transfer syntax): context ID}``,
    and, when ``operations`` is not 1, an Asynchronous Operations Window
    of that many outstanding operations (0: unlimited).
    """
    sub_items = [
        MaximumLengthSubItem(maximum_length),
        ImplementationClassUIDSubItem(uids.IMPLEMENTATION_CLASS_UID),
    ]
    if operations != 1:
        # PS3.7 D.3.3.3: what radx may invoke; it performs none for the peer.
        sub_items.append(AsynchronousOperationsWindowSubItem(operations, 1))
    sub_items.append(ImplementationVersionNameSubItem(uids.IMPLEMENTATION_VERSION_NAME))
    return AAssociateRQ(
        called_ae_title=called_ae_title,
        calling_ae_title=calling_ae_title,
        application_context_name=uids.APPLICATION_CONTEXT_NAME,
        presentation_contexts=tuple(
            PresentationContextItemRQ(context_id, abstract, (transfer,))
            for (abstract, transfer), context_id in sorted(contexts.items(), key=lambda item: item[1])
        ),
        # PS3.8 D.1 and PS3.7 D.3.3.2: our receive limit and our implementation.
        user_information=UserInformationItem(tuple(sub_items)),
    )


@dataclass(frozen=True)
class ContextResult:
    """A proposed presentation context, as the peer answered it."""

    context_id: int
    abstract_syntax: str
    transfer_syntax: str
    result: int

    @property
    def accepted(self) -> bool:
        return self.result == ACCEPTANCE

    @property
    def why(self) -> str:
        return f"presentation context not accepted: {describe_context_result(self.result)}"


@dataclass(frozen=True)
class Granted:
    """What an A-ASSOCIATE-AC grants the requestor."""

    # Every proposed context, answered or not.
    contexts: dict[int, ContextResult]
    # The peer's Maximum Length (PS3.8 D.1); 0 means no limit.
    peer_maximum_length: int
    # How many operations may be outstanding at once; at least 1.
    operations_window: int


class InvalidAccept(Exception):
    """An A-ASSOCIATE-AC that breaks PS3.8's rules for an answer: the association is aborted."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def check_accept(request: AAssociateRQ, accept: AAssociateAC) -> Granted:
    """What ``accept`` grants in answer to ``request``; InvalidAccept if it is no valid answer."""
    proposed = {item.context_id: item for item in request.presentation_contexts}
    contexts = {}
    for item in accept.presentation_contexts:
        asked = proposed.get(item.context_id)
        if asked is None:
            continue
        transfer = item.transfer_syntax if item.result == ACCEPTANCE else asked.transfer_syntaxes[0]
        if item.result == ACCEPTANCE and item.transfer_syntax not in asked.transfer_syntaxes:
            # PS3.8 9.3.3.2: the acceptor picks one of the proposed transfer syntaxes.
            raise InvalidAccept(
                f"the peer accepted context {item.context_id} with transfer syntax"
                f" {item.transfer_syntax}, which was not proposed"
            )
        contexts[item.context_id] = ContextResult(item.context_id, asked.abstract_syntax, transfer, item.result)
    for context_id, asked in proposed.items():
        # PS3.8 9.3.3.2: a context the AC does not answer is not accepted.
        if context_id not in contexts:
            contexts[context_id] = ContextResult(
                context_id, asked.abstract_syntax, asked.transfer_syntaxes[0], PROVIDER_REJECTION
            )
    return Granted(contexts, accept.user_information.maximum_length or 0, granted_window(request, accept))


def granted_window(request: AAssociateRQ, accept: AAssociateAC) -> int:
    """
    How many operations radx may have outstanding: PS3.7 D.3.3.3, the
    acceptor's Maximum-number-operations-invoked, never more than radx
    proposed; 1 when either side has no window; 0 (unlimited) is taken as
    what radx proposed. The acceptor's rule with radx's proposal as its limit.
    """
    proposed = request.user_information.asynchronous_operations_window
    if proposed is None:
        return 1
    return operations_window(
        accept.user_information.asynchronous_operations_window, proposed.maximum_number_operations_invoked or 1 << 16
    )
