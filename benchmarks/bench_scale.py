"""Scale on paper, from measurement: peak RSS of the driver and of every Ray worker, per million rows.

Four workloads, each run in a fresh child process (the "driver") while a
sampling thread in this process reads, every ``--interval`` seconds, the RSS of
the driver and of every process under it (psutil): Ray workers (``ray::*``
processes: Ray Data actors of the map stage, the resolve stage's partition
tasks) are reported one by one, Ray's own daemons (raylet, GCS, dashboard)
together. The driver's peak is also its own high-water mark (``VmHWM``, exact; not ``ru_maxrss``,
which Linux carries over from the parent that started it).

- ``text``: ``smolcurate curate`` on the Ray engine (``--workers``) over a
  Parquet table of synthetic text rows with exact and MinHash dedup (image and
  video off). Rows are 24-40 words of a 30k-word vocabulary; 10% are exact
  copies of an earlier row of their block and 10% near copies (last word
  replaced: Jaccard of word 5-grams >= 0.9), so families
  of 2-4 rows span many chunks.
- ``images``: the resolve stage (``resolve_parts``, as a job runs it, with the Ray engine's
  ``map_fn``) over staged signature files shaped as the map stage writes them:
  64-bit pHash, chroma, detail, area, bytes and pixel digests. 10% are
  byte-identical copies of an original, 10% re-encodes (other bytes and
  pixels, pHash within 0-4 bits, chroma within 1) and 5% crops or resizes
  (pHash within 0-6 bits): families of one original and 0-4 copies. Thumbnail
  verification is off (no thumbnails are synthesised: the path measured is
  bucket keys -> pair check -> clusters).
- ``crops``: the same with six crop-window hashes per row (``sig_phash_win``,
  what ``image.crops: true`` adds to single images).
- ``mix``: ``build_mixture`` by samples over two synthetic metadata manifests
  (``benchmarks/bench_mixing.py``'s layout) that live on an S3 store: a moto
  server in its own process on 127.0.0.1 (``--store moto``, default) or
  ``file://`` (``--store file``). The mixture's output goes to the same store.

Sizes are one number or a comma list; with two or more, the per-million-row
slope between the smallest and the largest is printed too. Results and the
commands used: benchmarks/README.md ("Scale"); what they mean: docs/scale.md.

    .venv/bin/python benchmarks/bench_scale.py     # text 10M, images 1M, crops 100k, mix 10M
    .venv/bin/python benchmarks/bench_scale.py --only text --text-rows 1000000,3000000
    .venv/bin/python benchmarks/bench_scale.py --only text --text-rows 1000000,3000000 --phases  # per phase, and a timeline
    .venv/bin/python benchmarks/bench_scale.py --only mix --mix-rows 3000000,10000000 --phases    # the mixing job per pass
    .venv/bin/python benchmarks/bench_scale.py --rows 20000          # smoke run of all four

Time figures are indicative (a shared 2-core machine); memory is the point.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MB = 1 << 20
TEXT_CHUNK = 50_000  # rows per curation chunk of the text job
IMAGE_FILE_ROWS = 20_000  # rows per staged signature file of the image job


# ----------------------------------------------------------------------------- sampling


class Sampler(threading.Thread):
    """Peak RSS per process of a process tree: the root (driver), Ray workers one by one, Ray daemons."""

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        import psutil

        self.root = psutil.Process(pid)
        self.interval = interval
        self.stop_event = threading.Event()
        self.peak: dict[int, int] = {}
        self.label: dict[int, str] = {}
        self.timeline: list[tuple[float, int, int]] = []  # (t, driver rss, sum of worker rss)
        self.t0 = time.perf_counter()

    def run(self) -> None:
        import psutil

        while not self.stop_event.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                break
            drv = wsum = 0
            for p in procs:
                try:
                    rss = p.memory_info().rss
                    if p.pid not in self.label or self.label[p.pid].startswith(("python", "ray::IDLE", "?")):
                        self.label[p.pid] = self._label(p)
                except psutil.Error:
                    continue
                self.peak[p.pid] = max(self.peak.get(p.pid, 0), rss)
                if p.pid == self.root.pid:
                    drv = rss
                elif self._is_worker(self.label[p.pid]):
                    wsum += rss
            self.timeline.append((time.perf_counter() - self.t0, drv, wsum))
            self.stop_event.wait(self.interval)

    def _label(self, p) -> str:
        if p.pid == self.root.pid:
            return "driver"
        try:
            cmd = p.cmdline()
        except Exception:  # noqa: BLE001 - a process that just ended
            return "?"
        if cmd and cmd[0].startswith("ray::"):
            return cmd[0]
        text = " ".join(cmd)
        if "default_worker.py" in text:
            return "ray::IDLE"
        name = Path(cmd[0]).name if cmd else p.name()
        for known in ("raylet", "gcs_server", "dashboard", "log_monitor", "monitor.py", "runtime_env", "dashboard_agent"):
            if known in text:
                return f"ray-daemon:{known}"
        return name

    @staticmethod
    def _is_worker(label: str) -> bool:
        return label.startswith("ray::")

    def report(self) -> dict[str, Any]:
        workers = sorted(((self.label[p], v) for p, v in self.peak.items() if self._is_worker(self.label.get(p, ""))),
                         key=lambda kv: -kv[1])
        daemons = sum(v for p, v in self.peak.items() if self.label.get(p, "").startswith("ray-daemon"))
        return {
            "driver_mb": self.peak.get(self.root.pid, 0) / MB,
            "workers_mb": [(name, v / MB) for name, v in workers],
            "worker_max_mb": max((v for _, v in workers), default=0) / MB,
            "daemons_mb": daemons / MB,
            "peak_driver_at_s": max(self.timeline, key=lambda x: x[1])[0] if self.timeline else 0.0,
        }


def measured(args: list[str], interval: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``bench_scale.py _child ARGS`` under the sampler; returns the child's JSON plus the sampled peaks."""
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "_child", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
                            start_new_session=True)
    sampler = Sampler(proc.pid, interval)
    sampler.start()
    out, err = proc.communicate()
    sampler.stop_event.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"child {args[0]} failed (exit {proc.returncode}):\n{err[-3000:]}")
    res = json.loads(out.strip().splitlines()[-1])
    res.update(sampler.report())
    # the sampler can miss a short peak between two samples; the child's own high-water mark cannot
    res["driver_mb"] = max(res["driver_mb"], res.get("driver_hwm_mb", 0.0))
    return res


