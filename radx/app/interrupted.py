# -*- test-case-name: tests.test_app_cli,tests.test_catalogue_cli,tests.test_organize_cli -*-
"""Ctrl+C in a command that works through files: it says where it stopped, then ends as SIGINT ends a program."""

from __future__ import annotations

import os
import signal
import sys

# What a shell shows for a program SIGINT ended: 128 + 2. A command that
# Ctrl+C stopped returns it, and radx.app.cli.main then ends by the signal.
EXIT_INTERRUPTED = 128 + signal.SIGINT


def end_by_sigint() -> None:
    """
    End the process by SIGINT itself, once what is to be said is said: a
    shell sees status 130, and a shell script running the command stops
    too, as it does when Ctrl+C stops any program. (A script whose command
    exits with 130 of its own takes it that the command handled the
    signal, and goes on to its next line.)
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)


class BetweenFiles:
    """
    Ctrl+C noted while a file is in hand and acted on once it is done: a
    file is filed whole or not at all, and no temporary file is left
    behind by a signal that came between its creation and its removal.

        with BetweenFiles() as interruption:
            for path in paths:
                ...
                if interruption.asked:
                    break
    """

    def __init__(self) -> None:
        self.asked = False
        self._previous = None

    def _note(self, signum, frame) -> None:
        self.asked = True

    def __enter__(self) -> "BetweenFiles":
        self._previous = signal.signal(signal.SIGINT, self._note)
        return self

    def __exit__(self, *exc_info) -> None:
        signal.signal(signal.SIGINT, self._previous)
