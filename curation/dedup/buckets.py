"""Phase 2 of resolve: one hash partition's buckets -> verified edges and MinHash candidates."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.dedup.config import DedupConfig
from curation.dedup.layout import (
    EDGE_SCHEMA, EXACT_KINDS, GREY_CHROMA, K_MINHASH, K_VHASH, PAIR_CHUNK, PERCEPTUAL_KINDS, ROLE_EVAL, ROLE_NEW, U64,
)
from curation.dedup.minhash import expand_pairs
from curation.dedup.video import SCALES, align_sequences


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
    """All within-group pairs, in chunks of about `limit` pairs; a huge group is cut by rows."""
    npairs = sizes * (sizes - 1) // 2
    i = 0
    while i < starts.size:
        if npairs[i] > limit:
            s, m = int(starts[i]), int(sizes[i])
            row = 0
            while row < m - 1:
                # rows row..end such that the pair count stays near the limit
                take, acc = 0, 0
                while row + take < m - 1 and acc + (m - 1 - row - take) <= max(limit, m):
                    acc += m - 1 - row - take
                    take += 1
                firsts = np.arange(row, row + take)
                partners = m - 1 - firsts
                p = np.repeat(s + firsts, partners)
                q = p + 1 + (np.arange(p.size) - np.repeat(np.cumsum(partners) - partners, partners))
                yield p, q
                row += take
            i += 1
            continue
        j, acc = i, 0
        while j < starts.size and npairs[j] <= limit and acc + npairs[j] <= limit:
            acc += npairs[j]
            j += 1
        j = max(j, i + 1)
        yield expand_pairs(starts[i:j], sizes[i:j])
        i = j


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


def _verify_perceptual(kind: int, cfg: DedupConfig, seq: np.ndarray, lens: np.ndarray, color: np.ndarray | None,
                       flat: np.ndarray, p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(accepted mask, distance) for candidate pairs (p, q) of one partition's perceptual records."""
    pos = np.arange(seq.shape[1])[None, :]
    if kind == K_VHASH:
        # frame sequences are aligned (offsets and length scales: trims, retimed copies), see video.py
        fa = ((flat[p][:, None] >> pos.astype(np.uint64)) & U64(1)).astype(bool)
        fb = ((flat[q][:, None] >> pos.astype(np.uint64)) & U64(1)).astype(bool)
        ok = np.zeros(p.size, dtype=bool)
        shown = np.zeros(p.size, dtype=np.float32)
        la, lb = lens[p], lens[q]
        for x, y in {(int(u), int(v)) for u, v in zip(*np.unique(np.stack((la, lb)), axis=1))}:
            sel = np.flatnonzero((la == x) & (lb == y))
            frac, mean = align_sequences(seq[p[sel]], seq[q[sel]], x, y, fa[sel], fb[sel], cfg.video.max_distance,
                                         SCALES if cfg.video.align else (1.0,))
            ok[sel] = frac >= cfg.video.frame_fraction
            shown[sel] = np.nan_to_num(mean, nan=0.0)
        return ok, shown
    same_len = lens[p] == lens[q]
    dist = np.bitwise_count(seq[p] ^ seq[q]).astype(np.int64)  # [pairs, L]
    inside = pos < lens[p][:, None]
    within = np.where(inside, dist <= cfg.image.max_distance, True).all(axis=1)
    ok = same_len & within
    if color is not None:
        ca, cb = color[p], color[q]
        grey = (ca[..., 2] < GREY_CHROMA) | (cb[..., 2] < GREY_CHROMA)
        cdist = np.hypot(ca[..., 0] - cb[..., 0], ca[..., 1] - cb[..., 1])
        known = ~np.isnan(cdist)
        color_ok = np.where(inside & known & ~grey, cdist <= cfg.image.max_chroma_distance, True).all(axis=1)
        ok &= color_ok
    shown = np.where(inside, dist, 0).max(axis=1)
    return ok, shown.astype(np.float32)


