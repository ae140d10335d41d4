"""Image operators: decode once at reduced size, score, then threshold the scores (vectorized)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.filters.common import (
    STAGE_DECODE, ThresholdFilter, drop_rows, laplacian_variance, low_info_score, media_column,
    put_media, set_column,
)
from curation.operators import Operator, mark_dropped
from curation.recipe import ImageFilters
import media as M
from media.decoded import DecodeNeeds, SharedDecode, row_positions, with_needs

IMAGE_SCORES: dict[str, pa.DataType] = {
    "score_min_side": pa.int32(),  # shorter side of the smallest image, display pixels (from the header)
    "score_max_side": pa.int32(),
    "score_aspect_ratio": pa.float64(),  # longer / shorter side, worst image of the row
    "score_megapixels": pa.float64(),  # largest image of the row, from the header
    "score_low_info": pa.float64(),  # 1 - min(1, grey std / 32), worst image of the row
    "score_sharpness": pa.float64(),  # variance of the Laplacian at analysis size, blurriest image of the row
}

#: media kinds this operator decodes (document images are pages without a PDF behind them)
_DECODED_KINDS = ("image", "page")


class ImageAnalyzer(Operator):
    """Header probe (bomb guard), reduced decode, and image scores for every image of a row.

    Fills width/height/format of each media entry. A row with any image that
    cannot be used is dropped at stage ``decode`` with the media reason
    (undecodable, truncated, decompression_bomb, ...).
    """

    stage = STAGE_DECODE
    columns = IMAGE_SCORES

    def __init__(self, cfg: ImageFilters, embed: bool = False, shared: SharedDecode | None = None) -> None:
        self.cfg = cfg
        self.embed = embed
        self.shared = with_needs(shared, DecodeNeeds(grey_side=cfg.analysis_side, max_pixels=cfg.max_pixels,
                                                     keep_bytes=embed))

    def __call__(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        media = media_column(table)
        positions = row_positions(table)
        min_side = np.full(n, -1, np.int64)
        max_side = np.full(n, -1, np.int64)
        aspect = np.full(n, np.nan)
        mpix = np.full(n, np.nan)
        low = np.full(n, np.nan)
        sharp = np.full(n, np.nan)
        failures: dict[int, tuple[str, str]] = {}
        for i, items in enumerate(media):
            for j, item in enumerate(items or ()):
                if item.get("kind") not in _DECODED_KINDS or (item.get("format") or "").upper() == "PDF":
                    continue
                try:
                    got = self.shared.get(positions[i], j, item).check()
                except M.MediaError as exc:
                    failures[i] = (exc.reason, exc.detail)
                    break
                info, data = got.info, got.data if self.embed and item.get("bytes") is None else None
                grey = np.asarray(got.grey)
                item["width"], item["height"], item["format"] = info.width, info.height, info.format
                if data is not None:
                    item["bytes"] = data
                short, long_ = min(info.width, info.height), max(info.width, info.height)
                min_side[i] = short if min_side[i] < 0 else min(min_side[i], short)
                max_side[i] = max(max_side[i], long_)
                aspect[i] = np.fmax(aspect[i], long_ / max(1, short))
                mpix[i] = np.fmax(mpix[i], info.megapixels)
                low[i] = np.fmax(low[i], low_info_score(grey))
                sharp[i] = np.fmin(sharp[i], laplacian_variance(grey))
        table = put_media(table, media)
        table = set_column(table, "score_min_side", pa.array(min_side, mask=min_side < 0).cast(pa.int32()))
        table = set_column(table, "score_max_side", pa.array(max_side, mask=max_side < 0).cast(pa.int32()))
        for name, arr in (("score_aspect_ratio", aspect), ("score_megapixels", mpix), ("score_low_info", low),
                          ("score_sharpness", sharp)):
            table = set_column(table, name, pa.array(arr, mask=np.isnan(arr)))
        return drop_rows(table, failures, self.stage)


class ImageFilter(ThresholdFilter):
    """Thresholds on the image scores; each failed check is its own ledger reason (the config key)."""

    CHECKS = (
        ("score_min_side", ">=", "min_side"),
        ("score_max_side", "<=", "max_side"),
        ("score_aspect_ratio", "<=", "max_aspect_ratio"),
        ("score_megapixels", ">=", "min_megapixels"),
        ("score_megapixels", "<=", "max_megapixels"),
        ("score_low_info", "<=", "max_low_info"),
        ("score_sharpness", ">=", "min_sharpness"),
    )

    def __call__(self, table: pa.Table) -> pa.Table:
        if self.cfg.formats is not None:
            table = _check_formats(table, self.cfg.formats, self.stage)
        return super().__call__(table)


def _check_formats(table: pa.Table, allowed: list[str], stage: str) -> pa.Table:
    """Drop rows holding any image whose format is not allowed (vectorized over the flattened media)."""
    media = table.column("media").combine_chunks()
    flat = pc.list_flatten(media)
    if len(flat) == 0:
        return table
    parents = pc.list_parent_indices(media).to_numpy()
    kinds = flat.field("kind")
    fmts = pc.utf8_upper(flat.field("format"))
    bad = pc.and_(pc.is_in(kinds, pa.array(list(_DECODED_KINDS))), pc.invert(pc.fill_null(pc.is_in(fmts, pa.array(allowed)), False)))
    bad_np = bad.to_numpy(zero_copy_only=False).astype(bool)
    if not bad_np.any():
        return table
    bad_at = np.flatnonzero(bad_np)
    rows, first = np.unique(parents[bad_at], return_index=True)  # first offending image of each row
    where = np.full(table.num_rows, -1, np.int64)
    where[rows] = bad_at[first]
    fmt_at = pc.fill_null(fmts, "None").take(pa.array(where, mask=where < 0))
    detail = pc.binary_join_element_wise("format ", fmt_at, f" not in {allowed}", "")
    return mark_dropped(table, pa.array(where >= 0), stage, "formats", detail)
