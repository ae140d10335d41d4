"""Re-tune filter thresholds on a curated manifest, both ways, from the scores it stored (no media is read).

A v2 manifest keeps, for every dropped row, its media reference, text and every score computed
before the drop (see ``manifests.schema.ledger_schema``). Re-tuning re-runs the recipe's *filter*
operators (stage ``filter``: the threshold checks, declared as data in each filter's ``CHECKS``, and
the text quality checks, which re-score the stored text) over the kept rows plus the rows a filter
dropped, with the new thresholds. Nothing is decoded, so it takes seconds where curate took hours.

The rules, which make the result the one a fresh ``curate`` with the new thresholds writes:

- **Both ways.** Tightening drops kept rows (ledger stage ``filter``, the failed threshold as reason,
  the same detail curate writes); loosening brings back rows a filter dropped, wherever their scores
  exist. A row brought back gets the columns of the operators after the filters that need no media
  (token counts); a row newly dropped loses the columns of the operators after the one that dropped it.
- **Unscored rows stay dropped.** Rows dropped before a score could exist (stage ``read`` or
  ``decode``: unreadable, undecodable, truncated, ...) and rows of a v1 ledger keep their verdict;
  the result counts them (``unscored``).
- **Duplicates stay resolved as recorded.** A row dropped by dedup or decontamination stays dropped
  with its cluster. A row brought back re-enters as itself: it was never hashed (its ``sig_*`` columns
  are null) and is not compared against the kept rows (``undeduped`` counts them). A kept row that
  represented a cluster and is now dropped leaves its twins in the ledger (``orphaned`` counts the
  clusters). When either count matters, run ``curate`` with the new recipe: it re-hashes and re-resolves.
- **Model operators keep their verdicts.** Rows a model operator (``curation/enrich``: language,
  heads, CLIP score, top-fraction cutoffs) dropped stay dropped, and a row brought back is not
  re-scored by them (its model scores never existed).
- **Only thresholds.** Fields that change how a score is *measured* (``analysis_side``,
  ``sample_frames``, n-gram sizes, ...) or anything outside ``filters:`` are refused with the field named.

Row order: each source's kept rows in the source manifest's order, rows that came back after them;
the ledger keeps its order, rows newly dropped follow their source's. Sources stay in recipe order.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from curation.filters import operator_columns, source_operators
from curation.filters.common import STAGE_FILTER
from curation.filters.document import DocumentFilter
from curation.filters.image import ImageFilter
from curation.filters.text import TextQuality
from curation.filters.video import VideoFilter
from curation.operators import DECISION_COLUMNS, DROP_DETAIL, DROP_REASON, DROP_STAGE, split_decided
from curation.recipe import Recipe, TextFilters, parse_recipe
from manifests.errors import RecipeError, UserError
from manifests.reader import Manifest, open_manifest
from manifests.schema import conform, ledger_schema
from manifests.writer import ManifestWriter

#: ledger stages whose rows are re-judged (every other stage keeps its verdict)
RETUNED_STAGES = (STAGE_FILTER,)
#: the operators re-run: thresholds over stored scores, and text checks that re-score the stored text.
#: Model operators (curation/enrich) that also drop at stage ``filter`` keep their verdicts: their
#: top-fraction cutoffs are global and their scores need models.
RETUNED_OPS = (ImageFilter, DocumentFilter, VideoFilter, TextQuality)
#: stages whose verdict stands unless the new thresholds drop the row earlier, at a filter
DEDUP_STAGES = ("dedup", "decontaminate")
#: stages that drop a row before any score of it exists
UNSCORED_STAGES = ("read", "decode")

_TEXT_KEYS = (
    "min_chars", "max_chars", "min_words", "max_words", "max_non_alnum_ratio", "max_dup_line_frac",
    "max_dup_line_char_frac", "max_top_ngram_frac", "max_dup_ngram_frac", "repetition_min_words",
)
#: the threshold fields of each filters: section (everything else changes how scores are measured)
RETUNABLE: dict[str, tuple[str, ...]] = {
    "image": tuple(dict.fromkeys(k for _, _, k in ImageFilter.CHECKS)) + ("formats",),
    "document": tuple(dict.fromkeys(k for _, _, k in DocumentFilter.CHECKS)),
    "video": tuple(dict.fromkeys(k for _, _, k in VideoFilter.CHECKS)),
    "text": _TEXT_KEYS,
    "image_text": _TEXT_KEYS + ("min_images", "max_images"),
}
#: filters: sections that judge each source kind
SECTIONS_OF_KIND = {
    "images": ("image",), "image_text": ("image", "image_text"), "document": ("document",),
    "text": ("text",), "video": ("video",),
}


# --------------------------------------------------------------------------- thresholds as data


#: ledger reasons those operators write (n-gram reasons as their prefix: ``max_top_ngram_frac.2``)
FILTER_REASONS = frozenset(k for keys in RETUNABLE.values() for k in keys) | {"missing_text"}


def _reason_root(reasons: pa.ChunkedArray) -> pa.ChunkedArray:
    """``max_top_ngram_frac.2`` -> ``max_top_ngram_frac`` (other reasons unchanged)."""
    return pc.replace_substring_regex(reasons, pattern=r"\..*$", replacement="")


def threshold_checks(recipe: Recipe | Mapping[str, Any], kind: str) -> list[dict[str, Any]]:
    """The active threshold checks of one source kind: ``{section, key, column, op, value}`` (op keeps a row).

    What ``hist()`` and the report draw as threshold lines. Filter checks come from the filters'
    ``CHECKS`` tables; text checks mirror ``TextQuality`` (repetition checks only apply to texts of at
    least ``repetition_min_words`` words).
    """
    rec = recipe if isinstance(recipe, Recipe) else parse_recipe(dict(recipe), check_paths=False)
    out: list[dict[str, Any]] = []
    for section in SECTIONS_OF_KIND.get(kind, ()):
        cfg = getattr(rec.filters, section)
        if section in ("image", "document", "video"):
            checks = {"image": ImageFilter, "document": DocumentFilter, "video": VideoFilter}[section].CHECKS
            for column, op, key in checks:
                out.append({"section": section, "key": key, "column": column, "op": op, "value": getattr(cfg, key)})
        else:
            out += _text_checks(cfg, section)
    return [c for c in out if c["value"] is not None]


def _text_checks(cfg: TextFilters, section: str) -> list[dict[str, Any]]:
    rows = [
        ("score_chars", ">=", "min_chars"), ("score_chars", "<=", "max_chars"), ("score_words", ">=", "min_words"),
        ("score_words", "<=", "max_words"), ("score_non_alnum", "<=", "max_non_alnum_ratio"),
        ("score_dup_lines", "<=", "max_dup_line_frac"), ("score_dup_line_chars", "<=", "max_dup_line_char_frac"),
    ]
    out = [{"section": section, "key": k, "column": c, "op": o, "value": getattr(cfg, k)} for c, o, k in rows]
    for size, thr in cfg.max_top_ngram_frac.items():
        out.append({"section": section, "key": f"max_top_ngram_frac.{size}", "column": f"score_top_{size}gram", "op": "<=", "value": thr})
    for size, thr in cfg.max_dup_ngram_frac.items():
        out.append({"section": section, "key": f"max_dup_ngram_frac.{size}", "column": f"score_dup_{size}gram", "op": "<=", "value": thr})
    for c in out:
        if c["key"].startswith(("max_dup_line", "max_top_ngram", "max_dup_ngram")):
            c["min_words"] = cfg.repetition_min_words
    return out


# --------------------------------------------------------------------------- overrides


def parse_sets(items: Sequence[str]) -> dict[str, Any]:
    """``filters.image.min_side=64`` strings (the CLI's ``--set``) to a nested mapping; values are YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"expected KEY=VALUE, got {item!r}", field="--set")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        parts = key.strip().split(".")
        if parts[0] != "filters":
            raise UserError(f"{key}: retune changes filter thresholds only (filters.<section>.<field>)", field="--set")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"{key}: conflicts with another --set", field="--set")
        node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _changed_fields(old: Recipe, new: Recipe) -> list[tuple[str, str, Any, Any]]:
    """(section, field, old, new) of every filters: field that differs; refuses non-threshold fields."""
    a, b = old.model_dump(mode="json", exclude={"base_dir"}), new.model_dump(mode="json", exclude={"base_dir"})
    for k in a:
        if k != "filters" and a[k] != b.get(k):
            raise RecipeError("retune changes filter thresholds only; run curate for other changes", field=k)
    changes = []
    for section, fields in b["filters"].items():
        for name, value in fields.items():
            before = a["filters"][section].get(name)
            if before == value:
                continue
            if name not in RETUNABLE.get(section, ()):
                raise RecipeError("changes how the score is measured, not a threshold: run curate with the new recipe",
                                  field=f"filters.{section}.{name}")
            if name in ("max_top_ngram_frac", "max_dup_ngram_frac") and set(before or {}) != set(value or {}):
                raise RecipeError("n-gram sizes decide which score columns exist: change their thresholds, or run curate",
                                  field=f"filters.{section}.{name}")
            changes.append((section, name, before, value))
    return changes