def process_partition(path: Path, cfg: DedupConfig) -> tuple[pa.Table, pa.Table]:
    """Verified edges and MinHash candidate pairs of one partition file."""
    t = pq.read_table(path)
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

    # ---- exact and MinHash buckets: a star from the first dedup member (smallest id key)
    star = np.isin(gkind, (*EXACT_KINDS, K_MINHASH)) & (sizes > 1)
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
            target = np.isin(kind[sel], EXACT_KINDS)
            add(edges, node[center[target]], node[sel[target]], kind[sel[target]], 0.0, False)
            add(cands, node[center[~target]], node[sel[~target]], kind[sel[~target]], 0.0, False)
        # contamination: every new row in a bucket with an eval row
        has_e = first_e != big
        sel = pos[is_new[pos] & has_e[g]]
        if sel.size:
            ex = np.isin(kind[sel], EXACT_KINDS)
            add(edges, node[sel[ex]], node[first_e[group_of[sel[ex]]]], kind[sel[ex]], 0.0, True)
            # MinHash: each new row against every eval row of the bucket (verified later)
            mh = sel[~ex]
            if mh.size:
                evals = pos[is_e[pos] & (kind[pos] == K_MINHASH)]
                eg = group_of[evals]
                order_e = np.argsort(eg, kind="stable")
                evals, eg = evals[order_e], eg[order_e]
                lo_i = np.searchsorted(eg, group_of[mh], side="left")
                hi_i = np.searchsorted(eg, group_of[mh], side="right")
                cnt = hi_i - lo_i
                a = np.repeat(mh, cnt)
                b = evals[np.repeat(lo_i, cnt) + (np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt))]
                add(cands, node[a], node[b], K_MINHASH, 0.0, True)

    # ---- perceptual buckets: every pair inside, verified here
    perc = np.isin(gkind, PERCEPTUAL_KINDS) & (sizes > 1)
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
            for k in PERCEPTUAL_KINDS:
                m = kind[p] == k
                if not m.any():
                    continue
                ok, dist = _verify_perceptual(k, cfg, seq_mat, lens, color_mat, flat, p[m], q[m])
                pm, qm, ddm = p[m][ok], q[m][ok], dd[m][ok]
                # image matches are candidates until their thumbnails agree (imageverify.py)
                add(cands if (k != K_VHASH and cfg.image.verify) else edges, node[pm], node[qm], k, dist[ok], ~ddm)
    out_edges = pa.concat_tables(edges) if edges else empty
    out_cands = pa.concat_tables(cands) if cands else empty
    return dedupe_edges(out_edges), dedupe_by_kind(out_cands)


def dedupe_by_kind(t: pa.Table) -> pa.Table:
    """:func:`dedupe_edges` separately for MinHash and image candidates (each is verified by its own phase)."""
    if t.num_rows == 0:
        return t
    text = pc.equal(t.column("kind"), K_MINHASH)
    return pa.concat_tables([dedupe_edges(t.filter(text)), dedupe_edges(t.filter(pc.invert(text)))])


def dedupe_edges(t: pa.Table) -> pa.Table:
    """One row per (a, b, contam): the strongest evidence (exact kinds first, then the smallest distance)."""
    if t.num_rows == 0:
        return t
    a, b = t.column("a").to_numpy(), t.column("b").to_numpy()
    k = t.column("kind").to_numpy()
    d = t.column("dist").to_numpy()
    c = t.column("contam").to_numpy(zero_copy_only=False)
    exact_first = (~np.isin(k, EXACT_KINDS)).astype(np.int8)
    order = np.lexsort((k, d, exact_first, c, b, a))
    a, b, c = a[order], b[order], c[order]
    keep = np.ones(a.size, dtype=bool)
    keep[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1]) | (c[1:] != c[:-1])
    return t.take(pa.array(order[keep]))
