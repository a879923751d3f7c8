"""Test data for the interoperability and acceptance tests: DICOM files made on demand.

Everything here is deterministic (UIDs and pixel data come from a seed) and
the pixel data is random, so nothing in a transfer compresses or repeats.
Large files are written and compared in chunks, never held whole in memory.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
import subprocess
import warnings
from dataclasses import dataclass

import numpy as np
from pydicom import config, dcmread
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from radx.storage.part10 import data_set_offset

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MULTIFRAME_GRAYSCALE_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"

# Where the chunked readers and writers cut.
CHUNK = 1 << 20
# How much random pixel data is made per write of a large file.
_PIXEL_CHUNK = 8 << 20


def uid(*parts) -> str:
    """A valid, deterministic UID (2.25.<decimal>) from ``parts``."""
    return generate_uid(prefix=None, entropy_srcs=[repr(p) for p in parts])


def _unchecked(tag: int, vr: str, value) -> DataElement:
    # Test data is sometimes malformed on purpose: no validation here.
    return DataElement(tag, vr, value, validation_mode=config.IGNORE)


def _file_meta(sop_class_uid: str, sop_instance_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = uid("radx-tests", "implementation")
    meta.ImplementationVersionName = "RADX_TESTS"
    return meta


def _patient_study(ds: Dataset, study_uid: str, series_uid: str, modality: str) -> None:
    ds.PatientName = "Test^Radx"
    ds.PatientID = "RADX-0001"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = "20240102"
    ds.StudyTime = "120000"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.Modality = modality
    ds.add(_unchecked(0x0020000D, "UI", study_uid))
    ds.add(_unchecked(0x0020000E, "UI", series_uid))


def write_ct_series(
    folder,
    count: int,
    rows: int = 512,
    columns: int = 512,
    study_uid: str | None = None,
    series: int = 1,
    seed: int = 0,
    series_uid: str | None = None,
) -> list[str]:
    """
    Write ``count`` CT Image Storage files, Explicit VR Little Endian, 16-bit
    random pixels, into ``folder``; return their paths.

    The instances share one study (``study_uid``, or one made from ``seed``)
    and are dealt round-robin into ``series`` series.  ``study_uid`` and
    ``series_uid`` are written as given, even when not valid UIDs.
    """
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    if study_uid is None:
        study_uid = uid("radx-tests", seed, "study")
    series_uids = [series_uid or uid("radx-tests", seed, "series", s) for s in range(series)]
    frame_bytes = rows * columns * 2
    paths = []
    for index in range(count):
        number = index // series + 1
        which = index % series
        sop_instance_uid = uid("radx-tests", seed, "instance", index)
        ds = Dataset()
        ds.file_meta = _file_meta(CT_IMAGE_STORAGE, sop_instance_uid)
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = sop_instance_uid
        _patient_study(ds, study_uid, series_uids[which], "CT")
        ds.Manufacturer = "radx tests"
        ds.KVP = "120"
        ds.SeriesNumber = which + 1
        ds.InstanceNumber = number
        ds.ImagePositionPatient = [0, 0, number]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.FrameOfReferenceUID = uid("radx-tests", seed, "frame-of-reference")
        ds.PositionReferenceIndicator = ""
        ds.SliceThickness = "1"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = columns
        ds.PixelSpacing = [0.5, 0.5]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.add(DataElement(0x7FE00010, "OW", rng.bytes(frame_bytes)))
        path = os.path.join(os.fspath(folder), f"CT_{which:02d}_{number:05d}.dcm")
        dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def write_large_multiframe(
    path,
    size_bytes: int,
    rows: int = 512,
    columns: int = 512,
    seed: int = 0,
    study_uid: str | None = None,
) -> str:
    """
    Write a Multi-frame Grayscale Word Secondary Capture instance whose
    pixel data is at least ``size_bytes`` long, in bounded memory: the
    header through pydicom, then the (7FE0,0010) OW element header by hand
    and random pixel data in chunks.  Return ``path``.
    """
    frame_bytes = rows * columns * 2
    frames = max(1, math.ceil(size_bytes / frame_bytes))
    length = frames * frame_bytes
    if length >= 0xFFFFFFFF:
        raise ValueError(f"{length} bytes of pixel data do not fit a 32-bit length")
    sop_instance_uid = uid("radx-tests", seed, "multiframe", size_bytes)
    ds = Dataset()
    ds.file_meta = _file_meta(MULTIFRAME_GRAYSCALE_WORD_SC, sop_instance_uid)
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SOPClassUID = MULTIFRAME_GRAYSCALE_WORD_SC
    ds.SOPInstanceUID = sop_instance_uid
    _patient_study(
        ds,
        study_uid or uid("radx-tests", seed, "multiframe-study"),
        uid("radx-tests", seed, "multiframe-series"),
        "OT",
    )
    ds.ConversionType = "WSD"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.FrameTime = "40"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    rng = np.random.default_rng(seed)
    with open(path, "wb") as fp:
        dcmwrite(fp, ds, enforce_file_format=True)
        # PS3.5 7.1.2: explicit VR OW, two reserved bytes, a 32-bit length.
        fp.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, length))
        left = length
        while left:
            size = min(left, _PIXEL_CHUNK)
            fp.write(rng.bytes(size))
            left -= size
    return os.fspath(path)


def instance_uids(path) -> tuple[str, str, str]:
    """(Study, Series, SOP Instance UID) of a file, without reading its pixel data."""
    with warnings.catch_warnings():
        # Test data may hold malformed UIDs on purpose.
        warnings.simplefilter("ignore", UserWarning)
        ds = dcmread(path, stop_before_pixels=True)
    return (
        ds.get("StudyInstanceUID"),
        ds.get("SeriesInstanceUID"),
        ds.SOPInstanceUID,
    )


def data_set_bytes(path) -> bytes:
    """The bytes of a PS3.10 file after its file meta: the data set as encoded."""
    with open(path, "rb") as fp:
        fp.seek(data_set_offset(fp))
        return fp.read()


def data_set_as_sent(path) -> bytes:
    """
    The data set of a small PS3.10 file as a sender puts it on the wire: an
    odd one (pydicom's deflated image_dfl.dcm) with one trailing NULL byte
    (PS3.5 A.5).
    """
    data = data_set_bytes(path)
    return data + b"\x00" * (len(data) % 2)


def data_set_sha256(path) -> str:
    """The SHA-256 of the data set bytes of a PS3.10 file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        fp.seek(data_set_offset(fp))
        while chunk := fp.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def same_data_set(received, source) -> bool:
    """Whether two PS3.10 files hold byte-identical data sets (whatever their file meta)."""
    sizes = []
    for path in (received, source):
        with open(path, "rb") as fp:
            sizes.append(os.path.getsize(path) - data_set_offset(fp))
    return sizes[0] == sizes[1] and data_set_sha256(received) == data_set_sha256(source)


@dataclass(frozen=True)
class TestFile:
    """One of pydicom's bundled files, and the transfer syntax it is encoded in."""

    name: str
    path: str
    transfer_syntax_uid: str
    sop_class_uid: str
    sop_instance_uid: str


# Transfer syntax case -> (pydicom's file, its transfer syntax).
_PYDICOM_FILES = {
    "implicit_vr_little_endian": ("MR_small_implicit.dcm", "1.2.840.10008.1.2"),
    "explicit_vr_little_endian": ("CT_small.dcm", "1.2.840.10008.1.2.1"),
    "explicit_vr_big_endian": ("MR_small_bigendian.dcm", "1.2.840.10008.1.2.2"),
    "deflated_explicit_vr_little_endian": ("image_dfl.dcm", "1.2.840.10008.1.2.1.99"),
    "jpeg_baseline": ("SC_rgb_jpeg_dcmtk.dcm", "1.2.840.10008.1.2.4.50"),
    "jpeg_extended": ("JPEG-lossy.dcm", "1.2.840.10008.1.2.4.51"),
    # JPEG-LL.dcm is not bundled with pydicom (it is downloaded on demand).
    "jpeg_lossless_sv1": ("SC_rgb_jpeg_gdcm.dcm", "1.2.840.10008.1.2.4.70"),
    "jpeg_ls_lossless": ("MR_small_jpeg_ls_lossless.dcm", "1.2.840.10008.1.2.4.80"),
    "jpeg_ls_near_lossless": ("JPEGLSNearLossless_16.dcm", "1.2.840.10008.1.2.4.81"),
    "jpeg_2000_lossless": ("MR_small_jp2klossless.dcm", "1.2.840.10008.1.2.4.90"),
    "jpeg_2000": ("JPEG2000.dcm", "1.2.840.10008.1.2.4.91"),
    "rle_lossless": ("MR_small_RLE.dcm", "1.2.840.10008.1.2.5"),
}


def pydicom_test_files() -> dict[str, TestFile]:
    """
    One of pydicom's bundled test files per transfer syntax, checked to be
    present (never downloaded) and really encoded in that transfer syntax.

    Several of them share a SOP Instance UID: send each to its own output
    directory.
    """
    files = {}
    for case, (name, transfer_syntax_uid) in _PYDICOM_FILES.items():
        path = get_testdata_file(name, download=False)
        if path is None:
            raise AssertionError(f"pydicom's test file {name} is not installed")
        ds = dcmread(path, stop_before_pixels=True)
        found = ds.file_meta.TransferSyntaxUID
        if found != transfer_syntax_uid:
            raise AssertionError(f"{name} is {found}, not {transfer_syntax_uid}")
        files[case] = TestFile(name, path, transfer_syntax_uid, ds.SOPClassUID, ds.SOPInstanceUID)
    return files


def write_dcmtk_wire_form(source, dest, dcmconv: str) -> str:
    """
    Copy ``source`` to ``dest`` in the form DCMTK's storescu puts its data
    set on the wire: storescu decodes a file and encodes it again, without
    group lengths (-g), with explicit sequence and item lengths (+e) and no
    trailing padding (-p); a deflated data set is padded to an even length
    with one zero byte.  Sending the copy, the data set on the wire is the
    copy's, bit for bit.  Return ``dest``.
    """
    done = subprocess.run(
        [dcmconv, "-g", "+e", "-p", os.fspath(source), os.fspath(dest)],
        capture_output=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        timeout=60,
    )
    if done.returncode != 0:
        raise AssertionError(f"dcmconv {source}: {done.stderr.decode(errors='replace')}")
    transfer_syntax = dcmread(dest, stop_before_pixels=True).file_meta.TransferSyntaxUID
    if transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        with open(dest, "rb+") as fp:
            length = os.path.getsize(dest) - data_set_offset(fp)
            if length % 2:
                fp.seek(0, os.SEEK_END)
                fp.write(b"\0")
    return os.fspath(dest)
