"""Decoding of every media kind the project touches: images, PDF pages, videos.

This is the one place that opens media files, so that curation, dedup,
tokenization and the torch reader agree on sizes, orientation and failure
reasons. Failures raise :class:`MediaError` with a short machine ``reason``
(used verbatim as a ledger reason) and a human ``detail``.

Conventions (see docs/media.md):

- Image ``width``/``height`` are *display* sizes: EXIF orientation 5-8 swaps
  them, and :func:`open_image` applies the orientation.
- The pixel budget (``max_pixels``) is checked from the header before any
  decode, so a decompression bomb costs a header read and nothing more.
- JPEGs are decoded at a reduced scale (libjpeg DCT scaling via PIL draft)
  whenever the caller asks for a bounded size.
- Animated images (GIF, WebP, APNG, multi-page TIFF) yield their first frame.
- Video ``rotation`` is the clockwise rotation, in degrees, a player applies
  for display; ``width``/``height`` and decoded frames are in display
  orientation, whichever backend decodes them.
"""
from __future__ import annotations

import errno
import io
import math
import os
import re
import stat
import struct
import threading
import warnings
from dataclasses import asdict, dataclass
from typing import IO, Sequence, Union

import numpy as np
from PIL import Image, ImageOps

#: PIL's own default budget (about 89.5 megapixels); configurable per call.
DEFAULT_MAX_PIXELS = 89_478_485

MediaSource = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes]]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".dib", ".tif", ".tiff", ".gif",
     ".ppm", ".pgm", ".pbm", ".pnm", ".mpo"}
)
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mov"})
PDF_EXTENSIONS = frozenset({".pdf"})


class MediaError(Exception):
    """A file that cannot be used, with a ledger-ready ``reason`` and a human ``detail``.

    Reasons: ``zero_bytes``, ``unreadable``, ``symlink_loop``, ``missing``,
    ``undecodable``, ``truncated``, ``decompression_bomb``, ``encrypted``,
    ``no_video_stream``.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


# --------------------------------------------------------------------------- files


def _os_error(exc: OSError, what: str) -> MediaError:
    if exc.errno == errno.ELOOP:
        return MediaError("symlink_loop", f"{what}: too many levels of symbolic links")
    if exc.errno == errno.ENOENT:
        return MediaError("missing", f"{what}: no such file")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return MediaError("unreadable", f"{what}: permission denied")
    if exc.errno == errno.EISDIR:
        return MediaError("unreadable", f"{what}: is a directory")
    return MediaError("unreadable", f"{what}: {exc.strerror or exc}")


def check_file(path: str | os.PathLike) -> int:
    """Size of a readable, non-empty regular file; MediaError otherwise.

    Permission is checked with ``access`` so problems show up as
    ``unreadable`` before a decoder turns them into a confusing format error.
    """
    p = os.fspath(path)
    size = _stat_file(p)
    if not os.access(p, os.R_OK):
        raise MediaError("unreadable", f"{p}: permission denied")
    return size


def _stat_file(p: str) -> int:
    """Size of a non-empty regular file, from stat alone (opening a FIFO would block)."""
    try:
        st = os.stat(p)
    except OSError as exc:
        raise _os_error(exc, p) from None
    if not stat.S_ISREG(st.st_mode):
        raise MediaError("unreadable", f"{p}: not a regular file")
    if st.st_size == 0:
        raise MediaError("zero_bytes", f"{p}: empty file")
    return st.st_size


def _as_stream(src: MediaSource) -> tuple[IO[bytes] | str, str]:
    """A path or stream PIL/pypdfium2 can read, and a label for messages."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise MediaError("zero_bytes", "<bytes>: empty")
        return io.BytesIO(bytes(src)), "<bytes>"
    if isinstance(src, (str, os.PathLike)):
        p = os.fspath(src)
        check_file(p)
        return p, p
    return src, getattr(src, "name", "<stream>")


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


