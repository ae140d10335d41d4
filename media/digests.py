"""128-bit digests of encoded bytes, of files and of decoded pixels (the exact-duplicate keys).

XXH3-128: the pixel hash covers every decoded pixel, and blake2b over them
cost as much CPU as decoding the image (benchmarks/README.md, curation); XXH3
runs at memory speed. It is not a cryptographic hash: it keys exact
duplicates, where an accidental collision among 2^64 inputs is the relevant
risk, not a crafted one.
"""
from __future__ import annotations

import os
import threading

import numpy as np
import xxhash

from media.counters import count

DIGEST_BYTES = 16
#: the digest definition, part of dedup's signature fingerprint (manifests hashed otherwise are re-hashed)
DIGEST_NAME = "xxh3_128"
_BLOCK = 1 << 20


def digest(data: bytes | memoryview) -> bytes:
    """XXH3-128 of bytes."""
    return xxhash.xxh3_128_digest(data)


#: digests of files already hashed by this process, by (path, size, mtime): the clips of one video
#: (curation.clips) are rows of their own but one file, read once
_FILE_DIGESTS: dict[tuple[str, int, int], bytes] = {}
_FILE_DIGESTS_MAX = 1024
_FILE_DIGESTS_LOCK = threading.Lock()


def file_digest(path: str | os.PathLike, kind: str = "video") -> bytes:
    """XXH3-128 of a file, streamed (videos can be large); counted as one read of ``kind``."""
    p = os.fspath(path)
    st = os.stat(p)
    key = (p, st.st_size, st.st_mtime_ns)
    with _FILE_DIGESTS_LOCK:
        hit = _FILE_DIGESTS.get(key)
    if hit is not None:
        return hit
    h = xxhash.xxh3_128()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            h.update(block)
    count("read", kind)
    out = h.digest()
    with _FILE_DIGESTS_LOCK:
        if len(_FILE_DIGESTS) >= _FILE_DIGESTS_MAX:
            _FILE_DIGESTS.pop(next(iter(_FILE_DIGESTS)))
        _FILE_DIGESTS[key] = out
    return out


def pixel_digest(arr: np.ndarray) -> bytes:
    """Hash of decoded pixels with their shape, so a 2x8 and a 4x4 image of the same bytes differ."""
    arr = np.ascontiguousarray(arr)
    h = xxhash.xxh3_128()
    h.update(np.asarray(arr.shape, dtype=np.int64).tobytes())
    h.update(memoryview(arr).cast("B"))
    return h.digest()


def image_pixel_digest(im) -> bytes:
    """:func:`pixel_digest` of an RGB PIL image, hashing Pillow's packed bytes (no numpy copy on the way)."""
    if im.mode != "RGB":
        raise ValueError(f"image_pixel_digest needs an RGB image, not {im.mode}")
    h = xxhash.xxh3_128()
    h.update(np.asarray((im.height, im.width, 3), dtype=np.int64).tobytes())
    h.update(im.tobytes())
    return h.digest()