def _peak_rss_mb() -> float:
    """The child's own peak RSS: ``VmHWM``, not ``ru_maxrss``.

    Linux carries ``ru_maxrss`` across ``exec``: a child started from this (parent) process reports at least the
    parent's peak, and the parent may just have generated gigabytes of synthetic rows. ``VmHWM`` is the high-water
    mark of the child's own address space.
    """
    import resource

    return _vm_hwm_mb() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


#: ``--phases``: (place in the job, name, stack marks). The driver is in the first phase, in this list's order, whose
#: mark its main thread's stack holds, so a phase called from inside another comes before it
PHASES = (
    (7, "write the shards", ("finalize.py:write_manifest",)),
    (5, "components, out of core", ("components.py:",)),
    (6, "representatives, matches, answer per file", ("clusters.py:",)),
    (4, "MinHash verification", ("textverify.py:", "buckets.py:dedupe_by_kind")),
    (3, "partition tasks", ("parallel.py:ray_map",)),
    (2, "dedup scatter, candidates and edges to blocks", ("resolve.py:_resolve", "records.py:")),
    (1, "repeated ids (id_fixups)", ("finalize.py:id_fixups",)),
    (0, "map stage", ("ray_engine.py:_pass",)),
)
#: the same for the mixing job
MIX_PHASES = (
    (4, "commit (manifest.json)", ("writer.py:commit",)),
    (3, "gather: one spill file sorted, shards written", ("write.py:_gather",)),
    (2, "scatter: selected rows to the spill files", ("write.py:_scatter",)),
    (1, "plan", ("plan.py:make_plan",)),
    (0, "scan", ("scan.py:scan_inputs", "api.py:open_inputs")),
)
OTHER = "outside the phases above (setup, between phases)"


