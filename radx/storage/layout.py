# -*- test-case-name: tests.test_storage_layout -*-
"""Where a received instance goes under the output directory, from its UIDs."""

from __future__ import annotations

import re

# The folder for a study or series whose UID is missing or unusable.
UNKNOWN = "UNKNOWN"

# PS3.5 9.1: a UID is at most 64 characters.
_MAX_UID_LENGTH = 64

# PS3.5 9.1: components of digits 0-9 separated by ".", none empty, and no
# leading zero in a component of more than one digit.  [0-9], not \d: \d
# matches non-ASCII digits too.
_STRICT_UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")

# The same without the leading-zero rule, which real-world UIDs break.
_LENIENT_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")


class InvalidUID(ValueError):
    """A SOP Instance UID that cannot name a file."""


def is_valid_uid(uid: str, *, strict: bool = False) -> bool:
    """
    Whether C{uid} is a UID radx can use as a file or folder name.

    Always required (PS3.5 9.1): a C{str} of 1 to 64 characters, only the
    ASCII digits and ".", no empty component.  So "..", "/", NUL, spaces
    and padding never pass.

    The leading-zero rule of PS3.5 9.1 ("1.02" is malformed) is only checked
    with C{strict=True}: some real-world devices mint such UIDs, and refusing
    them would refuse patient images over a rule that costs radx nothing.
    """
    if not isinstance(uid, str) or not 0 < len(uid) <= _MAX_UID_LENGTH:
        return False
    pattern = _STRICT_UID if strict else _LENIENT_UID
    return pattern.fullmatch(uid) is not None


def uid_for_log(value: object) -> str:
    """
    How a log line or a status comment shows a value meant to be a UID:
    quoted if it is one; otherwise only its length, never its content.

    A malformed UID is often the start of other elements (a value length
    that swallows the next element, a patient's name), and radx's logs
    hold no patient data.
    """
    if isinstance(value, str) and is_valid_uid(value):
        return repr(value)
    if isinstance(value, (str, bytes)):
        return f"<{len(value)} characters, not a UID>"
    return f"<{type(value).__name__}, not a UID>"


def _folder(name: str, uid: str | None, warnings: list[str]) -> str:
    """
    The folder name for a Study or Series Instance UID.

    A missing or unusable UID becomes L{UNKNOWN}, with a warning; a usable
    UID that breaks only the leading-zero rule keeps its folder (so its
    study stays together), with a warning.
    """
    if uid is None or uid == "":
        warnings.append(f"{name} is missing; filed under {UNKNOWN}")
        return UNKNOWN
    if not is_valid_uid(uid):
        warnings.append(f"{name} {uid_for_log(uid)} is malformed (PS3.5 9.1); filed under {UNKNOWN}")
        return UNKNOWN
    if not is_valid_uid(uid, strict=True):
        warnings.append(f"{name} {uid_for_log(uid)} has a component with a leading zero (PS3.5 9.1)")
    return uid


def relative_instance_path(
    sop_instance_uid: str,
    study_instance_uid: str | None,
    series_instance_uid: str | None,
    organize: bool,
) -> tuple[tuple[str, ...], list[str]]:
    """
    The path of an instance's file relative to the output directory.

    @return: the path's components, C{(study, series, "<sop>.dcm")} when
        C{organize} is true, else C{("<sop>.dcm",)}; and warnings about the
        UIDs, for a log line.
    @raise InvalidUID: C{sop_instance_uid} cannot name a file; nothing
        should be written.
    """
    warnings: list[str] = []
    if not is_valid_uid(sop_instance_uid):
        raise InvalidUID(f"malformed SOP Instance UID {uid_for_log(sop_instance_uid)} (PS3.5 9.1)")
    if not is_valid_uid(sop_instance_uid, strict=True):
        warnings.append(
            f"SOP Instance UID {uid_for_log(sop_instance_uid)} has a component with a leading zero (PS3.5 9.1)"
        )
    filename = f"{sop_instance_uid}.dcm"
    if not organize:
        return (filename,), warnings
    study = _folder("Study Instance UID", study_instance_uid, warnings)
    series = _folder("Series Instance UID", series_instance_uid, warnings)
    return (study, series, filename), warnings
