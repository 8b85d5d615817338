"""The DICOM server's run-time options (Orthanc 1.9+): `/tools/accepted-transfer-syntaxes`,
`/tools/unknown-sop-class-accepted`, `/tools/default-encoding`.

The values live in the index (`dicomkeep.common.scp_options`), so a PUT on any
gateway reaches every ingest replica at its next association.
"""

from __future__ import annotations

from dicomkeep.common import scp_options
from dicomkeep.gateway.deps import IndexDep, SettingsDep
from dicomkeep.gateway.responses import OrthancJSONResponse, plain
from fastapi import APIRouter, Request
from starlette.responses import Response

router = APIRouter()


@router.get("/tools/accepted-transfer-syntaxes")
async def get_accepted_transfer_syntaxes(settings: SettingsDep, index: IndexDep) -> Response:
    """Answer the UIDs of the transfer syntaxes the C-STORE SCP accepts (a JSON array)."""
    options = await scp_options.current(settings, index)
    return OrthancJSONResponse(scp_options.sorted_syntaxes(options.accepted_transfer_syntaxes))


@router.put("/tools/accepted-transfer-syntaxes")
async def put_accepted_transfer_syntaxes(
    request: Request, settings: SettingsDep, index: IndexDep
) -> Response:
    """Set the accepted transfer syntaxes: a UID or pattern (`*`, `?`) as text, or a JSON
    array of them; answers the UIDs now accepted, as Orthanc."""
    patterns = scp_options.parse_syntaxes_body(await request.body())
    await scp_options.store(settings, index, "accepted_transfer_syntaxes", patterns)
    accepted = scp_options.expand_transfer_syntaxes(patterns)
    return OrthancJSONResponse(scp_options.sorted_syntaxes(accepted))


@router.get("/tools/unknown-sop-class-accepted")
async def get_unknown_sop_class_accepted(settings: SettingsDep, index: IndexDep) -> Response:
    """Answer `1` if the C-STORE SCP accepts unknown SOP classes, else `0` (text)."""
    options = await scp_options.current(settings, index)
    return plain("1" if options.unknown_sop_class_accepted else "0")


@router.put("/tools/unknown-sop-class-accepted")
async def put_unknown_sop_class_accepted(
    request: Request, settings: SettingsDep, index: IndexDep
) -> Response:
    """Set whether unknown SOP classes are accepted (`1`/`true`, `0`/`false`); empty text answer."""
    accepted = scp_options.parse_boolean((await request.body()).decode("utf-8", "replace"))
    await scp_options.store(settings, index, "unknown_sop_class_accepted", accepted)
    return plain("")


@router.get("/tools/default-encoding")
async def get_default_encoding(settings: SettingsDep, index: IndexDep) -> Response:
    """Answer the default encoding's name (`Latin1`, `Utf8`, ...), as text."""
    return plain((await scp_options.current(settings, index)).default_encoding)


@router.put("/tools/default-encoding")
async def put_default_encoding(request: Request, settings: SettingsDep, index: IndexDep) -> Response:
    """Set the default encoding (case-insensitive name); answers its canonical name.
    An unknown name answers 400 ParameterOutOfRange and changes nothing."""
    name = scp_options.parse_encoding((await request.body()).decode("utf-8", "replace"))
    await scp_options.store(settings, index, "default_encoding", name)
    return plain(name)
