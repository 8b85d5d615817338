"""Logging of every process: text or JSON lines, Orthanc's levels, no patient data.

- Format: "text" (`<time> <LEVEL> <logger> <message>`) or "json": one object per
  line with `time`, `level`, `logger`, `message`, and `trace_id`/`span_id` when a
  span is active (OpenTelemetry, see telemetry.py), `exception` when one is logged.
- Levels are Orthanc's (`/tools/log-level`, `--verbose`, `--trace`): "default"
  (DicomKeep's own loggers at INFO, other libraries at WARNING), "verbose"
  (everything at INFO), "trace" (everything at DEBUG). They change at run time.
- `DeidentifyLogs` (Orthanc's option, default true): DicomKeep's log calls print
  Orthanc identifiers and Seqs, never names or DICOM identifiers; the few that
  would echo a client's input (a refused C-FIND identifier, a file name) pass it
  through `patient_text`; the libraries' DEBUG lines (message bodies, query
  arguments) and pynetdicom's INFO lines (datasets) are dropped.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

from opentelemetry import trace

LogFormat = Literal["text", "json"]
LOG_LEVELS = ("default", "verbose", "trace")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
#: What `patient_text` prints instead of client data while DeidentifyLogs is on.
HIDDEN = "<hidden>"

_state: dict[str, Any] = {"level": "default", "deidentify": True}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the active span's trace and span ids."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            line["trace_id"] = format(context.trace_id, "032x")
            line["span_id"] = format(context.span_id, "016x")
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class _DropLibraryDebug(logging.Filter):
    """While deidentifying, drop the libraries' records that may dump data: every
    DEBUG record not from DicomKeep (aiormq and asyncpg print message bodies and
    query arguments), and pynetdicom's below WARNING (it dumps datasets)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _state["deidentify"] or record.levelno >= logging.WARNING:
            return True
        if record.name == "dicomkeep" or record.name.startswith("dicomkeep."):
            return True
        if record.name.startswith("pynetdicom"):
            return False
        return record.levelno >= logging.INFO


def configure_logging(
    level: str = "default", log_format: LogFormat = "text", *, deidentify: bool = True
) -> None:
    """Send every log line to standard error in `log_format`, at Orthanc's `level`.

    Replaces the root logger's handlers (idempotent). Raises ValueError for an
    unknown level or format.
    """
    if log_format not in ("text", "json"):
        raise ValueError(f"unknown log format {log_format!r} (text or json)")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(_DropLibraryDebug())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    _state["deidentify"] = deidentify
    set_log_level(level)


def set_log_level(level: str) -> None:
    """Apply one of Orthanc's levels ("default", "verbose", "trace") at run time."""
    if level not in LOG_LEVELS:
        raise ValueError(f"unknown log level {level!r}")
    root_level = {"default": logging.WARNING, "verbose": logging.INFO, "trace": logging.DEBUG}
    logging.getLogger().setLevel(root_level[level])
    logging.getLogger("dicomkeep").setLevel(min(root_level[level], logging.INFO))
    logging.getLogger("pynetdicom").setLevel(
        logging.DEBUG if level == "trace" else logging.WARNING
    )
    # pynetdicom's standard event handlers format every PDU and DIMSE message for
    # its INFO and DEBUG lines whatever the logger's level (~8% of a C-MOVE's CPU):
    # bound only to the associations made at "trace", where those lines print.
    try:  # the `dicom` extra: not every service has it
        from pynetdicom import _config as pynetdicom_config
    except ImportError:
        pass
    else:
        pynetdicom_config.LOG_HANDLER_LEVEL = "standard" if level == "trace" else "none"
    _state["level"] = level


def get_log_level() -> str:
    """Return the current level: "default", "verbose" or "trace"."""
    return str(_state["level"])


def set_deidentify(deidentify: bool) -> None:
    """Apply `DeidentifyLogs` (the settings are read after logging is configured) to
    every handler of the root logger (a log file's included)."""
    _state["deidentify"] = deidentify
    for handler in logging.getLogger().handlers:
        _filtered(handler)


def set_log_format(log_format: LogFormat) -> None:
    """Switch every handler of the root logger to `log_format`, keeping the handlers
    (a log file stays a log file) and the levels."""
    if log_format not in ("text", "json"):
        raise ValueError(f"unknown log format {log_format!r} (text or json)")
    for handler in logging.getLogger().handlers:
        handler.setFormatter(
            JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
        )
        _filtered(handler)


def _filtered(handler: logging.Handler) -> None:
    if not any(isinstance(f, _DropLibraryDebug) for f in handler.filters):
        handler.addFilter(_DropLibraryDebug())


def patient_text(value: object) -> str:
    """Return `value` for a log line, or `<hidden>` while DeidentifyLogs is on.

    For text that may carry patient data: a client's query values, file names,
    the details of a refused dataset.
    """
    return HIDDEN if _state["deidentify"] else str(value)
