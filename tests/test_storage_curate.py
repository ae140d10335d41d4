"""Curating to an s3:// output (moto server) gives the manifest the same job writes to disk; readers, validate, inspect."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from curation import synth
from curation.engine.job import run_job
from curation.recipe import load_recipe
from manifests import open_manifest
from manifests.validate import validate
from tests.s3_fixtures import s3, s3_server  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def corpus(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("SMOLCURATE_CACHE", str(tmp_path / "cache"))
    synth.write_bad_inputs(tmp_path / "bad")
    lines = "\n".join(json.dumps({"text": f"sentence {i % 5} of a longer text body"}) for i in range(40))
    (tmp_path / "t.jsonl").write_text(lines + "\n")
    (tmp_path / "r.yaml").write_text("""\
sources:
  - {name: photos, kind: images, path: bad/images, chunk_size: 3}
  - {name: notes, kind: text, path: t.jsonl, chunk_size: 9}
dedup: {exact: true}
output: {shard_rows: 7}
""")
    return tmp_path


def _same(local: Path, uri: str) -> None:
    a = json.loads((local / "manifest.json").read_text())
    m = open_manifest(uri)
    b = m.info
    assert a["sources"] == b["sources"] and a["totals"] == b["totals"] and a["recipe_hash"] == b["recipe_hash"]
    for key in ("shards", "ledger"):
        assert [(s["rows"], s["bytes"], s["sha256"]) for s in a[key]] == [(s["rows"], s["bytes"], s["sha256"]) for s in b[key]]
    assert open_manifest(local).table().equals(m.table())
    assert open_manifest(local).ledger().equals(m.ledger())


def test_curate_to_s3_equals_local_and_readers_work(corpus, s3):
    bucket = s3.bucket()
    uri = f"s3://{bucket}/runs/one"
    recipe = load_recipe(corpus / "r.yaml")
    run_job(recipe, corpus / "local", engine="local", quiet=True)
    res = run_job(recipe, uri, engine="local", quiet=True)
    assert res.out == uri
    keys = s3.keys(bucket)
    assert "runs/one/manifest.json" in keys and not any("/.staging/" in k for k in keys)  # staging removed after commit
    assert all(k.rsplit("-", 1)[-1] != "00000.parquet" for k in keys if k.endswith(".parquet"))  # content-addressed keys
    _same(corpus / "local", uri)
    m = open_manifest(uri)
    assert m.uri == uri and len(m) > 0
    assert m.to_polars().height == len(m)
    local = open_manifest(corpus / "local")
    assert m.to_hf(images=False).to_list() == local.to_hf(images=False).to_list()
    assert sum(1 for _ in m.to_torch()) == sum(1 for _ in local.to_torch()) > 0
    validate(uri, check_media=False)
    # a rerun sees the committed job and does nothing; --overwrite replaces it and leaves no stale shard keys
    assert run_job(recipe, uri, engine="local", quiet=True).skipped
    run_job(recipe, uri, engine="local", quiet=True, overwrite=True)
    assert s3.keys(bucket) == keys


def test_cli_curate_validate_inspect_on_s3_and_bad_outputs(corpus, s3, capsys):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "smolcurate"] if (ROOT / "smolcurate").is_dir() else [str(Path(sys.executable).parent / "smolcurate")]
    bucket = s3.bucket()
    uri = f"s3://{bucket}/cli"
    run = lambda *a: subprocess.run([*cli, *a], env=env, capture_output=True, text=True, timeout=300)  # noqa: E731
    p = run("curate", str(corpus / "r.yaml"), "--out", uri, "--engine", "local", "--quiet")
    assert p.returncode == 0, p.stderr
    assert run("validate", uri).returncode == 0
    p = run("inspect", uri)
    assert p.returncode == 0 and "photos" in p.stdout
    # bad outputs: one line, exit 2, nothing written
    p = run("curate", str(corpus / "r.yaml"), "--out", "s3://no-such-bucket/x", "--engine", "local", "--quiet")
    assert p.returncode == 2 and "bucket 'no-such-bucket' does not exist" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    before = s3.keys(bucket)
    bad_env = {k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
    p = subprocess.run([*cli, "curate", str(corpus / "r.yaml"), "--out", f"s3://{bucket}/nocreds", "--engine", "local", "--quiet"],
                       env=bad_env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "no valid credentials" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert "testing-secret" not in p.stderr
    assert s3.keys(bucket) == before


def _cli() -> list[str]:
    return [sys.executable, "-m", "manifests.cli"]


def test_kill_and_resume_on_s3(tmp_path, s3, monkeypatch):
    """SIGKILL mid-job on an s3:// output: no manifest.json; the rerun resumes from the staged chunks in the bucket."""
    import signal
    import time

    monkeypatch.setenv("SMOLCURATE_CACHE", str(tmp_path / "cache"))
    img = tmp_path / "imgs"
    img.mkdir()
    for i in range(40):
        synth.photo_like(i, (320, 240)).save(img / f"{i:03d}.png")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("sources:\n  - {name: a, kind: images, path: imgs, chunk_size: 1}\noutput: {shard_rows: 16}\n")
    bucket = s3.bucket()
    uri = f"s3://{bucket}/killed"
    cmd = [*_cli(), "curate", str(recipe), "--engine", "local", "--quiet", "--out", uri]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    markers = lambda: [k for k in s3.keys(bucket, "killed/.staging/") if k.rsplit("/", 1)[-1].startswith("chunk-")]  # noqa: E731
    deadline = time.time() + 180
    try:
        while time.time() < deadline and len(markers()) < 4 and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "the job finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    finished = len(markers())
    assert 4 <= finished < 40
    assert "killed/manifest.json" not in s3.keys(bucket)  # never a partial manifest
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resumed after {finished} finished chunks" in done.stdout
    run_job(load_recipe(recipe), tmp_path / "clean", engine="local", quiet=True)
    _same(tmp_path / "clean", uri)
    assert not [k for k in s3.keys(bucket) if "/.staging/" in k]


