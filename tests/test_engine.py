"""The engine protocol: stage layout, pool plan, engine registry, and the resumable global-cutoff pass."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.engine.cutoffs import CUTOFFS_DONE, apply_cutoffs
from curation.engine.ray_engine import pool_plan
from curation.engine.registry import ENGINES, get_engine
from curation.engine.stages import StageSpec, stage_layout
from curation.engine.staging import Staging
from curation.readers import PRIVATE_KEY, PRIVATE_POS, PRIVATE_URI
from curation.recipe import parse_recipe
from manifests.errors import UserError


def _recipe(tmp_path, **enrich):
    return parse_recipe({
        "sources": [{"name": "pairs", "kind": "image_text", "path": str(tmp_path), "format": "files"},
                    {"name": "notes", "kind": "text", "path": str(tmp_path / "n.jsonl"), "text_column": "text"}],
        "enrich": enrich or {"language": {}, "embed": {"model": str(tmp_path / "m")}, "aesthetic": {"head": "h.pt"},
                             "clip_score": {"top_fraction": 0.5}},
    }, tmp_path, check_paths=False)


def test_chains_are_cut_at_model_operators_the_same_way_for_every_source(tmp_path):
    stages, per_source = stage_layout(_recipe(tmp_path))
    assert [s.name for s in stages] == ["cpu:0", "embed", "cpu:1"]
    assert [s.own for s in stages] == [False, True, False]
    pairs, notes = per_source
    assert [type(op).__name__ for op in pairs[1]] == ["ImageEmbedder"]
    assert {"ClipScoreFilter", "AestheticScore"} <= {type(op).__name__ for op in pairs[2]}
    assert "LanguageId" in {type(op).__name__ for op in pairs[0]}  # cheap filters run before the model
    assert notes[1] == []  # a source the model does not apply to passes through its stage
    # a language stage of its own when asked
    stages, _ = stage_layout(_recipe(tmp_path, language={"own_stage": True, "concurrency": 2}))
    assert [(s.name, s.concurrency) for s in stages] == [("cpu:0", None), ("language", 2), ("cpu:1", None)]


def test_without_model_operators_there_is_one_fused_stage(tmp_path):
    r = parse_recipe({"sources": [{"name": "a", "kind": "images", "path": str(tmp_path)}]}, check_paths=False)
    stages, per_source = stage_layout(r)
    assert [s.name for s in stages] == ["cpu:0"] and len(per_source[0]) == 1


def test_pool_plan_fits_the_cluster_and_gives_the_model_a_gpu():
    stages = [StageSpec("cpu:0", False), StageSpec("embed", True, 1.0, 0.0, 1, "auto"), StageSpec("cpu:1", False)]
    plan = pool_plan(stages, workers=2, cluster_cpus=2, cluster_gpus=0)
    assert sum(p["pool"] * p["num_cpus"] for p in plan) <= 2 + 1e-9
    assert plan[1] == {"stage": "embed", "pool": 1, "num_cpus": 1.0, "num_gpus": 0.0}
    gpu = pool_plan(stages, workers=8, cluster_cpus=16, cluster_gpus=2)
    assert gpu[1]["num_gpus"] == 1.0 and gpu[0]["pool"] == 8 and gpu[0]["num_gpus"] == 0.0
    cpu_only = [StageSpec("cpu:0", False), StageSpec("embed", True, 1.0, 0.0, 1, "cpu"), StageSpec("cpu:1", False)]
    assert pool_plan(cpu_only, 8, 16, 2)[1]["num_gpus"] == 0.0  # device: cpu never takes the GPU
    big = [StageSpec("cpu:0", False), StageSpec("embed", True, 8.0, 0.0, 2, "auto"), StageSpec("cpu:1", False)]
    plan = pool_plan(big, 4, 4, 0)  # 16 CPUs asked on a 4-CPU cluster: scaled so that every actor can start
    assert sum(p["pool"] * p["num_cpus"] for p in plan) <= 4 + 1e-9
    single = pool_plan([StageSpec("cpu:0", False)], 3, 4, 0)
    assert single == [{"stage": "cpu:0", "pool": 3, "num_cpus": 1.0, "num_gpus": 0.0}]


def test_engines_come_from_the_registry(tmp_path):
    assert set(ENGINES) == {"local", "ray"}
    assert get_engine("local").name == "local"
    with pytest.raises(UserError, match="--engine: unknown engine 'spark'"):
        get_engine("spark")


def _kept(n: int, start: int) -> pa.Table:
    return pa.table({
        "id": [f"r{start + i}" for i in range(n)], "source": ["pairs"] * n,
        PRIVATE_URI: [f"/x/{start + i}.png" for i in range(n)], PRIVATE_POS: pa.array(range(start, start + n), pa.int64()),
        PRIVATE_KEY: [f"k{start + i}" for i in range(n)],
        "score_clip": pa.array([((start + i) * 7 % 15) / 15.0 for i in range(n)], pa.float32()),  # distinct
    })


def test_the_top_fraction_pass_is_resumable_and_idempotent(tmp_path):
    r = _recipe(tmp_path)
    staging = Staging(tmp_path / "out")
    staging.root.mkdir(parents=True)
    from curation.engine.chunk import STAGED_LEDGER_SCHEMA

    for k in range(3):
        staging.write_chunk(k, _kept(5, 5 * k), STAGED_LEDGER_SCHEMA.empty_table(), {"read": 5, "kept": 5, "dropped": 0})
    chunk_of = [0, 0, 0]  # all three chunks belong to source 0 (pairs)
    before = {k: staging.read_kept(k) for k in range(3)}
    cut = apply_cutoffs(r, staging, 3, chunk_of)
    kept = pa.concat_tables([staging.read_kept(k) for k in range(3)])
    led = pa.concat_tables([staging.read_dropped(k) for k in range(3)], promote_options="default")
    assert kept.num_rows == 8 and led.num_rows == 7  # ceil(0.5 * 15) kept (no ties at the cutoff here)
    assert min(kept.column("score_clip").to_pylist()) >= cut["ClipScoreFilter"]["pairs"]
    assert set(led.column("reason").to_pylist()) == {"clip_score_top_fraction"}
    # a kill after chunk 1's ledger was written but before its kept rows were: both files hold the moved rows
    staging.path(CUTOFFS_DONE).unlink()
    pq.write_table(before[1], staging.kept_path(1))
    again = apply_cutoffs(r, staging, 3, chunk_of)
    assert again == cut  # the saved cutoffs, not recomputed from the half-moved chunks
    kept2 = pa.concat_tables([staging.read_kept(k) for k in range(3)])
    led2 = pa.concat_tables([staging.read_dropped(k) for k in range(3)], promote_options="default")
    assert kept2.equals(kept) and led2.num_rows == 7 and len(set(led2.column(PRIVATE_POS).to_pylist())) == 7
