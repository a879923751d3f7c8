"""The benchmark corpus: deterministic DICOM files, made once and cached.

Everything comes from fixed seeds, so two builds are byte-identical.
Pixel data is random: nothing compresses or repeats on the wire.  Every
file is written in the form DCMTK's storescu puts a data set on the wire
(no group lengths outside the meta, explicit lengths, no trailing
padding), so the data set a receiver stores must equal the file's data
set, byte for byte.

Layout, under the corpus folder::

    ct/CT_00001.dcm ... CT_00500.dcm     512x512 16-bit CT, ~0.5 MB each
    small/SC_00001.dcm ... SC_02000.dcm  32x32 8-bit Secondary Capture, ~1.7 KB
    big200/big200.dcm                    multi-frame, 200 MiB of pixel data
    big1g/big1g.dcm                      multi-frame, 1 GiB of pixel data
    manifest.json                        every file's SOP Instance UID, size
                                         and data set SHA-256
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import time

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from radx.storage.part10 import parse_file_meta

# Bump when anything below changes what is written: the cache is rebuilt.
CORPUS_VERSION = 1

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
MULTIFRAME_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"

CT_COUNT = 500
SMALL_COUNT = 2000
BIG200_BYTES = 200 << 20
BIG1G_BYTES = 1 << 30

CHUNK = 8 << 20


def make_uid(*parts) -> str:
    """A valid, deterministic 2.25.<decimal> UID from ``parts``."""
    return generate_uid(prefix=None, entropy_srcs=["radx-bench", *map(repr, parts)])


# --- reading: the data set after the file meta -------------------------------

# The most of a file read for its meta group (PS3.10 7.1); it is far smaller.
_META_READ = 132 + (1 << 16)


def read_meta(fp) -> tuple[int, dict]:
    """A PS3.10 file's (data set offset, {meta element number: raw value}): radx's own parser."""
    return parse_file_meta(fp.read(_META_READ))


def _uid(value: bytes | None) -> str | None:
    return None if value is None else value.rstrip(b"\x00 ").decode("ascii", "replace")


def describe(path) -> dict:
    """SOP Instance UID (from the meta), data set size and SHA-256 of a PS3.10 file."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as fp:
        offset, values = read_meta(fp)
        fp.seek(offset)
        size = 0
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        while True:
            n = fp.readinto(buffer)
            if not n:
                break
            digest.update(view[:n])
            size += n
    return {
        "uid": _uid(values.get(0x0003)),
        "transfer_syntax": _uid(values.get(0x0010)),
        "data_set_bytes": size,
        "sha256": digest.hexdigest(),
    }


# --- writing --------------------------------------------------------------------


