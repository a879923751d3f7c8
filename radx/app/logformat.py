# -*- test-case-name: tests.test_app_cli -*-
"""The text of a log event: for the console, the JSON lines and twistd's text log."""

from __future__ import annotations

from twisted.logger import ILogObserver, formatEvent, formatEventAsClassicLogText, formatTime
from zope.interface import implementer


def printable(text: str) -> str:
    """``text`` with each character that is not printable written as its escape (``\\n``, ``\\x1b``).

    Values a peer sends (AE titles, UIDs, comments) reach log lines: a
    newline in one would forge a line, an escape sequence would act on
    the terminal. Escaped, a line stays one line of what was received.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def is_python_warning(event) -> bool:
    """Whether an event is a Python warning, as Twisted's log beginner turns one into an event."""
    return "warning" in event and "category" in event and "filename" in event


def _python_warning(event) -> str:
    # A library's warning (pydicom's, reading a data set) can quote the
    # values it read: its category and place are said, never its text.
    return (
        f"{event['category']} at {event['filename']}:{event.get('lineno', '?')}"
        " (its text is not logged: it may quote a data set's values)"
    )


def format_event(event) -> str:
    """An event's text, as ``formatEvent`` gives it, twenty times faster for radx's plain fields; one printable line.

    radx's formats use only ``{name}`` and ``{name:spec}`` fields, which
    ``str.format_map`` handles in C; anything else (Twisted's ``{f()}``
    calls, a missing key) takes Twisted's own path.
    """
    if is_python_warning(event):
        return printable(_python_warning(event))
    log_format = event.get("log_format")
    if log_format is not None:
        try:
            return printable(log_format.format_map(event))
        except Exception:
            pass
    return printable(formatEvent(event))


# The RFC 3339 stamp of the second last formatted: lines come many a second.
_last_stamp: tuple[int | None, str] = (None, "")


def _stamp(when) -> str:
    global _last_stamp
    if when is None:
        return "-"
    second = int(when)
    cached_second, text = _last_stamp
    if second != cached_second:
        # Second resolution, and the local offset of that second: exact per second.
        text = formatTime(second)
        _last_stamp = (second, text)
    return text


def classic_text(event) -> str | None:
    """
    A line as twistd writes its text log (``formatEventAsClassicLogText``),
    with the fast formatting of :func:`format_event`, so one line a message;
    an event that carries a failure, or no format, takes Twisted's own path
    (a failure's message still made printable).
    """
    if event.get("log_format") is None:
        return formatEventAsClassicLogText(event)
    text = format_event(event)
    if "log_failure" in event:
        # Twisted's own lines for the traceback, after the message made printable.
        return formatEventAsClassicLogText(dict(event, log_format=text.replace("{", "{{").replace("}", "}}")))
    if not text:
        return None
    system = event.get("log_system")
    if system is None:
        level = event.get("log_level")
        system = f"{event.get('log_namespace', '-')}#{'-' if level is None else level.name}"
    else:
        system = str(system)
    return f"{_stamp(event.get('log_time'))} [{system}] {text}\n"


@implementer(ILogObserver)
class ClassicTextObserver:
    """twistd's text log lines, formatted the fast way, given to ``write``."""

    def __init__(self, write) -> None:
        self.write = write

    def __call__(self, event) -> None:
        text = classic_text(event)
        if text:
            self.write(text)