def _open_header(src: MediaSource, max_pixels: int | None) -> tuple[Image.Image, ImageInfo]:
    """Open lazily (header only) and check the pixel budget; a path's handle is owned by the image."""
    if isinstance(src, (str, os.PathLike)):
        label = os.fspath(src)
        _stat_file(label)
        stream: IO[bytes] | str = label  # PIL opens (and owns) the file: one open per image
    else:
        stream, label = _as_stream(src)  # type: ignore[assignment]
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

    JPEGs use draft mode, so reduction happens inside the decoder (2-8x
    faster than decode-then-resize); other formats are decoded and then
    reduced. The returned image is fully loaded and detached from the file.
    """
    im, info = _open_header(src, max_pixels)
    label = os.fspath(src) if isinstance(src, (str, os.PathLike)) else "<image>"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if max_side and im.format in ("JPEG", "MPO"):
                # draft picks the smallest DCT scale that still covers the request
                w0, h0 = im.size
                scale = max_side / max(w0, h0)
                if scale < 1:
                    want = (max(1, math.ceil(w0 * scale)), max(1, math.ceil(h0 * scale)))
                    im.draft("RGB" if mode in ("RGB", "RGBA") else mode, want)
            im.load()  # first frame: a freshly opened image sits on frame 0
            out = im.copy() if info.animated else im
            if exif_transpose and info.orientation != 1:
                out = ImageOps.exif_transpose(out)
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
    except Image.DecompressionBombError as exc:
        im.close()
        raise MediaError("decompression_bomb", f"{label}: {exc}") from None
    except OSError as exc:
        im.close()
        text = str(exc)
        reason = "truncated" if ("truncated" in text or "broken data stream" in text) else "undecodable"
        raise MediaError(reason, f"{label}: {text}") from None
    except (ValueError, SyntaxError, EOFError, IndexError, TypeError, struct.error, ZeroDivisionError, MemoryError) as exc:
        im.close()
        raise MediaError("undecodable", f"{label}: {type(exc).__name__}: {exc}") from None
    if out is not im:
        im.close()
    return info, out


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

# pdfium is not thread-safe; a process-wide lock keeps threaded callers
# (DataLoader threads, notebooks) correct at no cost to process-parallel engines.
_PDFIUM_LOCK = threading.RLock()


def _pdfium():
    import pypdfium2 as pdfium

    return pdfium


def open_pdf(src: MediaSource, password: str | None = None):
    """A ``pypdfium2.PdfDocument``; MediaError(encrypted | undecodable | ...) otherwise.

    The caller closes it (``doc.close()``) or uses it as a context manager.
    """
    pdfium = _pdfium()
    stream, label = _as_stream(src)
    if isinstance(stream, io.BytesIO):
        stream = stream.getvalue()
    with _PDFIUM_LOCK:
        try:
            return pdfium.PdfDocument(stream, password=password)
        except pdfium.PdfiumError as exc:
            text = str(exc)
            if "password" in text.lower():
                raise MediaError("encrypted", f"{label}: password protected") from None
            raise MediaError("undecodable", f"{label}: {text}") from None
        except OSError as exc:
            raise _os_error(exc, label) from None


@dataclass(frozen=True)
class PdfPage:
    """One page: size in PDF points (1/72 in) after the page's /Rotate, and its text layer."""

    index: int
    width_pt: float
    height_pt: float
    text: str


def pdf_pages(src: MediaSource | object, *, text: bool = True, password: str | None = None) -> list[PdfPage]:
    """Sizes and text layers of every page, without rendering anything.

    ``src`` is a path/bytes or an open ``PdfDocument`` (left open for the caller).
    """
    pdfium = _pdfium()
    own = not isinstance(src, pdfium.PdfDocument)
    doc = open_pdf(src, password=password) if own else src  # type: ignore[arg-type]
    out: list[PdfPage] = []
    with _PDFIUM_LOCK:
        try:
            for i in range(len(doc)):
                page = doc[i]
                try:
                    w, h = page.get_size()
                    body = ""
                    if text:
                        tp = page.get_textpage()
                        try:
                            body = tp.get_text_range()
                        finally:
                            tp.close()
                    out.append(PdfPage(i, float(w), float(h), _clean_pdf_text(body)))
                finally:
                    page.close()
        except pdfium.PdfiumError as exc:
            raise MediaError("undecodable", f"page {len(out)}: {exc}") from None
        finally:
            if own:
                doc.close()
    return out


