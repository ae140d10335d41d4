"""Ablations on the user's own data: the GCompris captions of the real corpus, curated, then ablated with findings."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from ablations.runner import AblationOptions, run_grid
from curation.engine.job import run_job
from curation.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
GRIDS = ROOT / "ablations" / "grids"
TINY = {"tile": 32, "patch": 8, "longest_edge": 64, "width": 32, "depth": 1, "heads": 2, "vision_width": 32,
        "vision_depth": 1, "vision_heads": 2, "batch_size": 4, "vocab_size": 320, "eval_samples": 4, "eval_every": 0,
        "max_new_tokens": 6, "steps": 3, "checkpoint_every": 3, "warmup": 1}


def test_gcompris_recipe_and_grid_answer_on_curated_captions(realdata, tmp_path):
    manifest = tmp_path / "gcompris"
    run_job(load_recipe(GRIDS / "realdata" / "gcompris-recipe.yaml"), manifest, engine="local", quiet=True)
    raw = yaml.safe_load((GRIDS / "gcompris.yaml").read_text())
    raw["task"].update({"manifest": str(manifest), "train": 24, "val": 6})
    raw["base"].update(TINY)
    raw["seeds"] = [0, 1, 2]
    for exp in raw["experiments"]:
        for i, p in enumerate(exp.get("points") or []):
            p["steps"] = 3 + i
    grid = tmp_path / "gcompris.yaml"
    grid.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = run_grid(grid, tmp_path / "out", AblationOptions(threads=1))
    evaluated = json.loads((out / "findings.json").read_text())
    assert [e["name"] for e in evaluated] == ["split-on-captions", "r4-on-captions"]
    for e in evaluated:
        assert e["seeds"] == [0, 1, 2] and e["verdict"] in ("reproduced", "reversed", "inconclusive")
        assert e["cost"]["arm"]["visual_tokens"] and e["cost"]["baseline"]["visual_tokens"]
    split = evaluated[0]["cost"]
    assert min(split["arm"]["visual_tokens"].values()) > max(split["baseline"]["visual_tokens"].values())
    refs = {json.loads(line)["reference"] for run in (out / "runs").iterdir() for line in (run / "predictions.jsonl").open()}
    captions = {json.loads(line)["text"] for line in (realdata / "pairs" / "gcompris" / "captions.jsonl").open()}
    assert refs and refs <= captions
