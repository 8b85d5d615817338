"""Image routes: previews, rendered frames, raw frames, numpy arrays, shared tags,
ordered slices (Orthanc 1.12; rendering rules in gateway/imaging.py)."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from dicomkeep.common.dicom.orthanc_json import tags_json
from dicomkeep.common.errors import ErrorCode, NoAnswer, OrthancError
from dicomkeep.common.ids import Level, resource_path
from dicomkeep.common.index import Index
from dicomkeep.common.resource_modification import read_instance
from dicomkeep.common.transcoding import read_dataset
from dicomkeep.gateway import imaging
from dicomkeep.gateway.args import bool_arg, tag_format
from dicomkeep.gateway.deps import BlobsDep, IndexDep
from dicomkeep.gateway.responses import OrthancJSONResponse
from dicomkeep.gateway.views import integer_or_none
from fastapi import APIRouter, Request
from pydicom.dataset import Dataset
from starlette.responses import Response

router = APIRouter()
Handler = Callable[..., Awaitable[Response]]


def _image_mime(request: Request) -> str:
    """PNG unless Accept prefers JPEG; 406 when Accept allows neither (Orthanc)."""
    accept = request.headers.get("accept", "")
    if not accept.strip():
        return imaging.PNG
    for part in accept.split(","):
        mime = part.split(";")[0].strip().lower()
        if mime == imaging.JPEG:
            return imaging.JPEG
        if mime in (imaging.PNG, "image/*", "*/*"):
            return imaging.PNG
    raise OrthancError(ErrorCode.NOT_ACCEPTABLE, f"No image format acceptable in: {accept}")


def _number(request: Request, name: str, *, integer: bool = False) -> float | None:
    text = request.query_params.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text) if integer else float(text)
    except ValueError as error:
        raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE, f'Argument "{name}" must be a number') from error


def _quality(request: Request) -> int:
    quality = _number(request, "quality", integer=True)
    if quality is None:
        return 90
    if not 1 <= quality <= 100:
        raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, "JPEG quality must be between 1 and 100")
    return int(quality)


async def _dataset(index: Index, blobs: Any, public_id: str) -> Dataset:
    data, _ = await read_instance(index, blobs, public_id)
    return await asyncio.to_thread(read_dataset, data)


def _frame_index(ds: Dataset, frame: str) -> int:
    """Parse a frame number; a number past the last frame gives Orthanc's empty 404."""
    if not frame.isdigit() or int(frame) >= imaging.frame_count(ds):
        raise NoAnswer()
    return int(frame)


def _render(kind: str, request: Request, ds: Dataset, index: int) -> Response:
    try:
        frame = imaging.decode_frame(ds, index)
    except OrthancError as error:
        # Orthanc 1.12: `returnUnsupportedImage` answers a placeholder instead of 415.
        if error.code is ErrorCode.UNSUPPORTED_MEDIA_TYPE and bool_arg(request, "returnUnsupportedImage"):
            return Response(imaging.unsupported_image(), media_type=imaging.PNG)
        raise
    if kind in ("image-uint8", "image-uint16", "image-int16"):
        pixels = imaging.integer_pixels(frame, kind.removeprefix("image-"))
        return Response(imaging.encode(pixels, imaging.PNG), media_type=imaging.PNG)
    mime = _image_mime(request)
    if kind == "preview":
        pixels = imaging.preview_pixels(frame)
    else:
        pixels = imaging.rendered_pixels(
            frame, _number(request, "window-center"), _number(request, "window-width")
        )
        width = _number(request, "width", integer=True)
        height = _number(request, "height", integer=True)
        if (width is not None and width <= 0) or (height is not None and height <= 0):
            raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, "Width and height must be positive")
        pixels = imaging.resized(
            pixels, int(width or 0), int(height or 0), bool_arg(request, "smooth")
        )
    return Response(imaging.encode(pixels, mime, _quality(request)), media_type=mime)


def _frame_route(kind: str) -> Handler:
    async def frame_image(
        public_id: str, frame: str, request: Request, index: IndexDep, blobs: BlobsDep
    ) -> Response:
        """Answer one frame as an image, raw bytes or a numpy array."""
        ds = await _dataset(index, blobs, public_id)
        number = _frame_index(ds, frame)
        return await asyncio.to_thread(_answer, kind, request, ds, number)

    return frame_image


def _instance_route(kind: str) -> Handler:
    async def instance_image(
        public_id: str, request: Request, index: IndexDep, blobs: BlobsDep
    ) -> Response:
        """Answer the first frame (`numpy`: every frame) of an instance."""
        ds = await _dataset(index, blobs, public_id)
        return await asyncio.to_thread(_answer, kind, request, ds, None)

    return instance_image


