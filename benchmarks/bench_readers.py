"""Reader throughput and memory: Cauldron Parquet vs ``datasets``, WebDataset shards vs ``webdataset``, peak RSS.

Usage::

    .venv/bin/python benchmarks/bench_readers.py [--rows 200000] [--quick] [--keep]

One run, every figure a ratio measured in that run, on data generated in a
temporary folder (deleted at the end unless ``--keep``):

1. **Cauldron Parquet**: ``--rows`` rows (default 200k) of The Cauldron's
   schema (``images``: list of ``{bytes, path}`` with an embedded JPEG of about
   1-2 KB, unique per row; ``texts``: one or two ``{user, assistant, source}``
   turns), row groups of 1,000 rows like ``datasets.to_parquet``. Timed: every
   chunk planned and read by the ``cauldron`` reader (manifest rows, ids and
   ``<image>`` placement included, images not decoded) against iterating the
   same file row by row with ``datasets`` (``load_dataset("parquet")`` then
   ``for row in ds``, images cast to ``Image(decode=False)``; its one-off Arrow
   conversion is reported separately).
2. **WebDataset shards** (img2dataset layout, ``.jpg/.txt/.json`` per key): the
   ``webdataset`` reader against ``webdataset.WebDataset(urls)`` iterating the
   same shards (raw samples, no decoding).
3. **Peak RSS**: one tar shard and one Cauldron Parquet file (row groups of
   1,000 rows, about 500 MB each) of at least 1 GB (``--big-gb``), read chunk by
   chunk in a fresh process at two chunk sizes; the growth of the peak RSS over
   the process's baseline (imports done) is reported next to the file size.

``--quick`` uses 20k rows, 4 small shards and a 1 GB shard read at one chunk size.
"""
from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _jpegs(n: int, seed: int = 0) -> list[bytes]:
    """n small distinct JPEGs (noise images of 32x24 at varied qualities)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        arr = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=50 + i % 40)
        out.append(buf.getvalue())
    return out


def write_cauldron_parquet(path: Path, rows: int) -> int:
    """A Cauldron-style Parquet file; every row's JPEG is unique (a distinct trailer after the EOI marker)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = _jpegs(256)
    img_type = pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    txt_type = pa.list_(pa.struct([("user", pa.string()), ("assistant", pa.string()), ("source", pa.string())]))
    writer = pq.ParquetWriter(path, pa.schema([("images", img_type), ("texts", txt_type)]))
    block = 10_000
    for r0 in range(0, rows, block):
        n = min(block, rows - r0)
        imgs = [[{"bytes": base[(r0 + i) % 256] + (r0 + i).to_bytes(8, "little"), "path": None}] for i in range(n)]
        texts = [[{"user": f"Question {r0 + i}: what is shown?", "assistant": f"Answer {r0 + i}.", "source": "bench"}]
                 + ([{"user": "And then?", "assistant": "Nothing more."}] if (r0 + i) % 3 == 0 else [])
                 for i in range(n)]
        writer.write_table(pa.table({"images": pa.array(imgs, img_type), "texts": pa.array(texts, txt_type)}),
                           row_group_size=1000)
    writer.close()
    return path.stat().st_size


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def write_shards(folder: Path, shards: int, per_shard: int, image_bytes: int | None = None) -> list[Path]:
    """img2dataset-style shards; ``image_bytes`` pads each image member to that size (for the big shard)."""
    base = _jpegs(64, seed=1)
    rng = np.random.default_rng(2)
    paths = []
    for s in range(shards):
        p = folder / f"{s:05d}.tar"
        with tarfile.open(p, "w") as tf:
            for i in range(per_shard):
                key = f"{s:05d}{i:04d}"
                img = base[i % 64]
                if image_bytes:
                    img = img + rng.bytes(max(0, image_bytes - len(img)))
                _add(tf, f"{key}.jpg", img)
                _add(tf, f"{key}.txt", f"a caption for sample {key}".encode())
                _add(tf, f"{key}.json", json.dumps({"key": key, "url": f"http://x/{key}.jpg"}).encode())
        paths.append(p)
    return paths


def _curate_read(recipe) -> tuple[int, float]:
    """(rows, seconds) to plan and read every chunk of source 0 (no operators; reader modules imported first)."""
    from curation.readers import READERS, plan_source, read_chunk, reader_class

    for name in READERS:
        reader_class(name)
    t0 = time.perf_counter()
    plan = plan_source(recipe, 0)
    rows = sum(read_chunk(recipe, spec).num_rows for spec in plan.chunks)
    return rows, time.perf_counter() - t0


def bench_cauldron(tmp: Path, rows: int) -> dict:
    import datasets

    from curation.recipe import parse_recipe

    path = tmp / "cauldron.parquet"
    size = write_cauldron_parquet(path, rows)
    recipe = parse_recipe({"sources": [{"name": "c", "kind": "image_text", "path": str(path), "format": "cauldron",
                                        "chunk_size": 1024}]})
    ours_rows, ours_s = _curate_read(recipe)
    t0 = time.perf_counter()
    ds = datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(tmp / "hf_cache"))
    ds = ds.cast_column("images", datasets.Sequence(datasets.Image(decode=False)))
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = 0
    for row in ds:
        n += len(row["images"])
    it_s = time.perf_counter() - t0
    assert ours_rows == rows == n
    return {"rows": rows, "file_mb": size / 1e6, "ours_rows_s": rows / ours_s, "datasets_rows_s": rows / it_s,
            "datasets_load_s": load_s, "ratio": (rows / ours_s) / (rows / it_s)}


