"""FastAPI dependencies: the context and each port, taken from `app.state`.

Every dependency is `async def` although none awaits: FastAPI runs a plain
`def` dependency in its thread pool, and the three or four of a read route cost
as many thread hand-offs per request (~15% of a `GET /instances/{id}/file`).
"""

from __future__ import annotations

from typing import Annotated

from dicomkeep.common.dicom.receiving import Receiver
from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.index import Index
from dicomkeep.common.ports.blobs import BlobStore
from dicomkeep.common.settings import Settings
from dicomkeep.common.storage import StorageAccessor
from dicomkeep.gateway.context import GatewayContext
from fastapi import Depends, Request


async def get_context(request: Request) -> GatewayContext:
    """Return the app's context; 503 *Database unavailable* while it is not attached."""
    ctx: GatewayContext | None = getattr(request.app.state, "ctx", None)
    if ctx is None:
        raise OrthancError(ErrorCode.DATABASE_UNAVAILABLE, "The server is starting or stopping")
    return ctx


async def get_index(ctx: Annotated[GatewayContext, Depends(get_context)]) -> Index:
    """Return the index."""
    return ctx.index


async def get_blobs(ctx: Annotated[GatewayContext, Depends(get_context)]) -> BlobStore:
    """Return the BlobStore port."""
    return ctx.blobs


async def get_storage(ctx: Annotated[GatewayContext, Depends(get_context)]) -> StorageAccessor:
    """Return the StorageAccessor over the BlobStore (attachment bytes)."""
    return ctx.storage


async def get_settings(ctx: Annotated[GatewayContext, Depends(get_context)]) -> Settings:
    """Return the settings."""
    return ctx.settings


async def get_receiver(ctx: Annotated[GatewayContext, Depends(get_context)]) -> Receiver:
    """Return the Receiver of uploaded instances."""
    return ctx.receiver


async def get_username(request: Request) -> str:
    """Return the authenticated HTTP user, "" without authentication."""
    return str(getattr(request.state, "http_username", ""))


ContextDep = Annotated[GatewayContext, Depends(get_context)]
IndexDep = Annotated[Index, Depends(get_index)]
BlobsDep = Annotated[BlobStore, Depends(get_blobs)]
StorageDep = Annotated[StorageAccessor, Depends(get_storage)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ReceiverDep = Annotated[Receiver, Depends(get_receiver)]
UsernameDep = Annotated[str, Depends(get_username)]
