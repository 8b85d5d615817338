"""Instance upload and content routes (ORTHANC_API.md §2.5, §2.6)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import mmap
import posixpath
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from dicomkeep.common.dicom.orthanc_json import content_value, header_json
from dicomkeep.common.dicom.receiving import Origin, Received, Receiver
from dicomkeep.common.errors import ErrorCode, OrthancError, unknown_resource
from dicomkeep.common.ids import Level, resource_path
from dicomkeep.common.index import Index
from dicomkeep.common.logs import patient_text
from dicomkeep.common.orthanc import FileContentType
from dicomkeep.common.storage import StorageAccessor, find_attachment, read_instance_file
from dicomkeep.gateway.args import bool_arg, tag_format
from dicomkeep.gateway.attachment_answers import stream_answer
from dicomkeep.gateway.deps import IndexDep, ReceiverDep, SettingsDep, StorageDep, UsernameDep
from dicomkeep.gateway.responses import OrthancJSONResponse, empty
from dicomkeep.gateway.tag_source import dicom_for_tags, render_tags
from dicomkeep.gateway.uploads import PIECE_BYTES, SPOOL_BYTES, receive_upload
from dicomkeep.gateway.views import integer_or_none
from fastapi import APIRouter, Request
from starlette.responses import Response

log = logging.getLogger(__name__)
router = APIRouter()

#: Local file header and empty-archive signatures (Orthanc's ZipReader::IsZipMemoryBuffer).
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
#: SOP class of a DICOMDIR (Media Storage Directory Storage): never stored from a ZIP.
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
#: What a broken or unsupported ZIP member raises while it is read (zipfile raises
#: NotImplementedError for a compression method it lacks).
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError)


def store_answer(received: Received) -> dict[str, str]:
    """Return the §2.5 answer of one stored instance."""
    patient_id, study_id, series_id, _ = received.parsed.ids
    instance_id = received.reply.instance_id
    return {
        "ID": instance_id,
        "ParentPatient": patient_id,
        "ParentSeries": series_id,
        "ParentStudy": study_id,
        "Path": resource_path(Level.INSTANCE, instance_id),
        "Status": received.reply.status.value,
    }


def _file_meta(data: bytes) -> dict[str, Any] | None:
    """Return the file meta group of a DICOM file, None if the bytes are not DICOM."""
    try:
        return header_json(data)
    except OrthancError:
        return None


def _skipped_member(data: bytes, error: OrthancError) -> bool:
    """Tell whether a ZIP member that failed to store is one Orthanc skips silently:
    not a DICOM file at all, or a DICOMDIR (no study/series/instance UIDs)."""
    meta = _file_meta(data)
    if meta is None:
        return error.code is ErrorCode.BAD_FILE_FORMAT
    node = meta.get("0002,0002")
    return isinstance(node, dict) and node.get("Value") == DICOMDIR_SOP_CLASS


class _SkippedMember(Exception):
    """A ZIP member that Orthanc skips silently (not DICOM, or a DICOMDIR)."""


async def _store_zip(source: BinaryIO, receiver: Receiver, origin: Origin) -> list[dict[str, str]]:
    """Store every DICOM member of a ZIP; non-DICOM members and DICOMDIRs are skipped.

    Mirrors Orthanc 1.8.2+: a member that is not a DICOM file is logged and
    skipped; any other error (missing UID, storage full) fails the request.
    Members are read one at a time; one larger than SPOOL_BYTES is extracted to
    an anonymous temporary file rather than into memory.
    """
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, ValueError) as error:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Invalid ZIP archive") from error
    answers: list[dict[str, str]] = []
    with archive:
        for info in archive.infolist():
            if info.is_dir() or posixpath.basename(info.filename).upper() == "DICOMDIR":
                continue
            try:
                received = await _store_member(archive, info, receiver, origin)
            except _SkippedMember:
                log.warning(
                    "skipping ZIP member %s: not a DICOM instance", patient_text(info.filename)
                )
                continue
            if received is not None:
                answers.append(store_answer(received))
    return answers


async def _store_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, receiver: Receiver, origin: Origin
) -> Received | None:
    """Store one ZIP member (None when it is empty); raise _SkippedMember to skip it."""
    if info.file_size > SPOOL_BYTES:
        return await _store_large_member(archive, info, receiver, origin)
    try:
        data = await asyncio.to_thread(archive.read, info)
    except _ZIP_ERRORS as error:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Invalid ZIP archive") from error
    if not data:
        return None
    try:
        return await receiver.receive(data, origin)
    except OrthancError as error:
        if _skipped_member(data, error):
            raise _SkippedMember() from error
        raise


async def _store_large_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, receiver: Receiver, origin: Origin
) -> Received | None:
    """Extract a large member to an anonymous temporary file and store it from there."""
    with tempfile.TemporaryFile() as extracted:
        try:
            md5 = await asyncio.to_thread(_extract, archive, info, extracted)
        except _ZIP_ERRORS as error:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Invalid ZIP archive") from error
        try:
            return await receiver.receive_file(extracted, origin, md5=md5)
        except OrthancError as error:
            with mmap.mmap(extracted.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                if _skipped_member(cast(bytes, mapped), error):
                    raise _SkippedMember() from error
            raise


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: IO[bytes]) -> str:
    """Copy one member into `target` (blocking); return its MD5."""
    digest = hashlib.md5()
    with archive.open(info) as member:
        while piece := member.read(PIECE_BYTES):
            digest.update(piece)
            target.write(piece)
    target.flush()
    return digest.hexdigest()


@router.post("/instances")
async def post_instances(
    request: Request, receiver: ReceiverDep, username: UsernameDep, settings: SettingsDep
) -> Response:
    """Store a DICOM file (-> one object) or a ZIP of DICOM files (-> an array).

    Any content type; `Content-Encoding: gzip` accepted. The body is streamed
    (uploads.py): beyond 8 MiB it goes to an anonymous temporary file, is parsed
    from there and written to the blob store in pieces, so memory does not grow
    with its size. Empty body -> 400 *Bad file format* "Received an empty DICOM
    file"; a body (or what it inflates to) over the DicomKeep `MaximumUploadSize`
    413 (up front when Content-Length says so), a body stalled for
    `HttpRequestTimeout` seconds 408 (http_options.py); the Receiver's errors
    propagate (invalid file 400, absent UID 400 as Orthanc 1.12, storage full 507).
    Answers only after the indexer committed.
    """
    limit = settings.dicomkeep.maximum_upload_size * 1024 * 1024
    upload = await receive_upload(request, "The uploaded body", limit)
    try:
        if not upload.size:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Received an empty DICOM file")
        client = request.client
        origin = Origin(
            protocol="RestApi", remote_ip=client.host if client else "", http_username=username
        )
        if upload.file is None:
            if upload.data[:4] in ZIP_MAGICS:
                answers = await _store_zip(io.BytesIO(upload.data), receiver, origin)
                return OrthancJSONResponse(answers)
            received = await receiver.receive(upload.data, origin)
        else:
            if await asyncio.to_thread(upload.head, 4) in ZIP_MAGICS:
                return OrthancJSONResponse(await _store_zip(upload.file, receiver, origin))
            received = await receiver.receive_file(upload.file, origin, md5=upload.md5)
        return OrthancJSONResponse(store_answer(received))
    finally:
        upload.close()


async def _dicom_bytes(index: Index, storage: StorageAccessor, public_id: str) -> bytes:
    """Return the DICOM file of an instance (one index lookup, one blob read).

    404 *Unknown resource* if unknown; 404 *Accessing an inexistent item* when
    the blob is missing from the storage area.
    """
    try:
        data = await read_instance_file(index, storage, public_id)
    except KeyError as error:
        raise OrthancError(
            ErrorCode.INEXISTENT_ITEM, "The DICOM file is missing from the storage area"
        ) from error
    if data is None:
        raise unknown_resource()
    return data


@router.get("/instances/{public_id}/file")
async def get_file(public_id: str, index: IndexDep, storage: StorageDep) -> Response:
    """Answer the stored DICOM file, byte for byte, as `application/dicom`; a large
    one is streamed in 1 MiB pieces (memory does not grow with its size)."""
    info = await find_attachment(index, Level.INSTANCE, public_id, FileContentType.DICOM)
    if info is None:
        raise unknown_resource()
    return await stream_answer(
        storage.iter_uncompressed(info), info.uncompressed_size, "application/dicom",
        {"Content-Disposition": f'filename="{public_id}.dcm"'}, what="The DICOM file",
    )  # fmt: skip


@router.get("/instances/{public_id}/tags")
async def get_tags(public_id: str, request: Request, index: IndexDep, storage: StorageDep) -> Response:
    """Answer the dataset as JSON: `full` by default, or `?simplify` / `?short`.

    `?whole` reads past the pixel data; `?ignore-length=a,b` lists tags exempt
    from the 256-byte `TooLong` rule.
    """
    fmt = tag_format(request, "full")
    whole = bool_arg(request, "whole")
    ignored = [
        name.strip()
        for name in request.query_params.get("ignore-length", "").split(",")
        if name.strip()
    ]
    data, is_prefix = await dicom_for_tags(index, storage, public_id, whole=whole)
    tags = await render_tags(
        data, fmt, whole=whole, ignore_length=ignored, assume_pixel_data=is_prefix
    )
    return OrthancJSONResponse(tags)


@router.get("/instances/{public_id}/simplified-tags")
async def get_simplified_tags(
    public_id: str, request: Request, index: IndexDep, storage: StorageDep
) -> Response:
    """Answer the dataset as `{keyword: value}` (= `/tags?simplify`)."""
    whole = bool_arg(request, "whole")
    data, is_prefix = await dicom_for_tags(index, storage, public_id, whole=whole)
    tags = await render_tags(data, "simplify", whole=whole, assume_pixel_data=is_prefix)
    return OrthancJSONResponse(tags)


@router.get("/instances/{public_id}/content")
@router.get("/instances/{public_id}/content/{path:path}")
async def get_content(
    public_id: str, index: IndexDep, storage: StorageDep, path: str = ""
) -> Response:
    """Browse the dataset: a dataset, item or sequence path lists `gggg-eeee` tags or
    item indices (JSON); a leaf answers its raw bytes (`application/octet-stream`).

    Unknown tag or index -> 404 *Unknown resource*.
    """
    parts = [part for part in path.split("/") if part]
    data = await _dicom_bytes(index, storage, public_id)
    value: Any = await asyncio.to_thread(content_value, data, parts)
    if isinstance(value, bytes):
        return Response(value, media_type="application/octet-stream")
    return OrthancJSONResponse(value)


@router.get("/instances/{public_id}/header")
async def get_header(public_id: str, index: IndexDep, storage: StorageDep) -> Response:
    """Answer the DICOM file meta group (0002,xxxx) in the `full` JSON format."""
    data = await _dicom_bytes(index, storage, public_id)
    return OrthancJSONResponse(await asyncio.to_thread(header_json, data))


@router.get("/instances/{public_id}/frames")
async def get_frames(public_id: str, index: IndexDep) -> Response:
    """Answer `[0, ..., NumberOfFrames - 1]` (one frame when the tag is absent)."""
    resource = await index.get_resource(Level.INSTANCE, public_id)
    if resource is None:
        raise unknown_resource()
    count = integer_or_none(resource.main_tags.get("NumberOfFrames"))
    return OrthancJSONResponse(list(range(count if count and count > 0 else 1)))


@router.post("/instances/{public_id}/export")
async def export_file(
    public_id: str, request: Request, index: IndexDep, storage: StorageDep, settings: SettingsDep
) -> Response:
    """Write the instance's DICOM file to the server's file system at the path of the body.

    Mirrors Orthanc: 403 with an empty body unless `RestApiWriteToFileSystemEnabled`;
    then `{}` once written. Unknown instance -> 404; a path that cannot be written
    -> 500 *Cannot write to file*.
    """
    if not settings.rest_api_write_to_file_system_enabled:
        log.error(
            "The URI /instances/../export is disallowed for security reasons, this feature "
            "can be enabled by setting RestApiWriteToFileSystemEnabled"
        )
        return empty(403)
    target = (await request.body()).decode("utf-8", errors="replace").strip()
    data = await _dicom_bytes(index, storage, public_id)
    try:
        await asyncio.to_thread(Path(target).write_bytes, data)
    except OSError as error:
        raise OrthancError(ErrorCode.CANNOT_WRITE_FILE, f"{target}: {error.strerror}") from error
    return OrthancJSONResponse({})
