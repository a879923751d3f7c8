# -*- test-case-name: tests.test_app_cli,tests.test_scu_cli -*-
"""Start-up without Twisted's TLS support, for a command that uses no TLS."""

from __future__ import annotations

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
