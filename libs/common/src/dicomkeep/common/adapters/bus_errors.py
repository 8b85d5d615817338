"""What the Bus adapters share: the text of a responder's error.

`BusError` is the port's (`dicomkeep.common.ports.bus`); it is re-exported here
for the adapters, so that the port imports nothing from `adapters/`.
"""

from __future__ import annotations

from dicomkeep.common.ports.bus import BusError

__all__ = ["BusError", "describe"]


def describe(exc: BaseException) -> str:
    """Return the text a `BusError` carries for a responder's exception."""
    return f"{type(exc).__name__}: {exc}"
