"""The `smolcurate` command line: one parser, with subcommands registered by each package.

Each package that offers commands has a ``commands`` module with
``register(subparsers)``; a handler takes the parsed args and returns an exit
code. Errors a user can fix (:class:`manifests.errors.UserError`, bad arguments)
print one line on stderr and exit with code 2; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from manifests.errors import UserError

COMMAND_MODULES = (
    "manifests.commands",
    "curation.commands",
    "tokenization.commands",
    "ablations.commands",
)


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message}")


class _UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="smolcurate", description="Curate, tokenize, mix and ablate data for small VLMs.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_OneLineParser)
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a package without commands yet
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except _UsageError as exc:
        if debug:
            raise
        print(str(exc), file=sys.stderr)
        return 2
    except UserError as exc:
        if debug:
            raise
        print(f"smolcurate: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("smolcurate: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
