"""Write datasets to Part-10 bytes, and transcode them to the syntaxes pydicom can encode.

Orthanc transcodes with DCMTK (and GDCM); DicomKeep uses pydicom's pixel data
handlers and the pylibjpeg plugins it documents. Decoding covers what those
plugins decode (JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, RLE);
encoding covers the uncompressed little-endian syntaxes, deflate, RLE Lossless
and JPEG 2000. Any other target is refused with 400 *Bad request* naming the
syntax, before anything is stored.
"""

from __future__ import annotations

import io

from dicomkeep.common.errors import ErrorCode, OrthancError
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_encoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

#: Targets written without pixel encoding (the pixel data is decompressed first).
UNCOMPRESSED_TARGETS = frozenset(
    {ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian}
)


def read_dataset(data: bytes) -> Dataset:
    """Parse Part-10 bytes; 400 *Bad file format* if they are not DICOM."""
    try:
        return dcmread(io.BytesIO(data), force=False)
    except (InvalidDicomError, EOFError, ValueError, OSError) as error:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Cannot parse the DICOM file") from error


def dataset_bytes(ds: Dataset) -> bytes:
    """Return a dataset as a Part-10 file in the transfer syntax of its file meta."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _from_big_endian(ds: Dataset, target: UID) -> Dataset:
    """Return a little-endian copy of a big-endian dataset (pydicom writes no
    endianness conversion itself): values decoded, pixel data byte-swapped."""
    pixels = ds.pixel_array if "PixelData" in ds else None
    for _ in ds:  # decode every raw element while the big-endian encoding is known
        pass
    copy = Dataset(ds)
    copy.file_meta = ds.file_meta
    if pixels is not None:
        copy.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    copy.file_meta.TransferSyntaxUID = target
    return copy


def _encoder_available(target: UID) -> bool:
    try:
        return bool(get_encoder(target).is_available)
    except (NotImplementedError, KeyError):
        return False


def check_target(target: str) -> UID:
    """Return the target syntax as a UID; 400 *Bad request* if DicomKeep cannot write it."""
    uid = UID(target.strip())
    if uid in UNCOMPRESSED_TARGETS or (uid.is_transfer_syntax and _encoder_available(uid)):
        return uid
    known = uid.name if uid.is_transfer_syntax else "an unknown transfer syntax"
    raise OrthancError(
        ErrorCode.BAD_REQUEST,
        f"Cannot transcode to {uid} ({known}): DicomKeep writes "
        "1.2.840.10008.1.2, 1.2.840.10008.1.2.1, 1.2.840.10008.1.2.1.99, "
        "1.2.840.10008.1.2.5 (RLE) and 1.2.840.10008.1.2.4.90/91 (JPEG 2000)",
    )


def transcode(ds: Dataset, target: UID) -> Dataset:
    """Return the dataset in another transfer syntax (the same object, changed in
    place, except from big endian, which gives a copy).

    Raises OrthancError *Bad request* for a target that cannot be written and
    *Bad file format* when the source pixel data cannot be decoded (no plugin
    for its syntax, or corrupt data).
    """
    target = check_target(target)
    source = UID(str(ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian)))
    if source == target:
        return ds
    has_pixels = "PixelData" in ds
    try:
        if source == ExplicitVRBigEndian:
            ds = _from_big_endian(ds, ExplicitVRLittleEndian)
            source = ExplicitVRLittleEndian
            if source == target:
                return ds
        if has_pixels and source.is_compressed:
            ds.decompress()
        if target in UNCOMPRESSED_TARGETS:
            ds.file_meta.TransferSyntaxUID = target
        elif has_pixels:
            ds.compress(target)
        else:
            ds.file_meta.TransferSyntaxUID = target
        return ds
    except (RuntimeError, NotImplementedError, ValueError, AttributeError) as error:
        raise OrthancError(
            ErrorCode.BAD_FILE_FORMAT, f"Cannot transcode from {source} to {target}: {error}"
        ) from error
