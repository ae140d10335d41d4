"""Stable row keys without a Python loop per row: a vectorized content hash over Arrow buffers.

A table row without an id column is keyed by a hash of its content, so the
same row gets the same id on every run, engine and chunking. The hash walks
the Arrow layout of each column (numbers as 64-bit words, strings and binaries
as bytes, lists and structs recursively) with numpy only:

- bytes of a string or binary value are hashed as a polynomial
  ``sum d_i * P**(i - start)`` modulo 2**64, computed for every value of an
  array at once from one running sum over the data buffer (in fixed blocks, so
  memory stays bounded) and the inverse of ``P`` modulo 2**64; values longer
  than ``FULL_BYTES`` (embedded images) contribute their length, first 2 KB,
  last 1 KB and 256 evenly spaced bytes, so a key costs the same for a 5 KB
  and a 5 MB image;
- list elements are mixed with their position, so order counts;
- struct fields and table columns are mixed with a hash of their name.

The result depends only on values and column names, never on buffer offsets,
chunk boundaries or library versions. Collisions (2**-64 per pair) would only
make the id fix-up at finalize give the later row a ``#1`` id: ids stay unique.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_MASK = (1 << 64) - 1
_P = 0x100000001B3  # odd, so invertible modulo 2**64
_PINV = pow(_P, -1, 1 << 64)
_BLOCK = 1 << 18  # bytes per numpy pass: the work buffers stay in cache
_NULL = np.uint64(0x6A09E667F3BCC909)
_K1 = np.uint64(0x9E3779B97F4A7C15)
_K2 = np.uint64(0xBF58476D1CE4E5B9)
_K3 = np.uint64(0x94D049BB133111EB)

#: binary and string values up to this many bytes are hashed whole; longer ones are sampled (_sampled_hash)
FULL_BYTES = 4096
_HEAD, _TAIL, _SAMPLES = 2048, 1024, 256

_POWERS: np.ndarray | None = None


def _powers() -> np.ndarray:
    """P**j for j < _BLOCK (mod 2**64), built once."""
    global _POWERS
    if _POWERS is None:
        with np.errstate(over="ignore"):
            p = np.full(_BLOCK, np.uint64(_P), dtype=np.uint64)
            p[0] = np.uint64(1)
            _POWERS = np.cumprod(p, dtype=np.uint64)
    return _POWERS


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads every input bit over the output (wrapping uint64 arithmetic)."""
    with np.errstate(over="ignore"):
        x = x.astype(np.uint64, copy=True)
        x ^= x >> np.uint64(30)
        x *= _K2
        x ^= x >> np.uint64(27)
        x *= _K3
        x ^= x >> np.uint64(31)
    return x


def _name_hash(name: str) -> np.uint64:
    h = 0xCBF29CE484222325
    for b in name.encode("utf-8", "surrogatepass"):
        h = ((h ^ b) * _P) & _MASK
    return np.uint64(h)


def _pow_vec(base: int, exps: np.ndarray) -> np.ndarray:
    """base**exps modulo 2**64 for an array of exponents (square and multiply over the exponent bits)."""
    out = np.ones(len(exps), dtype=np.uint64)
    e = exps.astype(np.uint64, copy=True)
    b = np.uint64(base)
    with np.errstate(over="ignore"):
        while e.any():
            odd = (e & np.uint64(1)).astype(bool)
            out[odd] *= b
            e >>= np.uint64(1)
            b = np.uint64((int(b) * int(b)) & _MASK)
    return out


