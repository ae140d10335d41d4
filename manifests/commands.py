"""`smolcurate inspect`, `validate`, `retune` and `report`."""
from __future__ import annotations

import argparse
import json

from manifests.reader import open_manifest
from manifests.validate import validate
from manifests.views import format_summary


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="summarize a manifest: counts, drops by reason, tokens, shards")
    p.add_argument("path", metavar="DIR")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=_inspect)

    p = sub.add_parser("validate", help="check schema, checksums, the ledger invariant and media paths")
    p.add_argument("path", metavar="DIR")
    p.add_argument("--no-media", action="store_true", help="skip checking that media paths resolve")
    p.set_defaults(func=_validate)

    p = sub.add_parser("retune", help="re-threshold filters from stored scores, both ways, without reading media")
    p.add_argument("path", metavar="MANIFEST")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", required=True,
                   help="a new threshold, e.g. --set filters.image.min_side=64 (repeatable; null disables a check)")
    p.add_argument("--out", metavar="DIR", help="write the re-tuned manifest here (without it: preview only)")
    p.add_argument("--overwrite", action="store_true", help="replace a manifest already in --out")
    p.add_argument("--json", action="store_true", help="print the preview as JSON")
    p.set_defaults(func=_retune)

    p = sub.add_parser("report", help="one self-contained HTML file: drops with thumbnails, histograms, duplicates")
    p.add_argument("path", metavar="MANIFEST")
    p.add_argument("--out", metavar="FILE", required=True, help="the HTML file to write, e.g. report.html")
    p.add_argument("--examples", type=int, default=6, metavar="N", help="example thumbnails per drop reason (default 6)")
    p.set_defaults(func=_report)


def _inspect(args: argparse.Namespace) -> int:
    summary = open_manifest(args.path).summary()
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def _validate(args: argparse.Namespace) -> int:
    report = validate(args.path, check_media=not args.no_media)
    print(f"ok: {report['path']}: {report['rows']} rows, {report['dropped']} dropped, {report['shards']} shards")
    return 0


def _retune(args: argparse.Namespace) -> int:
    # the CLI sits on top of every package: re-tuning needs curation's filter operators
    from curation.retune import format_result, retune, to_json

    result = retune(open_manifest(args.path), sets=args.sets)
    print(json.dumps(to_json(result), indent=2) if args.json else format_result(result))
    if args.out:
        out = result.write(args.out, overwrite=args.overwrite)
        print(f"manifest: {out.path} ({out.num_rows} rows, {out.info['totals']['dropped']} dropped)")
    return 0


def _report(args: argparse.Namespace) -> int:
    from manifests.report import write_report

    path = write_report(open_manifest(args.path), args.out, examples=args.examples)
    print(f"report: {path}")
    return 0
