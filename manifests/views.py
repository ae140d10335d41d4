"""Human views of a manifest: the inspect summary, the HTML repr, ``show()``, ``clusters()`` and re-tune previews."""
from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any

from manifests.cards import CSS, grid_html, recipe_checks, row_name

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl

    from manifests.reader import Manifest

VISUAL = ("image", "image_text", "document", "video")


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



# --------------------------------------------------------------------------- notebook repr


def manifest_html(m: "Manifest", n_thumbs: int = 12) -> str:
    """Counts, drops by reason, schema and a few cards of every source (not just the first rows of the first)."""
    s = summarize(m)
    src_rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{v.get('read', 0)}</td><td>{v.get('kept', 0)}</td>"
        f"<td>{v.get('dropped', 0)}</td><td style='text-align:left'>{html.escape(', '.join(f'{k} {c}' for k, c in sorted(v['drops'].items())))}</td></tr>"
        for name, v in s["sources"].items()
    )
    schema = "".join(f"<tr><td>{html.escape(f.name)}</td><td style='text-align:left'>{html.escape(str(f.type))[:80]}</td></tr>" for f in m.schema)
    rows = spread_rows(m.lazy(), n_thumbs, visual_first=True)
    return (
        f"<div>{CSS}<h4>Manifest {html.escape(str(m.path))}</h4>"
        f"<p>{s['rows']} rows kept, {s['dropped']} dropped, {len(s['shards'])} shards; "
        f"by modality: {html.escape(', '.join(f'{k} {v}' for k, v in s['by_modality'].items()))}</p>"
        "<table class='sc-t'><tr><th>source</th><th>read</th><th>kept</th><th>dropped</th><th>drops by stage/reason</th></tr>"
        f"{src_rows}</table>"
        f"<details><summary>schema ({len(m.schema)} columns; ledger v{m.ledger_version})</summary><table class='sc-t'>{schema}</table></details>"
        f"{grid_html(rows, recipe_checks(m))}</div>"
    )


def spread_rows(lf: "pl.LazyFrame", n: int, *, visual_first: bool = False, by: str = "source") -> list[dict[str, Any]]:
    """Up to ``n`` rows taken round-robin over ``by`` groups (so one big source does not fill the view)."""
    import polars as pl

    if visual_first and "modality" in lf.collect_schema().names():
        lf = lf.with_columns(pl.col("modality").is_in(list(VISUAL)).not_().alias("_nv")).sort("_nv", maintain_order=True)
    df = lf.with_columns(pl.int_range(pl.len()).over(by).alias("_rank")).filter(pl.col("_rank") < n).collect()
    if df.height == 0:
        return []
    df = df.sort(["_rank"], maintain_order=True).head(n)
    return df.drop([c for c in ("_rank", "_nv") if c in df.columns]).to_dicts()


# --------------------------------------------------------------------------- show()


class RowsView:
    """What ``Manifest.show()`` returns: cards in notebooks, one line per row elsewhere."""

    def __init__(self, rows: list[dict[str, Any]], matched: int | None = None, title: str = "",
                 checks: dict[str, list[dict[str, Any]]] | None = None, names: dict[str, str] | None = None,
                 other: "RowsView | None" = None) -> None:
        self.rows = rows
        self.matched = len(rows) if matched is None else matched
        self.title = title
        self.checks = checks or {}
        self.names = names or {}
        self.other = other  # the dropped side of show(dropped="both")

    def __len__(self) -> int:
        return len(self.rows)

    def header(self) -> str:
        return f"{self.title}: {len(self.rows)} shown of {self.matched} matching rows"

    def _body(self) -> str:
        return f"<div><b>{html.escape(self.header())}</b>{grid_html(self.rows, self.checks, names=self.names)}</div>"

    def _repr_html_(self) -> str:
        if self.other is None:
            return CSS + self._body()
        return CSS + f"<div class='sc-cols'>{self._body()}{self.other._body()}</div>"

    def __repr__(self) -> str:
        views = [self] if self.other is None else [self, self.other]
        lines = []
        for v in views:
            lines.append(v.header())
            for r in v.rows:
                why = f"  [{r.get('stage')}/{r.get('reason')}]" if r.get("reason") else ""
                lines.append(f"  {row_name(r)[:40]:<40} {str(r['source']):<12} {str(r.get('modality')):<10}{why} {(r.get('text') or '')[:40]!r}")
        return "\n".join(lines)


def ledger_lazy(m: "Manifest") -> "pl.LazyFrame":
    import polars as pl

    return pl.from_arrow(m.ledger()).lazy()


