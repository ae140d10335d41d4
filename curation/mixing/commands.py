"""`smolcurate mix MIXTURE.yaml --out DIR`: build a training mixture manifest."""
from __future__ import annotations

import argparse
import json
import sys

from manifests.errors import UserError


def register_mix(sub: argparse._SubParsersAction) -> None:
    """Add the `mix` subcommand (called from curation.commands.register)."""
    p = sub.add_parser(
        "mix",
        help="combine manifests by sample or token shares into one shuffled, sharded mixture manifest",
        description="Build a training mixture from curated manifests (see docs/mixing.md).",
    )
    p.add_argument("mixture", nargs="?", metavar="MIXTURE.yaml", help="mixture file (YAML or JSON)")
    p.add_argument("--out", metavar="DIR", help="output manifest directory")
    p.add_argument("--overwrite", action="store_true", help="replace a manifest already at --out")
    p.add_argument("--dry-run", action="store_true", help="plan and print the shares, write nothing")
    p.add_argument("--seed", type=int, help="override the file's seed")
    p.add_argument("--total", type=_positive_int, help="override the file's total")
    p.add_argument("--allow-shortfall", action="store_true", help="take what a short source has instead of failing")
    p.add_argument("--json", action="store_true", help="print the provenance record (extra.mixture) as JSON")
    p.add_argument("--list-presets", action="store_true", help="list the shipped mixture presets")
    p.add_argument("--show-preset", metavar="NAME", help="print one preset's YAML")
    p.set_defaults(func=run_mix)


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def run_mix(args: argparse.Namespace) -> int:
    from curation.mixing.api import as_config, build_mixture
    from curation.mixing.config import parse_mixture
    from curation.mixing.presets import list_presets, preset_text
    from curation.mixing.report import format_shares

    if args.list_presets:
        for name, desc in list_presets().items():
            print(f"{name}\n    {desc}")
        return 0
    if args.show_preset:
        print(preset_text(args.show_preset), end="")
        return 0
    if not args.mixture:
        raise UserError("give a mixture file (or --list-presets)", field="MIXTURE.yaml")
    if not args.out and not args.dry_run:
        raise UserError("give an output directory (or --dry-run)", field="--out")
    cfg = as_config(args.mixture)
    overrides = {}
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.total is not None:
        overrides["total"] = args.total
    if args.allow_shortfall:
        overrides["allow_shortfall"] = True
    if overrides:
        cfg = parse_mixture({**cfg.model_dump(exclude_none=True), **overrides})
    result = build_mixture(cfg, args.out or ".", overwrite=args.overwrite, dry_run=args.dry_run)
    if args.json:
        json.dump(result.provenance, sys.stdout, indent=2)
        print()
    else:
        print(format_shares(result.provenance))
        if result.path is not None:
            print(f"\nwrote {result.path}: {result.plan.rows_selected:,} rows, {result.plan.samples:,} samples")
        else:
            print("\ndry run: nothing written")
    return 0
