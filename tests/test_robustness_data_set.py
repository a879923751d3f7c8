"""Hostile data sets over a real socket: each refused with a failure status, one log line, nothing filed.

``docs/robustness.rst`` ("Data sets that contradict their transfer
syntax") lists the cases and what radx answers.
"""

from __future__ import annotations

import random
import zlib

from twisted.internet import defer, threads

from radx.storage.filing import Filing
from radx.ul.framing import PDUReader
from radx.ul.pdu import AAssociateAC, AReleaseRP, AReleaseRQ, PDataTF
from radx.testing import associate_rq, store_rq_bytes
from tests.dicomfiles import data_set_bytes, pydicom_test_files
from tests.interop import ServerTestCase
from tests.test_robustness_input import LogWatch, files_under, raw_client, responses
from tests.test_storage_walk import (
    HEADER,
    J2K_FRAME,
    PIXEL_DATA,
    RLE_FRAME,
    deflate,
    encapsulated,
    explicit,
    uids,
)

EXPLICIT_LE = "1.2.840.10008.1.2.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
DEFLATED = "1.2.840.10008.1.2.1.99"
SOP_CLASS = HEADER.sop_class_uid
MR = "1.2.840.10008.5.1.4.1.1.4"

# Context 1: Explicit VR LE; 3: JPEG Baseline; 5: Deflated Explicit VR LE; 7: MR, JPEG Baseline.
CONTEXTS = (
    (1, SOP_CLASS, (EXPLICIT_LE,)),
    (3, SOP_CLASS, (JPEG_BASELINE,)),
    (5, SOP_CLASS, (DEFLATED,)),
    (7, MR, (JPEG_BASELINE,)),
)


class HostileDataSetTests(ServerTestCase):
    timeout = 60

    def setUp(self) -> None:
        self.log = LogWatch(self)
        self.start_server(self.server_config(filing=Filing(organize=False)))
        self.output = self.factory.config.output_dir

    @defer.inlineCallbacks
    def store(self, data_set: bytes, context_id: int, sop_class_uid=SOP_CLASS, sop_instance_uid=HEADER.sop_instance_uid):
        """One C-STORE of ``data_set`` on ``context_id``, then a release: (status, the log lines about it)."""
        script = [
            associate_rq(contexts=CONTEXTS).encode(),
            AAssociateAC,
            store_rq_bytes(data_set, sop_class_uid, sop_instance_uid, context_id=context_id),
            PDataTF,  # the C-STORE-RSP, before the release
            AReleaseRQ().encode(),
        ]
        result = yield threads.deferToThread(raw_client, self.port, script, close_on=(AReleaseRP,))
        pdus = PDUReader(maximum_pdata_length=0).feed(result["data"])
        [response] = responses(pdus)
        self.assertIsInstance(pdus[-1], AReleaseRP)
        # Besides the association's own lines (accepted, released, ended)
        # and the request's, what radx logged: one association at a time.
        lines = [line for line in self.log.lines() if not line.startswith(("Association ", "C-STORE request received"))]
        self.assertEqual(self.log.errors(), [])
        return response.status, lines

    @defer.inlineCallbacks
    def assertRefused(self, data_set: bytes, context_id: int, reason: str, **uids):
        status, lines = yield self.store(data_set, context_id, **uids)
        self.assertEqual(status, 0xC000)
        self.assertEqual(len(lines), 1, lines)
        self.assertIn(reason, lines[0])
        self.assertEqual(files_under(self.output), ([], []))

    def test_encapsulated_pixel_data_on_explicit_vr_little_endian(self):
        return self.assertRefused(uids() + encapsulated(J2K_FRAME), 1, "the transfer syntax is native")

    def test_rle_frames_on_jpeg_baseline(self):
        return self.assertRefused(uids() + encapsulated(RLE_FRAME), 3, "JPEG SOI marker")

    def test_a_real_rle_file_on_jpeg_baseline(self):
        sample = pydicom_test_files()["rle_lossless"]
        self.assertEqual(sample.sop_class_uid, MR)
        uids = dict(sop_class_uid=MR, sop_instance_uid=sample.sop_instance_uid)
        return self.assertRefused(data_set_bytes(sample.path), 7, "JPEG SOI marker", **uids)

    def test_truncated_deflated_data_set(self):
        deflated = deflate(uids() + explicit(PIXEL_DATA, b"OW", random.Random(1).randbytes(9000)))
        return self.assertRefused(deflated[: len(deflated) * 27 // 100 & ~1], 5, "deflate stream does not end")

    def test_large_value_before_the_uids(self):
        # 2 MiB here; 512 MiB took 1,069 MiB when pydicom read the header.
        data = explicit(0x00080005, b"OB", bytes(2 << 20)) + uids()
        return self.assertRefused(data, 1, "within the data set's first")

    def test_deflated_large_value_before_the_uids(self):
        data = deflate(explicit(0x00080005, b"OB", bytes(64 << 20)) + uids())
        return self.assertRefused(data + b"\0" * (len(data) % 2), 5, "within the data set's first")

    @defer.inlineCallbacks
    def test_deflated_large_value_after_the_uids_is_stored(self):
        """Valid, however far it inflates: stored, the bytes as sent."""
        data = deflate(uids() + explicit(PIXEL_DATA, b"OB", bytes(64 << 20)))
        data += b"\0" * (len(data) % 2)
        status, lines = yield self.store(data, 5)
        self.assertEqual(status, 0x0000, lines)
        [stored], temporary = files_under(self.output)
        self.assertEqual(temporary, [])
        with open(stored, "rb") as f:
            self.assertTrue(f.read().endswith(data))
