"""Driver-side checks of the recipe's model sections, and what the manifest records about their thresholds."""
from __future__ import annotations

from typing import Any, Mapping

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
    """``manifest.json`` ``extra.enrich``: per section its operator, score columns and thresholds.

    Each threshold is ``{key, column, op, value}``: ``key`` is the ledger reason
    of the rows it drops, ``op`` the keep condition (``>=``: rows below
    ``value`` were dropped); a cutoff resolved per source (a top fraction)
    also names its ``source``.
    """
    out: dict[str, Any] = {}
    for name, cfg in recipe.enrich.items():
        cls = enricher_class(name)
        thresholds = list(cls.thresholds(cfg))
        for src, value in sorted(cutoffs.get(cls.__name__, {}).items()):
            thresholds.append({"key": f"{name}_top_fraction", "column": getattr(cls, "SCORE", ""), "op": ">=",
                               "value": value, "source": src})
        out[name] = {"operator": cls.__name__, "columns": sorted(cls.columns), "thresholds": thresholds}
    return out


def enrich_checks(recipe: Any, source: str, extra_enrich: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The numeric thresholds the model sections set on one source, as ``threshold_checks`` rows.

    ``{section, key, column, op, value}`` with ``key`` the ledger reason (stage
    ``filter``); per-source cutoffs (top fractions) come from the manifest's
    ``extra.enrich`` record when given. For histograms (``Manifest.hist``).
    """
    src = next((s for s in recipe.sources if s.name == source), None)
    if src is None:
        return []
    out = []
    for name, cfg in recipe.enrich.items():
        cls = enricher_class(name)
        if not cls(cfg, recipe).applies(src):
            continue
        rows = list(cls.thresholds(cfg))
        recorded = ((extra_enrich or {}).get(name) or {}).get("thresholds") or []
        rows += [t for t in recorded if t.get("source") == source]
        for t in rows:
            if t.get("op") in (">=", "<=", ">", "<") and t.get("value") is not None:
                out.append({"section": f"enrich.{name}", "key": t["key"], "column": t["column"], "op": t["op"],
                            "value": float(t["value"])})
    return out
