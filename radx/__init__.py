"""radx: a DICOM receiving server on Twisted."""

from radx._version import __version__

__all__ = ["__version__"]
