"""Verification of image near-duplicate candidates: a finer look before a pHash match becomes an edge.

pHash and LSH only *propose* pairs. A 64-bit pHash of a mostly blank canvas
is set by a few coarse shapes, so a plus sign and a division sign, a 1-cent
and a 2-cent coin, ``s`` and ``S``, or two pages that differ in one line are
0-6 bits apart. Every proposed pair is therefore checked on a larger grey
thumbnail (``VERIFY_SIDE`` square, from the same reduced decode as the pHash)
before it counts (see docs/dedup.md, "Verification"):

1. **Align.** 13 alignments (as is, and either image cropped to one of the
   six crop ``WINDOWS``); the one with the smallest difference is refined by
   whole-pixel shifts of up to ``MAX_SHIFT``. This lets a crop of up to 10%
   verify against its original.
2. **Normalize.** A [1, 2, 1] blur (``SMOOTH`` passes), then zero mean and
   unit spread per thumbnail (spread floored at ``MIN_STD`` grey levels):
   brightness, contrast, resampling jitter and compression ringing cancel.
3. **Decide.** On ``TILE`` tiles, the contrast-structure term of SSIM
   ``cs = (2 cov + c) / (var_a + var_b + c)``. A pair is a duplicate when its
   RMS difference is at most ``MAX_RMS`` and its worst tile is not much worse
   than its typical one: ``1 - cs_min <= MAX_TILE_LOSS + TILE_LOSS_SLOPE *
   (1 - cs_median)``. A copy differs a little everywhere (more in a detailed
   photo, almost nothing on a clean graphic); a distinct image that pHash
   could not tell apart differs in one place (a numeral, a letter, a stroke,
   a line of text, a bar) on an otherwise identical canvas. The less an image
   carries, the smaller the difference it may show in one spot.

Everything is vectorized over the candidate pairs; verification never runs
on pairs that pHash did not propose. The thresholds were chosen on
``benchmarks/bench_dedup_quality.py`` (figures in benchmarks/README.md): the
largest ``MAX_TILE_LOSS`` below the closest hard negative (a text page with
one line changed, 0.21-0.22), ``TILE_LOSS_SLOPE`` the value with the best
recall at zero false merges.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

from media.thumbs import grey_thumb

#: side of the verification thumbnail (grey, uint8, stored per image as ``sig_vthumb``)
VERIFY_SIDE = 48
#: crop windows (x0, y0, x1, y1 as fractions) tried on either image; the first is the whole image.
#: The pHash candidate generator hashes the same windows (``window_thumbs``), so a crop of up to 10%
#: (centred, or 5% off two adjacent sides) is proposed and then aligned here.
WINDOWS: tuple[tuple[float, float, float, float], ...] = (
    (0.0, 0.0, 1.0, 1.0),
    (0.05, 0.05, 0.95, 0.95),
    (0.025, 0.025, 0.975, 0.975),
    (0.0, 0.0, 0.95, 0.95),
    (0.05, 0.0, 1.0, 0.95),
    (0.0, 0.05, 0.95, 1.0),
    (0.05, 0.05, 1.0, 1.0),
)
SMOOTH = 1
MAX_SHIFT = 2  # pixels of the verification thumbnail, each direction
MIN_STD = 4.0  # grey levels: a nearly flat thumbnail is not amplified into noise
TILE = (6, 6)  # tile height, width (pixels of the verification thumbnail)
MAX_RMS = 0.5
MAX_TILE_LOSS = 0.2
TILE_LOSS_SLOPE = 5.0
CS_C = 0.02  # stabilizer of the tile contrast-structure term (normalized units squared)
PAIR_BATCH = 256  # pairs aligned per numpy pass (peak ~150 MB: 14 windows and 13 alignments of 48x48 float32 each)


def verify_thumb(img: Image.Image) -> np.ndarray:
    """The verification thumbnail of a decoded image: ``uint8[VERIFY_SIDE, VERIFY_SIDE]`` grey, box-filtered."""
    if img.mode != "L":
        img = img.convert("L")
    return np.asarray(img.resize((VERIFY_SIDE, VERIFY_SIDE), Image.Resampling.BOX), dtype=np.uint8)


def window_images(img: Image.Image) -> list[Image.Image]:
    """The image cropped to each window after the first (their pHashes join the candidate generator)."""
    w, h = img.size
    return [img.crop((round(x0 * w), round(y0 * h), round(x1 * w), round(y1 * h))) for x0, y0, x1, y1 in WINDOWS[1:]]


@lru_cache(maxsize=8)
def _resample_matrices(side: int) -> tuple[np.ndarray, np.ndarray]:
    """``(RY, RX)``, each ``float32[len(WINDOWS), side, side]``: a window resampled to the full side, then blurred.

    The blur (``SMOOTH`` passes of [1, 2, 1] / 4) removes the resampling jitter
    of thin lines and compression ringing, which are finer than any content
    difference that matters.
    """

    def interp(a: float, b: float) -> np.ndarray:
        x = ((np.arange(side) + 0.5) / side * (b - a) + a) * side - 0.5
        x = np.clip(x, 0, side - 1)
        i0 = np.floor(x).astype(np.int64)
        i1 = np.minimum(i0 + 1, side - 1)
        f = x - i0
        m = np.zeros((side, side))
        np.add.at(m, (np.arange(side), i0), 1 - f)
        np.add.at(m, (np.arange(side), i1), f)
        return m

    blur = np.eye(side)
    for _ in range(SMOOTH):  # [1, 2, 1] / 4 with repeated edges, folded into the resampling
        step = np.zeros((side, side))
        idx = np.arange(side)
        np.add.at(step, (idx, np.maximum(idx - 1, 0)), 0.25)
        np.add.at(step, (idx, idx), 0.5)
        np.add.at(step, (idx, np.minimum(idx + 1, side - 1)), 0.25)
        blur = step @ blur
    ry = np.stack([blur @ interp(y0, y1) for _, y0, _, y1 in WINDOWS]).astype(np.float32)
    rx = np.stack([blur @ interp(x0, x1) for x0, _, x1, _ in WINDOWS]).astype(np.float32)
    return ry, rx


def _normalize(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit spread per image over the last two axes (spread floored at MIN_STD)."""
    mean = x.mean(axis=(-2, -1), keepdims=True)
    std = np.maximum(x.std(axis=(-2, -1), keepdims=True), MIN_STD)
    return (x - mean) / std


