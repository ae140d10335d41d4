"""Image decoding: header probes, reduced decodes, EXIF orientation, mode conversion."""
from __future__ import annotations

import io
import math
import os
import struct
import warnings
from dataclasses import asdict, dataclass
from typing import IO

import numpy as np
from PIL import Image

from media.counters import count
from media.files import DEFAULT_MAX_PIXELS, MediaError, MediaSource, _as_stream, _os_error, _stat_file

try:  # libjpeg-turbo bindings (x86-64/aarch64 wheels); Pillow decodes JPEGs where it is absent
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - exercised on platforms without the wheel
    _simplejpeg = None


# --------------------------------------------------------------------------- images


@dataclass(frozen=True)
class ImageInfo:
    """What the header says, before any pixel is decoded."""

    width: int  # display width (after EXIF orientation)
    height: int
    format: str  # PIL format name: JPEG, PNG, WEBP, GIF, ...
    mode: str
    animated: bool  # more than one frame (GIF, WebP, APNG, multi-page TIFF); the first is used
    orientation: int  # EXIF orientation tag, 1 when absent

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6

    def as_dict(self) -> dict:
        return asdict(self)


def _orientation(im: Image.Image) -> int:
    """EXIF orientation from header data only.

    ``Image.getexif()`` is avoided on purpose: for PNG it decodes the whole
    image to look for an eXIf chunk after the pixel data.
    """
    try:
        if im.format == "TIFF":
            value = im.tag_v2.get(0x0112, 1)  # type: ignore[attr-defined]
        else:
            raw = im.info.get("exif")
            if not raw:
                return 1
            value = _exif_orientation(raw)
        return int(value) if value in range(1, 9) else 1
    except Exception:  # malformed EXIF never decides whether an image is usable
        return 1


