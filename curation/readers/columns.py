"""Column conversions shared by the table formats, all with Arrow compute (no Python per row).

- image cells (a path, raw bytes, an HF ``Image`` struct ``{bytes, path}``, or a
  list of them) become ``media`` lists; relative paths resolve against a root;
- conversation cells (``[{role, content}]`` or LLaVA's ``[{from, value}]``, or
  either as a JSON string) become ``turns``;
- placeholder counting and insertion (``<image>``, ``<video>``) per row.
"""
from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from curation.filters.common import MEDIA_LIST
from manifests.schema import MEDIA_TYPE, TURN_TYPE

TURNS = pa.list_(TURN_TYPE)
IMAGE_TOKEN = "<image>"
VIDEO_TOKEN = "<video>"
_ROLES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant", "assistant": "assistant",
          "user": "user", "system": "system"}


def _combine(a):
    return a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a


def resolve_paths(paths: pa.Array, root: str | None) -> pa.Array:
    """Absolute paths: ``file://`` stripped, URLs and absolute paths kept, the rest joined to ``root``."""
    paths = _combine(paths).cast(pa.string())
    stripped = pc.if_else(pc.starts_with(paths, "file://"), pc.utf8_slice_codeunits(paths, 7), paths)
    if not root:
        return stripped
    keep = pc.or_(pc.starts_with(stripped, "/"), pc.match_substring(stripped, "://"))
    prefix = root.rstrip("/") + "/"
    rel = pc.if_else(pc.starts_with(stripped, "./"), pc.utf8_slice_codeunits(stripped, 2), stripped)
    return pc.if_else(keep, stripped, pc.binary_join_element_wise(pa.scalar(prefix), rel, ""))


def _media_struct(uri: pa.Array, data: pa.Array, kind: str) -> pa.StructArray:
    n = len(uri)
    fields = []
    for f in MEDIA_TYPE:
        if f.name == "uri":
            fields.append(uri.cast(pa.string()))
        elif f.name == "bytes":
            fields.append(data.cast(pa.binary()))
        elif f.name == "kind":
            fields.append(constant(kind, n))
        else:
            fields.append(pa.nulls(n, f.type))
    return pa.StructArray.from_arrays(fields, fields=list(MEDIA_TYPE))


def _flat_media(values: pa.Array, root: str | None, kind: str) -> tuple[pa.StructArray, pa.Array]:
    """(media structs, valid mask) for a flat array of image cells."""
    t = values.type
    n = len(values)
    if pa.types.is_struct(t):
        names = [t.field(i).name for i in range(t.num_fields)]
        data = values.field("bytes") if "bytes" in names else pa.nulls(n, pa.binary())
        path = values.field("path") if "path" in names else pa.nulls(n, pa.string())
        if values.null_count:
            data = pc.if_else(values.is_null(), pa.nulls(n, data.type), data)
            path = pc.if_else(values.is_null(), pa.nulls(n, path.type), path)
        has_bytes = pc.and_(pc.is_valid(data), pc.greater(pc.binary_length(pc.fill_null(data, b"")), 0))
        uri = pc.if_else(has_bytes, pa.nulls(n, pa.string()), resolve_paths(path, root))
        data = pc.if_else(has_bytes, data, pa.nulls(n, data.type))
        valid = pc.or_(has_bytes, pc.is_valid(uri))
    elif pa.types.is_binary(t) or pa.types.is_large_binary(t):
        uri = pa.nulls(n, pa.string())
        data = values
        valid = pc.is_valid(values)
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        empty = pc.equal(pc.fill_null(values, ""), "")
        uri = pc.if_else(empty, pa.nulls(n, pa.string()), resolve_paths(values, root))
        data = pa.nulls(n, pa.binary())
        valid = pc.is_valid(uri)
    elif pa.types.is_null(t):
        uri, data, valid = pa.nulls(n, pa.string()), pa.nulls(n, pa.binary()), pa.array(np.zeros(n, bool))
    else:
        raise TypeError(f"an image column of type {t} (expected a path, bytes, or an Image struct)")
    return _media_struct(_combine(uri), _combine(data), kind), _combine(valid)


def media_from_cells(cells: pa.Array | pa.ChunkedArray, root: str | None, kind: str = "image") -> pa.Array:
    """A ``media`` list per row from an image column (scalar or list cells); null cells give empty lists."""
    cells = _combine(cells)
    t = cells.type
    n = len(cells)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        if not pa.types.is_list(t):
            cells = cells.cast(pa.list_(t.value_type))
        lengths = pc.fill_null(pc.list_value_length(cells), 0).to_numpy(zero_copy_only=False).astype(np.int32)
        child, valid = _flat_media(cells.flatten(), root, kind)
        # drop null elements (Obelics-style gaps are handled by their reader; here they are just absent)
        keep = valid.to_numpy(zero_copy_only=False)
        parents = np.repeat(np.arange(n), lengths)
        kept_counts = np.bincount(parents[keep], minlength=n).astype(np.int32)
        offsets = np.concatenate([[0], np.cumsum(kept_counts)]).astype(np.int32)
        child = child.filter(pa.array(keep)) if not keep.all() else child
        return pa.ListArray.from_arrays(pa.array(offsets), child, type=MEDIA_LIST)
    child, valid = _flat_media(cells, root, kind)
    v = valid.to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(v)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), child.filter(pa.array(v)), type=MEDIA_LIST)


def media_count(media: pa.Array) -> np.ndarray:
    return pc.fill_null(pc.list_value_length(_combine(media)), 0).to_numpy(zero_copy_only=False).astype(np.int64)


