"""Series status from ExpectedNumberOfInstances and IndexInSeries (ORTHANC_API.md §2.3)."""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum


class SeriesStatus(str, Enum):
    """Orthanc's `Status` of a series."""

    COMPLETE = "Complete"
    MISSING = "Missing"
    INCONSISTENT = "Inconsistent"
    UNKNOWN = "Unknown"


def series_status(expected: str | int | None, indexes: Sequence[str | None]) -> SeriesStatus:
    """Compute the status as Orthanc's ServerIndex::GetSeriesStatus does.

    Unknown without an expected count or when an index is not an integer;
    Inconsistent when an index is outside 1..expected or repeated; Complete when
    the count equals the expected count; Missing otherwise.
    """
    if expected is None:
        return SeriesStatus.UNKNOWN
    try:
        expected_count = int(expected)
    except ValueError:
        return SeriesStatus.UNKNOWN
    seen: set[int] = set()
    for raw in indexes:
        try:
            index = int(str(raw).strip()) if raw is not None else None
        except ValueError:
            index = None
        if index is None:
            return SeriesStatus.UNKNOWN
        if not 1 <= index <= expected_count or index in seen:
            return SeriesStatus.INCONSISTENT
        seen.add(index)
    return SeriesStatus.COMPLETE if len(seen) == expected_count else SeriesStatus.MISSING
