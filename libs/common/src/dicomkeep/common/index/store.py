"""The store transaction (ARCHITECTURE.md step 3), as one unit over an open `Tx`.

Mirrors Orthanc's ServerIndex::Store: hierarchy upsert, AlreadyStored or
OverwriteInstances, recycling under the storage limits (recycling.py),
attachments, core metadata, LastUpdate, unstable parents (stability.py),
recycling order, and the changes NewInstance, NewSeries, NewStudy, NewPatient,
CompletedSeries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from dicomkeep.common.dicom.instance import MAIN_DICOM_TAGS_SIGNATURES
from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.events import ChangeType, StoreInstance, StoreReply, StoreStatus
from dicomkeep.common.ids import Level
from dicomkeep.common.index.changes import PendingChanges
from dicomkeep.common.index.hierarchy import (
    LAST_UPDATE,
    delete_subtree,
    insert_attachment,
    next_recycling_order,
    prune_ancestors,
    release_blob,
    set_core_metadata,
)
from dicomkeep.common.index.records import DeleteOutcome
from dicomkeep.common.index.recycling import Recycler
from dicomkeep.common.index.stability import touch_unstable
from dicomkeep.common.index.staleness import refuse_if_stale
from dicomkeep.common.index.transactions import Transactions
from dicomkeep.common.orthanc import MetadataType
from dicomkeep.common.ports.database import RetryableError, Tx
from dicomkeep.common.series_status import SeriesStatus, series_status
from dicomkeep.common.timestamps import now_stamp

INDEX_IN_SERIES = MetadataType.INDEX_IN_SERIES
RECEPTION_DATE = MetadataType.RECEPTION_DATE
EXPECTED_INSTANCES = MetadataType.EXPECTED_NUMBER_OF_INSTANCES
SIGNATURE = MetadataType.MAIN_DICOM_TAGS_SIGNATURE

log = logging.getLogger(__name__)


class StoreTransaction:
    """One StoreInstance inside an open transaction."""

    def __init__(
        self,
        tx: Tx,
        recycler: Recycler,
        pending: PendingChanges,
        command: StoreInstance,
        *,
        for_update: str,
    ) -> None:
        self.tx = tx
        self.recycler = recycler
        self.pending = pending
        self.command = command
        self.for_update = for_update

    async def run(self) -> StoreStatus:
        """Store the instance; return Success or AlreadyStored."""
        command = self.command
        tx = self.tx
        # With storage limits, concurrent stores decide on recycling one at a time.
        await self.recycler.lock(tx)
        existing = await tx.fetchval(
            "SELECT internal_id FROM resources WHERE public_id = $1 AND level = 3"
            + self.for_update,
            command.instance_id,
        )
        if existing is not None:
            if not command.overwrite:
                await self._release_new_blobs()
                return StoreStatus.ALREADY_STORED
            # Overwrite: the old instance goes, its parents stay (no Deleted event,
            # the instance is replaced at once).
            await delete_subtree(tx, int(existing), PendingChanges())

        now = command.received_at or now_stamp()
        patient, new_patient = await self._upsert(
            Level.PATIENT, command.patient_id, None, command.patient_uid
        )
        study, new_study = await self._upsert(
            Level.STUDY, command.study_id, patient, command.study_uid
        )
        series, new_series = await self._upsert(
            Level.SERIES, command.series_id, study, command.series_uid
        )
        instance, new_instance = await self._upsert(
            Level.INSTANCE, command.instance_id, series, command.sop_uid
        )
        if not new_instance:
            # A concurrent writer stored the same instance first (PostgreSQL).
            await self._release_new_blobs()
            return StoreStatus.ALREADY_STORED
        # Orthanc recycles once the hierarchy exists (a new patient is counted) and
        # before the attachments are added; FULL_STORAGE rolls everything back.
        await self.recycler.make_room(
            tx,
            self.pending,
            incoming=sum(info.compressed_size for info in command.attachments),
            keep=patient,
        )

        if new_patient:
            await self._insert_tags(patient, Level.PATIENT, Level.PATIENT)
            await self._insert_metadata(patient, self._level_metadata(Level.PATIENT))
        if new_study:
            await self._insert_tags(study, Level.STUDY, Level.STUDY)
            await self._insert_tags(study, Level.PATIENT, Level.PATIENT)
            await self._insert_metadata(study, self._level_metadata(Level.STUDY))
        if new_series:
            await self._insert_tags(series, Level.SERIES, Level.SERIES)
            await self._insert_metadata(series, self._level_metadata(Level.SERIES))
        await self._insert_tags(instance, Level.INSTANCE, Level.INSTANCE)
        instance_metadata = self._level_metadata(Level.INSTANCE)
        instance_metadata.setdefault(RECEPTION_DATE, now)
        await self._insert_metadata(instance, instance_metadata)
        for info in command.attachments:
            await insert_attachment(tx, instance, info)
        for internal_id in (patient, study, series):
            await set_core_metadata(tx, internal_id, LAST_UPDATE, now)
        await touch_unstable(
            tx,
            [
                (patient, Level.PATIENT, command.patient_id),
                (study, Level.STUDY, command.study_id),
                (series, Level.SERIES, command.series_id),
            ],
            time.time(),
        )
        order = await next_recycling_order(tx)
        await tx.execute(
            "UPDATE resources SET recycling_order = $2 WHERE internal_id = $1 AND is_protected = 0",
            patient,
            order,
        )

        self._change(ChangeType.NEW_INSTANCE, Level.INSTANCE)
        if new_series:
            self._change(ChangeType.NEW_SERIES, Level.SERIES)
        if new_study:
            self._change(ChangeType.NEW_STUDY, Level.STUDY)
        if new_patient:
            self._change(ChangeType.NEW_PATIENT, Level.PATIENT)
        if await self._series_status(series) is SeriesStatus.COMPLETE:
            self._change(ChangeType.COMPLETED_SERIES, Level.SERIES)
        return StoreStatus.SUCCESS

    async def _upsert(
        self, level: Level, public_id: str, parent: int | None, dicom_uid: str
    ) -> tuple[int, bool]:
        """Insert the resource unless it exists; return (internal_id, created)."""
        created = await self.tx.fetchval(
            "INSERT INTO resources(level, public_id, parent_id, dicom_uid) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (public_id) DO NOTHING RETURNING internal_id",
            level.depth,
            public_id,
            parent,
            dicom_uid,
        )
        if created is not None:
            return int(created), True
        row = await self.tx.fetchrow(
            "SELECT internal_id, level FROM resources WHERE public_id = $1", public_id
        )
        if row is None:
            # Deleted between our insert attempt and this read: replay the transaction.
            raise RetryableError(f"{level.value} {public_id} vanished")
        if int(row[1]) != level.depth:
            raise OrthancError(
                ErrorCode.DUPLICATE_RESOURCE, f"{public_id} exists at another level"
            )
        return int(row[0]), False

    async def _insert_tags(self, internal_id: int, source: Level, tag_level: Level) -> None:
        tags = self.command.main_tags.get(source, {})
        if tags:
            await self.tx.executemany(
                "INSERT INTO main_tags(internal_id, tag_level, name, value) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                [(internal_id, tag_level.depth, name, value) for name, value in tags.items()],
            )

    def _level_metadata(self, level: Level) -> dict[int, str]:
        """The command's metadata of one level plus its MainDicomTagsSignature."""
        metadata = dict(self.command.metadata.get(level, {}))
        metadata.setdefault(SIGNATURE, MAIN_DICOM_TAGS_SIGNATURES[level])
        return metadata

    async def _insert_metadata(self, internal_id: int, metadata: dict[int, str]) -> None:
        if metadata:
            await self.tx.executemany(
                "INSERT INTO metadata(internal_id, key, value, revision) VALUES ($1, $2, $3, 0) "
                "ON CONFLICT (internal_id, key) DO UPDATE SET value = excluded.value",
                [(internal_id, key, value) for key, value in metadata.items()],
            )

    async def _release_new_blobs(self) -> None:
        for info in self.command.attachments:
            await release_blob(self.tx, info.uuid)

    async def _series_status(self, series: int) -> SeriesStatus:
        expected = await self.tx.fetchval(
            "SELECT value FROM metadata WHERE internal_id = $1 AND key = $2",
            series,
            EXPECTED_INSTANCES,
        )
        if expected is None:
            return SeriesStatus.UNKNOWN
        rows = await self.tx.fetch(
            "SELECT m.value FROM resources r LEFT JOIN metadata m "
            "ON m.internal_id = r.internal_id AND m.key = $2 WHERE r.parent_id = $1",
            series,
            INDEX_IN_SERIES,
        )
        return series_status(expected, [r[0] for r in rows])

    def _change(self, change_type: ChangeType, level: Level) -> None:
        """Queue a change with its outbox headers: the Orthanc IDs of its parents
        (`ParentSeries`, `ParentStudy`, `ParentPatient`, as in Orthanc's JSON) and the
        W3C trace context of the store, which the publication continues. No patient
        data (DICOM identifiers) goes there."""
        command = self.command
        public_ids = (
            command.patient_id, command.study_id, command.series_id, command.instance_id
        )
        names = ("ParentPatient", "ParentStudy", "ParentSeries")
        headers = {names[depth]: public_ids[depth] for depth in range(level.depth)}
        if command.traceparent:
            headers["traceparent"] = command.traceparent
        self.pending.add(change_type, level, public_ids[level.depth], headers)


