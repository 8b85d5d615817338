"""Store to an Orthanc peer: the request body, the instance list and the transfer loop.

The gateway (`POST /peers/{name}/store`) parses the request and builds the job;
the jobs service runs `transfer` (`OrthancPeerStore` jobs). Mirrors Orthanc's OrthancPeerStoreJob
(ORTHANC_API.md §10, §12): the resources named in the request are expanded to
instances when the job is created; each instance's DICOM file is sent to the
peer's `POST /instances`; any failure fails the job unless `Permissive` (then the
instance is counted in `FailedInstancesCount`). Metadata and attachments are not
transferred.

The job's payload (its private, persisted parameters) records each instance the
peer acknowledged under `Delivered`, outside the `Checkpoint` key that a
`resubmit` clears: a resubmitted job sends only what had not arrived yet, while
instances that failed in a permissive run are tried again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from dicomkeep.common.errors import ErrorCode, OrthancError, unknown_resource
from dicomkeep.common.ids import Level
from dicomkeep.common.index import Index
from dicomkeep.common.peer_http import HttpOptions, PeerClient
from dicomkeep.common.peers import Peer, bad_format
from dicomkeep.common.ports.blobs import BlobStore
from dicomkeep.common.storage import StorageAccessor, read_instance_file
from dicomkeep.common.telemetry import tracer

#: The job type (`Type` of `GET /jobs/{id}`), as Orthanc names it.
JOB_TYPE = "OrthancPeerStore"
DESCRIPTION = "REST API"
MEGABYTE = 1024 * 1024
_PUBLIC_ID = re.compile(r"[0-9a-f]{8}(-[0-9a-f]{8}){4}")
#: Expanding an ID tries the levels from the top, as Orthanc's LookupResourceType.
_LEVELS = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.INSTANCE)

#: Called after each instance with (payload, content, progress); False stops the run.
Checkpoint = Callable[[dict[str, Any], dict[str, Any], int], Awaitable[bool]]
ClientFactory = Callable[[Peer, HttpOptions], PeerClient]


@dataclass(frozen=True)
class StoreRequest:
    """A parsed body of `POST /peers/{name}/store` (also `/modalities/{name}/store`)."""

    resources: list[str]
    synchronous: bool = True
    priority: int = 0
    permissive: bool = False
    compress: bool = False
    transcode: str | None = None


def _checked_id(value: Any) -> str:
    if not isinstance(value, str):
        raise bad_format("Must provide a JSON object, or a JSON array of strings")
    if not _PUBLIC_ID.fullmatch(value):
        raise bad_format(f"This string is not a valid Orthanc identifier: {value}")
    return value


def _field(body: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    value = body.get(name, default)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f'Field "{name}" has a bad type')
    return value


def parse_store_body(body: bytes) -> StoreRequest:
    """Parse a store body: a bare ID, a JSON string, an array of IDs, or an object.

    The object form takes `Resources` (required), `Synchronous`/`Asynchronous`
    (Synchronous wins; default synchronous), `Priority`, `Permissive`, `Compress`,
    `Transcode`. Raises 400 *Bad file format* with Orthanc 1.10.1's details.
    """
    text = body.decode("utf-8", errors="replace").strip()
    try:
        value = json.loads(text)
    except ValueError:
        if _PUBLIC_ID.fullmatch(text):
            return StoreRequest(resources=[text])
        raise bad_format("Must provide a JSON value") from None
    if isinstance(value, str):
        return StoreRequest(resources=[_checked_id(value)])
    if isinstance(value, list):
        return StoreRequest(resources=[_checked_id(item) for item in value])
    if not isinstance(value, dict):
        raise bad_format("Must provide a JSON object, or a JSON array of strings")
    if "Resources" not in value:
        raise bad_format('Missing field in JSON: "Resources"')
    if not isinstance(value["Resources"], list):
        raise bad_format('JSON field "Resources" must contain an array')
    if "Synchronous" in value:
        synchronous = _field(value, "Synchronous", bool, True)
    else:
        synchronous = not _field(value, "Asynchronous", bool, False)
    transcode = value.get("Transcode")
    if transcode is not None and not isinstance(transcode, str):
        raise bad_format('Field "Transcode" has a bad type')
    return StoreRequest(
        resources=[_checked_id(item) for item in value["Resources"]],
        synchronous=synchronous,
        priority=_field(value, "Priority", int, 0),
        permissive=_field(value, "Permissive", bool, False),
        compress=_field(value, "Compress", bool, False),
        transcode=transcode or None,
    )


async def expand_instances(index: Index, resources: list[str]) -> list[str]:
    """Return the instances of the resources (any level), without duplicates, in order.

    Raises 404 *Unknown resource* for an ID that is no resource.
    """
    instances: dict[str, None] = {}
    for public_id in resources:
        for level in _LEVELS:
            found = await index.descendants(level, public_id, Level.INSTANCE)
            if found:
                instances.update(dict.fromkeys(found))
                break
        else:
            raise unknown_resource()
    return list(instances)


def new_payload(peer: Peer, request: StoreRequest, instances: list[str]) -> dict[str, Any]:
    """Return the payload of a new transfer of `instances` to `peer`."""
    return {
        "Peer": peer.name,
        "Resources": sorted(set(request.resources)),
        "Instances": instances,
        "Compress": request.compress,
        "Permissive": request.permissive,
        "Delivered": {},
    }


def content_of(payload: dict[str, Any], peer: Peer) -> dict[str, Any]:
    """Return the job's public content (`Content`) for a payload, as Orthanc 1.10.1."""
    delivered: dict[str, int] = payload.get("Delivered", {})
    size = sum(delivered.values())
    content: dict[str, Any] = {
        "Compress": bool(payload.get("Compress", False)),
        "Description": DESCRIPTION,
        "FailedInstancesCount": len(payload.get("Checkpoint", {}).get("Failed", [])),
        "InstancesCount": len(payload.get("Instances", [])),
        "Peer": peer.simple_json(),
        "Size": str(size),
        "SizeMB": size // MEGABYTE,
    }
    if payload.get("Resources"):
        content["ParentResources"] = list(payload["Resources"])
    return content