def _clean_pdf_text(text: str) -> str:
    # pdfium reports line ends as \r\n and may leave lone surrogates from broken font maps
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.encode("utf-8", "replace").decode("utf-8")


def page_render_size(
    width_pt: float, height_pt: float, dpi: float, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> tuple[int, int, float]:
    """(width, height, effective dpi) of a page rendered at ``dpi``, capped to ``max_pixels``.

    Huge pages (posters, 35000-pixel scans) are rendered at a lower dpi rather
    than refused; the effective dpi is what a manifest records.
    """
    eff = float(dpi)
    w, h = width_pt * eff / 72.0, height_pt * eff / 72.0
    if max_pixels and w * h > max_pixels:
        eff = eff * math.sqrt(max_pixels / (w * h))
    w, h = max(1, math.ceil(width_pt * eff / 72.0)), max(1, math.ceil(height_pt * eff / 72.0))
    while max_pixels and w * h > max_pixels:  # ceil rounding can overshoot by a line
        eff *= 0.999
        w, h = max(1, math.ceil(width_pt * eff / 72.0)), max(1, math.ceil(height_pt * eff / 72.0))
    return int(w), int(h), eff


def render_pdf_page(
    src: MediaSource | object,
    index: int = 0,
    *,
    dpi: float = 100.0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    mode: str = "RGB",
    password: str | None = None,
) -> Image.Image:
    """Render one page at ``dpi`` (lowered when the bitmap would exceed ``max_pixels``).

    ``src`` is a path/bytes or an open ``PdfDocument`` (to render many pages
    of one file without re-parsing it).
    """
    pdfium = _pdfium()
    own = not isinstance(src, pdfium.PdfDocument)
    doc = open_pdf(src, password=password) if own else src  # type: ignore[arg-type]
    with _PDFIUM_LOCK:
        try:
            if not 0 <= index < len(doc):
                raise MediaError("missing", f"page {index} of a {len(doc)}-page document")
            page = doc[index]
            try:
                w_pt, h_pt = page.get_size()
                _, _, eff = page_render_size(w_pt, h_pt, dpi, max_pixels)
                bitmap = page.render(scale=eff / 72.0, grayscale=(mode == "L"), may_draw_forms=True)
                img = bitmap.to_pil()
                img = img.convert(mode) if img.mode != mode else img.copy()
                bitmap.close()
            finally:
                page.close()
        except pdfium.PdfiumError as exc:
            raise MediaError("undecodable", f"page {index}: {exc}") from None
        finally:
            if own:
                doc.close()
    return img


# --------------------------------------------------------------------------- video


def video_backend() -> str:
    """``decord`` where it imports, else ``av``; ``SMOLCURATE_VIDEO_BACKEND`` overrides."""
    forced = os.environ.get("SMOLCURATE_VIDEO_BACKEND", "").strip().lower()
    if forced in ("av", "pyav"):
        return "av"
    if forced == "decord":
        return "decord"
    try:
        import decord  # noqa: F401

        return "decord"
    except Exception:
        return "av"


_AV_QUIET = False


def _av():
    global _AV_QUIET
    import av

    if not _AV_QUIET:
        try:
            av.logging.set_level(None)
        except Exception:
            pass
        _AV_QUIET = True
    return av


def _video_path(path: str | os.PathLike) -> str:
    p = os.fspath(path)
    check_file(p)
    return p


def probe_video(path: str | os.PathLike) -> dict:
    """Container metadata plus one decoded frame: width, height, fps, frames, duration, rotation.

    ``frames`` is the container's count, or ``round(duration * fps)`` for
    containers that do not store it (WebM, MKV). Decoding the first frame
    proves the stream decodes at all and reveals the display rotation.
    """
    p = _video_path(path)
    av = _av()
    try:
        with av.open(p, metadata_errors="ignore") as container:
            if not container.streams.video:
                raise MediaError("no_video_stream", f"{p}: no video stream")
            stream = container.streams.video[0]
            cc = stream.codec_context
            width, height = int(cc.width or 0), int(cc.height or 0)
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else 0.0
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000.0
            else:
                duration = 0.0
            frames = int(stream.frames or 0)
            if frames <= 0 and duration > 0 and fps > 0:
                frames = int(round(duration * fps))
            if duration <= 0 and frames > 0 and fps > 0:
                duration = frames / fps
            first = None
            for frame in container.decode(stream):
                first = frame
                break
            if first is None:
                raise MediaError("undecodable", f"{p}: no frame decodes")
            rotation = (-int(round(getattr(first, "rotation", 0) or 0))) % 360
            if not width or not height:
                width, height = first.width, first.height
    except MediaError:
        raise
    except Exception as exc:  # PyAV raises FFmpegError subclasses and ValueError for broken input
        raise _decoder_error(exc, p) from None
    if rotation in (90, 270):
        width, height = height, width
    return {"width": width, "height": height, "fps": fps, "frames": frames, "duration": duration, "rotation": rotation}


def count_decoded_frames(path: str | os.PathLike) -> int:
    """Decode every frame with PyAV (slow, thorough); MediaError("undecodable") on a broken bitstream."""
    p = _video_path(path)
    av = _av()
    n = 0
    try:
        with av.open(p, metadata_errors="ignore") as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for _ in container.decode(stream):
                n += 1
    except Exception as exc:
        raise MediaError("undecodable", f"{p}: frame {n}: {type(exc).__name__}: {exc}") from None
    return n


def sample_frame_indices(frames: int, n: int) -> np.ndarray:
    """``n`` frame indices evenly spaced from the first to the last frame (fewer for short videos).

    Including the last frame matters: reading it exercises the whole
    bitstream, which is how a broken tail (a corrupted container) shows up.
    """
    if frames <= 0 or n <= 0:
        return np.zeros(0, dtype=np.int64)
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    return np.unique(np.round(np.linspace(0, frames - 1, n)).astype(np.int64))


def _fit(h: int, w: int, max_side: int | None) -> tuple[int, int]:
    if not max_side or max(h, w) <= max_side:
        return h, w
    s = max_side / max(h, w)
    return max(2, int(round(h * s))) // 2 * 2, max(2, int(round(w * s))) // 2 * 2


def read_video_frames(
    path: str | os.PathLike,
    indices: Sequence[int] | np.ndarray,
    *,
    max_side: int | None = None,
    backend: str | None = None,
    rotation: int | None = None,
) -> np.ndarray:
    """Frames at ``indices`` as ``uint8[n, H, W, 3]`` RGB in display orientation.

    Indices past the end are clamped to the last frame. ``max_side`` scales
    the frames down inside the decoder (cheaper for hashing and scores).
    ``rotation`` (from :func:`probe_video`) is an optional hint that saves a
    retry on rotated videos. Any decode failure raises MediaError("undecodable").
    """
    p = _video_path(path)
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8)
    if (idx < 0).any():
        raise ValueError("frame indices must be non-negative")
    chosen = backend or video_backend()
    try:
        if chosen == "decord":
            return _read_decord(p, idx, max_side, rotation)
        return _read_av(p, idx, max_side)
    except MediaError:
        raise
    except Exception as exc:
        raise _decoder_error(exc, p) from None


