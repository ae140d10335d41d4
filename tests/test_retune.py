"""Re-tuning from stored scores gives exactly what a fresh curate with the new thresholds gives, both ways."""
from __future__ import annotations

import copy
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml

from curation.demo import build_corpus, recipe_text
from curation.engine.job import run_job
from curation.recipe import load_recipe
from curation.retune import RETUNABLE, retune, threshold_checks
from manifests import open_manifest, validate
from manifests.cli import main as cli_main
from manifests.errors import RecipeError

#: loosened: the 16x16 photo, the flat photo and the still video come back; tightened: short notes and captions go
NEW_FILTERS = {
    "image": {"min_side": 8, "max_low_info": 1.0},
    "text": {"min_chars": 200},
    "image_text": {"min_chars": 40},
    "video": {"min_motion": None},
}


def _recipe(root: Path, filters: dict | None = None, dedup: bool = True, tokens: bool = True) -> Path:
    data = yaml.safe_load(recipe_text())
    data.pop("mixture")
    if not dedup:
        data.pop("dedup")
    if not tokens:
        data.pop("tokens")
    for section, fields in (filters or {}).items():
        data["filters"].setdefault(section, {}).update(fields)
    for s in data["sources"]:
        s["chunk_size"] = 4  # several chunks per source: retune must not depend on chunking
    name = "new" if filters else "old"
    path = root / f"{name}-{'d' if dedup else 'n'}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("retune")
    build_corpus(root / "corpus")
    return root


def _sorted(t: pa.Table) -> pa.Table:
    return t.sort_by("id")


def _assert_same_rows(got, want, brought_back: set[str]) -> None:
    """Kept rows and ledger equal, column by column; sig_* of rows that came back are null by the rule."""
    gk, wk = _sorted(got.table()), _sorted(want.table())
    assert gk.column("id").to_pylist() == wk.column("id").to_pylist()
    assert gk.schema.names == wk.schema.names
    back = pc.is_in(gk.column("id"), pa.array(sorted(brought_back), pa.string()))
    for name in gk.schema.names:
        if name.startswith("sig_"):
            assert pc.all(pc.is_null(gk.column(name).filter(back))).as_py() is not False
            assert gk.column(name).filter(pc.invert(back)).equals(wk.column(name).filter(pc.invert(back))), name
        else:
            assert gk.column(name).equals(wk.column(name)), name
    gl, wl = _sorted(got.ledger()), _sorted(want.ledger())
    assert gl.schema.names == wl.schema.names
    for name in gl.schema.names:
        if name == "uri":  # for table sources curate's uri is FILE:LINE; retune writes the media path
            continue
        assert gl.column(name).to_pylist() == wl.column(name).to_pylist(), name
    assert got.info["sources"].keys() == want.info["sources"].keys()
    for n in got.info["sources"]:
        assert {k: got.info["sources"][n][k] for k in ("read", "kept", "dropped")} == \
               {k: want.info["sources"][n][k] for k in ("read", "kept", "dropped")}
    assert got.info["drops"] == want.info["drops"]
    assert got.info["totals"]["tokens"] == want.info["totals"]["tokens"]


@pytest.mark.parametrize("dedup", [False, True], ids=["no-dedup", "dedup"])
def test_retune_equals_fresh_curate_both_ways(corpus, tmp_path, dedup):
    old = run_job(load_recipe(_recipe(corpus, dedup=dedup)), tmp_path / "old", engine="local", quiet=True)
    fresh = run_job(load_recipe(_recipe(corpus, NEW_FILTERS, dedup=dedup)), tmp_path / "fresh", engine="local", quiet=True)
    r = retune(open_manifest(old.out), filters=NEW_FILTERS)
    assert r.brought_back and r.newly_dropped, "the change loosens and tightens"
    back = {s: n for s, st in r.sources.items() for n in [sum(st["brought_back"].values())] if n}
    assert set(back) == {"photos", "clips"} and back["photos"] == 2
    assert r.total("unscored") == 8, "read/decode drops stay dropped, and are counted"
    assert r.total("undeduped") == (3 if dedup else 0)
    out = r.write(tmp_path / "retuned")
    validate(out.path)
    _assert_same_rows(out, open_manifest(fresh.out), set(r.brought_back))
    assert out.info["extra"]["retune"]["brought_back"] == 3
    assert "job" not in out.info["extra"], "the retuned manifest is not the old recipe's job"


