"""`smolcurate curate`, `smolcurate export` and `smolcurate demo`."""
from __future__ import annotations

import argparse
import os


def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=("ray", "local"), default="ray",
                   help="ray (default: embedded local Ray, or --ray-address / RAY_ADDRESS) or local (in-process)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="parallel workers (Ray actors); default: every CPU Ray offers")
    p.add_argument("--ray-address", default=None, metavar="ADDR", help="connect to this Ray cluster instead of starting one")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--overwrite", action="store_true", help="replace a manifest or unfinished job already in --out")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("curate", help="read, score and filter the sources of a recipe into a manifest")
    p.add_argument("recipe", metavar="RECIPE.yaml")
    p.add_argument("--out", required=True, metavar="DIR", help="manifest folder to write (resumes an interrupted job)")
    p.add_argument("--mix-out", default=None, metavar="DIR",
                   help="where the recipe's mixture: section writes its mixture manifest (default: OUT-mixture)")
    _engine_args(p)
    p.set_defaults(func=_curate)

    p = sub.add_parser("demo", help="build a small mixed corpus offline and curate it on the embedded Ray")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the corpus, its recipe and the manifest")
    _engine_args(p)
    p.set_defaults(func=_demo)

    p = sub.add_parser("export", help="write a manifest as cauldron (Parquet), llava (JSONL + media) or webdataset (tar) shards")
    p.add_argument("manifest", metavar="MANIFEST", help="manifest folder (a curated manifest or a mixture)")
    from curation.export import EXPORTERS

    p.add_argument("--format", required=True, choices=sorted(EXPORTERS), help="output layout")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (replaced atomically)")
    p.add_argument("--shard-rows", type=int, default=2000, metavar="N", help="rows per shard (default 2000)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.set_defaults(func=_export)

    from curation.mixing.commands import register_mix

    register_mix(sub)


def _curate(args: argparse.Namespace) -> int:
    from curation.engine.job import format_summary, run_job, run_recipe_mixture
    from curation.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    result = run_job(recipe, args.out, engine=args.engine, workers=args.workers, ray_address=args.ray_address,
                     quiet=args.quiet, overwrite=args.overwrite)
    print(format_summary(result))
    mixed = run_recipe_mixture(recipe, args.out, args.mix_out, overwrite=args.overwrite)
    if mixed is not None:
        from curation.mixing import format_shares

        print(f"mixture: {mixed.path}")
        print(format_shares(mixed.provenance))
    return 0


def _export(args: argparse.Namespace) -> int:
    from curation.export import export_manifest

    result = export_manifest(args.manifest, args.format, args.out, shard_rows=args.shard_rows, overwrite=args.overwrite)
    print(result.summary())
    return 0


def _demo(args: argparse.Namespace) -> int:
    from curation.demo import run_demo

    # --overwrite is accepted for symmetry with curate; the demo always rebuilds its corpus and manifest
    run_demo(os.path.abspath(args.out), engine=args.engine, workers=args.workers, ray_address=args.ray_address,
             quiet=args.quiet)
    return 0
