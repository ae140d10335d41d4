"""Bucket keys: the stable 64-bit keys every dedup method's records are partitioned and bucketed by.

Shared by :mod:`curation.dedup.records` and the method modules; knows no method.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import pyarrow as pa

from curation.dedup.layout import U64
from curation.dedup.minhash import mix64

__all__ = ["band_masks", "block_pairs", "chunks", "digest_keys", "id_keys", "key", "list_keys"]


def id_keys(ids: Sequence[str]) -> np.ndarray:
    """Stable 64-bit keys of ids: the order every tie is broken by."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(i.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big") for i in ids),
        dtype=np.uint64,
        count=len(ids),
    )


def digest_keys(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 keys from the first 8 bytes of each digest, valid mask)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    keys = np.zeros(len(arr), dtype=np.uint64)
    if valid.any():
        vals = arr.filter(pa.array(valid)).to_pylist()
        keys[valid] = np.fromiter((int.from_bytes(v[:8], "big") for v in vals), dtype=np.uint64, count=len(vals))
    return keys, valid


def list_keys(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """One key per row for a list<binary> column (the ordered list), and the valid mask."""
    vals = col.to_pylist()
    keys = np.zeros(len(vals), dtype=np.uint64)
    valid = np.zeros(len(vals), dtype=bool)
    for i, v in enumerate(vals):
        if v:
            blob = v[0] if len(v) == 1 else hashlib.blake2b(b"".join(v), digest_size=16).digest()
            keys[i] = int.from_bytes(blob[:8], "big")
            valid[i] = True
    return keys, valid


def band_masks(bands: int) -> list[tuple[int, int]]:
    """(shift, width) of `bands` contiguous chunks covering 64 bits."""
    widths = [64 // bands + (1 if i < 64 % bands else 0) for i in range(bands)]
    out, shift = [], 64
    for w in widths:
        shift -= w
        out.append((shift, w))
    return out


def chunks(h: np.ndarray, bands: int) -> np.ndarray:
    """``uint64[n, bands]`` band values of 64-bit hashes."""
    cols = []
    for shift, width in band_masks(bands):
        mask = U64((1 << width) - 1)
        cols.append((h >> U64(shift)) & mask)
    return np.stack(cols, axis=1) if cols else np.zeros((h.size, 0), np.uint64)


def block_pairs(h: np.ndarray, blocks: int) -> np.ndarray:
    """``uint64[n, blocks * (blocks - 1) / 2]``: the values of every pair of ``blocks`` contiguous blocks, concatenated.

    Two hashes within Hamming distance ``blocks - 2`` agree on at least two
    blocks (pigeonhole), so they share one of these values: the same guarantee
    as ``blocks - 1`` single bands, with keys twice as wide (16 bits instead of
    9 for 8 blocks), i.e. far fewer random collisions, for more keys per hash.
    """
    ch = chunks(h, blocks)
    widths = np.array([w for _, w in band_masks(blocks)], dtype=np.uint64)
    i, j = np.triu_indices(blocks, 1)
    return (ch[:, i] << widths[j]) | ch[:, j]


def key(kind: int, *parts: np.ndarray | int) -> np.ndarray:
    with np.errstate(over="ignore"):
        acc = np.asarray(U64(kind + 1) * U64(0x9E3779B97F4A7C15), dtype=np.uint64)
        for p in parts:
            acc = mix64(acc ^ np.asarray(p, dtype=np.uint64)) * U64(0xFF51AFD7ED558CCD)
        return mix64(acc)
