"""A multi-node Ray cluster on one machine (``ray.cluster_utils.Cluster``: a head with no CPUs, two 1-CPU worker
nodes) curating from and to the local S3 server, identical to the local engine; then the same job with a worker
node removed mid-job.

The cluster replaces the shared test session for this module: the session is shut down first and started again
afterwards (as tests/conftest.py starts it), so later tests find it as they expect.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from curation import synth
from curation.engine.job import run_job
from curation.recipe import load_recipe
from manifests.reader import open_manifest
from tests.s3_fixtures import s3, s3_server  # noqa: F401

pytestmark = [pytest.mark.ray, pytest.mark.slow]

STORE = 96 * 1024 * 1024  # object store per node


@pytest.fixture(scope="module")
def cluster(s3_server):  # noqa: F811
    """The cluster, its nodes started with the S3 server's endpoint and fake credentials in their environment
    (a real cluster's nodes have their own: smolcurate never ships the driver's credentials)."""
    import ray
    from ray.cluster_utils import Cluster

    from curation.engine.ray_session import init_ray

    shared = ray.is_initialized()
    ray.shutdown()
    env = pytest.MonkeyPatch()
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3"):
        env.delenv(key, raising=False)
    for key, value in {**s3_server.env, "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_CONFIG_FILE": os.devnull,
                       "RAY_USAGE_STATS_ENABLED": "0"}.items():
        env.setenv(key, value)
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": STORE,
                                                      "include_dashboard": False})
    try:
        workers = [c.add_node(num_cpus=1, object_store_memory=STORE) for _ in range(2)]
        c.wait_for_nodes()
        init_ray(c.address, quiet=True)
        yield c, workers
    finally:
        ray.shutdown()
        c.shutdown()
        env.undo()
        if shared:  # the shared session, as tests/conftest.py starts it
            init_ray(address=None, num_cpus=2, quiet=True)


def _corpus(tmp_path: Path, s3, images: int, dedup: bool) -> tuple[str, Path]:  # noqa: F811
    """Photos (one duplicate, one file no decoder reads) and a few notes, uploaded; returns (bucket, recipe)."""
    root = tmp_path / "data"
    (root / "imgs").mkdir(parents=True)
    for i in range(images):
        synth.photo_like(i + 1, (64, 48)).save(root / "imgs" / f"p{i:02d}.jpg")
    (root / "imgs" / "p99_copy.jpg").write_bytes((root / "imgs" / "p00.jpg").read_bytes())
    (root / "imgs" / "noise.jpg").write_bytes(os.urandom(2000))
    (root / "notes.jsonl").write_text("".join(f'{{"text": "note {i % 3} with a few more words in it"}}\n'
                                              for i in range(8)))
    bucket = s3.bucket()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            s3.client().upload_file(str(p), bucket, f"data/{p.relative_to(root).as_posix()}")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""\
sources:
  - {{name: photos, kind: images, path: s3://{bucket}/data/imgs, chunk_size: 2}}
  - {{name: notes, kind: text, path: s3://{bucket}/data/notes.jsonl, chunk_size: 4}}
{"dedup: {exact: true}" if dedup else ""}
output: {{shard_rows: 5}}
""")
    return bucket, recipe


def _same(local: Path, uri: str) -> None:
    a, b = open_manifest(local), open_manifest(uri)
    assert a.info["sources"] == b.info["sources"] and a.info["totals"] == b.info["totals"]
    assert a.info["recipe_hash"] == b.info["recipe_hash"] and a.info["drops"] == b.info["drops"]
    for key in ("shards", "ledger"):
        assert [(s["rows"], s["sha256"]) for s in a.info[key]] == [(s["rows"], s["sha256"]) for s in b.info[key]]
    assert a.table().equals(b.table()) and a.ledger().equals(b.ledger())


def test_a_three_node_cluster_curates_from_and_to_s3_as_the_local_engine_does(cluster, s3, tmp_path):  # noqa: F811
    bucket, recipe = _corpus(tmp_path, s3, 4, dedup=True)  # the dedup resolve's Ray tasks run on the nodes too
    r = load_recipe(recipe)
    run_job(r, tmp_path / "local", engine="local", quiet=True)
    uri = f"s3://{bucket}/runs/cluster"
    res = run_job(r, uri, engine="ray", quiet=True)
    assert res.workers == 2  # the head offers no CPU: both workers are the worker nodes'
    assert len(res.stages[0]["pids"]) == 2  # one stage actor on each worker node
    _same(tmp_path / "local", uri)
    assert not [k for k in s3.keys(bucket) if "/.staging/" in k]


def test_a_worker_node_removed_mid_job_leaves_the_output_unchanged(cluster, s3, tmp_path, monkeypatch):  # noqa: F811
    c, workers = cluster
    bucket, recipe = _corpus(tmp_path, s3, 7, dedup=False)  # 5 chunks of photos, 2 of notes
    r = load_recipe(recipe)
    run_job(r, tmp_path / "local", engine="local", quiet=True)
    monkeypatch.setenv("SMOLCURATE_TEST_DECODE_SLEEP", "0.5")  # a slow decoder: the removal lands mid-job
    uri = f"s3://{bucket}/runs/removed"
    # on one machine the driver attaches to the raylet of any node: not that one (on a cluster it is the head)
    import ray

    here = ray.get_runtime_context().get_node_id()
    victim = next(i for i, w in enumerate(workers) if w.node_id != here)
    box: dict = {}
    job = threading.Thread(target=lambda: box.update(res=run_job(r, uri, engine="ray", quiet=True)), daemon=True)
    job.start()
    staged_at_removal = None
    deadline = time.monotonic() + 240
    while job.is_alive() and time.monotonic() < deadline:
        staged = [k for k in s3.keys(bucket, "runs/removed/.staging/") if k.rsplit("/", 1)[-1].startswith("chunk-")]
        if staged:
            c.remove_node(workers[victim])  # its raylet, object store and stage actor go away at once
            staged_at_removal = len(staged)
            break
        time.sleep(0.1)
    job.join(timeout=300)
    assert staged_at_removal is not None and staged_at_removal < 7, "the node was not removed mid-job"
    assert not job.is_alive() and "res" in box
    _same(tmp_path / "local", uri)
    workers[victim] = c.add_node(num_cpus=1, object_store_memory=STORE)  # back to two worker nodes
    c.wait_for_nodes()