def _answer(kind: str, request: Request, ds: Dataset, number: int | None) -> Response:
    if kind in ("raw", "raw.gz"):
        content, mime = imaging.raw_frame(ds, number or 0)
        if kind == "raw.gz":
            return Response(gzip.compress(content), media_type="application/gzip")
        return Response(content, media_type=mime)
    if kind == "numpy":
        rescale = bool_arg(request, "rescale")
        indices = [number] if number is not None else range(imaging.frame_count(ds))
        frames = [imaging.decode_frame(ds, item) for item in indices]
        data = imaging.numpy_bytes(frames, rescale=rescale, single=number is not None)
        return Response(data, media_type="application/octet-stream")
    return _render(kind, request, ds, number or 0)


def _shared_tags_route(level: Level) -> Handler:
    async def shared_tags(
        public_id: str, request: Request, index: IndexDep, blobs: BlobsDep
    ) -> Response:
        """Answer the tags every instance of the resource has with the same value."""
        fmt = tag_format(request, "full")
        resource = await index.get_resource(level, public_id)
        if resource is None:
            raise NoAnswer()
        instances = await index.descendants(level, public_id, Level.INSTANCE)
        shared: dict[str, Any] | None = None
        for instance_id in instances:
            data, _ = await read_instance(index, blobs, instance_id)
            tags = await asyncio.to_thread(tags_json, data, fmt)
            if shared is None:
                shared = tags
            else:
                shared = {key: value for key, value in shared.items() if tags.get(key) == value}
        return OrthancJSONResponse(shared or {})

    return shared_tags


def _vector(text: str | None, size: int) -> list[float] | None:
    if not text:
        return None
    try:
        values = [float(part) for part in text.split("\\")]
    except ValueError:
        return None
    return values if len(values) == size else None


@router.get("/series/{public_id}/ordered-slices")
async def ordered_slices(public_id: str, index: IndexDep) -> Response:
    """Answer the instances and frames of a series in 3D order (`Volume`) when every
    instance has a position on a common normal, else by index (`Sequence`)."""
    series = await index.get_resource(Level.SERIES, public_id)
    if series is None:
        raise NoAnswer()
    items: list[tuple[str, dict[str, str], int]] = []
    for instance_id in series.children:
        resource = await index.get_resource(Level.INSTANCE, instance_id)
        if resource is not None:
            frames = integer_or_none(resource.main_tags.get("NumberOfFrames")) or 1
            items.append((instance_id, resource.main_tags, max(frames, 1)))
    positions = [_vector(tags.get("ImagePositionPatient"), 3) for _, tags, _ in items]
    orientation = _vector(items[0][1].get("ImageOrientationPatient"), 6) if items else None
    is_volume = len(items) > 1 and orientation is not None and all(p is not None for p in positions)
    if is_volume:
        assert orientation is not None
        normal = np.cross(orientation[:3], orientation[3:])
        keys = [float(np.dot(normal, position)) for position in positions if position is not None]
        is_volume = len(set(keys)) == len(keys)
    if is_volume:
        order = sorted(range(len(items)), key=lambda i: keys[i])
    else:
        order = sorted(
            range(len(items)),
            key=lambda i: (integer_or_none(items[i][1].get("InstanceNumber")) or 0, items[i][0]),
        )
    answer: dict[str, Any] = {"Dicom": [], "Slices": [], "SlicesShort": []}
    for position in order:
        instance_id, _, frames = items[position]
        path = resource_path(Level.INSTANCE, instance_id)
        answer["Dicom"].append(f"{path}/file")
        answer["Slices"].extend(f"{path}/frames/{frame}" for frame in range(frames))
        answer["SlicesShort"].append([instance_id, 0, frames])
    answer["Type"] = "Volume" if is_volume else "Sequence"
    return OrthancJSONResponse(answer)


def _register() -> None:
    for kind in ("preview", "rendered", "image-uint8", "image-uint16", "image-int16", "numpy"):
        router.add_api_route(f"/instances/{{public_id}}/{kind}", _instance_route(kind), methods=["GET"])
    for kind in (
        "preview", "rendered", "image-uint8", "image-uint16", "image-int16", "raw", "raw.gz", "numpy",
    ):  # fmt: skip
        router.add_api_route(
            f"/instances/{{public_id}}/frames/{{frame}}/{kind}", _frame_route(kind), methods=["GET"]
        )
    for level in (Level.PATIENT, Level.STUDY, Level.SERIES):
        router.add_api_route(
            f"/{level.plural}/{{public_id}}/shared-tags", _shared_tags_route(level), methods=["GET"]
        )


_register()
