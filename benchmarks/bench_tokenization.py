"""Tokenization throughput against the tools a user would otherwise pick, on the same inputs, one run.

    python benchmarks/bench_tokenization.py [--preset smolvlm-256m] [--rows 1000000] [--workers 2]

1. Split + normalize: ``Strategy.split_image`` against transformers'
   ``SmolVLMImageProcessorPil`` (one image per call, ``return_tensors="np"``), on
   every readable image of ../shared/realdata/images. Each image is timed on both
   back to back so load changes on a shared machine hit both alike, and every
   output is checked for parity (same grid, pixels within 1/255). The threaded
   batch path (``split_images(workers=N)``) is reported separately: it uses N
   cores where the processor uses one.
2. Token budgets: ``tokenization.token_counts`` over synthetic manifest metadata
   rows (images, document pages, videos, text), against a per-row Python loop
   over transformers' ``get_number_of_image_patches`` (image rows only, on a
   sample, extrapolated).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import tokenization  # noqa: E402
from media import IMAGE_EXTENSIONS  # noqa: E402
from manifests.schema import MEDIA_TYPE  # noqa: E402

REALDATA = Path(os.environ.get("SMOLCURATE_REALDATA", REPO.parent / "shared" / "realdata"))


def load_images() -> list[tuple[str, Image.Image]]:
    out = []
    for p in sorted((REALDATA / "images").rglob("*")):
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        try:
            im = Image.open(p)
            im.load()
        except Exception:
            continue  # the corpus has corrupt files on purpose
        out.append((str(p.relative_to(REALDATA)), im))
    return out


def resample_chain(s, im: Image.Image) -> None:
    """Only the Pillow LANCZOS resizes parity requires (the floor of any bit-exact implementation)."""
    from tokenization import pixels

    plan = s.plan_image(*im.size)
    rgb = pixels.to_rgb(im)
    resized = pixels.resize(rgb, *plan.resized)
    snapped = pixels.resize(resized, *plan.size)
    pixels.resize(snapped, s.tile, s.tile)


def bench_split(preset: str, workers: int) -> dict:
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

    s = tokenization.get_strategy(preset)
    proc = SmolVLMImageProcessorPil(size={"longest_edge": s.longest_edge}, max_image_size={"longest_edge": s.tile})
    images = load_images()
    # warm both code paths once (imports, allocator)
    proc(images=[images[0][1]], return_tensors="np")
    s.split_image(images[0][1])
    t_ref = t_ours = t_floor = 0.0
    worst = 0.0
    tiles = 0
    for name, im in images:
        t0 = time.perf_counter()
        ref = proc(images=[im], return_tensors="np", return_row_col_info=True)
        t1 = time.perf_counter()
        got = s.split_image(im)
        t2 = time.perf_counter()
        resample_chain(s, im)
        t3 = time.perf_counter()
        t_ref += t1 - t0
        t_ours += t2 - t1
        t_floor += t3 - t2
        pv = ref["pixel_values"][0]
        if (got.rows, got.cols) != (ref["rows"][0][0], ref["cols"][0][0]) or got.tiles.shape != pv.shape:
            raise SystemExit(f"parity failure on {name}: grid {got.rows}x{got.cols} vs {ref['rows'][0][0]}x{ref['cols'][0][0]}")
        worst = max(worst, float(np.abs(got.tiles - pv).max()))
        tiles += got.tiles.shape[0]
    n = len(images)
    pil = [im for _, im in images]
    # stream in small batches, as a data loader would: holding all 1099 float tiles at once
    # (~3.4 GB) would time the allocator instead of the splitter
    batch = 2 * workers
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        s.split_images(pil[i : i + batch], workers=workers)
    t_threads = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        s.split_images(pil[i : i + batch], workers=1)
    t_serial = time.perf_counter() - t0
    return {
        "images": n, "tiles": tiles, "max_abs_diff": worst,
        "ref_ips": n / t_ref, "ours_ips": n / t_ours, "ratio": t_ref / t_ours,
        "floor_ips": n / t_floor, "floor_ratio": t_ref / t_floor,
        "serial_ips": n / t_serial, "threads_ips": n / t_threads, "threads_ratio": t_ref / t_threads,
    }


def synthetic_rows(n: int, seed: int = 0) -> pa.Table:
    """Manifest-shaped metadata: 60% images (10% with two), 15% documents (1-4 pages), 10% videos, 15% text."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(np.array(["image", "video", "document", "text"]), n, p=[0.6, 0.1, 0.15, 0.15])
    per_row = np.where(kind == "text", 0, np.where(kind == "document", rng.integers(1, 5, n), 1))
    per_row = np.where((kind == "image") & (rng.random(n) < 0.1), 2, per_row)
    offsets = np.concatenate([[0], np.cumsum(per_row)]).astype(np.int32)
    m = int(offsets[-1])
    entry = np.repeat(kind, per_row)
    video = entry == "video"
    width = rng.integers(16, 4000, m).astype(np.int32)
    height = rng.integers(16, 4000, m).astype(np.int32)
    duration = np.where(video, rng.uniform(1, 600, m), np.nan)
    fps = np.where(video, rng.choice([24.0, 25.0, 30.0], m), np.nan)
    frames = np.where(video, np.round(np.nan_to_num(duration * fps)), 0).astype(np.int64)
    kinds = np.where(video, "video", np.where(entry == "document", "page", "image"))
    nulls = lambda t: pa.nulls(m, t)  # noqa: E731
    struct = pa.StructArray.from_arrays(
        [nulls(pa.string()), nulls(pa.binary()), pa.array(kinds), nulls(pa.string()), pa.array(width), pa.array(height),
         nulls(pa.int32()), nulls(pa.float32()), pa.array(duration, from_pandas=True), pa.array(fps, from_pandas=True),
         pa.array(frames), nulls(pa.int16())],
        fields=list(MEDIA_TYPE),
    )
    media = pa.ListArray.from_arrays(pa.array(offsets), struct)
    lens = rng.integers(0, 600, n)
    letters = np.frombuffer(b"abcdefghij klmnopqrstuvwxyz .,", dtype=np.uint8)
    body = letters[rng.integers(0, len(letters), int(lens.sum()))].tobytes()
    text = pa.StringArray.from_buffers(n, pa.py_buffer(np.concatenate([[0], np.cumsum(lens)]).astype(np.int32).tobytes()), pa.py_buffer(body))
    return pa.table({"media": media, "text": text})


