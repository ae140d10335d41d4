"""Encoders: image bytes, videos and PDFs written from pixels or text (synthetic data, ablation tasks, tests).

Decoding lives in the rest of :mod:`media`; these are the few encoders the
project itself needs, kept next to the decoders so both sides agree on formats.
Everything is deterministic for given inputs and installed libraries.
"""
from __future__ import annotations

import io
import os
import zlib
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image


def encode_image(img: Image.Image, format: str = "JPEG", **params) -> bytes:
    """``img`` encoded in memory (``params`` go to Pillow's ``save``, e.g. ``quality=92``)."""
    buf = io.BytesIO()
    img.save(buf, format=format, **params)
    return buf.getvalue()


def wrap_words(text: str, width_of, limit: float) -> list[str]:
    """Greedy word wrap: lines whose ``width_of`` stays within ``limit`` (paragraphs split on newlines)."""
    lines: list[str] = []
    for para in text.split("\n"):
        current = ""
        for word in para.split():
            trial = f"{current} {word}".strip()
            if current and width_of(trial) > limit:
                lines.append(current)
                current = word
            else:
                current = trial
        lines.append(current)
    return lines


def _pdf_escape(text: str) -> bytes:
    raw = text.encode("cp1252", "replace")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def write_text_pdf(
    path: str | os.PathLike,
    pages: Sequence[str],
    page_size: tuple[float, float] = (612.0, 792.0),
    font_size: float = 11.0,
) -> Path:
    """A PDF whose pages carry a real text layer (Helvetica, WinAnsi), one string per page."""
    w, h = page_size
    objects: list[bytes] = []
    n = len(pages)
    # 1: catalog, 2: pages, 3: font, then per page: page object, content stream
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    leading = font_size * 1.35
    chars_per_line = max(20, int((w - 144) / (font_size * 0.5)))
    for i, body in enumerate(pages):
        lines: list[str] = []
        for para in body.split("\n"):
            lines.extend(wrap_words(para, len, chars_per_line) or [""])
        max_lines = max(1, int((h - 144) / leading))
        ops = [b"BT", f"/F1 {font_size:g} Tf {leading:g} TL 72 {h - 72:g} Td".encode()]
        for line in lines[:max_lines]:
            ops.append(b"(" + _pdf_escape(line) + b") Tj T*")
        ops.append(b"ET")
        stream = zlib.compress(b"\n".join(ops))
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {w:g} {h:g}] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>".encode()
        )
        objects.append(
            f"<< /Length {len(stream)} /Filter /FlateDecode >>\nstream\n".encode() + stream + b"\nendstream"
        )
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for num, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{num} 0 obj\n".encode() + obj + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path = Path(path)
    path.write_bytes(bytes(out))
    return path


def write_image_pdf(path: str | os.PathLike, images: Sequence[Image.Image], dpi: float = 100.0) -> Path:
    """A scan-like PDF: one raster image per page and no text layer."""
    path = Path(path)
    rgb = [im.convert("RGB") for im in images]
    rgb[0].save(path, "PDF", resolution=dpi, save_all=True, append_images=rgb[1:])
    return path


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray | Iterable[np.ndarray | Image.Image],
    fps: int = 10,
    codec: str | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """Encode RGB frames (arrays or PIL images) with PyAV; the container follows the suffix (.mp4, .mkv, .webm,
    .avi, .mov). Odd sizes are cropped to even ones (yuv420p). ``options`` are the encoder's (default for
    libx264: ultrafast, crf 28)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    codec = codec or {".webm": "libvpx", ".avi": "mpeg4"}.get(suffix, "libx264")
    frames = [np.asarray(f.convert("RGB")) if isinstance(f, Image.Image) else f for f in frames]
    h, w = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = w - w % 2, h - h % 2
        stream.pix_fmt = "yuv420p"
        if options is not None:
            stream.options = dict(options)
        elif codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "28"}
        for arr in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr[: stream.height, : stream.width]), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