#: the phases ``--phases`` reports, per workload
KIND_PHASES = {"text": PHASES, "images": PHASES, "crops": PHASES, "mix": MIX_PHASES}  # images: no map or write


def phase_order(phases: tuple) -> list[str]:
    return [name for _, name, _ in sorted(phases)] + [OTHER]  # as the job runs them


def start_phases(kind: str) -> "PhaseSampler | None":
    """The driver's phase sampler for ``kind``, started, when ``--phases`` asked for it (else None)."""
    if not os.environ.get("BENCH_SCALE_PHASES"):
        return None
    sampler = PhaseSampler(KIND_PHASES[kind])
    sampler.start()
    return sampler


class PhaseSampler(threading.Thread):
    """Inside the driver: every 50 ms its RSS, Arrow's live bytes and the phase its main thread is in (by stack)."""

    def __init__(self, phases: tuple) -> None:
        super().__init__(daemon=True)
        self.phases = phases
        self.stop_event = threading.Event()
        self.peaks: dict[str, list[float]] = {}
        self.main = threading.main_thread().ident
        self.timeline = os.environ.get("BENCH_SCALE_TIMELINE")  # one line a second: s, RSS, live Arrow, phase, frame

    def _phase(self) -> tuple[str, str]:
        """The phase the main thread is in, and its innermost smolcurate frame (for the timeline)."""
        frame = sys._current_frames().get(self.main)
        names, inner = [], ""
        while frame is not None:
            name = f"{Path(frame.f_code.co_filename).name}:{frame.f_code.co_name}"
            if not inner and any(f"/{pkg}/" in frame.f_code.co_filename for pkg in ("curation", "manifests")):
                inner = f"{name}:{frame.f_lineno}"
            names.append(name)
            frame = frame.f_back
        where = " ".join(names)
        return next((name for _, name, marks in self.phases if any(m in where for m in marks)), OTHER), inner

    def run(self) -> None:
        import psutil
        import pyarrow as pa

        me = psutil.Process()
        t0, last = time.perf_counter(), -1.0
        out = open(self.timeline, "w") if self.timeline else None
        hwm = 0.0
        while not self.stop_event.wait(0.05):
            phase, inner = self._phase()
            rss, live = me.memory_info().rss / MB, pa.total_allocated_bytes() / MB
            peak = self.peaks.setdefault(phase, [0.0, 0.0, 0.0])
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], live)
            # the kernel's high-water mark catches a peak between two samples (a long call holding the GIL)
            now_hwm = _vm_hwm_mb()
            rose = now_hwm > hwm + 1.0
            if rose:
                peak[2] = max(peak[2], now_hwm)
            hwm = max(hwm, now_hwm)
            if out is not None and ((now := time.perf_counter() - t0) - last >= 1.0 or rose):
                last = now
                out.write(f"{now:.1f}\t{rss:.0f}\t{live:.0f}\t{hwm:.0f}\t{phase}\t{inner}\n")
                out.flush()
        if out is not None:
            out.close()

    def report(self) -> dict[str, list[float]]:
        """{phase: [peak RSS, peak live Arrow, the high-water mark where it rose in this phase (0: it did not)]}."""
        self.stop_event.set()
        self.join()
        return {name: self.peaks[name] for name in phase_order(self.phases) if name in self.peaks}


