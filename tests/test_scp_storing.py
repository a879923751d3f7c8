"""Tests for radx.scp.storing, with a threadpool the test runs step by step."""

import os
from functools import partial

from twisted.trial.unittest import SynchronousTestCase

from radx.scp.storing import Backlog, InstanceReception
from radx.testing import SteppedThreadPool, ThreadlessReactor
from radx.storage.errors import DataSetMismatch, MalformedSOPInstanceUID, WriteFailed
from radx.storage.store import INCOMING, InstanceWriter, StoredInstance
from radx.storage.tree import OutputTree
from tests.test_storage_store import EXPLICIT_LE, SOP_CLASS, SOP_INSTANCE, SERIES, STUDY, data_set


class RecordingWriter:
    """Records what it is asked; made only on the threadpool."""

    def __init__(self, log, fail_on_write=None, error=None):
        self.log = log
        self.fail_on_write = fail_on_write
        self.error = error or WriteFailed("disk full")
        self.writes = 0
        log.append(("made",))

    def write(self, chunks):
        self.writes += 1
        if self.writes == self.fail_on_write:
            self.log.append(("failed write",))
            raise self.error
        self.log.append(("write", list(chunks)))

    def commit(self):
        self.log.append(("commit",))
        return StoredInstance("/stored.dcm", False, [])

    def discard(self):
        self.log.append(("discard",))


def written(log) -> bytes:
    return b"".join(b"".join(bytes(c) for c in entry[1]) for entry in log if entry[0] == "write")


