"""The one registry of formats: ``format:`` name -> reader class, and ``format: auto`` detection.

Adding a format: write ``curation/readers/<name>.py`` with a
:class:`curation.readers.base.Reader` subclass (``name``, ``spec_type``,
``kinds``, ``plan``, ``read`` and, to be auto-detected, ``detect``), then add one
line below. Recipes accept the name at validation; the engines, finalize,
``dedup.against`` and ``decontaminate`` reach the reader through
``curation.readers``.
"""
from __future__ import annotations

import importlib
from functools import cache

from curation.readers.base import Reader, SourceContext
from manifests.errors import RecipeError

#: format name -> "module:Class"; the order is the order ``auto`` tries the detectors in
READERS: dict[str, str] = {
    "webdataset": "curation.readers.webdataset:WebDatasetReader",
    "llava": "curation.readers.llava:LlavaReader",
    "cauldron": "curation.readers.cauldron:CauldronReader",
    "obelics": "curation.readers.obelics:ObelicsReader",
    "files": "curation.readers.files:FilesReader",
    "jsonl": "curation.readers.jsonl:JsonlReader",
    "parquet": "curation.readers.parquet:ParquetReader",
    "hf": "curation.readers.hf:HfReader",
}

AUTO = "auto"


def format_names() -> list[str]:
    return [AUTO, *READERS]


@cache
def reader_class(name: str) -> type[Reader]:
    module, _, cls = READERS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def get_reader(name: str) -> Reader:
    return reader_class(name)()


def detect_format(ctx: SourceContext) -> str:
    """The format of a ``format: auto`` source: the first detector that claims it, else by file type."""
    if ctx.source.hub is not None:
        return "hf"
    for name in READERS:
        cls = reader_class(name)
        if ctx.kind in cls.kinds and cls.detect(ctx):
            return name
    if ctx.kind in ("images", "document", "video"):
        return "files"
    from curation.readers.tabular import find_tables

    try:
        found = find_tables(list(ctx.paths), "auto", ctx.source.split)
    except RecipeError as exc:
        raise ctx.error(str(exc)) from None
    fmts = {("jsonl" if tf.format == "jsonl" else tf.format) for tf in found}
    if ctx.kind == "text" and not fmts:
        return "files"  # a folder of .txt files
    if not fmts:
        raise ctx.error("no jsonl, json, parquet or saved dataset found")
    if len(fmts) > 1:
        raise ctx.error(f"tables of several formats ({', '.join(sorted(fmts))}); give `format:`", "format")
    return fmts.pop()
