"""Image-splitting arithmetic of the SmolVLM image processor, vectorized over arrays of sizes.

Everything here is integer/float64 arithmetic in the same order transformers does
it (``image_processing_pil_smolvlm``: resize to the longest edge, cap at 4096, snap
up to tile multiples using the *resized* aspect ratio, split). Keeping the float
operations identical is what makes the grid match exactly, including the odd
rounding cases (odd sides bumped to even, ``int()`` truncation). One function
serves a single image (``plan_image``) and a million metadata rows (budgets).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: transformers caps the resized longest side at 4k.
MAX_IMAGE_SIZE = 4096


@dataclass(frozen=True)
class GridArrays:
    """Per-image geometry for many images at once (all int64 arrays of one length)."""

    resized_width: np.ndarray  # after the longest-edge resize
    resized_height: np.ndarray
    width: np.ndarray  # final size that is cut into tiles (== tile for no-split)
    height: np.ndarray
    rows: np.ndarray  # 0 when the image is not split
    cols: np.ndarray
    tiles: np.ndarray  # crops fed to the encoder, global image included


def _trunc(x: np.ndarray) -> np.ndarray:
    return np.trunc(x).astype(np.int64)


def resize_longest_edge(width: np.ndarray, height: np.ndarray, longest_edge: int) -> tuple[np.ndarray, np.ndarray]:
    """Size after scaling the longest side to `longest_edge` (odd short side bumped to even), then the 4096 cap."""
    w = np.asarray(width, dtype=np.int64)
    h = np.asarray(height, dtype=np.int64)
    aspect = w / h
    wide = w >= h
    short_w = _trunc(longest_edge / aspect)  # height when wide
    short_w += short_w % 2
    short_t = _trunc(longest_edge * aspect)  # width when tall
    short_t += short_t % 2
    new_w = np.where(wide, np.int64(longest_edge), short_t)
    new_h = np.where(wide, short_w, np.int64(longest_edge))
    new_w = np.maximum(new_w, 1)
    new_h = np.maximum(new_h, 1)
    # second step: scale below the 4k bound, with the aspect ratio of the step-1 size
    aspect2 = new_w / new_h
    cap_w = (new_w >= new_h) & (new_w > MAX_IMAGE_SIZE)
    cap_h = (new_h > new_w) & (new_h > MAX_IMAGE_SIZE)
    if cap_w.any() or cap_h.any():
        capped_w = np.where(cap_w, MAX_IMAGE_SIZE, np.where(cap_h, _trunc(MAX_IMAGE_SIZE * aspect2), new_w))
        capped_h = np.where(cap_h, MAX_IMAGE_SIZE, np.where(cap_w, _trunc(MAX_IMAGE_SIZE / aspect2), new_h))
        new_w = np.maximum(capped_w, 1)
        new_h = np.maximum(capped_h, 1)
    return new_w, new_h


def snap_to_tiles(width: np.ndarray, height: np.ndarray, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """Size after rounding up to tile multiples; the short side follows the long side's new aspect."""
    w = np.asarray(width, dtype=np.int64)
    h = np.asarray(height, dtype=np.int64)
    aspect = w / h
    wide = w >= h
    big_w = np.ceil(w / tile).astype(np.int64) * tile
    wide_h = np.ceil(_trunc(big_w / aspect) / tile).astype(np.int64) * tile
    big_h = np.ceil(h / tile).astype(np.int64) * tile
    tall_w = np.ceil(_trunc(big_h * aspect) / tile).astype(np.int64) * tile
    return np.where(wide, big_w, tall_w), np.where(wide, wide_h, big_h)


def plan_grids(
    width: np.ndarray, height: np.ndarray, *, longest_edge: int, tile: int, do_split: bool = True
) -> GridArrays:
    """Geometry of many images; sizes must already be validated as positive."""
    rw, rh = resize_longest_edge(width, height, longest_edge)
    if not do_split:
        full = np.full(rw.shape, tile, dtype=np.int64)
        zero = np.zeros(rw.shape, dtype=np.int64)
        return GridArrays(rw, rh, full, full.copy(), zero, zero.copy(), np.ones(rw.shape, dtype=np.int64))
    sw, sh = snap_to_tiles(rw, rh, tile)
    split = (sh > tile) | (sw > tile)
    rows = np.where(split, sh // tile, 0)
    cols = np.where(split, sw // tile, 0)
    return GridArrays(rw, rh, sw, sh, rows, cols, rows * cols + 1)


def max_grid_side(longest_edge: int, tile: int) -> int:
    """Largest rows (or cols) any input can produce: it bounds the learned ``<row_i_col_j>`` vocabulary."""
    side = min(longest_edge + longest_edge % 2, MAX_IMAGE_SIZE)  # an odd edge can be bumped by one
    return max(1, -(-side // tile))
