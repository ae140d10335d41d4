"""Curation on generated fixtures: recipes, readers, scores, bad inputs, determinism, resume."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from curation import synth
from curation.engine.job import run_job
from curation.filters.text import text_scores
from curation.recipe import load_recipe, parse_recipe
from manifests.cli import main as cli_main
from manifests.errors import RecipeError
from manifests.reader import open_manifest
from manifests.schema import make_id
from manifests.validate import validate

REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _rows(out: Path) -> pa.Table:
    return pads.dataset(out / "data", format="parquet").to_table()


def _ledger(out: Path) -> pa.Table:
    return open_manifest(out).ledger()


# --------------------------------------------------------------------------- recipes


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    (tmp_path / "data" / "imgs").mkdir(parents=True)
    for i in range(3):
        synth.photo_like(i, (80, 60)).save(tmp_path / "data" / "imgs" / f"{i}.png")
    return tmp_path


@pytest.mark.parametrize(
    "body, message",
    [
        ("sources:\n  - {name: a, kind: images, path: data/imgs, colour: red}\n", "sources[0].colour: unknown key"),
        ("sources:\n  - {name: a, kind: pictures, path: data/imgs}\n", "sources[0].kind:"),
        ("sources:\n  - {name: a, kind: images, path: data/imgs}\nfilters:\n  image: {min_side: big}\n",
         "filters.image.min_side:"),
        ("sources:\n  - {name: a, kind: images, path: data/nope}\n", "sources[0].path: 'data/nope' does not exist"),
        ("sources:\n  - {name: a, kind: images, path: data/imgs}\n  - {name: b, kind: document, path: 'data/docs/*.pdf'}\n",
         "sources[1].path: no files match 'data/docs/*.pdf'"),
        ("sources:\n  - {name: a, kind: images, path: data/imgs}\n  - {name: a, kind: images, path: data/imgs}\n",
         "duplicate source name 'a'"),
        ("seed: 0\n", "sources: Field required"),
        ("sources: [\n", "not valid YAML"),
        ("sources:\n  - {name: a, kind: images, path: data/imgs}\nspeed: 3\n", "speed: unknown key"),
    ],
)
def test_bad_recipes_are_one_line_exit_2(tiny, capsys, body, message):
    recipe = _write(tiny / "r.yaml", body)
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe)
    assert message in str(exc.value)
    code = cli_main(["curate", str(recipe), "--out", str(tiny / "out"), "--engine", "local"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tiny / "out").exists()  # nothing was started


@pytest.mark.parametrize("name", ["bad.parquet", "bad.arrow", "dangling.jsonl", "saved_dataset"])
def test_tables_that_cannot_be_planned_are_one_line_exit_2(tmp_path, capsys, name):
    table = tmp_path / name
    if name.startswith("dangling"):
        table.symlink_to(tmp_path / "nowhere.jsonl")
    elif name == "saved_dataset":
        table.mkdir()
        (table / "state.json").write_text("{truncated")
    else:
        table.write_bytes(b"not a table at all")
    recipe = _write(tmp_path / "r.yaml", f"sources:\n  - {{name: t, kind: text, path: {name}, text_column: text}}\n")
    code = cli_main(["curate", str(recipe), "--out", str(tmp_path / "out"), "--engine", "local", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and f"sources[0].path: cannot read {table}" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_relative_paths_resolve_against_recipe_folder(tiny, monkeypatch):
    recipe = _write(tiny / "r.yaml", "sources:\n  - {name: a, kind: images, path: data/imgs}\n")
    monkeypatch.chdir("/")
    r = load_recipe(recipe)
    assert r.resolved()["sources"][0]["path"] == str(tiny / "data" / "imgs")


def test_recipe_defaults_are_validated_models(tiny):
    r = parse_recipe({"sources": [{"name": "a", "kind": "images", "path": str(tiny / "data/imgs")}]})
    assert r.filters.image.min_side == 32 and r.filters.text.max_dup_ngram_frac[10] == 0.10
    assert r.sources[0].chunk == 64


# --------------------------------------------------------------------------- text scores


def test_text_scores_by_hand():
    texts = pa.array([
        "a b c\na b c\nx y",  # two identical lines
        "one two one two one two",  # 2-gram "one two" 3 times
        None,
        "Hello, world!!",
    ])
    s = text_scores(texts, [2], [2])
    assert s["score_chars"].tolist() == [15, 23, 0, 14]
    assert s["score_words"].tolist() == [8, 6, 0, 2]
    # lines: 3 non-empty, one repeats
    assert s["score_dup_lines"][0] == pytest.approx(1 / 3)
    assert s["score_dup_line_chars"][0] == pytest.approx(5 / 13)
    # "one two" x3: 3 * 6 chars over 18 word chars
    assert s["score_top_2gram"][1] == pytest.approx(1.0)
    # every word of text 1 is covered by a repeated 2-gram
    assert s["score_dup_2gram"][1] == pytest.approx(1.0)
    assert s["score_dup_2gram"][0] == pytest.approx(6 / 8)  # "a b", "b c" repeat; x y does not
    # non-alphanumeric: ", !!" = 3 symbols over 13 non-space characters
    assert s["score_non_alnum"][3] == pytest.approx(3 / 13)
    assert np.isnan(s["score_top_2gram"][2])


# --------------------------------------------------------------------------- bad inputs


def _bad_recipe(root: Path) -> Path:
    return _write(root / "recipe.yaml", """\
