"""Requested against achieved shares: the provenance dict, a text table and a bar chart.

The dict goes into manifest.json as ``extra["mixture"]``; `smolcurate inspect`
prints its ``shares`` and :func:`plot_shares` draws them, from the manifest alone.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from curation.mixing.plan import MixturePlan, describe_input, level_counts
from manifests.fsutil import canonical_hash

if TYPE_CHECKING:  # pragma: no cover
    import matplotlib.figure

PROVENANCE_KIND = "smolcurate-mixture"
PROVENANCE_VERSION = 1


def _share(part: float, whole: float) -> float | None:
    return float(part / whole) if whole > 0 else None


def shares_dict(plan: MixturePlan) -> dict[str, dict[str, dict[str, Any]]]:
    """{level: {name: {requested_samples, requested_tokens, achieved_samples, achieved_tokens, samples, tokens}}}."""
    cfg = plan.config
    total_samples = plan.samples
    total_tokens = plan.tokens
    levels = ["source", "modality"] + (["category"] if plan.scan.category_names is not None else [])

    def row(req: float | None, n_samples: float, n_tokens: float | None) -> dict[str, Any]:
        return {
            "requested_samples": req if (req is not None and cfg.by == "samples") else None,
            "requested_tokens": req if (req is not None and cfg.by == "tokens") else None,
            "achieved_samples": _share(n_samples, total_samples),
            "achieved_tokens": _share(n_tokens, total_tokens) if n_tokens is not None and total_tokens else None,
            "samples": int(n_samples),
            "tokens": int(n_tokens) if n_tokens is not None else None,
        }

    out: dict[str, dict[str, dict[str, Any]]] = {}
    for level in levels:
        names, samples, tokens = level_counts(plan, level)
        requested = cfg.shares if level == cfg.group_level else {}
        rows: dict[str, dict[str, Any]] = {}
        for i, name in enumerate(names):
            if samples[i] > 0 or name in requested:
                rows[name] = row(requested.get(name), samples[i], tokens[i] if tokens is not None else None)
        for name in requested:  # a requested group with no rows still shows, at 0
            rows.setdefault(name, row(requested[name], 0, 0 if tokens is not None else None))
        out[level] = rows
    return out


def provenance(plan: MixturePlan, shard_rows: int | None = None) -> dict[str, Any]:
    """The self-describing ``extra["mixture"]`` record (see docs/mixing.md for every key)."""
    cfg = plan.config
    scan = plan.scan
    config = cfg.model_dump(mode="json", exclude_none=True)
    excluded_sources = sorted(n for i, n in enumerate(scan.source_names) if not scan.source_in_mixture[i])
    return {
        "kind": PROVENANCE_KIND,
        "version": PROVENANCE_VERSION,
        "seed": cfg.seed,
        "by": cfg.by,
        "strategy": cfg.strategy,
        "group_by": cfg.group_level,
        "preset": cfg.preset,
        "config": config,
        "config_hash": canonical_hash(config),
        "total": {
            "requested": cfg.total,
            "requested_unit": cfg.unit_of_total,
            "resolved": plan.total,
            "resolved_unit": plan.unit,
            "samples": plan.samples,
            "tokens": plan.tokens,
            "rows": plan.rows_selected,
        },
        "max_epochs": cfg.max_epochs,
        "allow_shortfall": cfg.allow_shortfall,
        "inputs": [describe_input(item) for item in plan.inputs],
        "groups": [
            {
                "name": g.name,
                "share": g.share,
                "unit": plan.unit,
                "target": g.target,
                "achieved": g.achieved,
                "available": g.mass,
                "capacity": g.capacity,
                "kept": g.kept_mass,
                "shortfall": g.shortfall,
                "rows_available": g.rows,
                "rows_selected": g.rows_selected,
                "samples": g.samples,
                "max_repeat": g.max_repeat,
            }
            for g in plan.groups
        ],
        "shares": shares_dict(plan),
        "rules": [
            {**rule.model_dump(mode="json", exclude_none=True), "rows_matched": n}
            for rule, n in zip(cfg.all_rules(), scan.rule_rows)
        ],
        "excluded": {
            "rows": scan.excluded_rows,
            "sources": excluded_sources,
            "rows_without_category": scan.unassigned_rows,
        },
        "order": {"shuffle": "global", "seed": cfg.seed, "shard_rows": shard_rows},
    }


def _mixture_of(obj: Any) -> dict[str, Any]:
    """Accept a Manifest, a manifest path, a manifest.json dict, the mixture dict, or a MixtureResult."""
    if hasattr(obj, "provenance") and isinstance(obj.provenance, dict):
        return obj.provenance
    if isinstance(obj, dict):
        if obj.get("kind") == PROVENANCE_KIND:
            return obj
        if "extra" in obj and "mixture" in obj["extra"]:
            return obj["extra"]["mixture"]
        raise ValueError("this dict is not a mixture record nor a manifest.json of a mixture")
    if not hasattr(obj, "info"):
        from manifests.reader import open_manifest

        obj = open_manifest(obj)
    mix = obj.info.get("extra", {}).get("mixture")
    if mix is None:
        raise ValueError(f"{getattr(obj, 'path', obj)} is not a mixture: its manifest.json has no extra.mixture")
    return mix


def format_shares(obj: Any) -> str:
    """Requested against achieved shares as a plain-text table, per source, modality and category."""
    mix = _mixture_of(obj)
    tot = mix["total"]
    lines = [
        f"mixture by {mix['by']}"
        + (f" (strategy {mix['strategy']})" if mix.get("strategy") else "")
        + f", seed {mix['seed']}: {tot['rows']:,} rows, {tot['samples']:,} samples"
        + (f", {tot['tokens']:,} tokens" if tot.get("tokens") is not None else "")
    ]
    header = f"  {'':<24} {'req':>7} {'samples':>8} {'tokens':>8}   {'n samples':>12} {'n tokens':>14}"
    for level, rows in mix["shares"].items():
        lines += ["", f"by {level}:" + (" (requested)" if level == mix["group_by"] else ""), header]
        for name, row in rows.items():
            req = row.get(f"requested_{mix['by']}")
            cells = [
                "-" if req is None else f"{req:.1%}",
                "-" if row["achieved_samples"] is None else f"{row['achieved_samples']:.1%}",
                "-" if row["achieved_tokens"] is None else f"{row['achieved_tokens']:.1%}",
            ]
            ntok = "-" if row["tokens"] is None else f"{row['tokens']:,}"
            lines.append(f"  {name:<24} {cells[0]:>7} {cells[1]:>8} {cells[2]:>8}   {row['samples']:>12,} {ntok:>14}")
    short = [g for g in mix["groups"] if g["shortfall"] > 0]
    for g in short:
        lines.append(f"shortfall: {g['name']} got {g['achieved']:,.0f} of {g['target']:,.0f} {g['unit']} (allow_shortfall)")
    return "\n".join(lines)


def plot_shares(obj: Any, level: str | None = None, ax: Any = None) -> "matplotlib.figure.Figure":
    """Bar chart of requested against achieved shares (in samples and, when known, tokens) for one level.

    `obj` is a mixture manifest (or its path); `level` defaults to the level the
    shares were requested at (source, modality or category).
    """
    mix = _mixture_of(obj)
    if ax is None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(mix["shares"].get(level or mix["group_by"], {})) + 2), 3.6))
    else:
        fig = ax.figure
    level = level or mix["group_by"]
    if level not in mix["shares"]:
        raise ValueError(f"level must be one of {sorted(mix['shares'])}, got {level!r}")
    rows = mix["shares"][level]
    names = list(rows)
    requested = [rows[n].get(f"requested_{mix['by']}") for n in names]
    # a level the shares were not requested at has no requested bars: no legend entry for them either
    series = [(f"requested ({mix['by']})", requested)] if any(v is not None for v in requested) else []
    series.append(("achieved samples", [rows[n]["achieved_samples"] for n in names]))
    if any(rows[n]["achieved_tokens"] is not None for n in names):
        series.append(("achieved tokens", [rows[n]["achieved_tokens"] for n in names]))
    x = np.arange(len(names))
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series):
        vals = [np.nan if v is None else 100 * v for v in values]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, label=label)
    ax.set_xticks(x, names, rotation=30 if len(names) > 5 else 0, ha="right" if len(names) > 5 else "center")
    ax.set_ylabel("share (%)")
    ax.set_title(f"mixture shares by {level}: requested vs achieved")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig
