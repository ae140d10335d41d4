"""Small cached JPEG thumbnails of media references, and strips of document pages and video frames.

Notebook cards and the HTML report embed pictures as ``data:`` URIs, so each must be small: a JPEG
of at most ``THUMB`` pixels a side (a few KB), not a PNG of the original. Each thumbnail is decoded
once per process (an LRU keyed by the reference and the file's size and mtime) and, where the cache
folder is writable, once per machine (``$SMOLCURATE_THUMB_CACHE``, default
``~/.cache/smolcurate/thumbs``; set it to an empty string to keep thumbnails in memory only).
A view never fails because one file is unreadable: such a reference has no thumbnail.
"""
from __future__ import annotations

import base64
import hashlib
import io
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

THUMB = 128
STRIP = 64  # side of each picture of a page or frame strip
STRIP_ITEMS = 4
JPEG_QUALITY = 80


def cache_dir() -> Path | None:
    raw = os.environ.get("SMOLCURATE_THUMB_CACHE")
    if raw is not None and not raw.strip():
        return None
    path = Path(raw) if raw else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "smolcurate" / "thumbs"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


def _ref_key(ref: Mapping[str, Any], what: str, size: int) -> str | None:
    """A stable key: the reference's identity plus its file's size and mtime (an edited file gets a new thumbnail)."""
    h = hashlib.blake2b(digest_size=16)
    data = ref.get("bytes")
    if data is not None:
        h.update(hashlib.blake2b(bytes(data), digest_size=16).digest())
    else:
        uri = ref.get("uri")
        if not uri:
            return None
        h.update(str(uri).encode("utf-8", "surrogatepass"))
        try:
            from media.refs import ref_location

            loc = ref_location(ref)
            st = os.stat(loc) if loc else None
            if st is not None:
                h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        except Exception:
            pass
    for k in ("kind", "page", "dpi", "start_s", "end_s"):
        h.update(f"|{k}={ref.get(k)}".encode())
    h.update(f"|{what}|{size}".encode())
    return h.hexdigest()


def _encode(img) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buf.getvalue()


def _render(ref: Mapping[str, Any], what: str, size: int) -> list[bytes]:
    """JPEG bytes: one picture, or for ``what="frames"`` up to STRIP_ITEMS evenly spaced video frames."""
    from PIL import Image

    from media.refs import decode_image_ref, decode_video_ref

    if ref.get("kind") == "video":
        n = STRIP_ITEMS if what == "frames" else 3
        frames = decode_video_ref(ref, n, max_side=size)
        pics = [Image.fromarray(f) for f in frames] if what == "frames" else [Image.fromarray(frames[len(frames) // 2])]
    else:
        img = decode_image_ref(ref, max_side=size)
        pics = [img]
    out = []
    for p in pics:
        p = p.copy()
        p.thumbnail((size, size))
        out.append(_encode(p))
    return out


@lru_cache(maxsize=4096)
def _cached(key: str, ref_items: tuple, what: str, size: int) -> tuple[bytes, ...]:
    folder = cache_dir()
    if folder is not None:
        files = sorted(folder.glob(f"{key}-*.jpg"))
        if files:
            try:
                return tuple(f.read_bytes() for f in files)
            except OSError:
                pass
    ref = dict(ref_items)
    try:
        pics = _render(ref, what, size)
    except Exception:  # unreadable, undecodable, missing: no thumbnail (the card says why the row was dropped)
        return ()
    if folder is not None:
        for i, data in enumerate(pics):
            tmp = folder / f".{key}-{i:02d}.{os.getpid()}.tmp"
            try:
                tmp.write_bytes(data)
                os.replace(tmp, folder / f"{key}-{i:02d}.jpg")
            except OSError:
                break
    return tuple(pics)


def _hashable(ref: Mapping[str, Any]) -> tuple:
    return tuple(sorted((k, bytes(v) if isinstance(v, (bytes, bytearray, memoryview)) else v) for k, v in ref.items()))


def jpegs(ref: Mapping[str, Any], what: str = "thumb", size: int = THUMB) -> tuple[bytes, ...]:
    """JPEG bytes of one reference (``what="thumb"``) or of a video's frame strip (``what="frames"``)."""
    key = _ref_key(ref, what, size)
    if key is None:
        return ()
    return _cached(key, _hashable(ref), what, size)


def data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()


def thumb_uri(ref: Mapping[str, Any], size: int = THUMB) -> str | None:
    """A ``data:image/jpeg`` URI of one reference's thumbnail, or None when it cannot be drawn."""
    pics = jpegs(ref, "thumb", size)
    return data_uri(pics[0]) if pics else None


def ocr_strip_uris(media: list[Mapping[str, Any]] | None, lines: list[Mapping[str, Any]] | None,
                   size: int = THUMB) -> list[str]:
    """A row's first pages with its OCR line boxes drawn (``ocr_lines`` boxes are in each page entry's pixels)."""
    from PIL import Image, ImageDraw

    out = []
    for i, ref in enumerate([r for r in (media or []) if r][:STRIP_ITEMS]):
        pics = jpegs(ref, "thumb", size)
        if not pics:
            continue
        img = Image.open(io.BytesIO(pics[0])).convert("RGB")
        page = ref.get("page") if ref.get("page") is not None else i
        boxes = [ln["box"] for ln in lines or () if ln and ln.get("page") == page and ln.get("box")]
        if boxes and ref.get("width") and ref.get("height"):
            sx, sy = img.width / float(ref["width"]), img.height / float(ref["height"])
            draw = ImageDraw.Draw(img)
            for x0, y0, x1, y1 in boxes:
                draw.rectangle([x0 * sx, y0 * sy, max(x0 * sx + 1, x1 * sx), max(y0 * sy + 1, y1 * sy)],
                               outline=(220, 30, 30))
        out.append(data_uri(_encode(img)))
    return out


def strip_uris(media: list[Mapping[str, Any]] | None, size: int = STRIP) -> list[str]:
    """Pictures for a row's strip: its first pages/images, or a video's evenly spaced frames."""
    media = [r for r in (media or []) if r]
    if not media:
        return []
    if media[0].get("kind") == "video":
        return [data_uri(p) for p in jpegs(media[0], "frames", size)]
    out = []
    for ref in media[:STRIP_ITEMS]:
        uri = thumb_uri(ref, size)
        if uri:
            out.append(uri)
    return out
