"""Shared fixtures: one Ray session for every test that needs it, and the real-data path."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("SMOLCURATE_REALDATA", REPO.parent / "shared" / "realdata"))


@pytest.fixture(scope="session")
def ray_session():
    """Start one small, quiet local Ray for the whole test session and shut it down at the end."""
    import ray

    from curation.engine.ray_session import init_ray

    init_ray(address=None, num_cpus=2, quiet=True)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip(f"real corpus not found at {REALDATA}")
    return REALDATA
