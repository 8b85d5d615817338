"""Errors shared by the Bus adapters (meant to be re-exported by `ports.bus`)."""

from __future__ import annotations


class BusError(Exception):
    """The bus could not deliver what was asked.

    Raised by `Bus.request` when the remote responder raised (the message is the
    responder's `"<ExceptionType>: <message>"`) or the bus closed meanwhile, and by
    `RabbitBus.publish` when the broker nacks a message.
    """


def describe(exc: BaseException) -> str:
    """Return the text a `BusError` carries for a responder's exception."""
    return f"{type(exc).__name__}: {exc}"