def _decoder_error(exc: BaseException, p: str) -> MediaError:
    """A video decoder's exception as a ledger-ready MediaError: file problems keep their own reason."""
    if isinstance(exc, OSError):
        if exc.errno in (errno.EACCES, errno.EPERM, errno.ELOOP, errno.ENOENT):
            return _os_error(exc, p)
        return MediaError("undecodable", f"{p}: {exc}")
    return MediaError("undecodable", f"{p}: {type(exc).__name__}: {_clean_error(exc)}")


def _clean_error(exc: BaseException) -> str:
    """A decoder's message without what differs run to run (decord's log timestamps and source paths)."""
    lines = str(exc).strip().splitlines()
    text = lines[-1] if lines else ""
    text = re.sub(r"\[\d{2}:\d{2}:\d{2}\] ", "", text)
    text = re.sub(r"\S+\.(?:cc|cpp|h):\d+: ", "", text)
    return text[:300]


def _read_decord(p: str, idx: np.ndarray, max_side: int | None, rotation: int | None) -> np.ndarray:
    import decord

    # decord rotates frames to display orientation itself, but its scaler breaks
    # on 90/270-degree videos (wrong aspect or a size check failure): those are
    # decoded at native size and scaled here.
    native = decord.VideoReader(p, num_threads=1)
    n = len(native)
    if n == 0:
        raise MediaError("undecodable", f"{p}: no frames")
    clamped = np.minimum(idx, n - 1)
    uniq, inverse = np.unique(clamped, return_inverse=True)
    h0, w0 = (int(v) for v in native[0].shape[:2])
    h, w = _fit(h0, w0, max_side)
    if (h, w) == (h0, w0):
        batch = native.get_batch(uniq.tolist()).asnumpy()
    elif rotation in (90, 270):
        batch = _resize_frames(native.get_batch(uniq.tolist()).asnumpy(), h, w)
    else:
        del native
        scaled = decord.VideoReader(p, num_threads=1, width=w, height=h)
        try:
            batch = scaled.get_batch(uniq.tolist()).asnumpy()
        except decord.DECORDError:
            if rotation is not None:
                raise
            batch = _resize_frames(decord.VideoReader(p, num_threads=1).get_batch(uniq.tolist()).asnumpy(), h, w)
        if batch.shape[1:3] != (h, w):
            raise MediaError("undecodable", f"{p}: decoder returned {batch.shape[1:3]} frames, expected {(h, w)}")
    return np.ascontiguousarray(batch[inverse])


