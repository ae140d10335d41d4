"""Model operators with tiny random CLIP and SigLIP models built and saved by the test (no download)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.engine.job import run_job
from curation.recipe import load_recipe, parse_recipe
from manifests.cli import main as cli_main
from tests.enrich_fixtures import linear_head, model_corpus, rng_images, tiny_clip, tiny_siglip


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    tiny_clip(root / "clip")
    tiny_siglip(root / "siglip")
    linear_head(root / "aesthetic.pt", 16, hidden=8)
    linear_head(root / "nsfw.pt", 16, seed=1)
    linear_head(root / "head32.pt", 32)
    return root


def _rows(out: Path, sub: str = "data") -> pa.Table:
    files = sorted((out / sub).glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else pa.table({})


def _embedder(models: Path, family: str, batch_size: int):
    from curation.enrich.clip import ImageEmbedder

    r = parse_recipe({"sources": [{"name": "a", "kind": "image_text", "path": str(models), "format": "files"}],
                      "enrich": {"embed": {"model": str(models / family), "batch_size": batch_size}}}, check_paths=False)
    op = ImageEmbedder(r.enrich["embed"], r)
    op.setup()
    return op


def _batch(tmp_path: Path, n: int = 10) -> pa.Table:
    imgs = rng_images(tmp_path / "imgs", n)
    media = [[{"uri": str(p), "kind": "image", "width": 48, "height": 40}] for p in imgs]
    return pa.table({"media": media, "text": [("a photo of a cat", "red car with a dog")[i % 2] for i in range(n)]})


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_scores_are_deterministic_and_do_not_depend_on_the_batch_size(models, tmp_path, family):
    from curation.enrich.clip import embeddings

    t = _batch(tmp_path)
    base = _embedder(models, family, 4)
    first = base(t)
    assert base(t).equals(first), "same batch size, same input: bit-identical"
    # where chunk boundaries fall never matters: short last batches are padded to the batch size
    assert pa.concat_tables([base(t.slice(0, 3)), base(t.slice(3))]).equals(first)
    s0 = np.asarray(first.column("score_clip").to_pylist(), np.float64)
    e0, v0 = embeddings(first)
    assert v0.all() and np.isfinite(s0).all() and np.ptp(s0) > 0
    assert np.allclose(np.linalg.norm(e0, axis=1), 1.0, atol=1e-3)
    for bs in (1, 3, 16):
        other = _embedder(models, family, bs)(t)
        # other batch sizes change the GEMM shapes: equal to float32 rounding, never more
        assert np.allclose(np.asarray(other.column("score_clip").to_pylist()), s0, atol=2e-6, rtol=0)
        assert np.allclose(embeddings(other)[0], e0, atol=2e-3)


def test_an_image_failing_inside_a_batch_is_a_ledger_row(models, tmp_path):
    t = _batch(tmp_path, 6)
    media = t.column("media").to_pylist()
    media[2] = [{"bytes": b"not an image at all", "kind": "image"}]
    media[4] = [{"uri": str(tmp_path / "gone.png"), "kind": "image"}]
    t = t.set_column(0, "media", pa.array(media, t.schema.field("media").type))
    out = _embedder(models, "clip", 4)(t)
    reasons = out.column("_drop_reason").to_pylist()
    assert [r is not None for r in reasons] == [False, False, True, False, True, False]
    assert out.column("_drop_stage").to_pylist()[2] == "embed"
    ok = out.filter(pa.array([r is None for r in reasons]))
    assert ok.column("emb_image").null_count == 0 and ok.column("score_clip").null_count == 0


def _recipe(root: Path, models: Path, extra: str = "", family: str = "clip", head: str = "aesthetic.pt") -> Path:
    text = f"""\
sources:
  - {{name: pairs, kind: image_text, path: corpus/pairs, format: files, chunk_size: 5}}
  - {{name: photos, kind: images, path: corpus/photos, chunk_size: 4}}
  - {{name: notes, kind: text, path: corpus/notes.jsonl, text_column: text}}
