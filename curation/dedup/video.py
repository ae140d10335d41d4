"""Video fingerprints: pHashes of frames sampled evenly from the first to the last frame.

Sampling by position in the stream (not by seconds) makes a re-encode, a new
container, other fps metadata or a muted copy line up frame for frame even
when their container durations differ. Two videos are near duplicates when,
under the best alignment (:func:`align_sequences`: start offsets and length
scales, for trimmed copies and frame counts that are off), at least
``frame_fraction`` of the mapped video's non-flat frames are within
``max_distance`` bits of the other's (see :func:`video_distance`).
"""
from __future__ import annotations

import os
from functools import lru_cache
from typing import Mapping

import numpy as np

from curation.dedup.phash import DECODE_SIDE, frames_to_thumbs, hamming, phash_thumbs
from media import refs as R


def video_hashes(path: str | os.PathLike | Mapping, frames: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 pHash per sampled frame, float32 detail per frame) of one video file or media reference."""
    ref = dict(path) if isinstance(path, Mapping) else {"uri": os.fspath(path), "kind": "video"}
    decoded = R.decode_video_ref(ref, frames, max_side=DECODE_SIDE)
    return phash_thumbs(frames_to_thumbs(decoded))


def video_distance(
    a: np.ndarray, b: np.ndarray, max_distance: int = 8, detail_a: np.ndarray | None = None,
    detail_b: np.ndarray | None = None, min_detail: float = 4.0,
) -> dict:
    """Comparison of two frame-hash sequences: frame k against frame k (``frames``, ``fraction``, ``mean``) and
    under the best alignment (``aligned_fraction``, ``aligned_mean``: what resolve decides on)."""
    a = np.asarray(a, dtype=np.uint64)
    b = np.asarray(b, dtype=np.uint64)
    flat_a = np.zeros(a.shape, bool) if detail_a is None else np.asarray(detail_a) < min_detail
    flat_b = np.zeros(b.shape, bool) if detail_b is None else np.asarray(detail_b) < min_detail
    af, am = align_sequences(a[None], b[None], a.size, b.size, flat_a[None], flat_b[None], max_distance)
    aligned = {"aligned_fraction": float(af[0]), "aligned_mean": float(am[0])}
    if a.shape != b.shape:
        return {"frames": [], "fraction": 0.0, "mean": float("nan"), "comparable": False, **aligned}
    d = hamming(a, b)
    counted = ~(flat_a & flat_b)
    both = ~flat_a & ~flat_b
    matched = both & (d <= max_distance)
    frac = float(matched.sum() / counted.sum()) if counted.any() else 0.0
    return {
        "frames": d.tolist(),
        "fraction": frac,
        "mean": float(d[both].mean()) if both.any() else float("nan"),
        "comparable": True,
        **aligned,
    }


#: length scales tried when aligning two frame sequences (1: same span; 0.8: one is a copy trimmed by 20%)
SCALES = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75)
OFFSET_STEP = 0.05  # start offsets tried, as a fraction of the longer span
ALIGN_BATCH = 8192  # pairs aligned per numpy pass


@lru_cache(maxsize=64)
def _hypotheses(la: int, lb: int, scales: tuple[float, ...] = SCALES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For sequences of ``la`` and ``lb`` sampled frames: every alignment's mapped positions.

    Returns ``(direction, lo, hi)``: direction 0 maps each frame k of b to
    position ``(o + s * k / (lb - 1)) * (la - 1)`` of a (b is a or a trimmed
    copy of it); direction 1 the other way round. ``lo``/``hi`` are the two
    sampled frames around that position (``int64[H, max(la, lb)]``, -1 padding).
    """
    rows_d, rows_lo, rows_hi = [], [], []
    width = max(la, lb)
    for direction, (src, dst) in enumerate(((lb, la), (la, lb))):
        if src < 1 or dst < 1:
            continue
        f = np.arange(src) / max(src - 1, 1)
        for s in scales:
            for o in np.arange(0.0, 1.0 - s + 1e-9, OFFSET_STEP):
                x = np.clip((o + s * f) * (dst - 1), 0, dst - 1)
                lo = np.full(width, -1)
                hi = np.full(width, -1)
                lo[:src], hi[:src] = np.floor(x), np.ceil(x)
                rows_d.append(direction)
                rows_lo.append(lo)
                rows_hi.append(hi)
    return np.asarray(rows_d), np.stack(rows_lo), np.stack(rows_hi)


