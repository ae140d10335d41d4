"""blake2b-128 digests of encoded bytes, of files and of decoded pixels (the exact-duplicate keys)."""
from __future__ import annotations

import hashlib
import os

import numpy as np

from media.counters import count

DIGEST_BYTES = 16
_BLOCK = 1 << 20


def digest(data: bytes | memoryview) -> bytes:
    """blake2b-128 of bytes (hashlib releases the GIL on large buffers, so threads overlap)."""
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest()


def file_digest(path: str | os.PathLike, kind: str = "video") -> bytes:
    """blake2b-128 of a file, streamed (videos can be large); counted as one read of ``kind``."""
    h = hashlib.blake2b(digest_size=DIGEST_BYTES)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            h.update(block)
    count("read", kind)
    return h.digest()


def pixel_digest(arr: np.ndarray) -> bytes:
    """Hash of decoded pixels with their shape, so a 2x8 and a 4x4 image of the same bytes differ."""
    arr = np.ascontiguousarray(arr)
    h = hashlib.blake2b(digest_size=DIGEST_BYTES)
    h.update(np.asarray(arr.shape, dtype=np.int64).tobytes())
    h.update(memoryview(arr).cast("B"))
    return h.digest()
