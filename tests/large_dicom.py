"""Large DICOM files written straight to disk, never built in memory (issue 15 tests).

The header is a small pydicom dataset (explicit VR little endian, 16-bit
MONOCHROME2 multi-frame); the Pixel Data element is appended by hand: its
header with the explicit length, then the pixel bytes, streamed in 1 MiB pieces.
The file is a valid instance: Rows x Columns x 2 bytes x NumberOfFrames equals
the pixel data's length.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7.3"  # Multi-frame Grayscale Word SC
ROWS = COLUMNS = 512
FRAME_BYTES = ROWS * COLUMNS * 2
PIECE = 1024 * 1024


@dataclass(frozen=True)
class LargeDicom:
    """A written file: its path, size, MD5 and UIDs."""

    path: Path
    size: int
    md5: str
    sop_uid: str


def write_large_dicom(path: Path, frames: int, *, compressible: bool = False) -> LargeDicom:
    """Write an instance of `frames` 512x512 16-bit frames (512 KiB each) to `path`.

    The pixels repeat one random 1 MiB block (zlib finds no repeat in its 32 KiB
    window, so they do not compress), or with `compressible` a ramp that zlib
    squeezes ~100 times. Memory stays ~2 MiB whatever `frames` is.
    """
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = SECONDARY_CAPTURE
    dataset.SOPInstanceUID = sop_uid
    dataset.PatientID = "LARGE-UPLOAD"
    dataset.PatientName = "Large^Upload"
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.Modality = "OT"
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.NumberOfFrames = frames
    dataset.Rows = ROWS
    dataset.Columns = COLUMNS
    dataset.BitsAllocated = 16
    dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 0
    dataset.save_as(path, enforce_file_format=True)
    length = frames * FRAME_BYTES
    block = os.urandom(PIECE) if not compressible else bytes(range(256)) * (PIECE // 256)
    with open(path, "ab") as out:
        # (7FE0,0010) OW, 2 reserved bytes, 4-byte length (explicit VR little endian).
        out.write(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, length))
        left = length
        while left:
            piece = block[: min(left, PIECE)]
            out.write(piece)
            left -= len(piece)
    digest = hashlib.md5()
    with open(path, "rb") as written:
        while piece := written.read(PIECE):
            digest.update(piece)
    return LargeDicom(path, path.stat().st_size, digest.hexdigest(), sop_uid)
