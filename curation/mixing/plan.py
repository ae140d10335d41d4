"""From scanned metadata to repeat counts: targets per group, feasibility checks, allocation.

Nothing here reads or writes rows; a plan is cheap to make and print
(`smolcurate mix --dry-run`), and `write.py` turns it into a manifest.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from curation.mixing.allocate import GroupResult, allocate_group, group_rng
from curation.mixing.config import MixtureConfig
from curation.mixing.scan import InputManifest, ScanResult
from manifests.errors import RecipeError, UserError

#: relative slack before a target counts as beyond a group's capacity (float sums of token counts)
CAPACITY_SLACK = 1e-9


@dataclass
class MixturePlan:
    """Everything decided about a mixture before any row is written."""

    config: MixtureConfig
    inputs: list[InputManifest]
    scan: ScanResult
    repeat: np.ndarray  # int32 per scanned row; 0 = not in the mixture
    groups: list[GroupResult]
    total: float  # resolved total in the `by` unit
    unit: str  # the `by` unit

    @property
    def rows_selected(self) -> int:
        return int(np.count_nonzero(self.repeat))

    @property
    def samples(self) -> int:
        return int(self.repeat.sum(dtype=np.int64))

    @property
    def tokens(self) -> int | None:
        if self.scan.tokens is None:
            return None
        return int(np.dot(self.repeat.astype(np.int64), self.scan.tokens))


def _fmt(x: float, unit: str) -> str:
    return f"{x:,.0f} {unit}"


def _shares_field(cfg: MixtureConfig) -> str:
    return "weights" if cfg.weights is not None else "modality_weights"


def _group_label(cfg: MixtureConfig, name: str) -> str:
    return f"{cfg.group_level} {name!r}"


def make_plan(cfg: MixtureConfig, inputs: list[InputManifest], scan: ScanResult) -> MixturePlan:
    """Resolve the total, check every group can meet its share, and draw repeat counts."""
    unit = cfg.by
    shares = np.array([cfg.shares[g] for g in scan.group_names], dtype=np.float64)
    n_groups = len(scan.group_names)
    eligible = (scan.group >= 0) & (scan.weight > 0)
    if unit == "tokens":
        assert scan.tokens is not None
        mass = scan.tokens.astype(np.float64)
    else:
        mass = np.ones(len(scan.group), dtype=np.float64)
    g_idx = np.where(eligible, scan.group, n_groups)  # n_groups = "not in the mixture"
    rows = np.bincount(g_idx, minlength=n_groups + 1)[:n_groups]
    one_epoch = np.bincount(g_idx, weights=mass, minlength=n_groups + 1)[:n_groups]
    capacity = np.bincount(g_idx, weights=mass * scan.cap, minlength=n_groups + 1)[:n_groups]
    kept = np.bincount(g_idx, weights=mass * scan.keep, minlength=n_groups + 1)[:n_groups]

    total = _resolve_total(cfg, scan, shares, rows, capacity, g_idx, n_groups)
    targets = shares * total
    if unit == "samples":
        targets = np.floor(targets + 0.5)

    groups = [
        GroupResult(
            name=name,
            share=float(shares[i]),
            target=float(targets[i]),
            rows=int(rows[i]),
            mass=float(one_epoch[i]),
            capacity=float(capacity[i]),
            kept_mass=float(kept[i]),
        )
        for i, name in enumerate(scan.group_names)
    ]
    _check_kept(cfg, groups, unit)
    short = [g for g in groups if g.target > g.capacity * (1 + CAPACITY_SLACK) + (0.5 if unit == "samples" else 0)]
    if short and not cfg.allow_shortfall:
        _raise_shortfall(cfg, scan, short, total, unit, g_idx)

    repeat = np.zeros(len(scan.group), dtype=np.int32)
    for i, g in enumerate(groups):
        members = np.flatnonzero(g_idx == i)
        if len(members) == 0:
            continue
        target = min(g.target, g.capacity)
        rep = allocate_group(
            mass[members],
            scan.weight[members].astype(np.float64),
            scan.keep[members],
            scan.cap[members].astype(np.int64),
            target,
            group_rng(cfg.seed, g.name),
            integral=unit == "samples",
        )
        repeat[members] = rep
        g.achieved = float(np.dot(rep, mass[members]))
        g.rows_selected = int(np.count_nonzero(rep))
        g.samples = int(rep.sum(dtype=np.int64))
        g.max_repeat = int(rep.max(initial=0))
    return MixturePlan(config=cfg, inputs=inputs, scan=scan, repeat=repeat, groups=groups, total=float(total), unit=unit)


def _resolve_total(
    cfg: MixtureConfig,
    scan: ScanResult,
    shares: np.ndarray,
    rows: np.ndarray,
    capacity: np.ndarray,
    g_idx: np.ndarray,
    n_groups: int,
) -> float:
    """The total in the `by` unit: given, converted from the other unit, or the largest the caps allow."""
    active = shares > 0
    if cfg.total is None:
        ratio = np.where(active, capacity / np.where(active, shares, 1.0), np.inf)
        total = float(ratio.min()) if active.any() else 0.0
        if total <= 0:
            empty = [scan.group_names[i] for i in np.flatnonzero(active & (capacity <= 0))]
            raise RecipeError(
                f"no total fits: {', '.join(repr(e) for e in empty)} hold no rows; set `total` or drop their shares",
                field=_shares_field(cfg),
            )
        return math.floor(total) if cfg.by == "samples" else total
    if cfg.unit_of_total == cfg.by:
        return float(cfg.total)
    # the total is in the other unit: convert through each group's mean tokens per sample
    assert scan.tokens is not None
    tok = np.bincount(g_idx, weights=scan.tokens.astype(np.float64), minlength=n_groups + 1)[:n_groups]
    mean = np.divide(tok, rows, out=np.zeros(n_groups), where=rows > 0)
    if cfg.by == "tokens":  # total given in samples
        denom = float(np.sum(np.divide(shares, mean, out=np.zeros(n_groups), where=mean > 0)))
    else:  # total given in tokens
        denom = float(np.sum(shares * mean))
    if denom <= 0:
        raise RecipeError("cannot convert the total: the weighted groups hold no tokens", field="total_unit")
    return float(cfg.total) / denom


def _check_kept(cfg: MixtureConfig, groups: list[GroupResult], unit: str) -> None:
    over = [g for g in groups if g.kept_mass > g.target * (1 + CAPACITY_SLACK) + (0.5 if unit == "samples" else 0)]
    if over:
        field = "keep" if cfg.keep else "rules"
        parts = [
            f"rows kept at 100% in {_group_label(cfg, g.name)} hold {_fmt(g.kept_mass, unit)}, "
            f"more than its target of {_fmt(g.target, unit)} by {_fmt(g.kept_mass - g.target, unit)}"
            for g in over
        ]
        raise RecipeError("; ".join(parts) + "; raise its share or the total, or keep fewer rows", field=field)


def _raise_shortfall(cfg: MixtureConfig, scan: ScanResult, short: list[GroupResult], total: float, unit: str, g_idx) -> None:
    parts = []
    for g in short:
        gi = scan.group_names.index(g.name)
        caps = np.unique(scan.cap[g_idx == gi])
        cap_text = f"max_epochs {int(caps[0])}" if len(caps) == 1 else "its repeat caps"
        parts.append(
            f"{_group_label(cfg, g.name)} falls short of its {g.share:.1%} {unit} share: it needs {_fmt(g.target, unit)} "
            f"of {_fmt(total, unit)} but holds {_fmt(g.mass, unit)} ({_fmt(g.capacity, unit)} at {cap_text}), "
            f"short by {_fmt(g.shortfall, unit)} ({g.shortfall / g.target:.1%})"
        )
    hint = "lower its share or the total, raise max_epochs, or set allow_shortfall: true"
    field = f"{_shares_field(cfg)}.{short[0].name}"
    raise UserError("; ".join(parts) + f"; {hint}", field=field)


def level_counts(plan: MixturePlan, level: str) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """Names, samples and tokens (None when unknown) in the mixture per source, modality or category."""
    scan = plan.scan
    if level == "source":
        names, codes = scan.source_names, scan.source
    elif level == "modality":
        names, codes = scan.modality_names, scan.modality
    elif level == "category":
        assert scan.category is not None and scan.category_names is not None
        names, codes = scan.category_names, scan.category
    else:
        raise ValueError(level)
    n = len(names)
    idx = np.where(codes >= 0, codes, n)
    samples = np.bincount(idx, weights=plan.repeat, minlength=n + 1)[:n]
    tokens = None
    if scan.tokens is not None:
        tokens = np.bincount(idx, weights=plan.repeat.astype(np.float64) * scan.tokens, minlength=n + 1)[:n]
    return names, samples, tokens


def describe_input(item: InputManifest) -> dict[str, Any]:
    """The provenance of one input: where it was, what it held, and hashes that pin its content."""
    from manifests.fsutil import sha256_file
    from manifests.writer import MANIFEST_FILE

    info = item.manifest.info
    return {
        "path": getattr(item.manifest, "uri", None) or str(item.path),  # a URI for an input on an object store
        "fingerprint": item.manifest.fingerprint(),
        "manifest_sha256": sha256_file(item.path / MANIFEST_FILE),
        "recipe_hash": info.get("recipe_hash"),
        "format_version": info.get("format_version"),
        "rows": int(info["totals"]["rows"]),
        "sources": item.sources if item.sources is not None else sorted(info.get("sources", {})),
    }
