"""Token budgets of manifest rows under a strategy, from metadata only, over whole columns.

``tokens_visual`` is the exact length of every media block's prompt expansion
(tiles x image_seq_len plus markers, newlines, video intro/timestamps/outro):
exact when a base tokenizer is given, otherwise markers and template text are
estimated by :mod:`tokenization.counting`. ``tokens_text`` is the text of the row
(``text`` plus each turn's ``content``, plus ``turn_overhead_tokens`` per turn
and the system prompt when enabled): with a tokenizer it is the real count,
without one it is ``ceil(utf8_bytes / text_bytes_per_token)`` per string, an
estimate. No pixel is decoded: image sizes come from ``media.width/height``,
videos from ``media.duration/fps/frames``; a document row has one media entry
per page. The per-grid token table has at most (n+1)² entries, so every image
costs one vectorized gather.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from manifests.errors import UserError
from tokenization import geometry
from tokenization.counting import Counter, estimate_counter
from tokenization.strategy import Strategy
from tokenization.video import LONG_VIDEO_SECS, averaged_count, sampled_frame_counts, timestamp_extra_digits

log = logging.getLogger(__name__)

TOKEN_COLUMNS = ("tokens_visual", "tokens_text", "tokens")
_NEEDED = ("media", "text", "turns")


def _num(arr: pa.Array, dtype: Any, fill: float) -> np.ndarray:
    return pc.fill_null(arr.cast(pa.float64()), fill).to_numpy(zero_copy_only=False).astype(dtype)


def _field(struct: pa.Array, name: str) -> pa.Array | None:
    """A struct child with the parent's nulls applied (``StructArray.field`` would ignore them)."""
    return pc.struct_field(struct, name) if struct.type.get_field_index(name) >= 0 else None


class _Plan:
    """Strategy constants the column kernels need, computed once per call."""

    def __init__(self, strategy: Strategy, tokenizer: Any) -> None:
        self.s = strategy
        self.counter = estimate_counter(strategy) if tokenizer is None else Counter(strategy, tokenizer)
        self.grid_table = self.counter.image_table()
        self.frame_tokens = self.counter.frame_tokens()
        self.system = 0
        if strategy.system_prompt:
            self.system = self.counter.count(strategy.system_prompt_text) + strategy.turn_overhead_tokens


def _media_tokens(media: pa.Array, plan: _Plan, nrows: int) -> tuple[np.ndarray, int]:
    """Visual tokens per row of one list<struct> chunk, and how many entries lacked a usable size."""
    if len(media) == 0 or media.null_count == len(media):
        return np.zeros(nrows, dtype=np.int64), 0
    flat = pc.list_flatten(media)
    if len(flat) == 0:
        return np.zeros(nrows, dtype=np.int64), 0
    parents = pc.list_parent_indices(media).to_numpy(zero_copy_only=False)
    s = plan.s
    kind_arr = _field(flat, "kind")
    is_video = (
        pc.fill_null(pc.equal(kind_arr, "video"), False).to_numpy(zero_copy_only=False)
        if kind_arr is not None
        else np.zeros(len(flat), dtype=bool)
    )
    tokens = np.zeros(len(flat), dtype=np.int64)
    missing = 0

    img = ~is_video
    if img.any():
        w = _num(_field(flat, "width"), np.int64, 0) if _field(flat, "width") is not None else np.zeros(len(flat), np.int64)
        h = _num(_field(flat, "height"), np.int64, 0) if _field(flat, "height") is not None else np.zeros(len(flat), np.int64)
        w, h = w[img], h[img]
        valid = (w > 0) & (h > 0)
        missing += int((~valid).sum())
        rows = np.zeros(w.shape, dtype=np.int64)
        cols = np.zeros(w.shape, dtype=np.int64)
        if valid.any():
            g = geometry.plan_grids(w[valid], h[valid], longest_edge=s.longest_edge, tile=s.tile, do_split=s.do_split)
            rows[valid], cols[valid] = g.rows, g.cols
        # an entry without a size counts as one un-split image: a floor, reported in the log
        tokens[img] = plan.grid_table[rows, cols]

    if is_video.any():
        def col(name: str) -> np.ndarray:
            a = _field(flat, name)
            return np.full(len(flat), np.nan) if a is None else _num(a, np.float64, np.nan)

        dur, fps, frames = col("duration")[is_video], col("fps")[is_video], col("frames")[is_video]
        missing += int((~((np.isfinite(dur) & (dur > 0)) | (np.isfinite(frames) & (frames > 0) & (fps > 0)))).sum())
        n = sampled_frame_counts(
            frames, fps, dur, fps=s.video_fps, max_frames=s.video_max_frames, skip_secs=s.video_skip_secs
        )
        kept = averaged_count(n, s.frame_averaging)
        secs = np.where(np.isfinite(dur) & (dur > 0), dur, np.where(fps > 0, np.nan_to_num(frames) / np.where(fps > 0, fps, 1), 0))
        vt = kept * plan.frame_tokens + plan.counter.video_wrapper_tokens(kept, secs)
        long = np.flatnonzero((secs >= LONG_VIDEO_SECS) & (fps > 0))  # rare: per-row is fine
        for j in long:
            total = int(frames[j]) if np.isfinite(frames[j]) and frames[j] >= 1 else max(1, int(round(secs[j] * fps[j])))
            vt[j] += timestamp_extra_digits(s, total, float(fps[j]), float(secs[j]))
        tokens[is_video] = vt

    per_row = np.bincount(parents, weights=tokens, minlength=nrows)
    return np.rint(per_row).astype(np.int64), missing


