"""Score histograms of kept and dropped rows with the recipe's threshold lines (``Manifest.hist``)."""
from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING, Any

import numpy as np

from manifests.cards import KIND_OF_MODALITY, recipe_checks

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from manifests.reader import Manifest

KEPT_COLOR = "#4c72b0"
DROP_COLOR = "#dd8452"
OTHER_COLOR = "#b0b0b0"


def thresholded_scores(m: "Manifest") -> list[str]:
    """Score columns the recipe sets an active threshold on, in schema order."""
    cols = {c["column"] for checks in recipe_checks(m).values() for c in checks}
    return [n for n in m.schema.names if n in cols]


def _values(m: "Manifest", score: str, by: str, reasons: set[str]) -> dict[str, list[np.ndarray]]:
    """Per group: [kept values, values of rows this score's thresholds dropped, values of rows dropped otherwise]."""
    import polars as pl

    out: dict[str, list[np.ndarray]] = {}
    empty = np.zeros(0)
    if score in m.schema.names and by in m.schema.names:
        df = m.lazy().select([by, score]).drop_nulls(score).collect()
        for (g,), part in df.group_by(by, maintain_order=True):
            out.setdefault(str(g), [empty, empty, empty])[0] = part[score].cast(pl.Float64).to_numpy()
    led = m.ledger()
    if score in led.column_names and by in led.column_names:
        df = pl.from_arrow(led.select([by, "stage", "reason", score])).drop_nulls(score)
        here = (pl.col("stage") == "filter") & pl.col("reason").is_in(sorted(reasons))
        for (g,), part in df.group_by(by, maintain_order=True):
            slot = out.setdefault(str(g), [empty, empty, empty])
            slot[1] = part.filter(here)[score].cast(pl.Float64).to_numpy()
            slot[2] = part.filter(~here)[score].cast(pl.Float64).to_numpy()
    return out


def dropping_scores(m: "Manifest") -> list[str]:
    """Thresholded score columns whose threshold dropped at least one row."""
    reasons = {(d["source"], d["reason"]) for d in m.info.get("drops", []) if d["stage"] == "filter"}
    cols = {c["column"] for src, checks in recipe_checks(m).items() for c in checks if (src, c["key"]) in reasons}
    return [n for n in m.schema.names if n in cols]


def _group_checks(m: "Manifest", by: str) -> dict[str, list[dict[str, Any]]]:
    per_source = recipe_checks(m)
    if by == "source":
        return per_source
    if by == "modality":
        kinds = {}
        recipe = m.info.get("recipe") or {}
        for src in recipe.get("sources") or []:
            kinds.setdefault(src.get("kind"), per_source.get(src.get("name"), []))
        return {mod: kinds.get(kind, []) for mod, kind in KIND_OF_MODALITY.items()}
    return {}


def hist(m: "Manifest", score: str | list[str] | None = None, *, by: str = "source", bins: int = 30) -> "Figure":
    """One panel per (score, group) holding data: kept and dropped rows stacked, thresholds as dashed lines.

    ``score=None`` draws every score the recipe thresholds. The figure is not registered with pyplot,
    so a notebook shows it once.
    """
    from matplotlib.figure import Figure

    if score is None:
        scores = dropping_scores(m) or thresholded_scores(m)
    else:
        scores = [score] if isinstance(score, str) else list(score)
    checks = _group_checks(m, by)
    panels = []
    for sc in scores:
        keys = {c["key"] for cs in checks.values() for c in cs if c["column"] == sc}
        for g, (k, d, other) in sorted(_values(m, sc, by, keys).items()):
            if (d.size if score is None else k.size + d.size + other.size):  # default: panels where it dropped rows
                lines = [c for c in checks.get(g, []) if c["column"] == sc]
                panels.append((sc, g, k, d, other, lines))
    ncols = min(3, max(1, len(panels)))
    nrows = max(1, -(-len(panels) // ncols))
    fig = Figure(figsize=(4.2 * ncols, 2.6 * nrows))
    if not panels:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, f"no values of {', '.join(scores) or 'any thresholded score'}", ha="center", va="center")
        ax.set_axis_off()
        return fig
    for i, (sc, g, k, d, other, lines) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        allv = np.concatenate([k, d, other])
        allv = allv[np.isfinite(allv)]
        lo, hi = (float(allv.min()), float(allv.max())) if allv.size else (0.0, 1.0)
        for c in lines:
            lo, hi = min(lo, float(c["value"])), max(hi, float(c["value"]))
        if hi <= lo:
            hi = lo + 1.0
        edges = np.linspace(lo, hi, bins + 1)
        ax.hist([k, d, other], bins=edges, stacked=True, color=[KEPT_COLOR, DROP_COLOR, OTHER_COLOR],
                label=[f"kept ({k.size})", f"dropped by this threshold ({d.size})", f"dropped for another reason ({other.size})"])
        for c in lines:
            sign = {">=": "\u2265", "<=": "\u2264"}.get(c["op"], c["op"])
            gate = f" (texts \u2265 {c['min_words']} words)" if c.get("min_words") else ""
            ax.axvline(float(c["value"]), color="#c44e52", linestyle="--", linewidth=1.4,
                       label=f"{c['key']} {sign} {c['value']:g}{gate}")
        ax.set_title(f"{sc[6:] if sc.startswith('score_') else sc} · {g}", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    return fig


def figure_png_uri(fig: "Figure", dpi: int = 80) -> str:
    """A figure as an inline PNG ``data:`` URI (for the self-contained report)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
