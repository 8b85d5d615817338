"""ZIP archives and DICOMDIR media of resources (Orthanc 1.12's ArchiveJob).

Shared by the gateway (synchronous answers, streamed) and the jobs service
(`Archive`/`Media` jobs, whose ZIP goes to the blob store). Layout as Orthanc's
ArchiveJob and HierarchicalZipWriter:
- archive: `{PatientID} {PatientName}/{AccessionNumber} {StudyDescription}/
  {Modality} {SeriesDescription}/{MO}{6-digit counter}.dcm`, the counter starting
  at 0 in each series; names kept to ASCII letters, digits, `.`, `_` and single
  spaces (`^` is a space), empty ones `Unknown Patient|Study|Series`, a second
  folder of the same name suffixed `-2`;
- media: every file as `IMAGES/IM{n}` (n from 0 across the media) and a
  `DICOMDIR` at the root, written last (built with pydicom's FileSet).
Patients, studies and series are visited in the order of their Orthanc IDs
(Orthanc's std::map), instances in the order they were stored.

Over 400 lines because the naming rules, the resource walk and the streamed ZIP
writer are one of Orthanc's behaviours, read and changed together.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import zipfile
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from dicomkeep.common.dicom_dir import DicomDir
from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.ids import Level
from dicomkeep.common.index import Index
from dicomkeep.common.orthanc import FileContentType
from dicomkeep.common.ports.blobs import BlobStore
from dicomkeep.common.storage import StorageAccessor, find_attachment
from dicomkeep.common.transcoding import check_target, dataset_bytes, read_dataset, transcode

log = logging.getLogger(__name__)

ARCHIVE_JOB = "Archive"
MEDIA_JOB = "Media"
#: The key of a job's archive output (`GET /jobs/{id}/archive`).
OUTPUT_KEY = "archive"
MEDIA_FOLDER = "IMAGES"
MEGA_BYTES = 1024 * 1024

_FOLDER_TAGS = {
    Level.PATIENT: ("PatientID", "PatientName"),
    Level.STUDY: ("AccessionNumber", "StudyDescription"),
    Level.SERIES: ("Modality", "SeriesDescription"),
}


@dataclass(frozen=True)
class ArchiveOptions:
    """The options of an archive request (body or GET arguments)."""

    synchronous: bool = True
    priority: int = 0
    transcode: str | None = None
    extended: bool = False
    filename: str | None = None


def _member(body: dict[str, Any], key: str, kind: type, what: str) -> Any:
    value = body.get(key)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool)):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f'Member "{key}" should be {what}')
    return value


def parse_options(body: Any, *, default_extended: bool = False) -> ArchiveOptions:
    """Read `Synchronous`/`Asynchronous`, `Priority`, `Transcode`, `Extended`, `Filename`.

    Mirrors Orthanc's GetJobParameters: synchronous by default, `Synchronous`
    wins over `Asynchronous`. A member of the wrong type -> 400 *Bad file format*;
    a transfer syntax DicomKeep cannot write -> 400 *Bad request*.
    """
    if not isinstance(body, dict):
        return ArchiveOptions(extended=default_extended)
    synchronous = _member(body, "Synchronous", bool, "a Boolean")
    asynchronous = _member(body, "Asynchronous", bool, "a Boolean")
    if synchronous is None:
        synchronous = not asynchronous if asynchronous is not None else True
    priority = _member(body, "Priority", int, "an integer") or 0
    target = _member(body, "Transcode", str, "a string")
    extended = _member(body, "Extended", bool, "a Boolean")
    filename = _member(body, "Filename", str, "a string")
    return ArchiveOptions(
        synchronous=synchronous,
        priority=priority,
        transcode=str(check_target(target)) if target is not None else None,
        extended=default_extended if extended is None else extended,
        filename=filename,
    )


def resources_of(body: Any) -> list[str]:
    """Return the resources of `/tools/create-archive|media`: a JSON array of IDs,
    or `Resources` of an object; 400 *Bad file format* otherwise (Orthanc)."""
    if isinstance(body, dict):
        if "Resources" not in body:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Missing field Resources in the JSON body")
        body = body["Resources"]
    if not isinstance(body, list) or not all(isinstance(item, str) for item in body):
        raise OrthancError(
            ErrorCode.BAD_FILE_FORMAT, "Expected a list of strings (Orthanc identifiers)"
        )
    return body


def attachment_filename(name: str | None, default: str) -> str:
    """Return a safe `Content-Disposition` filename: the one asked (`filename`,
    `Filename`) without quotes or control characters, else `default`."""
    if name:
        cleaned = re.sub(r'[\x00-\x1f\x7f"\\]', "", name).strip()
        if cleaned:
            return cleaned
    return default


@dataclass(frozen=True)
class Entry:
    """One DICOM file of an archive: its name in the ZIP and its instance."""

    path: str
    instance_id: str
    size: int


@dataclass
class Plan:
    """The files of an archive, in order, with Orthanc's public content figures."""

    entries: list[Entry] = field(default_factory=list)

    @property
    def uncompressed_size(self) -> int:
        return sum(entry.size for entry in self.entries)


