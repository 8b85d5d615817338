"""Fixtures of the gateway tests: the app on embedded adapters in tmp_path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dicomkeep.common.adapters.file_blobs import FileBlobStore
from dicomkeep.common.adapters.local_bus import LocalBus
from dicomkeep.common.adapters.sqlite_db import SqliteDatabase
from dicomkeep.common.dicom.receiving import Receiver, Submit
from dicomkeep.common.index import Index
from dicomkeep.common.secrets import KeySource
from dicomkeep.common.settings import Settings
from dicomkeep.gateway.app import create_app
from dicomkeep.gateway.context import GatewayContext
from gateway_support import LOCAL_CLIENT, Gateway, client_for

#: A fixed Fernet key (32 bytes, url-safe base64) for the peers' secrets.
TEST_KEY = "tCVk6Xo0PaTe1iJ4hfm3pW5x2bK3Bd8c3MPRdpZnUGk="


@pytest.fixture
def settings() -> Settings:
    """The settings of the app under test; tests override the fixture to change them."""
    return Settings()


@pytest.fixture
def submit() -> Submit | None:
    """The Submit of the Receiver; None = the index's store transaction directly."""
    return None


@pytest.fixture
async def gateway(
    tmp_path: Path, settings: Settings, submit: Submit | None
) -> AsyncIterator[Gateway]:
    # As all-in-one: a key seals the passwords of peers set over REST.
    index = Index(SqliteDatabase(tmp_path / "index"), secrets=KeySource(key=TEST_KEY))
    await index.open()
    blobs = FileBlobStore(tmp_path / "storage")
    bus = LocalBus()
    await bus.start()
    receiver = Receiver(
        blobs,
        submit or index.store_instance,
        compression=settings.storage_compression,
        overwrite=settings.overwrite_instances,
    )
    ctx = GatewayContext(settings, index, blobs, bus, receiver)
    app = create_app(ctx)
    clients: list[httpx.AsyncClient] = []

    def make_client(client: tuple[str, int] = LOCAL_CLIENT, **kwargs: Any) -> httpx.AsyncClient:
        made = client_for(app, client, **kwargs)
        clients.append(made)
        return made

    gateway = Gateway(ctx, index, make_client(), make_client)
    try:
        yield gateway
    finally:
        for made in clients:
            await made.aclose()
        await bus.close()
        await index.close()
