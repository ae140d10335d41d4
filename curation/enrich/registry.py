"""Model operators by recipe section: one line per operator, imported only when a recipe uses it.

Each value is ``"module.path:ClassName"`` naming a :class:`curation.enrich.base.Enricher`
(an :class:`curation.operators.Operator`) that declares ``columns``, ``stage``,
``Config`` (the pydantic model of its section) and its resources (``num_cpus``,
``num_gpus``, ``batch_size``, ``concurrency``). A recipe configures it as
``enrich: {<name>: {...}}``; operators run in the order of this mapping, after
the filters, dedup signatures and token counts (which read the chain's shared
decode in the first CPU stage). Adding a model operator is one module plus one
line here.
"""
from __future__ import annotations

import importlib

ENRICHERS: dict[str, str] = {
    # language of texts and captions (packaged model) and a filter on it: first, so it is cheap to drop early
    "language": "curation.enrich.language:LanguageId",
    # image (and caption) embeddings from a CLIP or SigLIP model: emb_image, score_clip
    "embed": "curation.enrich.clip:ImageEmbedder",
    # DataComp's clip_score filter over score_clip: a threshold or a top fraction per source
    "clip_score": "curation.enrich.clip:ClipScoreFilter",
    # LAION-style heads over emb_image
    "aesthetic": "curation.enrich.heads:AestheticScore",
    "nsfw": "curation.enrich.heads:NsfwScore",
    # OCR of scanned pages (RapidOCR, PP-OCRv4): configured by the top-level `document:` section, run
    # between the document analyzer and filter (curation.filters.ocr_operators)
    "ocr": "curation.enrich.ocr:PageOcr",
}


def enricher_class(section: str) -> type:
    """The operator class registered for a recipe section (imports its module on first use)."""
    try:
        target = ENRICHERS[section]
    except KeyError:
        raise KeyError(f"no model operator registered for {section!r} (known: {', '.join(sorted(ENRICHERS))})") from None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
