"""The `dicomkeep` command: serve all-in-one, run one service, write a sample config.

Mirrors Orthanc's synopsis: `dicomkeep [OPTION]... [CONFIGURATION]`, with
`--config=FILE` writing an annotated configuration (`--config=-`: to standard
output), `--version`, `--errors`, and Orthanc's logging options (`--verbose`,
`--trace`, `--logdir=`, `--logfile=`, `--verbose-CATEGORY`...), accepted before or
after the command and the configuration path. Clients of a running server:
`upload` (as ImportDicomFiles.py) and `job wait`. Operators of the distributed
mode: `dlq list|replay|purge` (RabbitMQ's dead letters).

Over 400 lines because it is one argument grammar (Orthanc's options accepted
before or after the command) with the small handler of each command beside it;
the clients' network code lives in `client.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any, NoReturn

from dicomkeep.common.logs import configure_logging, set_deidentify, set_log_format
from dicomkeep.common.option_support import check_options
from dicomkeep.common.settings import ConfigError, Settings, load_settings, sample_configuration
from dicomkeep.common.telemetry import TelemetryConfigError, requested_exporters

COMMANDS = ("serve", "run", "cluster", "upload", "job", "dlq")
SERVICES = ("gateway", "ingest", "indexer", "storage", "stability", "jobs")
ORTHANC_VERSION = "1.12.4"

#: Orthanc's log categories and the loggers that carry them here.
LOG_CATEGORIES: dict[str, tuple[str, ...]] = {
    "generic": ("dicomkeep",),
    "http": ("dicomkeep.gateway", "uvicorn"),
    "dicom": ("dicomkeep.ingest", "dicomkeep.common.dicom.scu", "pynetdicom"),
    "sqlite": ("dicomkeep.common.adapters.sqlite_db",),
    "jobs": ("dicomkeep.jobs", "dicomkeep.common.jobs"),
}
#: Orthanc options that DicomKeep refuses, with the reason it gives.
REFUSED_OPTIONS = {
    "no_jobs": "--no-jobs is not supported: jobs are kept in the index that every "
    "service shares, and pending jobs are resumed",
    "verbose_plugins": "--verbose-plugins is not supported: DicomKeep has no plugins",
    "trace_plugins": "--trace-plugins is not supported: DicomKeep has no plugins",
    "verbose_lua": "--verbose-lua is not supported: DicomKeep has no Lua engine",
    "trace_lua": "--trace-lua is not supported: DicomKeep has no Lua engine",
}


def dicomkeep_version() -> str:
    """Return the installed DicomKeep version."""
    return version("dicomkeep-allinone")


def _orthanc_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """Add Orthanc's logging and start-up options to `parser`.

    They are added to the main parser and to every command, so they may come
    before or after the command and the configuration path; a command's parser
    leaves unset options alone (SUPPRESS), keeping what the main parser read.
    """
    flag: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    value: dict[str, Any] = {"default": None} if top else {"default": argparse.SUPPRESS}
    parser.add_argument("--verbose", action="store_true", help="log at INFO level", **flag)
    parser.add_argument("--trace", action="store_true", help="log at DEBUG level", **flag)
    parser.add_argument("--logdir", metavar="DIR", help="write the log to a new file in DIR",
                        **value)
    parser.add_argument("--logfile", metavar="FILE", help="append the log to FILE", **value)
    parser.add_argument("--upgrade", action="store_true",
                        help="accepted: the index schema is upgraded at start anyway", **flag)
    parser.add_argument("--no-jobs", action="store_true", help=argparse.SUPPRESS, **flag)
    for category in (*LOG_CATEGORIES, "plugins", "lua"):
        for level in ("verbose", "trace"):
            parser.add_argument(f"--{level}-{category}", action="store_true",
                                help=argparse.SUPPRESS, **flag)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicomkeep",
        description="DicomKeep: a DICOM server with an Orthanc-compatible REST API.",
        epilog="Orthanc's --verbose-CATEGORY and --trace-CATEGORY options are accepted "
        f"for the categories {', '.join(LOG_CATEGORIES)}.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument(
        "--config", metavar="FILE",
        help="write an annotated sample configuration to FILE (- for standard output) and exit",
    )
    parser.add_argument("--errors", action="store_true",
                        help="print the supported error codes and exit")
    parser.add_argument("--openapi", metavar="FILE",
                        help="write the REST API's OpenAPI document to FILE (- for standard "
                        "output) and exit")
    parser.add_argument("--cheatsheet", metavar="FILE", help=argparse.SUPPRESS)
    _orthanc_options(parser, top=True)
    commands = parser.add_subparsers(dest="command")

    def command(name: str, **kwargs: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, **kwargs)  # type: ignore[arg-type]
        _orthanc_options(sub, top=False)
        _add_log_format(sub, top=False)
        return sub

    serve = command("serve", help="run every service in one process")
    serve.add_argument("configuration", nargs="?", help="an Orthanc-style JSON file or folder")
    run = command("run", help="run one service (distributed mode)")
    run.add_argument("service", choices=SERVICES)
    run.add_argument("configuration", nargs="?", help="an Orthanc-style JSON file or folder")
    run.add_argument("--http-port", type=int, help="gateway: override HttpPort")
    run.add_argument("--ops-port", type=int, help="override DicomKeep.OpsPort")
    cluster = command("cluster", help="start or stop a local distributed cluster")
    cluster.add_argument("action", choices=("start", "stop"))
    cluster.add_argument("configuration", nargs="?", help="an Orthanc-style JSON file or folder")
    cluster.add_argument("--state-dir", default=".cluster", help="where pids and logs go")
    cluster.add_argument("--timeout", type=float, default=180.0,
                         help="seconds to wait for every member (default 180)")
    dlq = command("dlq", help="list, replay or purge RabbitMQ's dead letters (distributed)")
    dlq.add_argument("action", choices=("list", "replay", "purge"))
    dlq.add_argument("configuration", nargs="?", help="an Orthanc-style JSON file or folder")
    dlq.add_argument("--queue", metavar="NAME",
                     help="only the dead letters of this queue (e.g. dicomkeep.stability.changes)")
    _client_commands(command)
    _add_log_format(parser, top=True)
    return parser


def _client_commands(command: Any) -> None:
    """`upload` and `job wait`: clients of a running DicomKeep or Orthanc."""
    upload = command("upload", help="send DICOM files and folders to a server's /instances")
    upload.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="DICOM files, or folders (read recursively)")
    job = command("job", help="follow an asynchronous job")
    job.add_argument("action", choices=("wait",))
    job.add_argument("job_id", metavar="ID")
    job.add_argument("--timeout", type=float, default=3600.0,
                     help="seconds to wait (default 3600)")
    for sub in (upload, job):
        sub.add_argument("--url", default="http://127.0.0.1:8042",
                         help="the server's REST API (default http://127.0.0.1:8042)")
        sub.add_argument("--username", help="HTTP user (RegisteredUsers)")
        sub.add_argument("--password",
                         help="HTTP password (default: the DICOMKEEP_PASSWORD variable)")


def _add_log_format(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """`--log-format text|json` (overrides `DicomKeep.LogFormat`), before or after
    the command as Orthanc's options."""
    parser.add_argument(
        "--log-format", choices=("text", "json"),
        default=None if top else argparse.SUPPRESS,
        help="log lines as text (default) or JSON objects (DicomKeep.LogFormat)",
    )


