"""Integration fixtures: a DicomKeep server per test module, in each mode."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import Server, allinone_server, blob_keys, cluster_server, wait_until

MODES = ["allinone", "distributed"]


@pytest.fixture(scope="module", params=MODES)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A running server in the requested mode, shared by one test module."""
    tmp = tmp_path_factory.mktemp(f"server-{request.param}")
    extra = getattr(request.module, "SERVER_CONFIG", {})
    start = allinone_server if request.param == "allinone" else cluster_server
    with start(tmp, extra) as running:
        yield running


@pytest.fixture
def clean(server: Server) -> Iterator[Server]:
    """The server with every patient deleted before the test."""
    with server.client() as client:
        for patient in client.get("/patients").json():
            client.delete(f"/patients/{patient}")
    wait_until(lambda: blob_keys(server) == [], what="blobs of deleted patients to go")
    yield server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent.name == "integration":
            item.add_marker(pytest.mark.integration)
