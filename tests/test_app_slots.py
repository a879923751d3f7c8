"""radx.app.slots: the associations open in each worker, counted in one shared file."""

from __future__ import annotations

import os
import threading

from twisted.trial.unittest import SynchronousTestCase

from radx.app import slots


class AssociationSlotsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        slots.create(self.path, 3)
        self.views = [slots.AssociationSlots(self.path, slot) for slot in range(3)]
        self.supervisor = slots.AssociationSlots(self.path)
        for view in (*self.views, self.supervisor):
            self.addCleanup(view.close)

    def test_zero_at_first(self):
        self.assertEqual(self.supervisor.workers, 3)
        self.assertEqual(self.supervisor.total(), 0)

    def test_limit_over_every_slot(self):
        """A place is taken only while all the slots together hold fewer than the limit."""
        first, second, third = self.views
        self.assertTrue(first.claim(3))
        self.assertTrue(second.claim(3))
        self.assertTrue(second.claim(3))
        self.assertFalse(third.claim(3))
        self.assertFalse(first.claim(3))
        self.assertEqual(self.supervisor.total(), 3)
        second.release()
        self.assertTrue(third.claim(3))
        self.assertEqual([view.total() for view in self.views], [3, 3, 3])

    def test_empty_a_slot(self):
        """The supervisor empties the slot of a worker that ended: its places are free again."""
        first, second, _ = self.views
        for _ in range(2):
            self.assertTrue(first.claim(3))
        self.assertTrue(second.claim(3))
        self.supervisor.empty(0)
        self.assertEqual(self.supervisor.total(), 1)
        self.assertTrue(first.claim(3))
        self.assertTrue(first.claim(3))

    def test_release_never_below_zero(self):
        self.views[0].release()
        self.assertEqual(self.supervisor.total(), 0)

    def test_slot_outside_the_table(self):
        self.assertRaises(ValueError, slots.AssociationSlots, self.path, 3)

    def test_claims_at_once_never_pass_the_limit(self):
        """Many claims at once, through separate descriptors (each its own flock): exactly the limit is taken."""
        taken = []

        def claim_many(view):
            for _ in range(200):
                if view.claim(50):
                    taken.append(1)

        threads = [threading.Thread(target=claim_many, args=(view,)) for view in self.views]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(len(taken), 50)
        self.assertEqual(self.supervisor.total(), 50)

    def test_connections_a_hint_of_who_is_busiest(self):
        first, second, third = self.views
        for view, count in zip(self.views, (2, 1, 2)):
            view.set_connections(count)
        self.assertEqual([view.fewer_elsewhere() for view in self.views], [True, False, True])
        second.set_connections(3)
        self.assertEqual([view.fewer_elsewhere() for view in self.views], [False, True, False])

    def test_no_worker_in_an_emptied_slot(self):
        """A worker that ended has no connections to compare with: its slot is not the least busy."""
        first, second, third = self.views
        first.set_connections(1)
        second.set_connections(1)
        third.set_connections(0)
        self.assertTrue(first.fewer_elsewhere())
        self.supervisor.empty(2)
        self.assertFalse(first.fewer_elsewhere())