def _select(lf: "pl.LazyFrame", n: int, where: Any, sort: Any, sample: int | None, seed: int) -> tuple[list[dict], int, str]:
    """(rows, how many matched, a note) for one side of show()."""
    import polars as pl

    note = ""
    if where is not None:
        try:
            lf = lf.filter(where)
            matched = int(lf.select(pl.len()).collect().item())
        except pl.exceptions.ColumnNotFoundError as exc:
            return [], 0, f"where= names a column these rows lack ({str(exc).splitlines()[0]})"
    else:
        matched = int(lf.select(pl.len()).collect().item())
    if sample is not None:
        df = lf.collect()
        df = df.sample(n=min(int(sample), df.height), seed=seed, shuffle=True) if df.height else df
        lf = df.lazy()
        n = min(n, int(sample)) if n else int(sample)
    if sort is not None:
        keys = [sort] if isinstance(sort, str) else list(sort)
        cols = [k.lstrip("-") for k in keys]
        desc = [k.startswith("-") for k in keys]
        names = lf.collect_schema().names()
        missing = [c for c in cols if c not in names]
        if missing:
            return [], matched, f"sort= names a column these rows lack: {missing[0]}"
        lf = lf.sort(cols, descending=desc, nulls_last=True, maintain_order=True)
    return lf.head(n).collect().to_dicts(), matched, note


def show(m: "Manifest", n: int = 12, where: Any = None, *, sort: str | list[str] | None = None, sample: int | None = None,
         seed: int = 0, dropped: bool | str = False, quiet: bool = False) -> RowsView:
    """Cards of rows matching a polars expression (e.g. ``pl.col('score_sharpness') < 50``).

    ``sort="score_min_side"`` (``"-col"`` descends), ``sample=k`` picks k matching rows at random
    (seeded by ``seed``), ``dropped=True`` shows ledger rows, with why each was dropped next to its
    picture, and ``dropped="both"`` puts kept and dropped rows side by side. Prints how many matched.
    """
    if dropped not in (False, True, "both"):
        raise ValueError(f"dropped is False, True or 'both', got {dropped!r}")
    checks = recipe_checks(m)
    views = []
    sides = {False: [("kept", m.lazy)], True: [("dropped", lambda: ledger_lazy(m))],
             "both": [("kept", m.lazy), ("dropped", lambda: ledger_lazy(m))]}[dropped]
    for label, lf in sides:
        rows, matched, note = _select(lf(), n, where, sort, sample, seed)
        title = label + (f" ({note})" if note else "")
        views.append(RowsView(rows, matched, title, checks, _names_of_clusters(m, rows)))
    view = views[0]
    if len(views) == 2:
        view.other = views[1]
    if not quiet:
        print("; ".join(f"{v.title}: {v.matched} rows matched" for v in views))
    return view


def _names_of_clusters(m: "Manifest", rows: list[dict[str, Any]]) -> dict[str, str]:
    """File names of the kept rows that dedup-dropped rows among ``rows`` duplicate."""
    reps = {r["dup_cluster"] for r in rows if r.get("stage") == "dedup" and r.get("dup_cluster")}
    if not reps or "dup_cluster" not in m.schema.names:
        return {}
    import polars as pl

    found = m.lazy().filter(pl.col("id").is_in(list(reps))).collect().to_dicts()
    return {r["id"]: row_name(r) for r in found}


# --------------------------------------------------------------------------- clusters()


class ClustersView:
    """Duplicate clusters side by side: the kept row, then each twin with its match type and distance."""

    def __init__(self, clusters: list[dict[str, Any]], total: int, checks: dict[str, list[dict[str, Any]]]) -> None:
        self.clusters = clusters
        self.total = total
        self.checks = checks

    def __len__(self) -> int:
        return len(self.clusters)

    def frame(self) -> "pl.DataFrame":
        """One line per member: cluster, role (kept/twin), id, source, name, match, distance or jaccard, neighbour."""
        import polars as pl

        out = []
        for c in self.clusters:
            if c["kept"] is not None:
                out.append({"cluster": c["cluster"], "role": "kept", "id": c["kept"]["id"], "source": c["kept"]["source"],
                            "name": row_name(c["kept"]), "match": None, "distance": None, "with": None})
            for t in c["twins"]:
                out.append({"cluster": c["cluster"], "role": "twin", "id": t["row"]["id"], "source": t["row"]["source"],
                            "name": row_name(t["row"]), "match": t["match"], "distance": t["distance"], "with": t["with"]})
        return pl.DataFrame(out, schema={"cluster": pl.Utf8, "role": pl.Utf8, "id": pl.Utf8, "source": pl.Utf8, "name": pl.Utf8,
                                         "match": pl.Utf8, "distance": pl.Float64, "with": pl.Utf8})

    def _repr_html_(self) -> str:
        from manifests.cards import card_html

        blocks = []
        for c in self.clusters:
            kept = card_html(c["kept"], self.checks.get(c["kept"]["source"], []), note="kept") if c["kept"] is not None \
                else "<div class='sc-card'><div class='sc-none'>kept row not in this manifest</div></div>"
            twins = "".join(card_html(t["row"], self.checks.get(t["row"]["source"], []), note=html.escape(_match_label(t)))
                            for t in c["twins"])
            blocks.append(f"<div class='sc-cluster'>{kept}<div class='sc-arrow'>&#8592;</div>{twins}</div>")
        head = f"<b>{len(self.clusters)} of {self.total} duplicate clusters</b> (kept row first, then its twins)"
        return CSS + f"<div>{head}{''.join(blocks) or '<p>no duplicates</p>'}</div>"

    def __repr__(self) -> str:
        lines = [f"{len(self.clusters)} of {self.total} duplicate clusters"]
        for c in self.clusters:
            kept = row_name(c["kept"]) if c["kept"] is not None else c["cluster"]
            lines.append(f"  kept {kept}")
            for t in c["twins"]:
                lines.append(f"    twin {row_name(t['row'])} ({_match_label(t)})")
        return "\n".join(lines)


