"""A real PostgreSQL server for the tests: Debian's binaries, a cluster in a temporary folder, on a Unix socket only.

A test module makes one ``Cluster`` at module level; its tests call
``start()`` (the first starts the server, ~5 s for initdb) and take a
fresh database each with ``database()``. The server stops when the test
process exits: at exit, fast shutdown and the folder removed; and, should
the process die without its exit handlers, the kernel kills the server
with it (``setpriv --pdeathsig``), so none is ever left behind.

PostgreSQL refuses to run as root: as root (CI), initdb and postgres run
as ``nobody`` through setpriv, the folder theirs. The binaries are
looked for on PATH, then in Debian's /usr/lib/postgresql/VERSION/bin,
which is not on PATH; without them the tests fail and say what to install.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

USER = "radx"
# Who runs the server when the tests run as root.
UNPRIVILEGED = "nobody"
MISSING = (
    "PostgreSQL's server programs (initdb, postgres) are needed for the PostgreSQL catalogue's tests:"
    " apt-get install postgresql (scripts/test.sh installs it)"
)


def binaries() -> str:
    """The folder of initdb and postgres: PATH's, or Debian's newest /usr/lib/postgresql/*/bin."""
    found = shutil.which("initdb")
    if found and os.access(os.path.join(os.path.dirname(found), "postgres"), os.X_OK):
        return os.path.dirname(found)

    def version(folder: str):
        name = folder.split(os.sep)[-2]
        return tuple(int(part) for part in name.split(".") if part.isdigit())

    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if all(os.access(os.path.join(folder, p), os.X_OK) for p in ("initdb", "postgres")):
            return folder
    raise AssertionError(MISSING)


class Cluster:
    """One PostgreSQL server, started at the first need, stopped with the test process."""

    # The server's settings (-c NAME=VALUE): the tests need no durability.
    settings: tuple = ("fsync=off", "full_page_writes=off")

    def __init__(self) -> None:
        self.folder: str | None = None
        self.process: subprocess.Popen | None = None
        self._databases = 0

    @property
    def data(self) -> str:
        return os.path.join(self.folder, "data")

    @property
    def log(self) -> str:
        return os.path.join(self.folder, "server.log")

    def _as_server_user(self, command: list[str]) -> list[str]:
        # --pdeathsig: the server dies with the test process, whatever happens to it.
        prefix = ["setpriv", "--pdeathsig", "KILL"]
        if os.geteuid() == 0:
            prefix += ["--reuid", UNPRIVILEGED, "--regid", str(pwd.getpwnam(UNPRIVILEGED).pw_gid), "--clear-groups"]
        return prefix + command

    def start(self) -> None:
        """Start the server (made at the first call), unless it runs; return once it takes connections."""
        if self.running:
            return
        bin_folder = binaries()
        if self.folder is None:
            # Short, in /tmp: a Unix socket's path is at most 107 bytes.
            self.folder = tempfile.mkdtemp(prefix="radx-pg-")
            atexit.register(self.destroy)
            if os.geteuid() == 0:
                entry = pwd.getpwnam(UNPRIVILEGED)
                os.chown(self.folder, entry.pw_uid, entry.pw_gid)
            done = subprocess.run(
                self._as_server_user(
                    [os.path.join(bin_folder, "initdb"), "-D", self.data, "--auth=trust", "-U", USER,
                     "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]
                ),
                capture_output=True,
                text=True,
                timeout=120,
            )  # fmt: skip
            if done.returncode != 0:
                raise AssertionError(f"initdb failed ({done.returncode}): {done.stdout}{done.stderr}")
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self._as_server_user(
                    [os.path.join(bin_folder, "postgres"), "-D", self.data, "-k", self.folder, "-c", "listen_addresses="]
                    + [part for setting in self.settings for part in ("-c", setting)]
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"postgres exited with {self.process.returncode}: {self.log_text()}")
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"postgres did not take connections in {timeout:g} s: {self.log_text()}")
                time.sleep(0.05)

    def log_text(self) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Fast shutdown (SIGINT): connections cut, as a server going down does; the data kept."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def destroy(self) -> None:
        self.stop()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def url(self, database: str = "radx", password: str | None = None) -> str:
        user = USER if password is None else f"{USER}:{password}"
        return f"postgresql://{user}@/{database}?host={self.folder}"

    def database(self) -> str:
        """A new, empty database on the running server: its URL."""
        import psycopg

        self._databases += 1
        name = f"radx_test_{os.getpid()}_{self._databases}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)