# --------------------------------------------------------------------------- result


@dataclass
class RetuneResult:
    """The re-tuned rows and what changed; ``write(out)`` makes it a manifest, notebooks render it."""

    source: Manifest
    recipe: Recipe
    changes: list[tuple[str, str, Any, Any]]
    kept: pa.Table
    ledger: pa.Table
    #: per source: before/after kept, {reason: n} newly dropped, {old reason: n} brought back, unscored, ...
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    brought_back: list[str] = field(default_factory=list)  # ids
    newly_dropped: list[str] = field(default_factory=list)  # ids

    def total(self, key: str) -> int:
        return sum(int(s[key]) for s in self.sources.values())

    def table(self) -> list[dict[str, Any]]:
        """One row per source: kept before -> after, what left and why, what came back from which reason."""
        return [{"source": n, **s} for n, s in self.sources.items()]

    def __repr__(self) -> str:
        return format_result(self)

    def _repr_html_(self) -> str:
        from manifests.views import retune_html

        return retune_html(self)

    def rows(self, which: str = "back") -> pa.Table:
        """The rows that came back (``"back"``) or that the new thresholds drop (``"dropped"``)."""
        if which == "back":
            return self.kept.filter(pc.is_in(self.kept.column("id"), pa.array(self.brought_back, pa.string())))
        if which == "dropped":
            return self.ledger.filter(pc.is_in(self.ledger.column("id"), pa.array(self.newly_dropped, pa.string())))
        raise ValueError("which is 'back' or 'dropped'")

    def write(self, out: str | os.PathLike, *, overwrite: bool = False) -> Manifest:
        """Write the re-tuned manifest (same schema and shard size as the source); no media is read."""
        out_path = Path(out).resolve()
        if out_path == self.source.path:
            raise UserError("writes a new manifest; pick another folder than the source", field="--out")
        schema = self.source.schema
        writer = ManifestWriter(out_path, schema, overwrite=overwrite, ledger=ledger_schema(schema))
        rows = self.recipe.output.shard_rows
        for start in range(0, max(self.kept.num_rows, 1), rows):
            if self.kept.num_rows:
                writer.write(self.kept.slice(start, rows))
        for start in range(0, self.ledger.num_rows, rows):
            writer.write_dropped(self.ledger.slice(start, rows))
        info = self.source.info
        sources = {n: {k: v for k, v in s.items() if k not in ("kept", "dropped")} for n, s in info["sources"].items()}
        extra = {k: v for k, v in (info.get("extra") or {}).items() if k != "job"}  # not this recipe's job any more
        if self.total("undeduped"):
            extra.pop("dedup_signature", None)  # rows without signatures: `against:` must re-hash this manifest
        extra["retune"] = {
            "from": str(self.source.path),
            "from_fingerprint": self.source.fingerprint(),
            "changes": [{"field": f"filters.{s}.{k}", "old": a, "new": b} for s, k, a, b in self.changes],
            "brought_back": len(self.brought_back),
            "newly_dropped": len(self.newly_dropped),
            "unscored": self.total("unscored"),
            "undeduped": self.total("undeduped"),
            "orphaned_clusters": self.total("orphaned"),
        }
        writer.commit(recipe=self.recipe.resolved(), sources=sources, extra=extra)
        return open_manifest(out_path)


