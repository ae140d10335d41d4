"""OCR of document pages with no text layer (scans) and of document images with no sidecar text.

RapidOCR (``rapidocr-onnxruntime``) runs PaddleOCR's PP-OCRv4 detection and
recognition models, which ship inside its wheel: nothing is downloaded. The
operator sits between the document analyzer (which reads text layers and page
sizes) and the document filter, so ``min_text_chars_per_page`` sees the OCR
text. Per row it writes:

- ``text``: the OCR text replaces the empty text layer of each OCRed page
  (pages stay joined by form feeds);
- ``ocr_lines``: one entry per recognised line, ``{page, text, score, box}``
  with ``box = [x0, y0, x1, y1]`` in the pixel coordinates of that page's
  media entry (its ``width``/``height`` at its ``dpi``), so a viewer draws it
  on a page thumbnail by scaling;
- ``ocr``: provenance ``{engine, dpi, mode, pages, empty_pages}``;
- ``score_ocr_confidence``: the mean recognition score of the lines kept.

A scan whose OCRed pages give no text at all (and that has no text layer
elsewhere) goes to the ledger (stage ``ocr``, reason ``ocr_no_text``), as
does a page that cannot be rendered or recognised (``ocr_failed``).
"""
from __future__ import annotations

import json
from typing import Any, Literal, Optional

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from curation.enrich.base import EnrichConfig, Enricher

PAGE_SEPARATOR = "\f"

OCR_LINE_TYPE = pa.struct([
    pa.field("page", pa.int32()),
    pa.field("text", pa.string()),
    pa.field("score", pa.float32()),
    pa.field("box", pa.list_(pa.float32())),  # x0, y0, x1, y1 in the page entry's pixels
])
OCR_PROVENANCE_TYPE = pa.struct([
    pa.field("engine", pa.string()),
    pa.field("dpi", pa.float32()),
    pa.field("mode", pa.string()),
    pa.field("pages", pa.list_(pa.int32())),  # pages OCRed
    pa.field("empty_pages", pa.list_(pa.int32())),  # pages OCRed that gave no text
])
OCR_COLUMNS: dict[str, pa.DataType] = {
    "ocr_lines": pa.list_(OCR_LINE_TYPE),
    "ocr": OCR_PROVENANCE_TYPE,
    "score_ocr_confidence": pa.float64(),
}

STAGE_OCR = "ocr"


class DocumentSection(EnrichConfig):
    """Recipe section ``document:``: OCR of scans. ``ocr: auto`` OCRs pages whose text layer is empty.

    Besides the fields below it takes the enrich fields (``sources``,
    ``batch_size``, ``concurrency``, ``num_cpus``; onnxruntime runs on CPU).
    """

    #: never: no OCR; auto: pages whose text layer has under ``min_chars`` characters; always: every page
    ocr: Literal["auto", "always", "never"] = "never"
    #: render resolution of PDF pages for OCR (text of 10 pt renders about 20 px high at 150 dpi)
    dpi: float = Field(150.0, ge=50, le=600)
    #: ``auto``: a page needs OCR when its stripped text layer has fewer characters than this
    min_chars: int = Field(10, ge=1)
    #: recognised lines scoring below this are discarded (RapidOCR's text_score)
    min_score: float = Field(0.5, ge=0, le=1)
    #: at most this many pages OCRed per document (the rest keep their text layer); null: all
    max_pages: Optional[int] = Field(64, ge=1)
    #: longer side document images are reduced to before OCR (pixels)
    max_side: int = Field(2000, ge=256, le=8192)
    #: documents whose OCRed pages give no text at all go to the ledger (``ocr_no_text``)
    drop_unreadable: bool = True
    #: documents per OCR call (each is several pages)
    batch_size: int = Field(4, ge=1, le=4096)

    @model_validator(mode="after")
    def _installed(self) -> "DocumentSection":
        import importlib.util

        if self.ocr != "never" and importlib.util.find_spec("rapidocr_onnxruntime") is None:
            raise ValueError("OCR needs rapidocr-onnxruntime: pip install 'smolcurate[ocr]'")
        return self


def _engine_label() -> str:
    try:
        from importlib.metadata import version

        v = version("rapidocr-onnxruntime")
    except Exception:  # pragma: no cover - metadata missing in odd installs
        v = "?"
    return f"rapidocr-onnxruntime {v} PP-OCRv4"