def _vm_hwm_mb() -> float:
    """This process's peak RSS so far (``VmHWM``), 0 where /proc has none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# ----------------------------------------------------------------------------- text: data and job


def make_text(rows: int, path: Path, seed: int = 0, block: int = 1_000_000) -> None:
    """A Parquet table ``id, text`` of synthetic rows with exact and near-duplicate families (see module doc)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if path.is_file() and pq.ParquetFile(path).metadata.num_rows == rows:
        return
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"etaoinshrdlcumwfgypbvkjxqz", dtype=np.uint8)
    wl = rng.integers(3, 10, size=30_000)
    chars = letters[np.minimum(rng.geometric(0.18, size=int(wl.sum())) - 1, 25)]
    vocab = pa.LargeStringArray.from_buffers(len(wl), pa.py_buffer(np.concatenate([[0], np.cumsum(wl)]).astype(np.int64)),
                                             pa.py_buffer(chars.tobytes())).cast(pa.string())
    tmp = path.with_suffix(".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("id", pa.string()), ("text", pa.string())])
    with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for start in range(0, rows, block):
            n = min(block, rows - start)
            lens = rng.integers(24, 41, size=n)
            # families: a copy takes an earlier row of its block (exact), a near copy edits its end
            kind = rng.random(n)
            src = np.arange(n)
            dup = (kind < 0.2) & (src > 0)
            src[dup] = (rng.random(int(dup.sum())) * src[dup]).astype(np.int64)
            src = _resolve_chain(src)
            lens = lens[src]
            words = _rows_of_words(rng, lens, src, n)
            near = dup & (kind >= 0.1)
            off = np.concatenate([[0], np.cumsum(lens)])
            words[off[1:][near] - 1] = rng.integers(0, len(vocab), size=int(near.sum()))  # last word replaced
            lists = pa.ListArray.from_arrays(pa.array(off.astype(np.int32)), vocab.take(pa.array(words)))
            text = pc.binary_join(lists, " ")
            ids = pa.array(np.char.add("r", np.arange(start, start + n).astype(str)))
            writer.write_table(pa.table({"id": ids, "text": text}, schema=schema), row_group_size=TEXT_CHUNK)
    os.replace(tmp, path)


def _resolve_chain(src: np.ndarray) -> np.ndarray:
    """Point every copy at its family's original (a copy of a copy copies the original)."""
    while True:
        nxt = src[src]
        if np.array_equal(nxt, src):
            return src
        src = nxt


def _rows_of_words(rng: np.random.Generator, lens: np.ndarray, src: np.ndarray, n: int) -> np.ndarray:
    """Word ids per row, rows flattened; a row whose ``src`` is another row repeats that row's words."""
    base_off = np.concatenate([[0], np.cumsum(lens)])
    fresh = rng.integers(0, 30_000, size=int(base_off[-1]))
    # each row's words are those of its source row (the source has the same length)
    src_off = base_off[src]
    idx = np.repeat(src_off - base_off[:-1], lens) + np.arange(int(base_off[-1]))
    return fresh[idx]


def text_recipe(data: Path, where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    r = where / "recipe.yaml"
    r.write_text(f"""\
sources:
  - {{name: web, kind: text, path: {data}, text_column: text, id_column: id, chunk_size: {TEXT_CHUNK}}}
dedup: {{exact: true, text: {{threshold: 0.8}}, image: {{enabled: false}}, video: {{enabled: false}}}}
""")
    return r


def child_text(recipe: str, out: str, workers: str) -> dict[str, Any]:
    from curation.engine.job import run_job
    from curation.recipe import load_recipe

    phases = start_phases("text")
    t0, c0 = time.perf_counter(), _cpu_s()
    res = run_job(load_recipe(recipe), out, engine="ray", workers=int(workers), quiet=True, overwrite=True)
    dropped = {f"{st}/{rs}": n for s in res.sources.values() for (st, rs), n in s["reasons"].items()}
    return {"seconds": time.perf_counter() - t0, "driver_cpu_s": _cpu_s() - c0, "driver_hwm_mb": _peak_rss_mb(),
            "read": res.read, "kept": res.kept, "dropped": dropped, **({"phases": phases.report()} if phases else {})}


# ----------------------------------------------------------------------------- images: signatures and resolve


def make_image_sigs(rows: int, folder: Path, seed: int = 1, crops: bool = False) -> list[str]:
    """Staged signature files of image rows (as the map stage writes them) with duplicate families.

    ``crops``: each row also carries six crop-window hashes (``sig_phash_win``), as single images do
    with ``image.crops: true``; they are 6 more hashes per row in the buckets.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    done = folder / "done.json"
    if done.is_file() and json.loads(done.read_text()) == {"rows": rows, "crops": crops}:
        return sorted(str(p) for p in folder.glob("sigs-*.parquet"))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    phash = rng.integers(0, 2**63, size=rows, dtype=np.int64).astype(np.uint64) * np.uint64(2) + rng.integers(0, 2, size=rows).astype(np.uint64)
    nbytes = rng.integers(20_000, 400_000, size=rows)
    area = rng.integers(64, 2048, size=rows) * rng.integers(64, 2048, size=rows)
    chroma = rng.normal(0, 12, size=(rows, 3)).astype(np.float32)
    chroma[:, 2] = np.hypot(chroma[:, 0], chroma[:, 1])
    detail = rng.uniform(5, 60, size=rows).astype(np.float32)
    content = rng.integers(0, 2**63, size=(rows, 2), dtype=np.int64)  # byte digest halves
    pixels = rng.integers(0, 2**63, size=(rows, 2), dtype=np.int64)
    windows = rng.integers(0, 2**63, size=(rows, 6), dtype=np.int64).astype(np.uint64)
    kind = rng.random(rows)
    src = np.flatnonzero(kind >= 0.25)  # originals
    copy = np.flatnonzero(kind < 0.10)
    reenc = np.flatnonzero((kind >= 0.10) & (kind < 0.20))
    cropped = np.flatnonzero((kind >= 0.20) & (kind < 0.25))

    def flips(n: int, max_bits: int) -> np.ndarray:
        k = rng.integers(0, max_bits + 1, size=n)
        bits = rng.integers(0, 64, size=(n, max(max_bits, 1)))
        m = np.zeros(n, np.uint64)
        for j in range(max_bits):
            m ^= np.where(j < k, np.uint64(1) << bits[:, j].astype(np.uint64), np.uint64(0))
        return m

    for members, same_bytes, same_pixels, max_bits in ((copy, True, True, 0), (reenc, False, False, 4), (cropped, False, False, 6)):
        if not members.size:
            continue
        orig = src[rng.integers(0, src.size, size=members.size)]
        phash[members] = phash[orig] ^ flips(members.size, max_bits)
        chroma[members] = chroma[orig] + rng.uniform(-1, 1, size=(members.size, 3)).astype(np.float32) * (not same_bytes)
        chroma[members, 2] = np.hypot(chroma[members, 0], chroma[members, 1])
        detail[members] = detail[orig]
        if same_bytes:
            content[members] = content[orig]
            nbytes[members] = nbytes[orig]
            area[members] = area[orig]
        if same_pixels:
            pixels[members] = pixels[orig]
    digest = pa.binary(16)

    def digests(a: np.ndarray) -> pa.Array:
        return pa.FixedSizeBinaryArray.from_buffers(digest, len(a), [None, pa.py_buffer(np.ascontiguousarray(a).tobytes())])

    paths = []
    for f, start in enumerate(range(0, rows, IMAGE_FILE_ROWS)):
        s = slice(start, min(rows, start + IMAGE_FILE_ROWS))
        n = s.stop - s.start
        one = pa.array(np.arange(n + 1, dtype=np.int32))
        cols = {
            "id": pa.array(np.char.add("img", np.arange(s.start, s.stop).astype(str))),
            "source": pa.array(np.full(n, "photos")),
            "modality": pa.array(np.full(n, "image")),
            "sig_bytes": digests(content[s]),
            "sig_pixels": pa.ListArray.from_arrays(one, digests(pixels[s])),
            "sig_phash": pa.ListArray.from_arrays(one, pa.array(phash[s])),
            "sig_detail": pa.array(detail[s]),
            "sig_color": pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * 3), pa.array(chroma[s].reshape(-1))),
            "sig_area": pa.array(area[s].astype(np.int64)),
            "sig_nbytes": pa.array(nbytes[s].astype(np.int64)),
        }
        if crops:
            cols["sig_phash_win"] = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * 6),
                                                             pa.array(windows[s].reshape(-1)))
        t = pa.table(cols)
        p = folder / f"sigs-{f:05d}.parquet"
        pq.write_table(t, p, compression="zstd")
        paths.append(str(p))
    done.write_text(json.dumps({"rows": rows, "crops": crops}))
    return paths


def child_images(folder: str, work: str, workers: str) -> dict[str, Any]:
    import ray

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from curation.dedup import DedupConfig, resolve_parts
    from curation.dedup.parallel import ray_map
    from curation.engine.ray_session import init_ray

    init_ray(None, int(workers), quiet=True)
    paths = sorted(str(p) for p in Path(folder).glob("sigs-*.parquet"))
    cfg = DedupConfig.model_validate({"exact": True, "image": {"verify": False}, "text": {"enabled": False},
                                      "video": {"enabled": False}})
    shutil.rmtree(work, ignore_errors=True)
    phases = start_phases(os.environ.get("BENCH_SCALE_KIND", "images"))
    t0, c0 = time.perf_counter(), _cpu_s()
    parts = resolve_parts(paths, work, config=cfg, map_fn=ray_map)  # as a job runs it: the answer per input file
    secs = time.perf_counter() - t0
    dups = rows = 0
    for part in parts.values():  # counted after the peak that matters, one part at a time
        reason = pq.read_table(part, columns=["reason"]).column("reason")
        dups += pc.sum(pc.equal(reason, "duplicate")).as_py() or 0
        rows += len(reason)
    out = {"seconds": secs, "driver_cpu_s": _cpu_s() - c0, "driver_hwm_mb": _peak_rss_mb(),
           "read": sum(pq.ParquetFile(p).metadata.num_rows for p in paths),
           "dropped": {"dedup/duplicate": dups}, "in_clusters": rows, **({"phases": phases.report()} if phases else {})}
    ray.shutdown()
    return out


# ----------------------------------------------------------------------------- mixing from a store


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Moto:
    """A moto S3 server in its own process (its memory is not the driver's), 127.0.0.1 only."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
                    "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.port}", "AWS_EC2_METADATA_DISABLED": "true"}
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)

    def __enter__(self) -> "Moto":
        os.environ.update(self.env)
        return self

    def __exit__(self, *exc) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)

    def rss_mb(self) -> float:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss / MB