def bench_webdataset(tmp: Path, shards: int, per_shard: int) -> dict:
    import webdataset as wds

    from curation.recipe import parse_recipe

    folder = tmp / "wds"
    folder.mkdir()
    paths = write_shards(folder, shards, per_shard)
    recipe = parse_recipe({"sources": [{"name": "w", "kind": "image_text", "path": str(folder / "*.tar"),
                                        "chunk_size": 512}]})
    ours_rows, ours_s = _curate_read(recipe)
    t0 = time.perf_counter()
    n = sum(1 for _ in wds.WebDataset([str(p) for p in paths], shardshuffle=False))
    lib_s = time.perf_counter() - t0
    assert ours_rows == n == shards * per_shard
    return {"samples": n, "ours_samples_s": n / ours_s, "webdataset_samples_s": n / lib_s, "ratio": lib_s / ours_s}


_RSS_CHILD = r"""
import resource, sys, time
sys.path.insert(0, sys.argv[1])
from curation.readers import plan_source, read_chunk
from curation.recipe import parse_recipe
recipe = parse_recipe({"sources": [{"name": "big", "kind": "image_text", "path": sys.argv[2], "chunk_size": int(sys.argv[3])}]})
import pyarrow, numpy, polars  # imported before the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
plan = plan_source(recipe, 0)
rows = 0
for spec in plan.chunks:
    t = read_chunk(recipe, spec)
    rows += t.num_rows
    del t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(rows, base, peak)
"""


def write_big_parquet(path: Path, rows: int, image_bytes: int) -> None:
    """A Cauldron-style Parquet file of large embedded images, row groups of 1,000 rows (hundreds of MB each)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = _jpegs(16)
    rng = np.random.default_rng(3)
    img_type = pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    txt_type = pa.list_(pa.struct([("user", pa.string()), ("assistant", pa.string()), ("source", pa.string())]))
    writer = pq.ParquetWriter(path, pa.schema([("images", img_type), ("texts", txt_type)]), compression="none")
    for r0 in range(0, rows, 250):
        n = min(250, rows - r0)
        imgs = [[{"bytes": base[i % 16] + rng.bytes(image_bytes), "path": None}] for i in range(n)]
        texts = [[{"user": "What is it?", "assistant": f"Row {r0 + i}.", "source": "bench"}] for i in range(n)]
        writer.write_table(pa.table({"images": pa.array(imgs, img_type), "texts": pa.array(texts, txt_type)}),
                           row_group_size=1000)
    writer.close()


def _rss(path: Path, chunk: int, expect: int) -> float:
    res = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(REPO), str(path), str(chunk)],
                         capture_output=True, text=True, check=True)
    rows, base, peak = (int(x) for x in res.stdout.split())
    assert rows == expect, (rows, expect)
    return (peak - base) / 1024


def bench_rss(tmp: Path, gb: float, chunks: list[int]) -> dict:
    """Peak RSS growth reading a >= gb shard and a >= gb Cauldron Parquet file, per chunk size (MB)."""
    folder = tmp / "big"
    folder.mkdir()
    per_sample = 512 << 10
    samples = int(gb * (1 << 30) / per_sample) + 1
    shard = write_shards(folder, 1, samples, image_bytes=per_sample)[0]
    out: dict = {"shard_gb": shard.stat().st_size / (1 << 30), "samples": samples, "tar": {}, "parquet": {}}
    for c in chunks:
        out["tar"][c] = _rss(shard, c, samples)
    shard.unlink()
    pq_path = folder / "big.parquet"
    write_big_parquet(pq_path, samples, per_sample)
    out["parquet_gb"] = pq_path.stat().st_size / (1 << 30)
    for c in chunks:
        out["parquet"][c] = _rss(pq_path, c, samples)
    pq_path.unlink()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--per-shard", type=int, default=5000)
    ap.add_argument("--big-gb", type=float, default=1.0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the generated data (printed path)")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.shards, args.per_shard = 20_000, 4, 1000
    tmp = Path(tempfile.mkdtemp(prefix="bench-readers-", dir="/tmp"))
    try:
        c = bench_cauldron(tmp, args.rows)
        print(f"cauldron parquet: {c['rows']} rows, {c['file_mb']:.0f} MB; cauldron reader {c['ours_rows_s']:,.0f} rows/s, "
              f"datasets iteration {c['datasets_rows_s']:,.0f} rows/s (x{c['ratio']:.1f}); "
              f"datasets' one-off Arrow conversion {c['datasets_load_s']:.1f} s")
        w = bench_webdataset(tmp, args.shards, args.per_shard)
        print(f"webdataset shards: {w['samples']} samples; webdataset reader {w['ours_samples_s']:,.0f} samples/s, "
              f"webdataset library {w['webdataset_samples_s']:,.0f} samples/s (x{w['ratio']:.1f})")
        r = bench_rss(tmp, args.big_gb, [32] if args.quick else [32, 256])
        for what, size in (("tar", r["shard_gb"]), ("parquet", r["parquet_gb"])):
            parts = ", ".join(f"chunk {c}: peak RSS +{v:.0f} MB" for c, v in r[what].items())
            print(f"one {what} file of {size:.2f} GB ({r['samples']} samples with a 512 KB image): {parts}")
    finally:
        if args.keep:
            print(f"data kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
