"""From scanned metadata to repeat counts: targets per group, feasibility checks, allocation.

Nothing here reads or writes rows; a plan is cheap to make and print
(`smolcurate mix --dry-run`), and `write.py` turns it into a manifest. Nor does
it hold a value per row: the scan's codes are streamed shard by shard, each
group's rows are spilled once to a file of its own for the allocation's passes,
and the repeat counts are replayed from each group's decisions when needed
(:meth:`MixturePlan.repeats`).
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from curation.mixing.allocate import Chunk, Draw, GroupResult, Replay, allocate_group, group_rng, priorities
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
    draws: list[Draw]  # per group: its allocation's decisions
    groups: list[GroupResult]
    total: float  # resolved total in the `by` unit
    unit: str  # the `by` unit
    _counts: dict = field(default_factory=dict, repr=False)

    @property
    def rows_selected(self) -> int:
        return sum(g.rows_selected for g in self.groups)

    @property
    def samples(self) -> int:
        return sum(g.samples for g in self.groups)

    @property
    def tokens(self) -> int | None:
        if not self.scan.has_tokens:
            return None
        return int(sum(g.extra.get("tokens", 0) for g in self.groups))

    def repeats(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first scan index, int32 repeat count per row) for each input shard in scan order; 0 = not in the mixture."""
        n_groups = len(self.groups)
        rngs = [group_rng(self.config.seed, g.name) for g in self.groups]
        replays = [Replay(d) for d in self.draws]
        seen = [0] * n_groups
        cols = ["group", "weight", "keep", "cap"] + (["tokens"] if self.unit == "tokens" else [])
        for start, c in self.scan.shards(cols):
            g_idx = _eligible(c, n_groups)
            rep = np.zeros(len(g_idx), dtype=np.int32)
            for g in np.unique(g_idx[g_idx < n_groups]).tolist():
                m = np.flatnonzero(g_idx == g)
                chunk = Chunk(seen[g], priorities(rngs[g], c["weight"][m], c["keep"][m]), _mass(c, m, self.unit),
                              c["cap"][m].astype(np.int64))
                rep[m] = replays[g].repeat(chunk)
                seen[g] += len(m)
            yield start, rep

    @property
    def repeat(self) -> np.ndarray:
        """Every row's repeat count (loads one value per row: for notebooks and small mixtures)."""
        parts = [r for _, r in self.repeats()]
        return np.concatenate(parts) if parts else np.zeros(0, np.int32)

    def counts(self) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        """Samples and tokens in the mixture per source, modality and category code (one pass, cached)."""
        if self._counts:
            return self._counts
        scan = self.scan
        levels = {"source": len(scan.source_names), "modality": len(scan.modality_names)}
        if scan.category_names is not None:
            levels["category"] = len(scan.category_names)
        samples = {k: np.zeros(n + 1) for k, n in levels.items()}
        tokens = {k: np.zeros(n + 1) for k, n in levels.items()} if scan.has_tokens else None
        cols = list(levels) + (["tokens"] if scan.has_tokens else [])
        for (start, rep), (_, c) in zip(self.repeats(), scan.shards(cols)):
            for k, n in levels.items():
                idx = np.where(c[k] >= 0, c[k], n)
                samples[k] += np.bincount(idx, weights=rep, minlength=n + 1)
                if tokens is not None:
                    tokens[k] += np.bincount(idx, weights=rep.astype(np.float64) * c["tokens"], minlength=n + 1)
        self._counts = {k: (samples[k][:n], tokens[k][:n] if tokens is not None else None) for k, n in levels.items()}
        return self._counts


def _eligible(c: dict[str, np.ndarray], n_groups: int) -> np.ndarray:
    """Each row's group code, ``n_groups`` where it is not in the mixture (no group, or weight 0)."""
    return np.where((c["group"] >= 0) & (c["weight"] > 0), c["group"], n_groups)


def _mass(c: dict[str, np.ndarray], rows: np.ndarray, unit: str) -> np.ndarray:
    return c["tokens"][rows].astype(np.float64) if unit == "tokens" else np.ones(len(rows))


