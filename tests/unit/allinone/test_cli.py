"""The `dicomkeep` command line, as an Orthanc user types it."""

from __future__ import annotations

from pathlib import Path

import pytest
from dicomkeep.allinone.cli import main, with_command
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
