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


def _in_fresh_python(code: str) -> dict:
    """Run ``code`` in a new interpreter (its heap is not the test process's) and return the JSON it prints."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300,
                       cwd=Path(__file__).resolve().parents[1])
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_scatter_holds_nothing_per_flushed_batch(tmp_path):
    """The dedup scatter writes a batch per partition per flush; what its writers keep must not grow with them.

    A Parquet writer kept ~8.5 KB of metadata per row group until it closed: at 10M text rows (110 partitions,
    ~400 flushes) that was ~370 MB on the driver. Here 64 partitions x 300 flushes would keep ~160 MB that way.
    """
    out = _in_fresh_python(f"""
        import json, numpy as np, pyarrow as pa, psutil
        from pathlib import Path
        from curation.dedup.records import Scatter, read_partition
        Scatter.BUFFER_RECORDS = 64 * 20
        sc = Scatter(Path({str(tmp_path / "b")!r}), 64)
        me, n = psutil.Process(), 64 * 20
        rng = np.random.default_rng(0)
        def rec(i):
            return {{"key": rng.integers(0, 2**63, n, dtype=np.uint64), "kind": np.zeros(n, np.int8),
                     "node": np.arange(i * n, (i + 1) * n, dtype=np.int64), "idkey": rng.integers(0, 2**63, n, dtype=np.uint64),
                     "role": np.zeros(n, np.int8), "dedup": np.ones(n, bool), "seq": pa.nulls(n, pa.list_(pa.uint64())),
                     "color": pa.nulls(n, pa.list_(pa.float32())), "flat": np.zeros(n, np.uint64)}}
        for i in range(20):
            sc.add(rec(i))
        before = me.memory_info().rss
        for i in range(20, 300):
            sc.add(rec(i))
        grew = (me.memory_info().rss - before) / 2**20
        sc.close()
        rows = sum(read_partition(p).num_rows for p in Path({str(tmp_path / "b")!r}).glob("part-*.arrow"))
        nodes = np.sort(np.concatenate([read_partition(p).column("node").to_numpy()
                                        for p in Path({str(tmp_path / "b")!r}).glob("part-*.arrow")]))
        print(json.dumps({{"grew_mb": grew, "rows": rows, "nodes_ok": bool(np.array_equal(nodes, np.arange(300 * n)))}}))
    """)
    assert out["rows"] == 300 * 64 * 20 and out["nodes_ok"]
    assert out["grew_mb"] < 40, out


def test_release_unused_hands_a_fragmented_heap_back():
    """Between phases the driver returns freed memory to the OS (glibc heap, Arrow's pool): RSS falls."""
    out = _in_fresh_python("""
        import json, numpy as np, psutil
        from manifests.memory import _malloc_trim, release_unused
        me = psutil.Process()
        big = np.ones(2_000_000); del big  # glibc raises its mmap threshold: later 240 KB arrays come from the heap
        arrs = [np.ones(30_000) for _ in range(1500)]
        pin = [np.ones(10) for _ in range(1500)]  # small blocks between them keep the heap from shrinking by itself
        del arrs[::2]
        before = me.memory_info().rss
        release_unused()
        print(json.dumps({"glibc": _malloc_trim() is not None, "freed_mb": (before - me.memory_info().rss) / 2**20}))
    """)
    if not out["glibc"]:
        import pytest

        pytest.skip("not glibc: no malloc_trim")
    assert out["freed_mb"] > 100, out
