"""Readers: plan a source into fixed-size chunks, and read one chunk into manifest rows.

Each format is one module behind the :class:`~curation.readers.base.Reader`
protocol, named in :mod:`curation.readers.registry`. This package is the one
door to them: the engines call :func:`plan_source`, :func:`read_chunk` and
:func:`spec_inputs`; ``dedup.against`` and ``decontaminate`` call
:func:`read_source`. Planning is cheap and deterministic (sorted paths, row
counts, one boundary scan for JSON, tar headers); reading happens per chunk
inside workers. A chunk's rows come out in input order with the core columns
plus private ones the engine uses: ``_pos`` (ordinal of the input within its
source, for ordering only), ``_key`` (the sample key the id is derived from)
and ``_uri`` (what the ledger shows). Inputs that cannot be read are marked
dropped at stage ``read``.
"""
from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from curation.readers.base import (
    BASE_SCHEMA,
    PRIVATE_KEY,
    PRIVATE_POS,
    PRIVATE_URI,
    ChunkSpec,
    Reader,
    SourceContext,
    SourcePlan,
    decode_spec,
    encode_spec,
)
from curation.readers.registry import (
    AUTO,
    READERS,
    detect_format,
    format_names,
    get_reader,
    reader_class,
)
from curation.recipe import Recipe
from manifests.errors import RecipeError

__all__ = [
    "BASE_SCHEMA",
    "PRIVATE_KEY",
    "PRIVATE_POS",
    "PRIVATE_URI",
    "READERS",
    "ChunkSpec",
    "Reader",
    "SourceContext",
    "SourcePlan",
    "format_names",
    "get_reader",
    "plan_context",
    "plan_source",
    "read_chunk",
    "read_source",
    "read_spec",
    "reader_class",
    "resolve_format",
    "spec_inputs",
]


def resolve_format(ctx: SourceContext) -> str:
    """The reader name of a source: its ``format:``, or what ``auto`` detects."""
    fmt = ctx.source.format
    name = detect_format(ctx) if fmt == AUTO else fmt
    if name not in READERS:
        raise ctx.error(f"unknown format {name!r} (known: {', '.join(format_names())})", "format")
    cls = reader_class(name)
    if ctx.kind not in cls.kinds:
        raise ctx.error(f"format {name!r} holds {', '.join(sorted(cls.kinds))} sources, not {ctx.kind}", "kind")
    return name


def plan_context(ctx: SourceContext) -> SourcePlan:
    name = resolve_format(ctx)
    specs, fingerprint, inputs = get_reader(name).plan(ctx)
    return SourcePlan(ctx.index, ctx.name, ctx.kind, fingerprint, inputs, [encode_spec(name, s) for s in specs], name)


def plan_source(recipe: Recipe, index: int) -> SourcePlan:
    """Source ``index`` of the recipe cut into chunk specs (RecipeError naming the field when it cannot be)."""
    return plan_context(SourceContext.of(recipe, index))


def read_spec(ctx: SourceContext, spec: dict) -> pa.Table:
    name = spec["type"]
    if name not in READERS:
        raise RecipeError(f"unknown format {name!r} in a chunk spec", field=ctx.field("format"))
    cls = reader_class(name)
    return cls().read(ctx, decode_spec(cls.spec_type, spec))


def read_chunk(recipe: Recipe, spec: dict) -> pa.Table:
    """The rows of one chunk (see module doc); a video source with ``clips:`` yields one row per clip."""
    table = read_spec(SourceContext.of(recipe, spec["source"]), spec)
    src = recipe.sources[spec["source"]]
    if getattr(src, "clips", None) is not None:  # cut at scene changes or a stride (curation.clips)
        from curation.clips.expand import expand_source_clips

        table = expand_source_clips(recipe, src, table)
    return table


def spec_inputs(spec: dict) -> int:
    """Inputs a chunk covers (files, table rows, lines, elements or samples): the unit of progress."""
    cls = reader_class(spec["type"])
    return decode_spec(cls.spec_type, spec).inputs()


def read_source(ctx: SourceContext) -> Iterator[pa.Table]:
    """Every chunk of a source in order (for sets read outside a job: ``dedup.against``, ``decontaminate``)."""
    plan = plan_context(ctx)
    for spec in plan.chunks:
        yield read_spec(ctx, spec)
