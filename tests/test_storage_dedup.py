"""Dedup partitions staged on the job's object store (moto server): tasks need nothing on the driver's disk."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from curation.dedup import DedupConfig, compute_signatures, resolve_duplicates
from curation.dedup.shared import SharedArea
from curation.engine.job import run_job
from curation.recipe import load_recipe
from manifests import open_manifest
from manifests.schema import MEDIA_TYPE, TURN_TYPE
from tests.s3_fixtures import s3, s3_server  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


def _photo(seed: int, size=(320, 240)) -> Image.Image:
    small = np.random.default_rng(seed).integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def _texts(n_families: int = 4, seed: int = 0) -> list[str]:
    """Families of near-duplicate texts (a few words edited) and exact copies."""
    rng = random.Random(seed)
    out = []
    for _ in range(n_families):
        base = [f"w{rng.randrange(20000)}" for _ in range(120)]
        near = list(base)
        near[rng.randrange(120)] = "edited"
        out += [" ".join(base), " ".join(near), " ".join(base)]
    return out


def _images(folder: Path) -> list[Path]:
    """Photos with byte copies, re-encodes and resizes (exact and pHash duplicates), and distinct ones."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(3):
        im = _photo(k, (480, 360))
        for name, img, kw in ((f"p{k}.png", im, {}), (f"p{k}-copy.png", im, {}),
                              (f"p{k}.jpg", im, {"quality": 80}), (f"p{k}-small.png", im.resize((240, 180)), {})):
            img.save(folder / name, **kw)
            paths.append(folder / name)
    for k in range(3):
        _photo(50 + k).save(folder / f"d{k}.png")
        paths.append(folder / f"d{k}.png")
    return paths


@pytest.fixture()
def signatures(tmp_path: Path) -> pa.Table:
    rows = [{"id": f"i-{p.name}", "modality": "image", "media": [{"uri": str(p), "kind": "image"}], "text": None}
            for p in _images(tmp_path / "img")]
    rows += [{"id": f"t-{i:02d}", "modality": "text", "media": None, "text": t} for i, t in enumerate(_texts())]
    n = len(rows)
    t = pa.table({
        "id": [r["id"] for r in rows], "source": ["gen"] * n, "modality": [r["modality"] for r in rows],
        "media": pa.array([r["media"] for r in rows], pa.list_(MEDIA_TYPE)),
        "text": pa.array([r["text"] for r in rows], pa.string()), "turns": pa.nulls(n, pa.list_(TURN_TYPE)),
    })
    sig = compute_signatures(t, DedupConfig())
    # a one-hot embedding per image row, one per photo family (p0*, p1*, ...; d* each their own)
    families = sorted({i[2:4] for i in sig.column("id").to_pylist() if i.startswith("i-")})
    emb = [None if not i.startswith("i-") else np.eye(len(families))[families.index(i[2:4])].tolist()
           for i in sig.column("id").to_pylist()]
    return sig.append_column("emb_image", pa.array(emb, pa.list_(pa.float32())))


def test_partitions_live_on_the_store_and_the_result_equals_local(signatures, s3, tmp_path):
    """With ``shared`` on s3://, the tasks' files are objects; the driver's work folder holds none of them."""
    cfg = DedupConfig(partitions=4, semantic={"enabled": True, "eps": 0.001, "partitions": 3})
    calls = []

    def serial(fn, items):
        return [fn(i) for i in items]

    local = resolve_duplicates(signatures, cfg, workdir=tmp_path / "local", map_fn=serial)
    matches = {json.loads(d)["match"] for d in local.column("detail").to_pylist() if d}
    assert {"bytes", "phash", "minhash", "text"} <= matches
    bucket = s3.bucket()
    work = tmp_path / "driver"
    shared = f"s3://{bucket}/run/.staging/dedup"

    def checked(fn, items):
        # what a task on another machine would see: its inputs on the store, nothing in the driver's folder
        calls.append(sorted(k for k in s3.keys(bucket) if k.endswith((".parquet", ".arrow"))))
        assert not [p for p in work.rglob("part-*") if p.suffix in (".parquet", ".arrow")], \
            "a partition stayed on the driver's disk"
        return [fn(i) for i in items]

    remote = resolve_duplicates(signatures, cfg, workdir=work, map_fn=checked, shared=shared)
    assert remote.equals(local)
    assert len(calls) == 2  # the bucket partitions, then the semantic cluster partitions
    assert [k.rsplit("/", 1)[1] for k in calls[0]] == [f"part-{p:05d}.arrow" for p in range(4)]
    assert all(k.startswith("run/.staging/dedup/buckets/") for k in calls[0])
    keys = s3.keys(bucket, "run/.staging/dedup/")
    assert {f"run/.staging/dedup/edges/edges-{p:05d}.parquet" for p in range(4)} <= set(keys)
    assert {f"run/.staging/dedup/edges/p{p:05d}.done" for p in range(4)} <= set(keys)
    assert any(k.startswith("run/.staging/dedup/semantic/part-") for k in calls[1])
    assert not [p for p in work.rglob("edges-*.parquet")]  # the tasks' results were read from the store

    # a rerun after a kill before the clusters were written finds every partition's marker on the store and
    # redoes none of them; once the answer is written, a rerun reads it and runs no partition at all
    (work / "result.done").unlink()
    ran = []

    def counting(fn, items):
        ran.extend(items)
        return [fn(i) for i in items]

    from curation.dedup import resolve as resolve_mod

    real = resolve_mod._process_partition
    done = []
    resolve_mod._process_partition = lambda p, c: (done.append(p), real(p, c))[1]
    try:
        again = resolve_duplicates(signatures, cfg, workdir=work, map_fn=counting, shared=shared)
    finally:
        resolve_mod._process_partition = real
    assert again.equals(local) and ran and not done
    ran.clear()
    assert resolve_duplicates(signatures, cfg, workdir=work, map_fn=counting, shared=shared).equals(local) and not ran