def _meta(sop_class_uid: str, sop_instance_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = make_uid("implementation")
    meta.ImplementationVersionName = "RADX_BENCH"
    return meta


def _base(sop_class_uid: str, sop_instance_uid: str, study: str, series: str, modality: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = _meta(sop_class_uid, sop_instance_uid)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyDate = "20240102"
    ds.StudyTime = "120000"
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.ReferringPhysicianName = ""
    ds.PatientName = "Bench^Radx"
    ds.PatientID = "RADX-BENCH"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    return ds


def _image(ds: Dataset, rows: int, columns: int, bits: int) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0


def write_ct(folder: str, count: int) -> None:
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(1)
    study = make_uid("ct", "study")
    series = make_uid("ct", "series")
    for index in range(1, count + 1):
        uid = make_uid("ct", "instance", index)
        ds = _base(CT_IMAGE_STORAGE, uid, study, series, "CT")
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.Manufacturer = "radx bench"
        ds.KVP = "120"
        ds.InstanceNumber = index
        ds.ImagePositionPatient = [0, 0, index]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.FrameOfReferenceUID = make_uid("ct", "frame-of-reference")
        ds.PositionReferenceIndicator = ""
        ds.SliceThickness = "1"
        ds.PixelSpacing = [0.5, 0.5]
        _image(ds, 512, 512, 16)
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.add(DataElement(0x7FE00010, "OW", rng.bytes(512 * 512 * 2)))
        dcmwrite(os.path.join(folder, f"CT_{index:05d}.dcm"), ds, enforce_file_format=True)


def write_small(folder: str, count: int) -> None:
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(2)
    study = make_uid("small", "study")
    series = make_uid("small", "series")
    for index in range(1, count + 1):
        uid = make_uid("small", "instance", index)
        ds = _base(SECONDARY_CAPTURE, uid, study, series, "OT")
        ds.ConversionType = "WSD"
        ds.InstanceNumber = index
        _image(ds, 32, 32, 8)
        ds.add(DataElement(0x7FE00010, "OB", rng.bytes(32 * 32)))
        dcmwrite(os.path.join(folder, f"SC_{index:05d}.dcm"), ds, enforce_file_format=True)


def write_big(path: str, size_bytes: int, seed: int) -> None:
    """A multi-frame object of ``size_bytes`` of pixel data, written in bounded memory."""
    rows = columns = 512
    frame = rows * columns * 2
    frames = -(-size_bytes // frame)
    length = frames * frame
    uid = make_uid("big", size_bytes)
    ds = _base(MULTIFRAME_WORD_SC, uid, make_uid("big", "study"), make_uid("big", "series", size_bytes), "OT")
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ConversionType = "WSD"
    ds.InstanceNumber = 1
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.FrameTime = "40"
    _image(ds, rows, columns, 16)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as fp:
        dcmwrite(fp, ds, enforce_file_format=True)
        # PS3.5 7.1.2: OW, two reserved bytes, a 32-bit length; then the pixels.
        fp.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, length))
        left = length
        while left:
            n = min(left, CHUNK)
            fp.write(rng.bytes(n))
            left -= n


SETS = ("ct", "small", "big200", "big1g")


def build(folder: str, log=print) -> dict:
    """Build the corpus into ``folder`` unless a complete one of this version is there; the manifest."""
    manifest_path = os.path.join(folder, "manifest.json")
    try:
        with open(manifest_path) as fp:
            manifest = json.load(fp)
        if manifest.get("version") == CORPUS_VERSION and _complete(folder, manifest):
            return manifest
    except (OSError, ValueError):
        pass
    log(f"building the corpus in {folder} (once; cached after)")
    started = time.monotonic()
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    write_ct(os.path.join(folder, "ct"), CT_COUNT)
    write_small(os.path.join(folder, "small"), SMALL_COUNT)
    os.makedirs(os.path.join(folder, "big200"))
    write_big(os.path.join(folder, "big200", "big200.dcm"), BIG200_BYTES, seed=3)
    os.makedirs(os.path.join(folder, "big1g"))
    write_big(os.path.join(folder, "big1g", "big1g.dcm"), BIG1G_BYTES, seed=4)
    manifest = {"version": CORPUS_VERSION, "sets": {}}
    for name in SETS:
        entries = []
        for entry in sorted(os.listdir(os.path.join(folder, name))):
            path = os.path.join(folder, name, entry)
            info = describe(path)
            info["file"] = os.path.join(name, entry)
            info["file_bytes"] = os.path.getsize(path)
            entries.append(info)
        manifest["sets"][name] = entries
    with open(manifest_path + ".tmp", "w") as fp:
        json.dump(manifest, fp)
    os.replace(manifest_path + ".tmp", manifest_path)
    log(f"corpus built in {time.monotonic() - started:.1f}s")
    return manifest


def _complete(folder: str, manifest: dict) -> bool:
    for name in SETS:
        entries = manifest["sets"].get(name)
        if not entries:
            return False
        for info in entries:
            path = os.path.join(folder, info["file"])
            try:
                if os.path.getsize(path) != info["file_bytes"]:
                    return False
            except OSError:
                return False
    return True


if __name__ == "__main__":
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    target = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "out", "corpus")
    m = build(target)
    for name in SETS:
        sizes = [i["file_bytes"] for i in m["sets"][name]]
        print(f"{name}: {len(sizes)} files, {sum(sizes) / 1e6:.1f} MB, mean {sum(sizes) / len(sizes):.0f} B")
