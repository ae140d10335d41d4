"""PDF pages: open, probe sizes and text layers, render (pdfium, serialised by one lock)."""
from __future__ import annotations

from contextlib import contextmanager

import io
import math
import threading
from dataclasses import dataclass

from PIL import Image

from media.counters import count
from media.files import DEFAULT_MAX_PIXELS, MediaError, MediaSource, _as_stream, _os_error

# pdfium is not thread-safe; a process-wide lock keeps threaded callers
# (DataLoader threads, notebooks) correct at no cost to process-parallel engines.
_PDFIUM_LOCK = threading.RLock()


def _pdfium():
    import pypdfium2 as pdfium

    return pdfium


def open_pdf(src: MediaSource, password: str | None = None, *, label: str | None = None):
    """A ``pypdfium2.PdfDocument``; MediaError(encrypted | undecodable | ...) otherwise.

    The caller closes it with :func:`close_pdf` (under the pdfium lock).
    ``label`` names in-memory bytes in messages (the path they were read from).
    """
    pdfium = _pdfium()
    stream, label0 = _as_stream(src)
    label = label or label0
    if isinstance(stream, str):
        count("read", "pdf")
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


def close_pdf(doc) -> None:
    """Close a document from :func:`open_pdf` under the pdfium lock (closing while another thread parses or
    renders crashes pdfium: a segfault seen with the decode thread pool)."""
    with _PDFIUM_LOCK:
        doc.close()


@contextmanager
def _document(src: MediaSource | object, password: str | None):
    """An open ``PdfDocument`` held under the pdfium lock; closed on exit only when opened here."""
    pdfium = _pdfium()
    own = not isinstance(src, pdfium.PdfDocument)
    doc = open_pdf(src, password=password) if own else src  # type: ignore[arg-type]
    with _PDFIUM_LOCK:
        try:
            yield doc
        finally:
            if own:
                close_pdf(doc)


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
    out: list[PdfPage] = []
    with _document(src, password) as doc:
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
    with _document(src, password) as doc:
        try:
            if not 0 <= index < len(doc):
                raise MediaError("missing", f"page {index} of a {len(doc)}-page document")
            page = doc[index]
            try:
                w_pt, h_pt = page.get_size()
                _, _, eff = page_render_size(w_pt, h_pt, dpi, max_pixels)
                count("decode", "pdf")
                bitmap = page.render(scale=eff / 72.0, grayscale=(mode == "L"), may_draw_forms=True)
                img = bitmap.to_pil()
                img = img.convert(mode) if img.mode != mode else img.copy()
                bitmap.close()
            finally:
                page.close()
        except pdfium.PdfiumError as exc:
            raise MediaError("undecodable", f"page {index}: {exc}") from None
    return img