class OrderingTests(SynchronousTestCase):
    def setUp(self):
        self.pool = SteppedThreadPool()
        self.log = []
        self.backlog = []

    def reception(self, **kwargs):
        return InstanceReception(
            ThreadlessReactor(),
            self.pool,
            partial(RecordingWriter, self.log),
            on_backlog=self.backlog.append,
            **kwargs,
        )

    def test_writer_made_on_threadpool(self):
        reception = self.reception(batch_bytes=100, high_water=1000, low_water=100)
        reception.write(b"x" * 150)
        self.assertEqual(self.log, [])
        self.assertEqual(len(self.pool.jobs), 1)
        self.pool.run_one()
        self.assertEqual(self.log[0], ("made",))

    def test_order_and_one_job_at_a_time(self):
        reception = self.reception(batch_bytes=1000, high_water=1 << 20, low_water=1000)
        fragments = [bytes([i]) * 300 for i in range(40)]
        for i, fragment in enumerate(fragments):
            reception.write(fragment)
            self.assertLessEqual(len(self.pool.jobs), 1)
            if i % 7 == 6:
                self.pool.run_all()
        finished = reception.finish()
        self.assertLessEqual(len(self.pool.jobs), 1)
        self.pool.run_all()
        self.assertEqual(self.successResultOf(finished).path, "/stored.dcm")
        self.assertEqual(written(self.log), b"".join(fragments))
        self.assertEqual([e[0] for e in self.log if e[0] != "write"], ["made", "commit"])
        self.assertEqual(reception.pending_bytes, 0)
        # Batches of at least batch_bytes, but for the last.
        sizes = [sum(len(c) for c in e[1]) for e in self.log if e[0] == "write"]
        self.assertTrue(all(size >= 1000 for size in sizes[:-1]), sizes)

    def test_first_batch_at_batch_bytes(self):
        reception = self.reception(batch_bytes=1000, high_water=4000, low_water=1000)
        for _ in range(3):
            reception.write(b"a" * 300)
        self.assertEqual(self.pool.jobs, [])
        reception.write(b"a" * 300)
        self.assertEqual(len(self.pool.jobs), 1)

    def test_no_copies(self):
        """Fragments go to the writer by reference."""
        reception = self.reception(batch_bytes=10, high_water=100, low_water=10)
        data = b"0123456789abcdef"
        fragments = [memoryview(data)[:7], memoryview(data)[7:]]
        for fragment in fragments:
            reception.write(fragment)
        self.pool.run_all()
        [entry] = [e for e in self.log if e[0] == "write"]
        self.assertIs(entry[1][0], fragments[0])
        self.assertIs(entry[1][1], fragments[1])

    def test_mutable_buffer_copied(self):
        reception = self.reception(batch_bytes=10, high_water=100, low_water=10)
        buffer = bytearray(b"original")
        reception.write(memoryview(buffer))
        buffer[:] = b"reused!!"
        finished = reception.finish()
        self.pool.run_all()
        self.successResultOf(finished)
        self.assertEqual(written(self.log), b"original")

    def test_small_instance_one_job(self):
        """Made, written and committed in one threadpool job."""
        reception = self.reception()
        reception.write(b"small")
        self.assertEqual(self.pool.jobs, [])
        finished = reception.finish()
        self.assertEqual(len(self.pool.jobs), 1)
        self.pool.run_one()
        self.successResultOf(finished)
        self.assertEqual(self.log, [("made",), ("write", [b"small"]), ("commit",)])

    def test_backlog(self):
        reception = self.reception(batch_bytes=200, high_water=1000, low_water=300)
        for _ in range(9):
            reception.write(b"b" * 100)
        self.assertEqual(self.backlog, [])
        self.assertEqual(reception.pending_bytes, 900)
        reception.write(b"b" * 100)
        self.assertEqual(self.backlog, [True])
        reception.write(b"b" * 100)  # the transport may still deliver some
        self.assertEqual(self.backlog, [True])
        self.assertEqual(reception.pending_bytes, 1100)
        # The first job had 200 bytes: 900 still pending, still paused.
        self.pool.run_one()
        self.assertEqual(reception.pending_bytes, 900)
        self.assertEqual(self.backlog, [True])
        # The next takes all 900 that were buffered meanwhile.
        self.pool.run_one()
        self.assertEqual(reception.pending_bytes, 0)
        self.assertEqual(self.backlog, [True, False])
        reception.write(b"b" * 1000)
        self.assertEqual(self.backlog, [True, False, True])

    def test_backlog_low_water(self):
        """Resumes at low water, not before."""
        reception = self.reception(batch_bytes=500, high_water=1000, low_water=400)
        reception.write(b"c" * 600)  # job 1: 600
        reception.write(b"c" * 400)  # buffered; pending 1000: pause
        self.assertEqual(self.backlog, [True])
        self.pool.run_one()  # 400 pending (now in job 2): low water
        self.assertEqual(reception.pending_bytes, 400)
        self.assertEqual(self.backlog, [True, False])

    def test_backlog_shared_by_the_instances_of_an_association(self):
        """Instances in flight together (an operations window) count in one budget."""
        backlog = Backlog(self.backlog.append, high_water=1000, low_water=300)
        first = self.reception(batch_bytes=1000, backlog=backlog)
        first.write(b"1" * 600)
        first.finish()  # its commit job waits on the pool
        second = self.reception(batch_bytes=1000, backlog=backlog)
        self.assertEqual(self.backlog, [])
        second.write(b"2" * 400)  # 600 + 400: the association's high water
        self.assertEqual(self.backlog, [True])
        self.assertEqual(backlog.pending, 1000)
        self.pool.run_one()  # the first instance written and committed: 400 left
        self.assertEqual(self.backlog, [True])
        second.finish()
        self.pool.run_one()
        self.assertEqual(self.backlog, [True, False])
        self.assertEqual(backlog.pending, 0)

    def test_invalid_water_marks(self):
        self.assertRaises(ValueError, self.reception, high_water=100, low_water=100, batch_bytes=10)
        self.assertRaises(ValueError, self.reception, high_water=100, low_water=10, batch_bytes=200)
        self.assertRaises(ValueError, self.reception, batch_bytes=0)

    def test_write_after_finish(self):
        reception = self.reception()
        reception.finish()
        self.assertRaises(RuntimeError, reception.write, b"late")
        self.assertRaises(RuntimeError, reception.finish)


