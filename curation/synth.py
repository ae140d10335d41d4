"""Synthetic media built from installed packages only: the demo corpus and test fixtures.

Nothing here downloads anything. PDFs with a real text layer are written by
hand (base-14 Helvetica needs no embedded font); page images are rendered
with PIL's scalable default font; videos are encoded with PyAV.
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont


# --------------------------------------------------------------------------- images


def photo_like(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A textured, photo-like RGB image: smooth colour fields, shapes, edges and grain.

    Different seeds give perceptually different images, so a test corpus has
    real (non-duplicate) variety for dedup and real detail for blur scores.
    """
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        fx, fy, ph = rng.uniform(0.5, 4.0), rng.uniform(0.5, 4.0), rng.uniform(0, 2 * np.pi)
        base[..., c] = 128 + 90 * np.sin(2 * np.pi * (fx * xx / w + fy * yy / h) + ph)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(6, 14))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(8, max(9, w // 2))), y0 + int(rng.integers(8, max(9, h // 2)))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse([x0, y0, x1, y1], fill=colour, outline=(0, 0, 0))
        else:
            draw.rectangle([x0, y0, x1, y1], fill=colour, outline=(255, 255, 255))
    grain = rng.normal(0, 6, (h, w, 3))
    arr = np.clip(np.asarray(img, np.float32) + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def blurred(img: Image.Image, radius: float = 6.0) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(radius))


def flat(colour: tuple[int, int, int] = (40, 90, 200), size: tuple[int, int] = (256, 256)) -> Image.Image:
    return Image.new("RGB", size, colour)


def text_page(text: str, size: tuple[int, int] = (850, 1100), font_size: int = 22, margin: int = 60) -> Image.Image:
    """A document page image with word-wrapped text in PIL's scalable default font."""
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=font_size)
    y = margin
    for line in _wrap(text, lambda s: draw.textlength(s, font=font), size[0] - 2 * margin):
        if y + font_size > size[1] - margin:
            break
        draw.text((margin, y), line, fill=(20, 20, 20), font=font)
        y += int(font_size * 1.4)
    return img


def _wrap(text: str, width_of, limit: float) -> list[str]:
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


# --------------------------------------------------------------------------- PDFs


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
            lines.extend(_wrap(para, len, chars_per_line) or [""])
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


# --------------------------------------------------------------------------- video


def moving_frames(n: int, size: tuple[int, int] = (160, 120), seed: int = 0, static: bool = False) -> np.ndarray:
    """``n`` RGB frames of a textured scene panning across (or standing still when ``static``)."""
    w, h = size
    scene = np.asarray(photo_like(seed, (w * 2, h)), dtype=np.uint8)
    frames = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        x = 0 if static else int(round(i * (w - 1) / max(1, n - 1)))
        frames[i] = scene[:, x : x + w]
    return frames


def write_video(
    path: str | os.PathLike, frames: np.ndarray | Iterable[np.ndarray], fps: int = 10, codec: str | None = None
) -> Path:
    """Encode RGB frames with PyAV; the container follows the suffix (.mp4, .mkv, .webm, .avi, .mov)."""
    import av

    path = Path(path)
    suffix = path.suffix.lower()
    codec = codec or {".webm": "libvpx", ".avi": "mpeg4"}.get(suffix, "libx264")
    frames = list(frames)
    h, w = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = w - w % 2, h - h % 2
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "28"}
        for arr in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr[: stream.height, : stream.width]), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_locked_pdf(path: str | os.PathLike, text: str = "locked") -> Path:
    """A PDF behind the standard security handler with a password nobody knows (for encrypted-PDF tests).

    Written as an incremental update that adds an /Encrypt dictionary whose
    owner/user keys match no password, so readers ask for one.
    """
    import re

    path = Path(path)
    write_text_pdf(path, [text])
    data = path.read_bytes()
    prev = int(re.findall(rb"startxref\n(\d+)", data)[-1])
    num = int(re.findall(rb"/Size (\d+)", data)[-1])
    obj = b"%d 0 obj\n<< /Filter /Standard /V 1 /R 2 /Length 40 /O <%s> /U <%s> /P -44 >>\nendobj\n" % (
        num, b"11" * 32, b"22" * 32)
    offset = len(data)
    out = data + obj
    xref = len(out)
    out += b"xref\n%d 1\n%010d 00000 n \ntrailer\n<< /Size %d /Root 1 0 R /Encrypt %d 0 R /ID [<%s> <%s>] /Prev %d >>\n" % (
        num, offset, num + 1, num, b"ab" * 16, b"ab" * 16, prev)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    path.write_bytes(out)
    return path


