"""Human views of a manifest: the inspect summary, an HTML repr with thumbnails, and `show()`."""
from __future__ import annotations

import base64
import html
import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from manifests.reader import Manifest

THUMB = 128


def summarize(m: "Manifest") -> dict[str, Any]:
    """Counts by source and modality, drops by stage and reason, token totals, shards (inspect --json)."""
    info = m.info
    drops_by_reason: dict[str, dict[str, int]] = {}
    for d in info["drops"]:
        key = f"{d['stage']}/{d['reason']}"
        drops_by_reason.setdefault(d["source"], {})
        drops_by_reason[d["source"]][key] = drops_by_reason[d["source"]].get(key, 0) + d["count"]
    out: dict[str, Any] = {
        "path": str(m.path),
        "format_version": info["format_version"],
        "tool_version": info.get("tool_version"),
        "created": info.get("created"),
        "recipe_hash": info.get("recipe_hash"),
        "rows": info["totals"]["rows"],
        "dropped": info["totals"]["dropped"],
        "read": info["totals"].get("read"),
        "by_modality": info["totals"]["by_modality"],
        "sources": {
            name: {
                **{k: v for k, v in src.items() if k in ("read", "kept", "dropped")},
                "by_modality": info["totals"]["by_source_modality"].get(name, {}),
                "drops": drops_by_reason.get(name, {}),
            }
            for name, src in info["sources"].items()
        },
        "drops": info["drops"],
        "tokens": info["totals"].get("tokens", {}),
        "shards": [{"path": s["path"], "rows": s["rows"], "bytes": s["bytes"]} for s in info["shards"]],
        "ledger_shards": len(info["ledger"]),
    }
    dups = {name: counts.get("dedup/duplicate", 0) for name, counts in drops_by_reason.items()}
    if any(dups.values()):
        out["duplicates"] = dups
    if "mixture" in info.get("extra", {}):
        out["mixture"] = info["extra"]["mixture"]
    return out


def format_summary(s: dict[str, Any]) -> str:
    """The plain-text report of `smolcurate inspect`."""
    lines = [
        f"manifest {s['path']}",
        f"  format v{s['format_version']}, smolcurate {s['tool_version']}, created {s['created']}",
        f"  rows kept {s['rows']}, dropped {s['dropped']}, read {s['read']}, shards {len(s['shards'])}",
    ]
    if s["by_modality"]:
        lines.append("  by modality: " + ", ".join(f"{k} {v}" for k, v in s["by_modality"].items()))
    if s["tokens"]:
        lines.append("  tokens: " + ", ".join(f"{k} {v:,}" for k, v in s["tokens"].items()))
    lines.append("")
    header = f"  {'source':<20} {'read':>8} {'kept':>8} {'dropped':>8}  drops by stage/reason"
    lines += [header, "  " + "-" * (len(header) + 10)]
    for name, src in s["sources"].items():
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(src["drops"].items())) or "-"
        lines.append(f"  {name:<20} {src.get('read', 0):>8} {src.get('kept', 0):>8} {src.get('dropped', 0):>8}  {reasons}")
    mix = s.get("mixture")
    if mix:
        lines += ["", "  mixture shares (requested -> achieved):"]
        lines += ["    " + line for line in _format_mixture(mix)]
    return "\n".join(lines)


def _format_mixture(mix: dict[str, Any]) -> list[str]:
    """Requested vs achieved shares, whatever groups (source, modality) and units (samples, tokens) the mixture recorded."""
    out = []
    shares = mix.get("shares", {})
    for group, rows in shares.items():
        out.append(f"by {group}:")
        for name, row in rows.items():
            parts = []
            for unit in ("samples", "tokens"):
                req = row.get(f"requested_{unit}")
                ach = row.get(f"achieved_{unit}")
                if ach is None:
                    continue
                req_s = "-" if req is None else f"{req:.1%}"
                parts.append(f"{unit} {req_s} -> {ach:.1%}")
            out.append(f"  {name:<18} " + "; ".join(parts))
    return out


