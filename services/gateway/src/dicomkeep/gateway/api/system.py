"""System routes: `/system`, `/statistics`, `/tools/lookup|now|now-local|generate-uid`,
`/tools/execute-script`."""

from __future__ import annotations

import hashlib
import logging
import socket
from importlib import metadata
from typing import Any

from dicomkeep.common.dicom.instance import MAIN_DICOM_TAGS_SIGNATURES
from dicomkeep.common.errors import NoAnswer
from dicomkeep.common.ids import Level
from dicomkeep.common.settings import Settings
from dicomkeep.common.timestamps import now_local_stamp, now_stamp
from dicomkeep.gateway.deps import IndexDep, SettingsDep
from dicomkeep.gateway.responses import OrthancJSONResponse, empty, plain
from dicomkeep.gateway.security import is_http_server_secure
from dicomkeep.gateway.views import reference
from fastapi import APIRouter, Request
from pydicom.uid import generate_uid
from starlette.responses import Response

router = APIRouter()
log = logging.getLogger(__name__)

#: The Orthanc release whose REST behaviour DicomKeep follows.
ORTHANC_VERSION = "1.12.4"
API_VERSION = 24
DATABASE_VERSION = 6
MEGABYTE = 1024 * 1024
_GENERATED_LEVELS = ("patient", "study", "series", "instance")


def dicomkeep_version() -> str:
    """Return the installed version of dicomkeep-gateway ("" when not installed)."""
    try:
        return metadata.version("dicomkeep-gateway")
    except metadata.PackageNotFoundError:
        return ""


def main_tags_signature(level: Level) -> str:
    """Return Orthanc's signature of a level's main tags: `gggg,eeee;...` in tag order."""
    return MAIN_DICOM_TAGS_SIGNATURES[level]


def database_server_identifier(settings: Settings) -> str:
    """Return `DatabaseServerIdentifier`: the option, else a hash of host name and port."""
    if settings.database_server_identifier:
        return settings.database_server_identifier
    seed = f"{settings.http_port}-{socket.gethostname()}"
    return hashlib.sha1(seed.encode("utf-8")).hexdigest()


def system_json(settings: Settings) -> dict[str, Any]:
    """Return the `/system` object (Orthanc 1.12.4 fields plus `DicomKeepVersion`)."""
    return {
        "ApiVersion": API_VERSION,
        "CheckRevisions": settings.check_revisions,
        "DatabaseBackendPlugin": None,
        "DatabaseServerIdentifier": database_server_identifier(settings),
        "DatabaseVersion": DATABASE_VERSION,
        "DicomAet": settings.dicom_aet,
        "DicomKeepVersion": dicomkeep_version(),
        "DicomPort": settings.dicom_port,
        "HasLabels": True,
        "HttpPort": settings.http_port,
        "IngestTranscoding": "",
        "IsHttpServerSecure": is_http_server_secure(settings),
        "MainDicomTags": {level.value: main_tags_signature(level) for level in Level},
        "MaximumPatientCount": settings.maximum_patient_count,
        "MaximumStorageMode": settings.maximum_storage_mode,
        "MaximumStorageSize": settings.maximum_storage_size,
        "Name": settings.name,
        "OverwriteInstances": settings.overwrite_instances,
        "PluginsEnabled": False,
        "StorageAreaPlugin": None,
        "StorageCompression": settings.storage_compression,
        "UserMetadata": dict(settings.user_metadata),
        "Version": ORTHANC_VERSION,
    }


@router.get("/system")
async def get_system(settings: SettingsDep) -> Response:
    """Answer the server description (ORTHANC_API.md §2.7)."""
    return OrthancJSONResponse(system_json(settings))


@router.get("/statistics")
async def get_statistics(index: IndexDep) -> Response:
    """Answer global counts and sizes: sizes as strings, `*MB` as integers."""
    stats = await index.statistics()
    return OrthancJSONResponse(
        {
            "CountInstances": stats.count_instances,
            "CountPatients": stats.count_patients,
            "CountSeries": stats.count_series,
            "CountStudies": stats.count_studies,
            "TotalDiskSize": str(stats.disk_size),
            "TotalDiskSizeMB": stats.disk_size // MEGABYTE,
            "TotalUncompressedSize": str(stats.uncompressed_size),
            "TotalUncompressedSizeMB": stats.uncompressed_size // MEGABYTE,
        }
    )


@router.post("/tools/lookup")
async def lookup(request: Request, index: IndexDep) -> Response:
    """Find resources whose PatientID or Study/Series/SOP Instance UID is the body.

    Answers `[{"ID", "Path", "Type"}]`, possibly several levels, possibly empty.
    """
    identifier = (await request.body()).decode("utf-8", errors="replace").strip()
    found = await index.lookup(identifier)
    return OrthancJSONResponse([reference(level, public_id) for level, public_id in found])


@router.get("/tools/now")
async def tools_now() -> Response:
    """Answer the UTC time, `YYYYMMDDTHHMMSS`."""
    return plain(now_stamp())


@router.get("/tools/now-local")
async def tools_now_local() -> Response:
    """Answer the local time, `YYYYMMDDTHHMMSS`."""
    return plain(now_local_stamp())


@router.get("/tools/generate-uid")
async def tools_generate_uid(request: Request) -> Response:
    """Answer a new DICOM UID; `level` must be patient, study, series or instance.

    A missing or other level gives no answer (empty 404), as Orthanc.
    """
    if request.query_params.get("level") not in _GENERATED_LEVELS:
        raise NoAnswer()
    return plain(generate_uid())


@router.post("/tools/execute-script")
async def execute_script() -> Response:
    """Answer 403 with an empty body: DicomKeep runs no Lua.

    This is exactly Orthanc's answer with `ExecuteLuaEnabled` false (its default);
    `ExecuteLuaEnabled: true` is refused at start.
    """
    log.error("The URI /tools/execute-script is disallowed: DicomKeep does not run Lua scripts")
    return empty(403)
