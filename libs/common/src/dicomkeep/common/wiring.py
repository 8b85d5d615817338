"""Pick the adapters of each port from the settings (used by composition roots).

`DicomKeep.Mode` is `allinone` (SQLite, files, in-process bus, in-memory clock)
or `distributed` (PostgreSQL, S3, RabbitMQ, Redis). Drivers are imported only
when their adapter is chosen.
"""

from __future__ import annotations

from pathlib import Path

from dicomkeep.common.index import Index
from dicomkeep.common.ports.blobs import BlobStore
from dicomkeep.common.ports.bus import Bus
from dicomkeep.common.ports.clock import StabilityClock
from dicomkeep.common.settings import Settings


def is_distributed(settings: Settings) -> bool:
    """True when the settings ask for the distributed adapters."""
    return settings.dicomkeep.mode == "distributed"


def make_index(settings: Settings) -> Index:
    """Return the (unopened) index: PostgreSQL or SQLite under IndexDirectory."""
    from dicomkeep.common.index import StorageLimits

    limits = StorageLimits.from_settings(settings)
    if is_distributed(settings):
        from dicomkeep.common.adapters.postgres_db import PostgresDatabase

        pg = settings.postgresql
        return Index(
            PostgresDatabase(pg.dsn(), size=pg.index_connections_count),
            max_retries=pg.maximum_connection_retries,
            limits=limits,
        )
    from dicomkeep.common.adapters.sqlite_db import SqliteDatabase

    return Index(
        SqliteDatabase(Path(settings.effective_index_directory) / "index"), limits=limits
    )


async def open_blobs(settings: Settings) -> BlobStore:
    """Return the blob store, ready: S3 (bucket created if missing) or local files."""
    if is_distributed(settings):
        from dicomkeep.common.adapters.s3_blobs import S3BlobStore

        s3 = settings.aws_s3_storage
        store = S3BlobStore(
            s3.endpoint, s3.bucket_name, s3.access_key, s3.secret_key, s3.region
        )
        await store.open()
        return store
    from dicomkeep.common.adapters.file_blobs import FileBlobStore

    return FileBlobStore(Path(settings.storage_directory))


def make_bus(settings: Settings) -> Bus:
    """Return the (unstarted) bus: RabbitMQ or in-process."""
    if is_distributed(settings):
        from dicomkeep.common.adapters.rabbit_bus import RabbitBus

        return RabbitBus(settings.rabbitmq.url, prefetch=settings.rabbitmq.prefetch)
    from dicomkeep.common.adapters.local_bus import LocalBus

    return LocalBus()


def make_public_bus(settings: Settings) -> Bus:
    """Return a RabbitMQ bus for mirroring changes out of an all-in-one process."""
    from dicomkeep.common.adapters.rabbit_bus import RabbitBus

    return RabbitBus(settings.rabbitmq.url, prefetch=settings.rabbitmq.prefetch)


async def open_clock(settings: Settings) -> StabilityClock:
    """Return the stability clock, ready: Redis or in-memory."""
    if is_distributed(settings):
        from dicomkeep.common.adapters.redis_clock import RedisClock

        clock = RedisClock(settings.redis.url)
        await clock.open()
        return clock
    from dicomkeep.common.adapters.memory_clock import MemoryClock

    return MemoryClock()