def _bytes_hash(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Polynomial hash of data[starts[k]:ends[k]] for every k (see module doc)."""
    n = len(starts)
    if n == 0:
        return np.zeros(0, np.uint64)
    points = np.concatenate([starts, ends]).astype(np.int64)
    order = np.argsort(points, kind="stable")
    sorted_pts = points[order]
    prefix = np.zeros(len(points), np.uint64)  # S(k) = sum_{i<k} d_i P**i
    pw = _powers()
    work = np.empty(min(_BLOCK, max(len(data), 1)), np.uint64)
    carry = np.uint64(0)
    scale = np.uint64(1)  # P**block_start
    total = len(data)
    lo = 0
    with np.errstate(over="ignore"):
        for s in range(0, max(total, 1), _BLOCK):
            blk = data[s : s + _BLOCK]
            m = len(blk)
            hi = int(np.searchsorted(sorted_pts, s + m, side="left")) if s + m < total else len(sorted_pts)
            raw = None
            if m:
                raw = np.multiply(blk, pw[:m], dtype=np.uint64, out=work[:m])
                np.cumsum(raw, out=raw)
            if hi > lo:
                rel = sorted_pts[lo:hi] - s
                if m:
                    vals = raw[np.maximum(rel - 1, 0)] * scale + carry
                    prefix[order[lo:hi]] = np.where(rel > 0, vals, carry)
                else:
                    prefix[order[lo:hi]] = carry
                lo = hi
            if m:
                carry = carry + raw[-1] * scale
                scale = np.uint64((int(scale) * pow(_P, m, 1 << 64)) & _MASK)
        seg = (prefix[n:] - prefix[:n]) * _pow_vec(_PINV, starts.astype(np.uint64))
        lengths = (ends - starts).astype(np.uint64)
        return _mix((seg ^ (lengths * _K1)) + _K2)


def _binary_hash(arr: pa.Array) -> np.ndarray:
    if pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type):
        off_type = np.int64
    else:
        off_type = np.int32
    if pa.types.is_string_view(arr.type) or pa.types.is_binary_view(arr.type):
        arr = arr.cast(pa.large_binary())
        off_type = np.int64
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=off_type)[arr.offset : arr.offset + len(arr) + 1].astype(np.int64)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    starts, ends = offsets[:-1], offsets[1:]
    lengths = ends - starts
    big = lengths > FULL_BYTES
    if not big.any():
        return _bytes_hash(data, starts, ends)
    h = np.empty(len(starts), np.uint64)
    small = ~big
    h[small] = _bytes_hash(data, starts[small], ends[small])
    h[big] = _sampled_hash(data, starts[big], lengths[big])
    return h


def _sampled_hash(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Values longer than FULL_BYTES (image bytes): their length, head, tail and evenly spaced bytes.

    A key, not a dedup signature (exact dedup hashes every byte): two different
    images would have to agree on all of these to share it, and even then the
    id fix-up keeps their ids apart.
    """
    n = len(starts)
    span = lengths - _HEAD - _TAIL
    rel = np.concatenate([np.arange(_HEAD), np.zeros(_SAMPLES, np.int64), np.arange(_TAIL)])
    idx = np.broadcast_to(rel, (n, len(rel))).copy()
    idx[:, _HEAD:_HEAD + _SAMPLES] = _HEAD + (np.arange(_SAMPLES)[None, :] * span[:, None]) // _SAMPLES
    idx[:, _HEAD + _SAMPLES:] += (lengths - _TAIL)[:, None]
    idx += starts[:, None]
    picked = data[idx.ravel()]
    width = len(rel)
    seg0 = np.arange(n, dtype=np.int64) * width
    h = _bytes_hash(picked, seg0, seg0 + width)
    with np.errstate(over="ignore"):
        return _mix(h ^ _mix(lengths.astype(np.uint64) + _K3))


def _numeric_hash(arr: pa.Array) -> np.ndarray:
    """Numbers hash by their float64 value, so 1 and 1.0 agree whichever type a chunk's inference picked."""
    t = arr.type
    if pa.types.is_boolean(t):
        return _mix(arr.cast(pa.uint8()).fill_null(0).to_numpy(zero_copy_only=False).astype(np.uint64) ^ _K2)
    if pa.types.is_temporal(t):
        arr = arr.cast(pa.int64()) if not pa.types.is_date32(t) else arr.cast(pa.int32())
    vals = arr.cast(pa.float64()).fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64)
    vals = np.where(vals == 0, 0.0, vals).view(np.uint64)  # -0.0 == 0.0
    return _mix(vals ^ _K3)


