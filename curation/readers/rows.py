"""Assemble a chunk's rows in the manifest schema from whole columns, and mark read failures.

Readers hand over Arrow arrays (keys, media, text, turns, meta, uris, failure
reasons) for all rows of a chunk at once; this module only checks lengths,
derives ids and marks the failed rows dropped at stage ``read``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from curation.filters.common import MEDIA_LIST, STAGE_READ
from curation.operators import mark_dropped
from curation.readers.base import (
    BASE_SCHEMA,
    PRIVATE_KEY,
    PRIVATE_POS,
    PRIVATE_URI,
    SourceContext,
)
from curation.readers.columns import constant
from manifests.schema import TURN_TYPE, make_id

TURNS = pa.list_(TURN_TYPE)


def _arr(values, typ: pa.DataType, n: int) -> pa.Array:
    if values is None:
        return pa.nulls(n, typ)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        values = pa.array(values, typ)
    if not values.type.equals(typ):
        values = values.cast(typ)
    if len(values) != n:
        raise ValueError(f"column of {len(values)} values for {n} rows")
    return values


def ids_of(source: str, keys: pa.Array) -> pa.Array:
    """``make_id(source, key)`` for every key (one short hash per row: the only per-row call left)."""
    return pa.array([make_id(source, k) for k in keys.to_pylist()], pa.string())


def assemble(
    ctx: SourceContext,
    keys: pa.Array | Sequence[str],
    uris: pa.Array | Sequence[str],
    pos: np.ndarray | Sequence[int],
    *,
    media: pa.Array | None = None,
    text: pa.Array | None = None,
    turns: pa.Array | None = None,
    meta: pa.Array | None = None,
    fail_reason: pa.Array | Sequence[str | None] | None = None,
    fail_detail: pa.Array | Sequence[str | None] | None = None,
) -> pa.Table:
    """A BASE_SCHEMA table; rows with a ``fail_reason`` are marked dropped at stage read."""
    keys = _arr(keys, pa.string(), len(keys))
    n = len(keys)
    if media is None:
        media = pa.array([[]] * n, MEDIA_LIST) if n else pa.array([], MEDIA_LIST)
    media = _arr(media, MEDIA_LIST, n)
    cols = {
        "id": ids_of(ctx.name, keys),
        "source": constant(ctx.name, n),
        "modality": constant(ctx.modality, n),
        "media": pc.if_else(pc.is_null(media), pa.array([[]] * n, MEDIA_LIST), media) if n and media.null_count else media,
        "text": _arr(text, pa.string(), n),
        "turns": _arr(turns, TURNS, n),
        "meta": _arr(meta, pa.string(), n),
        PRIVATE_POS: _arr(np.asarray(pos, dtype=np.int64), pa.int64(), n),
        PRIVATE_KEY: keys,
        PRIVATE_URI: _arr(uris, pa.string(), n),
    }
    table = pa.Table.from_pydict(cols, schema=BASE_SCHEMA)
    if fail_reason is None:
        return table
    reasons = _arr(fail_reason, pa.string(), n)
    if reasons.null_count == n:
        return table
    return mark_dropped(table, pc.is_valid(reasons), STAGE_READ, reasons, _arr(fail_detail, pa.string(), n))


def concat(tables: list[pa.Table]) -> pa.Table:
    """Chunk pieces in order (a chunk may mix rows built from several passes, e.g. good and bad lines)."""
    tables = [t for t in tables if t.num_rows] or tables[:1]
    if not tables:
        return BASE_SCHEMA.empty_table()
    if len(tables) == 1:
        return tables[0]
    out = pa.concat_tables(tables, promote_options="default")
    return out.sort_by(PRIVATE_POS)


def meta_json(table: pa.Table, skip: set[str]) -> pa.Array | None:
    """The other columns of each row as one JSON object (polars, vectorized); binary columns are left out."""
    keep = [c for c in table.column_names if c not in skip and not _has_binary(table.schema.field(c).type)]
    if not keep or table.num_rows == 0:
        return None
    frame = pl.from_arrow(table.select(keep), rechunk=False)
    if isinstance(frame, pl.Series):
        frame = frame.to_frame()
    out = frame.select(pl.struct(pl.all()).struct.json_encode().alias("m")).to_series().to_arrow()
    return out.cast(pa.string())


def _has_binary(t: pa.DataType) -> bool:
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t) or pa.types.is_binary_view(t):
        return True
    if pa.types.is_struct(t):
        return any(_has_binary(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _has_binary(t.value_type)
    return isinstance(t, pa.ExtensionType) and _has_binary(t.storage_type)


def first_reason(n: int, checks: list[tuple[np.ndarray, str]]) -> pa.Array:
    """Per row, the reason of the first check whose mask is true (null where none is)."""
    out = pa.nulls(n, pa.string())
    for mask, reason in reversed(checks):
        out = pc.if_else(pa.array(np.asarray(mask, bool)), pa.scalar(reason), out)
    return out