def format_result(r: RetuneResult) -> str:
    """The plain-text preview: changes, then per source kept before -> after with reasons."""
    lines = ["retune " + ", ".join(f"filters.{s}.{k}: {a} -> {b}" for s, k, a, b in r.changes) if r.changes
             else "retune: no threshold changed"]
    head = f"  {'source':<16} {'kept':>6} -> {'new':<6} {'+back':>6} {'-drop':>6}  detail"
    lines += [head, "  " + "-" * (len(head) + 20)]
    for name, s in r.sources.items():
        parts = [f"drops {k} {v}" for k, v in sorted(s["newly_dropped"].items())]
        parts += [f"back from {k} {v}" for k, v in sorted(s["brought_back"].items())]
        parts += [f"still dropped, now by {k} {v}" for k, v in sorted(s["reason_changed"].items())]
        if s["unscored"]:
            parts.append(f"{s['unscored']} unscored stay dropped")
        lines.append(f"  {name:<16} {s['kept_before']:>6} -> {s['kept_after']:<6} {sum(s['brought_back'].values()):>6} "
                     f"{sum(s['newly_dropped'].values()):>6}  {', '.join(parts) or '-'}")
    notes = []
    if r.total("unscored"):
        notes.append(f"{r.total('unscored')} rows were dropped before any score existed (read/decode) and stay dropped")
    if r.total("undeduped"):
        notes.append(f"{r.total('undeduped')} rows came back without dedup signatures: not compared against kept rows")
    if r.total("orphaned"):
        notes.append(f"{r.total('orphaned')} duplicate clusters lost their kept row; their twins stay dropped")
    if r.total("undeduped") or r.total("orphaned"):
        notes.append("run curate with the new thresholds to re-resolve duplicates")
    return "\n".join(lines + [f"  note: {n}" for n in notes])


