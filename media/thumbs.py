"""The fixed-size thumbnails perceptual hashes run on (computed inside the shared decode, kept instead of pixels)."""
from __future__ import annotations

import numpy as np
from PIL import Image

#: side of the grey thumbnail the pHash DCT runs on, and of the RGB thumbnail for colour moments
THUMB = 32
COLOR = 16


def grey_thumb(img: Image.Image) -> np.ndarray:
    """The 32x32 grey LANCZOS thumbnail pHash runs on (float64, grey levels), as ``imagehash.phash`` makes it."""
    if img.mode != "L":
        img = img.convert("L")
    if img.size != (THUMB, THUMB):
        img = img.resize((THUMB, THUMB), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.float64)


def color_thumb(img: Image.Image) -> np.ndarray:
    """A small RGB thumbnail (uint8 [16, 16, 3]) whose chroma moments tell recoloured drawings apart."""
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img.resize((COLOR, COLOR), Image.Resampling.BOX), dtype=np.uint8)


def box_thumb(img: Image.Image, side: int) -> np.ndarray:
    """A square grey BOX thumbnail, ``uint8[side, side]`` (dedup's verification thumbnail, ``sig_vthumb``)."""
    if img.mode != "L":
        img = img.convert("L")
    return np.asarray(img.resize((side, side), Image.Resampling.BOX), dtype=np.uint8)
