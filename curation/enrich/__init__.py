"""Model-based curation operators (CLIP/SigLIP scores and embeddings, heads over embeddings, language id).

Each operator is a :class:`curation.operators.Operator` with declared resources,
so the Ray engine runs it as its own stage (own actor pool, a GPU when there is
one) and the local engine runs it in-process. The recipe section name selects
the operator through :data:`curation.enrich.registry.ENRICHERS`.
"""
from __future__ import annotations

from typing import Any

from curation.enrich.registry import ENRICHERS, enricher_class

__all__ = ["ENRICHERS", "enricher_class", "enrich_operators"]


def enrich_operators(recipe: Any, index: int, shared: Any = None) -> list[Any]:
    """The model operators of the recipe's ``enrich:`` sections that apply to source ``index``, in registry order.

    ``shared``: the chain's shared decode (media.decoded.SharedDecode), which operators that read
    pixels use through the CPU-stage operators they put before themselves (``Enricher.before``).
    """
    src = recipe.sources[index]
    ops = []
    for name, cfg in recipe.enrich.items():
        op = enricher_class(name)(cfg, recipe)
        if op.applies(src):
            ops.extend(op.before(shared))
            ops.append(op)
    return ops