def test_without_map_fn_or_on_disk_nothing_goes_to_the_store(signatures, tmp_path):
    """In-process resolve keeps its files in the work folder (no uploads for nothing); a local area is the folder."""
    cfg = DedupConfig(partitions=2)
    res = resolve_duplicates(signatures, cfg, workdir=tmp_path / "w", shared="s3://never-touched/x")
    assert res.num_rows and sorted(p.name for p in (tmp_path / "w" / "buckets").iterdir()) == ["part-00000.arrow", "part-00001.arrow"]
    area = SharedArea(tmp_path / "w")
    assert not area.remote and area.done("edges/p00000", (tmp_path / "w" / "inputs.done").read_text())


def _recipe(tmp_path: Path) -> Path:
    _images(tmp_path / "photos")
    lines = [json.dumps({"text": t}) for t in _texts(6)] + [json.dumps({"text": f"a short note {i} of its own kind"}) for i in range(12)]
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "r.yaml").write_text("""\
sources:
  - {name: photos, kind: images, path: photos, chunk_size: 4}
  - {name: notes, kind: text, path: t.jsonl, chunk_size: 8}
dedup: {exact: true, text: {threshold: 0.8}, image: {max_distance: 6}, partitions: 5}
output: {shard_rows: 9}
""")
    return tmp_path / "r.yaml"


