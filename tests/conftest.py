"""Suite-wide test policy: a missing backend server fails its tests, unless asked to skip.

Tests marked `integration` need PostgreSQL, RabbitMQ and Redis (in tests/integration,
only the `distributed` cases do). When a server is unreachable they fail on their own;
DICOMKEEP_TEST_SKIP_BACKENDS=1 turns that into an explicit skip, named in the report.
"""

from __future__ import annotations

import os

import pytest
from backends import SKIP_BACKENDS_VARIABLE, unreachable_backends

#: Instances per fault in the short fault-injection suite (part of make test).
FAULT_INSTANCES_SHORT = 20


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fault-instances", type=int, default=FAULT_INSTANCES_SHORT,
        help="instances streamed through each fault of tests/integration/faults "
        f"(default {FAULT_INSTANCES_SHORT}: the short suite of make test; "
        "make test-faults runs 1000)",
    )


def _needs_backends(item: pytest.Item) -> bool:
    if item.get_closest_marker("integration") is None:
        return False
    callspec = getattr(item, "callspec", None)
    if "integration" in item.path.parent.parts and callspec is not None:
        return "distributed" in callspec.params.values()
    return True


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get(SKIP_BACKENDS_VARIABLE) != "1":
        return
    needing = [item for item in items if _needs_backends(item)]
    missing = unreachable_backends() if needing else []
    if missing:
        reason = "; ".join(missing) + f" ({SKIP_BACKENDS_VARIABLE}=1)"
        for item in needing:
            item.add_marker(pytest.mark.skip(reason=reason))
