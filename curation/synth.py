"""Synthetic media built from installed packages only: the demo corpus and test fixtures.

Nothing here downloads anything. PDFs with a real text layer are written by
hand (base-14 Helvetica needs no embedded font); page images are rendered
with PIL's scalable default font; videos are encoded with PyAV.
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

# the encoders live in media (re-exported: the demo and the tests write their corpora through synth)
from media.encode import encode_image, wrap_words, write_image_pdf, write_text_pdf, write_video  # noqa: F401


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
    for line in wrap_words(text, lambda s: draw.textlength(s, font=font), size[0] - 2 * margin):
        if y + font_size > size[1] - margin:
            break
        draw.text((margin, y), line, fill=(20, 20, 20), font=font)
        y += int(font_size * 1.4)
    return img


# --------------------------------------------------------------------------- PDFs


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
