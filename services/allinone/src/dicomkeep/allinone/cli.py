"""The `dicomkeep` command: serve all-in-one, run one service, write a sample config.

Mirrors Orthanc's synopsis: `dicomkeep [OPTION]... [CONFIGURATION]`, with
`--config=FILE` writing an annotated configuration and `--version`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

from dicomkeep.common.logs import configure_logging, get_log_level, set_deidentify
from dicomkeep.common.settings import ConfigError, Settings, load_settings, sample_configuration
from dicomkeep.common.telemetry import TelemetryConfigError, requested_exporters

COMMANDS = ("serve", "run", "cluster")
SERVICES = ("gateway", "ingest", "indexer", "storage", "stability", "jobs")
ORTHANC_VERSION = "1.12.4"


def dicomkeep_version() -> str:
    """Return the installed DicomKeep version."""
    return version("dicomkeep-allinone")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicomkeep",
        description="DicomKeep: a DICOM server with an Orthanc-compatible REST API.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument(
        "--config", metavar="FILE", help="write an annotated sample configuration to FILE and exit"
    )
    parser.add_argument("--verbose", action="store_true", help="log at INFO level")
    parser.add_argument("--trace", action="store_true", help="log at DEBUG level")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="run every service in one process")
    serve.add_argument("configuration", nargs="?", help="an Orthanc-style JSON file or folder")
    run = commands.add_parser("run", help="run one service (distributed mode)")
    run.add_argument("service", choices=SERVICES)
    run.add_argument("configuration", nargs="?", help="an Orthanc-style JSON file or folder")
    run.add_argument("--http-port", type=int, help="gateway: override HttpPort")
    run.add_argument("--ops-port", type=int, help="override DicomKeep.OpsPort")
    cluster = commands.add_parser("cluster", help="start or stop a local distributed cluster")
    cluster.add_argument("action", choices=("start", "stop"))
    cluster.add_argument("configuration", nargs="?", help="an Orthanc-style JSON file or folder")
    cluster.add_argument("--state-dir", default=".cluster", help="where pids and logs go")
    _add_log_format(parser)
    return parser


def _add_log_format(parser: argparse.ArgumentParser) -> None:
    """`--log-format text|json` (overrides `DicomKeep.LogFormat`)."""
    parser.add_argument(
        "--log-format", choices=("text", "json"), default=None,
        help="log lines as text (default) or JSON objects (DicomKeep.LogFormat)",
    )


def _configure_logging(verbose: bool, trace: bool, log_format: str | None = None) -> None:
    level = "trace" if trace else "verbose" if verbose else "default"
    configure_logging(level, "json" if log_format == "json" else "text")


def _apply_log_settings(args: argparse.Namespace, settings: Settings) -> None:
    """Once the configuration is read: its LogFormat (unless `--log-format` was
    given) and DeidentifyLogs."""
    if args.log_format is None and settings.dicomkeep.log_format == "json":
        configure_logging(get_log_level(), "json", deidentify=settings.deidentify_logs)
    set_deidentify(settings.deidentify_logs)
    try:
        requested_exporters()
    except TelemetryConfigError as error:
        sys.stderr.write(f"dicomkeep: bad configuration: {error}\n")
        raise SystemExit(2) from error


def _load(path: str | None) -> Settings:
    try:
        return load_settings(Path(path) if path else None)
    except ConfigError as error:
        sys.stderr.write(f"dicomkeep: bad configuration: {error}\n")
        raise SystemExit(2) from error


def with_command(argv: list[str]) -> list[str]:
    """Insert `serve` before a bare configuration path, as Orthanc's synopsis reads
    (`Orthanc [OPTION]... [CONFIGURATION]`)."""
    skip_next = False
    for position, arg in enumerate(argv):
        if skip_next:
            skip_next = False
        elif arg in _OPTIONS_WITH_VALUE:
            skip_next = True
        elif not arg.startswith("-"):
            if arg in COMMANDS:
                return argv
            return [*argv[:position], "serve", *argv[position:]]
    return argv


_OPTIONS_WITH_VALUE = {"--config"}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(with_command(argv))
    if args.version:
        sys.stdout.write(
            f"DicomKeep {dicomkeep_version()} (Orthanc {ORTHANC_VERSION} REST API)\n"
        )
        return 0
    if args.config:
        Path(args.config).write_text(sample_configuration(), encoding="utf-8")
        return 0
    _configure_logging(args.verbose, args.trace, args.log_format)
    if args.command == "cluster":
        return _cluster(args.action, args.configuration, Path(args.state_dir))
    if args.command in (None, "serve"):
        from dicomkeep.allinone.app import AllInOne, run_until_signalled

        settings = _load(getattr(args, "configuration", None))
        _apply_log_settings(args, settings)
        asyncio.run(run_until_signalled(AllInOne(settings)))
        return 0
    from dicomkeep.allinone.app import run_until_signalled
    from dicomkeep.allinone.single import build_service

    settings = _load(args.configuration)
    _apply_log_settings(args, settings)
    service = build_service(
        args.service, settings, http_port=args.http_port, ops_port=args.ops_port
    )
    asyncio.run(run_until_signalled(service))
    return 0


def _cluster(action: str, configuration: str | None, state_dir: Path) -> int:
    from dicomkeep.allinone import cluster

    if action == "stop":
        count = cluster.stop(state_dir)
        sys.stdout.write(f"stopped {count} processes\n")
        return 0
    try:
        state = cluster.start(configuration, state_dir)
    except (RuntimeError, ConfigError) as error:
        sys.stderr.write(f"dicomkeep: cluster did not start: {error}\n")
        return 1
    urls = " ".join(f"http://127.0.0.1:{port}" for port in state.http_ports)
    sys.stdout.write(
        f"cluster ready: REST {urls}, DICOM port {state.dicom_port}, "
        f"S3 {state.s3_endpoint}, logs in {state_dir}/\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
