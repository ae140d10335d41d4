"""Inspection on ../shared/realdata: retune equals a fresh curate both ways; clusters() and hist() on real rows."""
from __future__ import annotations

from pathlib import Path

import pytest

from curation.engine.job import run_job
from curation.recipe import parse_recipe
from curation.retune import retune
from manifests import open_manifest, validate

FILTERS = {
    "image": {"min_side": 64, "max_aspect_ratio": 6, "max_low_info": 0.9},
    "text": {"min_chars": 200},
    "video": {"min_duration_s": 0.5, "max_duration_s": 900},
}
#: loosened: small images, short clips, repetitive licenses come back; tightened: short licenses leave
CHANGE = {"image": {"min_side": 16}, "video": {"min_duration_s": 0.05}, "text": {"min_chars": 600, "max_dup_ngram_frac": {"5": 0.3}}}


def _recipe(root: Path, filters: dict, dedup: bool):
    data = {
        "seed": 0,
        "sources": [
            {"name": "photos", "kind": "images", "path": "images"},
            {"name": "pairs", "kind": "image_text", "path": "pairs/gcompris/captions.jsonl", "image_column": "image",
             "text_column": "text", "chunk_size": 64},
            {"name": "docs", "kind": "document", "path": "documents/**/*.pdf", "dpi": 100},
            {"name": "licenses", "kind": "text", "path": "documents/spdx/licenses.jsonl", "text_column": "text",
             "id_column": "id", "chunk_size": 256},
            {"name": "clips", "kind": "video", "path": "videos"},
        ],
        "filters": filters,
        "tokens": {"strategy": "smolvlm-256m"},
    }
    if dedup:
        data["dedup"] = {"exact": True, "image": {"max_distance": 6}, "text": {"threshold": 0.8}}
    return parse_recipe(data, base_dir=root)


def _merged(change: dict) -> dict:
    """The filters a fresh curate gets: FILTERS with CHANGE applied the way retune merges (n-gram maps key by key)."""
    from curation.recipe import TextFilters

    out = {k: dict(v) for k, v in FILTERS.items()}
    for k, v in change.items():
        for field, value in v.items():
            if isinstance(value, dict):
                base = {str(n): t for n, t in getattr(TextFilters(), field).items()}
                value = {**base, **value}
            out.setdefault(k, {})[field] = value
    return out


@pytest.fixture(scope="module")
def curated(realdata, tmp_path_factory):
    base = tmp_path_factory.mktemp("retune-real")
    for dedup in (False, True):
        tag = "dedup" if dedup else "plain"
        run_job(_recipe(realdata, FILTERS, dedup), base / f"old-{tag}", engine="local", quiet=True)
        run_job(_recipe(realdata, _merged(CHANGE), dedup), base / f"fresh-{tag}", engine="local", quiet=True)
    return base


@pytest.mark.slow
def test_retune_equals_fresh_curate_on_realdata(curated, tmp_path):
    from tests.test_retune import _assert_same_rows

    r = retune(open_manifest(curated / "old-plain"), filters=CHANGE)
    assert r.brought_back and r.newly_dropped
    back = {s: sum(st["brought_back"].values()) for s, st in r.sources.items()}
    assert back["photos"] > 0 and back["clips"] > 0 and back["licenses"] > 0
    assert r.total("unscored") >= 5, "the corrupt inputs stay dropped"
    out = r.write(tmp_path / "retuned")
    validate(out.path)
    _assert_same_rows(out, open_manifest(curated / "fresh-plain"), set(r.brought_back))


@pytest.mark.slow
def test_retune_with_dedup_differs_only_by_the_stated_rule(curated):
    """With dedup, the only differences from a fresh curate are rows that came back without being deduped."""
    r = retune(open_manifest(curated / "old-dedup"), filters=CHANGE)
    fresh = open_manifest(curated / "fresh-dedup")
    got = set(r.kept.column("id").to_pylist())
    want = set(fresh.table(columns=["id"]).column("id").to_pylist())
    differ = (got - want) | (want - got)
    assert differ, "this change does interact with dedup on the real corpus"
    # fresh curate's clusters: a row's cluster is its dup_cluster (the kept row's id), in the data or the ledger
    led = fresh.ledger()
    cluster = {i: c for i, c in zip(fresh.table(columns=["id", "dup_cluster"]).column("id").to_pylist(),
                                    fresh.table(columns=["dup_cluster"]).column("dup_cluster").to_pylist()) if c}
    cluster.update({i: c for i, c in zip(led.column("id").to_pylist(), led.column("dup_cluster").to_pylist()) if c})
    back_clusters = {cluster[b] for b in r.brought_back if b in cluster}
    assert all(cluster.get(i) in back_clusters for i in differ), \
        "every difference lies in a cluster a fresh curate formed with a row that came back undeduped"
    assert (got - want) <= set(r.kept.column("id").to_pylist())
    assert r.total("undeduped") == len(r.brought_back)


@pytest.mark.slow
def test_clusters_and_hist_on_realdata(curated):
    m = open_manifest(curated / "old-dedup")
    view = m.clusters(n=50)
    assert view.total >= 5
    frame = view.frame()
    assert set(frame["role"]) == {"kept", "twin"}
    assert {"bytes", "phash"} & set(frame["match"].drop_nulls())
    html = view._repr_html_()
    assert html.count("data:image/jpeg") >= 5, "twins are drawn side by side with their kept row"
    photos = [c for c in view.clusters if c["kept"] is not None and c["kept"]["source"] == "photos"]
    assert photos and all(t["row"]["dup_cluster"] == c["cluster"] for c in photos for t in c["twins"])
    fig = m.hist("score_min_side", by="source")
    titles = [ax.get_title() for ax in fig.axes]
    assert any("photos" in t for t in titles)
    lines = [ln for ax in fig.axes for ln in ax.get_lines()]
    assert any(abs(ln.get_xdata()[0] - 64) < 1e-9 for ln in lines), "the recipe's min_side threshold is drawn"
    assert m.hist().axes, "default: every threshold that dropped rows"
    lo = m.loosening()
    assert any(it["field"] == "filters.image.min_side" and it["back"] > 0 for it in lo.items)
