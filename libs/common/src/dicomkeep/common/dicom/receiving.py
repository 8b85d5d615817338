"""Receive one DICOM file: parse, write its blobs, have the indexer commit it.

Shared by ingest (C-STORE) and gateway (POST /instances): ARCHITECTURE.md steps
1-2. The answer comes only after the indexer committed (step 4), so a success
means durable and visible to every reader.
"""

from __future__ import annotations

import asyncio
import io
import logging
import mmap
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

from dicomkeep.common.dicom.instance import ParsedInstance, dicom_prefix, parse_instance
from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.events import (
    ISSUED_AT_HEADER,
    STORE_QUEUE,
    AttachmentInfo,
    StoreInstance,
    StoreReply,
    StoreStatus,
)
from dicomkeep.common.ids import Level
from dicomkeep.common.metrics import (
    INSTANCES_RECEIVED,
    ORTHANC_METRICS,
    RECEIVE_SECONDS,
    RECEIVED_BYTES,
)
from dicomkeep.common.orthanc import FileContentType, MetadataType
from dicomkeep.common.ports.blobs import BlobStore
from dicomkeep.common.ports.bus import Bus, BusNotSent, BusTimeout
from dicomkeep.common.storage import Encoded, StorageAccessor, encode_instance
from dicomkeep.common.telemetry import SpanKind, tracer
from dicomkeep.common.timestamps import now_stamp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Origin:
    """Where an instance came from (recorded as core metadata)."""

    protocol: str  # "DicomProtocol" or "RestApi"
    remote_ip: str = ""
    remote_aet: str = ""
    called_aet: str = ""
    http_username: str = ""


@dataclass(frozen=True)
class Prepared:
    """A file parsed and its attachments encoded, ready for the blob store (or
    already written there: `attachments`)."""

    parsed: ParsedInstance
    encoded: list[tuple[int, Encoded]]
    attachments: list[AttachmentInfo] | None = None
    #: Unix time taken before `attachments` were written (the command's `issued_at`).
    issued_at: float | None = None


def prepare(data: bytes, *, compression: bool) -> Prepared:
    """Parse a DICOM file and hash (and compress) its attachments: the CPU part of a
    receive, blocking, for a worker thread. Raises OrthancError on bad input."""
    parsed = parse_instance(data)
    prefix = dicom_prefix(data, parsed) if compression else None
    return Prepared(parsed, encode_instance(data, prefix, compressed=compression))


@dataclass(frozen=True)
class Received:
    """The outcome of one receive: the parsed instance and the indexer's reply."""

    parsed: ParsedInstance
    reply: StoreReply


def build_command(
    parsed: ParsedInstance,
    attachments: list[AttachmentInfo],
    origin: Origin,
    *,
    overwrite: bool,
    extra_metadata: Mapping[Level, Mapping[int, str]] | None = None,
    issued_at: float | None = None,
) -> StoreInstance:
    """Build the StoreInstance command with the core metadata of ORTHANC_API.md §3.

    `extra_metadata` adds metadata per level (ModifiedFrom/AnonymizedFrom of a
    modified copy); the indexer writes a level's metadata when it creates that level.
    `issued_at` is the Unix time taken before the blobs were written (default: now),
    by which the indexer judges whether the blobs may have been collected.
    """
    received_at = now_stamp()
    instance: dict[int, str] = {
        MetadataType.RECEPTION_DATE: received_at,
        MetadataType.REMOTE_AET: origin.remote_aet,
        MetadataType.ORIGIN: origin.protocol,
        MetadataType.TRANSFER_SYNTAX: parsed.transfer_syntax,
        MetadataType.SOP_CLASS_UID: parsed.sop_class_uid,
    }
    if origin.remote_ip:
        instance[MetadataType.REMOTE_IP] = origin.remote_ip
    if origin.protocol == "DicomProtocol":
        instance[MetadataType.CALLED_AET] = origin.called_aet
    if origin.protocol == "RestApi":
        instance[MetadataType.HTTP_USERNAME] = origin.http_username
    if parsed.index_in_series is not None:
        instance[MetadataType.INDEX_IN_SERIES] = str(parsed.index_in_series)
    if parsed.pixel_data_offset is not None:
        instance[MetadataType.PIXEL_DATA_OFFSET] = str(parsed.pixel_data_offset)
    series: dict[int, str] = {MetadataType.REMOTE_AET: origin.remote_aet}
    if parsed.expected_instances is not None:
        series[MetadataType.EXPECTED_NUMBER_OF_INSTANCES] = str(parsed.expected_instances)
    metadata: dict[Level, dict[int, str]] = {Level.INSTANCE: instance, Level.SERIES: series}
    for level, values in (extra_metadata or {}).items():
        metadata.setdefault(level, {}).update(values)
    patient_id, study_id, series_id, instance_id = parsed.ids
    return StoreInstance(
        patient_id=patient_id,
        study_id=study_id,
        series_id=series_id,
        instance_id=instance_id,
        patient_uid=parsed.patient_uid,
        study_uid=parsed.study_uid,
        series_uid=parsed.series_uid,
        sop_uid=parsed.sop_uid,
        main_tags=parsed.main_tags,
        metadata=metadata,
        attachments=attachments,
        overwrite=overwrite,
        received_at=received_at,
        issued_at=time.time() if issued_at is None else issued_at,
    )


