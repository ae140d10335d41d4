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
import struct
import threading
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Iterable, Sequence, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps

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

    Opening (not just stat-ing) catches permission problems before a decoder
    turns them into a confusing format error.
    """
    p = os.fspath(path)
    try:
        st = os.stat(p)
        if not os.path.isfile(p):
            raise MediaError("unreadable", f"{p}: not a regular file")
        with open(p, "rb"):
            pass
    except OSError as exc:
        raise _os_error(exc, p) from None
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
    frames: int  # 1 for still images
    orientation: int  # EXIF orientation tag, 1 when absent

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6

    def as_dict(self) -> dict:
        return asdict(self)


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
        return int(value) if value in range(1, 9) else 1
    except Exception:  # malformed EXIF never decides whether an image is usable
        return 1


def _open_header(src: MediaSource, max_pixels: int | None) -> tuple[Image.Image, ImageInfo]:
    stream, label = _as_stream(src)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(stream)
        except Image.DecompressionBombError as exc:
            raise MediaError("decompression_bomb", f"{label}: {exc}") from None
        except Image.UnidentifiedImageError:
            raise MediaError("undecodable", f"{label}: not a recognised image") from None
        except OSError as exc:
            if isinstance(exc, (PermissionError, FileNotFoundError)) or exc.errno:
                raise _os_error(exc, label) from None
            raise MediaError("undecodable", f"{label}: {exc}") from None
        except (ValueError, SyntaxError, EOFError, struct.error) as exc:
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
        frames=int(getattr(im, "n_frames", 1) or 1), orientation=orient,
    )
    return im, info


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
            out = im.copy() if info.frames > 1 else im
            if exif_transpose and info.orientation != 1:
                out = ImageOps.exif_transpose(out)
            if mode is not None and out.mode != mode:
                out = _convert(out, mode)
            if max_side and max(out.size) > max_side:
                scale = max_side / max(out.size)
                size = (max(1, round(out.width * scale)), max(1, round(out.height * scale)))
                out = out.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
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


def _convert(im: Image.Image, mode: str) -> Image.Image:
    """Mode conversion that composites transparency on white instead of black."""
    if mode == "RGB" and (im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info)):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
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


def pdf_pages(src: MediaSource, *, text: bool = True, password: str | None = None) -> list[PdfPage]:
    """Sizes and text layers of every page, without rendering anything."""
    doc = open_pdf(src, password=password)
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
        except _pdfium().PdfiumError as exc:
            raise MediaError("undecodable", f"page {len(out)}: {exc}") from None
        finally:
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
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.ELOOP, errno.ENOENT):
            raise _os_error(exc, p) from None
        raise MediaError("undecodable", f"{p}: {exc}") from None
    except Exception as exc:  # PyAV raises FFmpegError subclasses and ValueError for broken input
        raise MediaError("undecodable", f"{p}: {type(exc).__name__}: {exc}") from None
    if rotation in (90, 270):
        width, height = height, width
    return {"width": width, "height": height, "fps": fps, "frames": frames, "duration": duration, "rotation": rotation}


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
) -> np.ndarray:
    """Frames at ``indices`` as ``uint8[n, H, W, 3]`` RGB in display orientation.

    Indices past the end are clamped to the last frame. ``max_side`` scales
    the frames down inside the decoder (cheaper for hashing and scores).
    Any decode failure raises MediaError("undecodable").
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
            return _read_decord(p, idx, max_side)
        return _read_av(p, idx, max_side)
    except MediaError:
        raise
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.ELOOP, errno.ENOENT):
            raise _os_error(exc, p) from None
        raise MediaError("undecodable", f"{p}: {exc}") from None
    except Exception as exc:
        msg = str(exc).strip().splitlines()
        raise MediaError("undecodable", f"{p}: {type(exc).__name__}: {msg[-1][:300] if msg else ''}") from None


def _read_decord(p: str, idx: np.ndarray, max_side: int | None) -> np.ndarray:
    import decord

    # decord applies the display rotation itself; it needs the display size for scaling
    probe = decord.VideoReader(p, num_threads=1)
    n = len(probe)
    if n == 0:
        raise MediaError("undecodable", f"{p}: no frames")
    h0, w0 = (int(v) for v in probe[0].shape[:2])
    if max_side and max(h0, w0) > max_side:
        h, w = _fit(h0, w0, max_side)
        del probe
        vr = decord.VideoReader(p, num_threads=1, width=w, height=h)
    else:
        vr = probe
    clamped = np.minimum(idx, len(vr) - 1)
    uniq, inverse = np.unique(clamped, return_inverse=True)
    batch = vr.get_batch(uniq.tolist()).asnumpy()
    return np.ascontiguousarray(batch[inverse])


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


def iter_image_files(paths: Iterable[str | Path]) -> list[Path]:
    """The image files among ``paths`` by extension (helper for callers that walk folders)."""
    return [Path(p) for p in paths if Path(p).suffix.lower() in IMAGE_EXTENSIONS]
