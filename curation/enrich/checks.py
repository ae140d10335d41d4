"""Driver-side checks of the recipe's model sections, and what the manifest records about them."""
from __future__ import annotations

from typing import Any

from curation.enrich.registry import enricher_class
from manifests.errors import RecipeError


def check_enrich(recipe: Any, gpus: int) -> None:
    """Every enrich section's bad-input check, before any work starts (RecipeError naming the field)."""
    for name, cfg in recipe.enrich.items():
        enricher_class(name).check(cfg, recipe, f"enrich.{name}", gpus)
    dd = recipe.dedup_config()
    if dd is not None and dd.semantic.enabled and "embed" not in recipe.enrich:
        raise RecipeError("semantic dedup needs an enrich.embed section (it clusters its embeddings)",
                          field="dedup.semantic")


def enrich_record(recipe: Any, cutoffs: dict[str, dict[str, float]]) -> dict[str, Any]:
    """``manifest.json`` ``extra.enrich``: per section its score columns and thresholds.

    Each threshold is ``{column, op, value}`` where ``op`` is the keep condition
    (``>=``: rows below ``value`` were dropped), plus ``source`` for cutoffs
    resolved per source (a top fraction): what a histogram of the column draws.
    """
    out: dict[str, Any] = {}
    for name, cfg in recipe.enrich.items():
        cls = enricher_class(name)
        entry: dict[str, Any] = {"operator": cls.__name__, "columns": sorted(cls.columns)}
        thresholds = list(cls.thresholds(cfg)) if hasattr(cls, "thresholds") else []
        for key, per_source in cutoffs.items():
            if key == cls.__name__:
                column = getattr(cls, "SCORE", None) or (thresholds[0]["column"] if thresholds else "")
                for src, value in sorted(per_source.items()):
                    thresholds.append({"column": column or "", "op": ">=", "value": value, "source": src})
        entry["thresholds"] = thresholds
        out[name] = entry
    return out
