"""Request bodies of the modality and query routes (ORTHANC_API.md §10, §11.6).

Parsing shared by `api/modalities.py` and `api/queries.py`: JSON bodies, typed
fields, the Synchronous/Asynchronous rule of job-creating routes, and how a
request reaches a modality (our AET, timeout).
"""

from __future__ import annotations

from typing import Any

from dicomkeep.common.dicom import scu as dicom_scu
from dicomkeep.common.dicom.scu import DicomNetworkError, Peer
from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.modalities import Modality
from dicomkeep.common.settings import Settings
from dicomkeep.gateway.bodies import parse_json

#: QueryRetrieveLevel of each `Level` accepted by `/move`.
MOVE_LEVELS = {
    "PATIENT": "PATIENT", "STUDY": "STUDY", "SERIES": "SERIES", "INSTANCE": "IMAGE",
    "IMAGE": "IMAGE",
}  # fmt: skip


def bad_body(details: str) -> OrthancError:
    """Return the 400 *Bad file format* of a malformed body."""
    return OrthancError(ErrorCode.BAD_FILE_FORMAT, details)


def network_error(error: DicomNetworkError) -> OrthancError:
    """Return Orthanc's 500 *Error in the network protocol* for an SCU failure."""
    return OrthancError(ErrorCode.NETWORK_PROTOCOL, str(error))


def json_body(raw: bytes, *, allow_empty: bool = True) -> Any:
    """Parse a JSON body; an empty one gives {} when allowed; else 400."""
    if not raw.strip() and allow_empty:
        return {}
    try:
        return parse_json(raw)
    except ValueError:
        raise bad_body("Must provide a JSON value") from None


def json_object(raw: bytes) -> dict[str, Any]:
    """Parse a body that must be a JSON object; 400 otherwise."""
    body = json_body(raw, allow_empty=False)
    if not isinstance(body, dict):
        raise bad_body("Must provide a JSON object")
    return body


def field(body: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    """Return a typed field, `default` when absent; 400 when of another type."""
    if name not in body:
        return default
    value = body[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise bad_body(f'Field "{name}" has a bad type')
    return value


def synchronous(body: dict[str, Any]) -> bool:
    """`Synchronous` (default true) wins over `Asynchronous` (ORTHANC_API.md §10)."""
    if "Synchronous" in body:
        return bool(field(body, "Synchronous", bool, True))
    return not field(body, "Asynchronous", bool, False)


def peer_for(settings: Settings, modality: Modality, body: dict[str, Any]) -> Peer:
    """Return how to reach a modality: the body's `LocalAet` and `Timeout` win over
    the modality's, then DicomAet and DicomScuTimeout."""
    local = field(body, "LocalAet", str, "") or modality.local_aet or settings.dicom_aet
    timeout = field(body, "Timeout", int, 0) or modality.timeout or settings.dicom_scu_timeout
    return Peer(
        modality.aet, modality.host, modality.port, local, float(timeout or 10),
        manufacturer=modality.manufacturer,
        allow_transcoding=modality.allows("AllowTranscoding"),
    )


def move_identifiers(body: dict[str, Any]) -> tuple[str, list[dict[str, str]]]:
    """Return (QueryRetrieveLevel, identifiers) of a `/move` body; 400 when malformed."""
    level = field(body, "Level", str, None)
    if level is None or level.upper() not in MOVE_LEVELS:
        raise bad_body('Field "Level" must be Patient, Study, Series or Instance')
    resources = field(body, "Resources", list, None)
    if resources is None:
        raise bad_body('Missing field in JSON: "Resources"')
    identifiers: list[dict[str, str]] = []
    for item in resources:
        if not isinstance(item, dict) or not all(isinstance(v, str) for v in item.values()):
            raise bad_body("Each resource must be an object of strings")
        try:
            dicom_scu.identifier(item)
        except (KeyError, ValueError) as error:
            raise OrthancError(ErrorCode.BAD_REQUEST, f"Bad identifier: {error}") from None
        identifiers.append(dict(item))
    return MOVE_LEVELS[level.upper()], identifiers
