"""One recipe over all five source kinds of ../shared/realdata, on both engines."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from curation.engine.job import run_job
from curation.recipe import parse_recipe
from manifests.reader import open_manifest
from manifests.validate import validate

CORRUPT = {
    "images/imagededup/mixed_images/ukbench09268_corrupt.jpg": ("decode", "undecodable"),
    "images/imagededup/mixed_nested_images/ukbench09268_corrupt.jpg": ("decode", "undecodable"),
    "images/skimage/multipage_rgb.tif": ("decode", "undecodable"),  # float TIFF Pillow cannot read
    "videos/decord/corrupted.mp4": ("decode", "undecodable"),
    "documents/ocrmypdf/invalid.pdf": ("decode", "undecodable"),
    "documents/pypdf-samples/005-libreoffice-writer-password/libreoffice-writer-password.pdf": ("decode", "encrypted"),
}


def _recipe(root: Path):
    return parse_recipe({
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
        "filters": {
            "image": {"min_side": 32, "max_aspect_ratio": 6},
            "text": {"min_chars": 20},
            "video": {"min_duration_s": 0.05, "max_duration_s": 900},
        },
    }, base_dir=root)


@pytest.fixture(scope="module")
def manifests(realdata, tmp_path_factory, ray_session):
    recipe = _recipe(realdata)
    base = tmp_path_factory.mktemp("realdata")
    run_job(recipe, base / "local", engine="local", quiet=True)
    run_job(recipe, base / "ray", engine="ray", workers=2, quiet=True)
    return base


@pytest.mark.ray
@pytest.mark.slow
def test_both_engines_identical_and_valid(manifests):
    for name in ("local", "ray"):
        report = validate(manifests / name)
        assert report["ok"]
    a = pads.dataset(manifests / "local" / "data").to_table()
    b = pads.dataset(manifests / "ray" / "data").to_table()
    assert a.equals(b)
    assert open_manifest(manifests / "local").ledger().equals(open_manifest(manifests / "ray").ledger())
    info = open_manifest(manifests / "ray").info
    assert set(info["totals"]["by_modality"]) == {"image", "image_text", "document", "text", "video"}
    for name, src in info["sources"].items():
        assert src["read"] == src["kept"] + src["dropped"], name


@pytest.mark.ray
@pytest.mark.slow
def test_every_corrupt_file_is_in_the_ledger(manifests, realdata):
    ledger = open_manifest(manifests / "ray").ledger().to_pylist()
    by_uri = {r["uri"]: (r["stage"], r["reason"]) for r in ledger}
    for rel, want in CORRUPT.items():
        assert by_uri.get(str(realdata / rel)) == want, rel
    # the image counts: 79 files in images/, all accounted for
    assert open_manifest(manifests / "ray").info["sources"]["photos"]["read"] == 79
    assert open_manifest(manifests / "ray").info["sources"]["pairs"]["read"] == 319


@pytest.mark.ray
@pytest.mark.slow
def test_video_and_document_metadata(manifests):
    rows = pads.dataset(manifests / "ray" / "data").to_table().to_pylist()
    by_path = {json.loads(r["meta"])["path"]: r for r in rows if r["meta"] and "path" in json.loads(r["meta"])}
    for name, rot in (("decord/video_0.mov", 0), ("decord/video_90.mov", 90), ("decord/video_180.mov", 180),
                      ("decord/video_270.mov", 270)):
        m = by_path[name]["media"][0]
        assert m["rotation"] == rot
        assert (m["width"], m["height"]) == ((320, 568) if rot in (90, 270) else (568, 320))
    webm = by_path["moviepy/big_buck_bunny_0_30.webm"]["media"][0]
    assert (webm["width"], webm["height"], webm["fps"]) == (1280, 720, 24.0) and webm["duration"] == pytest.approx(30.0, abs=0.1)
    avi = by_path["gradio/b.avi"]["media"][0]
    assert avi["format"] == "avi" and avi["duration"] == pytest.approx(5.03, abs=0.05)
    scan = by_path["ocrmypdf/c03-29.pdf"]
    assert scan["score_textless_pages"] == 1.0 and scan["score_pages"] == 1
    geo = by_path["pypdf-samples/009-pdflatex-geotopo/GeoTopo-komprimiert.pdf"]
    assert geo["score_pages"] == 117 and len(geo["media"]) == 117 and geo["score_text_chars_per_page"] > 100
    huge = by_path["ocrmypdf/hugemono.pdf"]["media"][0]
    assert huge["width"] * huge["height"] <= 89_478_485 and huge["dpi"] < 100  # rendered at a lower dpi, not refused
    gif = by_path["gradio/media_assets/bus.png"]["media"][0]  # a GIF with a .png name
    assert gif["format"] == "GIF"
