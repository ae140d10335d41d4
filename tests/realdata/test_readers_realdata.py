"""Real images and captions (../shared/realdata/pairs/gcompris) as a Cauldron dataset and a WebDataset shard.

Both are built with the ecosystem's writers (``datasets.save_to_disk`` with
``Image`` features, ``tarfile`` in the img2dataset layout), then curated on
both engines: the two formats must keep the same captions as the original
JSONL, with nothing lost and identical manifests on both engines.
"""
from __future__ import annotations

import json

import pyarrow.dataset as pads
import pytest

from curation.engine.job import run_job
from curation.recipe import parse_recipe
from manifests.reader import open_manifest
from manifests.validate import validate
from tests.readers_fixtures import cauldron_dataset, img2dataset_shard

pytest.importorskip("datasets")
ROWS = 120


@pytest.fixture(scope="module")
def built(realdata, tmp_path_factory):
    root = tmp_path_factory.mktemp("real_formats")
    pairs = realdata / "pairs" / "gcompris"
    rows = [json.loads(line) for line in (pairs / "captions.jsonl").read_text().splitlines()[:ROWS]]
    images = [(pairs / r["image"]).read_bytes() for r in rows]
    ds = cauldron_dataset([[b] for b in images],
                          [[{"user": "What is shown in this picture?", "assistant": r["text"], "source": "gcompris"}]
                           for r in rows])
    ds.save_to_disk(str(root / "cauldron"))
    samples = []
    for i, (r, b) in enumerate(zip(rows, images)):
        samples.append((f"{i:09d}", b, r["text"], {"caption": r["text"], "activity": r["activity"]}))
    img2dataset_shard(root / "shard-000000.tar", samples)
    # img2dataset names every image .jpg whatever it holds: the decoder goes by content, not suffix
    return root, pairs, rows


def _recipe(root, pairs):
    return parse_recipe({
        "seed": 0,
        "sources": [
            {"name": "cauldron", "kind": "image_text", "path": str(root / "cauldron"), "chunk_size": 32},
            {"name": "wds", "kind": "image_text", "path": str(root / "shard-{000000..000000}.tar"), "chunk_size": 32},
            {"name": "jsonl", "kind": "image_text", "path": str(pairs / "captions.jsonl"), "image_column": "image",
             "text_column": "text", "limit": ROWS},
        ],
        "filters": {"image": {"min_side": 16, "max_aspect_ratio": 10}},
        "dedup": {"exact": False, "image": {"enabled": False}, "text": {"enabled": False}, "video": {"enabled": False}},
    }, base_dir=root)


def test_cauldron_and_webdataset_from_real_pairs_on_both_engines(built, tmp_path, ray_session):
    root, pairs, _ = built
    recipe = _recipe(root, pairs)
    outs = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        res = run_job(recipe, out, engine=engine, workers=2, quiet=True)
        assert validate(out, check_media=True)["ok"]
        for name, src in open_manifest(out).info["sources"].items():
            assert src["read"] == src["kept"] + src["dropped"], name
        assert {n: s["read"] for n, s in res.sources.items()} == {"cauldron": ROWS, "wds": ROWS, "jsonl": ROWS}
        outs[engine] = out
    a = pads.dataset(outs["local"] / "data").to_table()
    b = pads.dataset(outs["ray"] / "data").to_table()
    assert a.equals(b)
    data = a.to_pylist()
    kept = {name: sorted((r["text"] or r["turns"][1]["content"]) for r in data if r["source"] == name)
            for name in ("cauldron", "wds", "jsonl")}
    assert kept["cauldron"] == kept["wds"] == kept["jsonl"] and len(kept["jsonl"]) > ROWS // 2
    wds = next(r for r in data if r["source"] == "wds")
    assert wds["media"][0]["uri"].startswith("tar://") and wds["media"][0]["width"] > 0
    caul = next(r for r in data if r["source"] == "cauldron")
    assert caul["media"][0]["bytes"] is not None and caul["turns"][0]["content"].startswith("<image>")
