# -*- test-case-name: tests.test_dimse_commands -*-
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
    INVALID_ARGUMENT_VALUE = 0x0115
    INVALID_OBJECT_INSTANCE = 0x0117
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    REFUSED_NOT_AUTHORIZED = 0x0124
    DUPLICATE_INVOCATION = 0x0210
    UNRECOGNIZED_OPERATION = 0x0211
    MISTYPED_ARGUMENT = 0x0212
