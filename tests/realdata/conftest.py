"""Tests in this folder need ../shared/realdata; they are skipped where it is absent."""
from __future__ import annotations

import pytest

from tests.conftest import REALDATA


def pytest_collection_modifyitems(config, items):
    if REALDATA.is_dir():
        return
    skip = pytest.mark.skip(reason=f"real corpus not found at {REALDATA}")
    for item in items:
        if "tests/realdata" in str(item.fspath):
            item.add_marker(skip)