class FailureOrderingTests(SynchronousTestCase):
    def setUp(self):
        self.pool = SteppedThreadPool()
        self.log = []
        self.backlog = []

    def test_first_failure_wins(self):
        """A failed write: later data dropped, not written; finish fails with it."""
        reception = InstanceReception(
            ThreadlessReactor(),
            self.pool,
            partial(RecordingWriter, self.log, fail_on_write=2),
            batch_bytes=100,
            high_water=300,
            low_water=100,
            on_backlog=self.backlog.append,
        )
        reception.write(b"1" * 100)
        self.pool.run_one()
        reception.write(b"2" * 100)  # job 2, fails
        reception.write(b"3" * 100)
        reception.write(b"4" * 100)  # pending 300: pause
        self.assertEqual(self.backlog, [True])
        self.pool.run_one()
        # Resumed, so the rest of the data set can be read and dropped.
        self.assertEqual(self.backlog, [True, False])
        self.assertEqual(reception.pending_bytes, 0)
        reception.write(b"5" * 1000)
        self.assertEqual(reception.pending_bytes, 0)
        finished = reception.finish()
        self.pool.run_all()
        self.failureResultOf(finished, WriteFailed)
        self.assertEqual(
            [e[0] for e in self.log], ["made", "write", "failed write", "discard"]
        )

    def test_factory_fails(self):
        def factory():
            raise MalformedSOPInstanceUID("malformed SOP Instance UID")

        reception = InstanceReception(ThreadlessReactor(), self.pool, factory, batch_bytes=10, high_water=100, low_water=10)
        reception.write(b"x" * 50)
        reception.write(b"x" * 50)
        finished = reception.finish()
        self.pool.run_all()
        self.failureResultOf(finished, MalformedSOPInstanceUID)

    def test_bug_passes_through(self):
        """Not one of storage's refusals: finish fails with it as it is, for the log."""
        reception = InstanceReception(
            ThreadlessReactor(),
            self.pool,
            partial(RecordingWriter, self.log, fail_on_write=1, error=ZeroDivisionError()),
        )
        reception.write(b"x")
        finished = reception.finish()
        self.pool.run_all()
        self.failureResultOf(finished, ZeroDivisionError)
        self.assertEqual(self.log[-1], ("discard",))