def _configure_logging(verbose: bool, trace: bool, log_format: str | None = None) -> None:
    level = "trace" if trace else "verbose" if verbose else "default"
    configure_logging(level, "json" if log_format == "json" else "text")


def _apply_log_settings(args: argparse.Namespace, settings: Settings) -> None:
    """Once the configuration is read: its LogFormat (unless `--log-format` was
    given) and DeidentifyLogs."""
    if args.log_format is None and settings.dicomkeep.log_format == "json":
        set_log_format("json")
    set_deidentify(settings.deidentify_logs)
    try:
        requested_exporters()
    except TelemetryConfigError as error:
        sys.stderr.write(f"dicomkeep: bad configuration: {error}\n")
        raise SystemExit(2) from error


def _apply_orthanc_options(args: argparse.Namespace) -> None:
    """Carry out Orthanc's logging options (after `_configure_logging`).

    Raises SystemExit(2) with one line for an option DicomKeep refuses.
    """
    for name, reason in REFUSED_OPTIONS.items():
        if getattr(args, name, False):
            _fail(reason, code=2)
    for category, loggers in LOG_CATEGORIES.items():
        level = (logging.DEBUG if getattr(args, f"trace_{category}", False)
                 else logging.INFO if getattr(args, f"verbose_{category}", False) else None)
        if level is not None:
            # These loggers only: their records reach the root's handlers whatever
            # the root's level, which stays as it is for the other categories.
            for name in loggers:
                logging.getLogger(name).setLevel(level)
    if args.logdir and args.logfile:
        _fail("give --logdir or --logfile, not both", code=2)
    target = args.logfile
    if args.logdir:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = str(Path(args.logdir) / f"dicomkeep-{stamp}-{os.getpid()}.log")
    if target:
        _log_to_file(Path(target))
    if args.upgrade:
        logging.getLogger(__name__).info("--upgrade: the index schema is upgraded at start")


def _log_to_file(path: Path) -> None:
    """Send the log lines (same format) to `path` instead of standard error."""
    try:
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as error:
        _fail(f"cannot write the log to {path}: {error.strerror}", code=2)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, logging.StreamHandler) and old.stream is sys.stderr:
            if old.formatter is not None:  # the same lines, e.g. JSON when asked for
                handler.setFormatter(old.formatter)
            root.removeHandler(old)
    root.addHandler(handler)


