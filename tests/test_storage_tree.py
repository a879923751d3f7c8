"""Tests for radx.storage.tree and the writer on it: no symbolic link below the output folder followed; folders made with their mode."""

import errno
import os
import shutil
import stat

from twisted.trial.unittest import SynchronousTestCase

from radx.storage.errors import WriteFailed
from radx.storage.store import INCOMING, clean_incoming
from radx.storage.tree import OutputTree
from tests.test_storage_store import OTHER, SERIES, SOP_INSTANCE, STUDY, StoreTestsMixin, data_set


def mode(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


class TreeTestsMixin(StoreTestsMixin):
    def setUp(self):
        super().setUp()
        previous = os.umask(0o022)
        self.addCleanup(os.umask, previous)
        # What radx must never write to, remove from or read through.
        self.outside = os.path.join(self.base, "outside")
        os.makedirs(self.outside)
        with open(os.path.join(self.outside, "x.part"), "wb") as f:
            f.write(b"not radx's")

    def assertOutsideUntouched(self):
        self.assertEqual(os.listdir(self.outside), ["x.part"])
        with open(os.path.join(self.outside, "x.part"), "rb") as f:
            self.assertEqual(f.read(), b"not radx's")

    def stored_files(self):
        found = []
        for folder, _, names in os.walk(self.output):
            found.extend(os.path.relpath(os.path.join(folder, name), self.output) for name in names)
        return sorted(found)


class SymbolicLinkTests(TreeTestsMixin, SynchronousTestCase):
    """Below the output folder radx follows no symbolic link: it refuses, and writes nothing outside."""

    def test_incoming_link_refused(self):
        os.symlink(self.outside, os.path.join(self.output, INCOMING))
        with self.assertRaises(OSError) as caught:
            clean_incoming(self.tree())
        self.assertEqual(caught.exception.errno, errno.ELOOP)
        self.assertIn(f"{INCOMING} is a symbolic link", str(caught.exception))
        error = self.assertStorageError(WriteFailed, self.writer)
        self.assertIn(f"{INCOMING} is a symbolic link, not followed", error.message)
        self.assertOutsideUntouched()

    def assertRefused(self, link: str, relative: str) -> None:
        os.symlink(self.outside, link)
        writer = self.writer()
        writer.write([data_set()])
        error = self.assertStorageError(WriteFailed, writer.commit)
        self.assertIn(f"{relative} is a symbolic link, not followed", error.message)
        self.assertOutsideUntouched()
        self.assertIncomingEmpty()
        self.assertTrue(os.path.islink(link))

    def test_study_link_refused(self):
        self.assertRefused(os.path.join(self.output, STUDY), STUDY)

    def test_series_link_refused(self):
        os.mkdir(os.path.join(self.output, STUDY))
        self.assertRefused(os.path.join(self.output, STUDY, SERIES), f"{STUDY}/{SERIES}")

    def assertLinkReplaced(self, final: str, **kwargs) -> None:
        """A link in the file's place is replaced by the file; its target is neither opened nor changed."""
        os.symlink(os.path.join(self.outside, "x.part"), final)
        stored = self.store(data_set(), **kwargs)
        self.assertEqual(stored.path, final)
        self.assertTrue(stored.replaced)
        self.assertFalse(os.path.islink(final))
        self.assertTrue(os.path.isfile(final))
        self.assertOutsideUntouched()

    def test_file_link_replaced(self):
        os.makedirs(os.path.join(self.output, STUDY, SERIES))
        self.assertLinkReplaced(os.path.join(self.output, STUDY, SERIES, SOP_INSTANCE + ".dcm"))

    def test_file_link_replaced_flat(self):
        self.assertLinkReplaced(os.path.join(self.output, SOP_INSTANCE + ".dcm"), organize=False)

    def test_dangling_link_replaced(self):
        """A link to nothing: filing through it would make a file outside."""
        final = os.path.join(self.output, SOP_INSTANCE + ".dcm")
        os.symlink(os.path.join(self.outside, "new.dcm"), final)
        self.store(data_set(), organize=False)
        self.assertTrue(os.path.isfile(final) and not os.path.islink(final))
        self.assertOutsideUntouched()

    def test_output_folder_may_be_a_link(self):
        """The output folder is the operator's to choose: a link there is followed."""
        real = os.path.join(self.base, "real")
        os.mkdir(real)
        os.rmdir(self.output)
        os.symlink(real, self.output)
        stored = self.store(data_set())
        self.assertTrue(os.path.isfile(os.path.join(real, STUDY, SERIES, SOP_INSTANCE + ".dcm")))
        self.assertEqual(stored.path, os.path.join(self.output, STUDY, SERIES, SOP_INSTANCE + ".dcm"))

    def test_clean_incoming_removes_no_link(self):
        """A .part link in the folder is not a partial file: neither it nor its target goes."""
        incoming = self.tree().folders().incoming
        os.symlink(os.path.join(self.outside, "x.part"), "y.part", dir_fd=incoming)
        self.assertEqual(clean_incoming(self.tree()), [])
        self.assertOutsideUntouched()


class FolderModeTests(TreeTestsMixin, SynchronousTestCase):
    """Each folder radx makes has the mode asked for exactly, the umask (022 here) notwithstanding."""

    def test_made_with_mode(self):
        self.output = os.path.join(self.base, "above", "output")
        stored = self.store(data_set(), dir_mode=0o750)
        folders = [
            os.path.dirname(self.output),
            self.output,
            os.path.join(self.output, INCOMING),
            os.path.join(self.output, STUDY),
            os.path.dirname(stored.path),
        ]
        self.assertEqual([oct(mode(f)) for f in folders], [oct(0o750)] * len(folders))

    def test_existing_output_folder_keeps_its_mode(self):
        os.chmod(self.output, 0o751)
        self.store(data_set(), dir_mode=0o700)
        self.assertEqual(mode(self.output), 0o751)


class MovedOutputFolderTests(TreeTestsMixin, SynchronousTestCase):
    """The output folder is opened once; when its path names another folder, or none, files go where the path says."""

    def assertFiledAtPath(self, dir_mode=0o700):
        stored = self.store(data_set(sop_instance=OTHER), sop_instance_uid=OTHER, dir_mode=dir_mode)
        self.assertEqual(stored.path, os.path.join(self.output, STUDY, SERIES, OTHER + ".dcm"))
        self.assertTrue(os.path.isfile(stored.path))
        self.assertEqual(self.stored_files(), [os.path.join(STUDY, SERIES, OTHER + ".dcm")])

    def test_removed(self):
        self.store(data_set(), dir_mode=0o700)
        shutil.rmtree(self.output)
        self.assertFiledAtPath()
        for folder in (self.output, os.path.join(self.output, INCOMING)):
            self.assertEqual(oct(mode(folder)), oct(0o700))

    def test_removed_and_made_again(self):
        self.store(data_set(), dir_mode=0o700)
        shutil.rmtree(self.output)
        os.mkdir(self.output, 0o755)
        self.assertFiledAtPath()
        self.assertEqual(oct(mode(self.output)), oct(0o755))
        self.assertEqual(oct(mode(os.path.join(self.output, INCOMING))), oct(0o700))

    def test_renamed_away(self):
        self.store(data_set(), dir_mode=0o700)
        moved = os.path.join(self.base, "moved")
        os.rename(self.output, moved)
        self.assertFiledAtPath()
        self.assertEqual(sorted(os.listdir(os.path.join(moved, STUDY, SERIES))), [SOP_INSTANCE + ".dcm"])

    def test_removed_while_a_file_is_written(self):
        """The folder removed between the start and the commit: a failure, nothing anywhere."""
        writer = self.writer()
        writer.write([data_set()])
        shutil.rmtree(self.output)
        self.assertStorageError(WriteFailed, writer.commit)
        self.assertFalse(os.path.exists(self.output))
        self.assertFiledAtPath()

    def test_incoming_made_a_link_while_open(self):
        """INCOMING swapped for a link after it was opened: nothing is opened through the link."""
        self.store(data_set())
        incoming = os.path.join(self.output, INCOMING)
        os.rename(incoming, os.path.join(self.base, "old-incoming"))
        os.symlink(self.outside, incoming)
        stored = self.store(data_set(sop_instance=OTHER), sop_instance_uid=OTHER)
        self.assertTrue(os.path.isfile(stored.path))
        self.assertOutsideUntouched()
        self.assertEqual(os.listdir(os.path.join(self.base, "old-incoming")), [])

    def test_output_folder_becomes_a_file(self):
        self.store(data_set())
        shutil.rmtree(self.output)
        with open(self.output, "wb") as f:
            f.write(b"x")
        self.assertStorageError(WriteFailed, self.writer)

    def test_same_folders_when_nothing_changed(self):
        tree = self.tree()
        first = tree.folders()
        self.assertIs(tree.folders(), first)

    def test_a_writer_keeps_the_descriptors_it_holds(self):
        """Opened again: the folders a writer holds stay open until it is done."""
        tree = OutputTree(self.output)
        held = tree.folders()
        os.rename(self.output, os.path.join(self.base, "moved"))
        self.assertIsNot(tree.folders(), held)
        os.fstat(held.root)
        os.fstat(held.incoming)
