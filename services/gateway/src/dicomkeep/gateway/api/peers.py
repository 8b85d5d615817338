"""Orthanc peers: `/peers`, `/peers/{name}/...` (ORTHANC_API.md §12).

The effective peers are the `OrthancPeers` option with the REST overrides kept in
the index (`dicomkeep.common.peers`), so every replica answers the same. A store
is an `OrthancPeerStore` job run by the jobs service (`dicomkeep.common.peer_transfer`),
waited for here when synchronous, as Orthanc does.
"""

from __future__ import annotations

from typing import Any

from dicomkeep.common.errors import ErrorCode, NoAnswer, OrthancError
from dicomkeep.common.index import Index
from dicomkeep.common.jobs import submit
from dicomkeep.common.peer_http import HttpOptions, PeerClient, PeerHttpError
from dicomkeep.common.peer_transfer import (
    JOB_TYPE,
    content_of,
    expand_instances,
    new_payload,
    parse_store_body,
)
from dicomkeep.common.peers import Peer, check_name, find_peer, load_peers, parse_peer
from dicomkeep.common.settings import Settings
from dicomkeep.gateway import openapi_bodies
from dicomkeep.gateway.api.jobs import job_answer
from dicomkeep.gateway.args import bool_arg
from dicomkeep.gateway.bodies import parse_json
from dicomkeep.gateway.deps import ContextDep, IndexDep, SettingsDep
from dicomkeep.gateway.responses import OrthancJSONResponse, empty
from fastapi import APIRouter, Request
from starlette.responses import Response

router = APIRouter()

#: What `GET /peers/{name}` lists, as Orthanc.
SUB_ROUTES = ["configuration", "store", "store-straight", "system"]


async def _peer(settings: Settings, index: Index, name: str) -> Peer:
    """Return a peer; 404 *Unknown resource* "No peer with symbolic name" otherwise."""
    peer = await find_peer(settings.orthanc_peers, index.peers, name)
    if peer is None:
        raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"No peer with symbolic name: {name}")
    return peer


@router.get("/peers")
async def list_peers(request: Request, settings: SettingsDep, index: IndexDep) -> Response:
    """Answer the peer names; `?expand` for `{name: public configuration}`."""
    peers = await load_peers(settings.orthanc_peers, index.peers)
    if bool_arg(request, "expand"):
        return OrthancJSONResponse({name: peer.public_json() for name, peer in peers.items()})
    return OrthancJSONResponse(list(peers))


@router.get("/peers/{name}")
async def peer_routes(name: str, settings: SettingsDep, index: IndexDep) -> Response:
    """Answer the sub-routes of a peer; unknown peer -> 404 with an empty body."""
    if await find_peer(settings.orthanc_peers, index.peers, name) is None:
        raise NoAnswer()
    return OrthancJSONResponse(SUB_ROUTES)


@router.get("/peers/{name}/configuration")
async def peer_configuration(name: str, settings: SettingsDep, index: IndexDep) -> Response:
    """Answer the public configuration of a peer (passwords as null)."""
    return OrthancJSONResponse((await _peer(settings, index, name)).public_json())


@router.put("/peers/{name}", openapi_extra=openapi_bodies.PEER)
async def put_peer(name: str, request: Request, index: IndexDep) -> Response:
    """Create or replace a peer from its array or object form; 200 with an empty body.

    Invalid name or form -> 400 *Bad file format*; a body that is not JSON -> 400
    *Cannot parse a JSON document* (Orthanc 1.10.1 answers an empty 404 there).
    The peer is kept in the index: every replica sees it, restarts keep it.
    """
    check_name(name)
    try:
        value = parse_json(await request.body())
    except ValueError as error:
        raise OrthancError(ErrorCode.BAD_JSON, "The body must be a JSON array or object") from error
    peer = parse_peer(name, value)
    await index.peers.set_peer(name, peer.to_json())
    return empty()


@router.delete("/peers/{name}")
async def delete_peer(name: str, settings: SettingsDep, index: IndexDep) -> Response:
    """Forget a peer (configured or not); unknown -> 404 *Accessing an inexistent item*."""
    if await find_peer(settings.orthanc_peers, index.peers, name) is None:
        raise OrthancError(ErrorCode.INEXISTENT_ITEM, f"Unknown Orthanc peer: {name}")
    await index.peers.set_peer(name, None)
    return empty()


@router.get("/peers/{name}/system")
async def peer_system(name: str, settings: SettingsDep, index: IndexDep) -> Response:
    """Answer the peer's `GET /system`; an HTTP error of the peer keeps its status."""
    peer = await _peer(settings, index, name)
    try:
        async with PeerClient(peer, HttpOptions.from_settings(settings)) as client:
            return OrthancJSONResponse(await client.system())
    except PeerHttpError as error:
        if error.remote_status is not None:
            error.http_status = error.remote_status
        raise


@router.post("/peers/{name}/store-straight")
async def peer_store_straight(
    name: str, request: Request, settings: SettingsDep, index: IndexDep
) -> Response:
    """Forward the body (a DICOM file) to the peer's `POST /instances`; answer its JSON.

    Nothing is stored here. Empty body -> 400 *Bad file format*; a failure at the
    peer -> 500 *Error in the network protocol* with the reason in `Details`.
    """
    peer = await _peer(settings, index, name)
    body = await request.body()
    if not body:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Received an empty DICOM file")
    async with PeerClient(peer, HttpOptions.from_settings(settings)) as client:
        answer: Any = await client.post_instances(body)
    return OrthancJSONResponse(answer)


@router.post("/peers/{name}/store")
async def peer_store(
    name: str, request: Request, ctx: ContextDep, settings: SettingsDep, index: IndexDep
) -> Response:
    """Send resources (any level) to a peer as an `OrthancPeerStore` job.

    The job is queued for the jobs service (it shows in `/jobs` either way).
    Synchronous (default): answer the job content once every instance arrived, or
    Orthanc's error body (500 *Error in the network protocol*, the reason in
    `Details`). Asynchronous: answer `{"ID", "Path"}` at once. Unknown peer or
    resource -> 404; bad body -> 400. `Transcode` is refused (400): DicomKeep
    sends the files as stored.
    """
    peer = await _peer(settings, index, name)
    store = parse_store_body(await request.body())
    if store.transcode is not None:
        raise OrthancError(
            ErrorCode.BAD_REQUEST, "Transcode is not supported: files are sent as stored"
        )
    payload = new_payload(peer, store, await expand_instances(index, store.resources))
    if settings.log_exported_resources:
        await index.log_exports(store.resources, name)
    job = await submit(
        index.jobs, ctx.bus, JOB_TYPE, content_of(payload, peer), payload, store.priority
    )
    return await job_answer(ctx, job, store.synchronous)
