"""Perceptual near duplicates of images and image-only document pages (pHash).

Signatures: ``sig_phash``, ``sig_detail``, ``sig_color``, ``sig_vthumb``,
``sig_phash_win`` (from the shared decode's reduced image, see
:mod:`curation.dedup.phash` and :mod:`curation.dedup.verify`). Candidates:
hashes sharing a pair of ``max_distance + 2`` blocks (pigeonhole: two blocks
agree within the distance; :func:`~curation.dedup.keys.block_pairs`), or
``bands`` single bands when pinned, checked in the bucket phase by Hamming
distance and the colour rule. Verification: the
aligned 48x48 thumbnail comparison of :mod:`curation.dedup.imageverify`, in the
``images`` resolve phase.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from curation.dedup.keys import block_pairs, chunks, key
from curation.dedup.layout import K_PHASH, K_PHASH_ITEM
from curation.dedup.methods.base import DedupMethod, EdgeKind, RecordContext, ResolveContext, ResolvePhase


class ImageConfig(BaseModel):
    """``dedup.image``: perceptual-hash near duplicates for images and document pages."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    max_distance: int = Field(6, ge=0, le=31)  # Hamming distance on the 64-bit pHash
    #: images whose low-frequency detail (RMS of the 8x8 DCT AC terms of the 32x32 thumbnail,
    #: grey levels) is below this are "flat": their pHash is noise, so they only match exactly
    min_detail: float = Field(4.0, ge=0)
    #: when the curation engine wrote ``score_low_info``, rows with a score at or above this are flat too
    low_info_threshold: float = Field(0.9, ge=0, le=1)
    #: pHash is grey-level only: two coloured images also need mean chroma (Cb, Cr) this close,
    #: unless one is a greyscale rendition (a grey copy of a photo is a duplicate)
    max_chroma_distance: float = Field(6.0, ge=0)
    max_items: int = Field(8, ge=1)  # images / pages hashed per sample
    match_text: bool = False  # also require identical normalized text (keep same image + other caption)
    #: LSH bands over the 64 hash bits; default max_distance + 1 (pigeonhole: no pair within the distance is missed)
    bands: int | None = Field(None, ge=1, le=64)
    #: with the default bands (and max_distance <= 8): key the hashes by every pair of max_distance + 2 blocks
    #: instead (the same pairs are found; 16-bit keys instead of 9-bit ones at max_distance 6, so ~30x fewer
    #: random candidates for 4x the records: what keeps a million images from a quadratic pair check)
    block_pairs: bool = True
    #: confirm every pHash candidate on a 48x48 grey thumbnail before it becomes an edge (curation.dedup.verify)
    verify: bool = True
    #: also hash six crop windows of single-image rows, so crops of up to 10% become candidates
    crops: bool = True

    @model_validator(mode="after")
    def _bands(self) -> "ImageConfig":
        if self.bands is None:
            self.bands = min(64, self.max_distance + 1)
        return self


def index_values(h: np.ndarray, cfg: ImageConfig) -> np.ndarray:
    """``uint64[n, K]`` bucket values of 64-bit hashes: pairs of blocks or single bands (see ``block_pairs``)."""
    if cfg.block_pairs and cfg.bands == min(64, cfg.max_distance + 1) and cfg.max_distance <= 8:
        return block_pairs(h, cfg.max_distance + 2)
    return chunks(h, cfg.bands)


def _fingerprint(cfg: Any) -> list:
    from curation.dedup import phash, verify  # the hash definitions' own constants

    im = cfg.image
    return [im.enabled, im.max_items, phash.DECODE_SIDE, phash.TIE_MARGIN,
            im.verify and verify.VERIFY_SIDE, im.crops and [list(verify.WINDOWS), phash.WINDOW_HASH]]