Submit = Callable[[StoreInstance], Awaitable[StoreReply]]


def bus_submitter(bus: Bus, timeout: float) -> Submit:
    """Return a Submit that sends StoreInstance commands to the indexer over the bus."""

    async def submit(command: StoreInstance) -> StoreReply:
        with tracer().start_as_current_span(
            "StoreInstance",
            kind=SpanKind.CLIENT,
            attributes={"dicomkeep.instance_id": command.instance_id},
        ) as span:
            headers = {"x-dicomkeep-type": "StoreInstance"}
            if command.issued_at is not None:
                headers[ISSUED_AT_HEADER] = repr(command.issued_at)
            body = await bus.request(
                STORE_QUEUE,
                command.model_dump_json(exclude={"issued_at"}).encode(),
                headers,
                timeout,
            )
            reply = StoreReply.model_validate_json(body)
            span.set_attribute("dicomkeep.store_status", reply.status.value)
            return reply

    return submit


def _blob_span(content_type: int, size: int) -> Any:
    """The span of one blob write (attachment `content_type`, `size` bytes)."""
    return tracer().start_as_current_span(
        "blob write",
        attributes={"dicomkeep.attachment.content_type": content_type, "dicomkeep.size": size},
    )


def _storage_created(started: float) -> None:
    """Record a blob write that began at `started` (perf_counter) in Orthanc's metric."""
    ORTHANC_METRICS.set_max(
        "orthanc_storage_create_duration_ms", (time.perf_counter() - started) * 1000
    )