sources:
  - {name: photos, kind: images, path: bad/images}
  - {name: clips, kind: video, path: bad/videos}
  - {name: docs, kind: document, path: bad/docs}
  - {name: notes, kind: text, path: bad/text}
  - {name: pairs, kind: image_text, path: pairs.jsonl, image_column: image, text_column: text}
filters:
  image: {min_side: 8}
  text: {min_chars: 5}
""")


def test_every_bad_input_is_in_the_ledger(tmp_path):
    expect = synth.write_bad_inputs(tmp_path / "bad")
    lines = [json.dumps({"image": "bad/images/good.jpg", "text": "a fine caption"}),
             json.dumps({"image": "bad/images/noise.jpg", "text": "caption of a broken image"}),
             "{not json",
             b'{"image": "bad/images/good.jpg", "text": "caf\xe9"}'.decode("latin-1"),
             json.dumps({"image": "bad/images/good.jpg", "text": "a fine caption"})]  # identical row
    (tmp_path / "pairs.jsonl").write_bytes("\n".join(lines[:3]).encode() + b"\n" +
                                           b'{"image": "bad/images/good.jpg", "text": "caf\xe9"}\n' +
                                           lines[4].encode() + b"\n")
    out = tmp_path / "out"
    result = run_job(load_recipe(_bad_recipe(tmp_path)), out, engine="local", quiet=True)
    info = validate(out, check_media=True)
    assert info["ok"]
    ledger = _ledger(out).to_pylist()
    by_uri = {r["uri"]: (r["stage"], r["reason"]) for r in ledger}
    for rel, want in expect.items():
        assert by_uri.get(str(tmp_path / "bad" / rel)) == want, rel
    pairs = {r["uri"].rsplit(":", 1)[1]: (r["stage"], r["reason"]) for r in ledger if r["source"] == "pairs"}
    assert pairs == {"2": ("decode", "undecodable"), "3": ("read", "invalid_json"), "4": ("read", "invalid_utf8")}
    m = open_manifest(out)
    for name, src in m.info["sources"].items():
        assert src["read"] == src["kept"] + src["dropped"], name
    assert result.sources["photos"]["kept"] == 1 and result.sources["clips"]["kept"] == 1
    # identical table rows get distinct, stable ids: the repeat is keyed "#1"
    rows = _rows(out).to_pylist()
    pair_ids = [r["id"] for r in rows if r["source"] == "pairs"]
    assert len(pair_ids) == 2 and len(set(pair_ids)) == 2
    from curation.readers.keys import hex_keys, table_hash  # the content hash of the source row

    key = hex_keys(table_hash(pa.Table.from_pylist([{"image": "bad/images/good.jpg", "text": "a fine caption"}])))[0].as_py()
    assert pair_ids == [make_id("pairs", key), make_id("pairs", key + "#1")]
    # file ids come from the path relative to the source root, never the position
    photo = next(r for r in rows if r["source"] == "photos")
    assert photo["id"] == make_id("photos", "good.jpg")
    assert photo["media"][0]["width"] == 64 and photo["score_min_side"] == 48


# --------------------------------------------------------------------------- sources and scores


def test_all_kinds_scores_and_media(tmp_path):
    root = tmp_path / "c"
    (root / "img").mkdir(parents=True)
    synth.photo_like(1, (200, 150)).save(root / "img" / "sharp.jpg")
    synth.blurred(synth.photo_like(1, (200, 150)), 6).save(root / "img" / "soft.jpg")
    synth.flat((10, 200, 30), (120, 80)).save(root / "img" / "flat.png")
    synth.photo_like(2, (600, 60)).save(root / "img" / "wide.png")
    synth.write_text_pdf(root / "doc.pdf", ["first page text", "second page", ""])
    synth.write_image_pdf(root / "scan.pdf", [synth.text_page("scanned words", (300, 400), 14)])
    synth.text_page("document image text", (400, 500), 18).save(root / "page.png")
    (root / "page.txt").write_text("document image text")
    (root / "vid").mkdir()
    synth.write_video(root / "vid" / "moving.mp4", synth.moving_frames(16, (96, 64), seed=1), fps=8)
    synth.write_video(root / "vid" / "still.mkv", synth.moving_frames(16, (96, 64), seed=2, static=True), fps=8)
    hf = pa.table({"image": pa.array([{"bytes": (root / "img" / "sharp.jpg").read_bytes(), "path": "sharp.jpg"}],
                                     pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                   "question": ["What is shown?"], "answer": ["Shapes."],
                   "conv": [[{"from": "human", "value": "What is shown?"}, {"from": "gpt", "value": "Shapes."}]]})
    import pyarrow.parquet as pq

    pq.write_table(hf, root / "qa.parquet")
    recipe = _write(tmp_path / "r.yaml", """\
