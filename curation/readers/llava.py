"""``format: llava``: LLaVA, LLaVA-OneVision and LLaVA-Video-178K annotation files.

A JSON array (or JSON Lines) of ``{id, image | images | video, conversations:
[{from: human|gpt|system, value}]}``. Roles become user/assistant/system;
``<image>`` and ``<video>`` placeholders keep their positions in the turns
(when a row with media has none, they go at the start of its first user turn).
Image paths resolve against ``image_root``, video paths against ``video_root``
(default: the annotation file's folder). With ``kind: video`` the rows' videos
are the media (one ``video`` entry each); otherwise the images are.

The key is ``id`` (``id_column`` renames it), else a content hash. Read-stage
ledger reasons: ``invalid_json`` / ``invalid_utf8`` (an element that is not a
JSON object), ``missing_conversations``, ``image_count_mismatch``.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.filters.common import MEDIA_LIST
from curation.readers import jsonparse as J
from curation.readers.base import SourceContext
from curation.readers.columns import (
    IMAGE_TOKEN,
    TURNS,
    VIDEO_TOKEN,
    constant,
    media_count,
    media_from_cells,
    placeholder_counts,
    prefix_first_user,
    repeat_token,
    turns_from_cells,
)
from curation.readers.rows import assemble, first_reason, meta_json
from curation.readers.table import TableReader, row_keys
from curation.readers.tabular import find_tables
from manifests.errors import RecipeError


def _head_element(path: str, limit: int = 4 << 20) -> bytes:
    """The first object of a JSON array or JSON Lines file (or as much of it as ``limit`` bytes hold)."""
    with open(path, "rb") as fh:
        head = fh.read(limit)
    s = head.lstrip()
    if s[:1] == b"[":
        starts, ends = J.element_bounds_in(s[1:], True)
        return s[1:][starts[0]:ends[0]]
    return s.split(b"\n", 1)[0]


class LlavaReader(TableReader):
    name = "llava"
    kinds = frozenset({"image_text", "video", "text"})
    formats = frozenset({"json", "jsonl"})

    @classmethod
    def detect(cls, ctx: SourceContext) -> bool:
        try:
            found = [tf for tf in find_tables(list(ctx.paths), "auto", None) if tf.format == "jsonl"]
            return bool(found) and b'"conversations"' in _head_element(found[0].path)
        except (RecipeError, OSError, IndexError):  # detection never fails a recipe; planning reports the real problem
            return False

    def convert(self, ctx: SourceContext, table: pa.Table, uris: pa.Array, pos: np.ndarray, base: str) -> pa.Table:
        src = ctx.source
        n = table.num_rows
        names = table.column_names
        conv_col = src.turns_column or "conversations"
        id_col = src.id_column or ("id" if "id" in names else None)
        keys = row_keys(table, id_col)
        folder = ctx.image_root or base
        image_parts = [media_from_cells(table.column(c), folder) for c in (src.image_column,) if c and c in names] or \
            [media_from_cells(table.column(c), folder) for c in ("image", "images") if c in names]
        media = _concat_lists(image_parts, n)
        videos = media_from_cells(table.column("video"), ctx.video_root or base, kind="video") \
            if "video" in names else _concat_lists([], n)
        if ctx.kind == "video":
            media = videos
        turns = turns_from_cells(table.column(conv_col)) if conv_col in names else pa.nulls(n, TURNS)
        n_img = media_count(media) if ctx.kind != "video" else np.zeros(n, np.int64)
        n_vid = media_count(videos)
        placed_img = placeholder_counts(turns, IMAGE_TOKEN)
        placed_vid = placeholder_counts(turns, VIDEO_TOKEN)
        prefix = pc.binary_join_element_wise(repeat_token(VIDEO_TOKEN, np.where(placed_vid == 0, n_vid, 0)),
                                             repeat_token(IMAGE_TOKEN, np.where(placed_img == 0, n_img, 0)), "")
        turns = prefix_first_user(turns, prefix)
        missing = pc.is_null(turns).to_numpy(zero_copy_only=False)
        img_bad = (placed_img > 0) & (placed_img != n_img)
        vid_bad = (placed_vid > 0) & (placed_vid != n_vid)
        reason = first_reason(n, [(missing, "missing_conversations"), (img_bad, "image_count_mismatch"),
                                  (vid_bad, "video_count_mismatch")])
        counts = pc.binary_join_element_wise(
            pa.array(placed_img).cast(pa.string()), constant(" <image> for ", n), pa.array(n_img).cast(pa.string()),
            constant(" images, ", n), pa.array(placed_vid).cast(pa.string()), constant(" <video> for ", n),
            pa.array(n_vid).cast(pa.string()), constant(" videos", n), "")
        detail = pc.binary_join_element_wise(
            uris, constant(": ", n), pc.if_else(pa.array(missing), constant(f"no {conv_col!r}", n), counts), "")
        used = {conv_col, "image", "images", "video", *(c for c in (src.image_column,) if c)}
        meta = meta_json(table, used - {id_col} if id_col else used)
        return assemble(ctx, keys, uris, pos, media=media, turns=turns, meta=meta, fail_reason=reason, fail_detail=detail)


def _concat_lists(parts: list[pa.Array], n: int) -> pa.Array:
    """Row-wise concatenation of several media list columns."""
    if not parts:
        return pa.array([[]] * n, MEDIA_LIST) if n else pa.array([], MEDIA_LIST)
    if len(parts) == 1:
        return parts[0]
    lengths = np.sum([media_count(p) for p in parts], axis=0)
    flat = [p.flatten() for p in parts]
    # interleave per row: stable sort of (row, part) keys
    rows = np.concatenate([np.repeat(np.arange(n), media_count(p)) for p in parts])
    order = np.argsort(rows, kind="stable")
    child = pa.concat_arrays(flat).take(pa.array(order))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), child, type=MEDIA_LIST)
