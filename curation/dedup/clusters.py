"""Phase 4 of resolve: connected components, representatives, contamination and the ledger details."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.dedup.config import EvalSetConfig
from curation.dedup.layout import (
    K_BYTES, RESULT_SCHEMA, ROLE_AGAINST, ROLE_NEW,
)
from curation.dedup.buckets import group_bounds
from curation.dedup.methods import edge_kinds, exact_kinds
from curation.dedup.unionfind import UnionFind
from manifests.fsutil import atomic_write


def clusters(edges: pa.Table, work: Path, evals: list[EvalSetConfig], files: Sequence[tuple[int, int]], out: Path) -> dict[int, Path]:
    """Write the answer of phase 4 input file by input file; returns {file index: its part} (files with rows in it).

    ``files`` is the ``(first node, rows)`` range of every input file of new rows, in order. The global work
    holds integers only (edges, labels, the ranked attributes of the rows in a cluster, their ids): each
    part's strings (ids, representatives, ledger details) are built and written for that file's rows alone,
    sorted by id, so the answer is never held whole and each chunk later reads only its own part.
    """
    a = edges.column("a").to_numpy()
    b = edges.column("b").to_numpy()
    kind = edges.column("kind").to_numpy()
    dist = edges.column("dist").to_numpy()
    contam = edges.column("contam").to_numpy(zero_copy_only=False)
    del edges
    dd = ~contam
    uf = UnionFind()
    uf.union(a[dd], b[dd])
    keys, roots = uf.components()
    del uf
    involved = np.unique(np.concatenate((keys, a[contam], b[contam])))
    attrs = _attributes(work, involved)
    del involved
    if attrs is None:
        return {}
    anode = attrs.column("node").to_numpy()
    aid = attrs.column("id").combine_chunks()  # Arrow strings: no Python object per clustered row
    rank = _dense_rank(aid)
    arole = attrs.column("role").to_numpy()
    aset = attrs.column("set").to_numpy()

    def idx(x: np.ndarray) -> np.ndarray:
        return np.searchsorted(anode, x)

    # contamination: new rows with a verified edge to an eval row
    contaminated: dict[int, tuple[str, str]] = {}
    if contam.any():
        ca, cb, ck, cdist = a[contam], b[contam], kind[contam], dist[contam]
        ra = arole[idx(ca)]
        new = np.where(ra == ROLE_NEW, ca, cb)
        ev = np.where(ra == ROLE_NEW, cb, ca)
        evset = aset[idx(ev)]
        evpos = idx(ev)
        # strongest evidence per row: exact kinds, then smallest distance, then eval id
        exact_first = (~np.isin(ck, exact_kinds())).astype(np.int8)
        order = np.lexsort((rank[evpos], cdist, exact_first, new))
        new_sorted = new[order]
        first = np.ones(order.size, dtype=bool)
        first[1:] = new_sorted[1:] != new_sorted[:-1]
        for o in order[first]:
            nn = int(new[o])
            name = evals[int(evset[o])].label if evals else "eval"
            contaminated[nn] = (
                f"contaminated:{name}",
                _detail(None, edge_kinds()[int(ck[o])].match, float(cdist[o]), aid[int(evpos[o])].as_py(), ck[o]),
            )
    cont_nodes = np.fromiter(contaminated, dtype=np.int64, count=len(contaminated))

    # the answer's rows as integers: node, its representative's row in attrs (-1: none), duplicate or not
    out_node, out_rep, out_dup = _representatives(keys, roots, idx, arole, attrs, rank, cont_nodes)
    del keys, roots
    rest = cont_nodes[~np.isin(cont_nodes, out_node)]  # contaminated rows outside every cluster
    out_node = np.concatenate((out_node, rest))
    out_rep = np.concatenate((out_rep, np.full(rest.size, -1, np.int64)))
    out_dup = np.concatenate((out_dup, np.zeros(rest.size, bool)))
    order = np.argsort(out_node, kind="stable")
    out_node, out_rep, out_dup = out_node[order], out_rep[order], out_dup[order]
    del order
    # verified dedup edges in both directions, sorted by their node: a file's rows meet theirs as one slice
    dn = np.concatenate((a[dd], b[dd]))
    order = np.argsort(dn, kind="stable")
    dn = dn[order]
    do = np.concatenate((b[dd], a[dd]))[order]
    dk = np.concatenate((kind[dd], kind[dd]))[order]
    ddist = np.concatenate((dist[dd], dist[dd]))[order]
    del a, b, kind, dist, contam, dd, order

    out.mkdir(parents=True, exist_ok=True)
    written: dict[int, Path] = {}
    lo_hi = np.array([(first, first + rows) for first, rows in files], dtype=np.int64).reshape(-1, 2)
    row_at = np.searchsorted(out_node, lo_hi)
    edge_at = np.searchsorted(dn, lo_hi)
    for fi in range(len(files)):
        r0, r1 = row_at[fi]
        if r1 == r0:
            continue
        e0, e1 = edge_at[fi]
        part = _part(out_node[r0:r1], out_rep[r0:r1], out_dup[r0:r1], (dn[e0:e1], do[e0:e1], dk[e0:e1], ddist[e0:e1]),
                     idx, aid, rank, contaminated, cont_nodes)
        path = out / f"part-{fi:06d}.parquet"
        atomic_write(path, lambda p, t=part: pq.write_table(t, p))
        written[fi] = path
    return written


def _attributes(work: Path, involved: np.ndarray) -> pa.Table | None:
    """Node attributes of the involved nodes only, streamed from the per-file node tables, sorted by node."""
    parts = []
    for path in sorted((work / "nodes").glob("f-*.parquet")):
        t = pq.read_table(path)
        m = np.isin(t.column("node").to_numpy(), involved, assume_unique=False)
        if m.any():
            parts.append(t.filter(pa.array(m)))
    if not parts:
        return None
    attrs = pa.concat_tables(parts)
    node = attrs.column("node").to_numpy()
    # the files hold ascending node ranges in name order, so this is sorted already (no second copy)
    return attrs if bool(np.all(node[1:] > node[:-1])) else attrs.sort_by("node")


def _representatives(keys: np.ndarray, roots: np.ndarray, idx: Callable[[np.ndarray], np.ndarray], arole: np.ndarray,
                     attrs: pa.Table, rank: np.ndarray, cont_nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(node, representative's attrs row, duplicate?) of every new row in a cluster.

    The representative follows the documented rank: existing (against) rows win, contaminated rows never
    represent, then the largest area, bytes, text, then the smallest id (its code point rank).
    """
    if keys.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool)
    k_idx = idx(keys)
    role = arole[k_idx]
    order = np.lexsort((
        rank[k_idx],
        -attrs.column("textlen").to_numpy()[k_idx].astype(np.int64),
        -attrs.column("nbytes").to_numpy()[k_idx],
        -attrs.column("area").to_numpy()[k_idx],
        np.isin(keys, cont_nodes).astype(np.int8),
        (role != ROLE_AGAINST).astype(np.int8),
        roots,
    ))
    node_s, root_s = keys[order], roots[order]
    starts, sizes = group_bounds(root_s)
    rep_node = np.repeat(node_s[starts], sizes)
    new = arole[idx(node_s)] == ROLE_NEW
    node_new, rep_new = node_s[new], rep_node[new]
    dup = (rep_new != node_new) & ~np.isin(node_new, cont_nodes)
    return node_new, idx(rep_new), dup


