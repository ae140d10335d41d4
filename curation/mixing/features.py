"""Per-row metadata features and rule predicates, computed batch by batch with Arrow and numpy.

Only metadata leaves are read from Parquet (e.g. ``media.list.element.duration``,
never the embedded bytes), so a pass over ten million rows stays small in memory.
"""
from __future__ import annotations

import json
from typing import Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.mixing.config import Match, Range

#: media struct children each feature needs
_MEDIA_LEAVES = {
    "media": (),
    "images": ("kind",),
    "pages": ("kind",),
    "videos": ("kind",),
    "duration": ("duration",),
    "frames": ("frames",),
    "width": ("width",),
    "height": ("height",),
}
_KIND_OF = {"images": "image", "pages": "page", "videos": "video"}


def parquet_columns(features: Iterable[str], extra_columns: Iterable[str] = (), meta: bool = False) -> list[str]:
    """Parquet column paths (nested leaves included) that a set of features reads."""
    cols = {"source", "modality"}
    media_leaves: set[str] = set()
    for f in features:
        if f in _MEDIA_LEAVES:
            media_leaves.update(_MEDIA_LEAVES[f] or ("kind",))  # counting items needs one leaf
        elif f == "text_chars":
            cols.update({"text", "turns.list.element.content"})
        elif f == "turns":
            cols.add("turns.list.element.role")
    cols.update(f"media.list.element.{leaf}" for leaf in media_leaves)
    cols.update(extra_columns)
    if meta:
        cols.add("meta")
    return sorted(cols)


def _list_lengths(arr: pa.Array) -> np.ndarray:
    return pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64)


def _child_per_row(arr: pa.Array, child: str, n: int, how: str) -> np.ndarray:
    """Sum or max of one numeric struct child over each row's list (0 where empty or null)."""
    flat = pc.list_flatten(arr)
    if len(flat) == 0:
        return np.zeros(n, dtype=np.float64)
    values = pc.fill_null(pc.struct_field(flat, child), 0).to_numpy(zero_copy_only=False).astype(np.float64)
    parents = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False)
    if how == "sum":
        return np.bincount(parents, weights=values, minlength=n)
    out = np.zeros(n, dtype=np.float64)
    lengths = _list_lengths(arr)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    nonempty = lengths > 0
    out[nonempty] = np.maximum.reduceat(values, starts[nonempty])
    return out


def _kind_counts(arr: pa.Array, kind: str, n: int) -> np.ndarray:
    flat = pc.list_flatten(arr)
    if len(flat) == 0:
        return np.zeros(n, dtype=np.int64)
    hit = pc.fill_null(pc.equal(pc.struct_field(flat, "kind"), kind), False).to_numpy(zero_copy_only=False)
    parents = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False)
    return np.bincount(parents, weights=hit, minlength=n).astype(np.int64)


def batch_features(batch: pa.RecordBatch | pa.Table, features: Iterable[str]) -> dict[str, np.ndarray]:
    """Numeric features of every row of a batch, as numpy arrays (token features excluded)."""
    n = batch.num_rows
    out: dict[str, np.ndarray] = {}
    names = batch.schema.names
    media = batch.column(names.index("media")) if "media" in names else None
    if isinstance(media, pa.ChunkedArray):
        media = media.combine_chunks()
    for f in features:
        if f == "media":
            out[f] = _list_lengths(media)
        elif f in _KIND_OF:
            out[f] = _kind_counts(media, _KIND_OF[f], n)
        elif f in ("duration", "frames"):
            out[f] = _child_per_row(media, f, n, "sum")
        elif f in ("width", "height"):
            out[f] = _child_per_row(media, f, n, "max")
        elif f in ("text_chars", "turns"):
            turns = batch.column(names.index("turns"))
            if isinstance(turns, pa.ChunkedArray):
                turns = turns.combine_chunks()
            if f == "turns":
                out[f] = _list_lengths(turns)
            else:
                text = pc.fill_null(pc.utf8_length(batch.column(names.index("text"))), 0)
                chars = text.to_numpy(zero_copy_only=False).astype(np.float64)
                flat = pc.list_flatten(turns)
                if len(flat):
                    lens = pc.fill_null(pc.utf8_length(pc.struct_field(flat, "content")), 0)
                    parents = pc.list_parent_indices(turns).to_numpy(zero_copy_only=False)
                    chars = chars + np.bincount(parents, weights=lens.to_numpy(zero_copy_only=False), minlength=n)
                out[f] = chars.astype(np.int64)
    return out


def _range_mask(values: np.ndarray, r: Range) -> np.ndarray:
    mask = np.ones(values.shape, dtype=bool)
    if r.lt is not None:
        mask &= values < r.lt
    if r.le is not None:
        mask &= values <= r.le
    if r.gt is not None:
        mask &= values > r.gt
    if r.ge is not None:
        mask &= values >= r.ge
    if r.eq is not None:
        mask &= values == r.eq
    return mask


def as_list(value: str | list | None) -> list:
    """A match key's value as a list (a key names one value or several)."""
    return [] if value is None else (list(value) if isinstance(value, list) else [value])


def _meta_text(value) -> str:
    """How json_path_match renders a scalar, so YAML values compare equal to JSON ones."""
    return value if isinstance(value, str) else json.dumps(value)


def match_mask(
    match: Match,
    batch: pa.RecordBatch | pa.Table,
    feats: Mapping[str, np.ndarray],
    category: np.ndarray | None = None,
    category_names: list[str] | None = None,
) -> np.ndarray:
    """Rows of the batch that satisfy every key of `match`."""
    n = batch.num_rows
    names = batch.schema.names
    mask = np.ones(n, dtype=bool)
    for key in ("source", "modality"):
        wanted = as_list(getattr(match, key))
        if wanted:
            col = batch.column(names.index(key))
            mask &= pc.is_in(col, value_set=pa.array(wanted, pa.string())).to_numpy(zero_copy_only=False)
    if match.category is not None:
        assert category is not None and category_names is not None
        codes = [category_names.index(c) for c in as_list(match.category) if c in category_names]
        mask &= np.isin(category, codes)
    if match.meta:
        import polars as pl

        meta = pl.Series(batch.column(names.index("meta")))
        for key, wanted in match.meta.items():
            path = "$." + key if not key.startswith("$") else key
            got = meta.str.json_path_match(path)
            values = [_meta_text(v) for v in as_list(wanted)]
            mask &= got.is_in(values).fill_null(False).to_numpy()
    if match.columns:
        for col_name, r in match.columns.items():
            col = pc.fill_null(batch.column(names.index(col_name)).cast(pa.float64()), np.nan)
            mask &= _range_mask(col.to_numpy(zero_copy_only=False), r)
    for feature in match.features():
        mask &= _range_mask(feats[feature], getattr(match, feature))
    return mask
