"""CPU seconds and peak memory of a set of processes, read from /proc; sample statistics."""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime + cutime + cstime of a process (children it waited for count too)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return sum(int(value) for value in fields[11:15]) / TICKS


def peak_rss_kib(pid: int) -> int:
    """The process's high-water resident set (VmHWM), 0 when it is gone."""
    return _status_field(pid, "VmHWM") or 0


def _status_field(pid: int, name: str) -> int | None:
    """The first number of a `/proc/PID/status` field, None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def pids_named(name: str) -> list[int]:
    """Every process whose command name (comm) is `name`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def pids_matching(fragment: str) -> list[int]:
    """Every process whose command line contains `fragment`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if fragment in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def parent_pid(pid: int) -> int | None:
    """The PPid of a process, None when it is gone."""
    return _status_field(pid, "PPid")


def with_descendants(roots: Iterable[int]) -> list[int]:
    """The processes `roots` and every live descendant of theirs (a server's worker
    processes use CPU and memory that their parent's /proc entry does not show until
    they end)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = parent_pid(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    pending = list(roots)
    while pending:
        pid = pending.pop()
        if pid not in found:
            found.append(pid)
            pending.extend(children.get(pid, []))
    return found


@dataclass
class ProcessGroup:
    """Processes of one target, by role ("server", "postgresql", ...); `pids` is
    re-evaluated at each sample (connections come and go)."""

    roles: dict[str, Callable[[], Iterable[int]]] = field(default_factory=dict)

    def sample(self) -> dict[str, dict[int, float]]:
        result: dict[str, dict[int, float]] = {}
        for role, pids in self.roles.items():
            seconds = {pid: cpu_seconds(pid) for pid in pids()}
            result[role] = {pid: value for pid, value in seconds.items() if value is not None}
        return result

    def peak_rss_mib(self) -> dict[str, float]:
        return {
            role: sum(peak_rss_kib(pid) for pid in pids()) / 1024
            for role, pids in self.roles.items()
        }


def cpu_delta(before: dict[str, dict[int, float]],
              after: dict[str, dict[int, float]]) -> dict[str, float]:
    """CPU seconds used between two samples, by role; a process born in between
    counts from zero, one that ended in between is lost (its parent's cutime keeps
    it when the parent is counted)."""
    return {
        role: sum(value - before.get(role, {}).get(pid, 0.0) for pid, value in now.items())
        for role, now in after.items()
    }


def percentile(samples: list[float], fraction: float) -> float:
    """Linear-interpolated percentile (fraction in 0..1) of a non-empty list."""
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(values: list[float]) -> dict[str, float]:
    """Median, min, max and relative spread ((max - min) / median) of run values."""
    median = statistics.median(values)
    return {
        "median": median, "min": min(values), "max": max(values),
        "spread": (max(values) - min(values)) / median if median else 0.0,
        "runs": len(values),
    }
