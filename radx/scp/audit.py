# -*- test-case-name: tests.test_security_audit -*-
"""The audit record of one association, acceptor side: who, over what, what was stored, how it ended.

The facts of a PS3.15 A.5 audit message (not its XML format), gathered
while the association runs and logged once when its connection closes.
"""

from __future__ import annotations

from radx.ul.pdu import AAssociateRQ


class AuditRecord:
    """What one association's end is logged with. UIDs only, never patient data."""

    __slots__ = ("request", "tls_subject", "connected_at", "outcome")

    def __init__(self, connected_at: float = 0.0) -> None:
        self.request: AAssociateRQ | None = None
        self.tls_subject: str | None = None
        self.connected_at = connected_at
        self.outcome: str | None = None

    def requested(self, request: AAssociateRQ, tls_subject: str | None) -> None:
        self.request = request
        self.tls_subject = tls_subject

    def ended(self, outcome: str) -> None:
        """The first way the association ended is the one recorded."""
        if self.outcome is None:
            self.outcome = outcome

    def log(self, log, peer: str, negotiated, operations, now: float) -> None:
        """
        The line names the contexts used (a requestor may propose a hundred
        and use one); ``accepted_contexts``, for JSON, lists every accepted one.
        """
        request = self.request
        accepted = negotiated.contexts if negotiated is not None else {}

        def pairs(ids):
            return list(dict.fromkeys(f"{accepted[i].abstract_syntax}/{accepted[i].transfer_syntax}" for i in ids))

        log.info(
            "Association ended peer={peer} tls_subject={tls_subject} calling_ae={calling_ae}"
            " called_ae={called_ae} accepted={accepted}/{proposed} contexts={contexts}"
            " stored={stored} failed={failed} duration={duration:.3f}s outcome={outcome}",
            peer=peer,
            tls_subject=self.tls_subject or "-",
            calling_ae=request.calling_ae_title,
            called_ae=request.called_ae_title,
            accepted=len(accepted),
            proposed=len(request.presentation_contexts),
            contexts=",".join(pairs(i for i in operations.used_contexts if i in accepted)) or "-",
            accepted_contexts=pairs(accepted),
            stored=operations.stored_count,
            failed=operations.failed_count,
            duration=now - self.connected_at,
            outcome=self.outcome or "closed",
            audit=True,
        )
