"""Tests for radx.ul.negotiation: the acceptor's answer to an A-ASSOCIATE-RQ, and the requestor's check of the AC."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from radx import uids
from radx.ul import negotiation
from radx.ul.negotiation import AcceptorPolicy, negotiate
from radx.ul.pdu import (
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AsynchronousOperationsWindowSubItem,
    ImplementationClassUIDSubItem,
    MaximumLengthSubItem,
    PresentationContextItemAC,
    PresentationContextItemRQ,
    SCPSCURoleSelectionSubItem,
    UserIdentityRQSubItem,
    UserInformationItem,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve - FIND
COMMITMENT = "1.2.840.10008.1.20.1"  # Storage Commitment Push Model
PRIVATE = "1.2.840.113619.4.26"  # a vendor's private storage class
IMPLICIT = uids.IMPLICIT_VR_LITTLE_ENDIAN
EXPLICIT = uids.EXPLICIT_VR_LITTLE_ENDIAN
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def request(*contexts, called="RADX-SCP", sub_items=(), **kwargs) -> AAssociateRQ:
    return AAssociateRQ(
        called_ae_title=called,
        calling_ae_title="MODALITY",
        presentation_contexts=tuple(contexts),
        user_information=UserInformationItem(
            (MaximumLengthSubItem(32768), ImplementationClassUIDSubItem("1.2.3")) + tuple(sub_items)
        ),
        **kwargs,
    )


def context(context_id, abstract, *transfer_syntaxes):
    return PresentationContextItemRQ(context_id, abstract, tuple(transfer_syntaxes or (IMPLICIT,)))


class RejectTests(SynchronousTestCase):
    def test_called_ae_title(self):
        """PS3.8 9.3.4: permanent, service-user, called-AE-title-not-recognized (7)."""
        result = negotiate(request(context(1, CT), called="WRONG-AE"), AcceptorPolicy())
        self.assertEqual(result.reject, AAssociateRJ(1, 1, 7))
        self.assertIsNone(result.accept)
        self.assertIn("WRONG-AE", result.reason)

    def test_control_characters_in_an_ae_title(self):
        """PS3.5 6.2: no control characters, no backslash in an AE; the calling one is not recognized (3), the called one (7)."""
        for calling, called, reason in (
            ("X\nINFO: FORGED", "RADX-SCP", 3),
            ("A\\B", "RADX-SCP", 3),
            ("MODALITY", "RADX\x1bSCP", 7),
        ):
            rq = request(context(1, CT), called=called)
            rq = AAssociateRQ(called, calling, rq.presentation_contexts, rq.user_information)
            result = negotiate(rq, AcceptorPolicy())
            self.assertEqual(result.reject, AAssociateRJ(1, 1, reason), calling)
            self.assertTrue(result.reason.isprintable(), result.reason)

    def test_ae_title_is_our_own(self):
        result = negotiate(request(context(1, CT), called="ARCHIVE"), AcceptorPolicy(ae_title="ARCHIVE"))
        self.assertIsNotNone(result.accept)

    def test_any_called_ae_title_when_asked(self):
        """--accept-any-called-aet: DCMTK's default ANY-SCP is accepted, and the AC names the title called."""
        policy = AcceptorPolicy(accept_any_called_ae_title=True)
        result = negotiate(request(context(1, CT), called="ANY-SCP"), policy)
        self.assertIsNone(result.reject)
        self.assertEqual(result.accept.called_ae_title, "ANY-SCP")
        # Still an AE title: PS3.5 6.2.
        result = negotiate(request(context(1, CT), called="ANY\nSCP"), policy)
        self.assertEqual(result.reject, AAssociateRJ(1, 1, 7))

    def test_no_presentation_context(self):
        """PS3.8 9.3.2: one or more presentation contexts; none is rejected (permanent, service-user, no reason given)."""
        result = negotiate(request(), AcceptorPolicy())
        self.assertEqual(result.reject, AAssociateRJ(1, 1, 1))
        self.assertIn("no presentation context", result.reason)

    def test_application_context(self):
        result = negotiate(
            request(context(1, CT), application_context_name="1.2.3.4"), AcceptorPolicy()
        )
        self.assertEqual(result.reject, AAssociateRJ(1, 1, 2))

    def test_protocol_version(self):
        """PS3.8 9.3.2: only bit 0 is tested; without it, service-provider ACSE reason 2."""
        self.assertEqual(
            negotiation.provider_reject(request(context(1, CT), protocol_version=2)),
            AAssociateRJ(1, 2, 2),
        )
        self.assertIsNone(negotiation.provider_reject(request(context(1, CT), protocol_version=3)))


