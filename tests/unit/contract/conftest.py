"""The `index` fixture of the index contract suites: SQLite always, PostgreSQL
under the `integration` marker (a private database per test module)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dicomkeep.common.index import Index
from index_support import open_index


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
async def index(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Index]:
    purpose = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    async with open_index(request.param, tmp_path, purpose) as opened:
        yield opened
