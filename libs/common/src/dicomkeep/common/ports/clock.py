"""The StabilityClock port: "resource X last changed at t", due ones popped once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from dicomkeep.common.ids import Level


class StabilityClock(Protocol):
    """Unstable resources with the time they last received an instance.

    A schedule of wake-ups, not the truth: the index's stability ledger decides
    which resources are stable. Only the stability service holds a clock; it
    touches on NewInstance, forgets on Deleted, treats `pop_due` as "something is
    due, ask the index", and `count() == 0` as "lost, rebuild from the index".
    (`is_unstable` is for tests and tools.)
    """

    async def touch(self, resources: Sequence[tuple[Level, str]], at: float) -> None:
        """Mark resources unstable as of `at` (UNIX seconds), moving their deadline."""

    async def pop_due(self, not_after: float, limit: int = 100) -> list[tuple[Level, str]]:
        """Remove and return resources last touched at or before `not_after`.

        Exactly once: when several replicas pop concurrently, each resource goes to
        one of them.
        """

    async def is_unstable(self, level: Level, public_id: str) -> bool:
        """Tell whether the resource is waiting to become stable."""

    async def forget(self, resources: Sequence[tuple[Level, str]]) -> None:
        """Drop resources (deleted ones) without making them stable."""

    async def count(self) -> int:
        """Return how many resources wait; 0 after a loss tells the service to rebuild."""

    async def close(self) -> None:
        """Release connections."""