def upload_tree(local: Path, uri: str) -> None:
    """Copy a manifest folder to a store (shards first, manifest.json last)."""
    from concurrent.futures import ThreadPoolExecutor

    from manifests import storage

    files = sorted(p for p in local.rglob("*") if p.is_file() and p.name != "manifest.json")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: storage.put_file(p, storage.join(uri, *p.relative_to(local).parts)), files))
    storage.put_file(local / "manifest.json", storage.join(uri, "manifest.json"))


def child_mix(inputs: str, out: str, total: str) -> dict[str, Any]:
    from benchmarks.bench_mixing import SOURCE_WEIGHTS
    from curation.mixing import build_mixture

    mixture = {"seed": 0, "by": "samples", "total": int(total), "inputs": json.loads(inputs), "weights": SOURCE_WEIGHTS,
               "max_epochs": 3}
    phases = start_phases("mix")
    t0, c0 = time.perf_counter(), _cpu_s()
    res = build_mixture(mixture, out, overwrite=True)
    return {"seconds": time.perf_counter() - t0, "driver_cpu_s": _cpu_s() - c0, "driver_hwm_mb": _peak_rss_mb(),
            "read": sum(i["rows"] for i in res.provenance["inputs"]), "rows_out": res.plan.rows_selected,
            **({"phases": phases.report()} if phases else {})}


