"""Refuse a StoreInstance that waited so long that its blobs may be collected.

The storage service's orphan collector deletes a blob that no attachment row
refers to once it is older than `OrphanGracePeriod`. A command that waited in
its queue longer than that (every indexer down for ten minutes) may refer to a
blob already gone: committing it would index an instance without its file. Its
sender was told failure long ago (its wait ended after `StoreTimeout`), so the
store transaction refuses it instead (docs/reliability.md, "A store command
older than the grace period").

The bound is the grace period less a margin (a tenth of it, at most 60 s) that
covers clock skew between the sender, the blob store and the collector's hosts,
and the moments between the check (at the start of the command's savepoint)
and the commit becoming visible to the collector.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.events import StoreInstance

log = logging.getLogger(__name__)

#: The margin is this part of OrphanGracePeriod...
MARGIN_FRACTION = 0.1
#: ...and never more than this many seconds (NTP keeps hosts within milliseconds).
MARGIN_CAP = 60.0


def stale_limit(orphan_grace_period: float) -> float:
    """Return the age (s) beyond which a StoreInstance is refused.

    `OrphanGracePeriod` less min(60 s, a tenth of it): 540 s for the default 600.
    """
    return orphan_grace_period - min(MARGIN_CAP, orphan_grace_period * MARGIN_FRACTION)


def command_age(command: StoreInstance, now: float) -> float | None:
    """Return how old `command` is at `now` (Unix time, s); None when it cannot tell.

    `issued_at` is taken by the sender before it writes the blobs, so the command
    is at least as old as they are. A command of the earlier format (no
    `issued_at`) is judged by `received_at`, the UTC second at which it was built:
    its blobs are older by the time their write took. A command with neither is
    not judged (none is sent so).
    """
    if command.issued_at is not None:
        return now - command.issued_at
    if command.received_at:
        try:
            built = datetime.strptime(command.received_at, "%Y%m%dT%H%M%S")
        except ValueError:
            return None
        return now - built.replace(tzinfo=UTC).timestamp()
    return None


def refuse_if_stale(command: StoreInstance, *, max_age: float | None, now: float) -> None:
    """Raise OrthancError(TIMEOUT) when `command` is older than `max_age` seconds.

    `max_age` None judges nothing. Logs one warning per refusal (an instance that
    a client was told had failed, whose blobs the collector removes or removed).
    """
    if max_age is None:
        return
    age = command_age(command, now)
    if age is None or age <= max_age:
        return
    log.warning(
        "refused a stale store instance=%s age=%.1fs limit=%.1fs: its blobs may be "
        "collected already (OrphanGracePeriod); the sender was told it timed out",
        command.instance_id, age, max_age,
    )
    raise OrthancError(
        ErrorCode.TIMEOUT,
        f"StoreInstance issued {age:.0f} s ago, beyond the {max_age:.0f} s that "
        "OrphanGracePeriod allows: its blobs may have been collected",
    )
