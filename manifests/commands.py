"""`smolcurate inspect` and `smolcurate validate`."""
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


def _inspect(args: argparse.Namespace) -> int:
    summary = open_manifest(args.path).summary()
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def _validate(args: argparse.Namespace) -> int:
    report = validate(args.path, check_media=not args.no_media)
    print(f"ok: {report['path']}: {report['rows']} rows, {report['dropped']} dropped, {report['shards']} shards")
    return 0
