"""Runs scenarios on request: one JSON line in (scenario, target, params), one out.

Started once per network namespace by `bench.cli` (`ip netns exec NS python -m
bench.worker` for Orthanc), so the client runs next to the server it measures.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from typing import Any

import httpx

from bench.scenarios import BY_NAME


def wait(url: str, timeout: float) -> bool:
    """Poll GET {url}/system until it answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/system", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer in {timeout:.0f} s")


def instance_ids(url: str, uids: list[str]) -> list[str]:
    """The server's IDs of the instances of these SOPInstanceUIDs (/tools/lookup)."""
    ids = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for uid in uids:
            found = client.post("/tools/lookup", content=uid).json()
            ids += [item["ID"] for item in found if item["Type"] == "Instance"]
    if len(ids) != len(uids):
        raise RuntimeError(f"{len(uids) - len(ids)} of {len(uids)} probe instances not found")
    return ids


def delete_study(url: str, study_uid: str) -> int:
    """Delete the study of that StudyInstanceUID; return how many were found."""
    with httpx.Client(base_url=url, timeout=300) as client:
        found = client.post("/tools/lookup", content=study_uid).json()
        for item in found:
            if item["Type"] == "Study":
                client.delete(f"/studies/{item['ID']}").raise_for_status()
        return len(found)


def handle(request: dict[str, Any]) -> Any:
    op = request.get("op", "scenario")
    if op == "wait":
        return wait(request["url"], request["timeout"])
    if op == "ids":
        return instance_ids(request["url"], request["uids"])
    if op == "delete_study":
        return delete_study(request["url"], request["study_uid"])
    return BY_NAME[request["scenario"]].run(request["target"], request["params"])


def main() -> int:
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer = {"value": handle(request)}
        except Exception as error:  # reported to the caller, which records the failure
            answer = {"error": f"{type(error).__name__}: {error}",
                      "trace": traceback.format_exc()[-2000:]}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