def _resize_frames(batch: np.ndarray, h: int, w: int) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.BILINEAR)) for f in batch])


def _read_av(p: str, idx: np.ndarray, max_side: int | None) -> np.ndarray:
    av = _av()
    got: dict[int, np.ndarray] = {}
    with av.open(p, metadata_errors="ignore") as container:
        if not container.streams.video:
            raise MediaError("no_video_stream", f"{p}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        tb = float(stream.time_base) if stream.time_base else 0.0
        start = float(stream.start_time * tb) if (stream.start_time is not None and tb) else 0.0
        can_seek = fps > 0 and tb > 0
        gap = max(2 * fps, 48)  # below this many frames sequential decoding beats a seek
        frames = container.decode(stream)
        position: int | None = -1  # index of the last decoded frame; None right after a seek
        last = None
        for target in sorted({int(i) for i in idx}):
            if can_seek and position is not None and target - position > gap:
                container.seek(int((start + target / fps) / tb), stream=stream, backward=True, any_frame=False)
                frames = container.decode(stream)
                position = None
            while position is None or position < target:
                frame = next(frames, None)
                if frame is None:
                    break  # past the end: clamp to the last decoded frame
                if frame.pts is not None and can_seek:
                    position = int(round((float(frame.pts) * tb - start) * fps))
                else:
                    position = (position if position is not None else -1) + 1
                last = frame
            if last is None:
                raise MediaError("undecodable", f"{p}: no frame decodes")
            got[target] = _av_rgb(last, max_side)
    return np.stack([got[int(i)] for i in idx])


def _av_rgb(frame, max_side: int | None) -> np.ndarray:
    rot = (-int(round(getattr(frame, "rotation", 0) or 0))) % 360
    h, w = frame.height, frame.width
    dh, dw = (w, h) if rot in (90, 270) else (h, w)
    th, tw = _fit(dh, dw, max_side)
    sh, sw = (tw, th) if rot in (90, 270) else (th, tw)
    if (sh, sw) != (h, w):
        arr = frame.to_ndarray(format="rgb24", width=sw, height=sh)
    else:
        arr = frame.to_ndarray(format="rgb24")
    if rot:
        arr = np.rot90(arr, k=(-rot // 90) % 4)
    return np.ascontiguousarray(arr)
