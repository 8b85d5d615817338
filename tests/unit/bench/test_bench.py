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

    def scale(factor: float, orthanc: float) -> dict:
        return {
        "cstore-dcmtk-1": {
            "orthanc-sqlite": runs([200.0 * orthanc, 220.0 * orthanc],
                                   [{"orthanc": 0.5}, {"orthanc": 0.7}], 200),
            "dicomkeep-allinone": runs([100.0 / factor, 60.0 / factor],
                                       [{"dicomkeep": 2.0 * factor}, {"dicomkeep": 3.0 * factor}],
                                       200),
        },
        "tools-find": {"orthanc-sqlite": runs([2.0]), "dicomkeep-allinone": runs([1.0])},
        "get-tags": {"orthanc-sqlite": runs([1.5]), "dicomkeep-allinone": runs([])},
        }
    return {
        "meta": {"started": "2026-12-03 14:00 UTC", "command": "python -m bench --quick",
                 "quick": True, "machine": "test, 2 CPUs", "load": "1.00", "data": "d",
                 "repeat": 2, "duration_s": 12.0},
        "pairs": [{"dicomkeep": "dicomkeep-allinone", "orthanc": "orthanc-sqlite",
                   "scales": {"1000": scale(1.0, 1.0), "10000": scale(2.0, 1.1)},
                   "seconds": {"start": 10.0, "preload to 1000": 5.0, "1000 cstore-dcmtk-1": 4.0,
                               "1000 tools-find": 3.0, "preload to 10000": 9.0,
                               "10000 cstore-dcmtk-1": 8.0, "stop": 3.0},
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
    short = "[short](../../docs/performance.md#ingest)"  # each short row links its section
    assert ("| C-STORE, DCMTK storescu, 1 association (inst/s) | 210 ±10% | 80.0 ±50% | 0.38 | "
            f"{short} |") in text
    assert "| POST /tools/find, p50 (ms) | 2.0 ±0% | 1.0 ±0% | 0.50 | ok |" in text
    assert "| failed | n/a | n/a |" in text
    assert "CPU s per 1,000 instances stored" in text and f"| 3.0 | 12.5 | 4.17 | {short} |" in text
    assert "1000 instances stored (2 run(s) per target)" in text
    # Growth: each figure at both scales on both sides, and its change.
    assert "Growth from 1000 to 10000" in text
    assert ("| C-STORE, DCMTK storescu, 1 association (inst/s) | 210 | 231 | +10% | 80.0 | 40.0 "
            "| -50% |") in text
    assert "| CPU s per 1,000 instances stored (all processes) | 3.0 | 3.0 | +0% | 12.5 | 25.0 | +100% |" in text
    assert "| GET /instances/{id}/tags?simplify, p50 (ms) | 1.5 | 1.5 | +0% | n/a | n/a | n/a |" in text
    assert ("| dicomkeep-allinone | dicomkeep 12.5, total 12.5 | dicomkeep 25.0, total 25.0 | "
            "dicomkeep 250 |") in text
    assert "Time spent (s): 42 in all: start 10, preload to 1000 5, scenarios at 1000 7, " in text
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
    assert "plan: allinone vs sqlite at 50 (1 run(s)); 15 scenarios x 2 targets" in done.stderr
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


def test_larger_scales_run_in_the_large_modes_with_their_own_repeat() -> None:
    from bench.cli import parse, scales_of

    args = parse([])
    assert args.scale == [1000, 10000] and args.large_modes == ["allinone"]
    assert scales_of("allinone", args) == [(1000, 3), (10000, 2)]
    assert scales_of("compression", args) == scales_of("distributed", args) == [(1000, 3)]
    args = parse(["--scale", "400,100,900", "--repeat", "2", "--repeat-large", "1",
                  "--large-modes", "compression"])
    assert scales_of("compression", args) == [(100, 2), (400, 1), (900, 1)]
    assert scales_of("distributed", args) == [(100, 2)]


@pytest.mark.timeout(120)
def test_data_set_fills_the_larger_scales_with_small_instances(tmp_path: Path) -> None:
    from pydicom import dcmread

    from bench.cli import make_data

    data = make_data(tmp_path, [100, 250], batch=5, size=32, fill_size=8)
    preload = data["preload"]
    assert len(preload) == 250 and len(data["batch"]) == 5
    rows = [dcmread(path, stop_before_pixels=True).Rows for path in preload]
    assert rows == [32] * 100 + [8] * 150  # the first scale full-size, the rest small
    assert dcmread(data["batch"][0], stop_before_pixels=True).Rows == 32
    sops = {str(dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in preload}
    assert len(sops) == 250  # the fill's seed gives other UIDs
    # Reads probe full-size instances of the first scale only.
    assert set(data["probe_uids"]) <= {Path(path).stem for path in preload[:100]}
    assert len(data["probe_uids"]) == 100
    assert data["move_study"] == str(dcmread(preload[0], stop_before_pixels=True).StudyInstanceUID)


def test_a_process_group_counts_its_descendants() -> None:
    import os

    from bench.measure import with_descendants

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        found = with_descendants([os.getpid()])
        assert found[0] == os.getpid() and child.pid in found
    finally:
        child.kill()
        child.wait()
