"""
The fast set: the tests of the pure layers and of the protocols in
memory, which open no socket, need no DCMTK and start no program (but
a fresh Python, to see what importing a module imports).

    sh scripts/test.sh --fast            # or: .venv/bin/python -m tests.fast

runs them with trial in one process (trial arguments may follow, but
not ``-j``: its workers are processes). Sockets and other programs are
forbidden while they run: a test among them that reaches for one fails
with ``SlowTest``, so a module that stops being fast cannot stay in the
list unnoticed. ``tests.test_fast``, in the whole suite that CI runs,
runs this set so and checks that every module listed exists.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

MODULES = (
    "tests.test_architecture",
    "tests.test_pdu",
    "tests.test_framing",
    "tests.test_fsm",
    "tests.test_negotiation",
    "tests.test_dimse_assembly",
    "tests.test_dimse_commands",
    "tests.test_dimse_fragmenting",
    "tests.test_storage_header",
    "tests.test_storage_layout",
    "tests.test_storage_part10",
    "tests.test_storage_tree",
    "tests.test_storage_values",
    "tests.test_storage_walk",
    "tests.test_storage_writable",
    "tests.test_security_files",
    "tests.test_catalogue_database",
    "tests.test_catalogue_indexer",
    "tests.test_catalogue_instance",
    "tests.test_catalogue_query",
    "tests.test_catalogue_received",
    "tests.test_scp_protocol",
    "tests.test_scp_store",
    "tests.test_scp_storing",
    "tests.test_scu_association",
    "tests.test_scu_sources",
    "tests.test_app_options",
    "tests.test_app_config",
    "tests.test_app_flag_values",
    "tests.test_events_command",
    "tests.test_events_journal",
    "tests.test_scp_hooks_clock",
    "tests.test_metrics",
    "tests.test_app_slots",
    "tests.test_app_channel",
    "tests.test_app_worker_parts",
)


class SlowTest(AssertionError):
    """A test of the fast set opened a socket or started a program."""


def _refuse(what: str):
    def refuse(*args, **kwargs):
        raise SlowTest(f"{what} in the fast set (tests/fast.py): move the module out of MODULES")

    return refuse


def forbid_sockets_and_processes() -> None:
    """From now on, in this process, binding, connecting or listening and starting a program raise SlowTest."""
    for name in ("bind", "connect", "connect_ex", "listen"):
        setattr(socket.socket, name, _refuse(f"socket.{name}()"))
    socket.create_connection = _refuse("socket.create_connection()")
    start = subprocess.Popen.__init__

    def start_python_only(self, args, *rest, **kwargs):
        program = args if isinstance(args, (str, bytes, os.PathLike)) else args[0]
        if kwargs.get("shell") or os.fspath(program) != sys.executable:
            raise SlowTest(f"{args!r} started in the fast set (tests/fast.py): move the module out of MODULES")
        start(self, args, *rest, **kwargs)

    subprocess.Popen.__init__ = start_python_only
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system"):
        if hasattr(os, name):
            setattr(os, name, _refuse(f"os.{name}()"))


def main(argv: list[str]) -> None:
    if any(argument == "-j" or argument.startswith(("-j", "--jobs")) for argument in argv):
        raise SystemExit("tests.fast: no -j; the fast set runs in one process, its processes forbidden")
    forbid_sockets_and_processes()
    from twisted.scripts.trial import run

    sys.argv = ["trial", *argv, *MODULES]
    run()


if __name__ == "__main__":
    main(sys.argv[1:])