class PageOcr(Enricher):
    """OCR text and line boxes for scanned pages and text-less document images (see module doc)."""

    Config = DocumentSection
    kinds = ("document",)
    stage = STAGE_OCR
    columns = OCR_COLUMNS

    def __init__(self, cfg: DocumentSection | dict | None = None, recipe: Any = None, shared: Any = None) -> None:
        cfg = cfg if isinstance(cfg, DocumentSection) else DocumentSection.model_validate(cfg or {"ocr": "auto"})
        super().__init__(cfg, recipe)
        self.num_gpus = 0.0  # onnxruntime on CPU
        self._engine = None
        if shared is not None and cfg.ocr != "never" and (recipe is None or recipe.dedup_config() is None):
            # the pages OCR reads are rendered here, once, at the OCR dpi: the shared decode skips their
            # thumbnail-size check render, and this operator scores page 0 (score_low_info) from its render.
            # With dedup, page hashes need that small render in the decoding stage, so it stays
            from media.decoded import DecodeNeeds, with_needs

            with_needs(shared, DecodeNeeds(ocr_pages=(cfg.min_chars, cfg.max_pages or 0, cfg.ocr == "always")))
        self._label = ""

    @classmethod
    def check(cls, cfg: DocumentSection, recipe: Any, field: str) -> None:
        """OCR must run before the document filter, so it is configured by ``document:``, not ``enrich:``."""
        if field.startswith("enrich"):
            from manifests.errors import RecipeError

            raise RecipeError("OCR is configured by the top-level `document:` section (document: {ocr: auto})",
                              field=field)
        super().check(cfg, recipe, field)

    def setup(self) -> None:
        if self._engine is not None:
            return
        import logging

        from rapidocr_onnxruntime import RapidOCR

        threads = max(1, int(self.cfg.num_cpus))
        self._engine = RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1, text_score=self.cfg.min_score)
        logging.getLogger("RapidOCR").setLevel(logging.ERROR)
        self._label = _engine_label()

    # -- one image -------------------------------------------------------
    def recognise(self, rgb: np.ndarray) -> list[tuple[np.ndarray, str, float]]:
        """[(quad [4, 2] in the image's pixels, text, score)] for one RGB image, in reading order."""
        self.setup()
        result, _ = self._engine(np.ascontiguousarray(rgb))
        out = []
        for quad, text, score in result or ():
            text = str(text).strip()
            if text and float(score) >= self.cfg.min_score:
                out.append((np.asarray(quad, np.float32).reshape(4, 2), text, float(score)))
        return out

    def _pages_to_ocr(self, pages: list[str], n_entries: int) -> list[int]:
        todo = [i for i in range(n_entries)
                if self.cfg.ocr == "always" or len((pages[i] if i < len(pages) else "").strip()) < self.cfg.min_chars]
        return todo[: self.cfg.max_pages] if self.cfg.max_pages else todo

    def __call__(self, table: pa.Table) -> pa.Table:
        from curation.filters.common import drop_rows, media_column, set_column
        import media as M
        from media.refs import ref_source

        if self.cfg.ocr == "never" or table.num_rows == 0:
            return table
        self.setup()
        n = table.num_rows
        media = media_column(table)
        texts = table.column("text").to_pylist()
        lines_col: list[list[dict] | None] = [None] * n
        prov: list[dict | None] = [None] * n
        conf = np.full(n, np.nan)
        per_page = table.column("score_text_chars_per_page").to_numpy(zero_copy_only=False).astype(np.float64) \
            if "score_text_chars_per_page" in table.column_names else np.full(n, np.nan)
        textless = table.column("score_textless_pages").to_numpy(zero_copy_only=False).astype(np.float64) \
            if "score_textless_pages" in table.column_names else np.full(n, np.nan)
        low = table.column("score_low_info").to_numpy(zero_copy_only=False).astype(np.float64) \
            if "score_low_info" in table.column_names else np.full(n, np.nan)
        failures: dict[int, tuple[str, str]] = {}
        for i, items in enumerate(media):
            if not items:
                continue
            is_pdf = (items[0].get("format") or "").upper() == "PDF"
            pages = (texts[i] or "").split(PAGE_SEPARATOR) if is_pdf else [texts[i] or ""]
            pages += [""] * (len(items) - len(pages))
            todo = self._pages_to_ocr(pages, len(items))
            if not todo:
                continue
            row_lines: list[dict] = []
            empty: list[int] = []
            page = todo[0]
            try:
                doc = M.open_pdf(ref_source(items[0])) if is_pdf else None
                try:
                    for page in todo:
                        entry = items[page]
                        if doc is not None:
                            img = M.render_pdf_page(doc, page, dpi=self.cfg.dpi)
                        else:
                            img = M.open_image(ref_source(entry), max_side=self.cfg.max_side)
                        if doc is not None and page == 0 and np.isnan(low[i]):  # the check render was left to OCR
                            low[i] = _low_info(img)
                        found = self.recognise(np.asarray(img))
                        sx = (entry.get("width") or img.width) / img.width
                        sy = (entry.get("height") or img.height) / img.height
                        for quad, text, score in found:
                            box = [float(quad[:, 0].min() * sx), float(quad[:, 1].min() * sy),
                                   float(quad[:, 0].max() * sx), float(quad[:, 1].max() * sy)]
                            row_lines.append({"page": page, "text": text, "score": score, "box": box})
                        body = "\n".join(t for _, t, _ in found)
                        if not body:
                            empty.append(page)
                        if body or self.cfg.ocr == "always":
                            pages[page] = body
                finally:
                    if doc is not None:
                        M.close_pdf(doc)
            except M.MediaError as exc:
                failures[i] = ("ocr_failed", f"page {page}: {exc.reason}: {exc.detail}")
                continue
            except Exception as exc:  # the OCR engine on a pathological bitmap
                failures[i] = ("ocr_failed", f"page {page}: {type(exc).__name__}: {str(exc)[:200]}")
                continue
            if len(empty) == len(todo) and not any(p.strip() for p in pages) and self.cfg.drop_unreadable:
                uri = items[0].get("uri") or "<bytes>"
                failures[i] = ("ocr_no_text", f"{uri}: OCR found no text on page(s) {','.join(map(str, todo))}")
            counts = np.array([len(p.strip()) for p in pages[: len(items)]])
            per_page[i] = float(counts.mean())
            textless[i] = float((counts < 10).mean())
            texts[i] = PAGE_SEPARATOR.join(pages[: len(items)]) if is_pdf else pages[0]
            lines_col[i] = row_lines
            prov[i] = {"engine": self._label, "dpi": float(self.cfg.dpi) if is_pdf else None, "mode": self.cfg.ocr,
                       "pages": todo, "empty_pages": empty}
            if row_lines:
                conf[i] = float(np.mean([ln["score"] for ln in row_lines]))
        table = set_column(table, "text", pa.array(texts, pa.string()))
        table = set_column(table, "ocr_lines", pa.array(lines_col, OCR_COLUMNS["ocr_lines"]))
        table = set_column(table, "ocr", pa.array(prov, OCR_PROVENANCE_TYPE))
        table = set_column(table, "score_ocr_confidence", pa.array(conf, mask=np.isnan(conf)))
        table = set_column(table, "score_text_chars_per_page", pa.array(per_page, mask=np.isnan(per_page)))
        table = set_column(table, "score_textless_pages", pa.array(textless, mask=np.isnan(textless)))
        if "score_low_info" in table.column_names:
            table = set_column(table, "score_low_info", pa.array(low, mask=np.isnan(low)))
        return drop_rows(table, failures, self.stage)