def _fail(message: str, *, code: int = 1) -> NoReturn:
    sys.stderr.write(f"dicomkeep: {message}\n")
    raise SystemExit(code)


def _load(path: str | None) -> Settings:
    try:
        return check_options(load_settings(Path(path) if path else None))
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


_OPTIONS_WITH_VALUE = {"--config", "--logdir", "--logfile", "--openapi", "--cheatsheet"}


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
        return _write_sample(args.config)
    if args.errors:
        return _print_errors()
    if args.openapi:
        return _write_openapi(args.openapi)
    if args.cheatsheet:
        _fail("--cheatsheet is not supported: --openapi=FILE writes every route", code=2)
    _configure_logging(args.verbose, args.trace, args.log_format)
    _apply_orthanc_options(args)
    if args.command == "cluster":
        return _cluster(args.action, args.configuration, Path(args.state_dir), args.timeout)
    if args.command in ("upload", "job"):
        return _client(args)
    if args.command == "dlq":
        return _dead_letters(args.action, _load(args.configuration), args.queue)
    if args.command in (None, "serve"):
        from dicomkeep.allinone.app import AllInOne, run_until_signalled

        configuration = getattr(args, "configuration", None)
        settings = _load(configuration)
        _apply_log_settings(args, settings)
        _check_ports(_serve_ports(settings))
        # /tools/reset builds the services again: from the configuration read again.
        loaded = _Reloading(settings, configuration)
        return _run(lambda: run_until_signalled(
            lambda control: AllInOne(loaded.next(), control)))
    from dicomkeep.allinone.app import run_until_signalled
    from dicomkeep.allinone.single import build_service

    settings = _load(args.configuration)
    _apply_log_settings(args, settings)
    _check_ports(_service_ports(settings, args.service, args.http_port, args.ops_port))
    loaded = _Reloading(settings, args.configuration)
    return _run(lambda: run_until_signalled(lambda control: build_service(
        args.service, loaded.next(), http_port=args.http_port, ops_port=args.ops_port,
        control=control,
    )))


class _Reloading:
    """The settings for each start: those read at launch, then (after /tools/reset)
    the configuration read again. A configuration broken meanwhile exits, status 2."""

    def __init__(self, first: Settings, configuration: str | None) -> None:
        self.first: Settings | None = first
        self.configuration = configuration

    def next(self) -> Settings:
        if self.first is not None:
            settings, self.first = self.first, None
            return settings
        return _load(self.configuration)


def _write_sample(target: str) -> int:
    """`--config=FILE`: the annotated sample; `-` writes it to standard output (as Orthanc)."""
    return _write_text(target, sample_configuration())


def _write_text(target: str, text: str) -> int:
    """Write `text` to the file `target`, or to standard output when it is `-`."""
    if target == "-":
        sys.stdout.write(text)
        return 0
    try:
        Path(target).write_text(text, encoding="utf-8")
    except OSError as error:
        _fail(f"cannot write {target}: {error.strerror}")
    return 0


def _write_openapi(target: str) -> int:
    """`--openapi=FILE`: the gateway's OpenAPI document (`-`: standard output), as Orthanc."""
    import json

    from dicomkeep.gateway import main as gateway

    document = gateway.build(Settings()).app.openapi()  # builds the routes, opens nothing
    return _write_text(target, json.dumps(document, indent=2) + "\n")


def _print_errors() -> int:
    """`--errors`: Orthanc's error codes that DicomKeep answers with, as Orthanc prints them."""
    from dicomkeep.common.errors import ErrorCode

    lines = [f"{code.status:>16}   {code.message}" for code in ErrorCode]
    sys.stdout.write("List of error codes that could be returned by DicomKeep:\n\n")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


# -- ports: one clear line when one is taken ----------------------------------------------


def _serve_ports(settings: Settings) -> list[tuple[str, str, int]]:
    from dicomkeep.allinone.app import http_host

    ports = [("HttpPort", http_host(settings), settings.http_port),
             ("DicomPort", "0.0.0.0", settings.dicom_port)]
    if settings.dicomkeep.ops_port:
        ports.append(("DicomKeep.OpsPort", "0.0.0.0", settings.dicomkeep.ops_port))
    return ports


def _service_ports(
    settings: Settings, service: str, http_port: int | None, ops_port: int | None
) -> list[tuple[str, str, int]]:
    from dicomkeep.allinone.app import http_host

    ports = []
    if service == "gateway":
        ports.append(("HttpPort", http_host(settings), http_port or settings.http_port))
    if service == "ingest":
        ports.append(("DicomPort", "0.0.0.0", settings.dicom_port))
    ops = ops_port if ops_port is not None else settings.dicomkeep.ops_port
    if ops:
        ports.append(("DicomKeep.OpsPort", "0.0.0.0", ops))
    return ports


