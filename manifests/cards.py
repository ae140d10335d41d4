"""One HTML card per row: its picture (or page/frame strip), name, the scores that matter for its kind, verdict.

Cards are what ``show()``, ``clusters()`` and the report draw. A card names the row by its file name
or container member (not its hash id), shows only the scores relevant to the row's kind with the
recipe's thresholds, highlights the one that dropped it, and carries tokens, ``repeat`` and its
duplicate cluster. Everything is inline (a ``<style>`` block and ``data:`` JPEGs), so the HTML stands alone.
"""
from __future__ import annotations

import html
import json
import os
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from manifests.thumbs import STRIP, THUMB, ocr_strip_uris, strip_uris, thumb_uri

if TYPE_CHECKING:  # pragma: no cover
    from manifests.reader import Manifest

#: scores worth showing per modality when the recipe sets no threshold on them
MODALITY_SCORES: dict[str, tuple[str, ...]] = {
    "image": ("score_min_side", "score_aspect_ratio", "score_low_info", "score_sharpness"),
    "image_text": ("score_min_side", "score_low_info", "score_chars", "score_words"),
    "document": ("score_pages", "score_text_chars_per_page", "score_textless_pages", "score_low_info"),
    "text": ("score_chars", "score_words", "score_non_alnum", "score_dup_lines", "score_top_2gram"),
    "video": ("score_duration_s", "score_fps", "score_min_side", "score_motion"),
}
KIND_OF_MODALITY = {"image": "images", "image_text": "image_text", "document": "document", "text": "text", "video": "video"}
MAX_SCORES = 6

CSS = """
<style>
.sc-grid{display:flex;flex-wrap:wrap;gap:6px;align-items:flex-start}
.sc-card{width:%(w)dpx;border:1px solid #ccc;border-radius:4px;padding:4px;font:11px/1.35 sans-serif;background:#fff;color:#222}
.sc-card.sc-drop{border-color:#d9534f;background:#fff7f7}
.sc-pic{display:block;max-width:%(t)dpx;max-height:%(t)dpx;margin:0 auto 3px auto}
.sc-strip{display:flex;gap:2px;margin-bottom:3px;flex-wrap:wrap}
.sc-strip img{max-width:%(s)dpx;max-height:%(s)dpx}
.sc-none{height:48px;display:flex;align-items:center;justify-content:center;color:#888;background:#f2f2f2;margin-bottom:3px}
.sc-name{font-weight:bold;word-break:break-all}
.sc-why{color:#b52b27;font-weight:bold}
.sc-detail{color:#7a2a27;word-break:break-word}
.sc-score{display:inline-block;margin:1px 3px 1px 0;padding:0 3px;background:#eef;border-radius:3px}
.sc-score.sc-fail{background:#d9534f;color:#fff;font-weight:bold}
.sc-meta{color:#555}
.sc-text{color:#333;font-style:italic;word-break:break-word}
.sc-cols{display:flex;gap:16px;align-items:flex-start}
.sc-reasons{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
.sc-reason{border:1px solid #e3c4c4;border-radius:4px;padding:4px 6px;background:#fffafa}
.sc-reason h3{font-size:13px;margin:2px 0 6px 0}
.sc-cols>div{flex:1}
.sc-cluster{display:flex;gap:6px;align-items:flex-start;border-bottom:1px dashed #bbb;padding:6px 0}
.sc-arrow{align-self:center;font-size:18px;color:#888}
.sc-match{color:#1d5e9e;font-weight:bold}
table.sc-t{border-collapse:collapse;font:12px sans-serif}
table.sc-t td,table.sc-t th{border:1px solid #ddd;padding:2px 6px;text-align:right}
table.sc-t td:first-child,table.sc-t th:first-child{text-align:left}
</style>
""" % {"w": THUMB + 44, "t": THUMB, "s": STRIP}

_OPS = {">=": "\u2265", "<=": "\u2264", ">": ">", "<": "<"}


