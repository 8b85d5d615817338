"""MemoryClock: the embedded StabilityClock, a dict and a heap in this process."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Self

from dicomkeep.common.ids import Level

_Resource = tuple[Level, str]
#: Stale heap entries tolerated, relative to live ones, before compacting.
_COMPACT_RATIO = 2
_COMPACT_MIN = 1024


class MemoryClock:
    """Unstable resources in memory, for one process (all-in-one).

    - `touch` sets each resource's time to `at`: the latest touch wins, even with an
      earlier `at` (same as `RedisClock`).
    - `pop_due` returns the oldest resources first; exactly once is trivial, as the
      method never yields to the event loop while it removes them.
    - State is lost with the process; the stability service rebuilds it from the
      index on start (`count()` tells an empty clock).
    """

    def __init__(self) -> None:
        self._times: dict[_Resource, float] = {}
        # (time, level depth, public_id, level); entries whose time no longer matches
        # `_times` are stale and skipped.
        self._heap: list[tuple[float, int, str, Level]] = []

    async def touch(self, resources: Sequence[tuple[Level, str]], at: float) -> None:
        """Mark resources unstable as of `at` (UNIX seconds), moving their deadline."""
        for level, public_id in resources:
            self._times[(level, public_id)] = at
            heapq.heappush(self._heap, (at, level.depth, public_id, level))
        self._compact_if_stale()

    async def pop_due(self, not_after: float, limit: int = 100) -> list[tuple[Level, str]]:
        """Remove and return up to `limit` resources touched at or before `not_after`.

        Oldest first. Exactly once: a popped resource is gone until touched again.
        """
        due: list[_Resource] = []
        while self._heap and len(due) < limit and self._heap[0][0] <= not_after:
            at, _, public_id, level = heapq.heappop(self._heap)
            resource = (level, public_id)
            if self._times.get(resource) == at:
                del self._times[resource]
                due.append(resource)
        return due

    async def is_unstable(self, level: Level, public_id: str) -> bool:
        """Tell whether the resource is waiting to become stable."""
        return (level, public_id) in self._times

    async def forget(self, resources: Sequence[tuple[Level, str]]) -> None:
        """Drop resources (deleted ones) without making them stable; idempotent."""
        for resource in resources:
            self._times.pop((resource[0], resource[1]), None)
        self._compact_if_stale()

    async def count(self) -> int:
        """Return how many resources are waiting to become stable."""
        return len(self._times)

    async def __aenter__(self) -> Self:
        """Enter the adapter's life: nothing to open; `async with` closes it on exit."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Release nothing; provided for the port."""

    def _compact_if_stale(self) -> None:
        if len(self._heap) > max(_COMPACT_MIN, _COMPACT_RATIO * len(self._times)):
            self._heap = [
                (at, level.depth, public_id, level)
                for (level, public_id), at in self._times.items()
            ]
            heapq.heapify(self._heap)
