"""The events' journal: quiet periods as data with `now` passed in, hooks due and done, the file read again."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from radx.events.journal import JOURNAL_FILE, JOURNAL_FOLDER, EventState, Journal, hook_id, read_records


def instance(n: int, time: float, study: str = "1.2.3", series: str = "1.2.3.4") -> dict:
    return {
        "time": time,
        "path": f"/out/{study}/{series}/{n}.dcm",
        "StudyInstanceUID": study,
        "SeriesInstanceUID": series,
        "SOPInstanceUID": f"{series}.{n}",
        "calling_ae_title": "A",
    }


class QuietPeriodTests(SynchronousTestCase):
    def state(self, hooks=("series", "study"), **kwargs):
        return EventState(hooks, hooks, series_timeout=10.0, study_timeout=60.0, **kwargs)

    def test_no_instance_no_timer(self):
        self.assertIsNone(self.state().get_timer())

    def test_study_complete_after_its_quiet_period(self):
        state = self.state()
        state.instance_stored(instance(1, 100.0))
        self.assertEqual(state.get_timer(), 110.0)
        self.assertEqual(state.handle_timer(109.9), [])
        [(series, series_hook)] = state.handle_timer(110.0)
        self.assertEqual((series.kind, series.key, series.count), ("series", "1.2.3.4", 1))
        self.assertEqual(state.get_timer(), 160.0)
        [(study, study_hook)] = state.handle_timer(160.0)
        self.assertEqual((study.kind, study.key), ("study", "1.2.3"))
        self.assertEqual(set(state.pending), {series_hook.id, study_hook.id})
        self.assertIsNone(state.get_timer())

    def test_new_instance_restarts_the_quiet_period(self):
        """An instance during the quiet period pushes its end back, and counts."""
        state = self.state(hooks=("study",))
        state.instance_stored(instance(1, 100.0))
        state.instance_stored(instance(2, 150.0, series="1.2.3.9"))
        self.assertEqual(state.handle_timer(160.0), [])
        self.assertEqual(state.get_timer(), 210.0)
        [(study, hook)] = state.handle_timer(210.0)
        self.assertEqual(study.count, 2)
        self.assertEqual(hook.instance["SOPInstanceUID"], "1.2.3.9.2")

    def test_late_instance_starts_a_new_period(self):
        """After its completion, a study's next instance is a new period and a new hook, with a new identifier."""
        state = self.state(hooks=("study",))
        state.instance_stored(instance(1, 0.0))
        [(_, first)] = state.handle_timer(60.0)
        state.instance_stored(instance(1, 100.0))
        [(_, second)] = state.handle_timer(160.0)
        self.assertNotEqual(first.id, second.id)

    def test_store_hook_due_per_instance(self):
        state = EventState({"store"}, set())
        hook = state.instance_stored(instance(1, 5.0))
        self.assertEqual((hook.kind, hook.count), ("store", 1))
        self.assertEqual(hook.id, hook_id("store", instance(1, 5.0)))
        self.assertIsNone(state.get_timer())
        state.hook_done(hook.id)
        self.assertEqual(state.pending, {})

    def test_identifier_same_for_same_reception_new_for_another(self):
        self.assertEqual(hook_id("store", instance(1, 5.0)), hook_id("store", instance(1, 5.0)))
        self.assertNotEqual(hook_id("store", instance(1, 5.0)), hook_id("store", instance(1, 6.0)))
        self.assertNotEqual(hook_id("store", instance(1, 5.0)), hook_id("series", instance(1, 5.0)))

    def test_periods_without_hooks(self):
        """Watched for --events, a period ends without a hook due."""
        state = EventState(set(), {"series", "study"}, 1.0, 1.0)
        state.instance_stored(instance(1, 0.0))
        ended = state.handle_timer(1.0)
        self.assertEqual([hook for _, hook in ended], [None, None])
        self.assertEqual(state.pending, {})