def recipe_checks(m: "Manifest") -> dict[str, list[dict[str, Any]]]:
    """Per source name, the active threshold checks of its kind (empty without a curation recipe)."""
    recipe = m.info.get("recipe")
    if not isinstance(recipe, dict) or not recipe.get("sources"):
        return {}
    try:  # thresholds are curation's knowledge (its filters declare them); a bare manifest has none
        from curation.recipe import parse_recipe
        from curation.retune import threshold_checks

        rec = parse_recipe(recipe, check_paths=False)
    except Exception:
        return {}
    out = {}
    for src in rec.sources:
        try:
            out[src.name] = threshold_checks(rec, src.kind)
        except Exception:
            out[src.name] = []
        if rec.enrich:  # model operators' thresholds, top-fraction cutoffs as recorded per source (curation.enrich)
            try:
                from curation.enrich.checks import enrich_checks

                out[src.name] += enrich_checks(rec, src.name, (m.info.get("extra") or {}).get("enrich"))
            except Exception:
                pass
    return out


def row_name(row: Mapping[str, Any]) -> str:
    """The row's file name or container member (what a person recognises), else its id."""
    meta = row.get("meta")
    if isinstance(meta, str) and meta:
        try:
            meta = json.loads(meta)
        except ValueError:
            meta = None
    if isinstance(meta, dict):
        for key in ("path", "member", "file", "name"):
            if meta.get(key):
                return str(meta[key])
    for ref in row.get("media") or []:
        uri = (ref or {}).get("uri")
        if uri:
            base = str(uri).rstrip("/")
            for sep in ("#", "::", "!"):
                if sep in base:
                    container, member = base.rsplit(sep, 1)
                    return f"{os.path.basename(container)}{sep}{member}"
            name = os.path.basename(base)
            page = ref.get("page")
            return f"{name} p{int(page) + 1}" if ref.get("kind") == "page" and page is not None and len(row.get("media") or []) == 1 else name
    uri = row.get("uri")
    if uri:
        return os.path.basename(str(uri))
    text = " ".join(str(row.get("text") or "").split())
    if text:  # a text row of a table without an id or path column: its first words
        return f"\u201c{text[:36]}\u2026\u201d" if len(text) > 36 else f"\u201c{text}\u201d"
    return str(row.get("id"))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def failing_columns(row: Mapping[str, Any], checks: list[dict[str, Any]]) -> set[str]:
    """The score column(s) of the threshold the row's ledger reason names."""
    reason = row.get("reason")
    if not reason:
        return set()
    return {c["column"] for c in checks if c["key"] == reason}