def bench_budget(preset: str, rows: int) -> dict:
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

    s = tokenization.get_strategy(preset)
    table = synthetic_rows(rows)
    t0 = time.perf_counter()
    out = tokenization.token_counts(table, s)
    t_ours = time.perf_counter() - t0
    # peer: a per-row loop over the helper transformers exposes for counting patches (images only)
    proc = SmolVLMImageProcessorPil(size={"longest_edge": s.longest_edge}, max_image_size={"longest_edge": s.tile})
    sample = table.slice(0, min(rows, 50_000)).column("media").to_pylist()
    t0 = time.perf_counter()
    total = 0
    for media in sample:
        for m in media or ():
            if m["kind"] != "video":
                patches, _, _ = proc.get_number_of_image_patches(m["height"], m["width"])
                total += max(patches, 1) * s.image_seq_len
    t_peer = (time.perf_counter() - t0) / len(sample) * rows
    return {"rows": rows, "ours_rps": rows / t_ours, "peer_rps": rows / t_peer, "ratio": t_peer / t_ours,
            "total_tokens": int(pa.compute.sum(out.column("tokens")).as_py())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="smolvlm-256m")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-split", action="store_true")
    args = ap.parse_args()
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, preset {args.preset}")
    if not args.skip_split:
        r = bench_split(args.preset, args.workers)
        print(f"split+normalize: {r['images']} real images ({r['tiles']} tiles), max |diff| {r['max_abs_diff']:.2e} (normalized units)")
        print(f"  transformers SmolVLMImageProcessorPil: {r['ref_ips']:.2f} images/s")
        print(f"  tokenization split_image (1 thread):   {r['ours_ips']:.2f} images/s   -> {r['ratio']:.2f}x")
        print(f"  floor: the Pillow resizes alone:       {r['floor_ips']:.2f} images/s   -> {r['floor_ratio']:.2f}x (upper bound for any implementation that resamples with Pillow)")
        print(f"  tokenization split_images (workers={args.workers}): {r['threads_ips']:.2f} images/s   -> {r['threads_ratio']:.2f}x "
              f"(serial batch {r['serial_ips']:.2f} images/s)")
    b = bench_budget(args.preset, args.rows)
    print(f"token budgets: {b['rows']:,} metadata rows, {b['total_tokens']:,} tokens")
    print(f"  tokenization.token_counts:                        {b['ours_rps'] / 1e6:.2f} M rows/s")
    print(f"  per-row loop, transformers get_number_of_image_patches: {b['peer_rps'] / 1e6:.4f} M rows/s   -> {b['ratio']:.0f}x")


if __name__ == "__main__":
    main()
