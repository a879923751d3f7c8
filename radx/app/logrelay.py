# -*- test-case-name: tests.test_app_channel -*-
"""A worker's log, carried to the supervisor: one log, its lines made by the same observers.

Where the supervisor knows how its log is written (the console's
ConsoleObserver, twistd's text or JSON observer), the worker makes the
same observer (L{worker_observer}), given the supervisor's settings
(``render``), whose lines it sends as they are; the supervisor writes
them where it writes its own, so that a worker's line reads as the
single process's, and costs the supervisor a write. Where it does not
(twistd's --syslog), the worker sends each event it would have written
as a message
(L{event_message}): its time, level, namespace and format, and the
values its format names, which the supervisor puts back together
(L{event_from_message}) and gives to its own observers, so that a
worker's line reads as the single process's, in text, in JSON and in
twistd's log. A value that is not a plain str, int, float, bool or None
(what ``{value!r}`` or a format spec would show differently once
copied) is formatted in the worker: the message then carries its text
as the format, and ``log_fields`` names the fields it had. A failure
travels as its message and its traceback.
"""

from __future__ import annotations

from twisted.logger import ILogObserver, LogLevel
from zope.interface import implementer

from radx.app.jsonlog import JsonLogObserver, _format_fields, _json_value
from radx.app.logformat import ClassicTextObserver, format_event

_PLAIN = (str, int, float, bool, type(None))
_LEVELS = {level.name: level for level in (LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical)}
_RANK = {level: rank for rank, level in enumerate(_LEVELS.values())}


def event_message(event, worker: int) -> tuple:
    """A log event as a message: ("log", time, level, namespace, format, fields, system, failure, worker)."""
    log_format = event.get("log_format")
    names = _format_fields(log_format or "")
    fields = {}
    formatted = False
    for name in names:
        if name in event:
            value = event[name]
            if type(value) not in _PLAIN:
                formatted = True
                value = _json_value(value)
            fields[name] = value
    if "audit" in event or "warning" in event:
        # The audit record's other fields are written to JSON logs too; a
        # Python warning's text says where, from its (radx.app.logformat).
        for name, value in event.items():
            if not name.startswith("log_") and name not in fields:
                fields[name] = _json_value(value)
    if formatted or log_format is None:
        log_format = format_event(event).replace("{", "{{").replace("}", "}}")
        # The text is made; JSON lines still list the fields its format named.
        fields["log_fields"] = list(names)
    failure = event.get("log_failure")
    if failure is not None:
        failure = (failure.getErrorMessage(), failure.getTraceback())
    level = event.get("log_level")
    system = event.get("log_system")
    return (
        "log",
        event.get("log_time"),
        level.name if level is not None else "info",
        event.get("log_namespace", ""),
        log_format,
        fields,
        None if system is None else str(system),
        failure,
        worker,
    )


class RelayedFailure:
    """A worker's failure as the supervisor's observers see it: its message and its traceback, as text."""

    def __init__(self, message: str, traceback: str) -> None:
        self.message = message
        self.traceback = traceback

    def getErrorMessage(self) -> str:
        return self.message

    def getTraceback(self, *args, **kwargs) -> str:
        return self.traceback

    getBriefTraceback = getTraceback

    def check(self, *error_types):
        return None


def event_from_message(message: tuple) -> dict:
    """The event a ``("log", ...)`` message carries, with ``worker``: the worker's index."""
    _, when, level, namespace, log_format, fields, system, failure, worker = message
    event = dict(fields)
    event.update(
        log_time=when,
        log_level=_LEVELS.get(level, LogLevel.info),
        log_namespace=namespace,
        log_format=log_format,
        worker=worker,
    )
    if system is not None:
        event["log_system"] = system
    if failure is not None:
        event["log_failure"] = RelayedFailure(*failure)
    return event


@implementer(ILogObserver)
class LogRelay:
    """
    A worker's log observer: each event at or above the supervisor's
    levels, to the channel. C{levels}: the lowest level of radx's own
    events and of others' (the console's); None: every event (twistd's log).
    """

    def __init__(self, channel, worker: int, levels: tuple[str, str] | None) -> None:
        self.channel = channel
        self.worker = worker
        self._ranks = None if levels is None else (_RANK[_LEVELS[levels[0]]], _RANK[_LEVELS[levels[1]]])

    def __call__(self, event) -> None:
        if self._ranks is not None:
            level = event.get("log_level", LogLevel.info)
            radx = event.get("log_namespace", "").startswith("radx")
            if _RANK.get(level, 1) < self._ranks[0 if radx else 1]:
                return
        self.channel.send_soon(event_message(event, self.worker))


def console_levels(level_name: str) -> tuple[str, str]:
    """The levels the console writes (radx.app.cli.ConsoleObserver): radx's from C{level_name}, others' from warn."""
    rank = max(_RANK[_LEVELS[level_name]], _RANK[LogLevel.warn])
    return level_name, next(name for name, level in _LEVELS.items() if _RANK[level] == rank)


def worker_observer(render: dict | None, channel, worker: int, levels: tuple[str, str] | None):
    """
    A worker's log observer: lines made as the supervisor's observer
    (``render``: ``{"kind": "console", "level", "json"}`` or ``{"kind":
    "twistd", "json"}``) makes them, to the channel; without ``render``,
    each event at or above ``levels`` as a message (L{LogRelay}).
    """
    if render is None:
        return LogRelay(channel, worker, levels)
    write = channel.send_line
    if render["kind"] == "console":
        from radx.app.cli import ConsoleObserver

        observer = ConsoleObserver(_LEVELS[render["level"]], json=render["json"], write=write)
    elif render["json"]:
        observer = JsonLogObserver(write)
    else:
        observer = ClassicTextObserver(write)
    if not render["json"]:
        return observer

    def naming_the_worker(event) -> None:
        # JSON lines say which worker wrote them (radx.app.jsonlog).
        event["worker"] = worker
        observer(event)

    return naming_the_worker
