"""Curation throughput: image decode+metadata+filters vs a bare PIL loop, and Ray 1 vs 2 workers.

Usage::

    .venv/bin/python benchmarks/bench_curation.py [--realdata ../shared/realdata] [--images 600] [--rounds 5]

1. Images per second on one core over the real corpus's images: the curation
   image path (header probe with bomb guard, reduced decode via JPEG draft,
   low-information and blur scores, every threshold) against the loop a user
   would otherwise write, ``Image.open(path).load()`` over the same files.
   Each side runs ``--rounds`` times, interleaved; the median round is reported.
2. ``smolcurate curate`` on the Ray engine with 1 and with 2 workers over a
   generated corpus of ``--images`` photo-like JPEGs (one shared Ray, started
   before timing; each job includes its actor start-up).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _image_files(root: Path) -> list[Path]:
    from curation.readers.files import KIND_EXTENSIONS, enumerate_files

    _, entries = enumerate_files([str(root / "images")], KIND_EXTENSIONS["images"])
    return [Path(e.path) for e in entries]


def bench_images(realdata: Path, rounds: int) -> dict[str, float]:
    import warnings

    from PIL import Image

    from curation.engine.chunk import apply_operators
    from curation.filters import source_operators
    from curation.readers import plan_source, read_chunk
    from curation.recipe import parse_recipe

    files = _image_files(realdata)
    recipe = parse_recipe({"sources": [{"name": "photos", "kind": "images", "path": str(realdata / "images"),
                                        "chunk_size": 10_000}]})
    spec = plan_source(recipe, 0).chunks[0]
    ops = source_operators(recipe, 0)

    def bare() -> int:
        ok = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for p in files:
                try:
                    with Image.open(p) as im:
                        im.load()
                    ok += 1
                except Exception:
                    pass
        return ok

    def curation() -> int:
        kept, _ = apply_operators(read_chunk(recipe, spec), ops)
        return kept.num_rows

    bare(), curation()  # warm the page cache and imports
    t_bare, t_cur = [], []
    for _ in range(rounds):
        t0 = time.process_time(); bare(); t_bare.append(time.process_time() - t0)
        t0 = time.process_time(); curation(); t_cur.append(time.process_time() - t0)
    n = len(files)
    b, c = statistics.median(t_bare), statistics.median(t_cur)
    return {"files": n, "bare_ips": n / b, "curation_ips": n / c, "ratio": b / c}


def _corpus(root: Path, n: int, distinct: int = 120) -> Path:
    """``n`` JPEGs: ``distinct`` generated photos, repeated as byte copies (decode work is the same per file)."""
    import shutil

    from curation import synth

    folder = root / f"photos_{n}"
    if folder.is_dir() and len(list(folder.iterdir())) == n:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(min(n, distinct)):
        synth.photo_like(10_000 + i, (1600, 1200)).save(folder / f"{i:05d}.jpg", quality=92)
    for i in range(distinct, n):
        shutil.copyfile(folder / f"{i % distinct:05d}.jpg", folder / f"{i:05d}.jpg")
    return folder


def bench_ray(n_images: int, cache: Path) -> dict[str, float]:
    from curation.engine.job import run_job
    from curation.engine.ray_session import cluster_cpus, init_ray
    from curation.recipe import parse_recipe

    folder = _corpus(cache, n_images)
    recipe = parse_recipe({"sources": [{"name": "photos", "kind": "images", "path": str(folder), "chunk_size": 32}],
                           "filters": {"image": {"min_sharpness": 5, "analysis_side": 256}}})
    init_ray(None, None, quiet=True)
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            t0 = time.perf_counter()
            res = run_job(recipe, Path(tmp) / f"w{workers}", engine="ray", workers=workers, quiet=True, overwrite=True)
            times[workers] = time.perf_counter() - t0
            assert res.workers == workers, f"Ray offers {cluster_cpus()} CPUs"
    return {"images": n_images, "w1_s": times[1], "w2_s": times[2], "speedup": times[1] / times[2]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--realdata", type=Path, default=REPO.parent / "shared" / "realdata")
    ap.add_argument("--images", type=int, default=2400, help="images for the Ray scaling run")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "smolcurate-bench")
    ap.add_argument("--skip-ray", action="store_true")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    if args.realdata.is_dir():
        r = bench_images(args.realdata, args.rounds)
        print(f"images ({r['files']} real files, one core, CPU time, median of {args.rounds} rounds):")
        print(f"  bare PIL open+load      {r['bare_ips']:8.1f} images/s")
        print(f"  curation decode+scores  {r['curation_ips']:8.1f} images/s")
        print(f"  ratio curation / bare   {r['ratio']:8.2f}x  (target >= 1.0x)")
    else:
        print(f"images: skipped, no real corpus at {args.realdata}")
    if not args.skip_ray:
        r = bench_ray(args.images, args.cache)
        print(f"ray ({r['images']} 1600x1200 JPEGs, wall time incl. actor start-up):")
        print(f"  1 worker   {r['w1_s']:7.2f} s")
        print(f"  2 workers  {r['w2_s']:7.2f} s")
        print(f"  speedup    {r['speedup']:7.2f}x  (target >= 1.6x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
