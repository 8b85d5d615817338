"""The index: one object gathering every part, written once over the `Database` port.

Mirrors Orthanc's ServerIndex: the store transaction and deletes (store.py),
reads and find (resources.py, find.py), metadata and attachments with revisions
(annotations.py), protection and recycling (recycling.py), the Stable* ledger
(stability.py), the changes log and the outbox (changes.py), the exports log (exports.py), jobs and REST
queries (jobs.py), labels (labels.py), peers (peers.py). Each part is a class over `Transactions`;
`Index` inherits them all, so every method is reached as `index.<method>`.
"""

from __future__ import annotations

from dicomkeep.common.index.annotations import Annotations
from dicomkeep.common.index.changes import ChangeLog
from dicomkeep.common.index.exports import ExportLog
from dicomkeep.common.index.jobs import JobStore
from dicomkeep.common.index.labels import Labels
from dicomkeep.common.index.peers import PeerStore
from dicomkeep.common.index.recycling import Recycler, Recycling, StorageLimits
from dicomkeep.common.index.resources import Resources
from dicomkeep.common.index.schema import migrate
from dicomkeep.common.index.stability import StabilityLedger
from dicomkeep.common.index.store import Store
from dicomkeep.common.ports.database import Database, Tx
from dicomkeep.common.secrets import KeySource, SecretBox


class Index(Store, Resources, Annotations, Recycling, StabilityLedger, ChangeLog, ExportLog):
    """The index of every DICOM resource. Every public method is one transaction.

    Open it with `async with Index(db):` (or `open()`/`close()`): opening
    connects and brings the schema to the latest migration.
    """

    def __init__(
        self, db: Database, *, max_retries: int = 10, limits: StorageLimits | None = None,
        secrets: SecretBox | KeySource | None = None,
    ) -> None:
        super().__init__(db, max_retries=max_retries)
        #: Seals the peer secrets set over REST (dicomkeep.common.secrets); None = no
        #: key. A KeySource is loaded (its key file created) when the index opens.
        self._key_source = secrets if isinstance(secrets, KeySource) else None
        self.secrets = secrets if isinstance(secrets, SecretBox) else None
        #: MaximumStorageSize/MaximumPatientCount, applied in the store transaction.
        self.recycler = Recycler(db, limits)

    async def open(self) -> None:
        """Connect and apply the missing schema migrations (schema.py)."""
        if self._key_source is not None and self.secrets is None:
            self.secrets = self._key_source.load()
        await self.db.open()
        try:
            await migrate(self.db)
            if self.secrets is not None:
                await self.peers.seal_clear_rows()
        except BaseException:
            await self.db.close()
            raise

    async def close(self) -> None:
        """Release connections."""
        await self.db.close()

    async def __aenter__(self) -> Index:
        """Open the index; it is closed when the `async with` block ends."""
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def jobs(self) -> JobStore:
        """Jobs, registered modalities and REST queries kept in the index (jobs.py)."""
        return JobStore(self.db, max_retries=self.max_retries)

    @property
    def labels(self) -> Labels:
        """Labels of resources (index/labels.py)."""
        return Labels(self.db, max_retries=self.max_retries)

    @property
    def peers(self) -> PeerStore:
        """Orthanc peers set or deleted through REST, kept in the index (peers.py)."""
        return PeerStore(self.db, max_retries=self.max_retries, secrets=self.secrets)

    # -- global properties ---------------------------------------------------------
    async def get_property(self, name: str) -> str | None:
        """Read a global property."""

        async def body(tx: Tx) -> str | None:
            value = await tx.fetchval("SELECT value FROM global_properties WHERE name = $1", name)
            return None if value is None else str(value)

        return await self._run(body, readonly=True, point=True)

    async def set_property(self, name: str, value: str) -> None:
        """Write a global property."""

        async def body(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO global_properties(name, value) VALUES ($1, $2) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                name,
                value,
            )

        await self._run(body)

    async def increment_property(self, name: str) -> int:
        """Add one to an integer global property (absent: 0) and return the new value.

        One statement in one transaction, so concurrent callers on any replica each
        get a different value (Orthanc's `IncrementGlobalSequence`, e.g. the
        `AnonymizationSequence` behind "Anonymized<N>").
        """

        async def body(tx: Tx) -> int:
            value = await tx.fetchval(
                "INSERT INTO global_properties(name, value) VALUES ($1, '1') "
                "ON CONFLICT (name) DO UPDATE SET value = "
                "CAST(CAST(global_properties.value AS BIGINT) + 1 AS TEXT) RETURNING value",
                name,
            )
            return int(value)

        return int(await self._run(body))

    async def try_lock(self, name: str) -> bool:
        """Take (or confirm holding) a cluster-wide named lock for this process."""
        return await self.db.try_lock(name)
