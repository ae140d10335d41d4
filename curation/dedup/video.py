"""Video fingerprints: pHashes of frames sampled evenly from the first to the last frame.

Sampling by position in the stream (not by seconds) makes a re-encode, a new
container or a muted copy line up frame for frame even when their container
durations differ by an audio tail. Two videos are near duplicates when at
least ``frame_fraction`` of the aligned, non-flat frames are within
``max_distance`` bits (see :func:`video_distance`).
"""
from __future__ import annotations

import os
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
    """Aligned-frame comparison of two frame-hash sequences: per-frame distances, matched fraction, mean distance."""
    a = np.asarray(a, dtype=np.uint64)
    b = np.asarray(b, dtype=np.uint64)
    if a.shape != b.shape:
        return {"frames": [], "fraction": 0.0, "mean": float("nan"), "comparable": False}
    d = hamming(a, b)
    flat_a = np.zeros(a.shape, bool) if detail_a is None else np.asarray(detail_a) < min_detail
    flat_b = np.zeros(b.shape, bool) if detail_b is None else np.asarray(detail_b) < min_detail
    counted = ~(flat_a & flat_b)
    both = ~flat_a & ~flat_b
    matched = both & (d <= max_distance)
    frac = float(matched.sum() / counted.sum()) if counted.any() else 0.0
    return {
        "frames": d.tolist(),
        "fraction": frac,
        "mean": float(d[both].mean()) if both.any() else float("nan"),
        "comparable": True,
    }