def _text_lengths(arr: pa.Array, plan: _Plan) -> np.ndarray:
    """Tokens of each string of a string array (0 for null)."""
    if plan.counter.exact:
        out = np.zeros(len(arr), dtype=np.int64)
        valid = pc.is_valid(arr).to_numpy(zero_copy_only=False)
        if valid.any():
            texts = arr.filter(pa.array(valid)).to_pylist()
            enc = plan.counter.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
            out[valid] = np.fromiter((len(e.ids) for e in enc), dtype=np.int64, count=len(texts))
        return out
    nbytes = _num(pc.binary_length(arr), np.float64, 0.0)
    return np.ceil(nbytes / plan.s.text_bytes_per_token).astype(np.int64)


def _text_tokens(text: pa.Array | None, turns: pa.Array | None, plan: _Plan, nrows: int) -> np.ndarray:
    out = np.full(nrows, plan.system, dtype=np.int64)
    if text is not None:
        out += _text_lengths(text, plan)
    if turns is not None and len(turns) and turns.null_count < len(turns):
        flat = pc.list_flatten(turns)
        if len(flat):
            parents = pc.list_parent_indices(turns).to_numpy(zero_copy_only=False)
            content = _field(flat, "content")
            per_turn = _text_lengths(content, plan) if content is not None else np.zeros(len(flat), np.int64)
            per_turn = per_turn + plan.s.turn_overhead_tokens
            out += np.rint(np.bincount(parents, weights=per_turn, minlength=nrows)).astype(np.int64)
    return out


#: the leaves budgets read; embedded media ``bytes`` are never loaded.
_LEAVES = tuple(f"media.list.element.{f}" for f in ("kind", "width", "height", "duration", "fps", "frames")) + (
    "text",
    "turns.list.element.content",
)


def _read_manifest_metadata(path: str | os.PathLike) -> pa.Table:
    """The metadata leaves of a manifest's shards (Parquet column pruning inside the media structs)."""
    import pyarrow.parquet as pq

    from manifests.reader import open_manifest

    manifest = open_manifest(path)
    parts = []
    for shard in manifest.dataset().files:
        pf = pq.ParquetFile(shard)
        present = {pf.schema.column(i).path for i in range(len(pf.schema))}
        parts.append(pf.read(columns=[c for c in _LEAVES if c in present]))
    if not parts:
        return pa.table({})
    return pa.concat_tables(parts, promote_options="permissive")


def _as_table(data: Any) -> tuple[pa.Table, str]:
    """An Arrow table of the needed columns, and the kind of input ('arrow' or 'polars')."""
    if isinstance(data, (str, os.PathLike)):
        return _read_manifest_metadata(data), "arrow"
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data]), "arrow"
    if isinstance(data, pa.Table):
        return data, "arrow"
    try:
        import polars as pl
    except ImportError:  # pragma: no cover
        pl = None
    if pl is not None and isinstance(data, (pl.DataFrame, pl.LazyFrame)):
        names = data.collect_schema().names() if isinstance(data, pl.LazyFrame) else data.columns
        cols = [c for c in _NEEDED if c in names]
        frame = data.select(cols)
        if isinstance(frame, pl.LazyFrame):
            frame = frame.collect()
        return frame.to_arrow(), "polars"
    raise UserError(f"expected an Arrow table, a polars frame or a manifest directory, got {type(data).__name__}", field="data")


