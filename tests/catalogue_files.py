"""Small DICOM files for the catalogue's tests, written with pydicom: the attributes asked for, a few pixels."""

from __future__ import annotations

import os

from pydicom.data import get_charset_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.dicomfiles import CT_IMAGE_STORAGE


def write_instance(path: str, number: int = 1, **attributes) -> str:
    """
    A CT image at ``path`` (folders made), instance ``number`` of one
    study and series, Explicit VR Little Endian; ``attributes`` by DICOM
    keyword override or add to the defaults. Its path.
    """
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    # pydicom's prefix: a UID derived from the entropy sources alone.
    sop_instance_uid = generate_uid(entropy_srcs=["catalogue-tests", path, str(number)])
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = sop_instance_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_instance_uid
    ds.PatientName = "DOE^JANE"
    ds.PatientID = "PID-1"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.Modality = "CT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(32)
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def charset_file(name: str) -> str:
    """A file of pydicom's character set tests (chrRuss.dcm, chrH31.dcm...)."""
    return get_charset_files(name)[0]
