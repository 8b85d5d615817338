"""Helpers of the gateway tests: test files, Orthanc IDs, the app under test."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pydicom
from dicomkeep.common.index import Index
from dicomkeep.gateway.context import GatewayContext
from pydicom.data import get_testdata_file

LOCAL_CLIENT = ("127.0.0.1", 123)


def orthanc_id(*parts: str) -> str:
    """Orthanc's formula, written out independently of the code under test."""
    digest = hashlib.sha1("|".join(parts).encode()).hexdigest()
    return "-".join(digest[i : i + 8] for i in range(0, 40, 8))


def dicom_file(name: str) -> bytes:
    """Return the bytes of a pydicom test file bundled with pydicom."""
    path = get_testdata_file(name)
    assert isinstance(path, str), name
    return Path(path).read_bytes()


def variant(name: str = "CT_small.dcm", *, remove: tuple[str, ...] = (), **values: Any) -> bytes:
    """Return a pydicom test file with some attributes replaced or removed."""
    dataset = pydicom.dcmread(io.BytesIO(dicom_file(name)))
    for keyword, value in values.items():
        setattr(dataset, keyword, value)
    for keyword in remove:
        if keyword in dataset:
            delattr(dataset, keyword)
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


@dataclass
class Gateway:
    """One app with its adapters and a client on it."""

    ctx: GatewayContext
    index: Index
    client: httpx.AsyncClient
    make_client: Callable[..., httpx.AsyncClient]

    async def upload(self, data: bytes) -> dict[str, Any]:
        response = await self.client.post("/instances", content=data)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer


def client_for(
    app: Any,
    client: tuple[str, int] = LOCAL_CLIENT,
    *,
    raise_app_exceptions: bool = True,
    **kwargs: Any,
) -> httpx.AsyncClient:
    """Return an httpx client calling the ASGI app from the given address."""
    transport = httpx.ASGITransport(
        app=app, client=client, raise_app_exceptions=raise_app_exceptions
    )
    return httpx.AsyncClient(transport=transport, base_url="http://localhost", **kwargs)


