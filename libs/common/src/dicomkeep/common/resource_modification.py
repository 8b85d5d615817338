"""Modify or anonymize stored resources: every instance below them, stored as new copies.

Mirrors Orthanc's ResourceModificationJob: each instance is read, modified with
one shared `Modification` (so the new UIDs agree across instances), optionally
transcoded, and stored through the ordinary store flow (the `Receiver`, as
`POST /instances`) with `ModifiedFrom` or `AnonymizedFrom` metadata
pointing at the original (the instance always, a parent when its ID changed).
Orthanc 1.12 logs no Modified*/Anonymized* change
(`ResourceModificationJob::HandleInstance` stores each copy with
`ServerContext::Store`, which logs only New* changes; the `LogChange` calls were
removed with Orthanc 1.4's jobs): the copies produce the usual New* changes, and
so do they here (docs/rest.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from dicomkeep.common.dicom.instance import parse_instance
from dicomkeep.common.dicom.receiving import Origin, Receiver
from dicomkeep.common.errors import ErrorCode, OrthancError, unknown_resource
from dicomkeep.common.ids import Level, resource_path
from dicomkeep.common.index import Index
from dicomkeep.common.modification import Modification, boolean_member
from dicomkeep.common.orthanc import MetadataType
from dicomkeep.common.ports.blobs import BlobStore
from dicomkeep.common.storage import StorageAccessor
from dicomkeep.common.transcoding import check_target, dataset_bytes, read_dataset, transcode
from pydicom.uid import UID

log = logging.getLogger(__name__)

#: The global property holding the last "Anonymized<N>" number (Orthanc's AnonymizationSequence).
ANONYMIZATION_SEQUENCE = "AnonymizationSequence"


@dataclass(frozen=True)
class ModificationOptions:
    """The job options of a resource modification (Orthanc's body members)."""

    keep_source: bool = True
    permissive: bool = False
    transcode: UID | None = None
    asynchronous: bool = False
    priority: int = 0


def parse_options(body: dict[str, Any]) -> ModificationOptions:
    """Read `KeepSource`, `Permissive`, `Transcode`, `Asynchronous`/`Synchronous`, `Priority`.

    Wrong types -> 400 *Bad file format*; a `Transcode` target DicomKeep cannot
    write -> 400 *Bad request* (transcoding.check_target).
    """
    target = body.get("Transcode")
    if target is not None and not isinstance(target, str):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, 'Member "Transcode" should be a string')
    priority = body.get("Priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, 'Member "Priority" should be an integer')
    asynchronous = boolean_member(body, "Asynchronous", False)
    if "Synchronous" in body:
        asynchronous = not boolean_member(body, "Synchronous", True)
    return ModificationOptions(
        keep_source=boolean_member(body, "KeepSource", True),
        permissive=boolean_member(body, "Permissive", False),
        transcode=check_target(target) if target else None,
        asynchronous=asynchronous,
        priority=priority,
    )


@dataclass
class ModificationOutcome:
    """What a modification produced: the IDs of the copies, per level, and the counts."""

    is_anonymization: bool
    instances_count: int = 0
    failed_count: int = 0
    #: Original ID -> new ID, per level (Orthanc's "Resources" of bulk answers).
    mapping: dict[Level, dict[str, str]] = field(default_factory=dict)

    def new_id(self, level: Level, original: str) -> str | None:
        """Return the ID of the copy of one original resource, None if none was stored."""
        return self.mapping.get(level, {}).get(original)


async def instances_of(index: Index, level: Level, public_id: str) -> list[str]:
    """Return the instances below a resource (itself for an instance); 404 if unknown."""
    resource = await index.get_resource(level, public_id)
    if resource is None:
        raise unknown_resource()
    if level is Level.INSTANCE:
        return [public_id]
    return await index.descendants(level, public_id, Level.INSTANCE)


async def read_instance(index: Index, blobs: BlobStore, instance_id: str) -> tuple[bytes, tuple[str, str, str, str]]:
    """Return an instance's DICOM file and its (patient, study, series, instance) IDs."""
    resource = await index.get_resource(Level.INSTANCE, instance_id)
    if resource is None or resource.dicom is None:
        raise unknown_resource()
    series_id = resource.parent_id or ""
    series = await index.get_resource(Level.SERIES, series_id)
    study_id = series.parent_id if series is not None else None
    study = await index.get_resource(Level.STUDY, study_id) if study_id else None
    patient_id = study.parent_id if study is not None else None
    try:
        data = await StorageAccessor(blobs).read(resource.dicom)
    except KeyError as error:
        raise OrthancError(
            ErrorCode.INEXISTENT_ITEM, "The DICOM file is missing from the storage area"
        ) from error
    return data, (patient_id or "", study_id or "", series_id, instance_id)


def modify_bytes(data: bytes, modification: Modification, target: UID | None) -> bytes:
    """Apply a modification (and a transcoding) to one DICOM file; return the new file."""
    ds = read_dataset(data)
    modification.apply(ds)
    if target is not None:
        ds = transcode(ds, target)
    return dataset_bytes(ds)


def _modified_copy(
    data: bytes, modification: Modification, target: UID | None
) -> tuple[bytes, tuple[str, str, str, str]]:
    """Return the modified file and its (patient, study, series, instance) IDs."""
    modified = modify_bytes(data, modification, target)
    return modified, parse_instance(modified).ids


async def anonymized_patient_name(index: Index) -> str:
    """Return the next "Anonymized<N>" (Orthanc's name for an anonymized patient).

    N comes from the `AnonymizationSequence` global property, incremented in one
    index transaction: concurrent anonymizations, on any gateway replica, each
    draw their own number (as Orthanc's shared `IncrementGlobalSequence`).
    """
    return f"Anonymized{await index.increment_property(ANONYMIZATION_SEQUENCE)}"


Progress = Callable[[int, int], Awaitable[None]]


async def modify_resources(
    index: Index,
    blobs: BlobStore,
    receiver: Receiver,
    modification: Modification,
    instances: list[str],
    options: ModificationOptions,
    origin: Origin,
    progress: Progress | None = None,
    delete_original: Callable[[str], Awaitable[None]] | None = None,
    outcome: ModificationOutcome | None = None,
) -> ModificationOutcome:
    """Store a modified copy of each instance; return the IDs of the copies.

    Without `Permissive`, the first failure raises (copies already stored stay,
    as in Orthanc); with it, failures are counted and the rest goes on. With
    `KeepSource: false`, each original instance is deleted once its copy is stored
    (by `delete_original`, else straight from the index). A given `outcome`
    accumulates (a job resumed from its checkpoint).
    """
    key = (
        MetadataType.ANONYMIZED_FROM if modification.is_anonymization else MetadataType.MODIFIED_FROM
    )
    if outcome is None:
        outcome = ModificationOutcome(is_anonymization=modification.is_anonymization)
    for position, instance_id in enumerate(instances):
        try:
            data, originals = await read_instance(index, blobs, instance_id)
            modified, ids = await asyncio.to_thread(
                _modified_copy, data, modification, options.transcode
            )
            # As Orthanc's ResourceModificationJob::HandleInstance: the instance always
            # records its original; a parent only when the copy's ID differs.
            metadata = {
                level: {key: original}
                for level, original, new in zip(Level, originals, ids, strict=True)
                if original and (level is Level.INSTANCE or new != original)
            }
            received = await receiver.receive(modified, origin, metadata=metadata)
        except OrthancError:
            if not options.permissive:
                raise
            log.warning("modification failed instance=%s", instance_id, exc_info=True)
            outcome.failed_count += 1
            continue
        outcome.instances_count += 1
        for level, original, new in zip(Level, originals, received.parsed.ids, strict=True):
            outcome.mapping.setdefault(level, {})[original] = new
        if not options.keep_source:
            if delete_original is not None:
                await delete_original(instance_id)
            else:
                await index.delete_resource(Level.INSTANCE, instance_id)
        if progress is not None:
            await progress(position + 1, len(instances))
    return outcome


# -- as a job (Asynchronous) ---------------------------------------------------------------
#: Orthanc's job type of a resource modification or anonymization.
JOB_TYPE = "ResourceModification"
DESCRIPTION = "REST API"


def job_content(outcome: ModificationOutcome, level: Level | None, public_id: str | None) -> dict[str, Any]:
    """Return Orthanc's public content of a modification job (= the synchronous answer).

    With a level and ID, `ID`/`Path`/`Type`/`PatientID` name the copy of that
    resource; without (bulk), `Resources` lists the copies at every level.
    """
    content: dict[str, Any] = {
        "Description": DESCRIPTION,
        "FailedInstancesCount": outcome.failed_count,
        "InstancesCount": outcome.instances_count,
        "IsAnonymization": outcome.is_anonymization,
    }
    if level is None or public_id is None:
        content["Resources"] = [
            {"ID": new_id, "Path": resource_path(each, new_id), "Type": each.value}
            for each in reversed(Level)
            for new_id in dict.fromkeys(outcome.mapping.get(each, {}).values())
        ]
        return content
    new_id = outcome.new_id(level, public_id)
    if new_id is not None:
        patients = list(outcome.mapping.get(Level.PATIENT, {}).values())
        content.update(
            {"ID": new_id, "Path": resource_path(level, new_id), "Type": level.value,
             "PatientID": patients[0] if patients else None}
        )  # fmt: skip
    return content


def job_payload(
    body: dict[str, Any],
    modification: Modification,
    instances: list[str],
    level: Level | None,
    public_id: str | None,
    origin: Origin | None = None,
) -> dict[str, Any]:
    """Return what a worker needs to run (and resume) a modification job, with the
    origin of the request (the copies' RemoteIP and HttpUsername metadata)."""
    return {
        "Origin": None if origin is None else {
            "Protocol": origin.protocol, "RemoteIp": origin.remote_ip,
            "HttpUsername": origin.http_username,
        },
        "Body": body,
        "Level": modification.level.value,
        "IsAnonymization": modification.is_anonymization,
        "Replacements": {f"{tag:08x}": value for tag, value in modification.replacements.items()},
        "Resource": {"Level": level.value, "ID": public_id} if level and public_id else None,
        "Instances": instances,
        "Done": 0,
        "UidMap": [],
        "Mapping": {},
        "Failed": 0,
        "Count": 0,
    }


def modification_from_payload(payload: dict[str, Any]) -> tuple[Modification, ModificationOutcome]:
    """Rebuild a job's modification (with the UIDs already mapped) and its outcome so far."""
    from dicomkeep.common.modification import parse_anonymize_request, parse_modify_request

    body = payload["Body"]
    if payload["IsAnonymization"]:
        modification, _ = parse_anonymize_request(body)
    else:
        modification = parse_modify_request(body, Level(payload["Level"]))
    for tag, value in payload.get("Replacements", {}).items():
        modification.replace_tag(int(tag, 16), value)
    for level, original, mapped in payload.get("UidMap", []):
        modification.uid_map[(Level(level), original)] = mapped
    outcome = ModificationOutcome(
        is_anonymization=modification.is_anonymization,
        instances_count=int(payload.get("Count", 0)),
        failed_count=int(payload.get("Failed", 0)),
        mapping={Level(level): dict(ids) for level, ids in payload.get("Mapping", {}).items()},
    )
    return modification, outcome


def origin_from_payload(payload: dict[str, Any]) -> Origin:
    """Return the origin recorded by `job_payload` (a REST call without one)."""
    recorded = payload.get("Origin") or {}
    return Origin(
        protocol=recorded.get("Protocol", "RestApi"),
        remote_ip=recorded.get("RemoteIp", ""),
        http_username=recorded.get("HttpUsername", ""),
    )


def checkpoint_payload(
    payload: dict[str, Any], modification: Modification, outcome: ModificationOutcome, done: int
) -> dict[str, Any]:
    """Return the payload recording that `done` instances were handled."""
    return {
        **payload,
        "Done": done,
        "UidMap": [[level.value, original, mapped] for (level, original), mapped in modification.uid_map.items()],
        "Mapping": {level.value: ids for level, ids in outcome.mapping.items()},
        "Failed": outcome.failed_count,
        "Count": outcome.instances_count,
    }
