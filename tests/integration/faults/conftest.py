"""The fault-injection suite: every test here is `integration` and `faults`.

`--fault-instances N` sets how many instances stream through each fault (20 by
default: the short suite that `make test` runs; `make test-faults` runs 1000).
Each fault's figures (instances, acknowledged, failures reported to the senders,
lost) are printed and appended to `.pytest_cache/d/faults/report.txt`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fault_streams import Report

#: Seconds one fault test may take (pytest-timeout), setup included.
FAULT_TEST_TIMEOUT = 3600


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent.name == "faults":
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.faults)
            # Beyond the suite's 300 s: 1,000 instances through a fault, and the
            # restarts, take minutes on a loaded 2-core machine.
            item.add_marker(pytest.mark.timeout(FAULT_TEST_TIMEOUT))


@pytest.fixture(scope="session")
def fault_instances(request: pytest.FixtureRequest) -> int:
    return int(request.config.getoption("--fault-instances"))


@pytest.fixture(scope="session")
def fault_report(request: pytest.FixtureRequest) -> Report:
    """`report(fault, instances, acknowledged, failures_reported)`: one line per fault."""
    path = request.config.cache.mkdir("faults") / "report.txt"

    def report(fault: str, instances: int, acked: int, failures: int) -> None:
        line = (f"fault={fault} instances={instances} acknowledged={acked} "
                f"failures_reported={failures} lost=0\n")
        with open(path, "a", encoding="utf-8") as out:
            out.write(line)
        print(line, end="")  # noqa: T201 - shown with -s

    return report
