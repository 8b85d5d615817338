"""Versioned schema migrations of the index, on SQLite and PostgreSQL.

A database created by the DicomKeep before migrations (its DDL applied on open
without any version; that DDL is kept verbatim as migration 1) is upgraded when
the index opens it and keeps every row; migrations run once, in one
transaction, never downwards.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from importlib import resources
from pathlib import Path

import pytest
from dicomkeep.common.events import AttachmentInfo, StoreStatus
from dicomkeep.common.ids import Level
from dicomkeep.common.index import Expected, Index
from dicomkeep.common.index.schema import (
    SchemaError,
    migrate,
    migrations_for,
    schema_version,
    split_statements,
)
from dicomkeep.common.ports.database import Database
from index_support import command, fresh_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
async def databases(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[], Database]]:
    async with fresh_database(request.param, tmp_path, "schema") as factory:
        yield factory


async def create_previous_schema(db: Database) -> None:
    """Open `db` as DicomKeep did before migrations: the DDL in one transaction,
    no version recorded anywhere."""
    await db.open()
    async with db.transaction() as tx:
        for statement in migrations_for(db.dialect)[0].statements:
            await tx.execute(statement)


async def recorded_version(db: Database) -> tuple[int, int]:
    """Return (schema version, number of migration rows) of an open database."""
    async with db.transaction(readonly=True) as tx:
        rows = await tx.fetchval("SELECT COUNT(*) FROM schema_migrations")
        return await schema_version(tx), int(rows)


async def has_index(db: Database, name: str) -> bool:
    catalog = (
        "SELECT name FROM sqlite_master WHERE type = 'index' AND name = $1"
        if db.dialect == "sqlite"
        else "SELECT indexname FROM pg_indexes WHERE indexname = $1"
    )
    async with db.transaction(readonly=True) as tx:
        return await tx.fetchval(catalog, name) is not None


async def snapshot(index: Index, instance: str, study: str, job_id: str) -> dict[str, object]:
    """Everything the test stored, as the index answers it."""
    return {
        "instance": await index.get_resource(Level.INSTANCE, instance),
        "study": await index.get_resource(Level.STUDY, study),
        "metadata": await index.get_metadata(Level.INSTANCE, instance),
        "attachments": await index.list_attachments(Level.STUDY, study),
        "changes": await index.get_changes(0, 100),
        "statistics": await index.statistics(),
        "job": await index.jobs.get_job(job_id),
        "modalities": await index.jobs.modality_overrides(),
        "peers": await index.peers.peer_overrides(),
        "property": await index.get_property("Custom"),
        "unstable": await index.unstable_resources(),
    }


async def test_previous_schema_is_upgraded_with_its_data(
    databases: Callable[[], Database],
) -> None:
    old_db = databases()
    await create_previous_schema(old_db)
    old = Index(old_db)  # the schema is there: use it as the previous DicomKeep did
    stored = command("P1")
    assert (await old.store_instance(stored)).status is StoreStatus.SUCCESS
    assert (await old.store_instance(command("P2"))).status is StoreStatus.SUCCESS
    await old.set_metadata(Level.INSTANCE, stored.instance_id, 1024, "note", None,
                           check_revisions=False)
    await old.set_metadata(Level.INSTANCE, stored.instance_id, 1024, "note 2",
                           Expected(0, hashlib.md5(b"note").hexdigest()), check_revisions=True)
    user_file = AttachmentInfo(
        content_type=1025, uuid="user-blob", uncompressed_size=3,
        uncompressed_md5="m", compressed_size=3, compressed_md5="m",
    )
    await old.set_attachment(Level.STUDY, stored.study_id, user_file, None,
                             check_revisions=False)
    await old.set_protected(stored.patient_id, True)
    job = await old.jobs.submit_job("DicomModalityStore", {"Count": 1}, {"Checkpoint": 0}, 3)
    await old.jobs.set_modality("pacs", {"AET": "PACS", "Host": "h", "Port": 104})
    await old.peers.set_peer("far", {"Url": "http://far:8042/"})
    await old.set_property("Custom", "kept")
    before = await snapshot(old, stored.instance_id, stored.study_id, job.id)
    await old_db.close()

    async with Index(databases()) as upgraded:
        assert await snapshot(upgraded, stored.instance_id, stored.study_id, job.id) == before
        latest = migrations_for(upgraded.db.dialect)[-1].version
        assert latest >= 2
        assert await recorded_version(upgraded.db) == (latest, latest)
        assert await has_index(upgraded.db, "pending_blobs_since")
        # The upgraded database goes on where the old one stopped.
        reply = await upgraded.store_instance(command("P3"))
        assert reply.status is StoreStatus.SUCCESS
        assert reply.seq is not None and reply.seq > before["changes"].last  # type: ignore[attr-defined]
        assert await upgraded.get_resource(Level.INSTANCE, stored.instance_id) == before["instance"]


async def test_migrations_run_once_and_step_by_step(databases: Callable[[], Database]) -> None:
    db = databases()
    await db.open()
    try:
        assert await migrate(db, target=1) == 1
        assert await recorded_version(db) == (1, 1)
        assert not await has_index(db, "pending_blobs_since")
        latest = migrations_for(db.dialect)[-1].version
        assert await migrate(db) == latest
        assert await migrate(db) == latest
        assert await recorded_version(db) == (latest, latest)
        assert await has_index(db, "pending_blobs_since")
    finally:
        await db.close()


async def test_replicas_opening_together_migrate_once(databases: Callable[[], Database]) -> None:
    first, second = Index(databases()), Index(databases())
    await asyncio.gather(first.open(), second.open())
    try:
        latest = migrations_for(first.db.dialect)[-1].version
        assert await recorded_version(first.db) == (latest, latest)
        assert (await second.store_instance(command("P1"))).status is StoreStatus.SUCCESS
        assert await first.list_resources(Level.PATIENT) == [command("P1").patient_id]
    finally:
        await first.close()
        await second.close()


async def test_a_newer_schema_is_refused(databases: Callable[[], Database]) -> None:
    async with Index(databases()) as index:
        latest = migrations_for(index.db.dialect)[-1].version
        async with index.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO schema_migrations(version, name, applied_at) VALUES ($1, $2, $3)",
                latest + 1, "from_the_future", "20990101T000000",
            )
    with pytest.raises(SchemaError, match=f"version {latest + 1}, newer"):
        await Index(databases()).open()


def test_split_statements_ignores_comments_and_inner_semicolons() -> None:
    script = (
        "-- a comment; with a semicolon\n"
        "CREATE TABLE t (a TEXT DEFAULT ';');\n\n"
        "INSERT INTO t(a) VALUES ('x');  \n"
        "-- trailing comment\n"
    )
    assert split_statements(script) == [
        "CREATE TABLE t (a TEXT DEFAULT ';')",
        "INSERT INTO t(a) VALUES ('x')",
    ]


def test_both_dialects_have_the_same_migrations() -> None:
    sqlite, postgres = migrations_for("sqlite"), migrations_for("postgres")
    assert [(m.version, m.name) for m in sqlite] == [(m.version, m.name) for m in postgres]
    assert len(sqlite[0].statements) == len(postgres[0].statements)


@pytest.mark.parametrize(
    ("name", "sha256"),
    [
        ("0001_initial.sqlite.sql", "f25e5cc992637fa931c51e1843e839c72d2a526bd1a9b8d9690e4a9d023362a8"),
        ("0001_initial.postgres.sql", "44dea344fbc1a56033949b545d8dc9ad2de9379eb020eacaf496ce76b0b77419"),
    ],
)
def test_migration_1_is_never_edited(name: str, sha256: str) -> None:
    """Migration 1 is the schema databases were created with: add migrations instead."""
    data = (
        resources.files("dicomkeep.common.index").joinpath("migrations", name).read_bytes()
    )
    assert hashlib.sha256(data).hexdigest() == sha256