# --------------------------------------------------------------------------- the work


def retune(manifest: Manifest | str | os.PathLike, filters: Mapping[str, Any] | None = None,
           sets: Sequence[str] = (), *, tables: tuple[pa.Table, pa.Table] | None = None) -> RetuneResult:
    """What the manifest becomes with these thresholds (``filters={"image": {"min_side": 64}}`` or ``--set``).

    ``tables``: the manifest's (kept rows, ledger) already read, when previewing many changes.
    """
    m = manifest if isinstance(manifest, Manifest) else open_manifest(manifest)
    raw = m.info.get("recipe")
    if not isinstance(raw, dict) or "sources" not in raw:
        raise UserError(f"{m.path} records no curation recipe (a mixture or a hand-written manifest): nothing to re-tune")
    over: dict[str, Any] = {}
    if filters:
        over = _merge(over, {"filters": dict(filters)})
    if sets:
        over = _merge(over, parse_sets(sets))
    old = parse_recipe(raw, check_paths=False)
    new = parse_recipe(_merge(raw, over), check_paths=False)
    changes = _changed_fields(old, new)

    kept_all, ledger_all = tables if tables is not None else (m.table(), m.ledger())
    v2 = m.ledger_version >= 2
    schema = m.schema
    lschema = ledger_schema(schema)
    kept_parts, ledger_parts = [], []
    result = RetuneResult(m, new, changes, schema.empty_table(), lschema.empty_table())
    names = [s.name for s in new.sources]
    names += sorted(set(m.info["sources"]) - set(names))  # (a source the recipe no longer has: kept as is)
    for name in names:
        idx = next((i for i, s in enumerate(new.sources) if s.name == name), None)
        k_rows = kept_all.filter(pc.equal(kept_all.column("source"), name))
        l_rows = ledger_all.filter(pc.equal(ledger_all.column("source"), name))
        kept, led, stats = _retune_source(new, idx, k_rows, l_rows, schema, lschema, v2)
        kept_parts.append(kept)
        ledger_parts.append(led)
        result.sources[name] = stats
        result.brought_back += stats.pop("_back_ids")
        result.newly_dropped += stats.pop("_dropped_ids")
    result.kept = pa.concat_tables(kept_parts) if kept_parts else schema.empty_table()
    result.ledger = pa.concat_tables(ledger_parts) if ledger_parts else lschema.empty_table()
    if "dup_cluster" in schema.names and result.kept.num_rows:
        result.kept, orphans = _settle_clusters(result.kept, result.ledger, result.newly_dropped)
        lost = result.ledger.filter(pc.is_in(result.ledger.column("id"), pa.array(sorted(orphans), pa.string())))
        for src, n in _counts(lost.column("source")).items():
            result.sources[src]["orphaned"] += n
    return result