def _part(node: np.ndarray, rep: np.ndarray, dup: np.ndarray, directed: tuple[np.ndarray, ...],
          idx: Callable[[np.ndarray], np.ndarray], aid: pa.Array, rank: np.ndarray,
          contaminated: dict[int, tuple[str, str]], cont_nodes: np.ndarray) -> pa.Table:
    """The answer's rows of one input file (its nodes ascending), sorted by id."""
    ids = aid.take(pa.array(idx(node)))
    in_cluster = rep >= 0
    rep_id = pc.if_else(pa.array(in_cluster), aid.take(pa.array(np.maximum(rep, 0))), pa.nulls(node.size, pa.string()))
    reason = np.full(node.size, None, dtype=object)
    detail = np.full(node.size, None, dtype=object)
    reason[dup] = "duplicate"
    for i in np.flatnonzero(~dup & np.isin(node, cont_nodes)):
        reason[i], detail[i] = contaminated[int(node[i])]  # contaminated rows are few: their own reason and detail
    detail_arr = pa.array(detail, pa.string())
    if dup.any():
        dn, do, dk, ddist = directed
        rep = rep_id.filter(pa.array(dup))
        fallback = (K_BYTES, 0.0, rep)  # a duplicate without an edge of its own is shown as a copy of its rep
        bk, bd, bn = _best_match(dn, do, dk, ddist, idx, rank, node[dup], fallback[0])
        with_id = pc.if_else(pa.array(bn >= 0), aid.take(pa.array(np.maximum(bn, 0))), fallback[2])
        dup_detail = _details(rep, bk, bd, with_id)
        slot = np.cumsum(dup) - 1
        detail_arr = pc.if_else(pa.array(dup), dup_detail.take(pa.array(np.maximum(slot, 0))), detail_arr)
    table = pa.table({"id": ids, "dup_cluster": rep_id, "reason": pa.array(reason, pa.string()), "detail": detail_arr},
                     schema=RESULT_SCHEMA)
    return table.take(pc.sort_indices(table, sort_keys=[("id", "ascending")]))  # stable: equal ids keep node order


