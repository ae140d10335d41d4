"""Manifest write/read throughput against a bare pyarrow.parquet round trip on the same rows.

    python benchmarks/bench_manifests.py [--rows 1000000]

The manifest writer adds atomic renames, checksums and per-shard summaries; the
readers add schema checks. This prints what that costs relative to plain Parquet.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from manifests import ManifestWriter, build_schema, conform, open_manifest, validate


def rows(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = pa.array([f"{i:020x}" for i in range(n)])
    src = pa.array(np.array(["docs", "photos", "pairs", "clips"])[rng.integers(0, 4, n)])
    width = rng.integers(32, 4000, n).astype(np.int32)
    height = rng.integers(32, 4000, n).astype(np.int32)
    media_struct = pa.StructArray.from_arrays(
        [pa.array([f"/data/img/{i}.jpg" for i in range(n)]), pa.array(width), pa.array(height)],
        names=["uri", "width", "height"],
    )
    media = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), media_struct)
    return pa.table({
        "id": ids, "source": src, "modality": pa.array(["image"] * n), "media": media,
        "text": pa.array(["a caption of moderate length for a picture"] * n),
        "score_blur": pa.array(rng.random(n).astype(np.float32)), "tokens": pa.array(rng.integers(64, 2000, n)),
    })


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--shard-rows", type=int, default=100_000)
    args = ap.parse_args()
    schema = build_schema({"score_blur": pa.float32(), "tokens": pa.int64()})
    table = conform(rows(args.rows), schema)  # both sides write the same full-schema table
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        (tmp / "bare").mkdir()
        for i in range(0, args.rows, args.shard_rows):
            pq.write_table(table.slice(i, args.shard_rows), tmp / "bare" / f"{i}.parquet", compression="zstd")
        bare_write = time.perf_counter() - t

        t = time.perf_counter()
        w = ManifestWriter(tmp / "m", schema)
        for i in range(0, args.rows, args.shard_rows):
            w.write(table.slice(i, args.shard_rows))
        w.commit()
        man_write = time.perf_counter() - t

        t = time.perf_counter()
        pq.read_table(tmp / "bare")
        bare_read = time.perf_counter() - t
        m = open_manifest(tmp / "m")
        timings = {}
        for name, fn in {
            "pyarrow dataset": lambda: m.table(),
            "polars lazy collect": lambda: m.lazy().collect(),
            "datasets.Dataset": lambda: m.to_hf(),
            "torch (no decode)": lambda: sum(1 for _ in m.to_torch(decode=False)),
        }.items():
            t = time.perf_counter()
            fn()
            timings[name] = time.perf_counter() - t
        t = time.perf_counter()
        validate(tmp / "m", check_media=False)
        val = time.perf_counter() - t

    n = args.rows
    print(f"rows: {n:,}")
    print(f"write  bare parquet {n / bare_write:12,.0f} rows/s | manifest writer {n / man_write:12,.0f} rows/s | ratio {bare_write / man_write:.2f}x")
    for name, sec in timings.items():
        print(f"read   {name:<20} {n / sec:12,.0f} rows/s | vs bare pq.read_table {bare_read / sec:.2f}x")
    print(f"validate (checksums + invariant)   {n / val:12,.0f} rows/s")


if __name__ == "__main__":
    main()