class Receiver:
    """Receive DICOM files: the store data flow up to the indexer's reply."""

    def __init__(
        self,
        blobs: BlobStore,
        submit: Submit,
        *,
        compression: bool = False,
        overwrite: bool = False,
    ) -> None:
        self.blobs = blobs
        self.storage = StorageAccessor(blobs)
        self.submit = submit
        self.compression = compression
        self.overwrite = overwrite

    def prepare(self, data: bytes, *, write: bool = False) -> Prepared:
        """The blocking first steps of `receive` (parse, hash, compress and, when
        `write`, write the blobs), for a caller already in a worker thread (the
        C-STORE SCP's association thread): it then passes the result to `receive`,
        which skips them. Raises OrthancError on bad input, before any write."""
        prepared = prepare(data, compression=self.compression)
        if not write:
            return prepared
        issued_at = time.time()
        writing = time.perf_counter()
        with _blob_span(FileContentType.DICOM, len(data)):
            attachments = self.storage.write_encoded_instance_blocking(prepared.encoded)
        _storage_created(writing)
        return Prepared(prepared.parsed, prepared.encoded, attachments, issued_at)

    async def receive(
        self,
        data: bytes,
        origin: Origin,
        *,
        metadata: Mapping[Level, Mapping[int, str]] | None = None,
        prepared: Prepared | None = None,
    ) -> Received:
        """Store one DICOM file; raise OrthancError when it is refused.

        `metadata` adds metadata per level to the core metadata (see build_command).
        `prepared` is `self.prepare(data)` when the caller already ran it.

        Bad input raises before anything is written. When the indexer answers a
        failure, or the command certainly never left, the blobs just written are
        removed again; on any other failure (no answer, a lost connection...) they
        are left to the orphan collector: the commit may have happened (`_commit`).
        """
        started = time.perf_counter()
        if prepared is None:
            # One thread hop for parsing and hashing together.
            prepared = await asyncio.to_thread(self.prepare, data)
        parsed = prepared.parsed
        attachments = prepared.attachments
        issued_at = prepared.issued_at
        if attachments is None:
            issued_at = time.time()
            writing = time.perf_counter()
            with _blob_span(FileContentType.DICOM, len(data)):
                attachments = await self.storage.write_encoded_instance(prepared.encoded)
            _storage_created(writing)
        return await self._commit(
            parsed, attachments, origin, metadata, len(data), started, issued_at
        )

    async def receive_file(
        self,
        source: BinaryIO,
        origin: Origin,
        *,
        md5: str | None = None,
        metadata: Mapping[Level, Mapping[int, str]] | None = None,
    ) -> Received:
        """Store one DICOM file kept in a local file, as `receive` does, without ever
        holding it in memory: it is parsed through a read-only memory map (only the
        pages holding element headers are touched, not the pixel data) and written
        to the blob store in pieces. `md5` is the file's MD5 when already known.
        """
        started = time.perf_counter()
        size = source.seek(0, io.SEEK_END)
        if size == 0:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Received an empty DICOM file")
        with mmap.mmap(source.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            # The parser needs only len(), slices and struct.unpack_from, which a
            # memory map offers as bytes does.
            data = cast(bytes, mapped)
            parsed = await asyncio.to_thread(parse_instance, data)
            prefix = dicom_prefix(data, parsed) if self.compression else None
        issued_at = time.time()
        writing = time.perf_counter()
        with _blob_span(FileContentType.DICOM, size):
            attachments = await self.storage.write_instance_file(
                source, prefix, compressed=self.compression, md5=md5
            )
        _storage_created(writing)
        return await self._commit(
            parsed, attachments, origin, metadata, size, started, issued_at
        )

    async def _commit(
        self,
        parsed: ParsedInstance,
        attachments: list[AttachmentInfo],
        origin: Origin,
        metadata: Mapping[Level, Mapping[int, str]] | None,
        size: int,
        started: float,
        issued_at: float | None,
    ) -> Received:
        """Have the indexer commit the written instance; undo the blobs on a refusal.

        The blobs are removed at once only when nothing can ever refer to them: the
        indexer answered Failure (its transaction rolled back), or the command never
        left (`BusNotSent`). On any other failure (no reply in time, a connection
        lost once the publish began, the indexer raised) the command may still be
        committed, now or later: removing the blobs then would leave an indexed
        instance without its file. They are left to the orphan collector, which
        removes them after `OrphanGracePeriod` if no commit refers to them.
        """
        try:
            command = build_command(
                parsed, attachments, origin, overwrite=self.overwrite,
                extra_metadata=metadata, issued_at=issued_at,
            )
        except Exception:
            await self._discard(attachments)
            raise
        try:
            reply = await self.submit(command)
        except BusTimeout as error:
            log.error("store timed out instance=%s; its blobs are left to the orphan collector",
                      parsed.ids[3])
            raise OrthancError(ErrorCode.TIMEOUT, "The indexer did not answer") from error
        except BusNotSent:
            await self._discard(attachments)
            raise
        except Exception as error:
            # Ambiguous: the command may have reached the indexer. (A cancelled
            # request, not an Exception, is left to the orphan collector too.)
            log.warning(
                "store outcome unknown instance=%s error=%s: %s; its blobs are left to "
                "the orphan collector", parsed.ids[3], type(error).__name__, error,
            )
            raise
        elapsed = time.perf_counter() - started
        RECEIVE_SECONDS.observe(elapsed)
        INSTANCES_RECEIVED.labels(origin.protocol, reply.status.value).inc()
        RECEIVED_BYTES.labels(origin.protocol).inc(size)
        ORTHANC_METRICS.set_max("orthanc_store_dicom_duration_ms", elapsed * 1000)
        if reply.status is StoreStatus.FAILURE:
            await self._discard(attachments)
            code = ErrorCode[reply.error_code] if reply.error_code else ErrorCode.INTERNAL_ERROR
            raise OrthancError(code, reply.details)
        return Received(parsed=parsed, reply=reply)

    async def _discard(self, attachments: list[AttachmentInfo]) -> None:
        await self.storage.discard([info.uuid for info in attachments])
