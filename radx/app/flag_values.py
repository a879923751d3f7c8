# -*- test-case-name: tests.test_app_flag_values,tests.test_app_options -*-
"""What a flag's value may be: the parsers every `radx dicom` command gives its flags, each error in words."""

from __future__ import annotations

import ipaddress

__all__ = [
    "MAXIMUM_PDU",
    "MINIMUM_PDU",
    "ae_title",
    "boolean",
    "catalogue_target",
    "count",
    "endpoint",
    "integer",
    "mode",
    "named",
    "network",
    "octal",
    "on_duplicate",
    "pdu_length",
    "port",
    "positive_int",
    "seconds",
    "size",
    "storage_sop_class",
    "uid",
]

# The Maximum Length a --max-pdu may give (PS3.8 D.1), in bytes.
MINIMUM_PDU = 4096
MAXIMUM_PDU = 4 * 1024 * 1024

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"expected true or false, not {value!r}")


boolean.coerceDoc = "true or false."  # type: ignore[attr-defined]


def integer(value: str) -> int:
    """A whole number written in decimal; the error says so in words."""
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number") from None


def port(value: str) -> int:
    number = integer(value)
    if not 0 <= number <= 65535:
        raise ValueError(f"a port is 0 to 65535, not {number}")
    return number


def positive_int(value: str) -> int:
    number = integer(value)
    if number < 1:
        raise ValueError(f"must be at least 1, not {number}")
    return number


def count(value: str) -> int:
    """How many times, or at once: 1 to 65535."""
    number = positive_int(value)
    if number > 65535:
        raise ValueError(f"at most 65535, not {number}")
    return number


def workers(value) -> int:
    """A number of worker processes, or ``auto``: one for each CPU this process may run on."""
    if isinstance(value, int):
        return value
    if value.strip().lower() == "auto":
        import os

        return len(os.sched_getaffinity(0))
    return positive_int(value)


workers.coerceDoc = "A number, or auto (one per CPU)."  # type: ignore[attr-defined]


def seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number of seconds") from None
    if not number > 0:
        raise ValueError(f"must be a positive number of seconds, not {value}")
    return number


# Units of a size: SI (powers of 1000) and IEC (powers of 1024), as df and most tools write them.
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}  # fmt: skip


def size(value) -> int:
    """A size in bytes: ``0``, ``4096``, ``500MB``, ``1GiB``, ``1.5G`` (k, M, G, T are powers of 1000; KiB, MiB... of 1024)."""
    if isinstance(value, int):
        return value
    text = value.strip()
    number = text.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ").strip()
    unit = text[len(number) :].strip().lower()
    try:
        amount = float(number)
    except ValueError:
        amount = -1.0
    if unit not in _SIZE_UNITS or not amount >= 0 or amount == float("inf"):
        raise ValueError(f"expected a size such as 0, 500MB or 1GiB, not {value!r}")
    return int(amount * _SIZE_UNITS[unit])


size.coerceDoc = "A size: bytes, or with a unit (kB, MB, GB, TB; KiB, MiB, GiB, TiB)."  # type: ignore[attr-defined]


def ae_title(value: str) -> str:
    # PS3.5 6.2: AE is 16 characters at most, default repertoire, no
    # backslash or control characters; leading/trailing spaces are not
    # significant and all spaces is not allowed.
    title = value.strip(" ")
    if not title:
        raise ValueError("an AE title must not be empty")
    if len(title) > 16:
        raise ValueError(f"an AE title has at most 16 characters, {title!r} has {len(title)}")
    if any(ord(c) < 0x20 or ord(c) > 0x7E or c == "\\" for c in title):
        raise ValueError(f"an AE title is printable ASCII without backslash: {title!r}")
    return title


def pdu_length(value: str) -> int:
    length = integer(value)
    if not MINIMUM_PDU <= length <= MAXIMUM_PDU:
        raise ValueError(f"must be between {MINIMUM_PDU} and {MAXIMUM_PDU} bytes, not {length}")
    return length


def mode(value) -> int:
    """Permission bits written in octal, as chmod takes them: 0600, 640."""
    if isinstance(value, int):
        return value
    try:
        bits = int(value, 8)
    except ValueError:
        raise ValueError(f"expected octal permission bits such as 0600, not {value!r}") from None
    if not 0 <= bits <= 0o7777:
        raise ValueError(f"expected octal permission bits such as 0600, not {value!r}")
    return bits


def octal(bits: int) -> str:
    """Permission bits as chmod and :func:`mode` take them: 0600."""
    return f"{bits:04o}"


def network(value: str):
    """An IPv4 or IPv6 network in CIDR notation; a bare address is a network of one."""
    try:
        return ipaddress.ip_network(value.strip())
    except ValueError as error:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address or CIDR network: {error}") from None


def uid(value: str) -> str:
    """A UID (PS3.5 9.1): digits and dots, at most 64 characters, no empty component."""
    from radx.uids import is_valid_uid

    if not is_valid_uid(value):
        raise ValueError(f"{value!r} is not a valid UID")
    return value


def storage_sop_class(value: str) -> str:
    """The UID of a Storage SOP Class, one radx, a Storage SCP, can accept: not Verification, which --accept-echo governs."""
    from radx.uids import VERIFICATION_SOP_CLASS
    from radx.ul.negotiation import is_storage_sop_class

    value = uid(value)
    if value == VERIFICATION_SOP_CLASS:
        raise ValueError("Verification is governed by --accept-echo")
    if not is_storage_sop_class(value):
        raise ValueError(f"{value} is not a Storage SOP Class; radx is a Storage SCP")
    return value


def endpoint(value: str) -> str:
    """A Twisted endpoint description, as given but for the spaces around it; not checked until it is listened on."""
    description = value.strip()
    if not description:
        raise ValueError("an endpoint such as tcp:11112, not an empty string")
    return description


def catalogue_target(value: str) -> str:
    """A catalogue radx can open; its modules (and sqlite3) loaded only when the flag is given."""
    from radx.catalogue.opening import check_target

    return check_target(value)


def on_duplicate(value: str) -> str:
    """What is done with an instance whose file exists: one of radx.storage.filing's ON_DUPLICATE."""
    from radx.storage.filing import ON_DUPLICATE

    if value not in ON_DUPLICATE:
        raise ValueError(f"expected one of {', '.join(ON_DUPLICATE)}, not {value!r}")
    return value


def named(flag: str, coerce):
    """A coercer whose errors name the flag they are about."""

    def parse(value: str):
        try:
            return coerce(value)
        except ValueError as error:
            raise ValueError(f"--{flag}: {error}") from None

    parse.coerceDoc = getattr(coerce, "coerceDoc", None)  # type: ignore[attr-defined]
    return parse
