"""Pick the adapters of each port from the settings and open them: one life cycle.

`DicomKeep.Mode` is `allinone` (SQLite, files, in-process bus, in-memory clock)
or `distributed` (PostgreSQL, S3, RabbitMQ, Redis). Drivers are imported only
when their adapter is chosen.

Every adapter is an async context manager. A composition root (a service's
`start`, the all-in-one process) keeps one `contextlib.AsyncExitStack`, asks
`open_adapters` for what it needs, and closes everything, in reverse order, with
`stack.aclose()`: adapters it was given are used as they are and never closed by it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from dicomkeep.common.index import Index
from dicomkeep.common.ports.blobs import BlobStore
from dicomkeep.common.ports.bus import Bus
from dicomkeep.common.ports.clock import StabilityClock
from dicomkeep.common.settings import Settings

if TYPE_CHECKING:  # the drivers are imported only when their adapter is chosen
    from dicomkeep.common.adapters.file_blobs import FileBlobStore
    from dicomkeep.common.adapters.local_bus import LocalBus
    from dicomkeep.common.adapters.memory_clock import MemoryClock
    from dicomkeep.common.adapters.rabbit_bus import RabbitBus
    from dicomkeep.common.adapters.redis_clock import RedisClock
    from dicomkeep.common.adapters.s3_blobs import S3BlobStore


def is_distributed(settings: Settings) -> bool:
    """True when the settings ask for the distributed adapters."""
    return settings.dicomkeep.mode == "distributed"


def make_index(settings: Settings) -> Index:
    """Return the (unopened) index: PostgreSQL or SQLite under IndexDirectory."""
    from dicomkeep.common.index import StorageLimits
    from dicomkeep.common.secrets import key_source

    limits = StorageLimits.from_settings(settings)
    secrets = key_source(settings)
    if is_distributed(settings):
        from dicomkeep.common.adapters.postgres_db import PostgresDatabase

        pg = settings.postgresql
        return Index(
            PostgresDatabase(pg.dsn(), size=pg.index_connections_count),
            max_retries=pg.maximum_connection_retries,
            limits=limits,
            secrets=secrets,
        )
    from dicomkeep.common.adapters.sqlite_db import SqliteDatabase

    return Index(
        SqliteDatabase(Path(settings.effective_index_directory) / "index"), limits=limits,
        secrets=secrets,
    )


def make_blobs(settings: Settings) -> FileBlobStore | S3BlobStore:
    """Return the (unopened) blob store: S3 or files under StorageDirectory.

    `DicomKeep.BlobStore` chooses; by default S3 in distributed mode, files otherwise.
    """
    kind = settings.dicomkeep.blob_store or ("s3" if is_distributed(settings) else "files")
    if kind == "s3":
        from dicomkeep.common.adapters.s3_blobs import S3BlobStore

        s3 = settings.aws_s3_storage
        return S3BlobStore(s3.endpoint, s3.bucket_name, s3.access_key, s3.secret_key, s3.region)
    from dicomkeep.common.adapters.file_blobs import FileBlobStore

    return FileBlobStore(Path(settings.storage_directory))


def make_bus(settings: Settings) -> LocalBus | RabbitBus:
    """Return the (unstarted) bus: RabbitMQ or in-process."""
    if is_distributed(settings):
        return make_public_bus(settings)
    from dicomkeep.common.adapters.local_bus import LocalBus

    return LocalBus()


def make_public_bus(settings: Settings) -> RabbitBus:
    """Return a RabbitMQ bus (also used to mirror changes out of an all-in-one process)."""
    from dicomkeep.common.adapters.rabbit_bus import RabbitBus

    return RabbitBus(settings.rabbitmq.url, prefetch=settings.rabbitmq.prefetch)


def make_clock(settings: Settings) -> MemoryClock | RedisClock:
    """Return the (unopened) stability clock: Redis or in-memory."""
    if is_distributed(settings):
        from dicomkeep.common.adapters.redis_clock import RedisClock

        return RedisClock(settings.redis.url)
    from dicomkeep.common.adapters.memory_clock import MemoryClock

    return MemoryClock()


@dataclass(frozen=True)
class Adapters:
    """The opened adapters a service works with; None where it needs none.

    `public_bus` is the all-in-one mode's RabbitMQ mirror of the change events
    (`RabbitMQ.PublishChanges`); None otherwise.
    """

    index: Index | None = None
    blobs: BlobStore | None = None
    bus: Bus | None = None
    clock: StabilityClock | None = None
    public_bus: Bus | None = None


async def open_adapters(
    stack: AsyncExitStack,
    settings: Settings,
    given: Adapters | None = None,
    *,
    needs: Iterable[str],
) -> Adapters:
    """Return the adapters named in `needs`, opened; those not `given` are entered on `stack`.

    Names are `Adapters` fields: "index", "blobs", "bus", "clock", "public_bus".

    Given adapters are used as they are (their owner closes them); the others are
    chosen from the settings and closed, in reverse order, when `stack` is. On a
    failure, what was entered stays on `stack` for the caller to close.
    `public_bus` is opened only in the all-in-one mode with `RabbitMQ.PublishChanges`.
    """
    opened = given or Adapters()
    wanted = set(needs)
    unknown = wanted - set(Adapters.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown adapters: {sorted(unknown)}")
    index, blobs, bus, clock, public_bus = (
        name in wanted for name in ("index", "blobs", "bus", "clock", "public_bus")
    )
    if index and opened.index is None:
        opened = replace(opened, index=await stack.enter_async_context(make_index(settings)))
    if blobs and opened.blobs is None:
        opened = replace(opened, blobs=await stack.enter_async_context(make_blobs(settings)))
    if bus and opened.bus is None:
        opened = replace(opened, bus=await stack.enter_async_context(make_bus(settings)))
    mirrors = settings.rabbitmq.publish_changes and not is_distributed(settings)
    if public_bus and mirrors and opened.public_bus is None:
        mirror = await stack.enter_async_context(make_public_bus(settings))
        opened = replace(opened, public_bus=mirror)
    if clock and opened.clock is None:
        opened = replace(opened, clock=await stack.enter_async_context(make_clock(settings)))
    return opened


async def cancel(task: asyncio.Task[None]) -> None:
    """Cancel a service's background task and wait for it (a stack callback at stop)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
