"""check_writable, on real folders: it files a file as a C-STORE would, and leaves nothing."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from radx.storage.tree import INCOMING, OutputTree
from radx.storage.writable import check_writable


class CheckWritableTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.output = os.path.abspath(self.mktemp())
        self.folders = OutputTree(self.output, 0o700).folders()

    def test_leaves_only_the_incoming_folder(self):
        check_writable(self.folders.root, self.folders.incoming, file_mode=0o600)
        self.assertEqual(os.listdir(self.output), [INCOMING])
        self.assertEqual(os.listdir(os.path.join(self.output, INCOMING)), [])

    def test_a_rename_that_fails_leaves_nothing(self):
        """The file made in the incoming folder is removed when it cannot be renamed into place."""
        self.assertRaises(OSError, check_writable, -1, self.folders.incoming)
        self.assertEqual(os.listdir(os.path.join(self.output, INCOMING)), [])

    def test_an_unusable_incoming_folder_raises(self):
        self.assertRaises(OSError, check_writable, self.folders.root, -1)
        self.assertEqual(os.listdir(self.output), [INCOMING])

    def test_in_the_incoming_folder_only(self):
        """While the server runs: the file never enters the output folder, and nothing is left."""
        made = []
        mkfile = os.open

        def watched(path, flags, mode=0o777, *, dir_fd=None):
            made.append((path, dir_fd))
            return mkfile(path, flags, mode, dir_fd=dir_fd)

        self.patch(os, "open", watched)
        check_writable(self.folders.root, self.folders.incoming, file_mode=0o600, into_root=False)
        self.assertEqual([dir_fd for _, dir_fd in made], [self.folders.incoming])
        self.assertEqual(os.listdir(self.output), [INCOMING])
        self.assertEqual(os.listdir(os.path.join(self.output, INCOMING)), [])

    def test_in_the_incoming_folder_an_unusable_one_raises(self):
        self.assertRaises(OSError, check_writable, self.folders.root, -1, into_root=False)
        self.assertRaises(OSError, check_writable, -1, self.folders.incoming, into_root=False)
        self.assertEqual(os.listdir(os.path.join(self.output, INCOMING)), [])
