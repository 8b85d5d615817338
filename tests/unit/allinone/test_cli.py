"""The `dicomkeep` command line, as an Orthanc user types it."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from dicomkeep.allinone.cli import _parser, main, with_command
from dicomkeep.allinone.cluster import free_port
from dicomkeep.common.settings import load_settings


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["orthanc.json"], ["serve", "orthanc.json"]),
        (["--verbose", "conf.d"], ["--verbose", "serve", "conf.d"]),
        (["serve", "orthanc.json"], ["serve", "orthanc.json"]),
        (["run", "indexer", "x.json"], ["run", "indexer", "x.json"]),
        (["--config", "out.json"], ["--config", "out.json"]),
        ([], []),
    ],
)
def test_a_bare_configuration_path_serves(argv: list[str], expected: list[str]) -> None:
    assert with_command(argv) == expected


def test_version_and_sample_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--version"]) == 0
    assert "Orthanc 1.12.4" in capsys.readouterr().out
    sample = tmp_path / "sample.json"
    assert main([f"--config={sample}"]) == 0
    settings = load_settings(sample, environ={})
    assert (settings.http_port, settings.dicom_port, settings.dicom_aet) == (8042, 4242, "ORTHANC")


def test_bad_configuration_exits_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"MaximumStorageMode": "Sometimes"}')
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", str(bad)])
    assert exit_info.value.code == 2
    assert "MaximumStorageMode" in capsys.readouterr().err


def test_config_dash_writes_the_sample_to_standard_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["--config=-"]) == 0
    text = capsys.readouterr().out
    assert not (tmp_path / "-").exists()  # not a file named "-"
    (tmp_path / "sample.json").write_text(text)
    assert load_settings(tmp_path / "sample.json", environ={}) == load_settings(None, environ={})


@pytest.mark.parametrize(
    "argv",
    [
        ["c.json", "--verbose"],
        ["serve", "c.json", "--verbose", "--logfile", "x.log"],
        ["--verbose", "c.json", "--logfile=x.log"],
        ["c.json", "--trace-dicom", "--upgrade"],
    ],
)
def test_options_after_the_configuration_path_are_read(argv: list[str]) -> None:
    args = _parser().parse_args(with_command(argv))
    assert (args.command, args.configuration) == ("serve", "c.json")
    assert args.verbose or args.trace_dicom
    assert args.logfile in (None, "x.log")


def test_options_before_the_command_survive_the_command_parser() -> None:
    args = _parser().parse_args(with_command(["--verbose", "--logdir=/tmp", "run", "indexer"]))
    assert (args.verbose, args.logdir, args.service) == (True, "/tmp", "indexer")


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--no-jobs", "--no-jobs is not supported"),
        ("--verbose-lua", "no Lua engine"),
        ("--trace-plugins", "no plugins"),
    ],
)
def test_orthanc_options_without_a_meaning_here_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "c.json"), option])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("dicomkeep: ") and message in err and err.count("\n") == 1


def test_logdir_and_logfile_together_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--logdir=/tmp", "--logfile=/tmp/x.log"])
    assert exit_info.value.code == 2
    assert "--logdir or --logfile" in capsys.readouterr().err


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, levels = list(root.handlers), {
        name: logging.getLogger(name).level for name in ("", "pynetdicom", "dicomkeep.ingest")
    }
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers = handlers
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_log_category_and_logdir_options_take_effect(tmp_path: Path) -> None:
    # `upload` of a missing folder stops (status 2) after the logging is set up.
    with pytest.raises(SystemExit) as exit_info:
        main(["upload", str(tmp_path / "none"), "--trace-dicom", f"--logdir={tmp_path}"])
    assert exit_info.value.code == 2
    assert logging.getLogger("pynetdicom").level == logging.DEBUG
    assert logging.getLogger("dicomkeep.ingest").level == logging.DEBUG
    logging.getLogger("dicomkeep.ingest").debug("a DICOM trace line")
    logging.getLogger("dicomkeep.gateway").debug("an HTTP trace line")
    (log,) = tmp_path.glob("dicomkeep-*.log")
    assert "a DICOM trace line" in log.read_text()
    assert "an HTTP trace line" not in log.read_text()  # other categories as they were


def test_errors_lists_orthanc_error_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--errors"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "               7   Accessing an inexistent item" in lines
    assert "              17   Unknown resource" in lines


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["serve"], "HttpPort"),
        (["run", "gateway"], "HttpPort"),
        (["run", "ingest"], "DicomPort"),
    ],
)
def test_a_port_in_use_is_one_line_and_status_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], option: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        key = "HttpPort" if option == "HttpPort" else "DicomPort"
        other = "DicomPort" if key == "HttpPort" else "HttpPort"
        config = tmp_path / "c.json"
        config.write_text(json.dumps({key: port, other: free_port(),
                                      "StorageDirectory": str(tmp_path / "s")}))
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, str(config)])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == (
        f"dicomkeep: port {port} ({option}) is already in use by another program\n"
    )


def test_openapi_writes_every_route(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--openapi=-"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert {"/patients", "/instances", "/system", "/jobs/{job_id}"} <= set(document["paths"])
    target = tmp_path / "openapi.json"
    assert main([f"--openapi={target}"]) == 0
    assert json.loads(target.read_text()) == document
    with pytest.raises(SystemExit) as exit_info:
        main(["--cheatsheet=-"])
    assert exit_info.value.code == 2
    assert "--openapi" in capsys.readouterr().err