def _segment_sum(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Wrapping sums of values[offsets[k]:offsets[k+1]]."""
    with np.errstate(over="ignore"):
        cs = np.concatenate([np.zeros(1, np.uint64), np.cumsum(values, dtype=np.uint64)])
        return cs[offsets[1:]] - cs[offsets[:-1]]


def array_hash(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """One uint64 per value of ``arr``, a function of the value alone."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    t = arr.type
    n = len(arr)
    if n == 0:
        return np.zeros(0, np.uint64)
    if pa.types.is_dictionary(t):
        return array_hash(arr.dictionary_decode())
    if isinstance(t, pa.ExtensionType):
        return array_hash(arr.storage)
    if pa.types.is_null(t):
        return np.full(n, _NULL, np.uint64)
    if pa.types.is_fixed_size_binary(t):
        arr, t = arr.cast(pa.binary()), pa.binary()
    if pa.types.is_map(t):
        arr = pa.ListArray.from_arrays(arr.offsets, pa.StructArray.from_arrays([arr.keys, arr.items], ["key", "value"]),
                                       mask=arr.is_null())
        t = arr.type
    if pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_string(t) or pa.types.is_large_binary(t) \
            or pa.types.is_string_view(t) or pa.types.is_binary_view(t):
        h = _binary_hash(arr)
    elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_list_view(t):
        if not (pa.types.is_list(t) or pa.types.is_large_list(t)):
            arr = arr.cast(pa.large_list(t.value_type))
        lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        child = array_hash(arr.flatten())
        pos = (np.arange(len(child), dtype=np.int64) - np.repeat(offsets[:-1], lengths)).astype(np.uint64)
        with np.errstate(over="ignore"):
            contrib = _mix(child ^ _mix(pos + _K2))
        h = _mix(_segment_sum(contrib, offsets) ^ (lengths.astype(np.uint64) * _K1))
    elif pa.types.is_struct(t):
        # a sum over the fields that hold a value: a field absent from one chunk's inferred type changes nothing
        acc = np.zeros(n, np.uint64)
        with np.errstate(over="ignore"):
            for i in range(t.num_fields):
                f = arr.field(i)
                fh = _mix(array_hash(f) ^ _name_hash(t.field(i).name))
                if f.null_count:
                    fh = np.where(f.is_null().to_numpy(zero_copy_only=False), np.uint64(0), fh)
                acc = acc + fh
        h = _mix(acc ^ _K1)
    elif pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_temporal(t) \
            or pa.types.is_decimal(t):
        h = _numeric_hash(arr)
    else:  # anything else: its string form
        h = _binary_hash(arr.cast(pa.string()))
    if arr.null_count:
        h = np.where(arr.is_null().to_numpy(zero_copy_only=False), _NULL, h)
    return h


def table_hash(table: pa.Table, columns: list[str] | None = None) -> np.ndarray:
    """One uint64 per row from the named columns (default: all); null cells count as absent, so a row
    hashes the same whichever other columns its chunk happened to have."""
    names = columns if columns is not None else table.column_names
    h = np.zeros(table.num_rows, np.uint64)
    with np.errstate(over="ignore"):
        for name in names:
            col = table.column(name)
            ch = _mix(array_hash(col) ^ _name_hash(name))
            if col.null_count:
                ch = np.where(col.is_null().to_numpy(zero_copy_only=False), np.uint64(0), ch)
            h = h + ch
    return _mix(h)


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def hex_keys(h: np.ndarray, prefix: str = "sha:") -> pa.Array:
    """``prefix`` + 16 hex digits per hash, as one Arrow string array built from buffers (no per-row strings)."""
    n = len(h)
    be = h.astype(">u8").view(np.uint8).reshape(n, 8)
    digits = np.empty((n, 16), np.uint8)
    digits[:, 0::2] = _HEX[be >> 4]
    digits[:, 1::2] = _HEX[be & 15]
    pre = np.frombuffer(prefix.encode(), np.uint8)
    width = len(pre) + 16
    out = np.empty((n, width), np.uint8)
    out[:, : len(pre)] = pre
    out[:, len(pre):] = digits
    offsets = np.arange(n + 1, dtype=np.int32) * width
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(out.tobytes()))