def progress_of(payload: dict[str, Any]) -> int:
    """Return the percentage of instances delivered or given up (permissive)."""
    total = len(payload.get("Instances", []))
    if total == 0:
        return 100
    done = len(payload.get("Delivered", {})) + len(payload.get("Checkpoint", {}).get("Failed", []))
    return min(100, done * 100 // total)


@dataclass(frozen=True)
class TransferOutcome:
    """How a run ended: `error` None and not `stopped` = every instance handled."""

    payload: dict[str, Any]
    content: dict[str, Any]
    progress: int
    error: OrthancError | None = None
    stopped: bool = False


async def _read_instance(index: Index, blobs: BlobStore, instance_id: str) -> bytes:
    try:
        data = await read_instance_file(index, StorageAccessor(blobs), instance_id)
    except KeyError as error:
        raise OrthancError(
            ErrorCode.INEXISTENT_ITEM, f"The DICOM file of instance {instance_id} is missing"
        ) from error
    if data is None:
        raise unknown_resource(f"Instance {instance_id} was deleted before it was sent")
    return data


async def transfer(
    index: Index,
    blobs: BlobStore,
    peer: Peer,
    options: HttpOptions,
    payload: dict[str, Any],
    *,
    checkpoint: Checkpoint | None = None,
    client_factory: ClientFactory = PeerClient,
) -> TransferOutcome:
    """Send every instance of the payload not delivered yet, in one `peer transfer`
    span (each HTTP request is a child span when tracing is on); see `_transfer`."""
    with tracer().start_as_current_span(
        "peer transfer", attributes={"dicomkeep.peer": peer.name}
    ) as span:
        result = await _transfer(
            index, blobs, peer, options, payload,
            checkpoint=checkpoint, client_factory=client_factory,
        )
        span.set_attribute("dicomkeep.error", result.error is not None)
        return result


async def _transfer(
    index: Index,
    blobs: BlobStore,
    peer: Peer,
    options: HttpOptions,
    payload: dict[str, Any],
    *,
    checkpoint: Checkpoint | None = None,
    client_factory: ClientFactory = PeerClient,
) -> TransferOutcome:
    """Send every instance of the payload not delivered yet; never raises OrthancError.

    One connection pool for the whole run. After each instance, `checkpoint` gets
    the updated payload, content and progress; when it answers False the run stops
    there (`stopped`, for a cancel or pause). A failure ends the run with `error`
    unless the payload is permissive. Idempotent: a second run of the returned
    payload sends nothing already delivered.
    """
    state = json.loads(json.dumps(payload))
    delivered: dict[str, int] = state.setdefault("Delivered", {})
    failed: list[str] = state.setdefault("Checkpoint", {}).setdefault("Failed", [])

    def outcome(error: OrthancError | None = None, stopped: bool = False) -> TransferOutcome:
        return TransferOutcome(state, content_of(state, peer), progress_of(state), error, stopped)

    try:
        client = client_factory(peer, options)
    except OrthancError as error:
        return outcome(error)
    async with client:
        for instance_id in state.get("Instances", []):
            if instance_id in delivered or instance_id in failed:
                continue
            try:
                data = await _read_instance(index, blobs, instance_id)
                await client.send_instance(data, compress=bool(state.get("Compress")))
            except OrthancError as error:
                if not state.get("Permissive"):
                    return outcome(error)
                failed.append(instance_id)
            else:
                delivered[instance_id] = len(data)
            if checkpoint is not None and not await checkpoint(
                state, content_of(state, peer), progress_of(state)
            ):
                return outcome(stopped=True)
    return outcome()
