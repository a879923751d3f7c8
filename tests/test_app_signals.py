"""StopOnSignal: the first stop signal stops the reactor, a second one stops the server now."""

from __future__ import annotations

import signal

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from radx.app.signals import STOP_SIGNALS, StopOnSignal


class StoppingReactor(MemoryReactorClock):
    """A memory reactor that counts stop() and, as Twisted's, records the signal that stopped it."""

    _exitSignal = None

    def __init__(self) -> None:
        super().__init__()
        self.stops = 0

    def stop(self) -> None:
        self.stops += 1


class StopOnSignalTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = StoppingReactor()
        self.stopped_now = []
        self.stopper = StopOnSignal(self.reactor, lambda: self.stopped_now.append(True))

    def test_sighup_stops_as_sigterm_does(self):
        self.assertIn(signal.SIGHUP, STOP_SIGNALS)
        self.stopper.signalled(signal.SIGHUP)
        self.assertEqual((self.reactor.stops, self.stopped_now), (1, []))
        # twistd ends by the signal that stopped it, after the drain.
        self.assertEqual(self.reactor._exitSignal, signal.SIGHUP)

    def test_second_signal_stops_now_without_stopping_the_reactor_again(self):
        self.stopper.signalled(signal.SIGINT)
        self.stopper.signalled(signal.SIGINT)
        self.assertEqual((self.reactor.stops, self.stopped_now), (1, [True]))
        self.assertEqual(self.reactor._exitSignal, signal.SIGINT)

    def test_install_takes_every_stop_signal(self):
        previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}
        for number, handler in previous.items():
            self.addCleanup(signal.signal, number, handler)
        self.stopper.install()
        for number in STOP_SIGNALS:
            self.assertEqual(signal.getsignal(number), self.stopper._handler)

    def test_a_reactor_stopping_already(self):
        """A worker its supervisor told to stop, then Ctrl+C: the drain goes on, no error."""
        from twisted.internet.error import ReactorNotRunning

        class Stopped(StoppingReactor):
            def stop(self) -> None:
                raise ReactorNotRunning("Can't stop reactor that isn't running.")

        stopper = StopOnSignal(Stopped(), lambda: self.stopped_now.append(True), quiet=True)
        stopper.signalled(signal.SIGINT)
        self.assertEqual(self.stopped_now, [])
        stopper.signalled(signal.SIGINT)
        self.assertEqual(self.stopped_now, [True])
