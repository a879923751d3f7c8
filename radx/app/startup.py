# -*- test-case-name: tests.test_app_cli,tests.test_scu_cli -*-
"""What makes a command's start-up lean: no Twisted TLS support when it uses no TLS, no garbage
collection until the reactor runs, no loading of the modules Twisted imports for what radx does not do."""

from __future__ import annotations

import gc
import importlib.util
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


# Modules Twisted's reactor and logger import at start-up for what no radx
# command does; see defer_unused_imports.
UNUSED_MODULES = (
    # twisted.python.compat's deprecated ``cookielib`` alias. It brings
    # http.client, email and urllib.request with it.
    "http.cookiejar",
    # UNIX sockets and UDP (twisted.internet.posixbase).
    "twisted.internet.unix",
    "twisted.internet.udp",
)


def defer_unused_imports() -> list[str]:
    """
    Load each of L{UNUSED_MODULES} only when something first uses it.

    ``importlib.util.LazyLoader`` puts the module object in ``sys.modules``
    at once and runs the module's code on its first attribute access, so
    whatever does use one still gets it whole. About 20 ms of a command's
    start-up on the benchmark machine. Only for modules not yet imported;
    returns the names it deferred.
    """
    deferred = []
    for name in UNUSED_MODULES:
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or not hasattr(spec.loader, "exec_module"):
            continue
        spec.loader = importlib.util.LazyLoader(spec.loader)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        # As the import system does once a submodule is loaded.
        package, _, attribute = name.rpartition(".")
        setattr(sys.modules[package], attribute, module)
        deferred.append(name)
    return deferred


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
