"""Orthanc's timestamp formats (ORTHANC_API.md §0)."""

from __future__ import annotations

from datetime import UTC, datetime


def now_stamp() -> str:
    """Return the current UTC time as `YYYYMMDDTHHMMSS` (index timestamps)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S")


def now_local_stamp() -> str:
    """Return the current local time as `YYYYMMDDTHHMMSS` (`/tools/now-local`)."""
    return datetime.now().strftime("%Y%m%dT%H%M%S")


def job_stamp(moment: datetime | None = None) -> str:
    """Return a job timestamp, `YYYYMMDDTHHMMSS.ffffff` in UTC."""
    return (moment or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S.%f")
