# -*- test-case-name: tests.test_app_cli,tests.test_scu_cli -*-
"""The ``radx`` command's entry point: a lean start-up (radx.app.startup), then the command line."""

from __future__ import annotations

# Importers of these names from here (tests, bench) keep working.
from radx.app.startup import (  # noqa: F401
    UNUSED_MODULES,
    defer_unused_imports,
    pause_collector,
    resume_collector,
    without_tls,
)


def main(argv: list[str] | None = None) -> int:
    """
    The ``radx`` command's entry point: ``radx.app.cli.main``, with the
    collector paused and the unused modules deferred before that module
    and what it imports are loaded.
    """
    pause_collector()
    defer_unused_imports()
    from radx.app.cli import main as command

    return command(argv)
