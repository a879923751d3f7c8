# -*- test-case-name: tests.test_storage_layout -*-
"""UIDs and names radx uses on the wire, and what makes a value a UID."""

import re

from radx._version import __version__

# radx's own Implementation Class UID (PS3.7 D.3.3.2), a 2.25 UUID-derived
# UID (PS3.5 B.2) generated once and fixed for every release.
IMPLEMENTATION_CLASS_UID = "2.25.100508083930913661933496188512797501344"

# PS3.7 D.3.3.2: at most 16 characters of the default character repertoire.
IMPLEMENTATION_VERSION_NAME = ("RADX_" + __version__.public())[:16]

# PS3.7 A.2.1: the DICOM Application Context Name.
APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"

# PS3.4 A.4: the Verification SOP Class.
VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"

# PS3.4 Table I.4-1 and PS3.10 8.6: the DICOMDIR's SOP class. A DICOMDIR
# indexes a File-set; it is not an instance a C-STORE carries.
MEDIA_STORAGE_DIRECTORY_STORAGE = "1.2.840.10008.1.3.10"

# PS3.5 10: transfer syntaxes named by the DIMSE layer itself.
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"

# PS3.5 9.1: a UID is at most 64 characters.
_MAX_UID_LENGTH = 64

# PS3.5 9.1: components of digits 0-9 separated by ".", none empty, and no
# leading zero in a component of more than one digit.  [0-9], not \d: \d
# matches non-ASCII digits too.
_STRICT_UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")

# The same without the leading-zero rule, which real-world UIDs break.
_LENIENT_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")


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
