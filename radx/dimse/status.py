# -*- test-case-name: tests.test_dimse_commands,tests.test_scu_sources -*-
"""The DIMSE status codes radx puts in (0000,0900) Status (PS3.7 C, PS3.4 B.2.3)."""

import enum


class Status(enum.IntEnum):
    """
    A value of (0000,0900) Status.

    The storage failures are ranges (A7xx, A9xx, Cxxx; PS3.4 B.2.3): the
    members give the first value of each range, which is what radx sends.
    """

    # PS3.7 C.1: success.
    SUCCESS = 0x0000

    # PS3.4 B.2.3 (Table B.2-1): C-STORE failures of the Storage SOP Classes.
    OUT_OF_RESOURCES = 0xA700
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000

    # PS3.4 B.2.3 (Table B.2-1): C-STORE warnings of the Storage SOP Classes.
    COERCION_OF_DATA_ELEMENTS = 0xB000
    ELEMENTS_DISCARDED = 0xB006
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING = 0xB007

    # PS3.7 C.5: failures common to the DIMSE services.
    PROCESSING_FAILURE = 0x0110
    # PS3.7 C.5 (10.1.5.1.6): a Failure; C-STORE's own statuses name no duplicate.
    DUPLICATE_SOP_INSTANCE = 0x0111
    INVALID_ARGUMENT_VALUE = 0x0115
    INVALID_OBJECT_INSTANCE = 0x0117
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    REFUSED_NOT_AUTHORIZED = 0x0124
    DUPLICATE_INVOCATION = 0x0210
    UNRECOGNIZED_OPERATION = 0x0211
    MISTYPED_ARGUMENT = 0x0212


# PS3.7 C and PS3.4 B.2.3: what a status means, for a person reading it.
_MEANINGS = {
    0x0000: "Success",
    0x0001: "Requested optional attributes are not supported",
    0x0107: "Attribute list error",
    0x0116: "Attribute value out of range",
    0xB000: "Coercion of Data Elements",
    0xB006: "Elements Discarded",
    0xB007: "Data Set does not match SOP Class",
    0x0110: "Processing failure",
    0x0111: "Duplicate SOP instance",
    0x0115: "Invalid argument value",
    0x0117: "Invalid object instance",
    0x0122: "SOP Class not supported",
    0x0124: "Refused: not authorized",
    0x0210: "Duplicate invocation",
    0x0211: "Unrecognized operation",
    0x0212: "Mistyped argument",
    0x0213: "Resource limitation",
    0xFE00: "Cancel",
    0xFF00: "Pending",
    0xFF01: "Pending (warning)",
}

# PS3.4 B.2.3: the C-STORE failure ranges (A7xx, A9xx, Cxxx).
_RANGES = (
    (0xA700, 0xA7FF, "Refused: Out of Resources"),
    (0xA900, 0xA9FF, "Error: Data Set does not match SOP Class"),
    (0xC000, 0xCFFF, "Error: Cannot understand"),
    (0xB000, 0xBFFF, "Warning"),
)


def status_meaning(status: int) -> str:
    """The name of a (0000,0900) Status value, or its class when it has none."""
    meaning = _MEANINGS.get(status)
    if meaning is not None:
        return meaning
    for low, high, name in _RANGES:
        if low <= status <= high:
            return name
    return "Failure" if is_failure(status) else "Unknown status"


def is_warning(status: int) -> bool:
    """PS3.7 C.3 and PS3.4 B.2.3: 0001H, 0107H, 0116H and Bxxx are warnings."""
    return status in (0x0001, 0x0107, 0x0116) or 0xB000 <= status <= 0xBFFF


def is_failure(status: int) -> bool:
    """Neither Success, a warning, Pending (FF00H, FF01H) nor Cancel (FE00H)."""
    return status != 0x0000 and not is_warning(status) and status not in (0xFE00, 0xFF00, 0xFF01)


def describe_status(status: int) -> str:
    """``0x0122 (SOP Class not supported)``."""
    return f"0x{status:04X} ({status_meaning(status)})"
