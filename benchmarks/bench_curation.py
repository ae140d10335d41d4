"""Curation throughput on the real images: the chain vs a bare Pillow loop, the decoder floor, Ray 1 vs 2 workers.

Usage::

    .venv/bin/python benchmarks/bench_curation.py [--realdata ../shared/realdata] [--rounds 5] [--quick]

One run, every figure a ratio measured in that run, on the same files
(``../shared/realdata/images``):

1. **Per core** (CPU time of the process, decode threads = 1, median of
   ``--rounds`` interleaved rounds) against ``Image.open(path).load()`` over the
   same files:
   - ``curate`` with the default image filters (the real chain: ``read_chunk``,
     the shared decode, analyzer, filter);
   - the same with ``dedup: {exact: true, image: {}}`` (byte hash, pixel hash of
     a full decode, pHash, colour moments);
   - for each, the **shared decode** alone (:func:`media.decode_media` with the
     chain's merged needs: decode, digests, reductions, thumbnails) and the
     **decoder alone** (read + the decode those needs require, DCT-scaled or
     full): the floor no chain built on these decoders can beat.
   Reads and decodes per input are counted (:mod:`media.counters`) in the same runs; for the real videos
   too (one pass of the video chain, counts only), whole and cut into clips (scene scans per video file).
2. **Threads**: wall time of the default-filter chain with ``decode.threads``
   = 2 vs 1 (only meaningful on an idle machine).
3. **Ray** (wall time incl. actor start-up): ``smolcurate curate`` with 1 and 2
   workers over the same images repeated as byte copies (``--copies`` times), and the same job over
   one chunk: the fixed cost that no number of workers shortens. CPU seconds of the workers, the driver
   and Ray's daemons during each run (psutil) show what else shares the cores.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHUNK = 64  # images per chunk in the Ray part
sys.path.insert(0, str(REPO))


def _image_files(root: Path) -> list[Path]:
    from curation.readers.files import KIND_EXTENSIONS, enumerate_files

    _, entries = enumerate_files([str(root / "images")], KIND_EXTENSIONS["images"])
    return [Path(e.path) for e in entries]


def _recipe(realdata: Path, dedup: dict | None, threads: int = 1):
    from curation.recipe import parse_recipe

    body = {"sources": [{"name": "photos", "kind": "images", "path": str(realdata / "images"), "chunk_size": 10_000}],
            "decode": {"threads": threads}}
    if dedup is not None:
        body["dedup"] = dedup
    return parse_recipe(body)


def _chain(recipe):
    from curation.engine.chunk import apply_operators
    from curation.filters import source_operators
    from curation.readers import plan_source, read_chunk

    spec = plan_source(recipe, 0).chunks[0]
    ops = source_operators(recipe, 0)
    for op in ops:
        op.setup()

    def run() -> int:
        kept, _ = apply_operators(read_chunk(recipe, spec), ops)
        return kept.num_rows

    return run, ops[0].shared.needs


def bench_images(realdata: Path, rounds: int) -> dict:
    import warnings

    from PIL import Image

    from media import MediaError, counters
    from media.decoded import decode_media
    from media.files import read_bytes
    from media.image import load_image

    files = _image_files(realdata)
    refs = [{"kind": "image", "uri": str(p)} for p in files]

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

    def decoder(needs) -> int:
        """The decoder's own work for ``needs``: read the file, decode it (DCT-scaled unless a full decode is
        needed), nothing else -- the floor of any chain built on these decoders."""
        side = max(needs.grey_side or 0, needs.rgb_side or 0) or None
        draft = None if needs.full_pixels or not side else ("RGB" if needs.rgb_side else "L", side)
        ok = 0
        for p in files:
            try:
                data, _ = read_bytes(str(p))
                load_image(str(p), draft=draft, data=data)
                ok += 1
            except MediaError:
                pass
        return ok

    configs = {"filters": None, "exact+image": {"exact": True, "image": {}}}
    fns, counts = {"bare": bare}, {}
    for name, dedup in configs.items():
        run, needs = _chain(_recipe(realdata, dedup))
        fns[name] = run
        fns[f"shared:{name}"] = lambda needs=needs: [decode_media(r, needs) for r in refs]
        fns[f"decoder:{name}"] = lambda needs=needs: decoder(needs)
    for name, fn in fns.items():  # warm imports and the page cache; count the chains' reads and decodes
        counters.reset()
        with counters.counting() as c:
            fn()
        if name in configs:
            counts[name] = {k: v / len(files) for k, v in c.items()}
    timings: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            t0 = time.process_time()
            fn()
            timings[key].append(time.process_time() - t0)
    med = {k: statistics.median(v) for k, v in timings.items()}
    return {"files": len(files), "cpu_s": med, "counts": counts}


def video_counts(realdata: Path, clips: dict | None = None) -> dict:
    """Reads, probes, scans and frame decodes per video of ``curate`` (default filters, exact and video dedup)
    on the real videos, whole or cut into ``clips``: counts only (one pass), no timing. ``rows``: the rows
    (clips) the chain decoded per video."""
    from curation.recipe import parse_recipe
    from media import counters

    src = {"name": "clips", "kind": "video", "path": str(realdata / "videos"), "chunk_size": 10_000}
    if clips is not None:
        src["clips"] = clips
    recipe = parse_recipe({"sources": [src], "dedup": {"exact": True, "video": {}}})
    run, _ = _chain(recipe)
    counters.reset()
    with counters.counting() as c:
        rows = run()
    from curation.readers.files import KIND_EXTENSIONS, enumerate_files

    n = len(enumerate_files([str(realdata / "videos")], KIND_EXTENSIONS["video"])[1])
    return {"videos": n, "rows": rows / n, **{k: v / n for k, v in c.items()}}


def bench_threads(realdata: Path, rounds: int) -> dict:
    out = {}
    for threads in (1, 2):
        run, _ = _chain(_recipe(realdata, None, threads))
        run()
        ts = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            run()
            ts.append(time.perf_counter() - t0)
        out[threads] = statistics.median(ts)
    return out


def _copies(realdata: Path, cache: Path, copies: int) -> Path:
    """The real images, each repeated ``copies`` times as byte copies (decode work is the same per file)."""
    files = _image_files(realdata)
    folder = cache / f"realdata_x{copies}"
    if folder.is_dir() and sum(1 for _ in folder.iterdir()) == len(files) * copies:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i, p in enumerate(files):
        for c in range(copies):
            shutil.copyfile(p, folder / f"{i:03d}_{c:03d}{p.suffix.lower()}")
    return folder


class CpuSampler(threading.Thread):
    """CPU seconds of the driver, the Ray workers and Ray's daemons during one job (psutil, every 0.1 s).

    A process's CPU time is read while it lives; the last sample before it exits is what counts, so a
    worker that ends between samples loses at most 0.1 s.
    """

    def __init__(self) -> None:
        super().__init__(daemon=True)
        import psutil

        self.root = psutil.Process()
        self.start_cpu: dict[int, float] = {}
        self.last_cpu: dict[int, float] = {}
        self.kind: dict[int, str] = {}
        self.stop_event = threading.Event()
        self._sample(initial=True)

    def _sample(self, initial: bool = False) -> None:
        import psutil

        for proc in [self.root, *self.root.children(recursive=True)]:
            try:
                t = proc.cpu_times()
                cpu = t.user + t.system
                if proc.pid not in self.kind:
                    self.kind[proc.pid] = self._kind(proc)
            except psutil.Error:
                continue
            if initial:
                self.start_cpu[proc.pid] = cpu
            self.last_cpu[proc.pid] = cpu

    def _kind(self, proc) -> str:
        if proc.pid == self.root.pid:
            return "driver"
        cmd = " ".join(proc.cmdline())
        return "workers" if cmd.startswith("ray::") or "default_worker.py" in cmd else "daemons"

    def run(self) -> None:
        while not self.stop_event.wait(0.1):
            self._sample()

    def totals(self) -> dict[str, float]:
        self.stop_event.set()
        self.join()
        self._sample()
        out = {"driver": 0.0, "workers": 0.0, "daemons": 0.0}
        for pid, cpu in self.last_cpu.items():
            out[self.kind[pid]] += cpu - self.start_cpu.get(pid, 0.0)
        return out


def bench_ray(realdata: Path, cache: Path, copies: int) -> dict:
    """Wall time of 1 and 2 workers over the copies, and of the same job over one chunk (the fixed cost).

    ``fixed`` (start-up, planning, the last chunk's tail, finalize) does not shrink with workers, so the
    speedup of the rest, ``(t1 - f1) / (t2 - f2)``, is what two workers do to the part that scales; the
    CPU seconds say who else (driver, Ray daemons) used the two cores meanwhile.
    """
    from curation.engine.job import run_job
    from curation.engine.ray_session import cluster_cpus, init_ray
    from curation.recipe import parse_recipe

    folder = _copies(realdata, cache, copies)
    files = sorted(folder.iterdir())
    one = cache / "ray-one-chunk"
    shutil.rmtree(one, ignore_errors=True)
    one.mkdir(parents=True)
    for f in [f for f in files if f.stem.endswith("_000")][:CHUNK]:  # one copy of each real image
        shutil.copyfile(f, one / f.name)
    init_ray(None, None, quiet=True)
    times: dict[tuple[str, int], float] = {}
    cpu: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            for name, src in (("one", one), ("all", folder)):
                recipe = parse_recipe({"sources": [{"name": "photos", "kind": "images", "path": str(src), "chunk_size": CHUNK}]})
                sampler = CpuSampler()
                sampler.start()
                t0 = time.perf_counter()
                res = run_job(recipe, Path(tmp) / f"{name}{workers}", engine="ray", workers=workers, quiet=True, overwrite=True)
                times[name, workers] = time.perf_counter() - t0
                totals = sampler.totals()
                if name == "all":
                    cpu[workers] = totals
                assert res.workers == workers, f"Ray offers {cluster_cpus()} CPUs"
    t1, t2, f1, f2 = times["all", 1], times["all", 2], times["one", 1], times["one", 2]
    return {"images": len(files), "w1_s": t1, "w2_s": t2, "speedup": t1 / t2, "f1_s": f1, "f2_s": f2,
            "scaling": (t1 - f1) / (t2 - f2), "cpu": cpu}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--realdata", type=Path, default=REPO.parent / "shared" / "realdata")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--copies", type=int, default=150,
                    help="byte copies of each real image for the Ray run (150: 11,850 images, ~50 s of one core)")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "smolcurate-bench")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--quick", action="store_true", help="3 rounds, 8 copies (a smoke run, under a minute)")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.copies = 3, 8
    if not args.realdata.is_dir():
        print(f"no real corpus at {args.realdata}")
        return 2
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    r = bench_images(args.realdata, args.rounds)
    n, t = r["files"], r["cpu_s"]
    print(f"images ({n} real files, one core, CPU time, median of {args.rounds} rounds):")
    print(f"  bare PIL open+load              {n / t['bare']:8.1f} images/s")
    for name, target in (("filters", 1.5), ("exact+image", 1.0)):
        c = r["counts"][name]
        print(f"  curate, {name:<12}            {n / t[name]:8.1f} images/s  {t['bare'] / t[name]:5.2f}x bare"
              f"  (target >= {target}x)")
        for key, what in (("shared", "shared decode (decoder + hashes, reductions)"),
                          ("decoder", "decoder alone (read + decode): the floor")):
            print(f"    {what:<46} {n / t[key + ':' + name]:8.1f} images/s  {t['bare'] / t[key + ':' + name]:5.2f}x bare")
        print(f"    per input: {c.get('read.image', 0):.2f} file reads, {c.get('decode.image', 0):.2f} decodes")
    v = video_counts(args.realdata)
    print(f"videos ({v['videos']} real files, default filters + exact and video dedup): per input "
          f"{v.get('read.video', 0):.2f} file reads, {v.get('probe.video', 0):.2f} probes, "
          f"{v.get('decode.video', 0):.2f} frame decodes")
    v = video_counts(args.realdata, {"method": "scenes"})
    print(f"  cut into clips (scenes): per video file {v.get('read.video', 0):.2f} file reads, "
          f"{v.get('scan.video', 0):.2f} scans, {v.get('probe.video', 0):.2f} probes, "
          f"{v.get('decode.video', 0):.2f} frame decodes (one per clip), {v['rows']:.2f} clips kept")
    th = bench_threads(args.realdata, args.rounds)
    print(f"threads (wall, default filters): 1 thread {th[1]:.3f} s, 2 threads {th[2]:.3f} s -> {th[1] / th[2]:.2f}x")
    if not args.skip_ray:
        r = bench_ray(args.realdata, args.cache, args.copies)
        print(f"ray ({r['images']} real images as byte copies, default filters, wall time incl. actor start-up):")
        for w in (1, 2):
            c = r["cpu"][w]
            print(f"  {w} worker{'s' if w > 1 else ' '}  {r[f'w{w}_s']:7.2f} s   one chunk ({CHUNK} images) {r[f'f{w}_s']:5.2f} s   "
                  f"CPU s: workers {c['workers']:6.2f}, driver {c['driver']:5.2f}, Ray daemons {c['daemons']:5.2f}")
        print(f"  speedup    {r['speedup']:7.2f}x  (target >= 1.8x)")
        print(f"  speedup of the part that scales, (t1 - one chunk) / (t2 - one chunk): {r['scaling']:.2f}x")
        c2 = r["cpu"][2]
        need = c2["workers"] + c2["driver"] + c2["daemons"]
        print(f"  2 workers: the 2 cores ran {need:.1f} CPU s (workers {c2['workers']:.1f}, driver and daemons "
              f"{c2['driver'] + c2['daemons']:.1f}), so no schedule beats {need / 2:.1f} s: a ceiling of "
              f"{r['w1_s'] / (need / 2):.2f}x; the rest of the gap is the serial start and finalize")
    return 0


if __name__ == "__main__":
    sys.exit(main())
