"""OpenTelemetry tracing for every process, configured from the standard `OTEL_*` variables.

Off by default: unless `OTEL_TRACES_EXPORTER` names an exporter, `setup_tracing`
installs nothing (no tracer provider, no span processor, no instrumentation), and
the spans opened by DicomKeep's code are the API's non-recording no-ops.

On (`OTEL_TRACES_EXPORTER=otlp`, `console`, or both, comma-separated):

- an SDK tracer provider whose resource is `service.name` (the process's role,
  `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` win) and whose sampler comes
  from `OTEL_TRACES_SAMPLER`, with one batch span processor per exporter
  (`OTEL_BSP_*`); the OTLP exporter speaks `http/protobuf` to
  `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`;
- the instrumentations of the drivers: asyncpg, aio-pika (W3C `traceparent` in the
  AMQP headers of every message, producer and consumer spans), redis, httpx, and
  FastAPI for the gateway's app (`instrument_app`).

The in-process bus carries the same context through `producer_span` and
`consumer_span`, so that one stored instance gives one trace in both modes.
`OTEL_SDK_DISABLED=true` turns everything off.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any, TypeVar

from opentelemetry import context, propagate, trace
from opentelemetry.trace import Span, SpanKind, Tracer

__all__ = [
    "SpanKind",
    "consumer_span",
    "current_span",
    "current_traceparent",
    "inject",
    "instrument_app",
    "is_tracing",
    "producer_span",
    "setup_tracing",
    "span_from",
    "traced",
    "tracer",
]

_T = TypeVar("_T")

log = logging.getLogger(__name__)

TRACER_NAME = "dicomkeep"
#: The exporters `OTEL_TRACES_EXPORTER` may name (others are refused at start).
EXPORTERS = ("otlp", "console", "none")
#: The OTLP protocol DicomKeep ships (the OTLP/HTTP exporter package).
OTLP_PROTOCOL = "http/protobuf"
#: `messaging.system` of the in-process bus (RabbitMQ's spans say `rabbitmq`).
LOCAL_MESSAGING_SYSTEM = "dicomkeep_local_bus"

_state: dict[str, Any] = {"provider": None}


class TelemetryConfigError(ValueError):
    """An `OTEL_*` variable asks for something DicomKeep cannot do."""


def requested_exporters(environ: Mapping[str, str] | None = None) -> list[str]:
    """Return the exporters `OTEL_TRACES_EXPORTER` asks for ([] = tracing off).

    Unlike the SDK's own default (`otlp`), an unset variable means off. Raises
    TelemetryConfigError for an exporter or OTLP protocol DicomKeep does not ship.
    """
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [
        name.strip().lower()
        for name in env.get("OTEL_TRACES_EXPORTER", "none").split(",")
        if name.strip()
    ]
    unknown = [name for name in names if name not in EXPORTERS]
    if unknown:
        raise TelemetryConfigError(
            f"OTEL_TRACES_EXPORTER: unsupported exporter(s) {', '.join(unknown)} "
            f"(supported: {', '.join(EXPORTERS)})"
        )
    names = [name for name in names if name != "none"]
    if "otlp" in names:
        for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
            protocol = env.get(variable)
            if protocol:
                if protocol.strip() != OTLP_PROTOCOL:
                    raise TelemetryConfigError(
                        f"{variable}={protocol}: only {OTLP_PROTOCOL} is supported"
                    )
                break
    return names


def is_tracing() -> bool:
    """True once `setup_tracing` installed a tracer provider in this process."""
    return _state["provider"] is not None


def setup_tracing(service_name: str, *, exporters: Sequence[Any] | None = None) -> bool:
    """Install tracing for this process if the environment asks for it; idempotent.

    `exporters` (span exporters, e.g. the SDK's in-memory one in tests) replace the
    ones named by `OTEL_TRACES_EXPORTER` and are attached with a simple (synchronous)
    processor. Returns whether tracing is on. The first call of a process wins: the
    all-in-one process traces as one service.
    """
    if _state["provider"] is not None:
        return True
    names = [] if exporters is not None else requested_exporters()
    if exporters is None and not names:
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    if exporters is not None:
        for exporter in exporters:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    trace.set_tracer_provider(provider)
    _state["provider"] = provider
    _instrument_drivers()
    log.info("tracing on service=%s exporters=%s", service_name, ",".join(names) or "custom")
    return True


def shutdown_tracing() -> None:
    """Flush and stop the span processors (at process exit); no-op when off."""
    provider = _state["provider"]
    if provider is not None:
        provider.shutdown()


def span_processor_count() -> int:
    """How many span processors run in this process (0 when tracing is off)."""
    provider = trace.get_tracer_provider()
    active = getattr(provider, "_active_span_processor", None)
    return len(getattr(active, "_span_processors", ())) if active is not None else 0


def _exporter(name: str) -> Any:
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    return ConsoleSpanExporter()


def _instrument_drivers() -> None:
    """Instrument the drivers present in this environment (each one is optional)."""
    instrumentors = (
        ("opentelemetry.instrumentation.asyncpg", "AsyncPGInstrumentor"),
        ("opentelemetry.instrumentation.aio_pika", "AioPikaInstrumentor"),
        ("opentelemetry.instrumentation.redis", "RedisInstrumentor"),
        ("opentelemetry.instrumentation.httpx", "HTTPXClientInstrumentor"),
    )
    import importlib

    for module_name, class_name in instrumentors:
        try:
            instrumentor = getattr(importlib.import_module(module_name), class_name)()
        except ImportError:
            continue
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()


def instrument_app(app: Any) -> None:
    """Give a FastAPI app HTTP server spans (semantic conventions), when tracing is on."""
    if not is_tracing():
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app)


def current_span() -> Span:
    """Return the current span (a non-recording one outside any span)."""
    return trace.get_current_span()


class _Off(trace.NoOpTracer):
    """The tracer while tracing is off: what the API's proxy tracer ends up doing
    (non-recording spans, nothing attached), without its lookups per span and with
    one shared context manager (a few spans per stored instance cost ~3% of the
    server's CPU through the proxy)."""

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return _NO_SPAN


class _NoSpan:
    """A stateless (so shareable) context manager giving the invalid span."""

    def __enter__(self) -> Span:
        return trace.INVALID_SPAN

    def __exit__(self, *exc_info: object) -> None:
        return None


_NO_SPAN = _NoSpan()
_OFF = _Off()


def tracer() -> Tracer:
    """Return DicomKeep's tracer (a no-op one when tracing is off)."""
    if _state["provider"] is None:
        return _OFF
    return trace.get_tracer(TRACER_NAME)


def inject(headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Write the current W3C trace context (`traceparent`, `tracestate`) into `headers`."""
    propagate.inject(headers)
    return headers


def current_traceparent() -> str | None:
    """Return the W3C `traceparent` of the current span, or None outside a recorded span."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


@contextlib.contextmanager
def producer_span(
    system: str, destination: str, routing_key: str, headers: MutableMapping[str, str]
) -> Iterator[Span]:
    """A messaging `send` span (PRODUCER) whose context is injected into `headers`."""
    name = f"send {destination or routing_key}"
    with tracer().start_as_current_span(
        name,
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": system,
            "messaging.operation.type": "send",
            "messaging.operation.name": "publish",
            "messaging.destination.name": destination or routing_key,
            "messaging.rabbitmq.destination.routing_key": routing_key,
        },
    ) as span:
        propagate.inject(headers)
        yield span


@contextlib.contextmanager
def consumer_span(system: str, queue: str, headers: Mapping[str, str]) -> Iterator[Span]:
    """A messaging `process` span (CONSUMER), child of the context found in `headers`."""
    if _state["provider"] is None and "traceparent" not in headers:
        yield trace.INVALID_SPAN  # nothing to record, no context to carry on
        return
    parent = propagate.extract(dict(headers))
    token = context.attach(parent)
    try:
        with tracer().start_as_current_span(
            f"process {queue}",
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": system,
                "messaging.operation.type": "process",
                "messaging.destination.name": queue,
            },
        ) as span:
            yield span
    finally:
        context.detach(token)


@contextlib.contextmanager
def span_from(
    traceparent: str | None, name: str, *, kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """A span whose parent is the W3C `traceparent` given (a new trace when None)."""
    parent = propagate.extract({"traceparent": traceparent} if traceparent else {})
    with tracer().start_as_current_span(
        name, context=parent, kind=kind, attributes=dict(attributes or {})
    ) as span:
        yield span


def traced(
    items: Iterable[_T], name: str, *, kind: SpanKind = SpanKind.SERVER,
    attributes: Mapping[str, Any] | None = None, each: str | None = None, each_from: int = 0,
) -> Iterator[_T]:
    """Iterate `items` inside a span `name` that ends when the iteration does.

    For pynetdicom's handlers, which return iterators consumed after they return
    (C-FIND answers, C-MOVE sub-operations): the span is not made current, so that
    nothing is attached across a `yield`. With `each`, every item also gets its
    own child span, from the moment it is requested to the request of the next one
    (a C-MOVE sub-operation: read, then sent by pynetdicom); the first `each_from`
    items (pynetdicom's preamble: destination, count) get none.
    """
    parent = tracer().start_span(name, kind=kind, attributes=dict(attributes or {}))
    parent_context = trace.set_span_in_context(parent)
    count = 0
    try:
        iterator = iter(items)
        while True:
            child = (
                tracer().start_span(each, context=parent_context)
                if each is not None and count >= each_from
                else None
            )
            try:
                try:
                    item = next(iterator)
                except StopIteration:
                    return
                count += 1
                yield item
            finally:
                if child is not None:
                    child.end()
    finally:
        parent.set_attribute("dicomkeep.items", max(0, count - each_from))
        parent.end()
