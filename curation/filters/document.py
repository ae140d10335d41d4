"""Document operators: PDFs parsed with pypdfium2 (one row per PDF, one media entry per page), document images."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from curation.filters.common import (
    STAGE_DECODE, ThresholdFilter, drop_rows, low_info_score, media_column, put_media, set_column,
)
from curation.operators import Operator
from curation.recipe import DocumentFilters
import media as M
from media.decoded import DecodedMedia, DecodeNeeds, SharedDecode, row_positions, with_needs

DOCUMENT_SCORES: dict[str, pa.DataType] = {
    "score_pages": pa.int32(),
    "score_text_chars_per_page": pa.float64(),  # mean stripped characters of the text layer per page
    "score_textless_pages": pa.float64(),  # fraction of pages with under 10 text characters (scans without OCR)
    "score_min_page_side_pt": pa.float64(),  # smallest page side, PDF points (null for document images)
    "score_max_page_side_pt": pa.float64(),
    "score_low_info": pa.float64(),  # of the rendered first page (blank-page guard)
}

#: longer side of the render used to prove a page draws and to score it
_CHECK_SIDE = 256
PAGE_SEPARATOR = "\f"  # pages of a document's text are joined by form feeds


class DocumentAnalyzer(Operator):
    """Expand each PDF into page entries with sizes at the source dpi and its text layer; score pages.

    Document images (PNG/JPEG scans) are decoded once to prove they are usable;
    their text comes from a sidecar .txt found by the reader.
    """

    stage = STAGE_DECODE
    columns = DOCUMENT_SCORES

    def __init__(self, cfg: DocumentFilters, dpi: float, shared: SharedDecode | None = None) -> None:
        self.cfg = cfg
        self.dpi = float(dpi)
        pages = {"none": 0, "first": 1}.get(cfg.render_check, -1)
        self.shared = with_needs(shared, DecodeNeeds(grey_side=_CHECK_SIDE, page_text=True, check_pages=pages,
                                                     check_side=_CHECK_SIDE if pages else None))

    def __call__(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        media = media_column(table)
        texts = table.column("text").to_pylist()
        pages = np.full(n, -1, np.int64)
        per_page = np.full(n, np.nan)
        textless = np.full(n, np.nan)
        min_pt = np.full(n, np.nan)
        max_pt = np.full(n, np.nan)
        low = np.full(n, np.nan)
        failures: dict[int, tuple[str, str]] = {}
        positions = row_positions(table)
        for i, items in enumerate(media):
            if not items:
                continue
            item = items[0]
            try:
                got = self.shared.get(positions[i], 0, item).check()
                if got.kind == "pdf":
                    entries, body, stats, counts = self._pdf(item, got)
                    items[:] = entries
                    texts[i] = body
                    min_pt[i], max_pt[i], low[i] = stats
                else:
                    info = got.info
                    item.update(width=info.width, height=info.height, format=info.format, page=0)
                    low[i] = low_info_score(np.asarray(got.grey))
                    counts = [len((texts[i] or "").strip())]
            except M.MediaError as exc:
                failures[i] = (exc.reason, exc.detail)
                continue
            pages[i] = len(counts)
            if counts:
                per_page[i] = float(np.mean(counts))
                textless[i] = float(np.mean(np.asarray(counts) < 10))
        table = put_media(table, media)
        table = set_column(table, "text", pa.array(texts, pa.string()))
        table = set_column(table, "score_pages", pa.array(pages, mask=pages < 0).cast(pa.int32()))
        for name, arr in (("score_text_chars_per_page", per_page), ("score_textless_pages", textless),
                          ("score_min_page_side_pt", min_pt), ("score_max_page_side_pt", max_pt), ("score_low_info", low)):
            table = set_column(table, name, pa.array(arr, mask=np.isnan(arr)))
        return drop_rows(table, failures, self.stage)

    def _pdf(self, item: dict, got: DecodedMedia) -> tuple[list[dict], str, tuple[float, float, float], list[int]]:
        pages = got.pages or []
        entries = []
        for pg in pages:
            w, h, eff = M.page_render_size(pg.width_pt, pg.height_pt, self.dpi, self.cfg.max_page_pixels)
            entries.append({**item, "kind": "page", "format": "PDF", "page": pg.index, "dpi": float(eff),
                            "width": w, "height": h})
        low = float("nan")
        if self.cfg.render_check != "none" and pages:
            todo = pages[:1] if self.cfg.render_check == "first" else pages
            for pg in todo:
                if pg.index not in got.renders:  # left to the OCR stage, which renders and scores it once
                    continue
                img = got.page_image(pg.index)  # rendered once by the shared decode (RGB); raises if it did not draw
                if pg.index == 0:
                    low = low_info_score(np.asarray(img.convert("L")))
        sides = [s for pg in pages for s in (pg.width_pt, pg.height_pt)]
        # a text layer can itself hold form feeds: they become newlines so pages split unambiguously
        body = PAGE_SEPARATOR.join(pg.text.replace(PAGE_SEPARATOR, "\n") for pg in pages)
        counts = [len(pg.text.strip()) for pg in pages]
        return entries, body, (min(sides, default=np.nan), max(sides, default=np.nan), low), counts


class DocumentFilter(ThresholdFilter):
    CHECKS = (
        ("score_pages", ">=", "min_pages"),
        ("score_pages", "<=", "max_pages"),
        ("score_min_page_side_pt", ">=", "min_page_side_pt"),
        ("score_max_page_side_pt", "<=", "max_page_side_pt"),
        ("score_text_chars_per_page", ">=", "min_text_chars_per_page"),
        ("score_low_info", "<=", "max_low_info"),
    )
