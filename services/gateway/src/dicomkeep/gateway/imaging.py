"""Decode DICOM frames and render them as PNG/JPEG, as Orthanc's image routes do.

Decoding is pydicom's, with the plugins it documents (pylibjpeg-libjpeg for
JPEG and JPEG-LS, pylibjpeg-openjpeg for JPEG 2000, pylibjpeg-rle for RLE);
encoding is Pillow's. Orthanc's rules, measured on Debian's Orthanc 1.10.1:
- `/preview`: grayscale stretched from the frame's minimum to maximum onto
  0..255 (rounded); colour frames as they are;
- `/rendered`: grayscale windowed on the rescaled values with the request's
  `window-center`/`window-width`, else the file's first WindowCenter/Width,
  else the whole unsigned range of BitsStored; `floor((v - low) / width * 255)`
  clipped to 0..255; MONOCHROME1 inverted; `width`/`height` resize keeping the
  aspect ratio (`smooth` = bilinear);
- `/image-uint8|uint16|int16`: the stored values clipped to the type;
- frames without pixel data, or in a syntax no plugin decodes, are refused
  with 415 *Unsupported media type* and a message saying why.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from dicomkeep.common.errors import ErrorCode, OrthancError
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragmented_frames
from pydicom.multival import MultiValue
from pydicom.pixels import pixel_array
from pydicom.uid import UID

PNG = "image/png"
JPEG = "image/jpeg"
#: MIME type of a compressed frame's raw bytes, by transfer syntax (Orthanc's /raw).
RAW_MIME = {
    "1.2.840.10008.1.2.4.50": JPEG, "1.2.840.10008.1.2.4.51": JPEG,
    "1.2.840.10008.1.2.4.57": JPEG, "1.2.840.10008.1.2.4.70": JPEG,
    "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.4.91": "image/jp2",
}  # fmt: skip


def unsupported(details: str) -> OrthancError:
    """Return the 415 error of a frame that cannot be turned into an image."""
    return OrthancError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, details)


@dataclass(frozen=True)
class Frame:
    """One decoded frame: stored values (rows, columns[, samples]) and how to read them."""

    pixels: np.ndarray
    is_color: bool
    slope: float
    intercept: float
    bits_stored: int
    window: tuple[float, float] | None
    inverted: bool


def frame_count(ds: Dataset) -> int:
    """Return NumberOfFrames (1 when absent or invalid)."""
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def _first(value: object) -> float | None:
    """Return the first number of a (possibly multi-valued) DS/IS value, None if none."""
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else None
    if value is None or value == "":
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def decode_frame(ds: Dataset, index: int) -> Frame:
    """Decode one frame; 404 *Inexistent item* past the last frame, 415 if undecodable."""
    if "PixelData" not in ds:
        raise unsupported("This instance has no pixel data")
    if index < 0 or index >= frame_count(ds):
        raise OrthancError(ErrorCode.INEXISTENT_ITEM, f"Frame {index} does not exist")
    syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2.1")))
    try:
        pixels = pixel_array(ds, index=index, raw=False)
    except Exception as error:  # noqa: BLE001 - any decoder failure is the same answer
        raise unsupported(f"Cannot decode the pixel data ({syntax.name}): {error}") from error
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    is_color = pixels.ndim == 3
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    return Frame(
        pixels=pixels,
        is_color=is_color,
        slope=_first(ds.get("RescaleSlope")) or 1.0,
        intercept=_first(ds.get("RescaleIntercept")) or 0.0,
        bits_stored=int(ds.get("BitsStored", 8) or 8),
        window=(center, width) if center is not None and width else None,
        inverted=photometric == "MONOCHROME1",
    )


def preview_pixels(frame: Frame) -> np.ndarray:
    """Return 8-bit pixels stretched from minimum to maximum (colour unchanged)."""
    if frame.is_color:
        return np.clip(frame.pixels, 0, 255).astype(np.uint8)
    values = frame.pixels.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = np.zeros_like(values) if high <= low else (values - low) / (high - low) * 255.0
    result = np.round(scaled)
    return (255 - result if frame.inverted else result).astype(np.uint8)


def rendered_pixels(
    frame: Frame, center: float | None = None, width: float | None = None
) -> np.ndarray:
    """Return 8-bit pixels windowed on the rescaled values (colour unchanged)."""
    if frame.is_color:
        return np.clip(frame.pixels, 0, 255).astype(np.uint8)
    if center is None or width is None:
        if frame.window is not None:
            center, width = frame.window
        else:
            full = float(2**frame.bits_stored)
            center, width = full / 2, full
    width = max(width, 1.0)
    values = frame.pixels.astype(np.float64) * frame.slope + frame.intercept
    result = np.clip(np.floor((values - (center - width / 2)) / width * 255.0), 0, 255)
    return (255 - result if frame.inverted else result).astype(np.uint8)


def integer_pixels(frame: Frame, dtype: str) -> np.ndarray:
    """Return the stored grayscale values clipped to uint8, uint16 or int16; 415 for colour."""
    if frame.is_color:
        raise unsupported("A colour image cannot be converted to " + dtype)
    info = np.iinfo(dtype)
    return np.clip(frame.pixels.astype(np.int64), info.min, info.max).astype(dtype)


def resized(pixels: np.ndarray, width: int | None, height: int | None, smooth: bool) -> np.ndarray:
    """Resize keeping the aspect ratio to fit `width` x `height` (either may be absent)."""
    if not width and not height:
        return pixels
    rows, columns = pixels.shape[0], pixels.shape[1]
    ratio = min(
        (width / columns) if width else float("inf"), (height / rows) if height else float("inf")
    )
    size = (max(1, round(columns * ratio)), max(1, round(rows * ratio)))
    image = Image.fromarray(pixels)
    method = Image.Resampling.BILINEAR if smooth else Image.Resampling.NEAREST
    return np.asarray(image.resize(size, method))


def encode(pixels: np.ndarray, mime: str, quality: int = 90) -> bytes:
    """Encode 8-bit (or 16-bit grayscale, PNG only) pixels as PNG or JPEG."""
    buffer = io.BytesIO()
    if pixels.dtype == np.uint16 or pixels.dtype == np.int16:
        # int16 keeps its two's complement bits: PNG has no signed samples.
        unsigned = pixels.astype("<i2").view("<u2") if pixels.dtype == np.int16 else pixels.astype("<u2")
        image = Image.fromarray(unsigned)
    else:
        image = Image.fromarray(pixels)
    if mime == JPEG:
        image.save(buffer, format="JPEG", quality=quality)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def unsupported_image() -> bytes:
    """Return the placeholder PNG answered for `returnUnsupportedImage` (a grey square)."""
    return encode(np.full((64, 64), 128, dtype=np.uint8), PNG)


def raw_frame(ds: Dataset, index: int) -> tuple[bytes, str]:
    """Return one frame's stored bytes and MIME type (compressed frames as encoded)."""
    if "PixelData" not in ds:
        raise unsupported("This instance has no pixel data")
    count = frame_count(ds)
    if index < 0 or index >= count:
        raise OrthancError(ErrorCode.INEXISTENT_ITEM, f"Frame {index} does not exist")
    syntax = str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2.1"))
    data = bytes(ds.PixelData)
    if UID(syntax).is_compressed:
        for position, fragments in enumerate(generate_fragmented_frames(data, number_of_frames=count)):
            if position == index:
                return b"".join(fragments), RAW_MIME.get(syntax, "application/octet-stream")
        raise OrthancError(ErrorCode.INEXISTENT_ITEM, f"Frame {index} does not exist")
    size = len(data) // count
    return data[index * size : (index + 1) * size], "application/octet-stream"


def numpy_bytes(frames: list[Frame], *, rescale: bool, single: bool) -> bytes:
    """Return a `.npy` of one frame (rows, columns, samples) or of all (frames, ...)."""
    arrays = []
    for frame in frames:
        pixels = frame.pixels if frame.is_color else frame.pixels[..., np.newaxis]
        if rescale and not frame.is_color:
            pixels = (pixels * frame.slope + frame.intercept).astype(np.float32)
        arrays.append(pixels)
    stacked = arrays[0] if single else np.stack(arrays)
    buffer = io.BytesIO()
    np.save(buffer, stacked)
    return buffer.getvalue()