class DiskTests(SynchronousTestCase):
    """With the real InstanceWriter, in a temporary directory."""

    def setUp(self):
        self.output = os.path.abspath(self.mktemp())
        self.pool = SteppedThreadPool()

    def writer_factory(self, writer_class=InstanceWriter):
        return partial(
            writer_class,
            OutputTree(self.output),
            sop_class_uid=SOP_CLASS,
            sop_instance_uid=SOP_INSTANCE,
            transfer_syntax_uid=EXPLICIT_LE,
            calling_ae_title="STORESCU",
        )

    def reception(self, writer_class=InstanceWriter, **kwargs):
        kwargs.setdefault("batch_bytes", 4096)
        kwargs.setdefault("high_water", 16384)
        kwargs.setdefault("low_water", 4096)
        return InstanceReception(ThreadlessReactor(), self.pool, self.writer_factory(writer_class), **kwargs)

    def fragments(self, data, size=1000):
        view = memoryview(data)
        return [view[i : i + size] for i in range(0, len(data), size)]

    def files(self):
        found = []
        for root, _, names in os.walk(self.output):
            found.extend(os.path.relpath(os.path.join(root, name), self.output) for name in names)
        return sorted(found)

    def test_stored(self):
        data = data_set(pixels=bytes(range(256)) * 200)
        reception = self.reception()
        for i, fragment in enumerate(self.fragments(data)):
            reception.write(fragment)
            if i % 3 == 0:
                self.pool.run_all()
        finished = reception.finish()
        self.pool.run_all()
        stored = self.successResultOf(finished)
        self.assertEqual(stored.path, os.path.join(self.output, STUDY, SERIES, SOP_INSTANCE + ".dcm"))
        with open(stored.path, "rb") as f:
            self.assertTrue(f.read().endswith(data))
        self.assertEqual(self.files(), [os.path.join(STUDY, SERIES, SOP_INSTANCE + ".dcm")])

    def test_catalogued_in_the_commit_job(self):
        """The catalogue hears of the file once it is in place, on the threadpool, before the result reaches the reactor."""
        data = data_set()
        heard = []

        def catalogue(writer, stored):
            # The values the walk kept as it wrote: the SOP Class UID (0008,0016) at least.
            heard.append((0x00080016 in writer.walked_values(), os.path.exists(stored.path)))
            return "the catalogue is locked"

        reception = self.reception(catalogue=catalogue)
        reception.write(data)
        finished = reception.finish()
        self.assertEqual(heard, [])
        self.assertNoResult(finished)
        self.pool.run_one()
        self.assertEqual(heard, [(True, True)])
        self.assertEqual(self.successResultOf(finished).not_catalogued, "the catalogue is locked")

    def test_duplicate_not_stored_is_not_catalogued(self):
        """--on-duplicate keep: the catalogue hears of the file stored, not of the instance kept out, whose file it is not."""
        heard = []

        def catalogue(writer, stored):
            heard.append(stored.path)

        for pixels in (b"\x01\x00", b"\x02\x00"):
            reception = self.reception(partial(InstanceWriter, on_duplicate="keep"), catalogue=catalogue)
            reception.write(data_set(pixels=pixels * 8))
            finished = reception.finish()
            self.pool.run_all()
            stored = self.successResultOf(finished)
        self.assertEqual(stored.duplicate, "kept")
        self.assertIsNone(stored.not_catalogued)
        self.assertEqual(heard, [stored.path])

    def test_failed_write_leaves_nothing(self):
        class DiskFails(InstanceWriter):
            """The second write meets a disk error."""

            writes = 0

            def write(self, chunks):
                DiskFails.writes += 1
                if DiskFails.writes == 2:
                    # The file's descriptor now reads /dev/null: writes fail (EBADF).
                    read_only = os.open(os.devnull, os.O_RDONLY)
                    os.dup2(read_only, self._fd)
                    os.close(read_only)
                super().write(chunks)

        reception = self.reception(DiskFails)
        for fragment in self.fragments(data_set(pixels=bytes(20000))):
            reception.write(fragment)
            self.pool.run_all()
        finished = reception.finish()
        self.pool.run_all()
        self.failureResultOf(finished, WriteFailed)
        self.assertEqual(self.files(), [])
        self.assertEqual(DiskFails.writes, 2)

    def test_mismatch_leaves_nothing(self):
        reception = self.reception()
        reception.write(data_set(sop_instance="1.2.3"))
        finished = reception.finish()
        self.pool.run_all()
        self.failureResultOf(finished, DataSetMismatch)
        self.assertEqual(self.files(), [])

    def test_abort_during_write(self):
        """The write in flight ends, then the file is discarded."""
        reception = self.reception()
        for fragment in self.fragments(data_set(pixels=bytes(10000))):
            reception.write(fragment)
        self.pool.run_one()  # made, first batch written
        self.assertEqual(len(self.files()), 1)
        self.assertEqual(len(self.pool.jobs), 1)  # the next write, in flight
        aborted = reception.abort()
        self.assertNoResult(aborted)
        self.pool.run_one()  # the write in flight
        self.assertNoResult(aborted)
        self.pool.run_all()  # the discard
        self.assertIsNone(self.successResultOf(aborted))
        self.assertEqual(self.files(), [])
        self.assertEqual(os.listdir(self.output), [INCOMING])
        reception.write(b"late")  # ignored
        self.assertEqual(self.pool.jobs, [])

    def test_abort_before_any_job(self):
        reception = self.reception()
        reception.write(b"x" * 10)
        self.assertIsNone(self.successResultOf(reception.abort()))
        self.assertEqual(self.pool.jobs, [])
        self.assertFalse(os.path.exists(self.output))

    def test_abort_before_commit_starts(self):
        """finish() waits on a write; abort comes: finish fires None, nothing stored."""
        reception = self.reception()
        for fragment in self.fragments(data_set(pixels=bytes(5000))):
            reception.write(fragment)
        finished = reception.finish()
        self.assertEqual(len(self.pool.jobs), 1)
        aborted = reception.abort()
        self.pool.run_all()
        self.assertIsNone(self.successResultOf(finished))
        self.assertIsNone(self.successResultOf(aborted))
        self.assertEqual(self.files(), [])

    def test_abort_during_commit(self):
        """A commit already running stands: the stored file is whole."""
        reception = self.reception()
        reception.write(data_set())
        finished = reception.finish()
        aborted = reception.abort()
        self.assertNoResult(aborted)
        self.pool.run_all()
        stored = self.successResultOf(finished)
        self.assertIsNone(self.successResultOf(aborted))
        self.assertTrue(os.path.isfile(stored.path))
        self.assertEqual(self.files(), [os.path.join(STUDY, SERIES, SOP_INSTANCE + ".dcm")])
