"""Filter operators per source kind, and the operator chain a chunk of a source runs through."""
from __future__ import annotations

from typing import Any

import pyarrow as pa

from curation.filters.decode import DecodeMedia
from curation.filters.document import DocumentAnalyzer, DocumentFilter
from curation.filters.image import ImageAnalyzer, ImageFilter
from curation.filters.text import TextQuality
from curation.filters.video import VideoAnalyzer, VideoFilter
from curation.recipe import Recipe
from media.decoded import SharedDecode

__all__ = [
    "DecodeMedia", "DocumentAnalyzer", "DocumentFilter", "ImageAnalyzer", "ImageFilter", "TextQuality", "VideoAnalyzer",
    "VideoFilter", "source_operators", "operator_columns",
]


def source_operators(recipe: Recipe, index: int) -> list[Any]:
    """The shared decode, analyzers and filters for one source, then the dedup signature and token operators.

    Every operator that reads pixels reads the one :class:`~media.decoded.SharedDecode`
    of the chain, filled by :class:`DecodeMedia` at the head of it: each input is
    read and decoded once per chunk (docs/media.md).
    """
    src = recipe.sources[index]
    f = recipe.filters
    embed = recipe.output.embed_images
    decode = getattr(recipe, "decode", None)
    shared = SharedDecode(threads=getattr(decode, "threads", None))
    if src.kind == "images":
        ops: list[Any] = [ImageAnalyzer(f.image, embed, shared), ImageFilter(f.image)]
    elif src.kind == "image_text":
        ops = [ImageAnalyzer(f.image, embed, shared), ImageFilter(f.image), TextQuality(f.image_text)]
    elif src.kind == "document":
        ops = [DocumentAnalyzer(f.document, src.dpi, shared), *ocr_operators(recipe, index, shared),
               DocumentFilter(f.document)]
    elif src.kind == "text":
        ops = [TextQuality(f.text)]
    else:
        ops = [VideoAnalyzer(f.video, shared), VideoFilter(f.video)]
    ops.extend(plugin_operators(recipe, shared))
    if recipe.enrich:  # model operators (curation/enrich) last: everything reading the shared decode stays before
        from curation.enrich import enrich_operators  # the first model stage, in the stage that decoded

        ops.extend(enrich_operators(recipe, index, shared))
    return _decode_readers_first([DecodeMedia(shared), *ops])


def _decode_readers_first(ops: list[Any]) -> list[Any]:
    """Operators that read the shared decode moved ahead of the first own-stage operator (OCR, models).

    An own-stage operator runs in its own worker pool, so a CPU stage after it
    holds no decode: media signatures placed there (after OCR, which must precede
    the document filter) would decode every input again. Relative order is kept.
    """
    first = next((k for k, op in enumerate(ops) if getattr(op, "own_stage", False)), None)
    if first is None:
        return ops
    late = [op for op in ops[first:] if getattr(op, "shared", None) is not None and not getattr(op, "own_stage", False)]
    if not late:
        return ops
    return ops[:first] + late + [op for op in ops[first:] if not any(op is m for m in late)]


def ocr_operators(recipe: Recipe, index: int, shared: SharedDecode | None = None) -> list[Any]:
    """OCR of scans (recipe ``document: {ocr: auto|always}``), between the analyzer and the filter."""
    doc = recipe.document
    if doc is None or doc.ocr == "never" or (doc.sources is not None and recipe.sources[index].name not in doc.sources):
        return []
    from curation.enrich.ocr import PageOcr

    return [PageOcr(doc, recipe, shared)]  # renders the pages it reads once (the shared decode skips them)


def plugin_operators(recipe: Recipe, shared: SharedDecode | None = None) -> list[Any]:
    """Operators other packages add to every source: dedup signatures, token counts."""
    ops: list[Any] = []
    dd = recipe.dedup_config()
    if dd is not None:
        from curation.dedup import signature_operators

        ops.extend(signature_operators(dd, shared))
    if recipe.tokens is not None:
        from curation.filters.tokens import TokenCounter

        t = recipe.tokens
        ops.append(TokenCounter(t.strategy, recipe.tokenizer_spec(), t.overrides))
    return ops


def operator_columns(ops: list[Any]) -> dict[str, pa.DataType]:
    """Extension columns declared by a chain of operators, first declaration wins."""
    cols: dict[str, pa.DataType] = {}
    for op in ops:
        for name, typ in (getattr(op, "columns", None) or {}).items():
            cols.setdefault(name, typ)
    return cols