def _png_header(width: int, height: int) -> bytes:
    """A valid-looking PNG whose header declares ``width`` x ``height``: a decompression bomb in 100 bytes."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def write_bad_inputs(root: str | os.PathLike) -> dict[str, tuple[str, str]]:
    """Every kind of broken input curation must survive, by source kind.

    Returns {relative path: (stage, reason)} of what the ledger must say.
    ``images/locked.jpg`` is unreadable through permissions for a normal user;
    under root, where permissions do not apply, a FIFO stands in for it.
    """
    import io as _io

    root = Path(root)
    expect: dict[str, tuple[str, str]] = {}
    img = root / "images"
    img.mkdir(parents=True, exist_ok=True)
    photo_like(1, (64, 48)).save(img / "good.jpg")
    (img / "empty.jpg").write_bytes(b"")
    expect["images/empty.jpg"] = ("read", "zero_bytes")
    for fmt, name in (("JPEG", "cut.jpg"), ("PNG", "cut.png")):
        buf = _io.BytesIO()
        photo_like(2, (300, 200)).save(buf, fmt)
        (img / name).write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
        expect[f"images/{name}"] = ("decode", "truncated")
    (img / "noise.jpg").write_bytes(np.random.default_rng(3).bytes(3000))
    expect["images/noise.jpg"] = ("decode", "undecodable")
    (img / "bomb.png").write_bytes(_png_header(12000, 12000))
    expect["images/bomb.png"] = ("decode", "decompression_bomb")
    os.symlink("loop.jpg", img / "loop.jpg")
    expect["images/loop.jpg"] = ("read", "symlink_loop")
    locked = img / "locked.jpg"
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        os.mkfifo(locked)
    else:
        photo_like(4, (32, 32)).save(locked)
        locked.chmod(0)
    expect["images/locked.jpg"] = ("read", "unreadable")

    vid = root / "videos"
    vid.mkdir(exist_ok=True)
    write_video(vid / "good.mp4", moving_frames(12, (96, 64), seed=5), fps=6)
    (vid / "cut.mp4").write_bytes((vid / "good.mp4").read_bytes()[:1200])
    expect["videos/cut.mp4"] = ("decode", "undecodable")
    (vid / "noise.webm").write_bytes(np.random.default_rng(4).bytes(4000))
    expect["videos/noise.webm"] = ("decode", "undecodable")
    (vid / "empty.avi").write_bytes(b"")
    expect["videos/empty.avi"] = ("read", "zero_bytes")

    doc = root / "docs"
    doc.mkdir(exist_ok=True)
    write_text_pdf(doc / "good.pdf", ["A perfectly fine page of text for the test."])
    (doc / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog")
    expect["docs/broken.pdf"] = ("decode", "undecodable")
    write_locked_pdf(doc / "locked.pdf")
    expect["docs/locked.pdf"] = ("decode", "encrypted")

    txt = root / "text"
    txt.mkdir(exist_ok=True)
    (txt / "good.txt").write_text("A short but perfectly valid paragraph of plain English text.\n")
    (txt / "latin1.txt").write_bytes("caf\xe9 au lait, cr\xe8me br\xfbl\xe9e and more words".encode("latin-1"))
    expect["text/latin1.txt"] = ("read", "invalid_utf8")
    return expect
