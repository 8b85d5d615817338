"""The stability service's use cases (ORTHANC_API.md §7, cluster-wide).

The index is the ledger: the store transaction marks the series, study and patient
of a new instance unstable, with the time of that instance, and
`Index.emit_stable` removes the mark in the transaction that appends the Stable*
change, so each quiet period yields exactly one change whichever replica runs it,
and a crash in between loses nothing. The StabilityClock is the timer: every
NewInstance touches its parents, and a replica that pops due resources asks the
index to emit. What the clock loses (a replica that popped and died, Redis
flushed or restarted, a restart of the all-in-one process) `reconcile` repairs
from the index.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from dicomkeep.common.events import Change, ChangeType
from dicomkeep.common.ids import Level, orthanc_id
from dicomkeep.common.index import Index
from dicomkeep.common.metrics import STABLE_EVENTS
from dicomkeep.common.ports.clock import StabilityClock

log = logging.getLogger(__name__)

#: Resources handled per index transaction.
BATCH = 500


def parents_of(headers: Mapping[str, str]) -> list[tuple[Level, str]]:
    """Return (series, study, patient) public IDs from a NewInstance's `Parent*` headers.

    Events published before the headers lost their DICOM identifiers (a rolling
    upgrade) carry `PatientID`/`StudyInstanceUID`/`SeriesInstanceUID` instead.
    """
    if "ParentSeries" not in headers:
        patient = headers.get("PatientID", "")
        study, series = headers["StudyInstanceUID"], headers["SeriesInstanceUID"]
        return [
            (Level.SERIES, orthanc_id(patient, study, series)),
            (Level.STUDY, orthanc_id(patient, study)),
            (Level.PATIENT, orthanc_id(patient)),
        ]
    return [
        (Level.SERIES, headers["ParentSeries"]),
        (Level.STUDY, headers["ParentStudy"]),
        (Level.PATIENT, headers["ParentPatient"]),
    ]


async def on_change(
    clock: StabilityClock, body: bytes, headers: Mapping[str, str], at: float
) -> None:
    """Touch the parents of a new instance; forget deleted resources.

    Idempotent enough for at-least-once delivery: a redelivered NewInstance only
    delays the next look at the index, which decides.
    """
    change = Change.model_validate_json(body)
    if change.change_type is ChangeType.NEW_INSTANCE:
        await clock.touch(parents_of(headers), at)
    elif change.change_type is ChangeType.DELETED and change.resource_type != "Instance":
        await clock.forget([(Level(change.resource_type), change.id)])


async def emit_overdue(index: Index, *, cutoff: float) -> list[Change]:
    """Append the Stable* changes of every resource quiet since before `cutoff`.

    Exactly once per quiet period (the index guarantees it); series, then studies,
    then patients within a batch. A resource deleted meanwhile gets no event.
    """
    emitted: list[Change] = []
    while True:
        changes = await index.emit_stable(cutoff, BATCH)
        for change in changes:
            STABLE_EVENTS.labels(change.resource_type).inc()
            log.info(
                "stable resource=%s public_id=%s seq=%d",
                change.resource_type, change.id, change.seq,
            )
        emitted.extend(changes)
        if len(changes) < BATCH:
            return emitted


async def emit_due(
    index: Index, clock: StabilityClock, *, now: float, stable_age: float
) -> list[Change]:
    """Pop the resources the clock finds due and append the Stable* changes now due.

    The age must be strictly greater than StableAge. Among concurrent replicas one
    pops a resource; the index decides anyway, so a replica that dies after the
    pop loses nothing (`reconcile` emits it).
    """
    cutoff = now - stable_age
    if not await clock.pop_due(cutoff, limit=BATCH):
        return []
    return await emit_overdue(index, cutoff=cutoff)


async def rebuild_clock(index: Index, clock: StabilityClock) -> int:
    """Touch, in the clock, every resource the index knows to be unstable, at the time
    of its last new instance; return how many. Idempotent."""
    resources = await index.unstable_resources()
    by_time: dict[float, list[tuple[Level, str]]] = {}
    for resource in resources:
        by_time.setdefault(resource.touched_at, []).append((resource.level, resource.public_id))
    for at, items in by_time.items():
        await clock.touch(items, at)
    if resources:
        log.info("stability clock rebuilt from the index resources=%d", len(resources))
    return len(resources)


async def reconcile(
    index: Index, clock: StabilityClock, *, now: float, stable_age: float, grace: float
) -> list[Change]:
    """Repair what the clock lost: emit resources overdue by more than `grace`
    seconds, and rebuild an empty clock from the index."""
    emitted = await emit_overdue(index, cutoff=now - stable_age - grace)
    if emitted:
        log.warning("stable changes emitted late count=%d", len(emitted))
    if await clock.count() == 0:
        await rebuild_clock(index, clock)
    return emitted