sources:
  - {name: im, kind: images, path: c/img}
  - {name: qa, kind: image_text, path: c/qa.parquet, image_column: image, turns_column: conv}
  - {name: docs, kind: document, path: ["c/*.pdf", c/page.png], dpi: 144}
  - {name: vids, kind: video, path: c/vid}
filters:
  image: {min_side: 32, max_aspect_ratio: 6, max_low_info: 0.95, min_sharpness: 20}
  video: {min_motion: 3.0}
tokens: {strategy: smolvlm-256m}
""")
    out = tmp_path / "out"
    run_job(load_recipe(recipe), out, engine="local", quiet=True)
    rows = {r["meta"] and json.loads(r["meta"]).get("path") or r["source"]: r for r in _rows(out).to_pylist()}
    ledger = {Path(r["uri"].split(":")[0]).name: (r["stage"], r["reason"]) for r in _ledger(out).to_pylist()}
    assert ledger["soft.jpg"] == ("filter", "min_sharpness")
    assert ledger["flat.png"] == ("filter", "max_low_info")
    assert ledger["wide.png"] == ("filter", "max_aspect_ratio")
    assert ledger["still.mkv"] == ("filter", "min_motion")
    assert rows["sharp.jpg"]["score_sharpness"] > 20 and rows["sharp.jpg"]["media"][0]["format"] == "JPEG"
    doc = rows["doc.pdf"]
    assert doc["score_pages"] == 3 and [m["page"] for m in doc["media"]] == [0, 1, 2]
    assert doc["media"][0]["width"] == 1224 and doc["media"][0]["dpi"] == pytest.approx(144)
    assert doc["text"].split("\f")[0].strip() == "first page text"
    assert doc["score_textless_pages"] == pytest.approx(1 / 3)  # the empty third page
    assert rows["scan.pdf"]["score_textless_pages"] == 1.0
    assert rows["page.png"]["text"] == "document image text" and rows["page.png"]["score_pages"] == 1
    qa = rows["qa"]
    assert qa["media"][0]["bytes"] is not None and qa["media"][0]["uri"] is None
    assert [t["role"] for t in qa["turns"]] == ["user", "assistant"] and qa["score_words"] == 4
    assert json.loads(qa["meta"]) == {"answer": "Shapes.", "question": "What is shown?"}
    vid = rows["moving.mp4"]["media"][0]
    assert (vid["width"], vid["height"], vid["frames"], vid["rotation"]) == (96, 64, 16, 0)
    assert rows["moving.mp4"]["score_motion"] > 3.0
    # token counts come from the sizes the analyzers recorded (tokenization package)
    assert rows["sharp.jpg"]["tokens_visual"] > 0 and rows["sharp.jpg"]["tokens"] >= rows["sharp.jpg"]["tokens_visual"]
    assert qa["tokens_text"] > 0
    assert open_manifest(out).info["totals"]["tokens"]["tokens"] > 0


def test_text_files_hf_saved_dataset_and_limit(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"text": [f"row number {i} with enough words to pass" for i in range(30)],
                                     "lang": ["en"] * 30})
    ds.save_to_disk(str(tmp_path / "saved"))
    recipe = _write(tmp_path / "r.yaml", """\
