"""Turn recorded runs into medians, spread and DicomKeep / Orthanc ratios (JSON + Markdown).

The results document (what `bench.cli` records and writes as JSON):
    {"meta": {...},
     "pairs": [{"dicomkeep": NAME, "orthanc": NAME,
                "scales": {"1000": {SCENARIO: {TARGET: {"values": [...], "errors": [...],
                                                         "cpu": [{ROLE: seconds}, ...],
                                                         "count": N}}}},
                "peak_rss_mib": {TARGET: {ROLE: MiB}}}]}
"""

from __future__ import annotations

import json
import statistics
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.measure import summary
from bench.scenarios import BY_NAME, CPU_SCENARIO

Runs = dict[str, Any]


def figure(runs: Runs | None) -> dict[str, float] | None:
    """Median/min/max/spread of one target's runs of one scenario (None if none succeeded)."""
    if not runs or not runs.get("values"):
        return None
    return summary(runs["values"])


def ratio(dicomkeep: float, orthanc: float) -> float:
    """DicomKeep / Orthanc; 0 when Orthanc's figure is 0 (a failed or empty measurement)."""
    return dicomkeep / orthanc if orthanc else 0.0


def verdict(scenario: str, value: float) -> str:
    """Whether a ratio meets the goal: >= 1 for throughput, <= 1 for latency."""
    good = value >= 1.0 if BY_NAME[scenario].higher_is_better else value <= 1.0
    return "ok" if good else "short"


def cpu_per_thousand(runs: Runs | None) -> dict[str, float] | None:
    """Median CPU seconds per 1,000 stored instances, by role and in total."""
    if not runs or not runs.get("cpu") or not runs.get("count"):
        return None
    roles = runs["cpu"][0].keys()
    per_role = {role: statistics.median(run[role] for run in runs["cpu"]) * 1000 / runs["count"]
                for role in roles}
    per_role["total"] = sum(per_role.values())
    return per_role


def _fmt(value: float, unit: str) -> str:
    return f"{value:.1f}" if unit == "ms" or value < 100 else f"{value:.0f}"


def _cell(stats: dict[str, float] | None, unit: str) -> str:
    if stats is None:
        return "failed"
    return f"{_fmt(stats['median'], unit)} ±{stats['spread'] * 100:.0f}%"


def pair_table(pair: dict[str, Any], scale: str) -> list[str]:
    dk, orth = pair["dicomkeep"], pair["orthanc"]
    lines = [f"| scenario | {orth} | {dk} | ratio DK/O | goal |", "|---|---|---|---|---|"]
    for name, by_target in pair["scales"][scale].items():
        scenario = BY_NAME[name]
        mine, theirs = figure(by_target.get(dk)), figure(by_target.get(orth))
        cells = [f"{scenario.label} ({scenario.unit})", _cell(theirs, scenario.unit),
                 _cell(mine, scenario.unit)]
        if mine and theirs:
            value = ratio(mine["median"], theirs["median"])
            cells += [f"{value:.2f}", verdict(name, value)]
        else:
            cells += ["n/a", "n/a"]
        lines.append("| " + " | ".join(cells) + " |")
    cpu = pair["scales"][scale].get(CPU_SCENARIO, {})
    mine, theirs = cpu_per_thousand(cpu.get(dk)), cpu_per_thousand(cpu.get(orth))
    if mine and theirs:
        value = ratio(mine["total"], theirs["total"])
        lines.append(f"| CPU s per 1,000 instances stored (DCMTK, 1 association; all processes) | "
                     f"{theirs['total']:.1f} | {mine['total']:.1f} | {value:.2f} | "
                     f"{'ok' if value <= 1 else 'short'} |")
    return lines


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    out = [f"# DicomKeep vs Orthanc benchmark, {meta['started']}", "",
           f"- Command: `{meta['command']}`" + (" (**quick mode**: a first look, not "
                                                "the full benchmark)" if meta.get("quick") else ""),
           f"- Machine: {meta['machine']}; load average at start {meta['load']}",
           f"- Data: {meta['data']}; {meta['repeat']} run(s) per target and scenario, "
           "targets alternated run by run; figure = median ±spread ((max-min)/median)",
           f"- Duration: {meta.get('duration_s', 0):.0f} s", ""]
    for pair in results["pairs"]:
        scales = list(pair["scales"])
        for scale in scales:
            out += [f"## {pair['dicomkeep']} vs {pair['orthanc']}, {scale} instances stored", ""]
            out += pair_table(pair, scale) + [""]
        if len(scales) > 1:
            out += growth_table(pair, scales) + [""]
        cpu_lines = cpu_breakdown(pair, scales[0])
        if cpu_lines:
            out += cpu_lines + [""]
        if pair.get("errors"):
            out += ["Failures:", *[f"- {error}" for error in pair["errors"]], ""]
    return "\n".join(out)


def cpu_breakdown(pair: dict[str, Any], scale: str) -> list[str]:
    cpu = pair["scales"][scale].get(CPU_SCENARIO, {})
    rss = pair.get("peak_rss_mib", {})
    lines = ["| target | CPU s / 1,000 stored, by process | peak RSS MiB, by process |",
             "|---|---|---|"]
    for target in (pair["orthanc"], pair["dicomkeep"]):
        per_role = cpu_per_thousand(cpu.get(target)) or {}
        cpu_text = ", ".join(f"{role} {value:.1f}" for role, value in per_role.items())
        rss_text = ", ".join(f"{role} {value:.0f}" for role, value in rss.get(target, {}).items())
        lines.append(f"| {target} | {cpu_text or 'n/a'} | {rss_text or 'n/a'} |")
    return lines


def growth_table(pair: dict[str, Any], scales: list[str]) -> list[str]:
    first, last = scales[0], scales[-1]
    lines = [f"Growth from {first} to {last} stored instances (change of the median):", "",
             "| scenario | DicomKeep | Orthanc |", "|---|---|---|"]
    for name in pair["scales"][last]:
        cells = []
        for target in (pair["dicomkeep"], pair["orthanc"]):
            a = figure(pair["scales"][first].get(name, {}).get(target))
            b = figure(pair["scales"][last].get(name, {}).get(target))
            cells.append(f"{(b['median'] / a['median'] - 1) * 100:+.0f}%" if a and b and a["median"]
                         else "n/a")
        lines.append(f"| {BY_NAME[name].label} | {cells[0]} | {cells[1]} |")
    return lines


def write(results: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    """Write RESULTS-<timestamp>.json/.md and latest.md into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    prefix = "quick-" if results["meta"].get("quick") else ""
    json_path = folder / f"{prefix}{stamp}.json"
    md_path = folder / f"{prefix}{stamp}.md"
    json_path.write_text(json.dumps(results, indent=1))
    text = markdown(results)
    md_path.write_text(text + "\n")
    (folder / "latest.md").write_text(text + "\n")
    return json_path, md_path
