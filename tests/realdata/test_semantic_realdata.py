"""Semantic dedup on real images: planted augmented copies are found, distinct images are kept.

The embeddings come from a tiny random CLIP (64 px input, seed 0) built by the
test. Random weights see colour and texture statistics, not meaning, so the
distinct set leaves out the near-black astronomy / microscopy images (hubble,
phantom, cell, microaneurysms, ihc), which look alike to such a model, and
plants no copies of the fine textures (brick, grass, gravel: a rescaled or
cropped grass scores only 0.96-0.99 against its original, as low as distinct
photos). Random features are not robust to crops or brightness changes either,
so the copies are rescaled and re-encoded ones. Measured: the planted copies
score >= 0.9989 against their originals, distinct pairs <= 0.9963; eps = 0.002
sits between them.
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageEnhance

from curation.engine.job import run_job
from curation.recipe import load_recipe
from tests.enrich_fixtures import tiny_clip

DISTINCT = ["skimage/astronaut.png", "skimage/camera.png", "skimage/chelsea.png", "skimage/coffee.png",
            "skimage/coins.png", "skimage/horse.png", "skimage/moon.png", "skimage/motorcycle_left.png",
            "skimage/page.png", "skimage/retina.jpg",
            # no planted copies of these (see the module docstring): textures and the rest
            "skimage/brick.png", "skimage/grass.png", "skimage/gravel.png", "skimage/rocket.jpg", "skimage/text.png",
            "sklearn/china.jpg", "sklearn/flower.jpg", "matplotlib/grace_hopper.jpg", "skimage/clock_motion.png",
            "skimage/color.png", "skimage/logo.png"]


def _augment(im: Image.Image, k: int) -> Image.Image:
    """Three near-duplicate kinds: downscale to 3/4, plain re-encode, downscale to 1/2 (saved as JPEG q80)."""
    w, h = im.size
    if k % 3 == 0:
        return im.resize((int(w * 0.75), int(h * 0.75)), Image.Resampling.LANCZOS)
    if k % 3 == 1:
        return im
    return im.resize((w // 2, h // 2), Image.Resampling.LANCZOS)


@pytest.fixture(scope="module")
def corpus(realdata, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("semantic")
    tiny_clip(root / "clip", image_size=64, seed=0)
    imgs = root / "imgs"
    imgs.mkdir()
    planted = {}
    for k, rel in enumerate(DISTINCT):
        im = Image.open(realdata / "images" / rel).convert("RGB")
        im.save(imgs / f"{Path(rel).stem}.png")
        if k < 10:
            _augment(im, k).save(imgs / f"{Path(rel).stem}_copy.jpg", quality=80)
            planted[f"{Path(rel).stem}_copy.jpg"] = f"{Path(rel).stem}.png"
    return root, planted


@pytest.mark.parametrize("clusters", [None, 3])
def test_semantic_dedup_finds_planted_copies_and_keeps_distinct_images(corpus, tmp_path, clusters):
    root, planted = corpus
    sem = {"enabled": True, "eps": 0.002} | ({"clusters": clusters} if clusters else {})
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"sources:\n  - {{name: photos, kind: images, path: {root / 'imgs'}, chunk_size: 8}}\n"
        f"enrich:\n  embed: {{model: {root / 'clip'}, batch_size: 8}}\n"
        "dedup: {exact: false, image: {enabled: false}, text: {enabled: false}, video: {enabled: false}, "
        f"semantic: {json.dumps(sem)}}}\n")
    res = run_job(load_recipe(recipe), tmp_path / "out", engine="local", quiet=True)
    ledger = pa.concat_tables([pq.read_table(f) for f in sorted((tmp_path / "out" / "dropped").glob("*.parquet"))])
    dups = {Path(u).name: json.loads(d) for u, r, d in zip(ledger.column("uri").to_pylist(),
                                                           ledger.column("reason").to_pylist(),
                                                           ledger.column("detail").to_pylist()) if r == "duplicate"}
    # exactly one of each planted pair goes; every distinct image stays
    pairs_hit = {frozenset((c, o)) for c, o in planted.items()}
    dropped = set(dups)
    assert len(dropped) == len(planted) and all(len(p & dropped) == 1 for p in pairs_hit), dropped
    assert res.sources["photos"]["kept"] == len(DISTINCT)
    for name, detail in dups.items():
        assert detail["match"] == "semantic" and detail["cosine"] >= 0.998
    # keep rule (shared rank): the larger image wins, so the downscaled copies are the ones dropped
    for k, rel in enumerate(DISTINCT[:10]):
        if k % 3 != 1:
            assert f"{Path(rel).stem}_copy.jpg" in dropped
    kept = pa.concat_tables([pq.read_table(f) for f in sorted((tmp_path / "out" / "data").glob("*.parquet"))])
    clustered = kept.filter(pa.compute.is_valid(kept.column("dup_cluster")))
    assert clustered.num_rows == len(planted)  # each surviving member of a pair names its cluster