@dataclass
class _Node:
    expand: bool = False
    children: dict[str, _Node] = field(default_factory=dict)
    instances: list[str] = field(default_factory=list)


async def _chain(index: Index, public_id: str) -> list[tuple[Level, str]]:
    """Return [(PATIENT, id), ..., (level, public_id)]; 404 if the ID is unknown."""
    for level in Level:
        resource = await index.get_resource(level, public_id)
        if resource is not None:
            break
    else:
        raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"Unknown resource: {public_id}")
    chain = [(level, public_id)]
    parent = level.parent
    while resource is not None and resource.parent_id is not None and parent is not None:
        chain.insert(0, (parent, resource.parent_id))
        resource = await index.get_resource(parent, resource.parent_id)
        parent = parent.parent
    return chain


async def _expand(index: Index, level: Level, public_id: str, node: _Node) -> None:
    if node.expand:
        resource = await index.get_resource(level, public_id)
        children = resource.children if resource is not None else []
        if level is Level.SERIES:
            node.instances = list(children)
        else:
            node.children = {child: _Node(expand=True) for child in children}
    if level is not Level.SERIES:
        for child_id, child in node.children.items():
            await _expand(index, level.child, child_id, child)  # type: ignore[arg-type]


def _keep_alphanumeric(name: str) -> str:
    """Orthanc's HierarchicalZipWriter::KeepAlphanumeric."""
    result = []
    last_space = False
    for char in name.replace("^", " "):
        if ord(char) > 127:
            continue
        if char.isspace():
            if not last_space:
                result.append(" ")
                last_space = True
        elif char.isalnum() or char in "._":
            result.append(char)
            last_space = False
    return "".join(result).strip()


class _Folder:
    """Unique names in one folder: a repeated name gets `-2`, `-3`... (Orthanc)."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def unique(self, name: str) -> str:
        name = _keep_alphanumeric(name)
        count = self.seen.get(name, 0) + 1
        self.seen[name] = count
        return name if count == 1 else f"{name}-{count}"


def _folder_name(level: Level, tags: dict[str, str]) -> str:
    first, second = _FOLDER_TAGS[level]
    name = f"{tags.get(first, '')} {tags.get(second, '')}"
    name = "".join(c for c in name if ord(c) < 128 and c.isprintable()).strip()
    return name or f"Unknown {level.value.capitalize()}"


def _file_format(modality: str) -> tuple[str, int]:
    prefix = modality[:2].upper()
    return prefix, 8 - len(prefix)


async def _dicom_size(index: Index, instance_id: str) -> int | None:
    info = await find_attachment(index, Level.INSTANCE, instance_id, FileContentType.DICOM)
    return None if info is None else int(info.uncompressed_size)


async def plan(index: Index, resources: list[str], *, media: bool) -> Plan:
    """Return the files of an archive of `resources` (any levels), as Orthanc names them.

    Raises OrthancError 404 *Unknown resource* for an unknown ID, before anything
    is read.
    """
    root = _Node()
    for public_id in resources:
        node = root
        for level, node_id in await _chain(index, public_id):
            if level is Level.INSTANCE:
                if not node.expand and node_id not in node.instances:
                    node.instances.append(node_id)
                break
            child = node.children.setdefault(node_id, _Node())
            if node_id == public_id:
                child.expand, child.children, child.instances = True, {}, []
                break
            if child.expand:
                break
            node = child
    for patient_id, patient in root.children.items():
        await _expand(index, Level.PATIENT, patient_id, patient)
    result = Plan()
    await _walk(index, root, Level.PATIENT, [], _Folder(), result, media)
    return result


async def _walk(
    index: Index, node: _Node, level: Level, folders: list[str], names: _Folder,
    result: Plan, media: bool,
) -> None:
    for child_id in sorted(node.children):
        child = node.children[child_id]
        resource = await index.get_resource(level, child_id)
        tags = resource.main_tags if resource is not None else {}
        path = folders + [names.unique(_folder_name(level, tags))]
        if level is Level.SERIES:
            prefix, digits = _file_format(tags.get("Modality", ""))
            for counter, instance_id in enumerate(child.instances):
                size = await _dicom_size(index, instance_id)
                if size is None:
                    continue
                if media:
                    name = f"{MEDIA_FOLDER}/IM{len(result.entries)}"
                else:
                    name = "/".join([*path, f"{prefix}{counter:0{digits}d}.dcm"])
                result.entries.append(Entry(name, instance_id, size))
        else:
            await _walk(index, child, level.child, path, _Folder(), result, media)  # type: ignore[arg-type]


class _Sink:
    """A write-only stream for zipfile: the bytes written since the last `take`."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