def _counts(values: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    """{value: occurrences}, sorted by value (one Arrow value_counts, no loop over rows)."""
    vc = pc.value_counts(values)
    if len(vc) == 0:
        return {}
    return dict(sorted(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist())))


def _count(mask: pa.ChunkedArray | pa.Array) -> int:
    return int(pc.sum(pc.cast(pc.fill_null(mask, False), pa.int64())).as_py() or 0)


def _retune_source(recipe: Recipe, idx: int | None, kept: pa.Table, led: pa.Table, schema: pa.Schema,
                   lschema: pa.Schema, v2: bool) -> tuple[pa.Table, pa.Table, dict[str, Any]]:
    """One source: re-judge kept rows, filter drops (both ways) and dedup drops (tighten only) with the new filters."""
    stage = led.column("stage")
    stats: dict[str, Any] = {
        "kept_before": kept.num_rows, "kept_after": kept.num_rows, "newly_dropped": {}, "brought_back": {},
        "reason_changed": {}, "unscored": _count(pc.is_in(stage, pa.array(UNSCORED_STAGES))),
        "not_rejudged": 0 if v2 else _count(pc.equal(stage, STAGE_FILTER)),
        "undeduped": 0, "orphaned": 0, "_back_ids": [], "_dropped_ids": [],
    }
    if idx is None:  # a source the recipe no longer has: kept as it is
        return kept, conform(led, lschema, strict=False), stats
    led = led.append_column("_lrow", pa.array(np.arange(led.num_rows, dtype=np.int64)))
    if v2:
        refilter = pc.fill_null(pc.and_(pc.is_in(stage, pa.array(RETUNED_STAGES)),
                                        pc.is_in(_reason_root(led.column("reason")), pa.array(sorted(FILTER_REASONS)))), False)
        # a duplicate passed every filter once; if the new thresholds fail it, a fresh curate drops it at the filter
        deduped = pc.fill_null(pc.is_in(stage, pa.array(DEDUP_STAGES)), False)
    else:
        refilter = deduped = pa.array(np.zeros(led.num_rows, bool))  # a v1 ledger kept no scores: verdicts stand
    again, twins = led.filter(refilter), led.filter(deduped)
    stay = led.filter(pc.invert(pc.or_(refilter, deduped)))

    def as_rows(t: pa.Table) -> pa.Table:
        if t.num_rows == 0:
            return schema.empty_table()
        return conform(t.select([n for n in t.column_names if schema.get_field_index(n) >= 0]), schema, strict=False)

    n_kept, n_again = kept.num_rows, again.num_rows
    cand = pa.concat_tables([kept, as_rows(again), as_rows(twins)])
    cand = cand.append_column("_row", pa.array(np.arange(cand.num_rows, dtype=np.int64)))
    lrow = np.concatenate([np.full(n_kept, -1), again.column("_lrow").to_numpy(), twins.column("_lrow").to_numpy()])

    ops = source_operators(recipe, idx)
    filt = [j for j, op in enumerate(ops) if isinstance(op, RETUNED_OPS)]
    survivors = cand
    gone_parts: list[pa.Table] = []
    for j in filt:
        if survivors.num_rows == 0:
            break
        op = ops[j]
        if hasattr(op, "setup"):
            op.setup()
        survivors, gone = split_decided(op(survivors))
        if gone.num_rows:
            later = set(operator_columns(ops[j + 1:])) - set(operator_columns(ops[: j + 1]))
            later.add("dup_cluster")
            for name in later:  # a fresh curate never computed these for a row dropped here
                at = gone.schema.get_field_index(name)
                if at >= 0:
                    gone = gone.set_column(at, gone.schema.field(name), pa.nulls(gone.num_rows, gone.schema.field(name).type))
            gone_parts.append(gone)

    rows_ok = survivors.column("_row").to_numpy()
    # kept rows that pass: exactly as they were; filter drops that pass: their re-scored selves plus later columns;
    # duplicates that pass: their recorded verdict stands (they stay in `stay_twins`)
    stay_kept = kept.take(pa.array(rows_ok[rows_ok < n_kept]))
    back = survivors.filter(pa.array((rows_ok >= n_kept) & (rows_ok < n_kept + n_again)))
    if back.num_rows:
        back = as_rows(_later_columns(back, ops, filt[-1] if filt else -1))
        for col in (c for c in schema.names if c.startswith("sig_") or c == "dup_cluster"):
            back = back.set_column(schema.get_field_index(col), schema.field(col), pa.nulls(back.num_rows, schema.field(col).type))
    twins_ok = lrow[rows_ok[rows_ok >= n_kept + n_again]]

    # the new ledger: verdicts that stand and re-judged rows in the old ledger order, then rows newly dropped
    gone = pa.concat_tables(gone_parts, promote_options="default") if gone_parts else None
    parts = [stay, twins.filter(pc.is_in(twins.column("_lrow"), pa.array(twins_ok, pa.int64())))]
    tail = None
    old_reason = led.column("reason")
    if gone is not None:
        rows_gone = gone.column("_row").to_numpy()
        from_led = gone.filter(pa.array(rows_gone >= n_kept))
        from_led = from_led.append_column("_lrow", pa.array(lrow[rows_gone[rows_gone >= n_kept]], pa.int64()))
        parts.append(_as_ledger(from_led, lschema, keep=("_lrow",)))
        from_kept = gone.filter(pa.array(rows_gone < n_kept)).sort_by("_row")
        tail = _as_ledger(from_kept, lschema)
        stats["newly_dropped"] = _counts(from_kept.column(DROP_REASON))
        stats["_dropped_ids"] = from_kept.column("id").to_pylist()
        before = old_reason.take(from_led.column("_lrow"))
        moved = pc.fill_null(pc.not_equal(before, from_led.column(DROP_REASON)), True)  # dropped by another threshold now
        stats["reason_changed"] = _counts(from_led.column(DROP_REASON).filter(moved))
    new_led = pa.concat_tables([conform(p, lschema.append(pa.field("_lrow", pa.int64())), strict=False) for p in parts])
    new_led = new_led.sort_by("_lrow").drop_columns(["_lrow"])
    if tail is not None and tail.num_rows:
        new_led = pa.concat_tables([new_led, conform(tail, lschema, strict=False)])

    if back.num_rows:
        back_rows = rows_ok[(rows_ok >= n_kept) & (rows_ok < n_kept + n_again)]
        stats["brought_back"] = _counts(old_reason.take(pa.array(lrow[back_rows], pa.int64())))
        stats["_back_ids"] = back.column("id").to_pylist()
        stats["undeduped"] = back.num_rows if recipe.dedup_config() is not None else 0
    new_kept = pa.concat_tables([stay_kept, back]) if back.num_rows else stay_kept
    stats["kept_after"] = new_kept.num_rows
    return new_kept, new_led, stats


