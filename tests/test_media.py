"""media on generated fixtures: images, PDFs, videos and every way they can be broken."""
from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from curation import synth
import media as M


def _png_header_only(path, width: int, height: int) -> None:
    """A PNG whose header declares a huge image: a decompression bomb that costs nothing to write."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_decode_jpeg_uses_draft_and_reports_header_size(tmp_path):
    p = tmp_path / "big.jpg"
    synth.photo_like(1, (1600, 1200)).save(p, quality=90)
    info, img = M.decode_image(p, max_side=200)
    assert (info.width, info.height, info.format) == (1600, 1200, "JPEG")
    assert max(img.size) == 200 and img.mode == "RGB"
    # draft really reduced inside the decoder: the raw draft size is 1/8 scale
    with Image.open(p) as raw:
        raw.draft("RGB", (200, 150))
        assert raw.size == (200, 150)


def test_exif_orientation_swaps_display_size(tmp_path):
    p = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    synth.photo_like(2, (300, 100)).save(p, exif=exif.tobytes())
    info, img = M.decode_image(p)
    assert (info.width, info.height, info.orientation) == (100, 300, 6)
    assert img.size == (100, 300)


def test_gif_first_frame(tmp_path):
    p = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (20, 20), c) for c in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0)
    info, img = M.decode_image(p)
    assert info.animated and info.format == "GIF"
    r, g, b = img.getpixel((10, 10))
    assert r > 200 and b < 50


def test_alpha_composited_on_white(tmp_path):
    p = tmp_path / "a.png"
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(p)
    assert M.open_image(p).getpixel((0, 0)) == (255, 255, 255)
    assert M.open_image(p, mode="L").getpixel((0, 0)) == 255


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: p.write_bytes(b""), "zero_bytes"),
        (lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)), "undecodable"),
        (lambda p: _png_header_only(p, 40000, 40000), "decompression_bomb"),
    ],
)
def test_bad_images(tmp_path, make, reason):
    p = tmp_path / "bad.png"
    make(p)
    with pytest.raises(M.MediaError) as exc:
        M.decode_image(p)
    assert exc.value.reason == reason


def test_bomb_guard_reads_header_only(tmp_path):
    p = tmp_path / "bomb.png"
    _png_header_only(p, 12000, 12000)
    with pytest.raises(M.MediaError) as exc:
        M.image_info(p)
    assert exc.value.reason == "decompression_bomb" and "12000x12000" in exc.value.detail
    # a configurable budget applies to ordinary images too
    q = tmp_path / "ok.png"
    Image.new("RGB", (100, 100)).save(q)
    with pytest.raises(M.MediaError):
        M.decode_image(q, max_pixels=5000)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_images(tmp_path, fmt):
    buf = io.BytesIO()
    synth.photo_like(3, (400, 300)).save(buf, fmt)
    data = buf.getvalue()
    p = tmp_path / f"cut.{fmt.lower()}"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(M.MediaError) as exc:
        M.decode_image(p)
    assert exc.value.reason in ("truncated", "undecodable")


def test_unreadable_and_symlink_loop(tmp_path):
    loop = tmp_path / "loop.jpg"
    os.symlink(loop, loop)
    with pytest.raises(M.MediaError) as exc:
        M.decode_image(loop)
    assert exc.value.reason == "symlink_loop"
    if os.geteuid() != 0:
        p = tmp_path / "locked.jpg"
        synth.photo_like(4, (32, 32)).save(p)
        p.chmod(0)
        with pytest.raises(M.MediaError) as exc:
            M.decode_image(p)
        assert exc.value.reason == "unreadable"


def test_bytes_source():
    buf = io.BytesIO()
    synth.photo_like(5, (64, 48)).save(buf, "WEBP")
    info, img = M.decode_image(buf.getvalue())
    assert (info.width, info.height, info.format) == (64, 48, "WEBP")


def test_pdf_text_layer_sizes_and_render(tmp_path):
    p = synth.write_text_pdf(tmp_path / "doc.pdf", ["Hello page one", "Second (page) text"], page_size=(300, 400))
    pages = M.pdf_pages(p)
    assert [pg.index for pg in pages] == [0, 1]
    assert pages[0].text.strip() == "Hello page one"
    assert pages[1].text.strip() == "Second (page) text"
    assert (pages[0].width_pt, pages[0].height_pt) == (300, 400)
    img = M.render_pdf_page(p, 1, dpi=144)
    assert img.size == (600, 800)
    assert np.asarray(img).min() < 100  # text pixels are drawn


def test_pdf_documents_are_closed_under_the_pdfium_lock(tmp_path, monkeypatch):
    """pdfium is not thread-safe: a document closed outside the lock while a decode thread rendered another page
    crashed a CI run (a segfault in ``page.render``). Every close must hold the lock."""
    import pypdfium2 as pdfium

    from media import pdf as pdf_mod
    from media.decoded import DecodeNeeds, decode_media

    held: list[bool] = []
    close = pdfium.PdfDocument.close

    def watched(self, *a, **k):
        held.append(pdf_mod._PDFIUM_LOCK._is_owned())
        return close(self, *a, **k)

    monkeypatch.setattr(pdfium.PdfDocument, "close", watched)
    path = synth.write_text_pdf(tmp_path / "d.pdf", ["one", "two"], page_size=(200, 260))
    got = decode_media({"uri": str(path), "format": "PDF", "kind": "document"},
                       DecodeNeeds(pages=-1, page_side=64, page_text=True))
    assert got.error is None and len(got.renders) == 2
    M.render_pdf_page(path, 0, dpi=36)
    M.close_pdf(M.open_pdf(path))
    assert held and all(held), held


def test_render_caps_huge_pages(tmp_path):
    p = synth.write_text_pdf(tmp_path / "poster.pdf", ["x"], page_size=(7200, 7200))
    w, h, dpi = M.page_render_size(7200, 7200, 100, max_pixels=1_000_000)
    assert w * h <= 1_000_000 and dpi < 100
    img = M.render_pdf_page(p, 0, dpi=100, max_pixels=1_000_000)
    assert img.size == (w, h)


def test_bad_pdfs(tmp_path):
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"%PDF-1.4\n%%EOF\n")
    with pytest.raises(M.MediaError) as exc:
        M.pdf_pages(bad)
    assert exc.value.reason == "undecodable"
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    with pytest.raises(M.MediaError) as exc:
        M.open_pdf(empty)
    assert exc.value.reason == "zero_bytes"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    p = tmp_path_factory.mktemp("v") / "clip.mp4"
    return synth.write_video(p, synth.moving_frames(20, (96, 64), seed=1), fps=10)


def test_probe_video(clip):
    info = M.probe_video(clip)
    assert (info["width"], info["height"], info["frames"], info["rotation"]) == (96, 64, 20, 0)
    assert info["fps"] == pytest.approx(10)
    assert info["duration"] == pytest.approx(2.0, abs=0.15)


@pytest.mark.parametrize("backend", ["decord", "av"])
def test_read_video_frames_backends_agree(clip, backend):
    if backend == "decord":
        pytest.importorskip("decord")
    idx = M.sample_frame_indices(20, 5)
    assert idx.tolist() == [0, 5, 10, 14, 19]
    frames = M.read_video_frames(clip, idx, backend=backend)
    assert frames.shape == (5, 64, 96, 3) and frames.dtype == np.uint8
    ref = synth.moving_frames(20, (96, 64), seed=1)[idx]
    assert np.abs(frames.astype(int) - ref).mean() < 12  # lossy codec, same content
    small = M.read_video_frames(clip, [0, 25], max_side=48, backend=backend)  # 25 is clamped to the last frame
    assert small.shape == (2, 32, 48, 3)


def test_bad_videos(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(1).bytes(10_000))
    with pytest.raises(M.MediaError) as exc:
        M.probe_video(junk)
    assert exc.value.reason == "undecodable"
    empty = tmp_path / "empty.webm"
    empty.write_bytes(b"")
    with pytest.raises(M.MediaError) as exc:
        M.read_video_frames(empty, [0])
    assert exc.value.reason == "zero_bytes"


def test_count_decoded_frames(tmp_path, clip):
    assert M.count_decoded_frames(clip) == 20
    junk = tmp_path / "junk.mkv"
    junk.write_bytes(np.random.default_rng(2).bytes(4_000))
    with pytest.raises(M.MediaError) as exc:
        M.count_decoded_frames(junk)
    assert exc.value.reason == "undecodable"
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(M.MediaError) as exc:
        M.count_decoded_frames(empty)
    assert exc.value.reason == "zero_bytes"


def test_truncated_video_container(tmp_path, clip):
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])  # mdat cut short, moov (at the end for PyAV) lost
    with pytest.raises(M.MediaError):
        M.probe_video(cut)


def test_exif_orientation_fast_path_reads_both_byte_orders_and_tolerates_garbage():
    import struct

    from media.image import _exif_orientation

    def ifd(order: str, tags: list[tuple[int, int, int]]) -> bytes:
        head = (b"II" if order == "<" else b"MM") + struct.pack(order + "HI", 42, 8)
        body = struct.pack(order + "H", len(tags))
        for tag, typ, value in tags:
            body += struct.pack(order + "HHI", tag, typ, 1) + struct.pack(order + "H", value) + b"\0\0"
        return b"Exif\0\0" + head + body + b"\0\0\0\0"

    assert _exif_orientation(ifd("<", [(0x010F, 3, 1), (0x0112, 3, 6)])) == 6
    assert _exif_orientation(ifd(">", [(0x0112, 3, 8)])) == 8
    assert _exif_orientation(ifd("<", [(0x010F, 3, 2)])) == 1
    assert _exif_orientation(b"Exif\0\0garbage") == 1
    assert _exif_orientation(ifd("<", [(0x0112, 3, 3)])[:20]) == 1  # truncated IFD


@pytest.mark.parametrize("backend", ["decord", "av"])
def test_video_bytes_decode_as_the_path_does(clip, backend):
    """The shared decode reads a video once and decodes its bytes (decord through a memory file, PyAV a BytesIO)."""
    if backend == "decord":
        pytest.importorskip("decord")
    data = clip.read_bytes()
    assert M.probe_video(data, label="c.mp4") == M.probe_video(clip)
    for side in (None, 48):
        a = M.read_video_frames(data, [0, 7, 19], max_side=side, backend=backend, label="c.mp4")
        b = M.read_video_frames(clip, [0, 7, 19], max_side=side, backend=backend)
        assert np.array_equal(a, b)
    assert M.count_decoded_frames(data) == 20
    # a container cut short, as bytes: a MediaError naming the label (never a crash of the process)
    with pytest.raises(M.MediaError) as exc:
        M.read_video_frames(data[: len(data) // 2], [0, 19], backend=backend, label="cut.mp4")
    assert exc.value.reason == "undecodable" and exc.value.detail.startswith("cut.mp4: ")
    with pytest.raises(M.MediaError) as exc:
        M.read_video_frames(b"", [0], backend=backend, label="empty.mp4")
    assert exc.value.reason == "zero_bytes"


def test_image_pixel_digest_is_the_digest_of_the_rgb_array():
    """Pixels are hashed straight from Pillow's packer, in pieces: the digest of ``np.asarray(im)`` all the same,
    also for an image Pillow stores in several memory blocks."""
    from media.digests import image_pixel_digest, pixel_digest

    rng = np.random.default_rng(3)
    small = Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))
    large = Image.fromarray(rng.integers(0, 256, (1800, 2600, 3), dtype=np.uint8))  # 18 MB as RGBX: multi-block
    for im in (small, large, small.transpose(Image.Transpose.ROTATE_90), Image.new("RGB", (1, 1), (9, 8, 7))):
        assert image_pixel_digest(im) == pixel_digest(np.asarray(im))
    assert image_pixel_digest(small) != image_pixel_digest(small.transpose(Image.Transpose.ROTATE_90))
    with pytest.raises(ValueError):
        image_pixel_digest(small.convert("L"))