def _low_info(img) -> float:
    """The document analyzer's blank-page score of a page, from the OCR render reduced to its check size (256 px)."""
    from curation.filters.common import low_info_score

    grey = img.convert("L")
    grey.thumbnail((256, 256))
    return low_info_score(np.asarray(grey))


def ocr_summary(row: dict) -> str:
    """One line describing a row's OCR provenance (for notebooks and reports)."""
    p = row.get("ocr")
    if not p:
        return "no OCR"
    return json.dumps({k: p[k] for k in ("engine", "mode", "pages", "empty_pages") if k in p})


def char_error_rate(hypothesis: str, reference: str, *, ignore_space: bool = False) -> float:
    """Levenshtein distance over characters divided by the reference length (0 = identical).

    Whitespace runs are collapsed to one space first (line breaks and layout
    differ between an OCR and a text layer); ``ignore_space`` drops spaces
    altogether (recognisers often merge words). One numpy row per reference
    character: the insertion chain is a running minimum.
    """
    import re

    def norm(s: str) -> str:
        s = re.sub(r"\s+", " ", s).strip()
        return s.replace(" ", "") if ignore_space else s

    hyp, ref = norm(hypothesis), norm(reference)
    if not ref:
        return 0.0 if not hyp else 1.0
    h = np.frombuffer(hyp.encode("utf-32-le"), dtype=np.uint32)
    prev = np.arange(h.size + 1, dtype=np.int64)
    idx = np.arange(h.size + 1, dtype=np.int64)
    for i, ch in enumerate(np.frombuffer(ref.encode("utf-32-le"), dtype=np.uint32), start=1):
        cur = np.empty_like(prev)
        cur[0] = i
        cur[1:] = np.minimum(prev[1:] + 1, prev[:-1] + (h != ch))
        cur = np.minimum.accumulate(cur - idx) + idx  # insertions: cur[j] = min(cur[j], cur[j-1] + 1)
        prev = cur
    return float(prev[-1]) / len(ref)