def _transcoded(data: bytes, target: str | None) -> bytes:
    """Return the file in `target`, or unchanged when it cannot be transcoded
    (Orthanc's ArchiveJob keeps the original then)."""
    if target is None:
        return data
    try:
        ds = read_dataset(data)
        if str(ds.file_meta.get("TransferSyntaxUID", "")) == target:
            return data
        return dataset_bytes(transcode(ds, check_target(target)))
    except OrthancError as error:
        log.info("archive keeps an instance untranscoded: %s", error.details or error.code.message)
        return data


def _add_member(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data, compresslevel=6)


@dataclass
class Progress:
    """How far a ZIP got: files written and bytes out."""

    files: int = 0
    archive_size: int = 0


async def stream_zip(
    index: Index,
    blobs: BlobStore,
    archive_plan: Plan,
    *,
    media: bool,
    target: str | None = None,
    extended: bool = False,
    progress: Progress | None = None,
) -> AsyncGenerator[bytes, None]:
    """Yield the ZIP of a plan chunk by chunk: one instance in memory at a time.

    Instances deleted since the plan was made are skipped (Orthanc logs "An
    instance was removed after the job was issued"). ZIP64 records are written
    when the archive needs them (more than 65,535 files or 4 GiB).
    """
    progress = progress or Progress()
    storage = StorageAccessor(blobs)
    sink = _Sink()
    archive = zipfile.ZipFile(sink, "w", allowZip64=True)
    dicom_dir = DicomDir(extended) if media else None
    for entry in archive_plan.entries:
        info = await find_attachment(index, Level.INSTANCE, entry.instance_id, FileContentType.DICOM)
        try:
            data = await storage.read(info) if info is not None else None
        except KeyError:
            data = None
        if data is None:
            log.warning("an instance was removed after the archive was planned: %s", entry.instance_id)
            continue
        member: bytes = await asyncio.to_thread(_transcoded, data, target)
        del data
        if dicom_dir is not None:
            try:
                await asyncio.to_thread(dicom_dir.add, member, entry.path.split("/"))
            except (ValueError, KeyError, AttributeError, TypeError) as error:
                # The file stays in the media, without a record (never cut the stream).
                log.warning("instance %s left out of the DICOMDIR: %s", entry.instance_id, error)
        await asyncio.to_thread(_add_member, archive, entry.path, member)
        del member
        progress.files += 1
        chunk = sink.take()
        progress.archive_size = sink.size
        if chunk:
            yield chunk
    if dicom_dir is not None:
        encoded = await asyncio.to_thread(dicom_dir.encode)
        await asyncio.to_thread(_add_member, archive, "DICOMDIR", encoded)
    await asyncio.to_thread(archive.close)
    progress.archive_size = sink.size
    yield sink.take()


def job_content(archive_plan: Plan, target: str | None, archive_size: int = 0) -> dict[str, Any]:
    """Return the public content of an Archive/Media job (Orthanc's ArchiveJob)."""
    content: dict[str, Any] = {
        "Description": "REST API",
        "InstancesCount": len(archive_plan.entries),
        "UncompressedSizeMB": archive_plan.uncompressed_size // MEGA_BYTES,
        "ArchiveSizeMB": archive_size // MEGA_BYTES,
        "ArchiveSize": str(archive_size),
        "UncompressedSize": str(archive_plan.uncompressed_size),
    }
    if target is not None:
        content["Transcode"] = target
    return content


def job_payload(resources: list[str], options: ArchiveOptions, *, media: bool) -> dict[str, Any]:
    """Return what the jobs worker needs to build the archive again."""
    return {
        "Resources": resources,
        "Media": media,
        "Extended": options.extended,
        "Transcode": options.transcode,
    }