@pytest.mark.ray
@pytest.mark.slow
def test_ray_engine_to_s3_equals_local(corpus, s3):
    """The Ray engine (its own embedded Ray in a subprocess, 2 workers) staging chunks to the bucket."""
    bucket = s3.bucket()
    uri = f"s3://{bucket}/ray"
    run_job(load_recipe(corpus / "r.yaml"), corpus / "local", engine="local", quiet=True)
    p = subprocess.run([*_cli(), "curate", str(corpus / "r.yaml"), "--out", uri, "--engine", "ray", "--workers", "2",
                        "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "ray engine, 2 worker(s)" in p.stdout
    _same(corpus / "local", uri)


def test_mixture_from_and_to_s3_and_export_from_s3(corpus, s3, tmp_path):
    from curation.export import export_manifest
    from curation.mixing import build_mixture, load_mixture

    bucket = s3.bucket()
    src = f"s3://{bucket}/curated"
    recipe = load_recipe(corpus / "r.yaml")
    run_job(recipe, corpus / "local", engine="local", quiet=True)
    run_job(recipe, src, engine="local", quiet=True)
    mix = tmp_path / "mix.yaml"
    body = "total: 30\nseed: 3\nweights: {notes: 0.7, photos: 0.3}\nmax_epochs: 3\nallow_shortfall: true\n"
    mix.write_text(f"inputs: [{src}]\n" + body)
    local_mix = tmp_path / "mix-local.yaml"
    local_mix.write_text(f"inputs: [{corpus / 'local'}]\n" + body)
    out = f"s3://{bucket}/mixed"
    res = build_mixture(load_mixture(mix), out)
    assert res.path == out
    ref = build_mixture(load_mixture(local_mix), tmp_path / "mixed-local")
    assert open_manifest(out).table().equals(ref.manifest().table())
    validate(out, check_media=False)
    exported = export_manifest(src, "llava", tmp_path / "export")
    reference = export_manifest(corpus / "local", "llava", tmp_path / "export-local")
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == sorted(p.name for p in (tmp_path / "export-local").iterdir())
    assert exported.summary().splitlines()[1:] == reference.summary().splitlines()[1:]


def test_webdataset_shards_from_s3_equal_local(tmp_path, s3, monkeypatch):
    """Tar shards on s3:// (a brace range) give the rows the same shards give on disk; their media decode in place."""
    from tests.readers_fixtures import img2dataset_shard, jpeg

    monkeypatch.setenv("SMOLCURATE_CACHE", str(tmp_path / "cache"))
    wds = tmp_path / "wds"
    wds.mkdir()
    for s in range(2):
        samples = [(f"{s:02d}{i:03d}", jpeg(synth.photo_like(10 * s + i, (96, 72))), f"caption {s} {i}", {"n": i})
                   for i in range(5)]
        img2dataset_shard(wds / f"shard-{s:06d}.tar", samples)
    bucket = s3.bucket()
    for p in sorted(wds.iterdir()):
        s3.client().upload_file(str(p), bucket, f"wds/{p.name}")
    body = "output: {shard_rows: 4}\nsources:\n  - {name: w, kind: image_text, path: \"%s/shard-{000000..000001}.tar\", chunk_size: 3}\n"
    (tmp_path / "local.yaml").write_text(body % "wds")
    (tmp_path / "s3.yaml").write_text(body % f"s3://{bucket}/wds")
    run_job(load_recipe(tmp_path / "s3.yaml"), tmp_path / "from-s3", engine="local", quiet=True)
    run_job(load_recipe(tmp_path / "local.yaml"), tmp_path / "from-disk", engine="local", quiet=True)
    a, b = open_manifest(tmp_path / "from-s3").table(), open_manifest(tmp_path / "from-disk").table()
    assert a.num_rows == b.num_rows == 10
    assert a.drop_columns(["media"]).equals(b.drop_columns(["media"]))
    ma, mb = a.column("media").to_pylist(), b.column("media").to_pylist()
    assert [[{k: v for k, v in r.items() if k != "uri"} for r in row] for row in ma] == \
           [[{k: v for k, v in r.items() if k != "uri"} for r in row] for row in mb]
    assert all(r[0]["uri"].startswith("tar://s3%3A%2F%2F") for r in ma)
    from media.refs import decode_image_ref  # what the torch reader and thumbnails call

    assert decode_image_ref(ma[0][0]).size == decode_image_ref(mb[0][0]).size == (96, 72)
    validate(tmp_path / "from-s3")  # media checks: each shard object exists
    # a missing shard of the range is a one-line recipe error
    s3.client().delete_object(Bucket=bucket, Key="wds/shard-000001.tar")
    from manifests.errors import RecipeError

    with pytest.raises(RecipeError, match="shard-000001.tar does not exist"):
        run_job(load_recipe(tmp_path / "s3.yaml"), tmp_path / "again", engine="local", quiet=True, overwrite=True)


def test_tar_on_s3_is_scanned_and_read_by_byte_range(tmp_path, s3, monkeypatch):
    """Planning scans headers only and a member is one ranged read: an 8 MiB member is never fetched."""
    import s3fs.core

    from media.containers import read_member, scan_tar
    from tests.readers_fixtures import members_shard

    shard = members_shard(tmp_path / "big.tar", [("a.txt", b"first"), ("big.bin", bytes(8 << 20)), ("c.txt", b"last")])
    bucket = s3.bucket()
    s3.client().upload_file(str(shard), bucket, "big.tar")
    fetched: list[int] = []
    real = s3fs.core.S3File._fetch_range
    monkeypatch.setattr(s3fs.core.S3File, "_fetch_range",
                        lambda self, start, end: fetched.append(end - start) or real(self, start, end))
    uri = f"s3://{bucket}/big.tar"
    scan = scan_tar(uri)
    assert [m.name for m in scan.members] == ["a.txt", "big.bin", "c.txt"] and scan.problem is None
    last = scan.members[-1]
    assert read_member(uri, last.offset, last.size) == b"last"
    assert 0 < sum(fetched) < 2 << 20, fetched  # headers and the member, not the 8 MiB in between


def test_folder_sources_from_s3_equal_local(tmp_path, s3, monkeypatch):
    """A folder of images (nested, one empty file) and a folder of .txt files, listed on s3://."""
    monkeypatch.setenv("SMOLCURATE_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    for sub in ("imgs/a", "notes"):
        (root / sub).mkdir(parents=True)
    for i in range(4):
        synth.photo_like(i, (90, 70)).save(root / "imgs" / ("a" if i % 2 else "") / f"{i}.png")
        (root / "notes" / f"{i}.txt").write_text(f"note number {i} with some words")
    (root / "imgs" / "empty.png").write_bytes(b"")
    bucket = s3.bucket()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            s3.client().upload_file(str(p), bucket, f"data/{p.relative_to(root).as_posix()}")
    body = """\
sources:
  - {name: photos, kind: images, path: %(r)s/imgs, chunk_size: 2}
  - {name: notes, kind: text, path: %(r)s/notes}
dedup: {exact: true}
"""
    (tmp_path / "local.yaml").write_text(body % {"r": "data"})
    (tmp_path / "s3.yaml").write_text(body % {"r": f"s3://{bucket}/data"})
    run_job(load_recipe(tmp_path / "s3.yaml"), f"s3://{bucket}/out", engine="local", quiet=True)
    run_job(load_recipe(tmp_path / "local.yaml"), tmp_path / "local", engine="local", quiet=True)
    a, b = open_manifest(f"s3://{bucket}/out"), open_manifest(tmp_path / "local")
    assert a.info["sources"]["photos"]["read"] == 5 and a.info["totals"] == b.info["totals"]
    ta, tb = a.table(), b.table()
    assert ta.drop_columns(["media"]).equals(tb.drop_columns(["media"]))
    assert [(r["uri"] or "").replace(f"s3://{bucket}/data", str(root)) for row in ta.column("media").to_pylist() for r in row] == \
           [r["uri"] for row in tb.column("media").to_pylist() for r in row]
    la, lb = a.ledger(), b.ledger()
    assert la.select(["id", "stage", "reason"]).equals(lb.select(["id", "stage", "reason"]))


def test_recipe_mixture_section_on_s3(tmp_path, s3, monkeypatch):
    """`curate --out s3://b/out` with a mixture: section writes s3://b/out-mixture; the rerun keeps both."""
    from manifests.cli import main as cli_main

    monkeypatch.setenv("SMOLCURATE_CACHE", str(tmp_path / "cache"))
    rows = [{"id": f"a{i}", "text": f"alpha document number {i} " * (3 + i % 5)} for i in range(20)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "recipe.yaml").write_text("""\
sources:
  - {name: alpha, kind: text, path: a.jsonl, text_column: text, id_column: id}
mixture: {seed: 3, by: samples, total: 30, weights: {alpha: 1.0}, max_epochs: 2}
""")
    bucket = s3.bucket()
    out = f"s3://{bucket}/out"
    args = ["curate", str(tmp_path / "recipe.yaml"), "--out", out, "--engine", "local", "--quiet"]
    assert cli_main(args) == 0
    mix = open_manifest(f"{out}-mixture")
    assert mix.info["extra"]["mixture"]["inputs"][0]["path"] == out
    assert int(mix.to_polars()["repeat"].sum()) == 30
    before = s3.client().get_object(Bucket=bucket, Key="out-mixture/manifest.json")["Body"].read()
    assert cli_main(args) == 0
    assert s3.client().get_object(Bucket=bucket, Key="out-mixture/manifest.json")["Body"].read() == before


def test_table_sources_from_s3_equal_local(tmp_path, s3, monkeypatch):
    """JSON lines and Parquet tables on s3:// (read by ranges) give the rows the same files give on disk."""
    import pyarrow.parquet as pq

    monkeypatch.setenv("SMOLCURATE_CACHE", str(tmp_path / "cache"))
    rows = [{"id": f"r{i}", "text": f"row {i} says something {'long ' * (i % 4)}"} for i in range(25)]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet", row_group_size=6)
    bucket = s3.bucket()
    for name in ("t.jsonl", "t.parquet"):
        s3.client().upload_file(str(tmp_path / name), bucket, f"tables/{name}")
    body = """\
sources:
  - {name: lines, kind: text, path: %(r)s/t.jsonl, text_column: text, id_column: id, chunk_size: 7}
  - {name: pq, kind: text, path: %(r)s/t.parquet, text_column: text, id_column: id, chunk_size: 5}
"""
    (tmp_path / "local.yaml").write_text(body % {"r": str(tmp_path)})
    (tmp_path / "s3.yaml").write_text(body % {"r": f"s3://{bucket}/tables"})
    run_job(load_recipe(tmp_path / "s3.yaml"), tmp_path / "from-s3", engine="local", quiet=True)
    run_job(load_recipe(tmp_path / "local.yaml"), tmp_path / "from-disk", engine="local", quiet=True)
    a, b = open_manifest(tmp_path / "from-s3"), open_manifest(tmp_path / "from-disk")
    assert a.info["totals"] == b.info["totals"] and a.info["totals"]["read"] == 50
    assert a.table().equals(b.table())


def test_dedup_against_a_manifest_on_s3(tmp_path, s3, monkeypatch):
    """`dedup.against: [s3://...]` drops what the same manifest on disk drops."""
    monkeypatch.setenv("SMOLCURATE_CACHE", str(tmp_path / "cache"))
    old = [{"id": f"o{i}", "text": f"an older sentence number {i} with words"} for i in range(10)]
    new = old[:4] + [{"id": f"n{i}", "text": f"a fresh sentence number {i} here"} for i in range(6)]
    (tmp_path / "old.jsonl").write_text("\n".join(json.dumps(r) for r in old))
    (tmp_path / "new.jsonl").write_text("\n".join(json.dumps({**r, "id": "x" + r["id"]}) for r in new))
    (tmp_path / "old.yaml").write_text("sources:\n  - {name: t, kind: text, path: old.jsonl, text_column: text, id_column: id}\n"
                                       "dedup: {exact: true}\n")
    bucket = s3.bucket()
    run_job(load_recipe(tmp_path / "old.yaml"), f"s3://{bucket}/old", engine="local", quiet=True)
    run_job(load_recipe(tmp_path / "old.yaml"), tmp_path / "old", engine="local", quiet=True)
    body = "sources:\n  - {name: t, kind: text, path: new.jsonl, text_column: text, id_column: id}\ndedup: {exact: true, against: [%s]}\n"
    (tmp_path / "a.yaml").write_text(body % f"s3://{bucket}/old")
    (tmp_path / "b.yaml").write_text(body % (tmp_path / "old"))
    run_job(load_recipe(tmp_path / "a.yaml"), tmp_path / "a", engine="local", quiet=True)
    run_job(load_recipe(tmp_path / "b.yaml"), tmp_path / "b", engine="local", quiet=True)
    la, lb = open_manifest(tmp_path / "a").ledger(), open_manifest(tmp_path / "b").ledger()
    assert la.num_rows == 4 and la.select(["id", "stage", "reason"]).equals(lb.select(["id", "stage", "reason"]))
    (tmp_path / "c.yaml").write_text(body % f"s3://{bucket}/nothing-here")
    from manifests.errors import RecipeError

    with pytest.raises(RecipeError, match=r"dedup.against\[0\]: .* is not a manifest"):
        run_job(load_recipe(tmp_path / "c.yaml"), tmp_path / "c", engine="local", quiet=True)