def flat_rows(t: pa.Table, cfg: ImageConfig) -> np.ndarray:
    """Rows whose image is flat (low detail, or scored low-information): they match exactly only."""
    detail = t.column("sig_detail").to_numpy(zero_copy_only=False) if "sig_detail" in t.column_names else None
    flat = np.zeros(t.num_rows, dtype=bool)
    if detail is not None:
        d = np.asarray(detail, dtype=np.float64)
        flat |= np.nan_to_num(d, nan=np.inf) < cfg.min_detail
    if "score_low_info" in t.column_names:
        low = np.asarray(t.column("score_low_info").to_numpy(zero_copy_only=False), dtype=np.float64)
        flat |= np.nan_to_num(low, nan=0.0) >= cfg.low_info_threshold
    return flat


def _records(ctx: RecordContext) -> None:
    """Pigeonhole bands of the first hash (with crop windows) between dedup rows; item by item for eval sets."""
    t, cfg, emit = ctx.table, ctx.config.image, ctx.emit
    if not ctx.has("sig_phash"):
        return
    ph_col = t.column("sig_phash").combine_chunks()
    lens = np.asarray(pc.fill_null(pc.list_value_length(ph_col), 0).to_numpy(zero_copy_only=False), dtype=np.int64)
    offsets = np.asarray(ph_col.offsets.to_numpy(), dtype=np.int64)
    values = np.asarray(ph_col.values.to_numpy(zero_copy_only=False), dtype=np.uint64)
    color_col = t.column("sig_color").combine_chunks() if ctx.has("sig_color") else None
    textlen = np.asarray(pc.fill_null(t.column("sig_textlen"), 0).to_numpy(zero_copy_only=False)) if ctx.has("sig_textlen") else np.zeros(ctx.n)
    mod = ctx.modality
    usable = (lens > 0) & ~flat_rows(t, cfg) & (mod != "video") & ~((mod == "document") & (textlen > 0))
    rows = np.flatnonzero(usable)
    if rows.size and ctx.dedup_role and cfg.enabled:
        first = values[offsets[rows]]
        ch = index_values(first, cfg)
        b = ch.shape[1]
        keys = key(K_PHASH, ch.reshape(-1), np.tile(np.arange(b), rows.size),
                   np.repeat(lens[rows].astype(np.uint64), b), np.repeat(ctx.media_salt[rows], b))
        rep = pa.array(np.repeat(rows, b))
        emit(K_PHASH, keys, np.repeat(rows, b), True, seq=ph_col.take(rep),
             color=color_col.take(rep) if color_col is not None else None)
        if cfg.crops and ctx.has("sig_phash_win"):
            _window_records(ctx, rows[lens[rows] == 1], color_col)
    if rows.size and ctx.eval_role:
        # item by item: any image of a training row may be an eval image
        per = lens[rows]
        item_rows = np.repeat(rows, per)
        j = np.arange(item_rows.size) - np.repeat(np.cumsum(per) - per, per)
        items = values[offsets[item_rows] + j]
        item_color = np.full((items.size, 3), np.nan, dtype=np.float32)
        if color_col is not None:
            coff = np.asarray(color_col.offsets.to_numpy(), dtype=np.int64)
            cvals = np.asarray(color_col.values.to_numpy(zero_copy_only=False), dtype=np.float32)
            ok = (coff[item_rows + 1] - coff[item_rows]) == 3 * lens[item_rows]
            base = coff[item_rows[ok]] + 3 * j[ok]
            item_color[ok] = np.stack([cvals[base + c] for c in range(3)], axis=1)
        ch = index_values(items, cfg)
        b = ch.shape[1]
        keys = key(K_PHASH_ITEM, ch.reshape(-1), np.tile(np.arange(b), items.size))
        rep = np.repeat(np.arange(items.size), b)
        m = rep.size
        seq = pa.ListArray.from_arrays(pa.array(np.arange(m + 1, dtype=np.int32)), pa.array(items[rep]))
        color = pa.ListArray.from_arrays(pa.array(np.arange(m + 1, dtype=np.int32) * 3), pa.array(item_color[rep].reshape(-1)))
        emit(K_PHASH_ITEM, keys, item_rows[rep], False, seq=seq, color=color)