# ----------------------------------------------------------------------------- runs


def run_text(rows: int, work: Path, workers: int, interval: float) -> dict[str, Any]:
    data = work / f"text-{rows}.parquet"
    t = time.perf_counter()
    make_text(rows, data)
    print(f"  text data: {rows:,} rows ({data.stat().st_size / MB:.0f} MB Parquet, {time.perf_counter() - t:.0f} s to make or check)",
          flush=True)
    recipe = text_recipe(data, work / "text-job")
    out = work / "text-job" / "out"
    timeline = work / f"text-{rows}.timeline.tsv"  # written by --phases: one line a second, and where the high-water rose
    env = {"BENCH_SCALE_TIMELINE": str(timeline)} if os.environ.get("BENCH_SCALE_PHASES") else None
    res = measured(["text", str(recipe), str(out), str(workers)], interval, env=env)
    if env:
        print(f"  phase timeline (s, RSS, live Arrow, high-water MB, phase, innermost frame): {timeline}", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    return res


def run_images(rows: int, work: Path, workers: int, interval: float, crops: bool = False) -> dict[str, Any]:
    folder = work / f"image-sigs-{rows}{'-crops' if crops else ''}"
    t = time.perf_counter()
    make_image_sigs(rows, folder, crops=crops)
    size = sum(p.stat().st_size for p in folder.glob("*.parquet"))
    print(f"  image signatures: {rows:,} rows ({size / MB:.0f} MB Parquet, {time.perf_counter() - t:.0f} s to make or check)",
          flush=True)
    kind = "crops" if crops else "images"
    env = {"BENCH_SCALE_KIND": kind}
    if os.environ.get("BENCH_SCALE_PHASES"):
        env["BENCH_SCALE_TIMELINE"] = str(work / f"{kind}-{rows}.timeline.tsv")
    res = measured(["images", str(folder), str(work / "image-work"), str(workers)], interval, env=env)
    shutil.rmtree(work / "image-work", ignore_errors=True)
    return res


def run_mix(rows: int, work: Path, store: str, interval: float) -> dict[str, Any]:
    from benchmarks.bench_mixing import make_inputs

    t = time.perf_counter()
    local = make_inputs(rows, work / f"mix-{rows}")
    size = sum(p.stat().st_size for d in local for p in Path(d).rglob("*.parquet"))
    print(f"  mixing inputs: {rows:,} rows in 2 manifests ({size / MB:.0f} MB Parquet, {time.perf_counter() - t:.0f} s to make or check)",
          flush=True)
    cache = work / "mix-cache"
    shutil.rmtree(cache, ignore_errors=True)
    env = {"SMOLCURATE_CACHE": str(cache)}
    if os.environ.get("BENCH_SCALE_PHASES"):
        env["BENCH_SCALE_TIMELINE"] = str(work / f"mix-{rows}-{store}.timeline.tsv")
    if store == "file":
        inputs = [f"file://{p}" for p in local]
        res = measured(["mix", json.dumps(inputs), str(work / "mix-out"), str(rows)], interval, env)
        shutil.rmtree(work / "mix-out", ignore_errors=True)
        return res
    with Moto() as moto:
        import boto3

        boto3.client("s3", endpoint_url=moto.env["AWS_ENDPOINT_URL"], region_name="us-east-1").create_bucket(Bucket="bench")
        t = time.perf_counter()
        inputs = []
        for i, p in enumerate(local):
            uri = f"s3://bench/in-{i}"
            upload_tree(Path(p), uri)
            inputs.append(uri)
        print(f"  uploaded to moto in {time.perf_counter() - t:.0f} s (moto server RSS {moto.rss_mb():.0f} MB)", flush=True)
        res = measured(["mix", json.dumps(inputs), "s3://bench/mixed", str(rows)], interval, {**env, **moto.env})
        res["moto_mb"] = moto.rss_mb()
    shutil.rmtree(cache, ignore_errors=True)
    return res


def _sizes(text: str) -> list[int]:
    return [int(float(x)) for x in str(text).split(",") if x]


def _row(name: str, rows: int, r: dict[str, Any]) -> str:
    workers = r["workers_mb"]
    wtxt = ", ".join(f"{n.removeprefix('ray::')[:24]} {v:.0f}" for n, v in workers[:5]) + (" ..." if len(workers) > 5 else "")
    return (f"| {name} | {rows:,} | {r['driver_mb']:,.0f} | {r['worker_max_mb']:,.0f} | {r['daemons_mb']:,.0f} | "
            f"{r['seconds']:,.0f} | {wtxt or '-'} |")


def _slope(name: str, runs: list[tuple[int, dict[str, Any]]]) -> str | None:
    """Cost per million rows between the smallest and the largest size (what grows, not the fixed base)."""
    if len(runs) < 2:
        return None
    (n0, a), (n1, b) = runs[0], runs[-1]
    d = (n1 - n0) / 1e6
    return (f"| {name} | {n0:,} -> {n1:,} | {(b['driver_mb'] - a['driver_mb']) / d:+,.1f} | "
            f"{(b['worker_max_mb'] - a['worker_max_mb']) / d:+,.1f} | {(b['seconds'] - a['seconds']) / d:,.1f} |")


KINDS = ("text", "images", "crops", "mix")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default=None, help="rows for every workload, or a list (1000000,3000000); "
                    "default: text 10M, images 1M, mix 10M")
    ap.add_argument("--text-rows", default="10000000", help="one size or a comma list")
    ap.add_argument("--image-rows", default="1000000")
    ap.add_argument("--crop-rows", default="100000", help="image rows with six crop-window hashes each")
    ap.add_argument("--mix-rows", default="10000000")
    ap.add_argument("--only", choices=KINDS, action="append", help="run only these (repeatable)")
    ap.add_argument("--store", choices=["moto", "file"], default="moto", help="where the mixing inputs live")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--interval", type=float, default=0.2, help="RSS sampling period (s)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_scale"))
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--phases", action="store_true", help="text, images and mix: the driver's peak RSS and live Arrow bytes per phase "
                    "(sampled inside it every 50 ms, by its stack)")
    args = ap.parse_args()
    if args.phases:
        os.environ["BENCH_SCALE_PHASES"] = "1"  # the children inherit it
    if args.rows:
        args.text_rows = args.image_rows = args.crop_rows = args.mix_rows = args.rows
    todo = args.only or list(KINDS)
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; workers {args.workers}", flush=True)
    names = {"text": "dedup text (curate: exact + MinHash, Ray)", "images": "dedup image hashes (resolve, Ray tasks)",
             "crops": "dedup image hashes + 6 crop windows each (resolve, Ray tasks)",
             "mix": f"mix by samples, in and out on {'moto S3' if args.store == 'moto' else 'file://'}"}
    sizes = {"text": _sizes(args.text_rows), "images": _sizes(args.image_rows), "crops": _sizes(args.crop_rows),
             "mix": _sizes(args.mix_rows)}
    results: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for kind in KINDS:
        if kind not in todo:
            continue
        for rows in sizes[kind]:
            print(f"{kind}: {rows:,} rows", flush=True)
            if kind == "text":
                r = run_text(rows, args.work, args.workers, args.interval)
            elif kind in ("images", "crops"):
                r = run_images(rows, args.work, args.workers, args.interval, crops=kind == "crops")
            else:
                r = run_mix(rows, args.work, args.store, args.interval)
            print(f"  {json.dumps(r)}", flush=True)
            results.setdefault(kind, []).append((rows, r))
    print()
    print("| workload | rows | driver peak MB | largest worker peak MB | Ray daemons MB | seconds | each worker's peak MB |")
    print("|---|---|---|---|---|---|---|")
    for kind, runs in results.items():
        for rows, r in runs:
            print(_row(names[kind], rows, r))
    slopes = [x for kind, runs in results.items() if (x := _slope(names[kind], runs))]
    if slopes:
        print()
        print("| workload | between | driver MB per 1M rows | worker MB per 1M rows | s per 1M rows |")
        print("|---|---|---|---|---|")
        print("\n".join(slopes))
    for kind, phases in KIND_PHASES.items():
        runs = [(rows, r["phases"]) for rows, r in results.get(kind, []) if r.get("phases")]
        if not runs:
            continue
        print()
        print(f"| {kind} job phase | " + " | ".join(f"{rows:,} rows: driver RSS / live Arrow / high-water MB" for rows, _ in runs)
              + " |")
        print("|---|" + "---|" * len(runs))
        for name in phase_order(phases):
            cells = [f"{p[name][0]:,.0f} / {p[name][1]:,.0f} / {p[name][2]:,.0f}" if name in p else "-" for _, p in runs]
            print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps({k: [{"rows": n, **r} for n, r in v] for k, v in results.items()}, indent=2))


def _child() -> None:
    kind, rest = sys.argv[2], sys.argv[3:]
    fn = {"text": child_text, "images": child_images, "crops": child_images, "mix": child_mix}[kind]
    print(json.dumps(fn(*rest)))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        _child()
    else:
        main()
