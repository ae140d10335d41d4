"""Pixel work of image splitting: RGB conversion, the resize chain, tiles and normalization.

The resize chain is the one transformers' ``SmolVLMImageProcessorPil`` runs
(LANCZOS to the longest edge, LANCZOS to the tile-multiple size, crops, LANCZOS
to one tile for the global image), so values match it. The speed comes from
everything around the resampling: images stay PIL (no numpy<->PIL round trips
between resizes), tiles are strided views of one band array instead of copies,
and rescale+normalize is written straight into the final ``[tiles, 3, T, T]``
float32 buffer (values equal to transformers' float32 steps), with no padding
to a batch maximum.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

LANCZOS = Image.Resampling.LANCZOS


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composited on white (as transformers' convert_to_rgb does)."""
    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def resize(image: Image.Image, width: int, height: int) -> Image.Image:
    """LANCZOS resize that skips the no-op (Pillow would return an identical copy)."""
    if image.size == (width, height):
        return image
    return image.resize((width, height), LANCZOS)


def normalization_lut(mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """[3, 256] float32 table of ((v * 1/255) - mean) / std, rounded the way transformers' float32 path is."""
    values = (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)
    m = np.asarray(mean, dtype=np.float32).reshape(3, 1)
    s = np.asarray(std, dtype=np.float32).reshape(3, 1)
    return ((values[None, :] - m) / s).astype(np.float32)


class Normalizer:
    """uint8 -> normalized float32, per channel, as float32 ufunc passes proven equal to the table.

    A gather through the 256-entry table would need numpy to widen every uint8
    index to intp first; two or three in-place ufunc passes move less memory.
    Each candidate sequence is checked on all 256 inputs when the normalizer is
    built (IEEE ops give the same result for the same input), and the table
    gather stays as the fallback, so the output always equals the table.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.lut = normalization_lut(mean, std)
        probe = np.arange(256, dtype=np.uint8)
        self.ops: list[list[tuple[np.ufunc, np.float32]] | None] = []
        for c in range(3):
            m, sd = np.float32(mean[c]), np.float32(std[c])
            candidates = [
                [(np.divide, np.float32(255) * sd), (np.subtract, m / sd)],  # exact when std is a power of two
                [(np.divide, np.float32(255)), (np.subtract, m), (np.divide, sd)],
            ]
            chosen = None
            for ops in candidates:
                out = np.empty(256, dtype=np.float32)
                self._apply(ops, probe, out)
                if np.array_equal(out, self.lut[c]):
                    chosen = ops
                    break
            self.ops.append(chosen)

    @staticmethod
    def _apply(ops: list[tuple[np.ufunc, np.float32]], src: np.ndarray, dest: np.ndarray) -> None:
        first, value = ops[0]
        first(src, value, out=dest, dtype=np.float32, casting="unsafe")
        for fn, value in ops[1:]:
            fn(dest, value, out=dest)

    def __call__(self, channel: int, src: np.ndarray, dest: np.ndarray) -> None:
        ops = self.ops[channel]
        if ops is None:
            np.take(self.lut[channel], src, out=dest, mode="wrap")
        else:
            self._apply(ops, src, dest)


def _bands(image: Image.Image) -> list[np.ndarray]:
    """One contiguous [H, W] uint8 array per channel (cheaper to cut into tiles than interleaved RGB)."""
    return [np.asarray(band) for band in image.split()]


def write_tiles(
    image: Image.Image, rows: int, cols: int, tile: int, out: np.ndarray, norm: Normalizer | None
) -> None:
    """Cut an RGB image of size (cols*tile, rows*tile) into `out[:rows*cols]`, row-major, normalizing on the way.

    `out` is [n, 3, tile, tile]: float32 when `norm` is given, uint8 otherwise. The
    loop is per tile and channel (a few dozen calls), each one contiguous write.
    """
    for c, band in enumerate(_bands(image)):
        # [rows, T, cols, T] -> [rows, cols, T, T]: a strided view, no copy
        view = band.reshape(rows, tile, cols, tile).transpose(0, 2, 1, 3)
        for r in range(rows):
            for q in range(cols):
                dest = out[r * cols + q, c]
                if norm is None:
                    dest[...] = view[r, q]
                else:
                    norm(c, view[r, q], dest)


def encode_single(image: Image.Image, out: np.ndarray, norm: Normalizer | None) -> None:
    """Write one tile-sized RGB image into `out` [3, T, T]."""
    for c, band in enumerate(_bands(image)):
        if norm is None:
            out[c] = band
        else:
            norm(c, band, out[c])