sources:
  - {name: saved, kind: text, path: saved, chunk_size: 7, limit: 20}
""")
    out = tmp_path / "out"
    run_job(load_recipe(recipe), out, engine="local", quiet=True)
    rows = _rows(out).to_pylist()
    assert [r["text"] for r in rows] == [f"row number {i} with enough words to pass" for i in range(20)]
    assert json.loads(rows[0]["meta"]) == {"lang": "en"}


def test_chunking_never_changes_the_result(tmp_path):
    synth.write_bad_inputs(tmp_path / "bad")
    lines = "\n".join(json.dumps({"text": f"sentence {i % 5} of a longer text body"}) for i in range(40))
    (tmp_path / "t.jsonl").write_text(lines + "\n")
    outs = []
    for size in (1, 3, 100):
        recipe = _write(tmp_path / f"r{size}.yaml", f"""\
sources:
  - {{name: photos, kind: images, path: bad/images, chunk_size: {size}}}
  - {{name: notes, kind: text, path: t.jsonl, chunk_size: {size}}}
output: {{shard_rows: 7}}
""")
        out = tmp_path / f"out{size}"
        run_job(load_recipe(recipe), out, engine="local", quiet=True)
        outs.append((_rows(out), _ledger(out), sorted(p.name for p in (out / "data").iterdir())))
    for rows, ledger, shards in outs[1:]:
        assert rows.equals(outs[0][0]) and ledger.equals(outs[0][1]) and shards == outs[0][2]
    assert len(outs[0][2]) > 1  # several shards of 7 rows


# --------------------------------------------------------------------------- engines


@pytest.mark.ray
def test_local_and_ray_give_identical_manifests(tmp_path, ray_session):
    from curation.demo import build_corpus

    build_corpus(tmp_path / "corpus")
    recipe = _write(tmp_path / "r.yaml", """\
sources:
  - {name: photos, kind: images, path: corpus/images, chunk_size: 4}
  - {name: pairs, kind: image_text, path: corpus/pairs/captions.jsonl, image_column: image, text_column: text, chunk_size: 5}
  - {name: docs, kind: document, path: corpus/docs, chunk_size: 3}
  - {name: notes, kind: text, path: corpus/text/notes.jsonl, text_column: text, chunk_size: 8}
  - {name: clips, kind: video, path: corpus/videos, chunk_size: 2}
filters:
  video: {min_motion: 1.0}
