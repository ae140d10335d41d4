"""``smolcurate report MANIFEST --out report.html``: one self-contained HTML file to send to a colleague.

Everything is inline: styles, JPEG thumbnails and PNG histograms as ``data:`` URIs, no script, no
server, no network. Sections: counts and shares; drops by reason with example cards; what loosening
each threshold would bring back; score histograms with the recipe's thresholds; duplicate clusters;
token budgets; for a mixture, requested against achieved shares.
"""
from __future__ import annotations

import html
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from manifests.cards import CSS, card_html, recipe_checks
from manifests.fsutil import atomic_write

if TYPE_CHECKING:  # pragma: no cover
    from manifests.reader import Manifest


def _pct(a: float, b: float) -> str:
    return f"{100.0 * a / b:.1f}%" if b else "-"


def _table(head: list[str], rows: list[list[Any]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, _Raw) else html.escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table class='sc-t'><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


class _Raw(str):
    """A table cell that is already HTML."""


def _counts(m: "Manifest") -> str:
    info = m.info
    kept_total = info["totals"]["rows"]
    rows = []
    for name, s in info["sources"].items():
        rows.append([name, f"{s.get('read', 0):,}", f"{s.get('kept', 0):,}", f"{s.get('dropped', 0):,}",
                     _pct(s.get("kept", 0), kept_total), _pct(s.get("dropped", 0), s.get("read", 0))])
    rows.append([_Raw("<b>total</b>"), f"{info['totals'].get('read', 0):,}", f"{kept_total:,}",
                 f"{info['totals']['dropped']:,}", "100%" if kept_total else "-",
                 _pct(info["totals"]["dropped"], info["totals"].get("read") or 0)])
    by_mod = info["totals"].get("by_modality", {})
    mods = _table(["modality", "kept", "share"], [[k, f"{v:,}", _pct(v, kept_total)] for k, v in by_mod.items()])
    return ("<h2 id='counts'>Counts and shares</h2>"
            + _table(["source", "read", "kept", "dropped", "share of kept", "drop rate"], rows) + "<p></p>" + mods)


def _drops(m: "Manifest", checks: dict, examples: int) -> str:
    import polars as pl

    drops = m.info.get("drops", [])
    if not drops:
        return "<h2 id='drops'>Drops by reason</h2><p>Nothing was dropped.</p>"
    read = {n: s.get("read", 0) for n, s in m.info["sources"].items()}
    led = pl.from_arrow(m.ledger())
    from manifests.views import _names_of_clusters

    names = _names_of_clusters(m, led.filter(pl.col("stage") == "dedup").select(["stage", "dup_cluster"]).to_dicts()) \
        if "dup_cluster" in led.columns else {}
    blocks = []
    for d in sorted(drops, key=lambda d: (d["source"], -d["count"], d["stage"], d["reason"])):
        rows = led.filter((pl.col("source") == d["source"]) & (pl.col("stage") == d["stage"]) & (pl.col("reason") == d["reason"]))
        cards = "".join(card_html(r, checks.get(d["source"], []), names=names) for r in rows.head(examples).to_dicts())
        blocks.append(
            f"<div class='sc-reason'><h3>{html.escape(d['source'])}: {html.escape(d['stage'])}/{html.escape(d['reason'])} "
            f"&#8212; {d['count']:,} rows ({_pct(d['count'], read.get(d['source'], 0))} of the source)</h3>"
            f"<div class='sc-grid'>{cards}</div></div>")
    summary = _table(["source", "stage", "reason", "rows", "share of source"],
                     [[d["source"], d["stage"], d["reason"], f"{d['count']:,}", _pct(d["count"], read.get(d["source"], 0))]
                      for d in sorted(drops, key=lambda d: (d["source"], -d["count"]))])
    return ("<h2 id='drops'>Drops by reason</h2>" + summary + "<p>Examples of each reason, next to their pictures "
            "(the failing score is highlighted):</p><div class='sc-reasons'>" + "".join(blocks) + "</div>")


def _loosening(m: "Manifest", examples: int) -> str:
    try:
        from manifests.loosen import loosening

        view = loosening(m, examples=examples)
    except ImportError:  # pragma: no cover - manifests without the curation package
        return ""
    if not len(view):
        return ""
    return "<h2 id='loosen'>What loosening a threshold would bring back</h2>" + view._repr_html_().replace(CSS, "")


def _hists(m: "Manifest") -> str:
    from manifests.plots import dropping_scores, figure_png_uri, hist, thresholded_scores

    scores = dropping_scores(m) or thresholded_scores(m)
    if not scores:
        return ""
    fig = hist(m)
    return ("<h2 id='scores'>Score histograms</h2><p>Kept rows, rows this threshold dropped and rows dropped for "
            "another reason, stacked; dashed lines are the recipe's thresholds.</p>"
            f"<img class='sc-plot' src='{figure_png_uri(fig)}' alt='score histograms'/>")


def _clusters(m: "Manifest") -> str:
    from manifests.views import clusters

    view = clusters(m, n=12)
    if not view.total:
        return ""
    return "<h2 id='dups'>Duplicate clusters</h2>" + view._repr_html_().replace(CSS, "")


def _tokens(m: "Manifest") -> str:
    cols = [c for c in ("tokens", "tokens_visual", "tokens_text") if c in m.schema.names]
    if not cols or m.num_rows == 0:
        return ""
    import polars as pl

    df = m.lazy().group_by("source").agg([pl.len().alias("rows"), *[pl.col(c).sum().alias(c) for c in cols],
                                          pl.col(cols[0]).mean().alias("mean")]).sort("source").collect()
    has_repeat = "repeat" in m.schema.names
    rows = [[r["source"], f"{r['rows']:,}", *[f"{int(r[c] or 0):,}" for c in cols], f"{(r['mean'] or 0):,.0f}"] for r in df.to_dicts()]
    tot = m.info["totals"].get("tokens", {})
    rows.append([_Raw("<b>total</b>"), f"{m.num_rows:,}", *[f"{int(tot.get(c, 0)):,}" for c in cols], ""])
    note = "<p>Counts are per row; a mixture's <code>repeat</code> multiplies them in training.</p>" if has_repeat else ""
    return "<h2 id='tokens'>Token budgets</h2>" + _table(["source", "rows", *cols, f"mean {cols[0]}/row"], rows) + note


def _mixture(m: "Manifest") -> str:
    mix = (m.info.get("extra") or {}).get("mixture")
    if not mix:
        return ""
    parts = ["<h2 id='mixture'>Mixture: requested against achieved</h2>"]
    for group, rows in (mix.get("shares") or {}).items():
        body = []
        for name, row in rows.items():
            cells = [name]
            for unit in ("samples", "tokens"):
                req, ach = row.get(f"requested_{unit}"), row.get(f"achieved_{unit}")
                cells += ["-" if req is None else f"{100 * req:.1f}%", "-" if ach is None else f"{100 * ach:.1f}%"]
            body.append(cells)
        parts.append(f"<h3>by {html.escape(group)}</h3>" + _table(
            [group, "requested samples", "achieved samples", "requested tokens", "achieved tokens"], body))
    try:
        from curation.mixing import plot_shares

        from manifests.plots import figure_png_uri

        fig = plot_shares(m)
        parts.append(f"<img class='sc-plot' src='{figure_png_uri(fig)}' alt='requested vs achieved shares'/>")
        import matplotlib.pyplot as plt

        plt.close(fig)
    except Exception:  # the table above says it all; the chart is a bonus
        pass
    return "".join(parts)


def report_html(m: "Manifest", examples: int = 6) -> str:
    """The whole report as one HTML5 document."""
    checks = recipe_checks(m)
    info = m.info
    sections = [_counts(m), _drops(m, checks, examples), _loosening(m, examples), _hists(m), _clusters(m), _tokens(m), _mixture(m)]
    nav = " · ".join(f"<a href='#{a}'>{t}</a>" for a, t in (
        ("counts", "counts"), ("drops", "drops"), ("loosen", "loosening"), ("scores", "scores"), ("dups", "duplicates"),
        ("tokens", "tokens"), ("mixture", "mixture")) if f"id='{a}'" in "".join(sections))
    title = f"smolcurate report: {m.path.name}"
    head = (f"<p>{html.escape(str(m.path))}<br/>smolcurate {html.escape(str(info.get('tool_version')))}, created "
            f"{html.escape(str(info.get('created')))}, recipe {html.escape(str(info.get('recipe_hash') or '-')[:12])}, "
            f"fingerprint {html.escape(m.fingerprint()[:12])}, ledger v{m.ledger_version}</p>")
    css = CSS.replace("<style>", "").replace("</style>", "")
    extra_css = "body{font:14px sans-serif;margin:16px;color:#222}h2{border-bottom:2px solid #ddd;margin-top:28px}" \
                ".sc-plot{max-width:100%}nav{margin:8px 0}"
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'/>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'/><title>{html.escape(title)}</title>"
            f"<style>{css}{extra_css}</style></head><body><h1>{html.escape(title)}</h1>{head}<nav>{nav}</nav>"
            + "".join(sections) + "</body></html>\n")


def write_report(m: "Manifest", out: str | os.PathLike, examples: int = 6) -> Path:
    """Write the report atomically; returns its path."""
    path = Path(out)
    text = report_html(m, examples=examples)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path.resolve()