@pytest.mark.ray
@pytest.mark.slow
def test_ray_dedup_job_to_s3_equals_local_disk(tmp_path, s3, monkeypatch):
    """exact + MinHash + image dedup on the Ray engine (2 workers), --out s3://: the manifest the local disk gets.

    The bucket is versioned, so every object the job wrote is still listed after
    ``.staging/`` was deleted: the bucket partitions and the edges the Ray tasks
    wrote were objects on the store.
    """
    monkeypatch.setenv("SMOLCURATE_CACHE", str(tmp_path / "cache"))
    recipe = _recipe(tmp_path)
    run_job(load_recipe(recipe), tmp_path / "local", engine="local", quiet=True)
    bucket = s3.bucket()
    s3.client().put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    uri = f"s3://{bucket}/ray"
    p = subprocess.run([sys.executable, "-m", "manifests.cli", "curate", str(recipe), "--out", uri, "--engine", "ray",
                        "--workers", "2", "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    a, b = open_manifest(tmp_path / "local"), open_manifest(uri)
    assert a.info["totals"] == b.info["totals"] and a.info["totals"]["read"] > a.info["totals"]["rows"]
    assert [s["sha256"] for s in a.info["shards"]] == [s["sha256"] for s in b.info["shards"]]
    assert a.table().equals(b.table()) and a.ledger().equals(b.ledger())
    reasons = set(a.ledger().column("reason").to_pylist())
    assert "duplicate" in reasons
    written = set()
    for page in s3.client().get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix="ray/.staging/dedup/"):
        written |= {v["Key"] for v in page.get("Versions", [])}
    assert {f"ray/.staging/dedup/buckets/part-{k:05d}.arrow" for k in range(5)} <= written
    assert {f"ray/.staging/dedup/edges/edges-{k:05d}.parquet" for k in range(5)} <= written
    assert not [k for k in s3.keys(bucket) if "/.staging/" in k]  # cleaned after the commit


def test_auto_partitions_follow_the_corpus_and_keep_the_result(signatures, tmp_path, monkeypatch):
    """``partitions: null`` sizes partitions by bucket records (a task's memory stays flat); the result never moves."""
    from curation.dedup import resolve as resolve_mod
    from curation.dedup.inputs import input_files
    from curation.dedup.records import RecordBuilder

    cfg = DedupConfig()
    assert cfg.partitions is None
    builder = RecordBuilder(cfg, False)
    files = input_files(signatures)
    per_row = resolve_mod.records_per_row(files, builder, list(resolve_mod.CARRY))
    assert per_row > 28  # 28 pHash block pairs per image, plus its digests; a band per text
    assert resolve_mod.auto_partitions(files, per_row) == resolve_mod.MIN_PARTITIONS
    monkeypatch.setattr(resolve_mod, "PARTITION_RECORDS", 20)
    monkeypatch.setattr(resolve_mod, "MIN_PARTITIONS", 1)
    small = resolve_mod.auto_partitions(input_files(signatures.slice(0, 10)), per_row)
    large = resolve_mod.auto_partitions(files, per_row)
    assert 1 <= small < large  # more rows, more partitions
    auto = resolve_duplicates(signatures, cfg, workdir=tmp_path / "auto")
    assert len(list((tmp_path / "auto" / "buckets").glob("part-*.arrow"))) == large
    pinned = resolve_duplicates(signatures, DedupConfig(partitions=3), workdir=tmp_path / "pinned")
    assert auto.equals(pinned)


def test_decontaminate_against_sets_on_s3_equals_disk(tmp_path, s3, monkeypatch):
    """`decontaminate:` entries on s3:// (a Parquet file of questions, a prefix of images) drop what the same sets
    on disk drop, with the same ids in the ledger detail."""
    import pyarrow.parquet as pq

    monkeypatch.setenv("SMOLCURATE_CACHE", str(tmp_path / "cache"))
    paths = _images(tmp_path / "photos")
    evals = tmp_path / "evals"
    (evals / "imgs").mkdir(parents=True)
    for p in paths[:2]:  # p0.png and its byte copy are eval images
        (evals / "imgs" / p.name).write_bytes(p.read_bytes())
    questions = [f"how many red cubes are left of the sphere in picture {i}" for i in range(4)]
    pq.write_table(pa.table({"question_id": [f"q{i}" for i in range(4)], "question": questions}), evals / "vqa.parquet")
    notes = questions[:2] + [f"an unrelated note number {i} about the weather today" for i in range(5)]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in notes) + "\n")
    bucket = s3.bucket()
    client = s3.client()
    for p in sorted(evals.rglob("*")):
        if p.is_file():
            client.upload_file(str(p), bucket, f"evals/{p.relative_to(evals).as_posix()}")
    body = """\
sources:
  - {name: photos, kind: images, path: photos}
  - {name: notes, kind: text, path: t.jsonl}
dedup: {exact: false, image: {enabled: false}, text: {enabled: false}}
decontaminate: [%s, %s]
"""
    (tmp_path / "s3.yaml").write_text(body % (f"s3://{bucket}/evals/vqa.parquet", f"s3://{bucket}/evals/imgs"))
    (tmp_path / "disk.yaml").write_text(body % (evals / "vqa.parquet", evals / "imgs"))
    run_job(load_recipe(tmp_path / "s3.yaml"), tmp_path / "a", engine="local", quiet=True)
    run_job(load_recipe(tmp_path / "disk.yaml"), tmp_path / "b", engine="local", quiet=True)
    cols = ["id", "stage", "reason", "detail"]
    la, lb = open_manifest(tmp_path / "a").ledger().select(cols), open_manifest(tmp_path / "b").ledger().select(cols)
    assert la.equals(lb)
    reasons = set(la.column("reason").to_pylist())
    assert {"contaminated:vqa", "contaminated:imgs"} <= reasons
    assert sum(r == "contaminated:vqa" for r in la.column("reason").to_pylist()) == 2
    (tmp_path / "bad.yaml").write_text(body % (f"s3://{bucket}/evals/nothing.parquet", evals / "imgs"))
    from manifests.errors import RecipeError

    with pytest.raises(RecipeError, match=r"decontaminate\[0\]: .*does not exist"):
        run_job(load_recipe(tmp_path / "bad.yaml"), tmp_path / "c", engine="local", quiet=True)


def test_export_to_s3_equals_local_export(tmp_path, s3, monkeypatch):
    """`export --out s3://...` uploads what a local export writes (the card last); a non-empty prefix needs --overwrite."""
    from curation.export import export_manifest
    from manifests.errors import UserError

    monkeypatch.setenv("SMOLCURATE_CACHE", str(tmp_path / "cache"))
    recipe = _recipe(tmp_path)
    run_job(load_recipe(recipe), tmp_path / "m", engine="local", quiet=True)
    bucket = s3.bucket()
    uri = f"s3://{bucket}/exports/llava"
    for fmt in ("llava", "webdataset"):
        local = export_manifest(tmp_path / "m", fmt, tmp_path / f"exp-{fmt}")
        remote = export_manifest(tmp_path / "m", fmt, uri, overwrite=fmt != "llava")
        assert remote.out == uri and remote.rows == local.rows and remote.shards == local.shards
        files = {p.relative_to(tmp_path / f"exp-{fmt}").as_posix(): p for p in (tmp_path / f"exp-{fmt}").rglob("*") if p.is_file()}
        keys = {k[len("exports/llava/"):] for k in s3.keys(bucket, "exports/llava/")}
        assert keys == set(files)  # the previous format's objects were removed on overwrite
        for name, p in files.items():
            got = s3.client().get_object(Bucket=bucket, Key=f"exports/llava/{name}")["Body"].read()
            if name == "README.md":
                assert uri in got.decode()
            else:
                assert got == p.read_bytes(), name
    with pytest.raises(UserError, match="exists and is not empty"):
        export_manifest(tmp_path / "m", "llava", uri)
    assert not (ROOT / "s3:").exists() and not (tmp_path / "s3:").exists()