dedup: {exact: true}
""")
    r = load_recipe(recipe)
    run_job(r, tmp_path / "local", engine="local", quiet=True)
    res = run_job(r, tmp_path / "ray", engine="ray", workers=2, quiet=True)
    assert res.workers == 2
    assert _rows(tmp_path / "ray").equals(_rows(tmp_path / "local"))
    assert _ledger(tmp_path / "ray").equals(_ledger(tmp_path / "local"))
    a, b = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("local", "ray"))
    assert a["recipe_hash"] == b["recipe_hash"] and a["sources"] == b["sources"]
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    validate(tmp_path / "ray")
    # dedup resolves the same on both engines (Ray tasks vs in-process)
    reasons = {(Path(r["uri"]).name, r["stage"]) for r in _ledger(tmp_path / "ray").to_pylist()}
    assert ("photo_03_copy.jpg", "dedup") in reasons and ("pan.avi", "dedup") in reasons


@pytest.mark.ray
@pytest.mark.parametrize("engine", ["local", "ray"])
def test_worker_user_errors_stay_one_line(tiny, capsys, ray_session, engine):
    (tiny / "tok.json").write_text('{"not": "a tokenizer"}')  # exists, so only the worker's setup finds it bad
    recipe = _write(tiny / "r.yaml", "sources:\n  - {name: a, kind: images, path: data/imgs}\n"
                                     "tokens: {strategy: smolvlm-256m, tokenizer: ./tok.json}\n")
    code = cli_main(["curate", str(recipe), "--out", str(tiny / "out"), "--engine", engine, "--workers", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "tok.json is not a valid tokenizer.json" in err and "Traceback" not in err


def test_rerun_is_a_no_op_and_other_manifests_are_protected(tiny, capsys):
    recipe = _write(tiny / "r.yaml", "sources:\n  - {name: a, kind: images, path: data/imgs}\n")
    out = tiny / "out"
    assert cli_main(["curate", str(recipe), "--out", str(out), "--engine", "local", "--quiet"]) == 0
    first = (out / "manifest.json").read_text()
    assert cli_main(["curate", str(recipe), "--out", str(out), "--engine", "local", "--quiet"]) == 0
    assert "already complete" in capsys.readouterr().out
    assert (out / "manifest.json").read_text() == first
    other = _write(tiny / "r2.yaml", "seed: 1\nsources:\n  - {name: a, kind: images, path: data/imgs}\n")
    assert cli_main(["curate", str(other), "--out", str(out), "--engine", "local"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli_main(["curate", str(other), "--out", str(out), "--engine", "local", "--overwrite", "--quiet"]) == 0


def test_kill_and_resume(tmp_path):
    """SIGKILL mid-job leaves no manifest; rerunning the same command ends with the uninterrupted result."""
    img = tmp_path / "imgs"
    img.mkdir()
    for i in range(60):
        synth.photo_like(i, (480, 360)).save(img / f"{i:03d}.png")
    recipe = _write(tmp_path / "r.yaml", "sources:\n  - {name: a, kind: images, path: imgs, chunk_size: 1}\n"
                                         "output: {shard_rows: 16}\n")
    cmd = [sys.executable, "-m", "manifests.cli", "curate", str(recipe), "--engine", "local", "--quiet"]
    out = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out", str(out)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staging = out / ".staging"
    deadline = time.time() + 120
    try:
        while time.time() < deadline and len(list(staging.glob("chunk-*.json"))) < 5:
            if proc.poll() is not None:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the job finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    finished = len(list(staging.glob("chunk-*.json")))
    assert 5 <= finished < 60
    assert not (out / "manifest.json").exists()  # never a partial manifest
    done = subprocess.run(cmd + ["--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resumed after {finished} finished chunks" in done.stdout
    clean = tmp_path / "clean"
    run_job(load_recipe(recipe), clean, engine="local", quiet=True)
    assert _rows(out).equals(_rows(clean))
    a, b = (json.loads((d / "manifest.json").read_text()) for d in (out, clean))
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    assert not (out / ".staging").exists()
    validate(out)


@pytest.mark.slow
@pytest.mark.ray
def test_demo_end_to_end(tmp_path, ray_session, capsys):
    assert cli_main(["demo", "--out", str(tmp_path / "demo"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "manifest:" in printed and "ray engine" in printed
    m = open_manifest(tmp_path / "demo" / "manifest")
    validate(tmp_path / "demo" / "manifest")
    reasons = {(Path(r["uri"].split(":")[0]).name, r["reason"]) for r in m.ledger().to_pylist()}
    for want in [("truncated.jpg", "truncated"), ("empty.png", "zero_bytes"), ("noise.jpg", "undecodable"),
                 ("tiny.png", "min_side"), ("flat.png", "max_low_info"), ("broken.pdf", "undecodable"),
                 ("locked.pdf", "encrypted"), ("still.mp4", "min_motion"), ("broken.mp4", "undecodable")]:
        assert want in reasons, want
    assert ("photo_03_copy.jpg", "duplicate") in reasons and ("pan.avi", "duplicate") in reasons
    assert (m.path.parent / "mixture" / "manifest.json").is_file(), "the demo also builds its token-weighted mixture"
    assert set(m.info["totals"]["by_modality"]) == {"image", "image_text", "document", "text", "video"}


def test_recipe_travels_to_ray_workers_unchanged(tiny):
    """Workers re-validate the recipe from JSON: a null (disabled) threshold must stay null."""
    from curation.engine.ray_engine import recipe_json

    r = parse_recipe({"sources": [{"name": "a", "kind": "images", "path": "data/imgs"}],
                      "filters": {"image": {"min_side": None, "max_low_info": None}}, "dedup": {"exact": True},
                      "tokens": {"strategy": "smolvlm-256m"}}, base_dir=tiny)
    again = parse_recipe(json.loads(recipe_json(r)), tiny, check_paths=False)
    assert again.filters.image.min_side is None and again.filters.image.max_low_info is None
    assert again.fingerprint() == r.fingerprint()
