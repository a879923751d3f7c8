"""Tests for radx.organize: files on disk filed as the server files what it receives, on real folders."""

from __future__ import annotations

import os
import shutil

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from radx.organize import FAILED, ORGANIZED, SKIPPED, Organizer
from radx.storage.filing import Filing
from radx.storage.layout import FLAT_LAYOUT, ORGANIZED_LAYOUT, UNKNOWN, Layout
from radx.storage.part10 import file_meta_bytes
from radx.storage.tree import INCOMING
from tests import dicomfiles
from tests.catalogue_files import write_instance
from tests.interop import ServerTestCase, require_dcmtk
from tests.test_interop_store import walk_files

PATIENT_LAYOUT = Layout("{PatientID}/{StudyDate}/{Modality}/{SOPInstanceUID}.dcm")


def content(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class OrganizeTestCase(SynchronousTestCase):
    def setUp(self):
        self.base = os.path.abspath(self.mktemp())
        self.source = os.path.join(self.base, "source")
        self.output = os.path.join(self.base, "output")
        # In name order, as they are organized.
        self.files = sorted(dicomfiles.write_ct_series(self.source, 4, rows=16, columns=16, series=2, seed=7))

    def organizer(self, **kwargs) -> Organizer:
        kwargs.setdefault("layout", ORGANIZED_LAYOUT)
        return Organizer(self.output, **kwargs)

    def organize_all(self, organizer: Organizer, recursive: bool = True):
        return [organizer.organize(path) for path in organizer.sources(self.source, recursive)]


class CopyTests(OrganizeTestCase):
    def test_file_meta_and_data_set(self):
        """Each file: the file meta radx writes, from the SOP class, instance and transfer syntax; the data set bit for bit."""
        outcomes = self.organize_all(self.organizer())
        self.assertEqual([o.state for o in outcomes], [ORGANIZED] * 4)
        for path, outcome in zip(self.files, outcomes):
            study, series, sop_instance = dicomfiles.instance_uids(path)
            self.assertEqual(outcome.destination, os.path.join(self.output, study, series, f"{sop_instance}.dcm"))
            meta = file_meta_bytes(dicomfiles.CT_IMAGE_STORAGE, sop_instance, "1.2.840.10008.1.2.1", None)
            self.assertEqual(content(outcome.destination), meta + dicomfiles.data_set_bytes(path))
            self.assertTrue(os.path.exists(path))
        self.assertEqual(os.listdir(os.path.join(self.output, INCOMING)), [])

    def test_every_sample(self):
        """Deflated, big endian, implicit VR, encapsulated: each filed where the server puts it, its data set as it was."""
        shutil.rmtree(self.source)
        samples = dicomfiles.pydicom_test_files()
        os.makedirs(self.source)
        for name, sample in samples.items():
            shutil.copy(sample.path, os.path.join(self.source, name + ".dcm"))
        organizer = self.organizer(layout=FLAT_LAYOUT)
        for name, sample in samples.items():
            outcome = organizer.organize(os.path.join(self.source, name + ".dcm"))
            self.assertEqual(outcome.state, ORGANIZED, (name, outcome.reason))
            self.assertEqual(outcome.destination, os.path.join(self.output, f"{sample.sop_instance_uid}.dcm"))
            self.assertTrue(dicomfiles.same_data_set(outcome.destination, sample.path), name)

    def test_dry_run_agrees_with_the_copy(self):
        """For every sample, the deflated one read by pydicom included, the plan names the path the copy takes."""
        shutil.rmtree(self.source)
        os.makedirs(self.source)
        for name, sample in dicomfiles.pydicom_test_files().items():
            shutil.copy(sample.path, os.path.join(self.source, name + ".dcm"))
        organizer = self.organizer(layout=PATIENT_LAYOUT)
        sources = organizer.sources(self.source, False)
        plans = [organizer.plan(path) for path in sources]
        outcomes = [organizer.organize(path) for path in sources]
        self.assertEqual([(p.state, p.destination) for p in plans], [(o.state, o.destination) for o in outcomes])
        self.assertEqual({o.state for o in outcomes}, {ORGANIZED})

    def test_template(self):
        outcomes = self.organize_all(self.organizer(layout=PATIENT_LAYOUT))
        for path, outcome in zip(self.files, outcomes):
            sop_instance = dicomfiles.instance_uids(path)[2]
            self.assertEqual(outcome.destination, os.path.join(self.output, "RADX-0001", "20240102", "CT", f"{sop_instance}.dcm"))

    def test_move(self):
        """--move: each source removed once its copy is durable."""
        outcomes = self.organize_all(self.organizer(move=True))
        self.assertEqual([o.state for o in outcomes], [ORGANIZED] * 4)
        self.assertEqual(os.listdir(self.source), [])
        for outcome in outcomes:
            self.assertTrue(os.path.isfile(outcome.destination))

    def test_dry_run_writes_nothing(self):
        organizer = self.organizer(layout=PATIENT_LAYOUT)
        plans = [organizer.plan(path) for path in organizer.sources(self.source, True)]
        self.assertFalse(os.path.exists(self.output))
        self.assertEqual([p.destination for p in plans], [o.destination for o in self.organize_all(organizer)])

    def test_output_inside_the_source_folder_is_left_alone(self):
        self.output = os.path.join(self.source, "organized")
        organizer = self.organizer()
        self.assertEqual(len(self.organize_all(organizer)), 4)
        self.assertEqual(sorted(organizer.sources(self.source, True)), sorted(self.files))


class RefusalTests(OrganizeTestCase):
    def test_not_dicom_is_skipped(self):
        path = os.path.join(self.source, "notes.txt")
        with open(path, "w") as f:
            f.write("not DICOM\n")
        outcome = self.organizer().organize(path)
        self.assertEqual(outcome.state, SKIPPED)
        self.assertIn("DICM", outcome.reason)

    def test_unreadable_fails(self):
        os.symlink(os.path.join(self.base, "gone"), os.path.join(self.source, "dangling.dcm"))
        outcomes = {os.path.basename(o.source): o for o in self.organize_all(self.organizer())}
        self.assertEqual(outcomes["dangling.dcm"].state, FAILED)
        self.assertIn("No such file", outcomes["dangling.dcm"].reason)

    def test_bad_data_set_fails_and_leaves_nothing(self):
        """A file meta followed by garbage: refused as the server refuses it (C000), nothing written."""
        path = os.path.join(self.source, "garbage.dcm")
        with open(path, "wb") as f:
            f.write(file_meta_bytes(dicomfiles.CT_IMAGE_STORAGE, "1.2.3.4", "1.2.840.10008.1.2.1", None) + b"\xff" * 64)
        outcome = self.organizer(move=True).organize(path)
        self.assertEqual(outcome.state, FAILED)
        self.assertIn("0xC000", outcome.reason)
        self.assertTrue(os.path.exists(path))
        self.assertEqual(walk_files(self.output)[0], set())

    def test_malformed_sop_instance_uid(self):
        """The server's rule: 0117, Invalid SOP Instance, in a dry run too."""
        path = write_instance(os.path.join(self.source, "bad.dcm"), SOPInstanceUID="1.2.x/../..")
        self.assertIn("0x0117", self.organizer().organize(path).reason)
        self.assertEqual(self.organizer().plan(path).state, FAILED)

    def test_missing_study_uid_is_unknown(self):
        path = write_instance(os.path.join(self.source, "nostudy.dcm"), StudyInstanceUID="")
        outcome = self.organizer().organize(path)
        self.assertEqual(outcome.state, ORGANIZED)
        self.assertEqual(os.path.relpath(outcome.destination, self.output).split(os.sep)[0], UNKNOWN)
        self.assertIn("Study Instance UID is missing", outcome.warnings[0])


class DuplicateTests(OrganizeTestCase):
    def test_run_twice_unique(self):
        """unique: a second run finds the same bytes and stores nothing twice; a changed file gets the next name."""
        organizer = self.organizer(on_duplicate="unique")
        first = self.organize_all(organizer)
        again = self.organize_all(organizer)
        self.assertEqual([o.state for o in again], [SKIPPED] * 4)
        self.assertEqual([o.destination for o in again], [o.destination for o in first])
        study, series, sop_instance = dicomfiles.instance_uids(self.files[0])
        changed = write_instance(
            os.path.join(self.base, "other", "x.dcm"),
            StudyInstanceUID=study,
            SeriesInstanceUID=series,
            SOPInstanceUID=sop_instance,
        )
        other = organizer.organize(changed)
        self.assertEqual(other.state, ORGANIZED)
        self.assertEqual(other.destination, first[0].destination[: -len(".dcm")] + "_1.dcm")

    def test_move_keeps_a_source_not_copied(self):
        """keep and --move: a source whose instance is there already stays where it is."""
        self.organize_all(self.organizer())
        outcomes = self.organize_all(self.organizer(on_duplicate="keep", move=True))
        self.assertEqual([o.state for o in outcomes], [SKIPPED] * 4)
        self.assertEqual(sorted(os.listdir(self.source)), sorted(os.path.basename(p) for p in self.files))

    def test_move_onto_itself_removes_nothing(self):
        """Organizing an organized folder in place with --move: each file replaces itself and is not then removed."""
        self.organize_all(self.organizer())
        organizer = self.organizer(move=True)
        stored = walk_files(self.output)[0]
        # Named one by one: sources() leaves the output folder's files out.
        outcomes = [organizer.organize(os.path.join(self.output, p)) for p in sorted(stored)]
        self.assertEqual([o.state for o in outcomes], [ORGANIZED] * 4)
        self.assertEqual(walk_files(self.output)[0], stored)
        for outcome in outcomes:
            self.assertIn("no longer the file copied", outcome.reason)


class SameAsTheServerTests(ServerTestCase):
    """The server and organize, given the same files and layout, file them under the same paths with the same data sets."""

    @defer.inlineCallbacks
    def test_storescu_then_organize(self):
        storescu = require_dcmtk("storescu")
        source = self.mktemp()
        files = dicomfiles.write_ct_series(source, 6, rows=16, columns=16, series=2, seed=9)
        write_instance(os.path.join(source, "nostudy.dcm"), StudyInstanceUID="")
        layout = Layout("{PatientID}/{StudyInstanceUID}/{Modality}_{SeriesInstanceUID}/{SOPInstanceUID}.dcm")
        self.start_server(self.server_config(filing=Filing(layout=layout)))
        received = self.factory.config.output_dir
        out, err, code = yield self.run_tool(
            storescu, "+sd", "-aec", "RADX-SCP", "127.0.0.1", str(self.port), source
        )
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        organized = os.path.abspath(self.mktemp())
        organizer = Organizer(organized, layout)
        outcomes = [organizer.organize(path) for path in organizer.sources(source, True)]
        self.assertEqual([o.state for o in outcomes], [ORGANIZED] * 7)
        paths = walk_files(received)[0]
        self.assertEqual(len(paths), 7)
        self.assertEqual(walk_files(organized)[0], paths)
        for relative in paths:
            self.assertTrue(dicomfiles.same_data_set(os.path.join(organized, relative), os.path.join(received, relative)))
        self.assertEqual(len(files), 6)
        # Into the server's own folder, under unique: every data set is there, none is stored twice.
        into_received = Organizer(received, layout, on_duplicate="unique")
        outcomes = [into_received.organize(path) for path in into_received.sources(source, True)]
        self.assertEqual([o.state for o in outcomes], [SKIPPED] * 7)
        self.assertEqual(walk_files(received)[0], paths)