def align_sequences(seq_a: np.ndarray, seq_b: np.ndarray, len_a: int, len_b: int, flat_a: np.ndarray, flat_b: np.ndarray,
                    max_distance: int, scales: tuple[float, ...] = SCALES) -> tuple[np.ndarray, np.ndarray]:
    """Best matched fraction and its mean distance for pairs of frame-hash sequences, over every alignment.

    ``seq_*``: ``uint64[m, L]`` (first ``len_*`` valid), ``flat_*``: ``bool[m, L]``.
    Under each alignment (:func:`_hypotheses`) the frames of the mapped
    sequence are compared with the nearer of the two frames they fall between;
    frames flat in both are not counted, a frame flat in one only counts as a
    miss. The fraction is over the *mapped* sequence, so a trimmed copy inside
    its original scores 1.0 while two clips sharing only a scene score about
    their overlap.
    """
    m = seq_a.shape[0]
    if m > ALIGN_BATCH:  # bounded memory: [pairs, alignments, frames] arrays per slice
        parts = [align_sequences(seq_a[i:i + ALIGN_BATCH], seq_b[i:i + ALIGN_BATCH], len_a, len_b,
                                 flat_a[i:i + ALIGN_BATCH], flat_b[i:i + ALIGN_BATCH], max_distance, scales)
                 for i in range(0, m, ALIGN_BATCH)]
        return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])
    direction, lo, hi = _hypotheses(int(len_a), int(len_b), tuple(scales))
    width = lo.shape[1]
    best_frac = np.zeros(m)
    best_mean = np.full(m, np.nan)
    if m == 0 or direction.size == 0:
        return best_frac, best_mean
    a = np.zeros((m, width), np.uint64)
    b = np.zeros((m, width), np.uint64)
    fa = np.ones((m, width), bool)
    fb = np.ones((m, width), bool)
    a[:, :len_a], b[:, :len_b] = seq_a[:, :len_a], seq_b[:, :len_b]
    fa[:, :len_a], fb[:, :len_b] = flat_a[:, :len_a], flat_b[:, :len_b]
    for d, (src, dst, fsrc, fdst) in enumerate(((b, a, fb, fa), (a, b, fa, fb))):
        sel = direction == d
        if not sel.any():
            continue
        lo_d, hi_d = lo[sel], hi[sel]  # [H, W]
        valid = lo_d >= 0
        lo_c, hi_c = np.maximum(lo_d, 0), np.maximum(hi_d, 0)
        d_lo = np.bitwise_count(dst[:, lo_c] ^ src[:, None, :]).astype(np.int64)  # [m, H, W]
        d_hi = np.bitwise_count(dst[:, hi_c] ^ src[:, None, :]).astype(np.int64)
        use_hi = d_hi < d_lo
        dist = np.where(use_hi, d_hi, d_lo)
        flat_dst = np.where(use_hi, fdst[:, hi_c], fdst[:, lo_c])
        flat_src = np.broadcast_to(fsrc[:, None, :], dist.shape)
        counted = valid[None] & ~(flat_dst & flat_src)
        both = counted & ~flat_dst & ~flat_src
        matched = both & (dist <= max_distance)
        denom = counted.sum(axis=2)
        frac = np.where(denom > 0, matched.sum(axis=2) / np.maximum(denom, 1), 0.0)  # [m, H]
        mean = np.where(both, dist, 0).sum(axis=2) / np.maximum(both.sum(axis=2), 1)
        h = np.argmax(frac, axis=1)
        rows = np.arange(m)
        top = frac[rows, h]
        better = top > best_frac
        best_frac = np.where(better, top, best_frac)
        best_mean = np.where(better, mean[rows, h], best_mean)
    return best_frac, best_mean