@pytest.mark.ray
def test_retune_equals_fresh_curate_on_ray(corpus, tmp_path, ray_session):
    old = run_job(load_recipe(_recipe(corpus)), tmp_path / "old", engine="ray", workers=2, quiet=True)
    fresh = run_job(load_recipe(_recipe(corpus, NEW_FILTERS)), tmp_path / "fresh", engine="ray", workers=2, quiet=True)
    r = retune(open_manifest(old.out), filters=NEW_FILTERS)
    out = r.write(tmp_path / "retuned")
    _assert_same_rows(out, open_manifest(fresh.out), set(r.brought_back))


def test_round_trip_restores_the_original(corpus, tmp_path):
    """Without dedup, tightening then loosening back is the identity (with dedup, a twin dropped by the
    tighter filter comes back as itself: see the dedup rule)."""
    old = run_job(load_recipe(_recipe(corpus, dedup=False)), tmp_path / "old", engine="local", quiet=True)
    tight = retune(open_manifest(old.out), filters={"image": {"min_side": 250}}).write(tmp_path / "tight")
    assert tight.num_rows < open_manifest(old.out).num_rows
    # loosening back brings every row back (their scores were kept in the ledger)
    back = retune(tight, filters={"image": {"min_side": 32}}).write(tmp_path / "back")
    a, b = open_manifest(old.out), back
    assert sorted(a.table().column("id").to_pylist()) == sorted(b.table().column("id").to_pylist())
    assert sorted(a.ledger().column("id").to_pylist()) == sorted(b.ledger().column("id").to_pylist())
    assert a.table().sort_by("id").equals(b.table().sort_by("id"))
    assert a.info["drops"] == b.info["drops"]


def test_dedup_rule_orphaned_clusters_keep_their_twins(corpus, tmp_path):
    old = open_manifest(run_job(load_recipe(_recipe(corpus)), tmp_path / "old", engine="local", quiet=True).out)
    led = old.ledger()
    dups = led.filter(pc.equal(led.column("reason"), "duplicate"))
    photo_dup = dups.filter(pc.equal(dups.column("source"), "photos")).to_pylist()[0]
    rep = photo_dup["dup_cluster"]
    kept = old.table().to_pylist()
    rep_row = next(r for r in kept if r["id"] == rep)
    # tighten exactly past the representative's sharpness: it leaves, its twins stay resolved as recorded
    r = retune(old, filters={"image": {"min_sharpness": rep_row["score_sharpness"] + 1e-6}})
    assert rep in r.newly_dropped
    assert r.total("orphaned") >= 1
    assert photo_dup["id"] not in {x for x in r.kept.column("id").to_pylist()}
    assert "lost their kept row" in repr(r)
    # the ledger keeps the twin with its recorded cluster
    twin = r.ledger.filter(pc.equal(r.ledger.column("id"), photo_dup["id"])).to_pylist()[0]
    assert twin["stage"] == "dedup" and twin["dup_cluster"] == rep


def test_refuses_measurement_fields_and_other_sections(corpus, tmp_path, capsys):
    old = run_job(load_recipe(_recipe(corpus, dedup=False, tokens=False)), tmp_path / "old", engine="local", quiet=True)
    with pytest.raises(RecipeError, match="filters.image.analysis_side"):
        retune(open_manifest(old.out), filters={"image": {"analysis_side": 64}})
    assert cli_main(["retune", str(old.out), "--set", "filters.video.sample_frames=4"]) == 2
    assert "filters.video.sample_frames" in capsys.readouterr().err
    assert cli_main(["retune", str(old.out), "--set", "dedup.exact=false"]) == 2
    assert cli_main(["retune", str(old.out), "--set", "filters.image.min_side"]) == 2
    assert "min_side" in RETUNABLE["image"] and "min_motion" in RETUNABLE["video"]


def test_cli_writes_the_retuned_manifest(corpus, tmp_path, capsys):
    old = run_job(load_recipe(_recipe(corpus, dedup=False)), tmp_path / "old", engine="local", quiet=True)
    assert cli_main(["retune", str(old.out), "--set", "filters.image.min_side=8", "--set", "filters.video.min_motion=null",
                     "--out", str(tmp_path / "new")]) == 0
    out = capsys.readouterr().out
    assert "back from min_side 1" in out and "back from min_motion 1" in out
    assert "stay dropped" in out and "manifest:" in out
    m = open_manifest(tmp_path / "new")
    validate(m.path)
    assert m.num_rows == open_manifest(old.out).num_rows + 2
    assert m.info["recipe"]["filters"]["image"]["min_side"] == 8
    assert cli_main(["retune", str(old.out), "--set", "filters.image.min_side=8", "--out", str(tmp_path / "new")]) == 2


