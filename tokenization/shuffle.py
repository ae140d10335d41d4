"""Pixel shuffle (space-to-depth) of the SmolVLM / Idefics3 connector, and its exact inverse.

``pixel_shuffle`` folds each r x r block of patch embeddings into one token of
r² times the width: 1024 SigLIP patches of a 512 tile become 64 tokens at r = 4.
The result is element-for-element the connector's view/permute sequence; unlike
transformers it refuses a non-square patch count or a side not divisible by r
instead of silently dropping patches.
"""
from __future__ import annotations

import math
from typing import TypeVar

import numpy as np

from manifests.errors import UserError

ArrayT = TypeVar("ArrayT")


def _check(shape: tuple[int, ...], r: int, what: str) -> tuple[int, int, int, int]:
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1:
        raise UserError(f"must be a positive integer, got {r!r}", field="pixel_shuffle")
    if len(shape) != 3:
        raise UserError(f"{what} must be [batch, tokens, dim], got shape {tuple(shape)}", field="pixel_shuffle")
    b, n, d = (int(v) for v in shape)
    side = math.isqrt(n)
    if side * side != n:
        raise UserError(f"{n} tokens do not form a square grid", field="pixel_shuffle")
    return b, n, d, side


def _reshape(x, shape):  # works for torch tensors and numpy arrays alike
    return x.reshape(shape)


def _permute(x, axes):
    return x.permute(*axes) if hasattr(x, "permute") else np.transpose(x, axes)


def pixel_shuffle(x: ArrayT, r: int) -> ArrayT:
    """[B, N, D] -> [B, N/r², D·r²]; token (i, j) holds the r x r block at (i·r, j·r), row-major."""
    b, n, d, side = _check(tuple(x.shape), r, "input")
    if side % r:
        raise UserError(f"r={r} does not divide the {side}x{side} token grid", field="pixel_shuffle")
    k = side // r
    # [B, k, r, k, r, D]: (block row, row in block, block col, col in block, dim)
    x = _reshape(x, (b, k, r, k, r, d))
    x = _permute(x, (0, 1, 3, 2, 4, 5))
    return _reshape(x, (b, k * k, r * r * d))


def pixel_unshuffle(x: ArrayT, r: int) -> ArrayT:
    """Exact inverse of :func:`pixel_shuffle`: [B, M, D·r²] -> [B, M·r², D]."""
    b, m, dr, k = _check(tuple(x.shape), r, "input")
    if dr % (r * r):
        raise UserError(f"width {dr} is not divisible by r²={r * r}", field="pixel_shuffle")
    d = dr // (r * r)
    x = _reshape(x, (b, k, k, r, r, d))
    x = _permute(x, (0, 1, 3, 2, 4, 5))
    return _reshape(x, (b, k * r * k * r, d))