class _GroupRows:
    """Each group's eligible rows (weight, keep, cap, mass) spilled once, in scan order, to a file of its own, so
    that the allocation's passes over one group read that group alone; its chunks carry freshly drawn priorities."""

    SCHEMA = pa.schema([("weight", pa.float32()), ("keep", pa.bool_()), ("cap", pa.int16()), ("mass", pa.float64()),
                        ("tokens", pa.int64())])

    def __init__(self, names: list[str], seed: int) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="smolcurate-mix-groups-")
        self.names, self.seed = names, seed
        self.paths = [Path(self.dir.name) / f"g{i:04d}.arrow" for i in range(len(names))]
        self.writers = [ipc.new_file(p, self.SCHEMA) for p in self.paths]

    def add(self, g: int, c: dict[str, np.ndarray], rows: np.ndarray, mass: np.ndarray) -> None:
        tokens = c["tokens"][rows] if "tokens" in c else np.zeros(len(rows), np.int64)
        self.writers[g].write_table(pa.table({"weight": c["weight"][rows], "keep": c["keep"][rows], "cap": c["cap"][rows],
                                              "mass": mass, "tokens": tokens}, schema=self.SCHEMA))

    def close(self) -> None:
        for w in self.writers:
            w.close()

    def chunks(self, g: int) -> Iterator[Chunk]:
        rng = group_rng(self.seed, self.names[g])
        first = 0
        with pa.OSFile(str(self.paths[g])) as source:  # read, not mapped: one batch resident at a time
            reader = ipc.open_file(source)
            for i in range(reader.num_record_batches):
                b = reader.get_batch(i)
                weight = b.column("weight").to_numpy()
                yield Chunk(first, priorities(rng, weight, b.column("keep").to_numpy(zero_copy_only=False)),
                            b.column("mass").to_numpy(), b.column("cap").to_numpy().astype(np.int64),
                            b.column("tokens").to_numpy())
                first += len(weight)


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
    # one pass: each group's sizes, and its rows spilled for the allocation
    rows = np.zeros(n_groups, np.int64)
    one_epoch, capacity, kept, tok = (np.zeros(n_groups) for _ in range(4))
    by_cap: list[np.ndarray] = [np.zeros(0) for _ in range(n_groups)]
    caps: list[set[int]] = [set() for _ in range(n_groups)]
    spill = _GroupRows(scan.group_names, cfg.seed)
    cols = ["group", "weight", "keep", "cap"] + (["tokens"] if scan.has_tokens else [])
    for _, c in scan.shards(cols):
        g_idx = _eligible(c, n_groups)
        for g in np.unique(g_idx[g_idx < n_groups]).tolist():
            m = np.flatnonzero(g_idx == g)
            mass = _mass(c, m, unit)
            cap = c["cap"][m].astype(np.int64)
            rows[g] += len(m)
            one_epoch[g] += mass.sum()
            capacity[g] += np.dot(mass, cap)
            kept[g] += mass[c["keep"][m]].sum()
            if scan.has_tokens:
                tok[g] += c["tokens"][m].sum(dtype=np.float64)
            here = np.bincount(cap, weights=mass)
            if len(here) > len(by_cap[g]):
                by_cap[g] = np.concatenate([by_cap[g], np.zeros(len(here) - len(by_cap[g]))])
            by_cap[g][: len(here)] += here
            caps[g].update(np.unique(cap).tolist())
            spill.add(g, c, m, mass)
    spill.close()

    total = _resolve_total(cfg, scan.group_names, shares, rows, capacity, tok)
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
        _raise_shortfall(cfg, scan, short, total, unit, caps)

    draws = []
    for i, g in enumerate(groups):
        draw = allocate_group(lambda i=i: spill.chunks(i), by_cap[i], min(g.target, g.capacity), integral=unit == "samples")
        draws.append(draw)
        replay = Replay(draw)
        achieved, tokens_in = 0.0, 0
        for chunk in spill.chunks(i):
            rep = replay.repeat(chunk)
            achieved += float(np.dot(rep, chunk.mass))
            tokens_in += int(np.dot(rep, chunk.tokens))
            g.rows_selected += int(np.count_nonzero(rep))
            g.samples += int(rep.sum(dtype=np.int64))
            g.max_repeat = max(g.max_repeat, int(rep.max(initial=0)))
        g.achieved = achieved
        if scan.has_tokens:
            g.extra["tokens"] = tokens_in
    spill.dir.cleanup()
    return MixturePlan(config=cfg, inputs=inputs, scan=scan, draws=draws, groups=groups, total=float(total), unit=unit)


def _resolve_total(cfg: MixtureConfig, names: list[str], shares: np.ndarray, rows: np.ndarray, capacity: np.ndarray,
                  tok: np.ndarray) -> float:
    """The total in the `by` unit: given, converted from the other unit, or the largest the caps allow."""
    active = shares > 0
    if cfg.total is None:
        ratio = np.where(active, capacity / np.where(active, shares, 1.0), np.inf)
        total = float(ratio.min()) if active.any() else 0.0
        if total <= 0:
            empty = [names[i] for i in np.flatnonzero(active & (capacity <= 0))]
            raise RecipeError(
                f"no total fits: {', '.join(repr(e) for e in empty)} hold no rows; set `total` or drop their shares",
                field=_shares_field(cfg),
            )
        return math.floor(total) if cfg.by == "samples" else total
    if cfg.unit_of_total == cfg.by:
        return float(cfg.total)
    # the total is in the other unit: convert through each group's mean tokens per sample
    n_groups = len(shares)
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


def _raise_shortfall(cfg: MixtureConfig, scan: ScanResult, short: list[GroupResult], total: float, unit: str,
                     caps: list[set[int]]) -> None:
    parts = []
    for g in short:
        mine = sorted(caps[scan.group_names.index(g.name)])
        cap_text = f"max_epochs {int(mine[0])}" if len(mine) == 1 else "its repeat caps"
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
    names = {"source": scan.source_names, "modality": scan.modality_names, "category": scan.category_names}
    if level not in names or names[level] is None:
        raise ValueError(level)
    samples, tokens = plan.counts()[level]
    return names[level], samples, tokens


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