class PresentationContextTests(SynchronousTestCase):
    def results(self, rq, policy=AcceptorPolicy()):
        answer = negotiate(rq, policy)
        return [(c.context_id, c.result, c.transfer_syntax) for c in answer.accept.presentation_contexts]

    def test_each_context_gets_its_own_answer(self):
        rq = request(
            context(1, CT, JPEG_BASELINE, EXPLICIT),
            context(3, FIND),
            context(5, MR, "1.2.3.4.5.6"),
            context(7, uids.VERIFICATION_SOP_CLASS),
        )
        self.assertEqual(
            self.results(rq),
            [(1, 0, JPEG_BASELINE), (3, 3, ""), (5, 4, ""), (7, 0, IMPLICIT)],
        )

    def test_abstract_syntax_that_is_no_uid(self):
        """PS3.8 9.3.2.2.1, PS3.5 9.1: 65 digits name no SOP class, private or not: not supported (3)."""
        rq = request(context(1, "1." + "2" * 63), context(3, "1.2.3.x"), context(5, CT))
        self.assertEqual(self.results(rq), [(1, 3, ""), (3, 3, ""), (5, 0, IMPLICIT)])

    def test_first_proposed_transfer_syntax_wins(self):
        rq = request(context(1, CT, EXPLICIT, IMPLICIT))
        self.assertEqual(self.results(rq), [(1, 0, EXPLICIT)])

    def test_restricted_transfer_syntaxes(self):
        rq = request(context(1, CT, EXPLICIT, IMPLICIT))
        policy = AcceptorPolicy(transfer_syntaxes=(IMPLICIT,))
        self.assertEqual(self.results(rq, policy), [(1, 0, IMPLICIT)])

    def test_sop_class_filter(self):
        rq = request(context(1, CT), context(3, MR), context(5, uids.VERIFICATION_SOP_CLASS))
        policy = AcceptorPolicy(sop_classes=frozenset({CT}))
        self.assertEqual(self.results(rq, policy), [(1, 0, IMPLICIT), (3, 3, ""), (5, 0, IMPLICIT)])

    def test_echo_refused(self):
        rq = request(context(1, uids.VERIFICATION_SOP_CLASS))
        self.assertEqual(self.results(rq, AcceptorPolicy(accept_echo=False)), [(1, 3, "")])

    def test_storage_classes(self):
        self.assertTrue(negotiation.is_storage_sop_class(CT))
        self.assertTrue(negotiation.is_storage_sop_class(PRIVATE))
        self.assertFalse(negotiation.is_storage_sop_class(FIND))
        self.assertFalse(negotiation.is_storage_sop_class(COMMITMENT))
        self.assertFalse(negotiation.is_storage_sop_class(uids.VERIFICATION_SOP_CLASS))
        self.assertFalse(negotiation.is_storage_sop_class(IMPLICIT))
        # PS3.4 Table I.4-1, not Table B.5-1: a DICOMDIR is not sent by C-STORE.
        self.assertFalse(negotiation.is_storage_sop_class(uids.MEDIA_STORAGE_DIRECTORY_STORAGE))

    def test_dicomdir_context_refused(self):
        rq = request(context(1, CT), context(3, uids.MEDIA_STORAGE_DIRECTORY_STORAGE))
        self.assertEqual(self.results(rq, AcceptorPolicy()), [(1, 0, IMPLICIT), (3, 3, "")])

    def test_accepted_contexts_are_recorded(self):
        answer = negotiate(request(context(1, CT), context(3, FIND)), AcceptorPolicy())
        self.assertEqual(list(answer.contexts), [1])
        self.assertEqual(answer.contexts[1].transfer_syntax, IMPLICIT)
        self.assertEqual(answer.peer_maximum_pdu_length, 32768)

    def test_nothing_acceptable_still_accepts_the_association(self):
        """The peer learns per context (like DCMTK's storescu: "no presentation context")."""
        answer = negotiate(request(context(1, FIND)), AcceptorPolicy())
        self.assertIsNotNone(answer.accept)
        self.assertEqual(answer.contexts, {})

    def test_even_and_repeated_ids_are_invalid(self):
        self.assertIn("even", negotiation.invalid_request_reason(request(context(2, CT))))
        self.assertIn(
            "repeated",
            negotiation.invalid_request_reason(request(context(1, CT), context(1, MR))),
        )
        self.assertIsNone(negotiation.invalid_request_reason(request(context(1, CT), context(3, MR))))


