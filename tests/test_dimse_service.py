"""Tests for radx.dimse.service: what the SCP answers, decided without a socket."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from radx import uids
from radx.dimse import service
from radx.dimse.commands import (
    C_CANCEL_RQ,
    C_ECHO_RQ,
    C_FIND_RQ,
    C_STORE_RQ,
    COMMAND_FIELD,
    MESSAGE_ID,
    MESSAGE_ID_BEING_RESPONDED_TO,
    RESPONSE_BIT,
    STATUS,
    CEchoRQ,
    CStoreRQ,
    DIMSEDecodeError,
    UnknownCommand,
    decode_command,
    decode_command_set,
)
from radx.dimse.status import Status, is_failure
from radx.storage import errors
from radx.ul.negotiation import AcceptedContext

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
VERIFICATION = AcceptedContext(1, uids.VERIFICATION_SOP_CLASS, EXPLICIT_LE)
CT_CONTEXT = AcceptedContext(3, CT, EXPLICIT_LE)


def store_rq(sop_class=CT, instance="1.2.3.4", message_id=7) -> CStoreRQ:
    return CStoreRQ(message_id=message_id, affected_sop_class_uid=sop_class, affected_sop_instance_uid=instance)


class CEchoTests(SynchronousTestCase):
    def test_success_on_verification(self):
        response = service.c_echo_rsp(VERIFICATION, CEchoRQ(message_id=5))
        self.assertEqual(
            (response.message_id_being_responded_to, response.status, response.affected_sop_class_uid),
            (5, Status.SUCCESS, uids.VERIFICATION_SOP_CLASS),
        )

    def test_on_another_context_is_not_supported(self):
        """PS3.7 9.3.5: C-ECHO belongs to the Verification SOP Class."""
        self.assertEqual(service.c_echo_rsp(CT_CONTEXT, CEchoRQ(message_id=5)).status, Status.SOP_CLASS_NOT_SUPPORTED)

    def test_for_another_sop_class_is_not_supported(self):
        request = CEchoRQ(message_id=5, affected_sop_class_uid=CT)
        response = service.c_echo_rsp(VERIFICATION, request)
        self.assertEqual((response.status, response.affected_sop_class_uid), (Status.SOP_CLASS_NOT_SUPPORTED, CT))

    def test_a_value_that_is_no_uid_is_not_repeated(self):
        request = CEchoRQ(message_id=5, affected_sop_class_uid="1." * 40)
        self.assertIsNone(service.c_echo_rsp(VERIFICATION, request).affected_sop_class_uid)


# Storage's reasons and the statuses a peer gets for them, written out: PS3.4 B.2.3, PS3.7 C.5.
EXPECTED_FAILURES = {
    errors.MalformedSOPInstanceUID: 0x0117,
    errors.MalformedSOPClassUID: 0xC000,
    errors.FileMetaUnencodable: 0xC000,
    errors.MalformedDataSet: 0xC000,
    errors.DataSetMismatch: 0xA900,
    errors.DuplicateInstance: 0x0111,
    errors.WriteFailed: 0xA700,
    errors.NamesExhausted: 0xA700,
    errors.WriterClosed: 0xA700,
}


class StorageFailureTests(SynchronousTestCase):
    """Storage says why it refused an instance; the service says what the peer is answered."""

    def test_each_reason_has_its_status(self):
        for kind, status in EXPECTED_FAILURES.items():
            refusal = service.c_store_failure(kind("why, in words"))
            self.assertEqual(refusal, service.Refusal(status, "why, in words"), kind.__name__)

    def test_the_table_is_the_expected_one(self):
        self.assertEqual(service.STORAGE_FAILURES, EXPECTED_FAILURES)

    def test_every_reason_storage_has_is_mapped(self):
        """A new reason in radx.storage.errors is answered as decided, never as "internal error" by default."""
        reasons = {
            value
            for value in vars(errors).values()
            if isinstance(value, type) and issubclass(value, errors.StorageError) and value is not errors.StorageError
        }
        self.assertEqual(reasons, set(service.STORAGE_FAILURES))

    def test_every_status_is_a_failure(self):
        for kind, status in service.STORAGE_FAILURES.items():
            self.assertTrue(is_failure(status), kind.__name__)
            self.assertIsInstance(status, Status)

    def test_a_subclass_is_answered_as_its_reason(self):
        class NoSpace(errors.WriteFailed):
            pass

        self.assertEqual(service.storage_failure_status(NoSpace("disk full")), Status.OUT_OF_RESOURCES)

    def test_not_a_reason_of_storage(self):
        self.assertIsNone(service.storage_failure_status(OSError("disk full")))
        self.assertIsNone(service.storage_failure_status(errors.StorageError("no reason given")))
        self.assertEqual(
            service.c_store_failure(errors.StorageError("no reason given")),
            service.Refusal(Status.OUT_OF_RESOURCES, "internal error"),
        )


class CStoreTests(SynchronousTestCase):
    def test_stored(self):
        self.assertIsNone(service.c_store_refusal(CT_CONTEXT, store_rq()))

    def test_sop_class_of_another_context(self):
        refusal = service.c_store_refusal(CT_CONTEXT, store_rq(sop_class=MR))
        self.assertEqual(refusal.status, Status.SOP_CLASS_NOT_SUPPORTED)
        self.assertEqual(refusal.comment, f"SOP class {MR} sent on presentation context 3, negotiated for {CT}")

    def test_malformed_instance(self):
        refusal = service.c_store_refusal(CT_CONTEXT, store_rq(instance="1..2"))
        self.assertEqual(refusal.status, Status.INVALID_OBJECT_INSTANCE)
        self.assertIn("malformed Affected SOP Instance UID", refusal.comment)

    def test_storage_error_is_answered_with_its_status(self):
        self.assertEqual(
            service.c_store_failure(errors.DataSetMismatch("mismatch")), service.Refusal(0xA900, "mismatch")
        )

    def test_any_other_error_is_out_of_resources(self):
        self.assertEqual(
            service.c_store_failure(RuntimeError("bug")), service.Refusal(Status.OUT_OF_RESOURCES, "internal error")
        )

    def test_response_repeats_the_request_and_cuts_the_comment(self):
        response = service.c_store_rsp(store_rq(), Status.OUT_OF_RESOURCES, "x" * 100)
        self.assertEqual(
            (
                response.message_id_being_responded_to,
                response.status,
                response.affected_sop_class_uid,
                response.affected_sop_instance_uid,
                response.error_comment,
            ),
            (7, Status.OUT_OF_RESOURCES, CT, "1.2.3.4", "x" * 64),
        )

    def test_success_has_no_comment(self):
        self.assertIsNone(service.c_store_rsp(store_rq(), Status.SUCCESS).error_comment)


class OtherCommandTests(SynchronousTestCase):
    def test_unknown_request_is_unrecognized(self):
        elements = decode_command_set(service.unknown_command_rsp(UnknownCommand(C_FIND_RQ, 9, {})))
        self.assertEqual(
            (elements[COMMAND_FIELD], elements[MESSAGE_ID_BEING_RESPONDED_TO], elements[STATUS]),
            (C_FIND_RQ | RESPONSE_BIT, 9, Status.UNRECOGNIZED_OPERATION),
        )

    def test_c_cancel_and_responses_get_none(self):
        self.assertIsNone(service.unknown_command_rsp(UnknownCommand(C_CANCEL_RQ, 9, {})))
        self.assertIsNone(service.unknown_command_rsp(UnknownCommand(C_FIND_RQ | RESPONSE_BIT, 9, {})))

    def test_undecodable_c_store_cannot_be_understood(self):
        """PS3.4 B.2.3."""
        error = DIMSEDecodeError("no SOP instance", {COMMAND_FIELD: C_STORE_RQ, MESSAGE_ID: 4})
        status, response = service.undecodable_command_rsp(error)
        self.assertEqual(status, Status.CANNOT_UNDERSTAND)
        self.assertEqual(decode_command(response).status, Status.CANNOT_UNDERSTAND)

    def test_undecodable_other_is_mistyped(self):
        """PS3.7 C.5."""
        error = DIMSEDecodeError("bad", {COMMAND_FIELD: C_ECHO_RQ, MESSAGE_ID: 4})
        self.assertEqual(service.undecodable_command_rsp(error)[0], Status.MISTYPED_ARGUMENT)

    def test_undecodable_without_field_or_id_aborts(self):
        for elements in (None, {COMMAND_FIELD: C_STORE_RQ}, {MESSAGE_ID: 4}, {COMMAND_FIELD: C_CANCEL_RQ, MESSAGE_ID: 4}):
            self.assertIsNone(service.undecodable_command_rsp(DIMSEDecodeError("bad", elements)), elements)