def _failure(command: StoreInstance, error: OrthancError) -> StoreReply:
    return StoreReply(
        status=StoreStatus.FAILURE,
        instance_id=command.instance_id,
        error_code=error.code.name,
        details=error.details,
    )


class Store(Transactions):
    """The writes of the hierarchy, as methods of the index."""

    recycler: Recycler

    async def store_instance(
        self, command: StoreInstance, *, max_age: float | None = None
    ) -> StoreReply:
        """Run the store transaction (ARCHITECTURE.md step 3).

        Mirrors Orthanc's ServerIndex::Store: upsert patient/study/series, answer
        AlreadyStored (changing nothing) when the instance exists and overwrite is
        off, replace it when on; record attachments, metadata, LastUpdate and the
        changes NewInstance, NewSeries, NewStudy, NewPatient, CompletedSeries.
        A failure (full storage, retries exhausted...) is answered, not raised.
        A command older than `max_age` seconds is refused (TIMEOUT) and changes
        nothing (index/staleness.py); the check runs inside the transaction, again
        on each replay, as close to the commit as it can.
        """

        async def body(tx: Tx) -> StoreReply:
            refuse_if_stale(command, max_age=max_age, now=time.time())
            pending = PendingChanges()
            transaction = StoreTransaction(
                tx, self.recycler, pending, command, for_update=self.for_update
            )
            status = await transaction.run()
            changes = await pending.flush(tx)
            return StoreReply(
                status=status,
                instance_id=command.instance_id,
                seq=changes[-1].seq if changes else None,
            )

        try:
            return await self._run(body)
        except OrthancError as error:
            return _failure(command, error)

    async def store_instances(
        self, commands: Sequence[StoreInstance], *, max_age: float | None = None
    ) -> list[StoreReply]:
        """Run several store transactions as one database transaction: group commit.

        Each command runs inside its own savepoint, in order, exactly as
        `store_instance` would run it alone: a command refused (full storage...)
        is rolled back to its savepoint and answered Failure without touching
        the others; the Seq of the changes follow the order of `commands`. The one
        commit (one disk flush) makes every reply true at once, which is where the
        throughput of concurrent senders comes from. A collision replays the whole
        group; an unexpected error falls back to one transaction per command, so
        that only the faulty command fails. `max_age` as for `store_instance`.
        """
        if len(commands) == 1:
            return [await self.store_instance(commands[0], max_age=max_age)]

        async def body(tx: Tx) -> list[StoreReply]:
            replies: list[StoreReply] = []
            for command in commands:
                await tx.execute("SAVEPOINT store_one")
                pending = PendingChanges()
                transaction = StoreTransaction(
                    tx, self.recycler, pending, command, for_update=self.for_update
                )
                try:
                    refuse_if_stale(command, max_age=max_age, now=time.time())
                    status = await transaction.run()
                    changes = await pending.flush(tx)
                except OrthancError as error:
                    await tx.execute("ROLLBACK TO SAVEPOINT store_one")
                    replies.append(_failure(command, error))
                else:
                    replies.append(StoreReply(
                        status=status,
                        instance_id=command.instance_id,
                        seq=changes[-1].seq if changes else None,
                    ))  # fmt: skip
                await tx.execute("RELEASE SAVEPOINT store_one")
            return replies

        try:
            return await self._run(body)
        except OrthancError as error:  # every replay collided
            return [_failure(command, error) for command in commands]
        except Exception:
            log.exception("group commit of %d stores failed; storing them one by one", len(commands))
            return [await self.store_instance(command, max_age=max_age) for command in commands]

    async def delete_resource(self, level: Level, public_id: str) -> DeleteOutcome | None:
        """Delete a resource, its descendants and the ancestors left empty.

        The blobs become pending deletions (`pending_blobs`); a Deleted event per
        removed resource goes to the outbox. Returns None if the resource is unknown.
        """

        async def body(tx: Tx) -> DeleteOutcome | None:
            row = await tx.fetchrow(
                "SELECT internal_id, parent_id FROM resources WHERE public_id = $1 "
                "AND level = $2" + self.for_update,
                public_id,
                level.depth,
            )
            if row is None:
                return None
            pending = PendingChanges()
            deleted = await delete_subtree(tx, int(row[0]), pending)
            remaining = await prune_ancestors(tx, row[1], level, pending, deleted)
            await pending.flush(tx)
            return DeleteOutcome(remaining=remaining, deleted=deleted)

        return await self._run(body)
