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


#: Where docs/performance.md explains a row still short, by scenario name prefix.
EXPLAINED = {"cstore-": "ingest", "post-instances-": "ingest", "cpu": "ingest",
             "cfind-": "reads", "tools-find": "reads", "get-": "reads", "put-": "reads",
             "cmove-": "c-move"}
#: From bench/results/*.md to docs/performance.md.
DOCS = "../../docs/performance.md"


def goal(scenario: str, met: bool) -> str:
    """`ok`, or `short` linked to the section of docs/performance.md that explains it."""
    if met:
        return "ok"
    for prefix, anchor in EXPLAINED.items():
        if scenario.startswith(prefix):
            return f"[short]({DOCS}#{anchor})"
    return "short"


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
            cells += [f"{value:.2f}", goal(name, verdict(name, value) == "ok")]
        else:
            cells += ["n/a", "n/a"]
        lines.append("| " + " | ".join(cells) + " |")
    cpu = pair["scales"][scale].get(CPU_SCENARIO, {})
    mine, theirs = cpu_per_thousand(cpu.get(dk)), cpu_per_thousand(cpu.get(orth))
    if mine and theirs:
        value = ratio(mine["total"], theirs["total"])
        lines.append(f"| CPU s per 1,000 instances stored (DCMTK, 1 association; all processes) | "
                     f"{theirs['total']:.1f} | {mine['total']:.1f} | {value:.2f} | "
                     f"{goal('cpu', value <= 1)} |")
    return lines


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    out = [f"# DicomKeep vs Orthanc benchmark, {meta['started']}", "",
           f"- Command: `{meta['command']}`" + (" (**quick mode**: a first look, not "
                                                "the full benchmark)" if meta.get("quick") else ""),
           f"- Machine: {meta['machine']}; load average at start {meta['load']}",
           f"- Data: {meta['data']}; {meta['repeat']} run(s) per target and scenario"
           + (f" ({meta['repeat_large']} at the larger scales)" if meta.get("repeat_large")
              and len(meta.get("scales", [])) > 1 else "")
           + ", targets alternated run by run; figure = median ±spread ((max-min)/median)",
           f"- Duration: {meta.get('duration_s', 0):.0f} s", ""]
    for pair in results["pairs"]:
        scales = list(pair["scales"])
        for scale in scales:
            runs = _runs(pair, scale)
            out += [f"## {pair['dicomkeep']} vs {pair['orthanc']}, {scale} instances stored"
                    + (f" ({runs} run(s) per target)" if runs else ""), ""]
            out += pair_table(pair, scale) + [""]
        if len(scales) > 1:
            out += growth_table(pair, scales) + [""]
        out += cpu_breakdown(pair, scales) + [""]
        if time_spent(pair):
            out += [time_spent(pair), ""]
        if pair.get("errors"):
            out += ["Failures:", *[f"- {error}" for error in pair["errors"]], ""]
    return "\n".join(out)


def _runs(pair: dict[str, Any], scale: str) -> int:
    """The most runs any scenario of that scale recorded on one target."""
    return max((len(by_target.get("values", [])) + len(by_target.get("errors", []))
                for scenario in pair["scales"][scale].values()
                for by_target in scenario.values()), default=0)


def cpu_breakdown(pair: dict[str, Any], scales: list[str]) -> list[str]:
    """CPU per 1,000 stored by process at each scale, and peak RSS by process."""
    rss = pair.get("peak_rss_mib", {})
    lines = ["| target | " + " | ".join(f"CPU s / 1,000 stored at {scale}, by process"
                                         for scale in scales)
             + " | peak RSS MiB, by process |", "|---" * (len(scales) + 2) + "|"]
    for target in (pair["orthanc"], pair["dicomkeep"]):
        row = [target]
        for scale in scales:
            cpu = pair["scales"][scale].get(CPU_SCENARIO, {})
            per_role = cpu_per_thousand(cpu.get(target)) or {}
            row.append(", ".join(f"{role} {value:.1f}" for role, value in per_role.items())
                       or "n/a")
        row.append(", ".join(f"{role} {value:.0f}" for role, value in
                             rss.get(target, {}).items()) or "n/a")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def growth_table(pair: dict[str, Any], scales: list[str]) -> list[str]:
    """Each figure at the first and the last scale, on both sides, and how it changed."""
    first, last = scales[0], scales[-1]
    dk, orth = pair["dicomkeep"], pair["orthanc"]
    lines = [f"Growth from {first} to {last} stored instances (medians; a throughput that "
             "falls or a latency that rises got worse):", "",
             f"| scenario | {orth} {first} | {orth} {last} | change | {dk} {first} | "
             f"{dk} {last} | change |", "|---|---|---|---|---|---|---|"]

    def cells(a: float | None, b: float | None, unit: str) -> list[str]:
        if a is None or b is None:
            return [_fmt(a, unit) if a is not None else "n/a",
                    _fmt(b, unit) if b is not None else "n/a", "n/a"]
        change = f"{(b / a - 1) * 100:+.0f}%" if a else "n/a"
        return [_fmt(a, unit), _fmt(b, unit), change]

    def median(scale: str, name: str, target: str) -> float | None:
        stats = figure(pair["scales"][scale].get(name, {}).get(target))
        return stats["median"] if stats else None

    for name in pair["scales"][last]:
        unit = BY_NAME[name].unit
        row = [f"{BY_NAME[name].label} ({unit})"]
        for target in (orth, dk):
            row += cells(median(first, name, target), median(last, name, target), unit)
        lines.append("| " + " | ".join(row) + " |")
    row = ["CPU s per 1,000 instances stored (all processes)"]
    for target in (orth, dk):
        a, b = (cpu_per_thousand(pair["scales"][scale].get(CPU_SCENARIO, {}).get(target))
                for scale in (first, last))
        row += cells(a["total"] if a else None, b["total"] if b else None, "ms")
    lines.append("| " + " | ".join(row) + " |")
    return lines


def time_spent(pair: dict[str, Any]) -> str:
    """Where the pair's wall-clock time went: start, each preload, the scenarios of each
    scale (the JSON has each scenario's), stop."""
    seconds = pair.get("seconds") or {}
    if not seconds:
        return ""
    phases: dict[str, float] = {}
    for phase, value in seconds.items():
        scale, _, name = phase.partition(" ")
        key = f"scenarios at {scale}" if scale.isdigit() and name in BY_NAME else phase
        phases[key] = phases.get(key, 0.0) + value
    parts = ", ".join(f"{phase} {value:.0f}" for phase, value in phases.items())
    return f"Time spent (s): {sum(phases.values()):.0f} in all: {parts}."


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
