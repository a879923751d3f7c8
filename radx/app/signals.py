# -*- test-case-name: tests.test_app_signals,tests.test_robustness_crash -*-
"""The signals that stop the server: SIGINT, SIGTERM and SIGHUP drain; a second one stops it now."""

from __future__ import annotations

import signal

from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger

log = Logger(namespace="radx.app.signals")

# SIGHUP is what a terminal that closes sends: in-flight work must not be
# lost to it, so it stops the server as SIGTERM does.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopOnSignal:
    """
    The first stop signal stops the reactor, whose shutdown drains the
    associations (``ScpService.stopService``); a second one, during that
    drain, calls ``stop_now``: what is still open is aborted at once.

    Twisted's reactor stops on SIGINT and SIGTERM itself, but a second one
    only asks it to stop again, which it cannot ("Can't stop reactor that
    isn't running"), and it leaves SIGHUP at the system's default, which
    ends the process on the spot. The signal that stopped the reactor is
    recorded where twistd reads it (``_exitSignal``), so that twistd still
    ends by that signal once the drain is over, as it does for SIGTERM.
    """

    def __init__(self, reactor, stop_now, quiet: bool = False) -> None:
        self.reactor = reactor
        self.stop_now = stop_now
        # A worker of --workers: a Ctrl+C reaches it as it reaches its
        # supervisor, which says so for both.
        self.quiet = quiet
        self.received: list[int] = []

    def install(self) -> None:
        """Take the stop signals over; call once the reactor runs (it installs its own handlers as it starts)."""
        for number in STOP_SIGNALS:
            signal.signal(number, self._handler)

    def _handler(self, number: int, frame) -> None:
        # A Python signal handler runs between two bytecodes of the main
        # thread: hand the signal to the reactor's loop.
        self.reactor.callFromThread(self.signalled, number)

    def signalled(self, number: int) -> None:
        name = signal.Signals(number).name
        self.received.append(number)
        if len(self.received) == 1:
            if not self.quiet:
                log.info("Received {signal}, shutting down.", signal=name)
            if hasattr(self.reactor, "_exitSignal"):
                self.reactor._exitSignal = number
            try:
                self.reactor.stop()
            except ReactorNotRunning:
                # Stopping already (a worker its supervisor told to stop): the drain goes on.
                pass
            return
        if not self.quiet:
            log.warn("Received {signal} again: stopping now", signal=name)
        self.stop_now()


def run_until_stopped(reactor, service, started, stopping=None) -> None:
    """
    Run the reactor, ``started`` called once it runs, until it is
    stopped; then ``stopping``, and ``service``, if running by then, is
    stopped (drained) before the reactor stops.
    """
    from radx.app.startup import resume_collector

    def shutting_down():
        if stopping is not None:
            stopping()
        if service.running:
            return service.stopService()
        return None

    reactor.callWhenRunning(resume_collector)
    reactor.callWhenRunning(started)
    reactor.addSystemEventTrigger("before", "shutdown", shutting_down)
    try:
        reactor.run()
    except KeyboardInterrupt:
        # Ctrl+C before the reactor took over the signal: nothing started yet.
        shutting_down()
