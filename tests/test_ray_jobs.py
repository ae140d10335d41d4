"""`ray job submit` to an existing Ray cluster (docs/storage.md, "`ray job submit`"): a head started with
`ray start` on 127.0.0.1 with its dashboard (the job server), smolcurate shipped as the job's ``working_dir``,
and the manifest equal to the local engine's.

The head runs in processes of its own, with its own ``--temp-dir`` (where `ray start` records its address, so a
plain ``ray.init()`` elsewhere never finds it); this process never connects to it, so the shared ``ray_session``
of the other tests is untouched. It uses a token of its own (Ray's token authentication, ``RAY_AUTH_MODE=token``,
given to the head, to `ray job submit` and to the job's processes through their environment), whatever
``~/.ray/auth_token`` holds. It is stopped by ending the processes it started, by pid: `ray stop` would stop
every Ray of this user on the machine.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from curation import synth
from curation.engine.job import run_job
from curation.recipe import load_recipe
from manifests.reader import open_manifest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("curation", "media", "manifests", "tokenization")  # what a checkout ships (pyproject's packages)
STORE = 96 * 1024 * 1024  # the head's object store
JOB_TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli() -> str:
    """The `ray` script of this interpreter's environment (the head's workers then run this interpreter)."""
    script = Path(sys.executable).parent / "ray"
    if not script.is_file():
        pytest.fail(f"no `ray` script beside {sys.executable}")
    return str(script)


def _checkout(root: Path) -> Path:
    """A folder with smolcurate's packages (as a checkout has them) and a recipe over data outside it."""
    ck = root / "checkout"
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, ck / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    data = root / "data"
    (data / "imgs").mkdir(parents=True)
    for i in range(5):
        synth.photo_like(i + 1, (64, 48)).save(data / "imgs" / f"p{i:02d}.jpg")
    shutil.copy(data / "imgs" / "p01.jpg", data / "imgs" / "p05_copy.jpg")  # an exact duplicate
    (data / "imgs" / "noise.jpg").write_bytes(os.urandom(2000))  # no decoder reads it: ledgered
    (data / "notes.jsonl").write_text("".join(f'{{"text": "note {i % 3} with a few more words in it"}}\n'
                                              for i in range(6)))
    # absolute source paths: the recipe is read from the uploaded copy, the data stays where it is
    (ck / "recipe.yaml").write_text(f"""\
sources:
  - {{name: photos, kind: images, path: {data / 'imgs'}, chunk_size: 4}}
  - {{name: notes, kind: text, path: {data / 'notes.jsonl'}, chunk_size: 6}}
dedup: {{exact: true, partitions: 2}}  # two resolve tasks on the cluster, not the default 32
output: {{shard_rows: 4}}
""")
    return ck


def _stop(head: subprocess.Popen) -> None:
    """End the head and every process under it (gcs, raylet, dashboard, workers, the job's driver), by pid."""
    try:
        procs = [psutil.Process(head.pid)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        procs = []
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=5)  # nothing of the head is kept: no need to wait for a graceful stop
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    head.wait(timeout=30)


def _wait_for_job_server(url: str, head: subprocess.Popen, headers: dict[str, str], timeout_s: float = 120) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if head.poll() is not None:
            pytest.fail(f"`ray start --head` exited with {head.returncode}")
        try:
            with urllib.request.urlopen(urllib.request.Request(f"{url}/api/version", headers=headers), timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:  # not listening yet (an HTTP error too: the token is checked before the server is up)
            pass
        time.sleep(1)
    pytest.fail(f"the job server at {url} did not answer within {timeout_s:.0f} s")


def test_ray_job_submit_with_a_working_dir_curates_as_the_local_engine(tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    ck = _checkout(tmp_path)
    ray = _ray_cli()
    temp_dir = tempfile.mkdtemp(prefix="rj-", dir="/tmp")  # short: Ray's socket paths are limited to ~107 bytes
    dash = _free_port()
    token = secrets.token_hex(32)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # `python` in the job
    for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
        env.pop(key, None)
    headers = {"Authorization": f"Bearer {token}"}
    head = subprocess.Popen(
        [ray, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(_free_port()),
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--include-dashboard", "true",
         "--ray-client-server-port", str(_free_port()), "--dashboard-agent-listen-port", "0",
         "--num-cpus", "1", "--object-store-memory", str(STORE), "--temp-dir", temp_dir, "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    out = tmp_path / "out-job"
    address = f"http://127.0.0.1:{dash}"
    try:
        _wait_for_job_server(address, head, headers)
        # exactly the docs' example 1 (docs/storage.md, `ray job submit`), from the checkout
        cmd = [ray, "job", "submit", "--address", address, "--runtime-env-json", '{"working_dir": "."}',
               "--", "python", "-m", "manifests.cli", "curate", "recipe.yaml", "--out", str(out),
               "--ray-address", "auto"]
        submit = subprocess.run(cmd, cwd=ck, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
        client = JobSubmissionClient(address, headers=headers)
        jobs = client.list_jobs()
        assert len(jobs) == 1, submit.stdout[-3000:] + submit.stderr[-3000:]
        job = jobs[0]
        logs = client.get_job_logs(job.submission_id)
        assert job.status == JobStatus.SUCCEEDED, f"{job.status}: {job.message}\n{logs[-4000:]}"
        assert submit.returncode == 0, submit.stderr[-3000:]
        assert "ray engine, 1 worker(s)" in logs  # the head's one CPU: the cluster's Ray, not an embedded one
        assert "working_dir" in json.dumps(job.runtime_env)
    finally:
        _stop(head)
        shutil.rmtree(temp_dir, ignore_errors=True)
    local = run_job(load_recipe(ck / "recipe.yaml"), tmp_path / "out-local", engine="local", quiet=True)
    assert local.kept > 0 and local.read > local.kept  # the duplicate and the noise file went to the ledger
    mj, ml = open_manifest(out), open_manifest(tmp_path / "out-local")
    assert mj.table().equals(ml.table())
    assert mj.ledger().equals(ml.ledger())
    ij, il = (json.loads((d / "manifest.json").read_text()) for d in (out, tmp_path / "out-local"))
    assert [s["sha256"] for s in ij["shards"]] == [s["sha256"] for s in il["shards"]]
    assert ij["recipe_hash"] == il["recipe_hash"] and ij["sources"] == il["sources"]
