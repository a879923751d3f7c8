"""UIDs and names radx uses on the wire."""

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
