"""What loosening each threshold would bring back (``Manifest.loosening()``), from stored scores only.

For every threshold that dropped rows, the loosest value that brings all of them back is the
dropped rows' own extreme score (the smallest for a ``min_`` check, the largest for a ``max_``);
a re-tune to that value (see ``curation.retune``) says what actually comes back, per source and
with example cards: a row that also fails another threshold stays dropped, now for that one.
"""
from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from manifests.cards import CSS, card_html, recipe_checks

if TYPE_CHECKING:  # pragma: no cover
    from manifests.reader import Manifest


class LooseningView:
    def __init__(self, items: list[dict[str, Any]], checks: dict[str, list[dict[str, Any]]]) -> None:
        self.items = items
        self.checks = checks

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        if not self.items:
            return "no threshold dropped any row"
        lines = []
        for it in self.items:
            per = ", ".join(f"{s} +{n}" for s, n in it["back_by_source"].items()) or "nothing (other thresholds still fail)"
            lines.append(f"{it['field']}: {it['old']} -> {it['new']:g} brings back {it['back']} of {it['dropped']} ({per})")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        if not self.items:
            return "<p>No threshold dropped any row.</p>"
        blocks = []
        for it in self.items:
            per = ", ".join(f"{html.escape(s)} +{n}" for s, n in it["back_by_source"].items()) or "nothing: other thresholds still fail"
            cards = "".join(card_html(r, self.checks.get(r["source"], []), note="comes back") for r in it["examples"])
            blocks.append(
                f"<div style='margin:8px 0'><b>{html.escape(it['field'])}</b>: {html.escape(str(it['old']))} &#8594; "
                f"{it['new']:g} brings back <b>{it['back']}</b> of the {it['dropped']} rows it dropped ({per})"
                + (f"<div class='sc-grid'>{cards}</div>" if cards else "") + "</div>")
        return CSS + "<div><b>What loosening each threshold would bring back</b>" + "".join(blocks) + "</div>"


def loosening(m: "Manifest", examples: int = 6) -> LooseningView:
    """One entry per threshold that dropped rows: loosened to their extreme score, what comes back."""
    import numpy as np
    import pyarrow.compute as pc

    checks = recipe_checks(m)
    led = m.ledger()
    if not checks or "modality" not in led.column_names:  # no recipe, or a v1 ledger without scores
        return LooseningView([], checks)
    from curation.retune import RETUNABLE, retune

    filt = led.filter(pc.equal(led.column("stage"), "filter"))
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for source, src_checks in checks.items():
        mine = filt.filter(pc.equal(filt.column("source"), source))
        for c in src_checks:
            if c.get("section") not in RETUNABLE:  # model thresholds (enrich.*): re-run curate to change them
                continue
            rows = mine.filter(pc.equal(mine.column("reason"), c["key"]))
            if rows.num_rows == 0 or c["column"] not in rows.column_names:
                continue
            vals = rows.column(c["column"]).to_numpy(zero_copy_only=False).astype(float)
            vals = vals[np.isfinite(vals)]
            if vals.size == 0:
                continue
            new = float(vals.min() if c["op"] in (">=", ">") else vals.max())
            key = (c["section"], c["key"])
            entry = seen.setdefault(key, {"check": c, "new": new, "dropped": 0})
            entry["dropped"] += rows.num_rows
            entry["new"] = min(entry["new"], new) if c["op"] in (">=", ">") else max(entry["new"], new)
    items = []
    tables = (m.table(), led) if seen else None
    for (section, key), entry in seen.items():
        c = entry["check"]
        new = entry["new"]
        if "." in key:  # an n-gram threshold: filters.text.max_top_ngram_frac.2
            name, size = key.split(".", 1)
            change = {section: {name: {size: new}}}
        else:
            change = {section: {key: int(new) if float(new).is_integer() and isinstance(c["value"], int) else new}}
        r = retune(m, filters=change, tables=tables)
        back = r.rows("back")
        by_src: dict[str, int] = {}
        for s in back.column("source").to_pylist():
            by_src[s] = by_src.get(s, 0) + 1
        items.append({"field": f"filters.{section}.{key}", "old": c["value"], "new": new, "dropped": entry["dropped"],
                      "back": back.num_rows, "back_by_source": by_src, "examples": back.slice(0, examples).to_pylist(),
                      "retune": r})
    items.sort(key=lambda it: (-it["back"], it["field"]))
    return LooseningView(items, checks)