class UserInformationTests(SynchronousTestCase):
    def user_information(self, rq, policy=AcceptorPolicy()):
        return negotiate(rq, policy).accept.user_information

    def test_our_maximum_length_and_implementation(self):
        info = self.user_information(request(context(1, CT)), AcceptorPolicy(maximum_pdu_length=65536))
        self.assertEqual(info.maximum_length, 65536)
        self.assertEqual(info.implementation_class_uid, uids.IMPLEMENTATION_CLASS_UID)
        self.assertEqual(info.implementation_version_name, uids.IMPLEMENTATION_VERSION_NAME)

    def window(self, invoked, performed, policy=AcceptorPolicy()):
        rq = request(context(1, CT), sub_items=[AsynchronousOperationsWindowSubItem(invoked, performed)])
        negotiated = negotiate(rq, policy)
        window = negotiated.accept.user_information.asynchronous_operations_window
        return (
            window.maximum_number_operations_invoked,
            window.maximum_number_operations_performed,
            negotiated.operations_window,
        )

    def test_asynchronous_operations_window_granted_as_proposed(self):
        """PS3.7 D.3.3.3: up to radx's limit, the requestor gets the window it asked for; radx performs one."""
        self.assertEqual(self.window(5, 5), (5, 1, 5))

    def test_asynchronous_operations_window_negotiated_down(self):
        """A window over the limit, or unlimited (0), is negotiated down to it."""
        self.assertEqual(self.window(100, 1), (16, 1, 16))
        self.assertEqual(self.window(0, 0), (16, 1, 16))
        self.assertEqual(self.window(0, 0, AcceptorPolicy(maximum_operations_invoked=3)), (3, 1, 3))

    def test_synchronous_window_stays_synchronous(self):
        self.assertEqual(self.window(1, 1), (1, 1, 1))

    def test_operations_window_one_unless_proposed(self):
        self.assertEqual(negotiate(request(context(1, CT)), AcceptorPolicy()).operations_window, 1)

    def test_no_window_unless_proposed(self):
        self.assertIsNone(self.user_information(request(context(1, CT))).asynchronous_operations_window)

    def test_role_selection(self):
        """PS3.7 D.3.3.4: the requestor may be SCU; radx never grants it the SCP role."""
        rq = request(
            context(1, CT),
            sub_items=[
                SCPSCURoleSelectionSubItem(CT, 1, 1),
                SCPSCURoleSelectionSubItem(FIND, 1, 0),
            ],
        )
        self.assertEqual(
            self.user_information(rq).role_selections, (SCPSCURoleSelectionSubItem(CT, 1, 0),)
        )

    def test_user_identity_is_not_answered(self):
        rq = request(context(1, CT), sub_items=[UserIdentityRQSubItem(1, True, b"user")])
        self.assertIsNone(self.user_information(rq).user_identity)


