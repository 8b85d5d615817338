"""The one retry policy of DicomKeep, on tenacity: exponential backoff, bounded, logged.

Every retry goes through `retrying` (asyncio) or `retrying_sync` (code running
in a worker thread): peer HTTP requests, S3 calls, RabbitMQ publishes across a
reconnection, redeliveries of the in-process bus, blob folder races, and the
index's replay of transactions that hit a serialization failure
(index/transactions.py). Each names what it retries, so that the warning logged before a new
attempt says what failed; the last error is re-raised as is when the policy stops.

The n-th retry waits `first * 2**(n-1)` seconds, capped at `longest`. A policy
stops after `attempts` attempts (the first included) or once `within` seconds
have passed since the first attempt, whichever comes first.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    stop_never,
    wait_exponential,
)

log = logging.getLogger(__name__)

Retryable = tuple[type[BaseException], ...]


def _policy(
    what: str,
    attempts: int | None,
    within: float | None,
    first: float,
    longest: float,
    on: Retryable,
    when: Callable[[BaseException], bool] | None,
) -> dict[str, Any]:
    stop: Any = stop_never
    if attempts is not None:
        stop = stop_after_attempt(max(1, attempts))
    if within is not None:
        stop = stop | stop_after_delay(within) if attempts is not None else stop_after_delay(within)

    def retryable(error: BaseException) -> bool:
        return isinstance(error, on) and (when is None or when(error))

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "retrying %s attempt=%d wait=%.2fs error=%s: %s",
            what, state.attempt_number, state.upcoming_sleep,
            type(error).__name__, error,
        )

    return {
        "stop": stop,
        "wait": wait_exponential(multiplier=first, max=longest),
        "retry": retry_if_exception(retryable),
        "before_sleep": before_sleep,
        "reraise": True,
    }


def retrying(
    what: str,
    *,
    attempts: int | None = None,
    within: float | None = None,
    first: float = 0.25,
    longest: float = 5.0,
    on: Retryable = (Exception,),
    when: Callable[[BaseException], bool] | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> AsyncRetrying:
    """Return the policy for `async for attempt in retrying(...): with attempt: ...`.

    Errors that are instances of `on` (and pass `when`, if given) are retried;
    others propagate at once. `sleep` replaces the wait between attempts (e.g.
    waiting for a reconnection); it gets the backoff's number of seconds.
    """
    options = _policy(what, attempts, within, first, longest, on, when)
    if sleep is not None:
        options["sleep"] = sleep
    return AsyncRetrying(**options)


def retrying_sync(
    what: str,
    *,
    attempts: int | None = None,
    within: float | None = None,
    first: float = 0.25,
    longest: float = 5.0,
    on: Retryable = (Exception,),
    when: Callable[[BaseException], bool] | None = None,
) -> Retrying:
    """The same policy for blocking code (`for attempt in retrying_sync(...)`)."""
    return Retrying(**_policy(what, attempts, within, first, longest, on, when))
