"""The fault suite runs longer than the project's 60 s per-test limit: give it its own."""

from __future__ import annotations

import pytest

CI_TIMEOUT_S = 420
SOAK_TIMEOUT_S = 4 * 3600


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    timeout = SOAK_TIMEOUT_S if config.getoption("--soak") else CI_TIMEOUT_S
    for item in items:
        if "tests/faults/" in item.nodeid:
            item.add_marker(pytest.mark.timeout(timeout))
