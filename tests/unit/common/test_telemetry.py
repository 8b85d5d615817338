"""telemetry.py and logs.py: off by default, the OTEL_* variables, JSON lines with
trace ids, the in-process bus carrying the W3C context. Anything that installs a
tracer provider runs in a child process (the provider is global)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import pytest
from dicomkeep.common import logs
from dicomkeep.common.telemetry import TelemetryConfigError, requested_exporters


def run_python(code: str, **env: str) -> str:
    import os

    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env={**environ, **env},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_off_by_default_no_span_processor() -> None:
    out = run_python("""
        from dicomkeep.common import telemetry
        from opentelemetry import trace
        on = telemetry.setup_tracing("dicomkeep-test")
        with telemetry.tracer().start_as_current_span("x") as span:
            recording = span.is_recording()
        print(on, telemetry.span_processor_count(), recording,
              type(trace.get_tracer_provider()).__name__)
    """, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")
    assert out.split() == ["False", "0", "False", "ProxyTracerProvider"]


def test_on_with_an_exporter_named() -> None:
    out = run_python("""
        from dicomkeep.common import telemetry
        print(telemetry.setup_tracing("dicomkeep-test"), telemetry.span_processor_count())
    """, OTEL_TRACES_EXPORTER="console")
    assert out.split() == ["True", "1"]


def test_unsupported_variables_are_refused() -> None:
    assert requested_exporters({}) == []
    assert requested_exporters({"OTEL_TRACES_EXPORTER": "otlp,console"}) == ["otlp", "console"]
    assert requested_exporters({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}) == []
    with pytest.raises(TelemetryConfigError, match="zipkin"):
        requested_exporters({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(TelemetryConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        requested_exporters({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})


def test_cli_refuses_unsupported_exporter(tmp_path: object) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-m", "dicomkeep.allinone.cli", "serve"],
        env={**env, "OTEL_TRACES_EXPORTER": "jaeger"}, capture_output=True, text=True,
        timeout=60, cwd=str(tmp_path),
    )
    assert result.returncode == 2
    assert "OTEL_TRACES_EXPORTER" in result.stderr


def test_local_bus_carries_the_trace_context() -> None:
    out = run_python("""
        import asyncio
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from dicomkeep.common import telemetry
        from dicomkeep.common.adapters.local_bus import LocalBus

        memory = InMemorySpanExporter()
        telemetry.setup_tracing("t", exporters=[memory])

        async def main():
            bus = LocalBus()
            await bus.start()
            got = asyncio.Event()
            async def handler(body, headers):
                with telemetry.tracer().start_as_current_span("handled"):
                    got.set()
            await bus.consume("q", [("x", "#")], handler)
            with telemetry.tracer().start_as_current_span("origin"):
                await bus.publish("x", "a.b", b"{}", {})
            await asyncio.wait_for(got.wait(), 5)
            await bus.close()

        asyncio.run(main())
        spans = {s.name: s for s in memory.get_finished_spans()}
        chain, span = [], spans["handled"]
        by_id = {s.context.span_id: s for s in spans.values()}
        while span is not None:
            chain.append(span.name)
            span = by_id.get(span.parent.span_id) if span.parent else None
        print(" ".join(reversed(chain)))
    """)
    assert out.split() == ["origin", "send", "x", "process", "q", "handled"]


@pytest.fixture(autouse=True)
def root_logger_restored() -> object:
    """configure_logging replaces the root logger's handlers: give pytest's back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logs.set_deidentify(True)


def test_json_lines_with_trace_ids(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure_logging("default", "json")
    try:
        logging.getLogger("dicomkeep.test").info("stored instance=%s", "abc")
        record = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert record["message"] == "stored instance=abc"
        assert record["level"] == "INFO" and record["logger"] == "dicomkeep.test"
        assert "trace_id" not in record  # no active span
        from opentelemetry import trace
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

        context = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, False,
                              TraceFlags(1))
        with trace.use_span(NonRecordingSpan(context)):
            logging.getLogger("dicomkeep.test").warning("inside")
        record = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert record["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert record["span_id"] == "00f067aa0ba902b7"
    finally:
        logs.configure_logging("default", "text")


def test_log_levels_and_deidentification() -> None:
    logs.configure_logging("trace", "text", deidentify=True)
    try:
        assert logs.get_log_level() == "trace"
        assert logging.getLogger().level == logging.DEBUG
        assert logs.patient_text("DOE^JOHN") == logs.HIDDEN
        (handler,) = logging.getLogger().handlers
        record = logging.LogRecord("aiormq.connection", logging.DEBUG, "", 0, "body", None, None)
        assert not handler.filter(record)
        record = logging.LogRecord("dicomkeep.x", logging.DEBUG, "", 0, "ok", None, None)
        assert handler.filter(record)
        logs.set_deidentify(False)
        assert logs.patient_text("DOE^JOHN") == "DOE^JOHN"
        with pytest.raises(ValueError):
            logs.set_log_level("loud")
        # pynetdicom formats its PDU and DIMSE lines only where they can print.
        from pynetdicom import _config as pynetdicom_config

        assert pynetdicom_config.LOG_HANDLER_LEVEL == "standard"
        logs.set_log_level("verbose")
        assert pynetdicom_config.LOG_HANDLER_LEVEL == "none"
    finally:
        logs.configure_logging("default", "text")
