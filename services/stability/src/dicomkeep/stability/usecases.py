"""The stability service's use cases (ORTHANC_API.md §7, cluster-wide).

Every NewInstance touches its series, study and patient in the StabilityClock;
when StableAge passes with no new instance, the replica that pops the resource
from the clock appends the Stable* change (exactly one replica pops it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from dicomkeep.common.events import STABLE_CHANGE, Change, ChangeType
from dicomkeep.common.ids import Level, orthanc_id, resource_path
from dicomkeep.common.metrics import STABLE_EVENTS
from dicomkeep.common.ports.clock import StabilityClock
from dicomkeep.common.ports.index import Index

log = logging.getLogger(__name__)

#: Within one quiet period, Orthanc logs series first, then study, then patient.
_ORDER = {Level.SERIES: 0, Level.STUDY: 1, Level.PATIENT: 2}


def parents_of(headers: Mapping[str, str]) -> list[tuple[Level, str]]:
    """Return (series, study, patient) public IDs from a NewInstance's UID headers."""
    patient = headers.get("PatientID", "")
    study = headers["StudyInstanceUID"]
    series = headers["SeriesInstanceUID"]
    return [
        (Level.SERIES, orthanc_id(patient, study, series)),
        (Level.STUDY, orthanc_id(patient, study)),
        (Level.PATIENT, orthanc_id(patient)),
    ]


async def on_change(
    clock: StabilityClock, body: bytes, headers: Mapping[str, str], at: float
) -> None:
    """Touch the parents of a new instance; forget deleted resources."""
    change = Change.model_validate_json(body)
    if change.change_type is ChangeType.NEW_INSTANCE:
        await clock.touch(parents_of(headers), at)
    elif change.change_type is ChangeType.DELETED and change.resource_type != "Instance":
        await clock.forget([(Level(change.resource_type), change.id)])


async def emit_stable(
    index: Index, clock: StabilityClock, *, now: float, stable_age: float
) -> list[Change]:
    """Append the Stable* changes of resources quiet for more than StableAge.

    A resource deleted meanwhile gets no event (as in Orthanc).
    """
    due = await clock.pop_due(now - stable_age, limit=500)
    emitted: list[Change] = []
    for level, public_id in sorted(due, key=lambda item: _ORDER[item[0]]):
        if await index.get_resource(level, public_id) is None:
            continue
        change = await index.append_change(
            STABLE_CHANGE[level], level.value, public_id, resource_path(level, public_id)
        )
        emitted.append(change)
        STABLE_EVENTS.labels(level.value).inc()
        log.info("stable resource=%s id=%s seq=%d", level.value, public_id, change.seq)
    return emitted
