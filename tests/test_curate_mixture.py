"""A recipe's `mixture:` section runs the mixing step on what `curate` just wrote."""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from manifests import open_manifest, validate
from manifests.cli import main as cli_main


def test_curate_runs_the_recipe_mixture(tmp_path: Path, capsys):
    rows = [{"id": f"a{i}", "text": f"alpha document number {i} " * (3 + i % 5)} for i in range(30)]
    rows += [{"id": f"b{i}", "text": f"bravo note {i} with some words " * (2 + i % 3)} for i in range(30)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:30]))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows[30:]))
    (tmp_path / "recipe.yaml").write_text(
        """\
seed: 0
sources:
  - {name: alpha, kind: text, path: a.jsonl, text_column: text, id_column: id}
  - {name: bravo, kind: text, path: b.jsonl, text_column: text, id_column: id}
mixture:
  seed: 3
  by: samples
  total: 40
  weights: {alpha: 0.75, bravo: 0.25}
"""
    )
    out = tmp_path / "out"
    assert cli_main(["curate", str(tmp_path / "recipe.yaml"), "--out", str(out), "--engine", "local", "--quiet"]) == 0
    assert "mixture:" in capsys.readouterr().out
    mix = open_manifest(tmp_path / "out-mixture")
    validate(mix.path)
    counts = mix.to_polars().group_by("source").agg(n=pl.col("repeat").sum())
    got = dict(zip(counts["source"].to_list(), counts["n"].to_list()))
    assert got == {"alpha": 30, "bravo": 10}
    assert mix.info["extra"]["mixture"]["inputs"][0]["path"] == str(out.resolve())

    # running the finished job again leaves both manifests as they are, instead of refusing the mixture
    before = (tmp_path / "out-mixture" / "manifest.json").read_bytes()
    assert cli_main(["curate", str(tmp_path / "recipe.yaml"), "--out", str(out), "--engine", "local", "--quiet"]) == 0
    assert (tmp_path / "out-mixture" / "manifest.json").read_bytes() == before
    # a changed recipe is still refused without --overwrite
    text = (tmp_path / "recipe.yaml").read_text().replace("total: 40", "total: 30")
    (tmp_path / "recipe.yaml").write_text(text)
    assert cli_main(["curate", str(tmp_path / "recipe.yaml"), "--out", str(out), "--engine", "local", "--quiet"]) == 2
    assert "already holds" in capsys.readouterr().err
