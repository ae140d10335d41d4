"""Global thresholds: cutoffs that need every chunk's scores, such as DataComp's top fraction per source.

An operator that keeps "the top 30% by clip score of each source" cannot decide
inside a chunk. Such an operator declares ``global_cutoff`` and ``keep(n)`` (see
:class:`curation.enrich.clip.ClipScoreFilter`): after every chunk is staged,
its score column is read per source from the staged kept rows (a few passes of
one chunk at a time: :func:`top_cutoff`), the cutoff is computed once and saved
in the staging area, then every staged chunk moves the rows below it to its ledger (stage and reason of the operator). Saving
the cutoffs before rewriting makes the pass resumable: a rerun after a kill
applies the same cutoffs, and rows already moved are not scored again.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.engine.chunk import to_ledger
from curation.engine.staging import Staging
from curation.filters import source_operators
from curation.operators import DECISION_COLUMNS, split_decided
from curation.readers import PRIVATE_POS
from curation.recipe import Recipe
from manifests.fsutil import atomic_write, atomic_write_json

CUTOFFS = "cutoffs.json"
CUTOFFS_DONE = "cutoffs.done"


def global_operators(recipe: Recipe) -> dict[str, list[tuple[int, Any]]]:
    """{operator key: [(source index, operator)]} for operators with a global cutoff."""
    found: dict[str, list[tuple[int, Any]]] = {}
    for i in range(len(recipe.sources)):
        for op in source_operators(recipe, i):
            g = getattr(op, "global_cutoff", None)
            if g is not None and g():
                found.setdefault(type(op).__name__, []).append((i, op))
    return found


def apply_cutoffs(recipe: Recipe, staging: Staging, nchunks: int, chunk_of: list[int]) -> dict[str, dict[str, float]]:
    """Compute and apply every global cutoff; returns {operator: {source name: cutoff}} (also when resumed)."""
    ops = global_operators(recipe)
    if not ops:
        return {}
    saved = staging.path(CUTOFFS)
    if saved.is_file():
        cutoffs = json.loads(saved.read_text())
    else:
        cutoffs = {}
        for key, pairs in ops.items():
            cutoffs[key] = {}
            for i, op in pairs:
                column = op.global_cutoff()["column"]
                paths = [staging.kept_path(k) for k in range(nchunks)
                         if chunk_of[k] == i and column in pq.read_schema(staging.kept_path(k)).names]
                cut = top_cutoff(lambda: _scores(paths, column), op.keep)
                if cut is not None:
                    cutoffs[key][recipe.sources[i].name] = cut
        atomic_write_json(saved, cutoffs)
    if staging.path(CUTOFFS_DONE).is_file():
        return cutoffs
    for k in range(nchunks):
        i = chunk_of[k]
        name = recipe.sources[i].name
        todo = [(op, cutoffs[key][name]) for key, pairs in ops.items() for j, op in pairs
                if j == i and name in cutoffs.get(key, {})]
        if todo:
            _apply_chunk(staging, k, todo)
    atomic_write(staging.path(CUTOFFS_DONE), lambda p: p.write_text("done"))
    return cutoffs


def _scores(paths: list, column: str) -> Iterator[np.ndarray]:
    for path in paths:
        yield pq.read_table(path, columns=[column]).column(column).to_numpy(zero_copy_only=False).astype(np.float64)


#: bits of the order key settled per pass over the scores (4 passes for a float64)
RADIX_BITS = 16


def top_cutoff(scores: Callable[[], Iterable[np.ndarray]], keep: Callable[[int], int | None]) -> float | None:
    """The score of the last row kept when ``keep(n)`` of the ``n`` scored (non-NaN) rows are kept, highest first.

    Exact, and the driver holds one chunk's scores and a histogram, not a score per row: the k-th largest is
    found digit by digit (RADIX_BITS at a time) of an order-preserving integer key, one pass over the chunks'
    score column per digit (the first also counts the rows). ``scores()`` yields them afresh for each pass.
    """
    prefix, settled, width = np.uint64(0), 0, RADIX_BITS
    rank = None
    while settled < 64:
        shift = np.uint64(64 - settled - width)
        counts = np.zeros(1 << width, dtype=np.int64)
        for v in scores():
            key = _order_key(v[~np.isnan(v)])
            if settled:
                key = key[(key >> np.uint64(64 - settled)) == prefix]
            counts += np.bincount(((key >> shift) & np.uint64((1 << width) - 1)).astype(np.int64), minlength=1 << width)
        if rank is None:  # the first pass counts every scored row too
            n = int(counts.sum())
            k = keep(n) if n else None
            if not k:
                return None
            rank = n - min(k, n)  # 0-based rank, ascending, of the cutoff
        below = np.cumsum(counts)
        digit = int(np.searchsorted(below, rank, side="right"))
        rank -= int(below[digit - 1]) if digit else 0
        prefix = (prefix << np.uint64(width)) | np.uint64(digit)
        settled += width
    return float(_from_order_key(np.array([prefix], dtype=np.uint64))[0])


_SIGN = np.uint64(1 << 63)


def _order_key(v: np.ndarray) -> np.ndarray:
    """float64 -> uint64 whose unsigned order is the floats' order (negative: all bits flipped; else sign set)."""
    bits = np.ascontiguousarray(v, dtype=np.float64).view(np.uint64)
    return np.where(bits & _SIGN, ~bits, bits | _SIGN)


def _from_order_key(key: np.ndarray) -> np.ndarray:
    return np.where(key & _SIGN, key & ~_SIGN, ~key).view(np.float64)


def _apply_chunk(staging: Staging, k: int, todo: list[tuple[Any, float]]) -> None:
    """Move one staged chunk's rows below the cutoffs to its ledger; idempotent, so a killed pass can rerun.

    The ledger is written before the kept rows: a kill in between leaves the
    moved rows in both files, and the rerun adds only rows not in the ledger yet.
    """
    kept = staging.read_kept(k)
    if kept.num_rows == 0:
        return
    marked = kept
    for op, cut in todo:
        marked = op.apply_cutoff(marked, cut)
    still, gone = split_decided(marked)
    if gone.num_rows == 0:
        return
    still = still.drop_columns([c for c in DECISION_COLUMNS if c in still.column_names])
    old = staging.read_dropped(k)
    fresh = gone.filter(pc.invert(pc.is_in(gone.column(PRIVATE_POS), value_set=old.column(PRIVATE_POS))))
    ledger = pa.concat_tables([old, to_ledger(fresh)], promote_options="default") if fresh.num_rows else old
    if ledger.num_rows > 1:
        ledger = ledger.sort_by(PRIVATE_POS)
    counts = staging.counts(k)
    counts.update(kept=still.num_rows, dropped=ledger.num_rows)
    atomic_write(staging.dropped_path(k), lambda p: pq.write_table(ledger, p, compression="zstd"))
    atomic_write(staging.kept_path(k), lambda p: pq.write_table(still, p, compression="zstd"))
    atomic_write_json(staging.marker(k), counts)