def _check_ports(ports: list[tuple[str, str, int]]) -> None:
    """Exit with one line (status 1) when a port the server listens on is taken."""
    for option, host, port in ports:
        with socket.socket() as sock:
            # As the servers bind: SO_REUSEADDR, so a port in TIME_WAIT is not "in use".
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as error:
                _fail(_bind_message(option, port, error))


def _bind_message(option: str, port: int, error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return f"port {port} ({option}) is already in use by another program"
    return f"cannot listen on port {port} ({option}): {error.strerror}"


def _run(coroutine: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Run the server until signalled; a port taken meanwhile is one line, status 1; a
    configuration found unusable at start (e.g. `SslCertificate`) one line, status 2."""
    try:
        asyncio.run(coroutine())
    except ConfigError as error:
        sys.stderr.write(f"dicomkeep: bad configuration: {error}\n")
        return 2
    except OSError as error:
        if error.errno not in (errno.EADDRINUSE, errno.EACCES):
            raise
        _fail(f"cannot listen: {error.strerror}")
    return 0


# -- commands ----------------------------------------------------------------------------


class _ClusterProgress:
    """`cluster start`'s bar: one step per member ready."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                            MofNCompleteColumn(), console=Console(stderr=True))
        self.task = self.bar.add_task("starting", total=None)

    def begin(self, total: int) -> None:
        self.bar.update(self.task, total=total, description="starting")

    def ready(self, name: str) -> None:
        self.bar.update(self.task, advance=1, description=f"{name} ready")


def _cluster(action: str, configuration: str | None, state_dir: Path, timeout: float) -> int:
    from dicomkeep.allinone import cluster

    if action == "stop":
        count = cluster.stop(state_dir)
        sys.stdout.write(f"stopped {count} processes\n")
        return 0
    progress = _ClusterProgress()
    try:
        with progress.bar:
            state = cluster.start(configuration, state_dir, timeout=timeout, progress=progress)
    except (RuntimeError, ConfigError) as error:
        sys.stderr.write(f"dicomkeep: cluster did not start: {error}\n")
        return 1
    urls = " ".join(f"http://127.0.0.1:{port}" for port in state.http_ports)
    blobs = f"S3 {state.s3_endpoint}" if state.s3_endpoint else f"files in {state.storage_directory}"
    sys.stdout.write(
        f"cluster ready: REST {urls}, DICOM port {state.dicom_port}, "
        f"blobs: {blobs}, logs in {state_dir}/\n"
    )
    return 0


def _dead_letters(action: str, settings: Settings, queue: str | None) -> int:
    """`dlq list|replay|purge`: one line per dead letter, then a summary; exit 1 when
    the broker is unreachable."""
    from dicomkeep.common.adapters.rabbit_dead_letters import handle_dead_letters

    try:
        letters = asyncio.run(handle_dead_letters(
            settings.rabbitmq.url, action, queue=queue))  # type: ignore[arg-type]
    except (OSError, ConnectionError) as error:
        _fail(f"RabbitMQ unreachable at {settings.rabbitmq.url}: {error}")
    for letter in letters:
        sys.stdout.write(
            f"{letter.outcome}\tqueue={letter.queue} reason={letter.reason} "
            f"routing_key={letter.routing_key} type={letter.type} bytes={letter.size} "
            f"died={letter.died_at}\n"
        )
    done = {"list": "found", "replay": "replayed", "purge": "purged"}[action]
    count = sum(1 for letter in letters if action == "list" or letter.outcome == done)
    sys.stdout.write(f"{count} dead letters {done}\n")
    return 0


def _client(args: argparse.Namespace) -> int:
    """`upload` and `job wait`: exit 0 when everything worked, 1 otherwise."""
    import httpx
    from dicomkeep.allinone import client
    from rich.console import Console

    password = args.password if args.password is not None else os.environ.get(
        "DICOMKEEP_PASSWORD")
    console = Console(stderr=True)
    with client.http_client(args.url, args.username, password) as http:
        if args.command == "upload":
            try:
                files = client.files_of(args.paths)
            except FileNotFoundError as error:
                _fail(str(error), code=2)
            summary = client.upload(http, files, console)
            for path, reason in summary.failed:
                sys.stderr.write(f"dicomkeep: {path}: {reason}\n")
            sys.stdout.write(summary.line() + "\n")
            return 1 if summary.failed else 0
        try:
            job = client.wait_job(http, args.job_id, console, timeout=args.timeout)
        except (client.JobError, httpx.HTTPError) as error:
            _fail(str(error))
        sys.stdout.write(f"job {args.job_id} {job.get('State')}\n")
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
