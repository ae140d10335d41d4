"""`smolcurate ablate GRID.yaml --out DIR`: train one small VLM per grid point and report quality against cost."""
from __future__ import annotations

import argparse
import os
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ablate",
        help="train small VLMs over a grid of tokenization choices and report quality against cost",
        description=(
            "Train one small vision-language model per point of GRID.yaml (pixel shuffle, splitting, "
            "positional tokens, frames, ...) and write results.parquet, results.md and plots to --out. "
            "Finished runs are skipped and interrupted runs resume from their last checkpoint."
        ),
    )
    p.add_argument("grid", metavar="GRID.yaml", help="grid file (see docs/ablations.md)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (re-use it to resume)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per run (default: the cores this process may use, shared out among --jobs)")
    p.add_argument("--jobs", type=_jobs, default=None, metavar="N|auto",
                   help="runs trained at once, one process each (default: the grid's jobs, else 1; auto: one per core on CPU)")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default=None,
                   help="override the grid's precision (auto: bf16 autocast where the device supports it)")
    p.add_argument("--vision", metavar="PATH", default=None,
                   help="local transformers vision model folder to use instead of the from-scratch ViT")
    p.add_argument("--lm", metavar="PATH", default=None,
                   help="local transformers causal LM folder (with its tokenizer) to use instead of the from-scratch LM")
    p.add_argument("--freeze-lm", action="store_true",
                   help="with --lm: train only the new token embedding rows of the LM (SmolVLM's first stage)")
    p.add_argument("--only", metavar="SUBSTRING", action="append", default=None,
                   help="run only the runs whose id contains SUBSTRING (repeatable)")
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=None,
                   help="override a base setting for every run (e.g. steps=20, task.train=64); repeatable")
    p.add_argument("--dry-run", action="store_true", help="validate the grid and list its runs, train nothing")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_ablate)


def _jobs(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number or auto, got {value!r}")
    return n


def _ablate(args: argparse.Namespace) -> int:
    # Before torch loads its OpenMP runtime: spinning worker threads make a step up to 30x slower whenever another
    # process holds a core (measured on a shared 2-core machine: 8.3 s vs 0.28 s per step); passive waiting costs
    # little when the machine is idle. An explicit OMP_WAIT_POLICY from the user wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from ablations.runner import AblationOptions, plan, run_grid

    opts = AblationOptions(
        device=args.device,
        threads=args.threads,
        precision=args.precision,
        vision=args.vision,
        lm=args.lm,
        freeze_lm=args.freeze_lm,
        only=args.only,
        overrides=args.overrides,
        jobs=args.jobs,
    )
    if args.dry_run:
        grid, _, points = plan(args.grid, opts)
        print(f"{grid.name}: {len(points)} runs")
        for p in points:
            print(f"  {p.run_id}")
        return 0
    progress = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = run_grid(args.grid, args.out, opts, progress=progress)
    print(f"wrote {out / 'results.md'}, {out / 'results.parquet'} and plots to {out}")
    return 0
