"""Phase 2 of resolve: one hash partition's buckets -> edges, and candidates for the methods' own phases.

What a bucket of a kind means is the kind's declaration (:class:`curation.dedup.methods.EdgeKind`):
a ``star`` (digests, LSH bands) or ``pairs`` checked by the kind's ``check``; matches that the
method verifies later are written as candidates. No method is named here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.dedup.config import DedupConfig
from curation.dedup.layout import EDGE_SCHEMA, PAIR_CHUNK, ROLE_EVAL, ROLE_NEW
from curation.dedup.methods import candidate_groups, edge_kinds, exact_kinds, kinds_where
from curation.dedup.records import read_partition
from curation.dedup.minhash import expand_pairs


def group_bounds(*cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, sizes) of runs of equal values across the given sorted columns."""
    n = cols[0].size
    change = np.zeros(n, dtype=bool)
    if n:
        change[0] = True
    for c in cols:
        change[1:] |= c[1:] != c[:-1]
    starts = np.flatnonzero(change)
    sizes = np.diff(np.append(starts, n))
    return starts, sizes


def _pair_chunks(starts: np.ndarray, sizes: np.ndarray, limit: int = PAIR_CHUNK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """All within-group pairs, in chunks of at most about ``2 * limit`` pairs; a huge group is cut by rows.

    Chunk boundaries come from cumulative pair counts (no Python loop per group
    or per row): a partition of a million images has hundreds of thousands of buckets.
    """
    starts = np.asarray(starts, dtype=np.int64)
    sizes = np.asarray(sizes, dtype=np.int64)
    npairs = sizes * (sizes - 1) // 2
    small = np.flatnonzero(npairs <= limit)
    if small.size:
        chunk = np.cumsum(npairs[small]) // max(limit, 1)  # a chunk ends where the running count passes a multiple
        for seg in np.split(small, np.flatnonzero(np.diff(chunk)) + 1):
            yield expand_pairs(starts[seg], sizes[seg])
    for g in np.flatnonzero(npairs > limit):
        s, m = int(starts[g]), int(sizes[g])
        partners = m - 1 - np.arange(m - 1, dtype=np.int64)  # row r pairs with the m - 1 - r rows after it
        cut = np.cumsum(partners) // max(limit, m)
        for rows in np.split(np.arange(m - 1, dtype=np.int64), np.flatnonzero(np.diff(cut)) + 1):
            part = partners[rows]
            p = np.repeat(s + rows, part)
            q = p + 1 + (np.arange(p.size) - np.repeat(np.cumsum(part) - part, part))
            yield p, q


def _seq_matrix(col: pa.ChunkedArray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Padded ``uint64[n, length]`` matrix and lengths of a list<uint64> column, straight from Arrow buffers."""
    arr = col.combine_chunks()
    offsets = np.asarray(arr.offsets.to_numpy(), dtype=np.int64)
    lens = np.diff(offsets)
    lens[~np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)] = 0
    values = np.asarray(arr.values.to_numpy(zero_copy_only=False), dtype=np.uint64)
    mat = np.zeros((len(arr), max(length, 1)), dtype=np.uint64)
    rows = np.repeat(np.arange(len(arr)), lens)
    starts = np.repeat(offsets[:-1], lens)
    cols = np.arange(rows.size) - np.repeat(np.cumsum(lens) - lens, lens)
    mat[rows, cols] = values[starts + cols]
    return mat, lens


def _color_matrix(col: pa.ChunkedArray, length: int) -> np.ndarray:
    """``float32[n, length, 3]`` chroma moments (NaN where unknown) of a list<float32> column of triplets."""
    arr = col.combine_chunks()
    offsets = np.asarray(arr.offsets.to_numpy(), dtype=np.int64)
    lens = np.diff(offsets) // 3
    lens[~np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)] = 0
    lens = np.minimum(lens, length)
    values = np.asarray(arr.values.to_numpy(zero_copy_only=False), dtype=np.float32)
    mat = np.full((len(arr), max(length, 1), 3), np.nan, dtype=np.float32)
    rows = np.repeat(np.arange(len(arr)), lens)
    item = np.arange(rows.size) - np.repeat(np.cumsum(lens) - lens, lens)
    base = np.repeat(offsets[:-1], lens) + 3 * item
    for c in range(3):
        mat[rows, item, c] = values[base + c]
    return mat


def process_partition(path: Path, cfg: DedupConfig) -> tuple[pa.Table, pa.Table]:
    """Edges and candidate pairs (for the methods' resolve phases) of one partition file."""
    t = read_partition(path)
    empty = EDGE_SCHEMA.empty_table()
    if t.num_rows == 0:
        return empty, empty
    kind = t.column("kind").to_numpy()
    key = t.column("key").to_numpy()
    idkey = t.column("idkey").to_numpy()
    node = t.column("node").to_numpy()
    order = np.lexsort((node, idkey, key, kind))
    t = t.take(pa.array(order))
    kind, key, idkey, node = kind[order], key[order], idkey[order], node[order]
    role = t.column("role").to_numpy()
    dedup = t.column("dedup").to_numpy(zero_copy_only=False)
    edges: list[pa.Table] = []
    cands: list[pa.Table] = []

    def add(target, a, b, k, dist, contam):
        if a.size == 0:
            return
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        keep = lo != hi
        target.append(
            pa.table(
                {"a": lo[keep], "b": hi[keep], "kind": np.asarray(k, np.int8)[keep] if not np.isscalar(k) else np.full(keep.sum(), k, np.int8),
                 "dist": np.asarray(dist, np.float32)[keep] if not np.isscalar(dist) else np.full(keep.sum(), dist, np.float32),
                 "contam": np.asarray(contam, bool)[keep] if not np.isscalar(contam) else np.full(keep.sum(), contam)},
                schema=EDGE_SCHEMA,
            )
        )

    starts, sizes = group_bounds(kind, key)
    gkind = kind[starts]
    is_d = dedup & (role != ROLE_EVAL)
    is_e = role == ROLE_EVAL
    is_new = role == ROLE_NEW
    group_of = np.repeat(np.arange(starts.size), sizes)

    kinds = edge_kinds()
    star_kinds = kinds_where(lambda v: v.bucket == "star")
    later = tuple(k for k, v in kinds.items() if v.verify_later(cfg))  # candidates, verified by a method phase
    # ---- star buckets (digests, LSH bands): a star from the first dedup member (smallest id key)
    star = np.isin(gkind, star_kinds) & (sizes > 1)
    if star.any():
        pos = np.flatnonzero(np.isin(group_of, np.flatnonzero(star)))
        g = group_of[pos]
        big = np.iinfo(np.int64).max
        first_d = np.full(starts.size, big)
        np.minimum.at(first_d, g[is_d[pos]], pos[is_d[pos]])
        first_e = np.full(starts.size, big)
        np.minimum.at(first_e, g[is_e[pos]], pos[is_e[pos]])
        # dedup edges
        sel = pos[is_d[pos] & (first_d[g] != pos) & (first_d[g] != big)]
        if sel.size:
            center = first_d[group_of[sel]]
            target = ~np.isin(kind[sel], later)
            add(edges, node[center[target]], node[sel[target]], kind[sel[target]], 0.0, False)
            add(cands, node[center[~target]], node[sel[~target]], kind[sel[~target]], 0.0, False)
        # contamination: every new row in a bucket with an eval row
        has_e = first_e != big
        sel = pos[is_new[pos] & has_e[g]]
        if sel.size:
            ex = ~np.isin(kind[sel], later)
            add(edges, node[sel[ex]], node[first_e[group_of[sel[ex]]]], kind[sel[ex]], 0.0, True)
            # verified later (LSH bands): each new row against every eval row of the bucket
            mh = sel[~ex]
            if mh.size:
                evals = pos[is_e[pos] & np.isin(kind[pos], later)]
                eg = group_of[evals]
                order_e = np.argsort(eg, kind="stable")
                evals, eg = evals[order_e], eg[order_e]
                lo_i = np.searchsorted(eg, group_of[mh], side="left")
                hi_i = np.searchsorted(eg, group_of[mh], side="right")
                cnt = hi_i - lo_i
                a = np.repeat(mh, cnt)
                b = evals[np.repeat(lo_i, cnt) + (np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt))]
                add(cands, node[a], node[b], kind[a], 0.0, True)

    # ---- pair buckets (perceptual hashes): every pair inside, checked here by the kind's own check
    pair_kinds = kinds_where(lambda v: v.bucket == "pairs")
    perc = np.isin(gkind, pair_kinds) & (sizes > 1)
    if perc.any():
        seq_col = t.column("seq")
        length = int(pc.max(pc.list_value_length(seq_col)).as_py() or 1)
        seq_mat, lens = _seq_matrix(seq_col, length)
        color_col = t.column("color")
        color_mat = _color_matrix(color_col, length) if color_col.null_count < t.num_rows else None
        flat = t.column("flat").to_numpy()
        pg = np.flatnonzero(perc)
        for p, q in _pair_chunks(starts[pg], sizes[pg]):
            dd = is_d[p] & is_d[q]
            ce = (is_new[p] & is_e[q]) | (is_e[p] & is_new[q])
            keep = dd | ce
            p, q, dd = p[keep], q[keep], dd[keep]
            if p.size == 0:
                continue
            for k in pair_kinds:
                m = kind[p] == k
                if not m.any():
                    continue
                ok, dist = kinds[k].check(cfg, seq_mat, lens, color_mat, flat, p[m], q[m])
                pm, qm, ddm = p[m][ok], q[m][ok], dd[m][ok]
                # matches a method verifies in its own phase (e.g. pHash thumbnails) are candidates for now
                add(cands if k in later else edges, node[pm], node[qm], k, dist[ok], ~ddm)
    out_edges = pa.concat_tables(edges) if edges else empty
    out_cands = pa.concat_tables(cands) if cands else empty
    return dedupe_edges(out_edges), dedupe_by_kind(out_cands)


def dedupe_by_kind(t: pa.Table) -> pa.Table:
    """:func:`dedupe_edges` separately for each resolve phase's candidates (each phase verifies its own)."""
    if t.num_rows == 0:
        return t
    groups = candidate_groups()
    kind = t.column("kind")
    parts = [dedupe_edges(t.filter(pc.is_in(kind, pa.array(g, pa.int8())))) for g in groups]
    claimed = pa.array([k for g in groups for k in g], pa.int8())
    rest = t.filter(pc.invert(pc.is_in(kind, claimed)))
    if rest.num_rows:
        parts.append(dedupe_edges(rest))
    return pa.concat_tables(parts)


def dedupe_edges(t: pa.Table) -> pa.Table:
    """One row per (a, b, contam): the strongest evidence (exact kinds first, then the smallest distance)."""
    if t.num_rows == 0:
        return t
    a, b = t.column("a").to_numpy(), t.column("b").to_numpy()
    k = t.column("kind").to_numpy()
    d = t.column("dist").to_numpy()
    c = t.column("contam").to_numpy(zero_copy_only=False)
    exact_first = (~np.isin(k, exact_kinds())).astype(np.int8)
    order = np.lexsort((k, d, exact_first, c, b, a))
    a, b, c = a[order], b[order], c[order]
    keep = np.ones(a.size, dtype=bool)
    keep[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1]) | (c[1:] != c[:-1])
    return t.take(pa.array(order[keep]))
