"""Near-duplicate videos by aligned sequences of frame pHashes.

Signatures: ``sig_vhash``, ``sig_vdetail`` (frames sampled once by the shared
decode, hashed in :mod:`curation.dedup.video`). Candidates: one record per
(frame position, band) of every non-flat frame, at its position and the next.
Verification: the alignment of :func:`curation.dedup.video.align_sequences`
over offsets and length scales, inside the bucket phase (the sequences ride in
the records), so no phase of its own.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from curation.dedup.keys import band_masks, chunks, key
from curation.dedup.layout import K_VHASH
from curation.dedup.methods.base import DedupMethod, EdgeKind, RecordContext


class VideoConfig(BaseModel):
    """``dedup.video``: frame-sequence near duplicates for videos."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    max_distance: int = Field(8, ge=0, le=31)  # per aligned frame pHash distance
    frames: int = Field(8, ge=1, le=64)  # frames sampled evenly from first to last
    #: fraction of aligned (non-flat) frames that must fall within max_distance
    frame_fraction: float = Field(0.75, gt=0, le=1)
    #: align the sequences (start offsets, length scales 0.75-1: trimmed and retimed copies); false: frame k
    #: against frame k only
    align: bool = True
    bands: int | None = Field(None, ge=1, le=64)

    @model_validator(mode="after")
    def _bands(self) -> "VideoConfig":
        if self.bands is None:
            self.bands = min(64, self.max_distance + 1)
        return self


def _fingerprint(cfg: Any) -> list:
    return [cfg.video.enabled, cfg.video.frames]


def _records(ctx: RecordContext) -> None:
    """Every (frame position, band) of non-flat frames, at its position and the next (trims, retimes)."""
    t, cfg = ctx.table, ctx.config
    if not (cfg.video.enabled and ctx.dedup_role and ctx.has("sig_vhash")):
        return
    vh = t.column("sig_vhash").to_pylist()
    vd = t.column("sig_vdetail").to_pylist() if ctx.has("sig_vdetail") else [None] * ctx.n
    rec_rows, rec_keys, rec_flat = [], [], []
    masks = band_masks(cfg.video.bands)
    for i, seq in enumerate(vh):
        if not seq:
            continue
        det = np.asarray(vd[i] if vd[i] is not None else [np.inf] * len(seq), dtype=np.float64)
        flat_bits = det < cfg.image.min_detail  # the flat rule of images, frame by frame
        if flat_bits.all():
            continue
        arr = np.asarray(seq, dtype=np.uint64)
        pos = np.flatnonzero(~flat_bits)
        ch = chunks(arr[pos], cfg.video.bands)
        nb = len(masks)
        # each frame's bands at its own position and the next one: copies whose samples are
        # offset by up to one position (trimmed, retimed) still meet; the alignment verifies
        reps = 2 if cfg.video.align else 1
        band = np.tile(ch.reshape(-1), reps)
        idx = np.tile(np.arange(nb), reps * pos.size)
        at = np.concatenate([np.repeat(pos + r, nb) for r in range(reps)])
        keys = np.unique(key(K_VHASH, band, idx, at))
        fb = int(np.sum((1 << np.flatnonzero(flat_bits)).astype(np.uint64))) if flat_bits.any() else 0
        rec_rows.append(np.full(keys.size, i))
        rec_keys.append(keys)
        rec_flat.append(np.full(keys.size, fb, dtype=np.uint64))
    if rec_rows:
        vrows = np.concatenate(rec_rows)
        seq = t.column("sig_vhash").combine_chunks().take(pa.array(vrows))
        ctx.emit(K_VHASH, np.concatenate(rec_keys), vrows, True, seq=seq, flat=np.concatenate(rec_flat))


def check_pairs(cfg: Any, seq: np.ndarray, lens: np.ndarray, color: np.ndarray | None, flat: np.ndarray,
                p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(accepted, mean distance) of candidate pairs: frame sequences aligned over offsets and length scales."""
    from curation.dedup.layout import U64
    from curation.dedup.video import SCALES, align_sequences

    pos = np.arange(seq.shape[1])[None, :]
    fa = ((flat[p][:, None] >> pos.astype(np.uint64)) & U64(1)).astype(bool)
    fb = ((flat[q][:, None] >> pos.astype(np.uint64)) & U64(1)).astype(bool)
    ok = np.zeros(p.size, dtype=bool)
    shown = np.zeros(p.size, dtype=np.float32)
    la, lb = lens[p], lens[q]
    for x, y in {(int(u), int(v)) for u, v in zip(*np.unique(np.stack((la, lb)), axis=1))}:
        sel = np.flatnonzero((la == x) & (lb == y))
        frac, mean = align_sequences(seq[p[sel]], seq[q[sel]], x, y, fa[sel], fb[sel], cfg.video.max_distance,
                                     SCALES if cfg.video.align else (1.0,))
        ok[sel] = frac >= cfg.video.frame_fraction
        shown[sel] = np.nan_to_num(mean, nan=0.0)
    return ok, shown


METHOD = DedupMethod(
    key="video",
    config=VideoConfig,
    kinds={K_VHASH: EdgeKind("vhash", "distance", bucket="pairs", check=check_pairs)},
    fingerprint=_fingerprint,
    records=_records,
    description="aligned frame pHashes (trims, retimes, re-encodes)",
)
