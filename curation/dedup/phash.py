"""Perceptual hashes of images and video frames, computed over a stack at once.

The pHash is the one `imagehash.phash` defines (grey 32x32 LANCZOS thumbnail,
2-D DCT-II, the 8x8 lowest frequencies thresholded at their median, bits in
row-major order with the first bit most significant), so hashes are
comparable with that package, with one deliberate difference: a coefficient
within half a grey level of the median is a tie and reads as 0 (see
``TIE_MARGIN``). What differs is the cost: the DCT of a whole
batch is two matrix products over an ``[n, 32, 32]`` stack instead of a scipy
call per image, and JPEGs are decoded at reduced scale (libjpeg DCT scaling,
via :func:`media.open_image`) because a 32x32 thumbnail never needs
the full-resolution pixels.

The same DCT gives a *detail* measure: the RMS of the 63 low-frequency AC
coefficients (orthonormal DCT, grey levels). A flat or nearly flat image
(colour swatch, blank page, black frame) has almost no energy there, so its
hash bits are decided by noise and two unrelated flat images collide. Such
images are matched only exactly (see docs/dedup.md).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Sequence, Union

import numpy as np
from PIL import Image

import media as M
from media.files import read_bytes
from media.image import _decode_errors, load_image, reduce_image
from media.thumbs import COLOR, THUMB, color_thumb, grey_thumb

#: side of the low-frequency block kept (the thumbnail sides, THUMB and COLOR, are media.thumbs')
LOW = 8
#: a coefficient this close above the median (unscaled DCT units: 8 = half a grey level of the
#: orthonormal DCT) is a tie and reads as 0. Those bits are set by rounding noise and flip between a
#: photo and its re-encoded copy; the margin brought copy recall to imagehash's (benchmarks/README.md)
TIE_MARGIN = 8.0
#: images are decoded so their longer side is about this (JPEG draft scaling); the thumbnail is LANCZOS from there
DECODE_SIDE = 128
#: how the crop-window pHashes (``sig_phash_win``) are made, part of the signature fingerprint: 2: resampled
#: from the verification thumbnail (:func:`window_thumbs`); 1 (unversioned): crops of the 128-px reduction.
#: Manifests stamped before it are re-hashed when used as ``against:``
WINDOW_HASH = 2

ImageLike = Union[Image.Image, np.ndarray, str, bytes]


@lru_cache(maxsize=4)
def _dct_matrix(n: int) -> np.ndarray:
    """Unscaled DCT-II rows (scipy's convention up to one global factor, so medians match imagehash)."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return np.cos(np.pi * k * (2 * i + 1) / (2 * n))


@lru_cache(maxsize=4)
def _ortho_scale(n: int, low: int) -> np.ndarray:
    """Per-coefficient factors turning the unscaled low block into orthonormal DCT values (grey levels)."""
    s = np.full(low, np.sqrt(2.0 / n))
    s[0] = np.sqrt(1.0 / n)
    return np.outer(s, s).reshape(-1)


#: the 32x32 grey thumbnail pHash runs on (media.thumbs, so the shared decode can make it)
thumbnail = grey_thumb


def frames_to_thumbs(frames: np.ndarray) -> np.ndarray:
    """Thumbnails of decoded RGB frames ``uint8[n, H, W, 3]`` -> ``float64[n, 32, 32]``."""
    if frames.ndim == 3:
        frames = frames[..., None].repeat(3, axis=-1)
    return np.stack([thumbnail(Image.fromarray(np.ascontiguousarray(f)).convert("L")) for f in frames]) if len(frames) else np.zeros((0, THUMB, THUMB))


@lru_cache(maxsize=64)
def _window_matrix(side: int, lo: float, hi: float, out: int = THUMB) -> np.ndarray:
    """``float64[out, side]``: LANCZOS resampling of the span ``[lo, hi)`` (fractions) of an axis of ``side``
    samples to ``out`` samples, with the filter widened by the scale as for a downscale (Pillow's kernel)."""
    in0, in1 = lo * side, hi * side
    scale = (in1 - in0) / out
    stretch = max(scale, 1.0)
    support = 3.0 * stretch
    m = np.zeros((out, side))
    centers = in0 + (np.arange(out) + 0.5) * scale
    x = np.arange(side)[None, :] + 0.5 - centers[:, None]  # pixel centres relative to each output's centre
    t = x / stretch
    w = np.where(np.abs(x) < support, np.sinc(t) * np.sinc(t / 3.0), 0.0)
    m[:] = w / w.sum(axis=1, keepdims=True)
    return m


def window_thumbs(base: np.ndarray, windows: Sequence[tuple[float, float, float, float]]) -> np.ndarray:
    """``float64[n, len(windows), 32, 32]``: pHash thumbnails of crop ``windows`` (x0, y0, x1, y1 fractions) of
    every image of a stack of square grey thumbnails ``base [n, S, S]``, in two batched matrix products.

    The crop-window pHashes (``sig_phash_win``) used to crop and LANCZOS-resize
    the 128-px reduction six times per image; they are now resampled from the
    image's verification thumbnail (the 48-px BOX reduction of the same image),
    which carries every frequency the 8x8 pHash block reads. Window pHashes
    therefore differ in a few bits from crops of the 128-px image; crop recall
    and precision were checked on ``benchmarks/bench_dedup_quality.py``.
    """
    b = np.asarray(base, dtype=np.float64)
    n, side = b.shape[0], b.shape[-1]
    if n == 0 or not windows:
        return np.zeros((n, len(windows), THUMB, THUMB))
    ry = np.stack([_window_matrix(side, y0, y1) for _, y0, _, y1 in windows])  # [k, 32, S]
    rx = np.stack([_window_matrix(side, x0, x1) for x0, _, x1, _ in windows])  # [k, 32, S]
    # [n, 1, S, S] -> rows [n, k, 32, S] -> [n, k, 32, 32]
    rows = np.matmul(ry[None], b[:, None])
    return np.matmul(rows, rx.transpose(0, 2, 1)[None])


def phash_thumbs(thumbs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 pHash, float32 detail) of a stack of 32x32 thumbnails, vectorized over the stack."""
    thumbs = np.asarray(thumbs, dtype=np.float64).reshape(-1, THUMB, THUMB)
    if thumbs.shape[0] == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.float32)
    d = _dct_matrix(THUMB)[:LOW]  # only the low rows are ever used: 8x32 @ 32x32 @ 32x8
    low = np.matmul(np.matmul(d, thumbs), d.T).reshape(-1, LOW * LOW)
    med = np.median(low, axis=1, keepdims=True)
    bits = low > med + TIE_MARGIN
    packed = np.packbits(bits, axis=1)  # 8 bytes, MSB first, row-major
    hashes = packed.view(">u8").reshape(-1).astype(np.uint64)
    ortho = low * _ortho_scale(THUMB, LOW)
    detail = np.sqrt(np.mean(ortho[:, 1:] ** 2, axis=1)).astype(np.float32)
    return hashes, detail


def chroma_moments(rgb_thumbs: np.ndarray) -> np.ndarray:
    """``float32[n, 3]``: mean Cb-128, mean Cr-128 and mean chroma magnitude of each RGB thumbnail (BT.601).

    pHash sees grey levels only, so the same line drawing filled with another
    colour keeps its hash; the mean chroma tells them apart. A greyscale
    rendition has a magnitude of ~0 and is exempt (a grey copy is a duplicate).
    """
    x = np.asarray(rgb_thumbs, dtype=np.float64).reshape(-1, COLOR * COLOR, 3)
    cb = x @ np.array([-0.168736, -0.331264, 0.5])
    cr = x @ np.array([0.5, -0.418688, -0.081312])
    mag = np.hypot(cb, cr).mean(axis=1)
    return np.stack((cb.mean(axis=1), cr.mean(axis=1), mag), axis=1).astype(np.float32)


def load_thumb(src: ImageLike) -> np.ndarray:
    """Decode one image at reduced size and return its thumbnail (MediaError if undecodable)."""
    if isinstance(src, np.ndarray):
        arr = src if src.dtype == np.uint8 else np.clip(src, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr)
    elif isinstance(src, Image.Image):
        img = src
        if max(img.size) > 4 * DECODE_SIDE:
            img = img.convert("L") if img.mode not in ("L", "RGB") else img
            img = img.resize(_fit(img.size, DECODE_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)
    else:
        # one read, then a grey decode at DCT scale (simplejpeg for JPEGs), as the shared decode does
        data, label = read_bytes(src)
        _, img = load_image(src if isinstance(src, str) else data, draft=("L", DECODE_SIDE), data=data)
        with _decode_errors(label):
            img = reduce_image(img, DECODE_SIDE, "L")
    return thumbnail(img)


def _fit(size: tuple[int, int], side: int) -> tuple[int, int]:
    w, h = size
    s = side / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def phash_images(images: Sequence[ImageLike] | Iterable[ImageLike]) -> np.ndarray:
    """64-bit pHashes of images (PIL images, uint8 arrays, paths or encoded bytes); 0 where one fails to decode.

    Use :func:`phash_images_detail` to tell failures and flat images apart.
    """
    return phash_images_detail(images)[0]


def phash_images_detail(images: Sequence[ImageLike] | Iterable[ImageLike]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint64 hashes, float32 detail, bool ok) for a batch of images; failed decodes have ok=False."""
    thumbs, ok = [], []
    for src in images:
        try:
            thumbs.append(load_thumb(src))
            ok.append(True)
        except (M.MediaError, OSError, ValueError):
            thumbs.append(np.zeros((THUMB, THUMB)))
            ok.append(False)
    okarr = np.asarray(ok, dtype=bool)
    hashes, detail = phash_thumbs(np.stack(thumbs) if thumbs else np.zeros((0, THUMB, THUMB)))
    hashes[~okarr] = 0
    detail[~okarr] = 0
    return hashes, detail, okarr


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Bitwise Hamming distance of uint64 hashes (broadcasting)."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    return np.bitwise_count(x).astype(np.int64)