def _role(values: pa.Array) -> pa.Array:
    low = pc.utf8_lower(values.cast(pa.string()))
    keys = pa.array(list(_ROLES))
    mapped = pa.array(list(_ROLES.values())).take(pc.index_in(low, value_set=keys))
    return pc.coalesce(mapped, low)


def _content(values: pa.Array) -> pa.Array:
    t = values.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return values.cast(pa.string())
    if pa.types.is_null(t):
        return values.cast(pa.string())
    if pa.types.is_list(t) and pa.types.is_struct(t.value_type) and t.value_type.get_field_index("text") >= 0:
        # multi-part messages [{type, text}, ...]: their text parts, joined
        parts = pc.list_flatten(values).field("text").cast(pa.string())
        lengths = pc.fill_null(pc.list_value_length(values), 0).to_numpy(zero_copy_only=False)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), pc.fill_null(parts, "")), "\n")
        return pc.if_else(values.is_null(), pa.nulls(len(values), pa.string()), joined)
    frame = pl.from_arrow(pa.table({"c": values}))
    return frame.select(pl.col("c").struct.json_encode() if isinstance(frame.schema["c"], pl.Struct)
                        else pl.col("c").cast(pl.Utf8)).to_series().to_arrow().cast(pa.string())


def turns_from_cells(cells: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``turns`` from a conversation column; rows that hold none become null."""
    cells = _combine(cells)
    t = cells.type
    n = len(cells)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        decoded = pl.from_arrow(pa.table({"c": cells})).select(pl.col("c").str.json_decode(infer_schema_length=None))
        cells = decoded.to_series().to_arrow()
        if isinstance(cells, pa.ChunkedArray):
            cells = cells.combine_chunks()
        t = cells.type
    if pa.types.is_large_list(t):
        cells = cells.cast(pa.list_(t.value_type))
        t = cells.type
    if not (pa.types.is_list(t) and pa.types.is_struct(t.value_type)):
        return pa.nulls(n, TURNS)
    items = cells.flatten()
    it = t.value_type
    names = {it.field(i).name for i in range(it.num_fields)}
    m = len(items)
    role = items.field("role") if "role" in names else (items.field("from") if "from" in names else pa.nulls(m, pa.string()))
    content = items.field("content") if "content" in names else (items.field("value") if "value" in names else pa.nulls(m, pa.string()))
    role = pc.fill_null(_role(role), "user")
    content = _content(content)
    lengths = pc.fill_null(pc.list_value_length(cells), 0).to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    structs = pa.StructArray.from_arrays([role, content], fields=list(TURN_TYPE))
    out = pa.ListArray.from_arrays(pa.array(offsets), structs, type=TURNS)
    empty = pc.equal(pc.list_value_length(out), 0)
    return pc.if_else(pc.or_(cells.is_null(), empty), pa.nulls(n, TURNS), out)


def row_sums(per_item: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Sum of per-item values per row, for items laid out row after row."""
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    cs = np.concatenate([[0], np.cumsum(per_item, dtype=np.int64)])
    return cs[offsets[1:]] - cs[offsets[:-1]]


def placeholder_counts(turns: pa.Array, token: str) -> np.ndarray:
    """Occurrences of ``token`` in each row's turns."""
    turns = _combine(turns)
    if len(turns) == 0:
        return np.zeros(0, np.int64)
    lengths = pc.fill_null(pc.list_value_length(turns), 0).to_numpy(zero_copy_only=False)
    content = pc.list_flatten(turns).field("content")
    per = pc.fill_null(pc.count_substring(content, token), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return row_sums(per, lengths)


def prefix_first_user(turns: pa.Array, prefix: pa.Array) -> pa.Array:
    """Prepend ``prefix[row]`` to the first user turn of each row (rows with a null/empty prefix unchanged)."""
    turns = _combine(turns)
    n = len(turns)
    lengths = pc.fill_null(pc.list_value_length(turns), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    items = pc.list_flatten(turns)
    m = len(items)
    if m == 0:
        return turns
    role = items.field("role")
    is_user = pc.fill_null(pc.equal(role, "user"), False).to_numpy(zero_copy_only=False)
    parents = np.repeat(np.arange(n), lengths)
    # index of each row's first user turn (or its first turn when none is a user turn)
    cand = np.arange(m)[is_user]
    first = np.full(n, m, np.int64)
    np.minimum.at(first, parents[cand], cand)
    first = np.where(first < m, first, offsets[:-1])
    has = lengths > 0
    sel = np.full(m, -1, np.int64)
    sel[first[has]] = np.arange(n)[has]
    item_prefix = pc.fill_null(_combine(prefix).cast(pa.string()).take(pa.array(sel, mask=sel < 0)), "")
    content = pc.binary_join_element_wise(item_prefix, pc.fill_null(items.field("content"), ""), "")
    structs = pa.StructArray.from_arrays([role, content], fields=list(TURN_TYPE))
    out = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), structs, type=TURNS)
    return pc.if_else(turns.is_null(), pa.nulls(n, TURNS), out)


def constant(value: str | None, n: int) -> pa.Array:
    """The same string n times (a take from a one-element array: no per-row objects)."""
    return pa.array([value], pa.string()).take(pa.array(np.zeros(n, np.int64)))


def repeat_token(token: str, counts: np.ndarray) -> pa.Array:
    """``token * counts[row]`` per row."""
    return pc.binary_repeat(constant(token, len(counts)), pa.array(counts.astype(np.int64)))
