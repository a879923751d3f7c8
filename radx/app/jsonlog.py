# -*- test-case-name: tests.test_security_audit -*-
"""`--log-format json`: each log event as one JSON object a line, with stable keys.

Keys: ``time`` (UTC, ISO 8601), ``level``, ``namespace``, ``message`` (the
text line), then every field the event's format names (``peer``,
``calling_ae``, ``stored``...); for the record that ends each association
(``audit``: true) every field it carries, ``accepted_contexts`` among them;
``worker``, with --workers, the index of the worker process that logged
it; and ``error`` when the event carries a failure.
"""

from __future__ import annotations

import functools
import json
from datetime import datetime, timezone
from string import Formatter

from twisted.logger import ILogObserver
from zope.interface import implementer

from radx.app.logformat import format_event, is_python_warning

_RESERVED = ("time", "level", "namespace", "message", "error")
_SIMPLE = (str, int, float, bool, type(None))


@functools.lru_cache(maxsize=256)
def _format_fields(log_format: str) -> tuple[str, ...]:
    """The fields a format names, once per format (radx has a few dozen)."""
    names: list[str] = []
    try:
        parsed = list(Formatter().parse(log_format))
    except ValueError:
        return ()
    for _, name, _, _ in parsed:
        if name:
            # "{a.b}" and "{a[0]}" name the field "a".
            root = name.split(".", 1)[0].split("[", 1)[0]
            if root and root not in names:
                names.append(root)
    return tuple(names)


def _json_value(value):
    if isinstance(value, _SIMPLE):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(item, _SIMPLE) for item in value):
        return list(value)
    return str(value)


def event_as_json(event, traceback: bool = False) -> str:
    """One event as one line of JSON (no newline)."""
    level = event.get("log_level")
    record = {
        "time": datetime.fromtimestamp(event.get("log_time", 0), timezone.utc).isoformat(timespec="milliseconds"),
        "level": level.name if level is not None else "info",
        "namespace": event.get("log_namespace", ""),
        "message": format_event(event),
    }
    # A worker's event whose text was formatted there names its format's fields (radx.app.logrelay).
    names = list(event.get("log_fields") or _format_fields(event.get("log_format") or ""))
    if is_python_warning(event):
        names = [name for name in names if name != "warning"]  # its text is withheld, as in "message"
    if event.get("audit"):
        # The audit record: every field it carries.
        names += [name for name in event if not name.startswith("log_") and name not in names]
    if "worker" in event and "worker" not in names:
        # With --workers: the worker process the event comes from (radx.app.logrelay).
        names.append("worker")
    for name in names:
        if name in event:
            key = name if name not in _RESERVED else f"field_{name}"
            record[key] = _json_value(event[name])
    failure = event.get("log_failure")
    if failure is not None:
        record["error"] = failure.getTraceback() if traceback else failure.getErrorMessage()
    return json.dumps(record, ensure_ascii=False)


@implementer(ILogObserver)
class JsonLogObserver:
    """Writes each event it is given to ``write`` as a JSON line."""

    def __init__(self, write, traceback: bool = False) -> None:
        self.write = write
        self.traceback = traceback

    def __call__(self, event) -> None:
        self.write(event_as_json(event, self.traceback) + "\n")
