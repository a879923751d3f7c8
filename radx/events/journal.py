# -*- test-case-name: tests.test_events_journal -*-
"""The events' journal: what is due and what is waited for, as data, in an append-only file under the output folder.

Pure of the reactor: time is passed in (``now``), the timer is asked for
(L{EventState.get_timer}) and handled (L{EventState.handle_timer}), as
aioquic's connection does. The file is written by the storage threads
(one record per instance, made durable before its Success) and by the
reactor (a series or study complete, a hook done); the lock keeps the
file's order the order of the state's changes, so that reading the file
again at start rebuilds the same state.

Records, one JSON object a line:

- ``{"stored": INSTANCE}``: an instance stored; it starts or extends its
  series' and study's quiet periods; with ``"hook": true``, its store hook
  is due;
- ``{"due": {"id", "kind", "count", "instance"}}``: a series or study
  complete (its quiet period is over), and its hook due; with
  ``"hook": false``, complete without a hook to run;
- ``{"done": ID}``: that hook ran to its end, whatever its exit status;
- ``{"open": {"kind", "key", "due", "count", "instance"}}``: a quiet
  period still running, as compaction writes it.

INSTANCE holds the instance's UIDs, its path, the association's AE titles
and peer, and ``time``, the reception's time in seconds since the epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass

from radx.events.command import SERIES, STORE, STUDY

JOURNAL_FOLDER = ".radx-events"
JOURNAL_FILE = "journal"

# Which UID makes an instance part of which quiet period.
_KEY = {SERIES: "SeriesInstanceUID", STUDY: "StudyInstanceUID"}


def hook_id(kind: str, instance: dict) -> str:
    """
    The same for every run of the same hook, here or after a restart; new
    for a new reception: the kind, the instance's UIDs, its path and its
    reception's time (for a series or a study, those of its last instance).
    """
    key = json.dumps(
        [kind, instance.get("StudyInstanceUID"), instance.get("SeriesInstanceUID"), instance.get("SOPInstanceUID"), instance.get("path"), instance.get("time")],
        separators=(",", ":"),
    )
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass
class Hook:
    """A hook due: its identifier, kind, how many instances it covers and the last of them."""

    id: str
    kind: str
    count: int
    instance: dict


@dataclass
class QuietPeriod:
    """A series or study receiving: complete at ``due`` unless another instance comes first."""

    kind: str
    key: str
    due: float
    count: int
    instance: dict


class EventState:
    """
    The quiet periods running and the hooks due, as data.

    @param hooks: the kinds that have a hook (their command is elsewhere).
    @param periods: the kinds whose completion is watched: those with a
        hook, and both when completions are written as events.
    """

    def __init__(self, hooks, periods, series_timeout: float = 60.0, study_timeout: float = 60.0) -> None:
        self.hooks = frozenset(hooks)
        self.periods = tuple(kind for kind in (SERIES, STUDY) if kind in frozenset(periods))
        self.timeouts = {SERIES: series_timeout, STUDY: study_timeout}
        self.quiet: dict[tuple[str, str], QuietPeriod] = {}
        self.pending: dict[str, Hook] = {}
        # Hooks due in the file that no flag asks for any more: not run.
        self.dropped: set[str] = set()

    def instance_stored(self, instance: dict) -> Hook | None:
        """An instance stored at ``instance["time"]``: its quiet periods restart; its store hook, if any."""
        now = instance["time"]
        for kind in self.periods:
            key = str(instance.get(_KEY[kind]) or "")
            period = self.quiet.get((kind, key))
            if period is None:
                self.quiet[(kind, key)] = QuietPeriod(kind, key, now + self.timeouts[kind], 1, instance)
            else:
                period.due = max(period.due, now + self.timeouts[kind])
                period.count += 1
                period.instance = instance
        if STORE not in self.hooks:
            return None
        hook = Hook(hook_id(STORE, instance), STORE, 1, instance)
        self.pending[hook.id] = hook
        return hook

    def get_timer(self) -> float | None:
        """When the next quiet period ends, or None."""
        return min((period.due for period in self.quiet.values()), default=None)

    def handle_timer(self, now: float) -> list[tuple[QuietPeriod, Hook | None]]:
        """The quiet periods over at ``now``, oldest first, each with its hook if it has one: all pending now."""
        over = sorted((p for p in self.quiet.values() if p.due <= now), key=lambda p: (p.due, p.kind != SERIES))
        ended = []
        for period in over:
            del self.quiet[(period.kind, period.key)]
            ended.append((period, self._complete(period)))
        return ended

    def _complete(self, period: QuietPeriod) -> Hook | None:
        if period.kind not in self.hooks:
            return None
        hook = Hook(hook_id(period.kind, period.instance), period.kind, period.count, period.instance)
        self.pending[hook.id] = hook
        return hook

    def hook_done(self, identifier: str) -> None:
        self.pending.pop(identifier, None)

    # The file's records.

    def apply(self, record: dict) -> None:
        """Replay one record read from the file."""
        if "stored" in record:
            if self.instance_stored(record["stored"]) is None and record.get("hook"):
                self.dropped.add(hook_id(STORE, record["stored"]))
        elif "due" in record:
            due = record["due"]
            kind = due["kind"]
            if kind in _KEY:
                self.quiet.pop((kind, str(due["instance"].get(_KEY[kind]) or "")), None)
            if not due.get("hook", True):
                return  # a completion without a hook: nothing to run
            if kind in self.hooks:
                self.pending[due["id"]] = Hook(due["id"], kind, due["count"], due["instance"])
            else:
                self.dropped.add(due["id"])
        elif "done" in record:
            self.pending.pop(record["done"], None)
            self.dropped.discard(record["done"])
        elif "open" in record:
            period = record["open"]
            if period["kind"] in self.periods:
                self.quiet[(period["kind"], period["key"])] = QuietPeriod(
                    period["kind"], period["key"], period["due"], period["count"], period["instance"]
                )

    def records(self) -> list[dict]:
        """The state as the fewest records: what compaction writes."""
        out: list[dict] = []
        for period in self.quiet.values():
            out.append({"open": {"kind": period.kind, "key": period.key, "due": period.due, "count": period.count, "instance": period.instance}})
        for hook in self.pending.values():
            out.append(due_record(hook))
        return out


def due_record(hook: Hook, has_hook: bool = True) -> dict:
    due = {"id": hook.id, "kind": hook.kind, "count": hook.count, "instance": hook.instance}
    if not has_hook:
        due["hook"] = False
    return {"due": due}


def _line(record: dict) -> bytes:
    # ensure_ascii: whatever a peer sent, the line is ASCII and one line.
    return (json.dumps(record, separators=(",", ":")) + "\n").encode("ascii")


def read_records(data: bytes) -> tuple[list[dict], int]:
    """The records of a journal's bytes, and how many lines could not be read (a torn last write)."""
    records, unreadable = [], 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            unreadable += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            unreadable += 1
    return records, unreadable


