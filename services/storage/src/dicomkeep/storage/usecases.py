"""The storage service's use cases: delete released blobs, collect orphans."""

from __future__ import annotations

import logging
import time

from dicomkeep.common.index import Index
from dicomkeep.common.metrics import BLOBS_DELETED
from dicomkeep.common.ports.blobs import BlobStore

log = logging.getLogger(__name__)


async def purge_released(index: Index, blobs: BlobStore, *, batch: int = 500) -> int:
    """Delete the blobs that committed transactions released; return how many.

    Idempotent: a blob already gone is fine, and the pending row is removed only
    after the blob is.
    """
    keys = await index.pending_blobs(batch)
    still_used = await index.referenced_blobs(keys)
    for key in keys:
        if key not in still_used:
            await blobs.delete(key)
            BLOBS_DELETED.labels("released").inc()
    await index.blobs_deleted(keys)
    if keys:
        log.info("purged blobs count=%d", len(keys) - len(still_used))
    return len(keys)


async def collect_orphans(
    index: Index, blobs: BlobStore, *, grace_period: float, chunk: int = 200
) -> int:
    """Delete blobs older than the grace period that no attachment row refers to.

    Such blobs are left by a process that died between writing a blob and the
    commit of its store transaction. The grace period must exceed the longest
    store (StoreTimeout) so that an in-flight store is never robbed.
    """
    removed = 0
    candidates: list[str] = []

    async def sweep(keys: list[str]) -> int:
        used = await index.referenced_blobs(keys)
        for key in keys:
            if key not in used:
                await blobs.delete(key)
                BLOBS_DELETED.labels("orphan").inc()
                log.info("collected orphan blob key=%s", key)
        return len(keys) - len(used)

    async for key in blobs.keys(older_than=time.time() - grace_period):
        candidates.append(key)
        if len(candidates) >= chunk:
            removed += await sweep(candidates)
            candidates = []
    if candidates:
        removed += await sweep(candidates)
    return removed
