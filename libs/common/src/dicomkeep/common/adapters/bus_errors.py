"""Errors shared by the Bus adapters; `BusError` itself belongs to the port."""

from __future__ import annotations

from dicomkeep.common.ports.bus import BusError

__all__ = ["BusError", "describe"]


def describe(exc: BaseException) -> str:
    """Return the text a `BusError` carries for a responder's exception."""
    return f"{type(exc).__name__}: {exc}"