class Journal:
    """
    The journal file of an output folder, and the state it holds. Blocking:
    L{open} and L{compact} off the reactor; the appends are one write(2)
    each, and L{instance_stored} one fdatasync (with ``fsync``).
    """

    def __init__(self, output_dir: str, state: EventState, fsync: bool = True, dir_mode: int = 0o700) -> None:
        self.folder = os.path.join(output_dir, JOURNAL_FOLDER)
        self.path = os.path.join(self.folder, JOURNAL_FILE)
        self.state = state
        self.fsync = fsync
        self.dir_mode = dir_mode
        self.lock = threading.Lock()
        self.appended = 0
        self.unreadable = 0
        self._fd: int | None = None
        self._retired: list[int] = []

    def open(self) -> None:
        """Read what an earlier run left, then write it again compacted; the state is then theirs."""
        os.makedirs(self.folder, mode=self.dir_mode, exist_ok=True)
        try:
            with open(self.path, "rb") as existing:
                data = existing.read()
        except FileNotFoundError:
            data = b""
        records, self.unreadable = read_records(data)
        with self.lock:
            for record in records:
                self.state.apply(record)
            self._rewrite()

    def _rewrite(self) -> None:
        """Write the state as a new file, then put it in place: a crash leaves the old or the new."""
        temporary = self.path + ".new"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            data = b"".join(_line(record) for record in self.state.records())
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)
        folder = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
        # The file replaced is closed at the next rewrite, not now: a
        # storage thread may be syncing it outside the lock, and its
        # number must not be another file's meanwhile.
        for fd in self._retired:
            os.close(fd)
        self._retired = [] if self._fd is None else [self._fd]
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self.appended = 0

    def compact(self) -> None:
        with self.lock:
            self._rewrite()

    def _append(self, record: dict) -> None:
        os.write(self._fd, _line(record))
        self.appended += 1

    def instance_stored(self, instance: dict) -> Hook | None:
        """Record an instance stored, durably (with ``fsync``): run before its Success."""
        return self.instances_stored([instance])[0]

    def instances_stored(self, instances: list[dict]) -> list[Hook | None]:
        """Record instances stored, in order, with one write and one sync for them all: a group commit."""
        with self.lock:
            hooks = [self.state.instance_stored(instance) for instance in instances]
            records = [
                {"stored": instance, "hook": True} if hook is not None else {"stored": instance}
                for instance, hook in zip(instances, hooks)
            ]
            os.write(self._fd, b"".join(_line(record) for record in records))
            self.appended += len(records)
            fd = self._fd
        if self.fsync:
            # Outside the lock: the storage threads' syncs overlap.
            os.fdatasync(fd)
        return hooks

    def handle_timer(self, now: float) -> list[tuple[QuietPeriod, Hook | None]]:
        """The quiet periods over at ``now``, each recorded as complete (and its hook due)."""
        with self.lock:
            ended = self.state.handle_timer(now)
            for period, hook in ended:
                # Written even without a hook: the period is over, a restart must not end it again.
                if hook is None:
                    self._append(due_record(Hook(hook_id(period.kind, period.instance), period.kind, period.count, period.instance), False))
                else:
                    self._append(due_record(hook))
        return ended

    def get_timer(self) -> float | None:
        with self.lock:
            return self.state.get_timer()

    def hook_done(self, identifier: str) -> None:
        """A hook ran to its end. Not synced: lost in a crash, the hook runs once more, which is allowed."""
        with self.lock:
            self._append({"done": identifier})
            self.state.hook_done(identifier)

    def pending(self) -> list[Hook]:
        with self.lock:
            return list(self.state.pending.values())

    def close(self) -> None:
        with self.lock:
            for fd in self._retired:
                os.close(fd)
            self._retired = []
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
