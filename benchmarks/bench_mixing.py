"""Mix 10M synthetic metadata rows: rows/s and peak RSS of `build_mixture` against an in-memory polars mix.

The peer is what a user would otherwise write: read the manifests into one polars
DataFrame, `sample` each source to its share (with replacement to up-sample),
shuffle, and write Parquet. Both run in fresh subprocesses so each peak RSS
(ru_maxrss) is its own. Synthetic rows carry metadata only (media references
with sizes and durations, text, turns), as a curated manifest of references does.

    .venv/bin/python benchmarks/bench_mixing.py --rows 10000000 --work /tmp/bench_mixing
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: (source, modality, fraction of rows)
LAYOUT = [
    ("photos", "image", 0.30),
    ("pairs", "image_text", 0.20),
    ("docs", "document", 0.15),
    ("books", "text", 0.20),
    ("clips", "video", 0.10),
    ("albums", "multi_image", 0.05),
]
SOURCE_WEIGHTS = {"photos": 0.25, "pairs": 0.15, "docs": 0.2, "books": 0.2, "clips": 0.15, "albums": 0.05}


def make_inputs(rows: int, work: Path) -> list[str]:
    from curation.mixing.synthetic import write_synthetic_manifest

    half = {name: (mod, int(rows * frac) // 2) for name, mod, frac in LAYOUT}
    paths = []
    for i in range(2):  # two input manifests, as two curation runs would give
        out = work / f"input_{i}"
        if not (out / "manifest.json").is_file() or json.loads((out / "manifest.json").read_text())["totals"]["rows"] != sum(
            n for _, n in half.values()
        ):
            write_synthetic_manifest(out, half, seed=i)
        paths.append(str(out))
    return paths


def _cpu() -> float:
    """User + system CPU seconds of this process: steadier than wall time on a shared machine."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def child_smolcurate(mixture: dict, out: str) -> dict:
    import resource

    from curation.mixing import build_mixture

    t0 = time.perf_counter()
    result = build_mixture(mixture, out, overwrite=True)
    secs = time.perf_counter() - t0
    rows_in = sum(i["rows"] for i in result.provenance["inputs"])
    return {
        "seconds": secs,
        "rows_in": rows_in,
        "rows_out": result.plan.rows_selected,
        "samples_out": result.plan.samples,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cpu_seconds": _cpu(),
        "max_share_error": max(
            abs(row[f"achieved_{mixture['by']}"] - row[f"requested_{mixture['by']}"])
            for row in result.provenance["shares"][result.provenance["group_by"]].values()
            if row.get(f"requested_{mixture['by']}") is not None
        ),
    }


def child_polars(mixture: dict, out: str) -> dict:
    """The in-memory peer (samples shares only: polars has no token budget)."""
    import resource
    import shutil

    import polars as pl

    from manifests.reader import open_manifest

    t0 = time.perf_counter()
    frames = [open_manifest(p).lazy() for p in mixture["inputs"]]
    df = pl.concat(frames).collect()
    rows_in = df.height
    parts = []
    total = mixture["total"]
    for i, (name, share) in enumerate(mixture["weights"].items()):
        src = df.filter(pl.col("source") == name)
        n = round(share * total)
        parts.append(src.sample(n=n, with_replacement=n > src.height, seed=mixture["seed"] + i))
    mixed = pl.concat(parts).sample(fraction=1.0, shuffle=True, seed=mixture["seed"])
    shutil.rmtree(out, ignore_errors=True)
    Path(out).mkdir(parents=True)
    step = 100_000
    for j, start in enumerate(range(0, mixed.height, step)):
        mixed.slice(start, step).write_parquet(f"{out}/part-{j:05d}.parquet", compression="zstd")
    secs = time.perf_counter() - t0
    return {
        "seconds": secs,
        "rows_in": rows_in,
        "rows_out": mixed.height,
        "samples_out": mixed.height,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cpu_seconds": _cpu(),
    }


def run_child(kind: str, mixture: dict, out: Path) -> dict:
    code = (
        "import json,sys; sys.path.insert(0, %r); from benchmarks.bench_mixing import child_%s as f; "
        "print(json.dumps(f(json.loads(sys.argv[1]), sys.argv[2])))" % (str(REPO), kind)
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(mixture), str(out)], capture_output=True, text=True, cwd=REPO
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_mixing"))
    ap.add_argument("--skip-peer", action="store_true", help="only run smolcurate")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    inputs = make_inputs(args.rows, args.work)
    print(f"inputs: {args.rows:,} rows in {len(inputs)} manifests ({time.perf_counter() - t0:.0f} s to make or check)")

    total = args.rows  # as many samples as input rows: some sources up-sample, others down-sample
    by_samples = {"seed": 0, "by": "samples", "total": total, "inputs": inputs, "weights": SOURCE_WEIGHTS, "max_epochs": 3}
    by_tokens = {
        "seed": 0,
        "by": "tokens",
        "strategy": "smolvlm-256m",
        "inputs": inputs,
        "preset": "smolvlm2-video-256m",
        "total": None,  # the largest total the caps allow
        "max_epochs": 2,
    }
    runs = [
        ("smolcurate mix, by samples", "smolcurate", by_samples),
        ("smolcurate mix, by tokens (smolvlm2-video-256m preset)", "smolcurate", by_tokens),
    ]
    if not args.skip_peer:
        runs.append(("polars in memory, by samples (peer)", "polars", by_samples))
    results = {}
    for label, kind, mixture in runs:
        res = run_child(kind, {k: v for k, v in mixture.items() if v is not None}, args.work / f"out_{kind}")
        results[label] = res
        if "error" in res:
            print(f"{label}: FAILED: {res['error']}")
            continue
        print(
            f"{label}: {res['seconds']:.1f} s wall ({res['cpu_seconds']:.1f} s CPU), "
            f"{res['rows_in'] / res['seconds']:,.0f} input rows/s, "
            f"{res['rows_out']:,} rows out ({res['samples_out']:,} samples), peak RSS {res['peak_rss_mb']:,.0f} MB"
            + (f", max share error {res['max_share_error']:.4%}" if "max_share_error" in res else "")
        )
    ours = results.get("smolcurate mix, by samples", {})
    peer = results.get("polars in memory, by samples (peer)", {})
    if "seconds" in ours and "seconds" in peer:
        print(
            f"ratio (polars / smolcurate), by samples: wall time {peer['seconds'] / ours['seconds']:.2f}x, "
            f"CPU time {peer['cpu_seconds'] / ours['cpu_seconds']:.2f}x, "
            f"peak RSS {peer['peak_rss_mb'] / ours['peak_rss_mb']:.2f}x"
        )


if __name__ == "__main__":
    main()