def score_items(row: Mapping[str, Any], checks: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    """(label, value and threshold, failing) of the scores relevant to the row's kind."""
    failing = failing_columns(row, checks)
    by_col: dict[str, list[str]] = {}
    for c in checks:
        by_col.setdefault(c["column"], []).append(f"{_OPS.get(c['op'], c['op'])}{_fmt(c['value'])}")
    cols = list(dict.fromkeys([*failing, *by_col, *MODALITY_SCORES.get(str(row.get("modality")), ())]))
    out = []
    for col in cols:
        v = row.get(col)
        if v is None or (isinstance(v, float) and v != v):
            continue
        label = col[6:] if col.startswith("score_") else col
        thr = f" ({', '.join(by_col[col])})" if col in by_col else ""
        out.append((label, f"{_fmt(v)}{thr}", col in failing))
        if len(out) >= MAX_SCORES:
            break
    return out


def _dup_text(row: Mapping[str, Any], names: Mapping[str, str] | None, sizes: Mapping[str, int] | None) -> str:
    cluster = row.get("dup_cluster")
    if not cluster:
        return ""
    if row.get("stage") == "dedup":
        rep = (names or {}).get(cluster, str(cluster)[:10])
        match = ""
        try:
            d = json.loads(row.get("detail") or "{}")
            match = d.get("match", "")
            if "distance" in d:
                match += f", distance {d['distance']}"
            if "jaccard" in d:
                match += f", jaccard {d['jaccard']}"
        except ValueError:
            pass
        return f"duplicate of <b>{html.escape(rep)}</b>" + (f" <span class='sc-match'>({html.escape(match)})</span>" if match else "")
    n = (sizes or {}).get(cluster)
    return f"kept for a cluster of {n}" if n else f"cluster {html.escape(str(cluster)[:10])}"


def card_html(row: Mapping[str, Any], checks: list[dict[str, Any]] | None = None, *,
              names: Mapping[str, str] | None = None, sizes: Mapping[str, int] | None = None,
              note: str | None = None) -> str:
    """One row as a card: picture or strip, name, verdict, relevant scores, tokens, repeat, cluster, text head."""
    checks = checks or []
    media = [r for r in (row.get("media") or []) if r]
    modality = str(row.get("modality") or "")
    pics = ""
    if media and (modality in ("document", "video") or len(media) > 1):
        # OCRed pages carry their line boxes; a clip's strip is sampled inside its start_s/end_s
        strip = ocr_strip_uris(media, row["ocr_lines"]) if row.get("ocr_lines") else strip_uris(media)
        if strip:
            pics = "<div class='sc-strip'>" + "".join(f"<img src='{u}' alt='page or frame'/>" for u in strip) + "</div>"
    elif media:
        uri = thumb_uri(media[0])
        if uri:
            pics = f"<img class='sc-pic' src='{uri}' alt='thumbnail'/>"
    if not pics and (media or modality != "text"):
        what = "no picture" if media else f"{modality or 'row'} without media"
        pics = f"<div class='sc-none'>{html.escape(what)}</div>"
    dropped = bool(row.get("reason"))
    parts = [pics, f"<div class='sc-name' title='{html.escape(str(row.get('id')))}'>{html.escape(row_name(row))}</div>",
             f"<div class='sc-meta'>{html.escape(str(row.get('source')))} · {html.escape(modality)}</div>"]
    if media and media[0].get("start_s") is not None and media[0].get("end_s") is not None:
        parts.append(f"<div class='sc-meta'>clip {float(media[0]['start_s']):.2f}\u2013{float(media[0]['end_s']):.2f} s"
                     f" \u00b7 {int(media[0].get('frames') or 0)} frames</div>")
    if row.get("ocr"):
        parts.append(f"<div class='sc-meta'>OCR p{','.join(str(p + 1) for p in row['ocr'].get('pages') or [])}"
                     f" \u00b7 {len(row.get('ocr_lines') or [])} lines</div>")
    if note:
        parts.append(f"<div class='sc-match'>{note}</div>")
    if dropped:
        parts.append(f"<div class='sc-why'>dropped: {html.escape(str(row.get('stage')))}/{html.escape(str(row['reason']))}</div>")
        detail = row.get("detail")
        if detail and row.get("stage") != "dedup":
            parts.append(f"<div class='sc-detail'>{html.escape(str(detail)[:160])}</div>")
    scores = score_items(row, checks)
    if scores:
        parts.append("<div>" + "".join(
            f"<span class='sc-score{' sc-fail' if fail else ''}'>{html.escape(label)} {html.escape(val)}</span>"
            for label, val, fail in scores) + "</div>")
    facts = []
    if row.get("tokens") is not None:
        tv, tt = row.get("tokens_visual"), row.get("tokens_text")
        facts.append(f"{row['tokens']:,} tokens" + (f" ({tv:,} visual + {tt:,} text)" if tv is not None and tt is not None else ""))
    if row.get("repeat") is not None:
        facts.append(f"repeat ×{row['repeat']}")
    dup = _dup_text(row, names, sizes)
    if facts:
        parts.append(f"<div class='sc-meta'>{html.escape(' · '.join(facts))}</div>")
    if dup:
        parts.append(f"<div class='sc-meta'>{dup}</div>")
    text = row.get("text")
    if not text and row.get("turns"):
        text = " / ".join(str(t.get("content") or "") for t in row["turns"] if t)
    if text:
        parts.append(f"<div class='sc-text'>{html.escape(str(text)[:140])}</div>")
    return f"<div class='sc-card{' sc-drop' if dropped else ''}'>" + "".join(parts) + "</div>"


def grid_html(rows: Iterable[Mapping[str, Any]], checks: Mapping[str, list[dict[str, Any]]] | None = None, **kw: Any) -> str:
    checks = checks or {}
    return "<div class='sc-grid'>" + "".join(card_html(r, checks.get(str(r.get("source")), []), **kw) for r in rows) + "</div>"