def _dense_rank(ids: pa.Array) -> np.ndarray:
    """Rank of every id in code point order, equal ids equal ranks (ties broken as by the strings themselves)."""
    order = pc.sort_indices(ids).to_numpy()
    s = ids.take(pa.array(order))
    step = np.ones(len(s), dtype=np.int64)
    if len(s) > 1:
        step[1:] = pc.not_equal(s.slice(1), s.slice(0, len(s) - 1)).to_numpy(zero_copy_only=False)
    step[0] = 0
    rank = np.empty(len(s), dtype=np.int64)
    rank[order] = np.cumsum(step)
    return rank


def _best_match(node: np.ndarray, other: np.ndarray, k: np.ndarray, d: np.ndarray, idx: Callable[[np.ndarray], np.ndarray],
                rank: np.ndarray, want: np.ndarray, no_edge: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each node of ``want``: its strongest verified match among the directed edges ``node -> other`` (kind,
    distance, neighbour's row in the attributes), what the ledger detail shows; (no_edge, 0, -1) where it has none."""
    k_out = np.full(want.size, no_edge, dtype=np.int64)
    d_out = np.zeros(want.size, dtype=np.float32)
    n_out = np.full(want.size, -1, dtype=np.int64)
    if node.size == 0 or want.size == 0:
        return k_out, d_out, n_out
    opos = idx(other)
    exact_first = (~np.isin(k, exact_kinds())).astype(np.int8)
    order = np.lexsort((rank[opos], d, exact_first, node))
    node, k, d, opos = node[order], k[order], d[order], opos[order]
    first = np.ones(node.size, dtype=bool)
    first[1:] = node[1:] != node[:-1]
    node, k, d, opos = node[first], k[first], d[first], opos[first]
    at = np.searchsorted(node, want)
    found = (at < node.size) & (node[np.minimum(at, node.size - 1)] == want)
    at = at[found]
    k_out[found], d_out[found], n_out[found] = k[at], d[at], opos[at]
    return k_out, d_out, n_out


_PLAIN = r'^[\x20-\x21\x23-\x5b\x5d-\x7e]*$'  # no quote, backslash, control or non-ASCII: JSON is the text in quotes


def _json_strings(arr: pa.Array) -> pa.Array:
    """``json.dumps`` of every string, vectorized for plain ASCII (the rest, rare, one by one)."""
    quoted = pc.binary_join_element_wise('"', arr, '"', "")
    plain = pc.match_substring_regex(arr, _PLAIN)
    if pc.all(plain).as_py() is not False:
        return quoted
    odd = np.flatnonzero(~plain.to_numpy(zero_copy_only=False))
    fixed = pa.array([json.dumps(x) for x in arr.take(pa.array(odd)).to_pylist()], pa.string())
    slot = np.full(len(arr), 0, dtype=np.int64)
    slot[odd] = np.arange(odd.size)
    return pc.if_else(plain, quoted, fixed.take(pa.array(slot)))


def _details(rep: pa.Array, kind: np.ndarray, dist: np.ndarray, neighbour: pa.Array) -> pa.Array:
    """The ledger detail of each duplicate, exactly as :func:`_detail` writes it, without a loop per row."""
    n = len(rep)
    if n == 0:
        return pa.array([], pa.string())
    kinds = edge_kinds()
    head = np.empty(n, dtype=object)
    num = np.full(n, "", dtype=object)
    for k in np.unique(kind):  # per edge kind: its match name, and its shown value per distinct distance
        m = kind == k
        ek = kinds[int(k)]
        key = next(iter(ek.detail(0.0)), None)
        head[m] = ", \"match\": " + json.dumps(ek.match) + (f", {json.dumps(key)}: " if key else "")
        if key is not None:
            values, inv = np.unique(dist[m], return_inverse=True)
            shown = np.array([json.dumps(ek.detail(float(v))[key]) for v in values], dtype=object)
            num[m] = shown[inv]
    return pc.binary_join_element_wise("{\"rep\": ", _json_strings(rep), pa.array(head, pa.string()),
                                       pa.array(num, pa.string()), ", \"with\": ", _json_strings(neighbour), "}", "")


def _detail(rep: str | None, match: str, dist: float, neighbour: str, kind: int) -> str:
    parts = {}
    if rep is not None:
        parts["rep"] = rep
    parts["match"] = match
    parts.update(edge_kinds()[int(kind)].detail(dist))
    parts["with"] = neighbour
    return json.dumps(parts, sort_keys=False)
