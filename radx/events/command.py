# -*- test-case-name: tests.test_events_command -*-
"""A hook's command: split into arguments once, at start; placeholders filled inside single arguments.

No shell ever reads the command or a value. The operator's text is split
with shlex when radx starts; each placeholder is then replaced within the
one argument it stands in, so that whatever a peer puts in an AE title or
a UID, it is at most part of one argument of the program the operator
named. A user who wants a shell writes ``sh -c '...' sh #p`` and gets the
values as positional parameters.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass

# The kinds of hook, as the flags name them.
STORE = "store"
SERIES = "series"
STUDY = "study"
KINDS = (STORE, SERIES, STUDY)

# DCMTK storescp's placeholders (--exec-on-reception, --exec-on-eostudy), with its meanings.
SHORT = {
    "p": "folder",  # the folder of the file, series or study
    "f": "file_name",  # the file's name; store only, as in DCMTK
    "a": "calling_ae_title",
    "c": "called_ae_title",
    "r": "remote",  # the peer's address
}

# The named ones, #{Name}: DICOM's keywords for the UIDs, our words for the rest.
NAMED = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "TransferSyntaxUID",
    "count",
    "path",
    "folder",
    "id",
    "kind",
)

# What a kind of hook can say: a study has many series and instances, a series many instances.
_ONLY_FOR = {
    "file_name": {STORE},
    "path": {STORE},
    "SOPInstanceUID": {STORE},
    "SOPClassUID": {STORE},
    "TransferSyntaxUID": {STORE},
    "SeriesInstanceUID": {STORE, SERIES},
}

_TOKEN = re.compile(r"#(?:\{([^}]*)\}|([pfacr#]))")


class CommandError(ValueError):
    """A hook's command that cannot be used; the message says why."""


@dataclass(frozen=True)
class HookCommand:
    """
    One hook's command line as an argument list, each argument a list of
    literal text and placeholder names.

    @ivar kind: L{STORE}, L{SERIES} or L{STUDY}.
    @ivar text: the command as the operator wrote it.
    @ivar argv: the arguments, each a tuple of parts: a string is literal,
        a one-tuple C{(name,)} is a placeholder.
    """

    kind: str
    text: str
    argv: tuple

    @property
    def program(self) -> str:
        """The program to run, as written (placeholders are refused there)."""
        return self.argv[0][0] if self.argv[0] else ""

    def arguments(self, values: dict) -> list[str]:
        """The argument list with ``values`` filled in: as many arguments as the operator wrote."""
        return ["".join(part if isinstance(part, str) else _text(values.get(part[0])) for part in argument) for argument in self.argv]


def _text(value) -> str:
    if value is None:
        return ""
    # An argument cannot hold NUL; a value from the network might.
    return str(value).replace("\x00", "")


def parse_command(kind: str, text: str) -> HookCommand:
    """
    Split ``text`` as a POSIX shell would split words (quotes, backslashes),
    without running one, and find its placeholders.

    @raise CommandError: empty, unbalanced quotes, a placeholder unknown or
        meaningless for ``kind``, or one in the program's name.
    """
    if kind not in KINDS:
        raise CommandError(f"no such hook: {kind!r}")
    try:
        words = shlex.split(text, comments=False, posix=True)
    except ValueError as error:
        raise CommandError(f"cannot split {text!r} into arguments: {error}") from None
    if not words:
        raise CommandError("the command is empty")
    argv = []
    for index, word in enumerate(words):
        parts: list = []
        position = 0
        for match in _TOKEN.finditer(word):
            if match.start() > position:
                parts.append(word[position : match.start()])
            name, letter = match.group(1), match.group(2)
            if letter == "#":
                parts.append("#")
            else:
                field = SHORT[letter] if letter else name
                if field not in NAMED and field not in SHORT.values():
                    known = ", ".join(f"#{{{n}}}" for n in NAMED)
                    raise CommandError(f"unknown placeholder #{{{name}}} in {word!r}; known: #p #f #a #c #r ##, {known}")
                allowed = _ONLY_FOR.get(field)
                if allowed is not None and kind not in allowed:
                    shown = f"#{letter}" if letter else f"#{{{name}}}"
                    raise CommandError(f"{shown} has no meaning for --exec-on-{kind}: a {kind} has many")
                if index == 0:
                    raise CommandError(f"the program's name cannot hold a placeholder: {word!r}")
                parts.append((field,))
            position = match.end()
        if position < len(word):
            parts.append(word[position:])
        argv.append(tuple(_merged(parts)))
    return HookCommand(kind, text, tuple(argv))


def _merged(parts: list) -> list:
    """Adjacent literal parts as one string."""
    merged: list = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    return merged or [""]


def hook_values(kind: str, instance: dict, count: int, hook_id: str, organize: bool) -> dict:
    """
    The placeholders' values for a hook of ``kind`` whose last instance is
    ``instance`` (a journal's instance record): ``#p`` is the folder of the
    file for an instance or a series, the study's folder for a study; not
    ``organize`` (a flat folder, or a layout of the operator's), the
    folder of the file for all three.
    """
    path = instance.get("path") or ""
    folder = os.path.dirname(path)
    if kind == STUDY and organize:
        folder = os.path.dirname(folder)
    values = {
        "folder": folder,
        "calling_ae_title": instance.get("calling_ae_title"),
        "called_ae_title": instance.get("called_ae_title"),
        "remote": instance.get("remote"),
        "StudyInstanceUID": instance.get("StudyInstanceUID"),
        "count": count,
        "id": hook_id,
        "kind": kind,
    }
    if kind != STUDY:
        values["SeriesInstanceUID"] = instance.get("SeriesInstanceUID")
    if kind == STORE:
        values.update(
            path=path,
            file_name=os.path.basename(path),
            SOPInstanceUID=instance.get("SOPInstanceUID"),
            SOPClassUID=instance.get("SOPClassUID"),
            TransferSyntaxUID=instance.get("TransferSyntaxUID"),
        )
    return values


@dataclass(frozen=True)
class HookSettings:
    """The hooks and events a server runs (--exec-on-*, --events), and their limits."""

    # The commands, by kind; a kind without a command has no hook.
    commands: tuple = ()
    series_timeout: float = 60.0
    study_timeout: float = 60.0
    # Hooks running at once; more wait their turn.
    concurrency: int = 4
    # Seconds a hook may run before it is killed.
    timeout: float = 600.0
    # The file of JSON lines (--events), or None.
    events: str | None = None

    def command(self, kind: str) -> HookCommand | None:
        for command in self.commands:
            if command.kind == kind:
                return command
        return None


def find_program(command: HookCommand) -> str:
    """
    The program's path, as exec would find it: a name with a slash as is,
    else the first executable of that name on PATH.

    @raise CommandError: none is found, or it is not executable.
    """
    import shutil

    program = command.program
    if "/" in program:
        if not (os.path.isfile(program) and os.access(program, os.X_OK)):
            raise CommandError(f"{program!r} is not an executable file")
        return program
    found = shutil.which(program)
    if found is None:
        raise CommandError(f"{program!r} is not found on PATH")
    return found
