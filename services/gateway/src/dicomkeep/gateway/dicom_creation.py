"""Build new DICOM instances from JSON: `POST /tools/create-dicom` (Orthanc's CreateDicom).

- `Tags`: keyword or `gggg,eeee` -> string (or array of objects for a sequence);
- `Content`: a data URI: an image (PNG, JPEG... anything Pillow reads) becomes
  the pixel data of a secondary capture; `application/pdf` becomes an
  Encapsulated PDF;
- `Parent`: a patient, study or series whose main DICOM tags the new instance
  inherits (and whose identifiers it joins).
Identifiers and the SOP class not given are generated, as Orthanc does.
"""

from __future__ import annotations

import io
import uuid
from typing import Any

import numpy as np
from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.modification import decode_data_uri, parse_path, set_json_value
from dicomkeep.common.timestamps import now_stamp
from PIL import Image, UnidentifiedImageError
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"


def _embed_pdf(ds: Dataset, content: bytes) -> None:
    """Mirror ParsedDicomFile::EmbedPdf: an Encapsulated PDF, even length."""
    if not content.startswith(b"%PDF"):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Not a PDF file")
    if len(content) % 2:
        content += b"\x00"
    ds.SOPClassUID = ENCAPSULATED_PDF
    ds.Modality = ds.get("Modality") or "OT"
    ds.ConversionType = "WSD"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = content


def _embed_image(ds: Dataset, content: bytes) -> None:
    """Mirror ParsedDicomFile::EmbedImage: 8/16-bit grayscale or RGB, alpha dropped."""
    try:
        image = Image.open(io.BytesIO(content))
        image.load()
    except (UnidentifiedImageError, OSError) as error:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Cannot decode the image") from error
    if image.mode in ("I;16", "I;16B", "I"):
        pixels = np.asarray(image).astype(np.uint16)
        bits, samples, photometric = 16, 1, "MONOCHROME2"
    elif image.mode in ("L", "1"):
        pixels = np.asarray(image.convert("L"), dtype=np.uint8)
        bits, samples, photometric = 8, 1, "MONOCHROME2"
    else:
        pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
        bits, samples, photometric = 8, 3, "RGB"
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    data = pixels.astype("<u2" if bits == 16 else np.uint8).tobytes()
    if len(data) % 2:
        data += b"\x00"
    ds.PixelData = data
    ds["PixelData"].VR = "OW" if bits == 16 else "OB"


def _embed(ds: Dataset, uri: Any) -> None:
    if not isinstance(uri, str):
        raise OrthancError(ErrorCode.CREATE_DICOM_USE_DATA_URI_SCHEME)
    decoded = decode_data_uri(uri)
    if decoded is None:
        raise OrthancError(ErrorCode.CREATE_DICOM_USE_DATA_URI_SCHEME)
    mime, content = decoded
    if mime == "application/pdf":
        _embed_pdf(ds, content)
    elif mime.startswith("image/"):
        _embed_image(ds, content)
    else:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"Unsupported MIME type: {mime}")


def build_instance(
    tags: dict[str, Any],
    content: Any,
    inherited: dict[str, str],
    *,
    private_creator: str = "",
    force: bool = False,
) -> Dataset:
    """Return a new instance with its file meta (Explicit VR Little Endian).

    `inherited` holds the parent's main tags (keyword -> value). Raises Orthanc's
    CreateDicom errors: a tag overriding an inherited one (2020), *Unknown DICOM
    tag*, a non-string value, `PixelData` given as a tag (2021).
    """
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    for keyword, value in inherited.items():
        setattr(ds, keyword, value)
    for name, value in tags.items():
        path = parse_path(name)
        if path.prefix:
            raise OrthancError(ErrorCode.BAD_REQUEST, f"Not a top-level tag: {name}")
        if path.tag == 0x7FE00010:
            raise OrthancError(ErrorCode.CREATE_DICOM_USE_CONTENT)
        if path.tag in ds and path.tag != 0x00080005 and not force:
            raise OrthancError(ErrorCode.CREATE_DICOM_OVERRIDE_TAG)
        if not isinstance(value, (str, list)):
            raise OrthancError(ErrorCode.CREATE_DICOM_NOT_STRING)
        set_json_value(ds, path.tag, value, private_creator)
    if content is not None:
        _embed(ds, content)
    stamp = now_stamp()
    date, time = stamp[:8], stamp[9:]
    defaults = {
        "SOPClassUID": SECONDARY_CAPTURE,
        "PatientID": str(uuid.uuid4()),
        "StudyInstanceUID": generate_uid(prefix=None),
        "SeriesInstanceUID": generate_uid(prefix=None),
        "SOPInstanceUID": generate_uid(prefix=None),
        "SeriesDate": date,
        "SeriesTime": time,
        "InstanceCreationDate": date,
        "InstanceCreationTime": time,
    }
    for keyword, value in defaults.items():
        if keyword not in ds:
            setattr(ds, keyword, value)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds
