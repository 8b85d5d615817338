"""Queueing DICOM jobs: their types, content and payload, submission and waiting.

Used by the gateway (`/modalities/{name}/store|move`, `/queries/{id}/retrieve`)
and ingest (asynchronous C-MOVE SCP); the jobs service runs them. A job's
`content` is Orthanc's public `Content`; its `payload` holds what the worker
needs (the modality resolved at submission, the instances) and, under
`Checkpoint`, how far it got (ORTHANC_API.md §10).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from dicomkeep.common.events import JOBS_QUEUE, SCHEMA_VERSION, RunJob
from dicomkeep.common.index import JobRecord, JobStore
from dicomkeep.common.modalities import Modality
from dicomkeep.common.ports.bus import Bus
from pydicom.datadict import tag_for_keyword

log = logging.getLogger(__name__)

DICOM_MODALITY_STORE = "DicomModalityStore"
DICOM_MOVE_SCU = "DicomMoveScu"
REST_API = "REST API"


def job_path(job_id: str) -> str:
    """Return the REST path of a job."""
    return f"/jobs/{job_id}"


async def wake_workers(bus: Bus, job_id: str) -> None:
    """Tell the jobs workers that a job is Pending (best effort: they also poll)."""
    try:
        await bus.publish(
            "",
            JOBS_QUEUE,
            RunJob(job_id=job_id).model_dump_json().encode(),
            {"x-dicomkeep-type": "RunJob", "x-dicomkeep-schema": SCHEMA_VERSION},
        )
    except Exception:
        log.warning("could not wake the jobs workers job_id=%s", job_id, exc_info=True)


async def submit(
    store: JobStore,
    bus: Bus,
    job_type: str,
    content: dict[str, Any],
    payload: dict[str, Any],
    priority: int = 0,
) -> JobRecord:
    """Queue a job (JobSubmitted goes out through the outbox) and wake the workers."""
    job = await store.submit_job(job_type, content, payload, priority)
    log.info("job submitted job_id=%s type=%s priority=%d", job.id, job_type, priority)
    await wake_workers(bus, job.id)
    return job


async def wait_for_job(store: JobStore, job_id: str, *, poll: float = 0.2) -> JobRecord | None:
    """Wait until a job completed (Success or Failure); None if it left the history.

    Polls the index, so a job run by any replica is seen. No deadline: Orthanc's
    synchronous calls wait as long as the job runs.
    """
    delay = 0.01
    while True:
        job = await store.get_job(job_id)
        if job is None or job.state.is_done:
            return job
        await asyncio.sleep(delay)
        delay = min(delay * 2, poll)


def modality_payload(modality: Modality, local_aet: str, timeout: float) -> dict[str, Any]:
    """Return how a job reaches a modality: its object form, our AET and the timeout."""
    return {"Modality": modality.to_json(), "LocalAet": local_aet, "Timeout": timeout}


def store_job(
    modality: Modality,
    instances: list[str],
    parents: list[str],
    *,
    local_aet: str,
    timeout: float,
    description: str = REST_API,
    permissive: bool = False,
    originator: tuple[str, int] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (content, payload) of a DicomModalityStore job (C-STORE SCU).

    Mirrors Orthanc's DicomModalityStoreJob: `ParentResources` are the IDs given,
    `InstancesCount` their instances; `originator` = (MoveOriginatorAET,
    MoveOriginatorID) when the job performs a C-MOVE's sub-operations.
    """
    content: dict[str, Any] = {
        "Description": description,
        "InstancesCount": len(instances),
        "FailedInstancesCount": 0,
        "LocalAet": local_aet,
        "RemoteAet": modality.aet,
        "ParentResources": parents,
    }
    payload = modality_payload(modality, local_aet, timeout)
    payload.update({"Instances": instances, "Permissive": permissive})
    if originator is not None:
        content["MoveOriginatorAET"], content["MoveOriginatorID"] = originator
        payload["MoveOriginator"] = list(originator)
    return content, payload


def tag_keyed(query: dict[str, str]) -> dict[str, str]:
    """Return an identifier with `gggg,eeee` keys (Orthanc's DicomToJsonFormat_Short)."""
    keyed: dict[str, str] = {}
    for key, value in query.items():
        tag = tag_for_keyword(key)
        keyed[f"{tag >> 16:04x},{tag & 0xFFFF:04x}" if tag is not None else key.lower()] = value
    return keyed


def move_job(
    modality: Modality,
    level: str,
    queries: list[dict[str, str]],
    target_aet: str,
    *,
    local_aet: str,
    timeout: float,
    description: str = REST_API,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (content, payload) of a DicomMoveScu job: one C-MOVE per identifier.

    `queries` are identifiers by keyword (`{"StudyInstanceUID": "1.2.3"}`) at
    `level` (`PATIENT`, `STUDY`, `SERIES`, `IMAGE`). Content as Orthanc's
    DicomMoveScuJob: `Query` lists the identifiers sent (with QueryRetrieveLevel),
    keyed by tag (`{"0008,0052": "STUDY", "0020,000d": "1.2.3"}`).
    """
    sent = [{"QueryRetrieveLevel": level, **query} for query in queries]
    content: dict[str, Any] = {
        "Description": description,
        "LocalAet": local_aet,
        "RemoteAet": modality.aet,
        "TargetAet": target_aet,
        "Query": [tag_keyed(query) for query in sent],
    }
    payload = modality_payload(modality, local_aet, timeout)
    payload.update({"Queries": sent, "TargetAet": target_aet})
    return content, payload