def test_v1_ledger_retunes_tighten_only(corpus, tmp_path):
    """An older manifest (ledger v1: no scores of dropped rows) still opens and re-tunes; filter drops stand."""
    import json

    old = run_job(load_recipe(_recipe(corpus, dedup=False, tokens=False)), tmp_path / "old", engine="local", quiet=True)
    m = open_manifest(old.out)
    from manifests import ManifestWriter
    from manifests.schema import LEDGER_SCHEMA

    w = ManifestWriter(tmp_path / "v1", m.schema, ledger=LEDGER_SCHEMA)
    w.write(m.table())
    w.write_dropped(m.ledger())
    w.commit(recipe=m.info["recipe"], sources={n: {"read": s["read"]} for n, s in m.info["sources"].items()})
    info = json.loads((tmp_path / "v1" / "manifest.json").read_text())
    del info["ledger_version"], info["ledger_arrow_schema"]
    (tmp_path / "v1" / "manifest.json").write_text(json.dumps(info))
    v1 = open_manifest(tmp_path / "v1")
    assert v1.ledger_version == 1 and v1.ledger().schema.names == LEDGER_SCHEMA.names
    validate(v1.path)
    r = retune(v1, filters={"image": {"min_side": 8, "max_aspect_ratio": 1.2}})
    assert not r.brought_back and r.newly_dropped
    assert r.sources["photos"]["not_rejudged"] >= 2


def test_threshold_checks_are_the_recipes(corpus):
    rec = load_recipe(_recipe(corpus))
    checks = {(c["column"], c["op"]): c["value"] for c in threshold_checks(rec, "images")}
    assert checks[("score_min_side", ">=")] == 32 and checks[("score_low_info", "<=")] == 0.9
    video = {(c["column"], c["op"]): c["value"] for c in threshold_checks(rec, "video")}
    assert video[("score_motion", ">=")] == 1.0
    text = [c for c in threshold_checks(rec, "text") if c["column"] == "score_top_2gram"]
    assert text and text[0]["min_words"] == 50
    assert copy.deepcopy(checks) == checks


def test_model_operator_verdicts_stand(corpus, tmp_path):
    """A row a model operator dropped at stage filter (a top-fraction cutoff) is not brought back by retune."""
    from manifests import ManifestWriter

    old = open_manifest(run_job(load_recipe(_recipe(corpus, dedup=False)), tmp_path / "old", engine="local", quiet=True).out)
    led = old.ledger()
    tiny = pc.equal(led.column("reason"), "min_side")
    reason = pc.if_else(tiny, pa.scalar("clip_score_top_fraction"), led.column("reason"))
    led = led.set_column(led.column_names.index("reason"), "reason", reason)
    w = ManifestWriter(tmp_path / "relabelled", old.schema)
    w.write(old.table())
    w.write_dropped(led)
    w.commit(recipe=old.info["recipe"], sources={n: {"read": s["read"]} for n, s in old.info["sources"].items()})
    r = retune(open_manifest(tmp_path / "relabelled"), filters={"image": {"min_side": 8, "max_low_info": 1.0}})
    assert sum(r.sources["photos"]["brought_back"].values()) == 1, "only the flat photo: the relabelled row stays"
    kept = r.ledger.filter(pc.equal(r.ledger.column("reason"), "clip_score_top_fraction"))
    assert kept.num_rows == 1


def test_curate_with_a_mixture_prints_both_share_tables(tmp_path, capsys):
    import json

    rows = [{"id": f"a{i}", "text": f"alpha document number {i} " * 6} for i in range(12)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({**r, "id": "b" + r["id"]}) for r in rows))
    (tmp_path / "r.yaml").write_text("""\
sources:
  - {name: alpha, kind: text, path: a.jsonl, text_column: text, id_column: id}
  - {name: bravo, kind: text, path: b.jsonl, text_column: text, id_column: id}
mixture: {seed: 0, by: samples, total: 16, weights: {alpha: 0.75, bravo: 0.25}}
""")
    assert cli_main(["curate", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "out"), "--engine", "local", "--quiet"]) == 0
    out = capsys.readouterr().out
    by_source = out.split("by source:")[1].split("by modality:")[0]
    assert "alpha" in by_source and "75.0%" in by_source and "bravo" in by_source
    assert "text" in out.split("by modality:")[1] and "100.0%" in out.split("by modality:")[1]
