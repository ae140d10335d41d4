"""The driver's global steps after staging: what they hold does not grow with the rows."""
from __future__ import annotations

import json

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from curation.engine import finalize
from curation.engine.job import run_job
from curation.recipe import load_recipe
from manifests.reader import open_manifest


def test_repeated_id_hashes_spilled_by_bucket_equal_the_in_memory_answer(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    ids = [f"id-{v}" for v in rng.integers(0, 3000, size=5000)]  # many repeats, across files
    paths = []
    for i in range(4):
        p = tmp_path / f"f{i}.parquet"
        pq.write_table(pa.table({"id": ids[i * 1250:(i + 1) * 1250]}), p)
        paths.append(p)
    in_memory = finalize._repeated_hashes(paths, tmp_path / "spill")
    hashes = pl.Series(ids).hash(seed=0).to_numpy()
    values, counts = np.unique(hashes, return_counts=True)
    assert np.array_equal(in_memory, values[counts > 1]) and in_memory.size > 100
    monkeypatch.setattr(finalize, "HASH_BUCKET_ROWS", 300)  # 5000 rows: 32 buckets
    spilled = finalize._repeated_hashes(paths, tmp_path / "spill")
    assert np.array_equal(np.sort(spilled), in_memory)
    assert not (tmp_path / "spill").exists()


def test_a_job_with_repeated_table_rows_gives_the_same_ids_when_the_hashes_spill(tmp_path, monkeypatch):
    rows = [{"text": f"row number {i % 7} of a table whose rows repeat"} for i in range(60)]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"sources:\n  - {{name: t, kind: text, path: {tmp_path / 't.jsonl'}, text_column: text, "
                      "chunk_size: 16}\nfilters: {text: {min_words: 1}}\n")
    run_job(load_recipe(recipe), tmp_path / "a", engine="local", quiet=True)
    monkeypatch.setattr(finalize, "HASH_BUCKET_ROWS", 4)
    run_job(load_recipe(recipe), tmp_path / "b", engine="local", quiet=True)
    a, b = (open_manifest(tmp_path / d).table() for d in ("a", "b"))
    assert a.num_rows == 60 and len(set(a.column("id").to_pylist())) == 60
    assert a.column("id").equals(b.column("id"))


def test_top_cutoff_is_the_exact_order_statistic_read_one_chunk_at_a_time():
    from curation.engine.cutoffs import top_cutoff

    rng = np.random.default_rng(3)
    chunks = [np.concatenate([rng.normal(0, 1, 500), rng.choice([-0.5, 0.0, 0.25, 2.0], 200), [np.nan] * 7,
                              rng.uniform(-1e-300, 1e-300, 20), [-1e300, 1e300, -np.inf]]) for _ in range(5)]
    values = np.concatenate(chunks)
    v = values[~np.isnan(values)]
    passes = []

    def scores():
        passes.append(1)
        return iter(chunks)

    for frac in (1e-9, 0.01, 0.3, 0.5, 0.77, 1.0):
        passes.clear()
        keep = lambda n, f=frac: max(1, int(np.ceil(f * n)))  # noqa: E731
        want = float(np.sort(v)[::-1][keep(v.size) - 1])
        assert top_cutoff(scores, keep) == want, frac
        assert len(passes) == 4  # 4 passes of 16 bits, the first counting the rows too
    assert top_cutoff(lambda: iter([np.array([np.nan])]), lambda n: 1) is None
    assert top_cutoff(scores, lambda n: None) is None