class JournalFileTests(SynchronousTestCase):
    def setUp(self):
        self.output = self.mktemp()

    def journal(self, hooks=("store", "study"), fsync=True) -> Journal:
        journal = Journal(self.output, EventState(hooks, hooks, 10.0, 60.0), fsync=fsync)
        journal.open()
        self.addCleanup(journal.close)
        return journal

    def test_pending_hooks_survive_a_restart(self):
        """A store hook not done, a study complete but its hook not done, a quiet period running: all there again."""
        first = self.journal()
        done = first.instance_stored(instance(1, 0.0))
        first.instance_stored(instance(2, 1.0))
        first.hook_done(done.id)
        [(_, study_hook)] = first.handle_timer(61.0)
        first.instance_stored(instance(3, 70.0, study="1.2.5"))
        first.close()

        again = self.journal()
        pending = {hook.id: hook for hook in again.pending()}
        self.assertEqual(set(pending), {hook_id("store", instance(2, 1.0)), study_hook.id, hook_id("store", instance(3, 70.0, study="1.2.5"))})
        self.assertEqual(again.get_timer(), 130.0)
        [(period, hook)] = again.handle_timer(130.0)
        self.assertEqual(period.key, "1.2.5")

    def test_several_instances_one_write_one_sync(self):
        """A group commit: the instances of a batch in order, each as instance_stored records it, with one write and one sync."""
        calls = []
        journal = self.journal()
        for name in ("write", "fdatasync"):
            original = getattr(os, name)
            self.patch(os, name, lambda *args, original=original, name=name: (calls.append(name), original(*args))[1])
        hooks = journal.instances_stored([instance(1, 0.0), instance(2, 1.0, study="1.2.5")])
        self.assertEqual(calls, ["write", "fdatasync"])
        self.assertEqual([hook.id for hook in hooks], [hook_id("store", instance(1, 0.0)), hook_id("store", instance(2, 1.0, study="1.2.5"))])
        self.assertEqual(journal.appended, 2)
        journal.close()
        again = self.journal()
        self.assertEqual({hook.id for hook in again.pending()}, {hook.id for hook in hooks})
        self.assertEqual(again.get_timer(), 60.0)

    def test_completion_without_hook_not_repeated(self):
        """A period ended for --events only stays ended after a restart."""
        first = Journal(self.output, EventState(set(), {"series", "study"}, 1.0, 1.0))
        first.open()
        first.instance_stored(instance(1, 0.0))
        self.assertEqual(len(first.handle_timer(1.0)), 2)
        first.close()
        again = Journal(self.output, EventState(set(), {"series", "study"}, 1.0, 1.0))
        again.open()
        self.addCleanup(again.close)
        self.assertIsNone(again.get_timer())
        self.assertEqual(again.pending(), [])

    def test_compacted_at_open(self):
        """What is done is gone from the file once it is read again."""
        first = self.journal(hooks=("store",))
        for n in range(50):
            first.hook_done(first.instance_stored(instance(n, float(n))).id)
        first.instance_stored(instance(99, 99.0))
        first.close()
        self.journal(hooks=("store",))
        with open(os.path.join(self.output, JOURNAL_FOLDER, JOURNAL_FILE), "rb") as data:
            records, unreadable = read_records(data.read())
        self.assertEqual((len(records), unreadable), (1, 0))
        self.assertEqual(records[0]["due"]["instance"]["SOPInstanceUID"], "1.2.3.4.99")

    def test_compact_while_running(self):
        journal = self.journal(hooks=("store",))
        for n in range(10):
            journal.hook_done(journal.instance_stored(instance(n, float(n))).id)
        journal.compact()
        self.assertEqual(os.path.getsize(journal.path), 0)
        hook = journal.instance_stored(instance(11, 11.0))
        journal.close()
        self.assertEqual([h.id for h in self.journal(hooks=("store",)).pending()], [hook.id])

    def test_torn_last_line(self):
        """A write cut short by a crash is counted and skipped; the rest is read."""
        first = self.journal(hooks=("store",))
        hook = first.instance_stored(instance(1, 1.0))
        first.close()
        with open(first.path, "ab") as journal:
            journal.write(b'{"stored":{"time":2.0,"pa')
        again = self.journal(hooks=("store",))
        self.assertEqual([h.id for h in again.pending()], [hook.id])
        self.assertEqual(again.unreadable, 1)

    def test_hook_no_flag_asks_for(self):
        """Started again without --exec-on-store, its hooks due are not run, and counted."""
        first = self.journal(hooks=("store",))
        first.instance_stored(instance(1, 1.0))
        first.close()
        again = self.journal(hooks=("study",))
        self.assertEqual(again.pending(), [])
        self.assertEqual(len(again.state.dropped), 1)

    def test_hostile_values_one_line(self):
        """Newlines and quotes in a value stay inside one JSON line, in ASCII."""
        journal = self.journal(hooks=("store",))
        journal.instance_stored(dict(instance(1, 1.0), calling_ae_title='a"\n\u00e9;$(x)'))
        journal.close()
        with open(journal.path, "rb") as data:
            content = data.read()
        self.assertEqual(content.count(b"\n"), 1)
        content.decode("ascii")
        self.assertEqual(self.journal(hooks=("store",)).pending()[0].instance["calling_ae_title"], 'a"\n\u00e9;$(x)')


class CatalogueTests(SynchronousTestCase):
    def test_journal_not_indexed(self):
        """The catalogue's walk of an output folder leaves the journal out: it is not DICOM, and no failure."""
        from radx.catalogue.indexer import EVENTS_FOLDER, walk

        output = self.mktemp()
        journal = Journal(output, EventState({"store"}, set()))
        journal.open()
        journal.instance_stored(instance(1, 1.0))
        journal.close()
        self.assertEqual(EVENTS_FOLDER, JOURNAL_FOLDER)
        failures = []
        self.assertEqual(list(walk(output, True, failures=failures)), [])
        self.assertEqual(failures, [])
