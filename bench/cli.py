"""`python -m bench`: run every scenario against DicomKeep and Orthanc, pair by pair.

For each (DicomKeep mode, Orthanc mode) pair both servers start, get the same
preloaded store, then each scenario runs `--repeat` times on each, the two targets
alternating run by run (and swapping who goes first). CPU of every process of the
target is read before and after each run. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report, targets
from bench.measure import cpu_delta
from bench.scenarios import BY_NAME, SCENARIOS

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from synthetic import iter_dataset, write_files  # noqa: E402

STUDY_SIZE = 50  # instances per preloaded study (one series)
PROBES = 200  # instances the read scenarios use (full-size, from the first scale)


class Worker:
    """A `bench.worker` process, in a namespace or on the host."""

    def __init__(self, netns: str | None) -> None:
        prefix = ["ip", "netns", "exec", netns] if netns else []
        self.process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "bench.worker"], cwd=ROOT, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )

    def call(self, **request: Any) -> Any:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer["value"]

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(30)


class Progress:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, text: str) -> None:
        elapsed = int(time.monotonic() - self.started)
        sys.stderr.write(f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {text}\n")
        sys.stderr.flush()


def make_data(folder: Path, scales: list[int], batch: int, size: int,
              fill_size: int) -> dict[str, Any]:
    """Preload studies up to the largest scale, one batch study, and the probes.

    The instances of the first scale are `size` x `size`; those the larger scales add
    are `fill_size` x `fill_size` (another seed: other patients and UIDs): the index
    counts them, nothing reads them back. The move study, the instances read back
    and the ingest batch all come from the first scale's full-size set."""
    from pydicom import dcmread

    first = max(1, min(scales) // STUDY_SIZE)
    total = max(first, max(scales) // STUDY_SIZE)
    shape = {"series": 1, "instances_per_series": STUDY_SIZE, "modality": "MR",
             "rows": size, "columns": size}
    preload = [str(p) for p in write_files(iter_dataset(first, seed=13, **shape),
                                           folder / "store")]
    if total > first:
        fill = {**shape, "rows": fill_size, "columns": fill_size}
        preload += [str(p) for p in write_files(iter_dataset(total - first, seed=15, **fill),
                                                folder / "fill")]
    batch_files = [str(p) for p in write_files(
        iter_dataset(1, seed=14, **{**shape, "instances_per_series": batch}), folder / "batch")]
    head = dcmread(preload[0], stop_before_pixels=True)
    last = dcmread(batch_files[0], stop_before_pixels=True)
    name = str(head.PatientName)
    full = preload[:first * STUDY_SIZE]
    step = max(1, len(full) // PROBES)
    return {
        "preload": preload, "batch": batch_files, "batch_study": str(last.StudyInstanceUID),
        "patient_id": str(head.PatientID), "patient_name_wildcard": name[:3] + "*",
        "move_study": str(head.StudyInstanceUID), "move_count": STUDY_SIZE,
        # write_files names each file after its SOPInstanceUID.
        "probe_uids": [Path(path).stem for path in full[::step][:PROBES]],
    }


def scales_of(mode: str, args: argparse.Namespace) -> list[tuple[int, int]]:
    """(stored instances, runs per target) for each scale one DicomKeep mode measures:
    the first scale with --repeat, the larger ones with --repeat-large, and those only
    in --large-modes."""
    first, *larger = sorted(args.scale)
    if mode not in args.large_modes:
        larger = []
    return [(first, args.repeat)] + [(scale, args.repeat_large) for scale in larger]


def _both(both: list[targets.Target], call: Callable[[targets.Target], Any]) -> list[Any]:
    """Run `call` for the two targets at once (each has its own worker process)."""
    with ThreadPoolExecutor(len(both)) as pool:
        return list(pool.map(call, both))


def run_pair(pair: tuple[str, str], data: dict[str, Any], args: argparse.Namespace,
             tmp: Path, progress: Progress) -> dict[str, Any]:
    dk_mode, o_mode = pair
    record: dict[str, Any] = {"scales": {}, "errors": [], "peak_rss_mib": {}, "seconds": {}}
    seconds = record["seconds"]
    with ExitStack() as stack:
        phase = time.monotonic()
        progress(f"starting dicomkeep-{dk_mode} and orthanc-{o_mode}")
        both = [stack.enter_context(targets.dicomkeep(dk_mode, tmp)),
                stack.enter_context(targets.orthanc(o_mode, tmp))]
        record["dicomkeep"], record["orthanc"] = both[0].name, both[1].name
        workers = {}
        for target in both:
            worker = Worker(target.netns)
            stack.callback(worker.close)
            worker.call(op="wait", url=target.endpoint["url"], timeout=targets.START_TIMEOUT)
            workers[target.name] = worker
        seconds["start"] = time.monotonic() - phase

        def fail(runs_of_target: dict[str, Any], text: str) -> None:
            runs_of_target["errors"].append(text)
            record["errors"].append(text)
            progress(f"FAILED {text}")

        stored = 0
        for scale, repeat_count in scales_of(dk_mode, args):
            phase = time.monotonic()
            progress(f"preloading {scale - stored} instances into both")
            chunk = data["preload"][stored:scale]
            _both(both, lambda target, chunk=chunk: workers[target.name].call(
                scenario="cstore-dcmtk-4", target=target.endpoint, params={"batch": chunk}))
            stored = scale
            ids = dict(zip([t.name for t in both], _both(both, lambda target: workers[
                target.name].call(op="ids", url=target.endpoint["url"],
                                  uids=data["probe_uids"])), strict=True))
            seconds[f"preload to {scale}"] = time.monotonic() - phase
            # Not the preload's paths (10,000 of them): the scenarios need the rest.
            params = {**{k: v for k, v in data.items() if k != "preload"},
                      "requests": args.requests}

            record["scales"][str(scale)] = runs = {}
            for name in args.scenarios:
                phase = time.monotonic()
                scenario = BY_NAME[name]
                runs[name] = {t.name: {"values": [], "errors": [], "cpu": [],
                                       "count": len(data["batch"]) if scenario.ingest else 0}
                              for t in both}
                for repeat in range(repeat_count):
                    order = both if repeat % 2 == 0 else both[::-1]
                    for target in order:
                        worker = workers[target.name]
                        before = target.processes.sample()
                        value = None
                        try:
                            value = worker.call(scenario=name, target=target.endpoint,
                                                params={**params, "instance_ids": ids[target.name]})
                        except RuntimeError as error:
                            fail(runs[name][target.name], f"{target.name} {name}: {error}")
                        if scenario.ingest:
                            spent = cpu_delta(before, target.processes.sample())
                            try:
                                worker.call(op="delete_study", url=target.endpoint["url"],
                                            study_uid=data["batch_study"])
                            except RuntimeError as error:
                                fail(runs[name][target.name], f"{target.name} delete: {error}")
                        if value is None:
                            continue
                        runs[name][target.name]["values"].append(value)
                        if scenario.ingest:
                            runs[name][target.name]["cpu"].append(spent)
                        progress(f"{scale} {name} {repeat + 1}/{repeat_count} {target.name}: "
                                 f"{value:.1f} {scenario.unit}")
                seconds[f"{scale} {name}"] = time.monotonic() - phase
        for target in both:
            record["peak_rss_mib"][target.name] = target.processes.peak_rss_mib()
        progress(f"stopping dicomkeep-{dk_mode} and orthanc-{o_mode}")
        phase = time.monotonic()
    seconds["stop"] = time.monotonic() - phase
    return record


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small store, 1 run, all-in-one vs SQLite only (under 3 minutes)")
    parser.add_argument("--scale", type=lambda s: [int(x) for x in s.split(",")], default=None,
                        help="stored instances, comma-separated for growth "
                             "(default 1000,10000; quick 200)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="runs per target at the first scale (default 3)")
    parser.add_argument("--repeat-large", type=int, default=None,
                        help="runs per target at the larger scales (default 2)")
    parser.add_argument("--large-modes", default=None,
                        help="modes also measured at the larger scales "
                             "(default allinone)")
    parser.add_argument("--batch", type=int, default=None, help="instances per ingest run")
    parser.add_argument("--requests", type=int, default=None, help="requests per latency run")
    parser.add_argument("--size", type=int, default=256,
                        help="rows = columns of the first scale and the batch (256: 128 KiB)")
    parser.add_argument("--fill-size", type=int, default=64,
                        help="rows = columns of the instances the larger scales add "
                             "(64: 8 KiB; only the index counts them)")
    parser.add_argument("--modes", default=None,
                        help="DicomKeep modes: allinone,compression,distributed (default all)")
    parser.add_argument("--scenarios", default=None, help="comma-separated scenario names")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--dry-run", action="store_true",
                        help="generate the data set and print the plan; start nothing")
    args = parser.parse_args(argv)
    quick = args.quick
    args.scale = args.scale or ([200] if quick else [1000, 10000])
    args.repeat = args.repeat or (1 if quick else 3)
    args.repeat_large = args.repeat_large or (1 if quick else 2)
    args.batch = args.batch or (50 if quick else 200)
    args.requests = args.requests or (30 if quick else 100)
    modes = (args.modes or ("allinone" if quick else "allinone,compression,distributed")).split(",")
    pairs = dict(targets.PAIRS)
    unknown = [m for m in modes if m not in pairs]
    if unknown:
        parser.error(f"unknown mode(s) {unknown}; choose from {list(pairs)}")
    args.pairs = [(m, pairs[m]) for m in modes]
    args.large_modes = (args.large_modes or "allinone").split(",")
    unknown = [m for m in args.large_modes if m not in pairs]
    if unknown:
        parser.error(f"unknown mode(s) {unknown}; choose from {list(pairs)}")
    args.scenarios = args.scenarios.split(",") if args.scenarios else [s.name for s in SCENARIOS]
    unknown = [s for s in args.scenarios if s not in BY_NAME]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {list(BY_NAME)}")
    return args


def describe(args: argparse.Namespace) -> str:
    first, *larger = sorted(args.scale)
    text = (f"MR {args.size}x{args.size} 16-bit, studies of {STUDY_SIZE}; stored "
            f"{'/'.join(map(str, sorted(args.scale)))}")
    if larger:
        text += (f" (the first {first} at {args.size}x{args.size}, the rest at "
                 f"{args.fill_size}x{args.fill_size}: counted by the index, never read back; "
                 f"larger scales in {', '.join(args.large_modes)} only, "
                 f"{args.repeat_large} run(s) per target)")
    return (f"{text}; ingest batch {args.batch} and files read back at "
            f"{args.size}x{args.size}; {args.requests} requests per latency run")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    progress = Progress()
    meta = {
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m bench " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "quick": args.quick,
        "machine": f"{platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "data": describe(args),
        "repeat": args.repeat,
        "repeat_large": args.repeat_large,
        "scales": sorted(args.scale),
    }
    if not args.dry_run:
        targets.ensure_installed()
    with tempfile.TemporaryDirectory(prefix="dkbench") as folder:
        tmp = Path(folder)
        progress(f"generating {max(args.scale)} + {args.batch} instances")
        data = make_data(tmp / "data", args.scale, args.batch, args.size, args.fill_size)
        plan = [f"{dk} vs {o} at " + ", ".join(f"{scale} ({runs} run(s))"
                                                for scale, runs in scales_of(dk, args))
                for dk, o in args.pairs]
        progress(f"plan: {'; '.join(plan)}; {len(args.scenarios)} scenarios x 2 targets")
        if args.dry_run:
            return 0
        pairs = []
        for pair in args.pairs:
            pairs.append(run_pair(pair, data, args, tmp, progress))
    meta["duration_s"] = time.monotonic() - progress.started
    results = {"meta": meta, "pairs": pairs}
    json_path, md_path = report.write(results, args.out)
    sys.stdout.write(report.markdown(results) + "\n")
    progress(f"results: {json_path} and {md_path}")
    return 1 if any(pair["errors"] for pair in pairs) else 0
