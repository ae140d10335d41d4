"""Bucket keys: the stable 64-bit keys every dedup method's records are partitioned and bucketed by.

Shared by :mod:`curation.dedup.records` and the method modules; knows no method.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.dedup.layout import U64
from curation.dedup.minhash import mix64

__all__ = ["band_masks", "block_pairs", "chunks", "digest_keys", "first8", "id_keys", "key", "list_keys"]


_PADS = pa.array([b"\0" * i for i in range(9)], pa.large_binary())
_NO_SEP = pa.scalar(b"", pa.large_binary())


def _words(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(words, words per value, byte length) of a string or binary column: every value zero-padded to a
    multiple of 8 bytes (an empty or null value to one zero word) and read as little-endian uint64.

    The padding is one Arrow kernel (each value joined with its pad), after which every value starts on a
    word boundary of one buffer: no per-row or per-byte work in Python or numpy.
    """
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    arr = pc.fill_null(arr.cast(pa.large_binary()), b"")
    length = np.asarray(pc.binary_length(arr).to_numpy(zero_copy_only=False), dtype=np.int64)
    if length.size == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64), length
    pad = np.where(length == 0, 8, (-length) % 8)
    joined = pc.binary_join_element_wise(arr, _PADS.take(pa.array(pad)), _NO_SEP)
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int64, count=joined.offset + len(joined) + 1)[joined.offset:]
    words = np.frombuffer(joined.buffers()[2], dtype="<u8", count=int(offsets[-1] // 8), offset=int(offsets[0]))
    return words.astype(np.uint64, copy=False), (length + pad) // 8, length


def first8(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Each value's first 8 bytes as a big-endian uint64 (``int.from_bytes(v[:8], "big")``; 0 for an empty value)."""
    words, count, length = _words(col)
    first = words[np.cumsum(count) - count]  # zero past the value's end: the padding
    keep = np.minimum(length, 8).astype(np.uint64)
    with np.errstate(over="ignore"):
        return np.where(keep > 0, first.byteswap() >> (U64(8) * (U64(8) - keep)), U64(0))


def id_keys(ids: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Stable 64-bit keys of ids (their UTF-8 bytes): the order every tie is broken by.

    Vectorized over Arrow's buffers. Each 8-byte word is mixed; per id, the plain sum of the mixes and
    their sum weighted by the place from the end (both from two running sums, so no per-word place is
    built) are mixed with the length, so the key depends on every byte and its place.
    """
    words, count, length = _words(ids)
    out = np.zeros(count.size, np.uint64)
    ends = np.cumsum(count)
    for lo in range(0, count.size, _ID_CHUNK):  # chunks of ids: scratch arrays that stay in cache and the heap
        hi = min(lo + _ID_CHUNK, count.size)
        w0 = int(ends[lo] - count[lo])
        out[lo:hi] = _id_chunk(words[w0:int(ends[hi - 1])], count[lo:hi], length[lo:hi])
    return out


#: ids hashed at a time by :func:`id_keys`
_ID_CHUNK = 1 << 18


def _id_chunk(words: np.ndarray, count: np.ndarray, length: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        run = np.cumsum(mix64(words), dtype=np.uint64)  # wrapping
        last = np.cumsum(count) - 1
        before = last - count  # the word before the id's first, -1 for the first id
        has_before = before >= 0
        at = np.maximum(before, 0)
        run_before = np.where(has_before, run[at], U64(0))
        plain = run[last] - run_before
        np.cumsum(run, out=run, dtype=np.uint64)  # running sum of the running sums
        weighted = run[last] - np.where(has_before, run[at], U64(0)) - count.astype(np.uint64) * run_before
        return mix64(mix64(plain ^ U64(0x632BE59BD9B4E019)) ^ weighted ^ mix64(length.astype(np.uint64) + U64(0xD6E8FEB86659FD93)))


def digest_keys(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 keys from the first 8 bytes of each digest, valid mask)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    keys = first8(arr)
    keys[~valid] = 0
    return keys, valid


def list_keys(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """One key per row for a list<binary> column (the ordered list), and the valid mask (a non-empty list).

    A one-item list keys by its item's first 8 bytes; a longer one by a fold of its items' keys in order.
    """
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    lens = np.asarray(arr.value_lengths().fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64) if n else np.zeros(0, np.int64)
    valid = lens > 0
    keys = np.zeros(n, np.uint64)
    if not valid.any():
        return keys, valid
    offsets = np.asarray(arr.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    items = first8(arr.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0])))
    starts = offsets[:-1] - offsets[0]
    one = lens == 1
    keys[one] = items[starts[one]]
    many = np.flatnonzero(lens > 1)
    if many.size:
        with np.errstate(over="ignore"):
            acc = np.full(many.size, U64(0x243F6A8885A308D3))
            for pos in range(int(lens[many].max())):  # over item positions (few), vectorized over rows
                live = lens[many] > pos
                acc[live] = mix64(acc[live] ^ items[starts[many][live] + pos]) * U64(0xFF51AFD7ED558CCD)
            keys[many] = mix64(acc ^ lens[many].astype(np.uint64))
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