def _window_records(ctx: RecordContext, rows: np.ndarray, color_col: pa.Array | None) -> None:
    """pHash band records of the crop windows of single-image rows, in the same buckets as whole-image hashes.

    They carry the window's hash as their sequence, so a crop of up to 10%
    meets its original (a window of the original, or one of its own windows,
    lands within the distance); verification then aligns the two.
    """
    win_col = ctx.table.column("sig_phash_win").combine_chunks()
    wlen = np.asarray(pc.fill_null(pc.list_value_length(win_col), 0).to_numpy(zero_copy_only=False), dtype=np.int64)
    rows = rows[wlen[rows] > 0]
    if rows.size == 0:
        return
    woff = np.asarray(win_col.offsets.to_numpy(), dtype=np.int64)
    wval = np.asarray(win_col.values.to_numpy(zero_copy_only=False), dtype=np.uint64)
    per = wlen[rows]
    owner = np.repeat(rows, per)
    j = np.arange(owner.size) - np.repeat(np.cumsum(per) - per, per)
    hashes = wval[woff[owner] + j]
    ch = index_values(hashes, ctx.config.image)
    b = ch.shape[1]
    keys = key(K_PHASH, ch.reshape(-1), np.tile(np.arange(b), hashes.size), np.ones(hashes.size * b, np.uint64),
               np.repeat(ctx.media_salt[owner], b))
    rep = np.repeat(np.arange(hashes.size), b)
    seq = pa.ListArray.from_arrays(pa.array(np.arange(rep.size + 1, dtype=np.int32)), pa.array(hashes[rep]))
    color = color_col.take(pa.array(owner[rep])) if color_col is not None else None
    ctx.emit(K_PHASH, keys, owner[rep], True, seq=seq, color=color)


#: mean chroma magnitude below this: a greyscale rendition (exempt from the colour rule)
GREY_CHROMA = 0.1


def check_pairs(cfg: Any, seq: np.ndarray, lens: np.ndarray, color: np.ndarray | None, flat: np.ndarray,
                p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(accepted, max distance) of candidate pairs (p, q): same item count, every item within the distance,
    coloured items of close mean chroma."""
    pos = np.arange(seq.shape[1])[None, :]
    same_len = lens[p] == lens[q]
    dist = np.bitwise_count(seq[p] ^ seq[q]).astype(np.int64)  # [pairs, L]
    inside = pos < lens[p][:, None]
    within = np.where(inside, dist <= cfg.image.max_distance, True).all(axis=1)
    ok = same_len & within
    if color is not None:
        ca, cb = color[p], color[q]
        grey = (ca[..., 2] < GREY_CHROMA) | (cb[..., 2] < GREY_CHROMA)
        cdist = np.hypot(ca[..., 0] - cb[..., 0], ca[..., 1] - cb[..., 1])
        known = ~np.isnan(cdist)
        color_ok = np.where(inside & known & ~grey, cdist <= cfg.image.max_chroma_distance, True).all(axis=1)
        ok &= color_ok
    shown = np.where(inside, dist, 0).max(axis=1)
    return ok, shown.astype(np.float32)


def _verify(ctx: ResolveContext) -> pa.Table:
    from curation.dedup.imageverify import verify_images

    return verify_images(ctx.cands, list(ctx.files), ctx.config, ctx.work, ctx.batch)


def _later(cfg: Any) -> bool:
    return cfg.image.verify  # thumbnail verification in the images phase


METHOD = DedupMethod(
    key="image",
    config=ImageConfig,
    kinds={
        K_PHASH: EdgeKind("phash", "distance", bucket="pairs", check=check_pairs, verify_later=_later),
        K_PHASH_ITEM: EdgeKind("phash", "distance", bucket="pairs", check=check_pairs, verify_later=_later),  # one image of a training row against an evaluation image
    },
    fingerprint=_fingerprint,
    records=_records,
    resolve=ResolvePhase(marker="images", output="image-edges.parquet", run=_verify,
                         candidate_kinds=(K_PHASH, K_PHASH_ITEM)),
    description="pHash within max_distance bits, colour rule, thumbnail verification",
)