def _match_label(t: dict[str, Any]) -> str:
    label = t["match"] or "duplicate"
    if t["distance"] is not None:
        label += f", {'jaccard' if t['match'] == 'minhash' else 'distance'} {t['distance']:g}"
    return label


def clusters(m: "Manifest", n: int = 12, *, source: str | None = None) -> ClustersView:
    """The ``n`` largest duplicate clusters: kept row, twins, match type and distance (from the ledger)."""
    import polars as pl

    led = ledger_lazy(m)
    if "dup_cluster" not in led.collect_schema().names():
        return ClustersView([], 0, {})
    twins = led.filter((pl.col("stage") == "dedup") & pl.col("dup_cluster").is_not_null())
    if source is not None:
        twins = twins.filter(pl.col("source") == source)
    twins = twins.collect()
    if twins.height == 0:
        return ClustersView([], 0, recipe_checks(m))
    sizes = twins.group_by("dup_cluster").len().sort(["len", "dup_cluster"], descending=[True, False])
    total = sizes.height
    chosen = sizes.head(n)["dup_cluster"].to_list()
    kept = {r["id"]: r for r in m.lazy().filter(pl.col("id").is_in(chosen)).collect().to_dicts()}
    out = []
    for cid in chosen:
        members = []
        for row in twins.filter(pl.col("dup_cluster") == cid).to_dicts():
            try:
                d = json.loads(row.get("detail") or "{}")
            except ValueError:
                d = {}
            dist = d.get("distance", d.get("jaccard"))
            members.append({"row": row, "match": d.get("match"), "distance": None if dist is None else float(dist),
                            "with": d.get("with")})
        out.append({"cluster": cid, "kept": kept.get(cid), "twins": members})
    return ClustersView(out, total, recipe_checks(m))


# --------------------------------------------------------------------------- retune previews


def retune_html(r: Any, n: int = 8) -> str:
    """A re-tune preview: per source kept before -> after and why, then cards of rows that come back or leave."""
    from manifests.cards import card_html

    head = "<br/>".join(html.escape(f"filters.{s}.{k}: {a} -> {b}") for s, k, a, b in r.changes) or "no threshold changed"
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{st['kept_before']}</td><td>{st['kept_after']}</td>"
        f"<td>{sum(st['brought_back'].values())}</td><td>{sum(st['newly_dropped'].values())}</td>"
        f"<td style='text-align:left'>{html.escape(', '.join([*(f'back from {k} {v}' for k, v in sorted(st['brought_back'].items())), *(f'drops {k} {v}' for k, v in sorted(st['newly_dropped'].items()))]) or '-')}</td>"
        f"<td>{st['unscored']}</td></tr>"
        for name, st in r.sources.items()
    )
    notes = [line.strip()[6:] for line in repr(r).splitlines() if line.strip().startswith("note:")]
    checks = recipe_checks(r.source)
    back = r.rows("back").slice(0, n).to_pylist()
    gone = r.rows("dropped").slice(0, n).to_pylist()
    parts = [CSS, f"<div><b>retune</b> {head}",
             "<table class='sc-t'><tr><th>source</th><th>kept</th><th>after</th><th>+ back</th><th>- dropped</th>"
             f"<th>why</th><th>unscored (stay dropped)</th></tr>{rows}</table>",
             "".join(f"<p><i>{html.escape(x)}</i></p>" for x in notes)]
    if back:
        parts.append(f"<p><b>comes back ({len(r.brought_back)})</b></p><div class='sc-grid'>"
                     + "".join(card_html(x, checks.get(x["source"], []), note="comes back") for x in back) + "</div>")
    if gone:
        parts.append(f"<p><b>would be dropped ({len(r.newly_dropped)})</b></p><div class='sc-grid'>"
                     + "".join(card_html(x, checks.get(x["source"], [])) for x in gone) + "</div>")
    return "".join(parts) + "</div>"
