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
_FILE_DIGEST_GATES: dict[tuple[str, int, int], threading.Lock] = {}  # a file being hashed: its waiters


def file_digest(path: str | os.PathLike, kind: str = "video") -> bytes:
    """XXH3-128 of a file, streamed (videos can be large); counted as one read of ``kind``."""
    p = os.fspath(path)
    st = os.stat(p)
    key = (p, st.st_size, st.st_mtime_ns)
    with _FILE_DIGESTS_LOCK:
        hit = _FILE_DIGESTS.get(key)
        if hit is not None:
            return hit
        gate = _FILE_DIGEST_GATES.setdefault(key, threading.Lock())
    with gate:  # the clips of one video hash it in several decode threads at once: one reads, the rest wait
        try:
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
        finally:
            with _FILE_DIGESTS_LOCK:
                _FILE_DIGEST_GATES.pop(key, None)


def pixel_digest(arr: np.ndarray) -> bytes:
    """Hash of decoded pixels with their shape, so a 2x8 and a 4x4 image of the same bytes differ."""
    arr = np.ascontiguousarray(arr)
    h = xxhash.xxh3_128()
    h.update(np.asarray(arr.shape, dtype=np.int64).tobytes())
    h.update(memoryview(arr).cast("B"))
    return h.digest()


def image_pixel_digest(im) -> bytes:
    """:func:`pixel_digest` of a loaded RGB PIL image: the same digest as of ``np.asarray(im)``.

    Pillow keeps RGB as four bytes a pixel. ``tobytes`` packs them in 64 KiB
    pieces and then joins the pieces into one fresh buffer the size of the
    image, whose allocation (page faults) cost more than the packing: 95 ms
    for a 12 MP image against 12 ms here. The packer's pieces are hashed as
    they come instead, so the packed image never exists whole.
    """
    if im.mode != "RGB":
        raise ValueError(f"image_pixel_digest needs an RGB image, not {im.mode}")
    h = xxhash.xxh3_128()
    h.update(np.asarray((im.height, im.width, 3), dtype=np.int64).tobytes())
    im.load()
    if im.width and im.height:
        try:
            from PIL import Image

            encoder = Image._getencoder("RGB", "raw", "RGB")  # noqa: SLF001 - what tobytes itself uses
        except (AttributeError, OSError):  # pragma: no cover - a Pillow without it
            h.update(im.tobytes())
            return h.digest()
        try:
            encoder.setimage(im.im, (0, 0, im.width, im.height))
            piece = max(_PACK_PIECE, im.width * 4)
            while True:
                _, status, data = encoder.encode(piece)
                h.update(data)
                if status:
                    break
            if status < 0:
                raise RuntimeError(f"encoder error {status} packing RGB pixels")
        finally:
            encoder.cleanup()
    return h.digest()


#: bytes the raw packer returns per call in image_pixel_digest (a piece stays in cache while it is hashed)
_PACK_PIECE = 1 << 18
