# -*- test-case-name: tests.test_app_cli,tests.test_scu_cli -*-
"""A command's start-up: without Twisted's TLS support when it uses no TLS, without garbage collection."""

from __future__ import annotations

import gc
import sys


def without_tls() -> bool:
    """
    Keep pyOpenSSL, and cryptography with it, from loading in this process.

    Twisted's TCP support imports its TLS layer whenever pyOpenSSL is
    installed: about 75 ms of start-up and 13 MiB that a plain-TCP server
    or client never uses. A ``None`` in ``sys.modules`` makes ``import
    OpenSSL`` raise ImportError, and Twisted runs without TLS, as it does
    where pyOpenSSL is not installed. Only before ``twisted.internet`` is
    loaded; a no-op otherwise. Returns whether it took effect.
    """
    if "OpenSSL" in sys.modules or "twisted.internet.tcp" in sys.modules:
        return False
    sys.modules["OpenSSL"] = None  # type: ignore[assignment]
    return True


# Whether pause_collector turned the cyclic garbage collector off.
_paused = False


def pause_collector() -> None:
    """
    Turn Python's cyclic garbage collector off while a command starts.

    Start-up imports some 400 modules. What they make (modules, classes,
    functions) lives as long as the process, yet the collector counts
    every allocation and searches for cycles about a hundred times along
    the way: some 20 ms of a command's start-up. ``resume_collector``
    turns it back on once the reactor runs.
    """
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume_collector() -> None:
    """
    Turn the collector back on if ``pause_collector`` turned it off, with
    what start-up made moved out of its way (``gc.freeze``): later full
    collections do not walk it again. A no-op otherwise.

    The price: start-up's own garbage cycles (some 1300 objects after
    a command's imports) are frozen with the rest and never freed,
    where collecting them first would walk every object start-up made
    and cost what the pause saved.
    """
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()


def main(argv: list[str] | None = None) -> int:
    """
    The ``radx`` command's entry point: ``radx.app.cli.main``, with the
    collector paused before that module and what it imports are loaded.
    """
    pause_collector()
    from radx.app.cli import main as command

    return command(argv)