class UIDTablesTests(SynchronousTestCase):
    """radx/ul/_uid_tables.py agrees with the installed pydicom's dictionary."""

    def test_transfer_syntaxes(self):
        from pydicom.uid import AllTransferSyntaxes

        extra = {"1.2.840.10008.1.2.1.98", "1.2.840.10008.1.2.4.94", "1.2.840.10008.1.2.4.95"}
        self.assertEqual(set(negotiation.DEFAULT_TRANSFER_SYNTAXES), {str(u) for u in AllTransferSyntaxes} | extra)

    def test_not_storage(self):
        # In a fresh interpreter: pynetdicom, imported by other tests, adds
        # its own entries to pydicom's dictionary.
        import json
        import subprocess
        import sys

        code = """if True:
            import json
            from pydicom._uid_dict import UID_dictionary

            def storage(name, kind):
                # A SOP class named "... Storage" (not Commitment or
                # Management), or one listed without a name, is a storage
                # class; the rest is not.
                if not name:
                    return True
                if kind != "SOP Class":
                    return False
                if name == "Media Storage Directory Storage":
                    return False  # PS3.4 I.4 only, not B.5: the DICOMDIR's
                return "Storage" in name and "Commitment" not in name and "Storage Management" not in name

            print(json.dumps(sorted(u for u, e in UID_dictionary.items() if not storage(e[0], e[1]))))
        """
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        from radx.ul._uid_tables import NOT_STORAGE

        self.assertEqual(NOT_STORAGE, frozenset(json.loads(result.stdout)))

    def test_server_modules_do_not_import_pydicom(self):
        import subprocess
        import sys

        code = (
            "import sys, radx.app.cli, radx.app.tap, radx.scp.factory, radx.scp.protocol;"
            "print('pydicom' in sys.modules)"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        self.assertEqual(result.stdout.strip(), "False")


class RequestorTests(SynchronousTestCase):
    """The requestor's side: what an A-ASSOCIATE-AC grants, checked against what was proposed."""

    def setUp(self):
        self.request = negotiation.associate_request("RADX-SCP", "SCU", {(CT, EXPLICIT): 1, (MR, EXPLICIT): 3}, 16384, 8)

    def accept(self, *items, window=None):
        sub_items = [MaximumLengthSubItem(32768)]
        if window is not None:
            sub_items.append(AsynchronousOperationsWindowSubItem(window, 1))
        return AAssociateAC(
            called_ae_title="RADX-SCP",
            calling_ae_title="SCU",
            presentation_contexts=tuple(items),
            user_information=UserInformationItem(tuple(sub_items)),
        )

    def test_granted(self):
        granted = negotiation.check_accept(
            self.request, self.accept(PresentationContextItemAC(1, negotiation.ACCEPTANCE, EXPLICIT), window=4)
        )
        self.assertEqual(granted.peer_maximum_length, 32768)
        self.assertEqual(granted.operations_window, 4)
        self.assertEqual(granted.contexts[1], negotiation.ContextResult(1, CT, EXPLICIT, negotiation.ACCEPTANCE))
        # PS3.8 9.3.3.2: a context the AC does not answer is not accepted.
        self.assertFalse(granted.contexts[3].accepted)

    def test_no_window_answered_is_synchronous(self):
        granted = negotiation.check_accept(self.request, self.accept())
        self.assertEqual(granted.operations_window, 1)

    def test_a_transfer_syntax_not_proposed_is_refused(self):
        accept = self.accept(PresentationContextItemAC(1, negotiation.ACCEPTANCE, IMPLICIT))
        error = self.assertRaises(negotiation.InvalidAccept, negotiation.check_accept, self.request, accept)
        self.assertIn("which was not proposed", error.message)