def _settle_clusters(kept: pa.Table, ledger: pa.Table, dropped_ids: list[str]) -> tuple[pa.Table, set[str]]:
    """A kept row whose every twin left (a filter dropped them) is a singleton again: its dup_cluster is null.

    Clusters span sources, so this runs over the whole manifest. Returns the kept rows and the ids of
    the kept rows now dropped while their twins remain (orphaned clusters).
    """
    is_dup = pc.fill_null(pc.is_in(ledger.column("stage"), pa.array(DEDUP_STAGES)), False)
    members = pc.unique(pc.drop_null(ledger.column("dup_cluster").filter(is_dup))) if "dup_cluster" in ledger.column_names \
        else pa.array([], pa.string())
    cluster = kept.column("dup_cluster")
    alone = pc.and_(pc.is_valid(cluster), pc.invert(pc.fill_null(pc.is_in(cluster, members), False)))
    if _count(alone):
        at = kept.schema.get_field_index("dup_cluster")
        kept = kept.set_column(at, kept.schema.field(at), pc.if_else(alone, pa.scalar(None, cluster.type), cluster))
    return kept, set(dropped_ids) & set(members.to_pylist())


def _later_columns(back: pa.Table, ops: list[Any], last_filter: int) -> pa.Table:
    """Run the operators after the filters that need no media (token counts) on rows that came back."""
    from curation.filters.tokens import TokenCounter

    for op in ops[last_filter + 1:]:
        if isinstance(op, TokenCounter):
            op.setup()
            back = op(back)
    return back


