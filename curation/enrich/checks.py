"""Driver-side checks of the recipe's model sections, and what the manifest records about their thresholds."""
from __future__ import annotations

from typing import Any, Mapping

from curation.enrich.registry import enricher_class
from manifests.errors import RecipeError


def check_enrich(recipe: Any, gpus: int) -> None:
    """Every enrich section's bad-input check, before any work starts (RecipeError naming the field)."""
    import inspect

    for name, cfg in recipe.enrich.items():
        cls = enricher_class(name)
        if "gpus" in inspect.signature(cls.check).parameters:
            cls.check(cfg, recipe, f"enrich.{name}", gpus)
        else:  # an operator whose check does not ask what the engine offers
            cls.check(cfg, recipe, f"enrich.{name}")
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


def model_fingerprints(recipe: Any) -> dict[str, str]:
    """{section: hash of its model/head files' names, sizes and mtimes}: part of the job identity.

    Replacing the weights behind an unchanged path then counts as a different job
    (no resume from chunks scored by the old weights, no "already complete").
    """
    import os

    from manifests.fsutil import canonical_hash

    out: dict[str, str] = {}
    for name, cfg in recipe.enrich.items():
        stats = []
        for field in getattr(cfg, "PATH_FIELDS", ()):
            spec = cfg.path(recipe, field)
            if spec is None:
                continue
            path = spec
            if not os.path.exists(path):
                try:
                    from curation.enrich.models import resolve_model_path

                    path = str(resolve_model_path(spec, f"enrich.{name}.{field}"))
                except RecipeError:
                    continue
            if os.path.isdir(path):
                for root, _, files in os.walk(path):
                    for f in sorted(files):
                        st = os.stat(os.path.join(root, f))
                        stats.append((os.path.relpath(os.path.join(root, f), path), st.st_size, st.st_mtime_ns))
            else:
                st = os.stat(path)
                stats.append((os.path.basename(path), st.st_size, st.st_mtime_ns))
        if stats:
            out[name] = canonical_hash(sorted(stats))
    return out
