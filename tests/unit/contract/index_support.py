"""Support of the index contract suites on recycling and stability: an index on
SQLite or on a private PostgreSQL database, and StoreInstance commands."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from backends import PG_ADMIN_DSN, pg_dsn
from dicomkeep.common.adapters.postgres_db import PostgresDatabase
from dicomkeep.common.adapters.sqlite_db import SqliteDatabase
from dicomkeep.common.events import AttachmentInfo, StoreInstance
from dicomkeep.common.ids import Level, hierarchy_ids
from dicomkeep.common.index import Index, StorageLimits
from dicomkeep.common.ports.database import Database

MB = 1024 * 1024


async def _admin(statement: str) -> None:
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


@asynccontextmanager
async def open_index(
    kind: str, tmp_path: Path, purpose: str, limits: StorageLimits | None = None
) -> AsyncIterator[Index]:
    """Yield an opened index: SQLite under `tmp_path`, or a fresh PostgreSQL database
    private to this process and `purpose` (dropped afterwards)."""
    if kind == "sqlite":
        idx = Index(SqliteDatabase(tmp_path / "index"), limits=limits)
        await idx.open()
        try:
            yield idx
        finally:
            await idx.close()
        return
    name = f"dicomkeep_contract_{purpose}_{os.getpid()}"
    await _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await _admin(f"CREATE DATABASE {name}")
    idx = Index(PostgresDatabase(pg_dsn(name), size=12), limits=limits)
    await idx.open()
    try:
        yield idx
    finally:
        await idx.close()
        await _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@asynccontextmanager
async def fresh_database(
    kind: str, tmp_path: Path, purpose: str
) -> AsyncIterator[Callable[[], Database]]:
    """Yield a factory of (unopened) `Database` adapters on one empty database:
    a SQLite file under `tmp_path`, or a PostgreSQL database private to this
    process and `purpose`, dropped afterwards."""
    if kind == "sqlite":
        yield lambda: SqliteDatabase(tmp_path / "index")
        return
    name = f"dicomkeep_contract_{purpose}_{os.getpid()}"
    await _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await _admin(f"CREATE DATABASE {name}")
    try:
        yield lambda: PostgresDatabase(pg_dsn(name), size=4)
    finally:
        await _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def reopen(index: Index, limits: StorageLimits | None) -> Index:
    """Return another index on the same (already opened) database, with other limits."""
    return Index(index.db, limits=limits)


def command(
    patient: str,
    study: str | None = None,
    series: str | None = None,
    sop: str | None = None,
    *,
    size: int = 100,
    compressed_size: int | None = None,
) -> StoreInstance:
    """A StoreInstance with one DICOM attachment of `compressed_size` stored bytes."""
    study = study or f"1.2.{int(hashlib.md5(patient.encode()).hexdigest()[:6], 16)}"
    series = series or f"{study}.1"
    sop = sop or f"{series}.1"
    ids = hierarchy_ids(patient, study, series, sop)
    md5 = hashlib.md5(sop.encode()).hexdigest()
    stored = size if compressed_size is None else compressed_size
    return StoreInstance(
        patient_id=ids[0], study_id=ids[1], series_id=ids[2], instance_id=ids[3],
        patient_uid=patient, study_uid=study, series_uid=series, sop_uid=sop,
        main_tags={
            Level.PATIENT: {"PatientID": patient},
            Level.STUDY: {"StudyInstanceUID": study},
            Level.SERIES: {"SeriesInstanceUID": series, "Modality": "CT"},
            Level.INSTANCE: {"SOPInstanceUID": sop},
        },
        metadata={Level.INSTANCE: {}, Level.SERIES: {}},
        attachments=[AttachmentInfo(
            content_type=1, uuid=f"blob-{sop}", uncompressed_size=size,
            uncompressed_md5=md5, compressed_size=stored, compressed_md5=md5,
            compression=0 if compressed_size is None else 1,
        )],
    )