def _combos() -> tuple[np.ndarray, np.ndarray]:
    k = len(WINDOWS)
    wa = np.array([0] + list(range(1, k)) + [0] * (k - 1))
    wb = np.array([0] + [0] * (k - 1) + list(range(1, k)))
    return wa, wb


def _tile_means(d: np.ndarray) -> np.ndarray:
    """Mean of ``d[..., H, W]`` over every TILE_H x TILE_W tile at half-tile strides (overlapping tiles)."""
    th, tw = TILE
    cs = np.cumsum(np.cumsum(d, axis=-2), axis=-1)
    cs = np.pad(cs, [(0, 0)] * (d.ndim - 2) + [(1, 0), (1, 0)])
    h, w = d.shape[-2:]
    ys = np.arange(0, h - th + 1, max(1, th // 2))
    xs = np.arange(0, w - tw + 1, max(1, tw // 2))
    y0, y1 = ys[:, None], ys[:, None] + th
    x0, x1 = xs[None, :], xs[None, :] + tw
    tot = cs[..., y1, x1] - cs[..., y0, x1] - cs[..., y1, x0] + cs[..., y0, x0]
    return tot / (th * tw)


def compare(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """Verify thumbnail pairs ``a[i]`` vs ``b[i]`` (``uint8[m, S, S]``) -> features and ``accepted``.

    ``rms``: RMS of the normalized difference at the best alignment;
    ``cs_min`` / ``cs_med``: the worst and the median tile contrast-structure
    similarity (SSIM's second term, 1 = same structure); ``window``: the
    alignment chosen (0 = as is; 1-6: ``a`` cropped to ``WINDOWS[k]``; 7-12:
    ``b`` cropped to ``WINDOWS[k - 6]``).
    """
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    m = a.shape[0]
    out = {k: np.zeros(m, np.float32) for k in ("rms", "cs_min", "cs_med")}
    out["window"] = np.zeros(m, np.int16)
    for lo in range(0, m, PAIR_BATCH):
        hi = min(m, lo + PAIR_BATCH)
        rms, cs_min, cs_med, combo = _compare_batch(a[lo:hi], b[lo:hi])
        out["rms"][lo:hi], out["cs_min"][lo:hi], out["cs_med"][lo:hi], out["window"][lo:hi] = rms, cs_min, cs_med, combo
    out["accepted"] = decide(out["rms"], out["cs_min"], out["cs_med"])
    return out


def _compare_batch(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n, side = a.shape[0], a.shape[-1]
    ry, rx = _resample_matrices(side)
    wa, wb = _combos()
    s = MAX_SHIFT
    inner = slice(s, side - s)
    rows = np.arange(n)
    # every window of each image, smoothed and normalized: [n, K, S, S]
    rxt = rx.transpose(0, 2, 1)[None]
    va = _normalize(np.matmul(np.matmul(ry[None], a[:, None]), rxt))
    vb = _normalize(np.matmul(np.matmul(ry[None], b[:, None]), rxt))
    # 1. the window alignment with the smallest difference, unshifted (13 candidates)
    err0 = np.mean((va[:, wa, inner, inner] - vb[:, wb, inner, inner]) ** 2, axis=(-2, -1))
    combo = np.argmin(err0, axis=1)
    xa, xb = va[rows, wa[combo]], vb[rows, wb[combo]]  # [n, S, S]
    base = xb[:, inner, inner]
    # 2. refined by whole-pixel shifts of up to MAX_SHIFT
    shifts = [(dy, dx) for dy in range(-s, s + 1) for dx in range(-s, s + 1)]
    errs = np.stack([np.mean((xa[:, s + dy:side - s + dy, s + dx:side - s + dx] - base) ** 2, axis=(-2, -1))
                     for dy, dx in shifts], axis=1)
    pick = np.argmin(errs, axis=1)
    dy = np.array([d for d, _ in shifts])[pick]
    dx = np.array([d for _, d in shifts])[pick]
    span = np.arange(side - 2 * s)
    yy = (s + dy)[:, None, None] + span[None, :, None]
    xx = (s + dx)[:, None, None] + span[None, None, :]
    chosen = xa[rows[:, None, None], yy, xx]  # the chosen alignment, gathered at once
    # 3. tile statistics of the aligned pair
    ma, mb = _tile_means(chosen), _tile_means(base)
    var_a = _tile_means(chosen * chosen) - ma * ma
    var_b = _tile_means(base * base) - mb * mb
    cov = _tile_means(chosen * base) - ma * mb
    cs = ((2 * cov + CS_C) / (var_a + var_b + CS_C)).reshape(n, -1)
    rms = np.sqrt(errs[rows, pick])
    return rms, cs.min(axis=1), np.median(cs, axis=1), combo


def decide(rms: np.ndarray, cs_min: np.ndarray, cs_med: np.ndarray) -> np.ndarray:
    """The documented rule on the features of :func:`compare`: similar overall, and no tile much worse than typical."""
    return (rms <= MAX_RMS) & ((1.0 - cs_min) <= MAX_TILE_LOSS + TILE_LOSS_SLOPE * (1.0 - cs_med))


class Collector:
    """The map-stage half: verification thumbnails and crop-window pHashes of one batch's hashed images.

    :class:`~curation.dedup.signatures.MediaSignatures` calls :meth:`add` with
    each image it hashes (the shared decode's RGB reduction, the one the pHash
    comes from) and :meth:`columns` once per batch, which computes every window
    pHash of the batch in one DCT pass.
    """

    def __init__(self, verify: bool, crops: bool) -> None:
        self.verify, self.crops = verify, crops
        self.thumbs: list[bytes | None] = []
        self.windows: list[np.ndarray | None] = []

    def add(self, img: Image.Image | None) -> None:
        ok = img is not None and min(img.size) >= 2
        self.thumbs.append(verify_thumb(img).tobytes() if ok and self.verify else None)
        self.windows.append(np.stack([grey_thumb(w) for w in window_images(img)]) if ok and self.crops else None)

    def columns(self, owners: list[int], n_rows: int) -> tuple[list, list]:
        """(``sig_vthumb``, ``sig_phash_win``) per row; window hashes only for rows with exactly one image."""
        from curation.dedup.phash import phash_thumbs

        vthumb: list[list[bytes] | None] = [None] * n_rows
        win: list[list[int] | None] = [None] * n_rows
        per_row: dict[int, list[int]] = {}
        for k, row in enumerate(owners):
            per_row.setdefault(row, []).append(k)
        single = [ks[0] for ks in per_row.values() if len(ks) == 1 and self.windows[ks[0]] is not None]
        if single:
            hashes = phash_thumbs(np.concatenate([self.windows[k] for k in single]))[0].reshape(len(single), -1)
            for k, h in zip(single, hashes):
                win[owners[k]] = h.tolist()
        for row, ks in per_row.items():
            blobs = [self.thumbs[k] for k in ks]
            if all(b is not None for b in blobs):
                vthumb[row] = blobs
        return vthumb, win