def _thumbnail_b64(ref: dict[str, Any]) -> str | None:
    """A small PNG of one media reference (image, document page, or a video's middle frame), or None."""
    try:
        from media.refs import thumbnail

        img = thumbnail(ref, THUMB)
    except Exception:  # a view never fails because one file is unreadable
        return None
    if img is None:
        return None
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def rows_html(rows: list[dict[str, Any]]) -> str:
    """A thumbnail grid: one card per row with its first media item, source, modality and text head."""
    cards = []
    for row in rows:
        media = row.get("media") or []
        img = _thumbnail_b64(media[0]) if media else None
        pic = (
            f'<img src="data:image/png;base64,{img}" style="max-width:{THUMB}px;max-height:{THUMB}px"/>'
            if img
            else f'<div style="width:{THUMB}px;height:40px;color:#888">{html.escape(row["modality"])}</div>'
        )
        text = (row.get("text") or "")[:120]
        scores = ", ".join(
            f"{k[6:]}={v:.3g}" for k, v in row.items() if k.startswith("score_") and isinstance(v, (int, float))
        )
        cards.append(
            '<div style="display:inline-block;vertical-align:top;margin:4px;padding:4px;width:'
            f'{THUMB + 40}px;border:1px solid #ddd;font-size:11px">{pic}<br/>'
            f"<b>{html.escape(row['source'])}</b> · {html.escape(row['modality'])}<br/>"
            f"<code>{html.escape(row['id'])}</code><br/>{html.escape(text)}"
            f"{'<br/><i>' + html.escape(scores) + '</i>' if scores else ''}</div>"
        )
    return "<div>" + "".join(cards) + "</div>"


def manifest_html(m: "Manifest", n_thumbs: int = 12) -> str:
    """Counts, schema and a thumbnail grid of visual rows, for notebooks."""
    s = summarize(m)
    src_rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{v.get('read', 0)}</td><td>{v.get('kept', 0)}</td>"
        f"<td>{v.get('dropped', 0)}</td><td>{html.escape(', '.join(f'{k} {c}' for k, c in v['drops'].items()))}</td></tr>"
        for name, v in s["sources"].items()
    )
    schema = "".join(f"<tr><td>{html.escape(f.name)}</td><td>{html.escape(str(f.type))[:80]}</td></tr>" for f in m.schema)
    rows = _visual_rows(m, n_thumbs)
    return (
        f"<div><h4>Manifest {html.escape(str(m.path))}</h4>"
        f"<p>{s['rows']} rows kept, {s['dropped']} dropped, {len(s['shards'])} shards; "
        f"by modality: {html.escape(str(s['by_modality']))}</p>"
        "<table><tr><th>source</th><th>read</th><th>kept</th><th>dropped</th><th>drops</th></tr>"
        f"{src_rows}</table>"
        f"<details><summary>schema ({len(m.schema)} columns)</summary><table>{schema}</table></details>"
        f"{rows_html(rows)}</div>"
    )


def _visual_rows(m: "Manifest", n: int) -> list[dict[str, Any]]:
    import polars as pl

    if m.num_rows == 0:
        return []
    lf = m.lazy().filter(pl.col("modality").is_in(["image", "image_text", "document", "video"]))
    return lf.head(n).collect().to_dicts()


class RowsView:
    """What `Manifest.show()` returns: renders as a thumbnail grid in notebooks, as text elsewhere."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def _repr_html_(self) -> str:
        return rows_html(self.rows)

    def __repr__(self) -> str:
        return "\n".join(f"{r['id']}  {r['source']:<12} {r['modality']:<10} {(r.get('text') or '')[:60]!r}" for r in self.rows)


def show(m: "Manifest", n: int = 12, where: Any = None) -> RowsView:
    """Rows matching a polars expression (e.g. ``pl.col('score_blur') < 50``), as a thumbnail grid."""
    lf = m.lazy()
    if where is not None:
        lf = lf.filter(where)
    return RowsView(lf.head(n).collect().to_dicts())
