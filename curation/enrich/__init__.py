"""Model-based curation operators (CLIP/SigLIP scores and embeddings, heads over embeddings, language id).

Each operator is a :class:`curation.operators.Operator` with declared resources,
so the Ray engine runs it as its own stage (own actor pool, a GPU when there is
one) and the local engine runs it in-process. The recipe section name selects
the operator through :data:`curation.enrich.registry.ENRICHERS`.
"""
from __future__ import annotations

from curation.enrich.registry import ENRICHERS, enricher_class

__all__ = ["ENRICHERS", "enricher_class"]