def _exif_orientation(raw: bytes) -> int:
    """Tag 0x0112 read straight from IFD0 of raw EXIF bytes.

    Pillow's ``Exif.load`` parses every tag and sub-IFD; on small JPEGs that
    cost a quarter of the whole decode, for one 16-bit value.
    """
    data = raw[6:] if raw[:6] == b"Exif\x00\x00" else raw
    if len(data) < 8 or data[:2] not in (b"II", b"MM"):
        return 1
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(order + "I", data, 4)
    if ifd + 2 > len(data):
        return 1
    (count,) = struct.unpack_from(order + "H", data, ifd)
    end = min(len(data), ifd + 2 + 12 * count)
    entries = np.frombuffer(data, dtype=np.uint8, count=(end - ifd - 2) // 12 * 12, offset=ifd + 2).reshape(-1, 12)
    dt = np.dtype(order + "u2")
    tags = entries[:, 0:2].copy().view(dt).ravel()
    hit = np.flatnonzero(tags == 0x0112)
    if hit.size == 0:
        return 1
    row = entries[hit[0]]
    if int(row[2:4].copy().view(dt)[0]) != 3:  # SHORT
        return 1
    return int(row[8:10].copy().view(dt)[0])


def _open_header(src: MediaSource, max_pixels: int | None, label: str | None = None) -> tuple[Image.Image, ImageInfo]:
    """Open lazily (header only) and check the pixel budget; a path's handle is owned by the image.

    ``label`` names in-memory bytes in messages (the path they were read from).
    """
    if isinstance(src, (str, os.PathLike)):
        label = os.fspath(src)
        _stat_file(label)
        stream: IO[bytes] | str = label  # PIL opens (and owns) the file: one open per image
        count("read", "image")
    else:
        stream, label0 = _as_stream(src)  # type: ignore[assignment]
        label = label or label0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(stream)
        except Image.DecompressionBombError as exc:
            _close(stream, src)
            raise MediaError("decompression_bomb", f"{label}: {exc}") from None
        except Image.UnidentifiedImageError:
            _close(stream, src)
            raise MediaError("undecodable", f"{label}: not a recognised image") from None
        except OSError as exc:
            _close(stream, src)
            if isinstance(exc, (PermissionError, FileNotFoundError)) or exc.errno:
                raise _os_error(exc, label) from None
            raise MediaError("undecodable", f"{label}: {exc}") from None
        except (ValueError, SyntaxError, EOFError, struct.error) as exc:
            _close(stream, src)
            raise MediaError("undecodable", f"{label}: {exc}") from None
    w, h = im.size
    if w <= 0 or h <= 0:
        im.close()
        raise MediaError("undecodable", f"{label}: header declares a {w}x{h} image")
    if max_pixels is not None and w * h > max_pixels:
        im.close()
        raise MediaError(
            "decompression_bomb", f"{label}: header declares {w}x{h} = {w * h / 1e6:.1f} MP > {max_pixels / 1e6:.1f} MP"
        )
    orient = _orientation(im)
    if orient in (5, 6, 7, 8):
        w, h = h, w
    info = ImageInfo(
        width=int(w), height=int(h), format=str(im.format or "unknown"), mode=str(im.mode),
        animated=bool(getattr(im, "is_animated", False)), orientation=orient,
    )
    return im, info


def _close(stream: object, src: MediaSource) -> None:
    if not isinstance(src, (str, os.PathLike)) and isinstance(stream, io.BytesIO):
        stream.close()


def image_info(src: MediaSource, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Header-only probe: size, format, frames. Never decodes pixels."""
    im, info = _open_header(src, max_pixels)
    im.close()
    return info


def decode_image(
    src: MediaSource,
    *,
    max_side: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    mode: str | None = "RGB",
    exif_transpose: bool = True,
) -> tuple[ImageInfo, Image.Image]:
    """Header check, then decode the first frame, reduced so its longer side is at most ``max_side``.

    JPEGs use DCT scaling, so reduction happens inside the decoder (2-8x
    less IDCT work than decode-then-resize); other formats are decoded and then
    reduced. The returned image is fully loaded and detached from the file.
    """
    draft = (("L" if mode == "L" else "RGB"), max_side) if max_side else None
    info, im = load_image(src, draft=draft, max_pixels=max_pixels, exif_transpose=exif_transpose)
    label = os.fspath(src) if isinstance(src, (str, os.PathLike)) else "<image>"
    with _decode_errors(label):
        return info, reduce_image(im, max_side, mode)


class _decode_errors:
    """Decoder exceptions as ledger-ready MediaErrors (truncated / undecodable / decompression_bomb)."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ, exc, tb) -> bool:
        if exc is None or isinstance(exc, MediaError):
            return False
        label = self.label
        if isinstance(exc, Image.DecompressionBombError):
            raise MediaError("decompression_bomb", f"{label}: {exc}") from None
        if isinstance(exc, OSError):
            text = str(exc)
            reason = "truncated" if ("truncated" in text or "broken data stream" in text) else "undecodable"
            raise MediaError(reason, f"{label}: {text}") from None
        if isinstance(exc, (ValueError, SyntaxError, EOFError, IndexError, TypeError, struct.error, ZeroDivisionError,
                            MemoryError)):
            raise MediaError("undecodable", f"{label}: {type(exc).__name__}: {exc}") from None
        return False


#: EXIF orientation -> the transpose that displays it (the mapping ImageOps.exif_transpose uses)
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def draft_scale(size: tuple[int, int], side: int) -> int:
    """The DCT scale (1, 2, 4 or 8) PIL's ``draft`` picks so both sides stay >= a ``side``-bounded request."""
    w0, h0 = size
    s = side / max(w0, h0)
    if s >= 1:
        return 1
    want = (max(1, math.ceil(w0 * s)), max(1, math.ceil(h0 * s)))
    limit = min(w0 // want[0], h0 // want[1])
    for scale in (8, 4, 2):
        if scale <= limit:
            return scale
    return 1


def load_image(
    src: MediaSource,
    *,
    draft: tuple[str, int] | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    exif_transpose: bool = True,
    data: bytes | None = None,
) -> tuple[ImageInfo, Image.Image]:
    """Header check, then the one decode of the first frame, in display orientation (counted).

    ``draft=(mode, side)`` lets a JPEG decode at the DCT scale that still
    covers ``side`` (in grey when mode is ``"L"``); other formats decode in
    full. ``data``, when given, is the source's encoded bytes (already read):
    JPEGs then decode through libjpeg-turbo directly (simplejpeg, identical
    pixels to Pillow's own libjpeg-turbo, less overhead); Pillow is the
    fallback for everything else. The result still needs :func:`reduce_image`.
    """
    info, out, _ = _load_image(src, draft=draft, max_pixels=max_pixels, exif_transpose=exif_transpose, data=data)
    return info, out


def _load_image(
    src: MediaSource,
    *,
    draft: tuple[str, int] | None,
    max_pixels: int | None,
    exif_transpose: bool,
    data: bytes | None,
) -> tuple[ImageInfo, Image.Image, np.ndarray | None]:
    """:func:`load_image`, plus the decoder's own RGB array when it is the image's pixels as they are
    (simplejpeg, no orientation applied): hashing it saves a copy out of Pillow."""
    label = os.fspath(src) if isinstance(src, (str, os.PathLike)) else "<image>"
    im, info = _open_header(data if data is not None else src, max_pixels, label if data is not None else None)
    try:
        with _decode_errors(label), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            count("decode", "image")
            arr = _turbo_jpeg(im, data, draft) if data is not None else None
            out = None if arr is None else Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr,
                                                           "L" if arr.shape[2] == 1 else "RGB")
            if out is None:
                if draft and im.format in ("JPEG", "MPO"):
                    # draft picks the smallest DCT scale that still covers the request
                    w0, h0 = im.size
                    scale = draft[1] / max(w0, h0)
                    if scale < 1:
                        want = (max(1, math.ceil(w0 * scale)), max(1, math.ceil(h0 * scale)))
                        im.draft("RGB" if draft[0] in ("RGB", "RGBA") else draft[0], want)
                im.load()  # first frame: a freshly opened image sits on frame 0
                out = im.copy() if info.animated else im
            if exif_transpose and info.orientation in _TRANSPOSE:
                out = out.transpose(_TRANSPOSE[info.orientation])
                arr = None
    except MediaError:
        im.close()
        raise
    if out is not im:
        im.close()
    return info, out, (arr if arr is not None and arr.shape[2] == 3 else None)


def _turbo_jpeg(im: Image.Image, data: bytes, draft: tuple[str, int] | None) -> np.ndarray | None:
    """A baseline/progressive YCbCr or grey JPEG decoded by simplejpeg at PIL's draft scale, as
    ``uint8[h, w, 3 or 1]``; None to let Pillow decode it."""
    if _simplejpeg is None or im.format != "JPEG" or im.mode not in ("RGB", "L"):
        return None
    w0, h0 = im.size
    scale = draft_scale((w0, h0), draft[1]) if draft else 1
    grey = im.mode == "L" or (draft is not None and draft[0] == "L")
    try:
        arr = _simplejpeg.decode_jpeg(data, "GRAY" if grey else "RGB", min_width=-(-w0 // scale),
                                      min_height=-(-h0 // scale), strict=True)
    except (ValueError, OSError):
        return None  # damaged or unusual stream: Pillow decides (and words the error)
    return arr


def reduce_image(im: Image.Image, max_side: int | None, mode: str | None) -> Image.Image:
    """A loaded image in ``mode``, its longer side at most ``max_side`` (the steps after the decode).

    Palette images are subsampled before their palette is applied, RGB is
    turned to grey before it shrinks (one band is cheaper), transparency is
    composited on white. ``im`` itself is left untouched, so one decode can
    feed several reductions.
    """
    out = im
    if out.mode not in _REDUCIBLE:
        if max_side and max(out.size) > 2 * max_side:
            # palette indices cannot be averaged: subsample them (cheap) before converting
            scale = 2 * max_side / max(out.size)
            out = out.resize((max(1, round(out.width * scale)), max(1, round(out.height * scale))),
                             Image.Resampling.NEAREST)
        out = _to_reducible(out, mode)
    elif mode == "L" and out.mode not in ("L", "LA"):
        # one grey (+alpha) band shrinks 2-4x cheaper than RGB(A)
        out = out.convert("LA" if out.mode in ("RGBA", "PA") else "L")
    if max_side and max(out.size) > max_side:
        out = _shrink(out, max_side)
    if mode is not None and out.mode != mode:
        out = _convert(out, mode)
    return out


#: modes PIL can box-reduce and resample directly
_REDUCIBLE = frozenset({"RGB", "RGBA", "L", "LA", "RGBX", "CMYK", "YCbCr", "I", "F"})


def _to_reducible(im: Image.Image, mode: str | None) -> Image.Image:
    """Palette, bilevel and 16-bit images into a mode that shrinks well, keeping transparency."""
    grey = mode == "L"
    if im.mode in ("P", "PA"):
        if im.mode == "PA" or "transparency" in im.info:
            return im.convert("LA" if grey else "RGBA")
        return im.convert("L" if grey else "RGB")
    if im.mode in ("1", "La"):
        return im.convert("L")
    if im.mode.startswith("I;16"):
        return _convert(im, "L" if grey else "RGB")
    return im.convert("RGB" if not grey else "L")


def _shrink(im: Image.Image, max_side: int) -> Image.Image:
    """Box-reduce by an integer factor (cheap, in C), then resample the rest of the way."""
    factor = max(im.size) // max_side
    if factor >= 2:
        im = im.reduce(factor)
    if max(im.size) > max_side:
        scale = max_side / max(im.size)
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.BILINEAR)
    return im


def _convert(im: Image.Image, mode: str) -> Image.Image:
    """Mode conversion that composites transparency on white instead of black."""
    if mode in ("RGB", "L") and (im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)):
        if mode == "L":
            la = np.asarray(im.convert("LA") if im.mode != "LA" else im, dtype=np.float32)
            alpha = la[..., 1] / 255.0
            grey = la[..., 0] * alpha + 255.0 * (1.0 - alpha)
            return Image.fromarray(np.clip(grey + 0.5, 0, 255).astype(np.uint8), "L")
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert(mode)
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F") and mode in ("RGB", "L"):
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = np.zeros_like(arr) if hi <= lo else (arr - lo) * (255.0 / (hi - lo))
        return Image.fromarray(arr.astype(np.uint8), "L").convert(mode)
    return im.convert(mode)


def open_image(
    src: MediaSource,
    *,
    max_side: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    mode: str | None = "RGB",
) -> Image.Image:
    """Decoded first frame in display orientation (see :func:`decode_image`)."""
    return decode_image(src, max_side=max_side, max_pixels=max_pixels, mode=mode)[1]


# --------------------------------------------------------------------------- PDFs

