"""Notebook views: the ledger keeps media and scores; show(), clusters(), hist(), loosening() and cached thumbnails."""
from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow.compute as pc
import pytest

from manifests import open_manifest


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    from curation.demo import run_demo

    out = tmp_path_factory.mktemp("views-demo")
    run_demo(out, engine="local", quiet=True)
    return out / "manifest"


def test_ledger_keeps_media_modality_and_scores(demo):
    m = open_manifest(demo)
    assert m.ledger_version == 2
    led = pl.from_arrow(m.ledger())
    assert {"modality", "media", "text", "score_min_side", "score_chars", "tokens", "dup_cluster"} <= set(led.columns)
    assert not any(c.startswith("sig_") for c in led.columns), "dedup hashes stay out of the ledger"
    small = led.filter(pl.col("reason") == "min_side").to_dicts()[0]
    assert small["modality"] == "image" and small["media"][0]["uri"].endswith("tiny.png")
    assert small["score_min_side"] == 16 and small["score_low_info"] is not None, "every score computed before the drop"
    assert small["tokens"] is None, "tokens are counted after the filters"
    dup = led.filter((pl.col("stage") == "dedup") & (pl.col("source") == "photos")).to_dicts()[0]
    assert dup["tokens"] is not None and dup["dup_cluster"], "a duplicate keeps its tokens and its cluster"
    note = led.filter(pl.col("reason") == "min_chars").filter(pl.col("source") == "notes").to_dicts()[0]
    assert note["text"] and note["score_chars"] < 20
    # rows dropped before decoding keep what the reader knew
    zero = led.filter(pl.col("reason") == "zero_bytes").to_dicts()[0]
    assert zero["modality"] == "image" and zero["score_min_side"] is None


def test_show_sort_sample_dropped_and_counts(demo, capsys):
    m = open_manifest(demo)
    v = m.show(3, sort="-score_min_side", where=pl.col("source") == "photos")
    assert "kept: 13 rows matched" in capsys.readouterr().out
    sides = [r["score_min_side"] for r in v.rows]
    assert len(v) == 3 and sides == sorted(sides, reverse=True) and v.matched == 13
    a = m.show(5, sample=5, seed=1, quiet=True)
    b = m.show(5, sample=5, seed=1, quiet=True)
    c = m.show(5, sample=5, seed=2, quiet=True)
    assert [r["id"] for r in a.rows] == [r["id"] for r in b.rows] != [r["id"] for r in c.rows]
    assert {r["source"] for r in m.show(64, sample=64, quiet=True).rows} == {"photos", "pairs", "docs", "notes", "clips"}
    d = m.show(30, dropped=True)
    assert "dropped: 24 rows matched" in capsys.readouterr().out and len(d) == 24
    html = d._repr_html_()
    assert "dropped: filter/min_side" in html and "sc-fail" in html and "tiny.png" in html
    assert "data:image/jpeg;base64," in html
    both = m.show(4, dropped="both", where=pl.col("modality") == "video")
    out = capsys.readouterr().out
    assert "kept: 3 rows matched" in out and "dropped: 3 rows matched" in out
    assert both.other is not None and "sc-cols" in both._repr_html_()
    none = m.show(dropped=True, where=pl.col("no_such_column") > 1, quiet=True)
    assert len(none) == 0 and "lack" in none.title


def test_cards_name_files_and_show_relevant_scores(demo):
    from manifests.cards import recipe_checks, score_items

    m = open_manifest(demo)
    checks = recipe_checks(m)
    clip = m.to_polars().filter(pl.col("source") == "clips").to_dicts()[0]
    labels = [label for label, _, _ in score_items(clip, checks["clips"])]
    assert "motion" in labels and "chars" not in labels and "sharpness" not in labels
    html = m.show(1, where=pl.col("modality") == "document", quiet=True)._repr_html_()
    assert "sc-strip" in html and (".pdf" in html or ".png" in html)
    row = m.to_polars().filter(pl.col("source") == "pairs").to_dicts()[0]
    from manifests.cards import card_html

    card = card_html(row, checks["pairs"])
    assert "pair_" in card and "tokens" in card and row["id"] not in card.split("title=")[0]


def test_clusters_side_by_side(demo):
    m = open_manifest(demo)
    view = m.clusters()
    assert view.total == 5
    f = view.frame()
    kept = f.filter(pl.col("role") == "kept")["name"].to_list()
    assert "photos/photo_03.jpg" in kept and "pan.mp4" in kept
    twin = f.filter(pl.col("name") == "pan.avi").to_dicts()[0]
    assert twin["match"] == "vhash" and twin["distance"] is not None
    assert "kept" in view._repr_html_() and "pan.avi" in repr(view)


def test_hist_draws_kept_dropped_and_thresholds(demo):
    m = open_manifest(demo)
    fig = m.hist("score_min_side", by="source")
    photos = [ax for ax in fig.axes if ax.get_title().endswith("photos")][0]
    assert [ln.get_xdata()[0] for ln in photos.get_lines()] == [32]
    labels = [t.get_text() for t in photos.get_legend().get_texts()]
    assert "dropped by this threshold (1)" in labels and "kept (13)" in labels
    by_mod = m.hist("score_motion", by="modality")
    assert [ax.get_title() for ax in by_mod.axes] == ["motion · video"]
    default = m.hist()
    titles = {ax.get_title() for ax in default.axes}
    assert {"min_side · photos", "low_info · photos", "motion · clips"} <= titles


def test_loosening_lists_what_comes_back(demo):
    m = open_manifest(demo)
    lo = m.loosening()
    got = {it["field"]: it for it in lo.items}
    assert got["filters.image.min_side"]["new"] == 16 and got["filters.image.min_side"]["back"] == 1
    assert got["filters.video.min_motion"]["back_by_source"] == {"clips": 1}
    assert "comes back" in lo._repr_html_() and "brings back" in repr(lo)


def test_thumbnails_are_small_cached_jpegs(demo, tmp_path, monkeypatch):
    from manifests import thumbs

    monkeypatch.setenv("SMOLCURATE_THUMB_CACHE", str(tmp_path / "cache"))
    thumbs._cached.cache_clear()
    row = open_manifest(demo).to_polars().filter(pl.col("source") == "photos").to_dicts()[0]
    uri = thumbs.thumb_uri(row["media"][0])
    assert uri.startswith("data:image/jpeg;base64,") and len(uri) < 20_000
    files = list((tmp_path / "cache").glob("*.jpg"))
    assert len(files) == 1
    thumbs._cached.cache_clear()
    files[0].write_bytes(b"cached")  # a second process reads the disk cache instead of decoding again
    assert thumbs.jpegs(row["media"][0]) == (b"cached",)
    assert thumbs.thumb_uri({"uri": str(tmp_path / "missing.png"), "kind": "image"}) is None


def test_retune_preview_renders(demo):
    m = open_manifest(demo)
    r = m.retune(filters={"image": {"min_side": 8}})
    html = r._repr_html_()
    assert "comes back" in html and "tiny.png" in html
    assert pc.sum(pc.equal(r.kept.column("source"), "photos")).as_py() == 14