filters:
  image: {{min_side: 8, max_low_info: null}}
enrich:
  language: {{languages: [en, fr]}}
  embed: {{model: {models / family}, batch_size: 4}}
  clip_score: {{top_fraction: 0.5}}
  aesthetic: {{head: {models / head}, min: -100}}
  nsfw: {{head: {models / 'nsfw.pt'}, output: sigmoid, max: 0.99}}
{extra}"""
    p = root / "r.yaml"
    p.write_text(text)
    return p


def test_thresholds_drop_exactly_the_rows_they_should(models, tmp_path):
    model_corpus(tmp_path / "corpus")
    recipe = _recipe(tmp_path, models)
    res = run_job(load_recipe(recipe), tmp_path / "out", engine="local", quiet=True)
    kept = _rows(tmp_path / "out")
    led = _rows(tmp_path / "out", "dropped")
    # top_fraction 0.5 per source: ceil(0.5 * 12) pairs kept, the highest scores
    pairs_kept = kept.filter(pa.compute.equal(kept.column("source"), "pairs"))
    cut = led.filter(pa.compute.equal(led.column("reason"), "clip_score_top_fraction"))
    assert pairs_kept.num_rows == math.ceil(0.5 * 12) and cut.num_rows == 12 - pairs_kept.num_rows
    assert min(pairs_kept.column("score_clip").to_pylist()) > max(cut.column("score_clip").to_pylist())
    info = json.loads((tmp_path / "out" / "manifest.json").read_text())
    th = info["extra"]["enrich"]["clip_score"]["thresholds"]
    assert th == [{"key": "clip_score_top_fraction", "column": "score_clip", "op": ">=",
                   "value": min(pairs_kept.column("score_clip").to_pylist()), "source": "pairs"}]
    # what histograms draw: the cutoff line of this source, and the head/language thresholds
    from curation.enrich.checks import enrich_checks

    lines = enrich_checks(load_recipe(recipe), "pairs", info["extra"]["enrich"])
    assert {(c["key"], c["column"]) for c in lines} == {("clip_score_top_fraction", "score_clip"),
                                                        ("min_aesthetic", "score_aesthetic"), ("max_nsfw", "score_nsfw")}
    from manifests.plots import dropping_scores
    from manifests.reader import open_manifest

    m = open_manifest(tmp_path / "out")
    assert "score_clip" in dropping_scores(m)  # the notebook's m.hist() draws it by default
    fig = m.hist("score_clip")
    cut = th[0]["value"]
    assert any(abs(line.get_xdata()[0] - cut) < 1e-9 for ax in fig.axes for line in ax.get_lines())
    # language: the German note goes, English and French stay
    notes = kept.filter(pa.compute.equal(kept.column("source"), "notes"))
    assert sorted(notes.column("lang").to_pylist()) == ["en", "en", "fr"]
    lang_drop = led.filter(pa.compute.equal(led.column("reason"), "language"))
    assert lang_drop.column("lang").to_pylist() == ["de"]
    # min on a head: a threshold between two measured scores drops exactly the rows below it
    photos = kept.filter(pa.compute.equal(kept.column("source"), "photos"))
    scores = np.sort(np.asarray(photos.column("score_aesthetic").to_pylist()))
    mid = float((scores[2] + scores[3]) / 2)
    want = sorted(i for i, s in zip(photos.column("id").to_pylist(), photos.column("score_aesthetic").to_pylist()) if s < mid)
    res2 = run_job(load_recipe(_write_min(tmp_path, models, mid)), tmp_path / "out2", engine="local", quiet=True)
    led2 = _rows(tmp_path / "out2", "dropped")
    gone = led2.filter(pa.compute.equal(led2.column("reason"), "min_aesthetic"))
    gone_photos = sorted(i for i, src in zip(gone.column("id").to_pylist(), gone.column("source").to_pylist()) if src == "photos")
    assert len(want) == 3 and gone_photos == want
    assert res.sources["photos"]["kept"] == 6 and res2.sources["photos"]["kept"] == 3


def _write_min(tmp_path: Path, models: Path, mid: float) -> Path:
    text = _recipe(tmp_path, models).read_text().replace("min: -100", f"min: {mid!r}")
    p = tmp_path / "r2.yaml"
    p.write_text(text)
    return p


@pytest.mark.ray
@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_both_engines_give_identical_output_and_the_model_has_its_own_pool(models, tmp_path, ray_session, family):
    model_corpus(tmp_path / "corpus")
    extra = "dedup: {exact: true, semantic: {enabled: true, eps: 0.001}}\n"
    head = "aesthetic.pt" if family == "clip" else "head32.pt"
    recipe = _recipe(tmp_path, models, extra, family=family, head=head).read_text()
    if family == "siglip":
        recipe = recipe.replace(str(models / "nsfw.pt"), str(models / "head32.pt"))
    (tmp_path / "r.yaml").write_text(recipe)
    r = load_recipe(tmp_path / "r.yaml")
    run_job(r, tmp_path / "local", engine="local", quiet=True)
    res = run_job(r, tmp_path / "ray", engine="ray", workers=2, quiet=True)
    for sub in ("data", "dropped"):
        assert _rows(tmp_path / "ray", sub).equals(_rows(tmp_path / "local", sub)), sub
    a, b = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("local", "ray"))
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    # the stage layout: fused CPU operators, then the model in a pool of its own
    names = [s["name"] for s in res.stages]
    assert names == ["cpu:0", "embed", "cpu:1"]
    embed = res.stages[1]
    assert embed["own"] and embed["ops"] == ["ImageEmbedder"] and embed["pool"] == 1
    assert set(embed["pids"]).isdisjoint(res.stages[0]["pids"]) and set(embed["pids"]).isdisjoint(res.stages[2]["pids"])
    assert "Stage_embed" in res.ray_stats
    assert [s["name"] for s in b["extra"]["engine"]["stages"]] == names
    kept = _rows(tmp_path / "ray")
    assert kept.schema.field("emb_image").type == pa.list_(pa.float16())


@pytest.mark.parametrize("body, field", [
    ("embed: {model: ./nowhere}", "enrich.embed.model"),
    ("embed: {model: ./corpus}", "enrich.embed.model"),  # a folder that is not a model
    ("embed: {model: MODELS/clip}\n  aesthetic: {head: MODELS/head32.pt}", "enrich.aesthetic.head"),
    ("embed: {model: MODELS/clip, device: cuda}", "enrich.embed.device"),
    ("clip_score: {min: 0.2}", "enrich.clip_score"),
    ("embed: {model: MODELS/clip}\n  aesthetic: {head: ./nowhere.pt}", "enrich.aesthetic.head"),
    ("language: {languages: [english]}", "enrich.language.languages"),
])
def test_bad_model_input_is_one_line_exit_2_before_any_work(models, tmp_path, capsys, body, field):
    from curation.enrich.device import cuda_available

    if "cuda" in body and cuda_available():
        pytest.skip("this machine has a GPU")
    model_corpus(tmp_path / "corpus")
    (tmp_path / "r.yaml").write_text("sources:\n  - {name: p, kind: image_text, path: corpus/pairs, format: files}\n"
                                     "enrich:\n  " + body.replace("MODELS", str(models)) + "\n")
    code = cli_main(["curate", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "out"), "--engine", "local", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: {field}") or f"{field}:" in err, err
    assert not (tmp_path / "out" / ".staging").exists(), "nothing was written before the check"


def test_open_clip_checkpoints_load_without_the_open_clip_package(models, tmp_path):
    """A transformers CLIP written as an open_clip checkpoint embeds identically once converted back."""
    from tests.enrich_fixtures import to_open_clip

    oc = to_open_clip(models / "clip", tmp_path / "openclip")
    t = _batch(tmp_path, 6)
    ref = _embedder(models, "clip", 4)(t)
    r = parse_recipe({"sources": [{"name": "a", "kind": "image_text", "path": str(tmp_path), "format": "files"}],
                      "enrich": {"embed": {"model": str(oc), "batch_size": 4}}}, check_paths=False)
    from curation.enrich.clip import ImageEmbedder

    ImageEmbedder.check(r.enrich["embed"], r, "enrich.embed", 0)
    op = ImageEmbedder(r.enrich["embed"], r)
    op.setup()
    assert op.info.format == "open_clip" and op.info.embed_dim == 16
    got = op(t)
    assert np.allclose(np.asarray(got.column("score_clip").to_pylist()), np.asarray(ref.column("score_clip").to_pylist()),
                       atol=1e-6)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (oc / f).unlink()
    with pytest.raises(Exception, match="no tokenizer files"):
        ImageEmbedder.check(r.enrich["embed"], r, "enrich.embed", 0)


def test_the_model_reads_the_chains_one_decode(models, tmp_path):
    """With embed, analyzers, semantic and image dedup in the chain, every image is still read and decoded once."""
    from media import counters

    model_corpus(tmp_path / "corpus")
    (tmp_path / "r.yaml").write_text(
        "sources:\n  - {name: pairs, kind: image_text, path: corpus/pairs, format: files, chunk_size: 5}\n"
        "  - {name: photos, kind: images, path: corpus/photos, chunk_size: 4}\n"
        "filters:\n  image: {min_side: 8, max_low_info: null}\n"
        f"enrich:\n  embed: {{model: {models / 'clip'}, batch_size: 4}}\n"
        "dedup: {exact: true, image: {}, semantic: {enabled: true}}\n")
    counters.reset()
    with counters.counting() as counts:
        res = run_job(load_recipe(tmp_path / "r.yaml"), tmp_path / "out", engine="local", quiet=True)
    assert counts == {"read.image": 18, "decode.image": 18}, counts
    assert res.read == 18
    kept = _rows(tmp_path / "out")
    assert kept.column("emb_image").null_count == 0 and "_pix_embed" not in kept.column_names


@pytest.mark.slow
def test_a_model_job_killed_mid_run_resumes_to_the_same_manifest(models, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    model_corpus(tmp_path / "corpus", n_pairs=24)
    text = _recipe(tmp_path, models, "dedup: {exact: true, semantic: {enabled: true, eps: 0.001}}\n").read_text()
    (tmp_path / "r.yaml").write_text(text.replace("chunk_size: 5", "chunk_size: 1"))
    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "manifests.cli", "curate", str(tmp_path / "r.yaml"), "--engine", "local", "--quiet"]
    out = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out", str(out)], cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and len(list((out / ".staging").glob("chunk-*.json"))) < 4 and proc.poll() is None:
            time.sleep(0.01)
        assert proc.poll() is None, "the job finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "manifest.json").exists()
    done = subprocess.run(cmd + ["--out", str(out)], cwd=repo, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "resumed after" in done.stdout
    run_job(load_recipe(tmp_path / "r.yaml"), tmp_path / "clean", engine="local", quiet=True)
    for sub in ("data", "dropped"):
        assert _rows(out, sub).equals(_rows(tmp_path / "clean", sub)), sub


@pytest.mark.ray
@pytest.mark.parametrize("engine", ["local", "ray"])
def test_weights_that_fail_to_load_in_a_worker_are_one_line(models, tmp_path, capsys, engine, request):
    import shutil

    if engine == "ray":
        request.getfixturevalue("ray_session")

    broken = tmp_path / "broken"
    shutil.copytree(models / "clip", broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])  # passes the driver's checks, fails to load
    model_corpus(tmp_path / "corpus")
    (tmp_path / "r.yaml").write_text("sources:\n  - {name: p, kind: image_text, path: corpus/pairs, format: files}\n"
                                     f"enrich:\n  embed: {{model: {broken}}}\n")
    code = cli_main(["curate", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "out"), "--engine", engine,
                     "--workers", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "enrich.embed.model:" in err and "cannot be loaded" in err
