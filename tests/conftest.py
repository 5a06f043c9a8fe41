"""Test-wide setup. Engines come from tests/engines.py; directories decide the markers."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.engines"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.path)
        if "/tests/integration/" in path:
            item.add_marker(pytest.mark.integration)
        elif "/tests/chaos/" in path:
            item.add_marker(pytest.mark.chaos)