def token_counts(data: Any, strategy: Strategy, tokenizer: Any = None) -> Any:
    """``tokens_visual``, ``tokens_text`` and ``tokens`` (int64) per row, in row order.

    `data` is a pyarrow Table/RecordBatch (returns a pyarrow Table), a polars
    DataFrame or LazyFrame (returns a polars DataFrame) or a manifest directory.
    Pass a ``tokenizers.Tokenizer`` for exact text counts (and exact marker counts).
    """
    table, kind = _as_table(data)
    plan = _Plan(strategy, tokenizer)
    visual_parts, text_parts = [], []
    missing = 0
    names = table.column_names
    for batch in table.to_batches(max_chunksize=1 << 20) if table.num_rows else []:
        n = batch.num_rows
        if "media" in names:
            v, miss = _media_tokens(batch.column(names.index("media")), plan, n)
            missing += miss
        else:
            v = np.zeros(n, dtype=np.int64)
        text = batch.column(names.index("text")) if "text" in names else None
        turns = batch.column(names.index("turns")) if "turns" in names else None
        visual_parts.append(v)
        text_parts.append(_text_tokens(text, turns, plan, n))
    if missing:
        log.warning("%d media entries lack a usable size/duration; each was counted as one un-split image or frame", missing)
    visual = np.concatenate(visual_parts) if visual_parts else np.zeros(0, dtype=np.int64)
    text_tok = np.concatenate(text_parts) if text_parts else np.zeros(0, dtype=np.int64)
    out = pa.table(
        {
            "tokens_visual": pa.array(visual, pa.int64()),
            "tokens_text": pa.array(text_tok, pa.int64()),
            "tokens": pa.array(visual + text_tok, pa.int64()),
        }
    )
    if kind == "polars":
        import polars as pl

        return pl.from_arrow(out)
    return out


def add_tokens_column(
    data: Any, strategy: Strategy, tokenizer: Any = None, *, out_dir: str | os.PathLike | None = None, overwrite: bool = False
) -> Any:
    """`data` with ``tokens_visual``, ``tokens_text`` and ``tokens`` (int64) added or replaced.

    A polars frame comes back as a polars DataFrame, anything else as a pyarrow
    Table (a manifest directory is read whole). With ``out_dir``, a manifest
    directory is also written there as a new manifest (same sources, ledger
    copied) whose schema declares the three columns; ``extra.tokenization``
    records ``strategy.to_dict()`` (plus a ``tokenizer`` fingerprint when one was used).
    """
    is_dir = isinstance(data, (str, os.PathLike))
    if out_dir is not None and not is_dir:
        raise UserError("out_dir needs a manifest directory as input", field="out_dir")
    # the input is read (or collected) once and counted from memory, so counts and rows always line up
    if is_dir:
        from manifests.reader import open_manifest

        manifest = open_manifest(data)
        table = manifest.table()
    elif isinstance(data, pa.RecordBatch):
        table = pa.Table.from_batches([data])
    elif isinstance(data, pa.Table):
        table = data
    else:
        import polars as pl

        frame = data.collect() if isinstance(data, pl.LazyFrame) else data
        counts = token_counts(frame, strategy, tokenizer)  # UserError for an unsupported type
        return frame.drop([c for c in TOKEN_COLUMNS if c in frame.columns]).hstack(counts)
    counts = token_counts(table, strategy, tokenizer)
    for name in TOKEN_COLUMNS:
        if name in table.column_names:
            table = table.drop_columns([name])
        table = table.append_column(pa.field(name, pa.int64()), counts.column(name))
    if out_dir is not None:
        _write_manifest(manifest, table, strategy, tokenizer, Path(out_dir), overwrite)
    return table


def _write_manifest(manifest: Any, table: pa.Table, strategy: Strategy, tokenizer: Any, out: Path, overwrite: bool) -> None:
    from manifests.schema import CORE_NAMES, build_schema
    from manifests.writer import ManifestWriter

    extra = {f.name: f.type for f in table.schema if f.name not in CORE_NAMES}
    writer = ManifestWriter(out, build_schema(extra), overwrite=overwrite)
    writer.write(table)
    ledger = manifest.ledger()
    if ledger.num_rows:
        writer.write_dropped(ledger)
    sources = {name: {k: v for k, v in info.items() if k not in ("kept", "dropped")} for name, info in manifest.info["sources"].items()}
    extra_info = dict(manifest.info.get("extra", {}))
    # exactly strategy.to_dict() when counted without a tokenizer (mixing reuses such counts);
    # a tokenizer adds its fingerprint, so estimated and exact counts are never confused
    recorded = strategy.to_dict()
    if tokenizer is not None:
        recorded["tokenizer"] = hashlib.sha256(tokenizer.to_str().encode()).hexdigest()[:16]
    extra_info["tokenization"] = recorded
    writer.commit(recipe=manifest.info.get("recipe"), sources=sources, extra=extra_info)
