"""The Arrow pool: jemalloc by default, the user's ARROW_DEFAULT_MEMORY_POOL when set (each in a fresh process,
since Arrow reads the variable once)."""
from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa
import pytest

PROBE = ("import pyarrow as pa; from manifests.memory import use_jemalloc; b = use_jemalloc(); "
         "pa.array(range(1000)); print(b, pa.default_memory_pool().backend_name)")


def _probe(env_pool: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if env_pool:
        env["ARROW_DEFAULT_MEMORY_POOL"] = env_pool
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True).stdout.split()


def _has_jemalloc() -> bool:
    try:
        pa.jemalloc_memory_pool()
    except NotImplementedError:
        return False
    return True


@pytest.mark.skipif(not _has_jemalloc(), reason="this pyarrow has no jemalloc")
def test_jemalloc_is_the_default_pool():
    assert _probe(None) == ["jemalloc", "jemalloc"]


def test_the_users_pool_wins():
    assert _probe("system") == ["system", "system"]


def test_a_job_allocates_from_jemalloc(tmp_path):
    """The CLI entry point sets it before the command runs (here `validate` of a missing folder: exit 2)."""
    code = ("import pyarrow as pa, sys; from manifests.cli import main; rc = main(['validate', sys.argv[1]]); "
            "print(rc, pa.default_memory_pool().backend_name)")
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "nothing")], env=env, capture_output=True,
                         text=True).stdout.split()
    assert out[0] == "2"
    assert out[1] == ("jemalloc" if _has_jemalloc() else pa.default_memory_pool().backend_name)
