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