def _as_ledger(gone: pa.Table, lschema: pa.Schema, keep: tuple[str, ...] = ()) -> pa.Table:
    """Ledger rows from re-judged rows: the new decision, the row's columns, and its media path as ``uri``."""
    out = gone
    for name, src in (("stage", DROP_STAGE), ("reason", DROP_REASON), ("detail", DROP_DETAIL)):
        col = gone.column(src)
        if name in out.column_names:
            out = out.set_column(out.column_names.index(name), name, col)
        else:
            out = out.append_column(name, col)
    if "uri" not in out.column_names or pc.all(pc.is_null(out.column("uri"))).as_py():
        first = _first_uri(out.column("media"))
        if "uri" in out.column_names:
            out = out.set_column(out.column_names.index("uri"), "uri", pc.coalesce(out.column("uri"), first))
        else:
            out = out.append_column("uri", first)
    out = out.drop_columns([c for c in out.column_names if c in DECISION_COLUMNS or (c.startswith("_") and c not in keep)])
    target = lschema
    for name in keep:
        target = target.append(out.schema.field(name))
    return conform(out.select([n for n in out.column_names if target.get_field_index(n) >= 0]), target, strict=False)


def _first_uri(media: pa.ChunkedArray) -> pa.Array:
    """The first media entry's uri of each row (null for rows without media)."""
    arr = media.combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
    offsets = arr.offsets.to_numpy()[:-1]
    flat_uri = arr.values.field("uri")
    take = np.where(lengths > 0, offsets, -1)
    return flat_uri.take(pa.array(take, mask=take < 0))


def to_json(r: RetuneResult) -> dict[str, Any]:
    """The preview as JSON (``smolcurate retune --json``)."""
    return {
        "changes": [{"field": f"filters.{s}.{k}", "old": a, "new": b} for s, k, a, b in r.changes],
        "sources": r.sources,
        "brought_back": len(r.brought_back), "newly_dropped": len(r.newly_dropped),
        "unscored": r.total("unscored"), "undeduped": r.total("undeduped"), "orphaned_clusters": r.total("orphaned"),
    }


__all__ = ["RETUNABLE", "RetuneResult", "format_result", "parse_sets", "retune", "threshold_checks", "to_json"]
