"""Model operators by recipe section: one line per operator, imported only when a recipe uses it.

Each value is ``"module.path:ClassName"`` naming an :class:`curation.operators.Operator`
subclass that declares ``columns``, ``stage`` and its resources (``num_cpus``,
``num_gpus``, ``batch_size``, ``concurrency``). Adding a model operator is one
module plus one line here.
"""
from __future__ import annotations

import importlib

ENRICHERS: dict[str, str] = {
    "embed": "curation.enrich.clip:ImageEmbedder",
    "clip_score": "curation.enrich.clip:ClipScore",
    "aesthetic": "curation.enrich.heads:AestheticScore",
    "nsfw": "curation.enrich.heads:NsfwScore",
    "language": "curation.enrich.language:LanguageId",
}


def enricher_class(section: str) -> type:
    """The operator class registered for a recipe section (imports its module on first use)."""
    try:
        target = ENRICHERS[section]
    except KeyError:
        raise KeyError(f"no model operator registered for {section!r} (known: {', '.join(sorted(ENRICHERS))})") from None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
