"""What the Bus adapters share: the text of a responder's error, and how a
consumer's failure is handled.

`BusError` is the port's (`dicomkeep.common.ports.bus`); it is re-exported here
for the adapters, so that the port imports nothing from `adapters/`.

A consumer's exception falls in one of three kinds (`failure_kind`):

- `TRANSIENT`: a backend the handler needs (Redis, the database, the broker) is
  unreachable right now (`errors.unavailability`). The message is not the
  problem: the adapter retries the handler in place, with the project's backoff,
  until it succeeds or the consumer stops; it is never dead-lettered for it.
- `POISON`: the message cannot be decoded (not JSON, not the schema, a header
  missing). No retry can help: it is dead-lettered at once.
- `FAILED`: anything else. Redelivered up to the delivery limit, then
  dead-lettered.
"""

from __future__ import annotations

import enum
import json

from dicomkeep.common.errors import unavailability
from dicomkeep.common.ports.bus import BusError, BusUnavailable
from pydantic import ValidationError

__all__ = ["BusError", "FailureKind", "describe", "failure_kind", "requester_error",
           "responder_error", "UNAVAILABLE_PREFIX"]

#: Exceptions a handler raises when the message itself is unreadable.
_POISON = (ValidationError, json.JSONDecodeError, UnicodeDecodeError, KeyError)


class FailureKind(enum.Enum):
    """How a consumer's exception is handled (see the module docstring)."""

    TRANSIENT = "transient"
    POISON = "poison"
    FAILED = "failed"


def failure_kind(exc: BaseException) -> FailureKind:
    """Classify a consumer's exception: transient outage, poison message, or failure."""
    if unavailability(exc) is not None:
        return FailureKind.TRANSIENT
    if isinstance(exc, _POISON):
        return FailureKind.POISON
    return FailureKind.FAILED


def describe(exc: BaseException) -> str:
    """Return the text a `BusError` carries for a responder's exception."""
    return f"{type(exc).__name__}: {exc}"


#: Marks a responder's error text as an unavailability (see `responder_error`).
UNAVAILABLE_PREFIX = "unavailable: "


def responder_error(exc: BaseException) -> str:
    """The text replied for a responder's exception: `describe(exc)`, marked when the
    exception says a backend is unreachable (`errors.unavailability`)."""
    text = describe(exc)
    return UNAVAILABLE_PREFIX + text if unavailability(exc) is not None else text


def requester_error(text: str) -> BusError:
    """The exception a requester raises for a replied error text."""
    if text.startswith(UNAVAILABLE_PREFIX):
        return BusUnavailable(text[len(UNAVAILABLE_PREFIX):])
    return BusError(text)
