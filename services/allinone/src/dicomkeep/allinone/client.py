"""`dicomkeep upload` and `dicomkeep job wait`: REST clients of a running server.

`upload` does what Orthanc users do with ImportDicomFiles.py: POST every file of
a folder to `/instances` of a DicomKeep (or an Orthanc) and count what the server
answered. `wait_job` polls `/jobs/{id}` until the job is over. Both draw a
progress bar (rich) on a terminal and print a one-line summary.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: Job states after which nothing changes any more (Orthanc's JobState).
FINAL_STATES = {"Success", "Failure"}


@dataclass
class UploadSummary:
    """What the server answered for each file of an upload."""

    stored: int = 0
    already_stored: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.stored + self.already_stored + len(self.failed)

    def line(self) -> str:
        """One line for the terminal (and for scripts that read it)."""
        return (
            f"{self.total} files: {self.stored} stored, {self.already_stored} already "
            f"stored, {len(self.failed)} failed"
        )


def http_client(url: str, username: str | None, password: str | None) -> httpx.Client:
    """Return a client of `url` with HTTP basic credentials when a user is given."""
    auth = httpx.BasicAuth(username, password or "") if username else None
    return httpx.Client(base_url=url.rstrip("/"), auth=auth, timeout=60.0)


def files_of(paths: Iterable[Path]) -> list[Path]:
    """Every regular file of the given files and folders (folders recursively), sorted."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return found


def _bar(console: Console, *columns: Any) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), *columns, TimeElapsedColumn(),
        console=console, transient=False,
    )


def upload(client: httpx.Client, files: list[Path], console: Console) -> UploadSummary:
    """POST each file to `/instances`; count Success, AlreadyStored and failures.

    A failure is any answer other than 200 with a JSON `Status` (not DICOM,
    refused, bad credentials) or a transport error; the upload goes on with the
    next file. Mirrors ImportDicomFiles.py, which sends the files one by one.
    """
    summary = UploadSummary()
    with _bar(console, MofNCompleteColumn(), TimeRemainingColumn()) as progress:
        task = progress.add_task("upload", total=len(files))
        for path in files:
            _upload_one(client, path, summary)
            progress.advance(task)
    return summary


def _upload_one(client: httpx.Client, path: Path, summary: UploadSummary) -> None:
    try:
        answer = client.post(
            "/instances", content=path.read_bytes(),
            headers={"Content-Type": "application/dicom"},
        )
    except (OSError, httpx.HTTPError) as error:
        summary.failed.append((path, str(error) or type(error).__name__))
        return
    status = _json(answer).get("Status") if answer.status_code == 200 else None
    if status == "Success":
        summary.stored += 1
    elif status == "AlreadyStored":
        summary.already_stored += 1
    else:
        summary.failed.append((path, _reason(answer)))


def _json(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _reason(answer: httpx.Response) -> str:
    body = _json(answer)
    detail = body.get("Details") or body.get("Message") or body.get("Status") or ""
    return f"HTTP {answer.status_code}" + (f": {detail}" if detail else "")


class JobError(Exception):
    """The job is unknown, failed, or did not finish in time."""


def wait_job(
    client: httpx.Client, job_id: str, console: Console, *, timeout: float, interval: float = 0.5
) -> dict[str, Any]:
    """Poll `/jobs/{job_id}` until Success; return the job's last JSON.

    Draws its `Progress` (0-100). Raises JobError for an unknown job (404), a
    Failure (with its `ErrorDescription`), or a job still running at `timeout`.
    """
    deadline = time.monotonic() + timeout
    polls = _poll(client, job_id, deadline, interval)
    first = next(polls)  # an unknown job fails before any bar is drawn
    job = first
    with _bar(console, TaskProgressColumn()) as progress:
        task = progress.add_task(f"job {job_id}", total=100)
        for job in itertools.chain([first], polls):
            progress.update(task, completed=job.get("Progress", 0),
                            description=f"job {job_id} {job.get('State', '')}")
            if job.get("State") == "Success":
                return job
            if job.get("State") == "Failure":
                reason = ": ".join(
                    str(job[key]) for key in ("ErrorDescription", "ErrorDetails") if job.get(key)
                )
                raise JobError(f"job {job_id} failed: {reason or 'no details'}")
    raise JobError(f"job {job_id} still {job.get('State')} after {timeout:.0f} s")


def _poll(
    client: httpx.Client, job_id: str, deadline: float, interval: float
) -> Iterator[dict[str, Any]]:
    while True:
        answer = client.get(f"/jobs/{job_id}")
        if answer.status_code == 404:
            raise JobError(f"unknown job {job_id}")
        if answer.status_code != 200:
            raise JobError(f"GET /jobs/{job_id}: {_reason(answer)}")
        yield _json(answer)
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)
