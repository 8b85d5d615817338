"""The benchmark's arithmetic and report (no server runs; no benchmark figure asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402
from bench.measure import cpu_delta, cpu_seconds, peak_rss_kib, percentile, summary  # noqa: E402


def test_summary_gives_median_and_relative_spread() -> None:
    assert summary([10.0, 12.0, 8.0]) == {
        "median": 10.0, "min": 8.0, "max": 12.0, "spread": 0.4, "runs": 3,
    }


def test_percentile_interpolates() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert percentile([7.0], 0.5) == 7.0


def test_ratio_is_dicomkeep_over_orthanc_and_verdict_follows_direction() -> None:
    assert report.ratio(50.0, 100.0) == 0.5
    assert report.ratio(1.0, 0.0) == 0.0
    assert report.verdict("cstore-dcmtk-1", 1.2) == "ok"  # throughput: more is better
    assert report.verdict("cstore-dcmtk-1", 0.8) == "short"
    assert report.verdict("tools-find", 0.8) == "ok"  # latency: less is better
    assert report.verdict("tools-find", 2.0) == "short"


def test_cpu_delta_counts_new_processes_from_zero() -> None:
    before = {"server": {1: 10.0}, "postgresql": {5: 1.0}}
    after = {"server": {1: 12.5}, "postgresql": {5: 1.5, 6: 0.25}}
    assert cpu_delta(before, after) == {"server": 2.5, "postgresql": 0.75}


def test_proc_readers_see_this_process() -> None:
    assert cpu_seconds(1 << 30) is None
    import os

    assert cpu_seconds(os.getpid()) >= 0
    assert peak_rss_kib(os.getpid()) > 0


def _results() -> dict:
    def runs(values: list[float], cpu: list[dict] | None = None, count: int = 0) -> dict:
        return {"values": values, "errors": [], "cpu": cpu or [], "count": count}

    scale = {
        "cstore-dcmtk-1": {
            "orthanc-sqlite": runs([200.0, 220.0], [{"orthanc": 0.5}, {"orthanc": 0.7}], 200),
            "dicomkeep-allinone": runs([100.0, 60.0], [{"dicomkeep": 2.0}, {"dicomkeep": 3.0}], 200),
        },
        "tools-find": {"orthanc-sqlite": runs([2.0]), "dicomkeep-allinone": runs([1.0])},
        "get-tags": {"orthanc-sqlite": runs([1.5]), "dicomkeep-allinone": runs([])},
    }
    return {
        "meta": {"started": "2026-12-03 14:00 UTC", "command": "python -m bench --quick",
                 "quick": True, "machine": "test, 2 CPUs", "load": "1.00", "data": "d",
                 "repeat": 2, "duration_s": 12.0},
        "pairs": [{"dicomkeep": "dicomkeep-allinone", "orthanc": "orthanc-sqlite",
                   "scales": {"1000": scale, "10000": scale},
                   "peak_rss_mib": {"orthanc-sqlite": {"orthanc": 80.0},
                                    "dicomkeep-allinone": {"dicomkeep": 250.0}},
                   "errors": ["dicomkeep-allinone get-tags: boom"]}],
    }


def test_cpu_per_thousand_is_the_median_per_instance() -> None:
    runs = _results()["pairs"][0]["scales"]["1000"]["cstore-dcmtk-1"]["dicomkeep-allinone"]
    assert report.cpu_per_thousand(runs) == {"dicomkeep": 12.5, "total": 12.5}


def test_markdown_shows_ratios_failures_growth_and_labels_quick(tmp_path: Path) -> None:
    text = report.markdown(_results())
    assert "**quick mode**" in text
    assert "| C-STORE, DCMTK storescu, 1 association (inst/s) | 210 ±10% | 80.0 ±50% | 0.38 | short |" in text
    assert "| POST /tools/find, p50 (ms) | 2.0 ±0% | 1.0 ±0% | 0.50 | ok |" in text
    assert "| failed | n/a | n/a |" in text
    assert "CPU s per 1,000 instances stored" in text and "| 3.0 | 12.5 | 4.17 | short |" in text
    assert "Growth from 1000 to 10000" in text
    assert "- dicomkeep-allinone get-tags: boom" in text
    json_path, md_path = report.write(_results(), tmp_path)
    assert json_path.name.startswith("quick-") and md_path.read_text() == text + "\n"
    assert (tmp_path / "latest.md").read_text() == text + "\n"


@pytest.mark.timeout(60)
def test_quick_dry_run_generates_the_data_and_plans(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--dry-run", "--out", str(tmp_path),
         "--scale", "50", "--batch", "5", "--size", "64"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "plan: allinone vs sqlite; scales [50]; 15 scenarios x 1 run(s)" in done.stderr
    assert list(tmp_path.iterdir()) == []  # a dry run writes no results


def test_unknown_mode_and_scenario_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.cli import parse

    for argv, message in ((["--modes", "nope"], "unknown mode(s) ['nope']"),
                          (["--scenarios", "cstore-dcmtk-1,x"], "unknown scenario(s) ['x']")):
        with pytest.raises(SystemExit) as exit_info:
            parse(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    args = parse(["--quick"])
    assert (args.scale, args.repeat, args.pairs) == ([200], 1, [("allinone", "sqlite")])
    assert len(parse([]).pairs) == 3
