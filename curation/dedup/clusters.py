"""Phase 4 of resolve: connected components, representatives, contamination and the ledger details."""
from __future__ import annotations

import json
from pathlib import Path

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


def clusters(edges: pa.Table, work: Path, evals: list[EvalSetConfig]) -> pa.Table:
    a = edges.column("a").to_numpy()
    b = edges.column("b").to_numpy()
    kind = edges.column("kind").to_numpy()
    dist = edges.column("dist").to_numpy()
    contam = edges.column("contam").to_numpy(zero_copy_only=False)
    dd = ~contam
    uf = UnionFind()
    uf.union(a[dd], b[dd])
    keys, roots = uf.components()
    involved = np.unique(np.concatenate((keys, a[contam], b[contam])))
    # attributes of the involved nodes only, streamed from the per-file node tables
    parts = []
    for path in sorted((work / "nodes").glob("f-*.parquet")):
        t = pq.read_table(path)
        nodes = t.column("node").to_numpy()
        m = np.isin(nodes, involved, assume_unique=False)
        if m.any():
            parts.append(t.filter(pa.array(m)))
    if not parts:
        return RESULT_SCHEMA.empty_table()
    attrs = pa.concat_tables(parts).sort_by("node")
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

    # clusters: representative by rank; existing (against) rows win, contaminated rows never represent
    cont_nodes = np.fromiter(contaminated, dtype=np.int64, count=len(contaminated))
    parts_out: list[pa.Table] = []
    placed = np.zeros(0, np.int64)
    if keys.size:
        k_idx = idx(keys)
        role = arole[k_idx]
        area = attrs.column("area").to_numpy()[k_idx]
        textlen = attrs.column("textlen").to_numpy()[k_idx]
        nbytes = attrs.column("nbytes").to_numpy()[k_idx]
        bad = np.isin(keys, cont_nodes)
        tab = pa.table(
            {
                "node": keys,
                "root": roots,
                "not_existing": (role != ROLE_AGAINST).astype(np.int8),
                "bad": bad.astype(np.int8),
                "area": area,
                "nbytes": nbytes,
                "textlen": textlen,
                "id": aid.take(pa.array(k_idx)),
            }
        ).sort_by([("root", "ascending"), ("not_existing", "ascending"), ("bad", "ascending"),
                   ("area", "descending"), ("nbytes", "descending"), ("textlen", "descending"), ("id", "ascending")])
        root_s = tab.column("root").to_numpy()
        node_s = tab.column("node").to_numpy()
        starts, sizes = group_bounds(root_s)
        rep_pos = np.repeat(starts, sizes)
        new_pos = np.flatnonzero(arole[idx(node_s)] == ROLE_NEW)
        nodes_new = node_s[new_pos]
        ids_new = tab.column("id").take(pa.array(new_pos))
        rep_new = tab.column("id").take(pa.array(rep_pos[new_pos]))
        is_rep = node_s[rep_pos[new_pos]] == nodes_new
        is_cont = np.isin(nodes_new, cont_nodes)
        dup = ~is_rep & ~is_cont
        rep = rep_new.filter(pa.array(dup))
        fallback = (K_BYTES, 0.0, rep)  # a duplicate without an edge of its own is shown as a copy of its rep
        bk, bd, bn = _best_match(a[dd], b[dd], kind[dd], dist[dd], anode, rank, nodes_new[dup], fallback[0])
        with_id = pc.if_else(pa.array(bn >= 0), aid.take(pa.array(np.maximum(bn, 0))), fallback[2])
        dup_detail = _details(rep, bk, bd, with_id)
        n = nodes_new.size
        reason = np.full(n, None, dtype=object)
        detail = np.full(n, None, dtype=object)
        reason[dup] = "duplicate"
        for i in np.flatnonzero(is_cont):  # contaminated rows are few: their own reason and detail
            reason[i], detail[i] = contaminated[int(nodes_new[i])]
        detail_arr = pa.array(detail, pa.string())
        if dup.any():
            slot = np.cumsum(dup) - 1
            detail_arr = pc.if_else(pa.array(dup), dup_detail.take(pa.array(np.maximum(slot, 0))), detail_arr)
        parts_out.append(pa.table({"id": ids_new, "dup_cluster": rep_new, "reason": pa.array(reason, pa.string()),
                                   "detail": detail_arr}, schema=RESULT_SCHEMA))
        placed = nodes_new
    rest = cont_nodes[~np.isin(cont_nodes, placed)].tolist()  # contaminated rows outside every cluster
    if rest:
        at = idx(np.array(rest, dtype=np.int64))
        parts_out.append(pa.table({
            "id": aid.take(pa.array(at)), "dup_cluster": pa.nulls(len(rest), pa.string()),
            "reason": pa.array([contaminated[nn][0] for nn in rest], pa.string()),
            "detail": pa.array([contaminated[nn][1] for nn in rest], pa.string())}, schema=RESULT_SCHEMA))
    out = pa.concat_tables(parts_out) if parts_out else RESULT_SCHEMA.empty_table()
    if out.num_rows == 0:
        return RESULT_SCHEMA.empty_table()
    return out.take(pc.sort_indices(out, sort_keys=[("id", "ascending")]))  # stable: equal ids keep their order


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


def _best_match(a, b, kind, dist, anode, rank, want, no_edge: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each node of ``want``: its strongest verified match (kind, distance, neighbour's row in the attributes),
    what the ledger detail shows; (no_edge, 0, -1) where the node has none."""
    k_out = np.full(want.size, no_edge, dtype=np.int64)
    d_out = np.zeros(want.size, dtype=np.float32)
    n_out = np.full(want.size, -1, dtype=np.int64)
    if a.size == 0 or want.size == 0:
        return k_out, d_out, n_out
    node = np.concatenate((a, b))
    other = np.concatenate((b, a))
    k = np.concatenate((kind, kind))
    d = np.concatenate((dist, dist))
    opos = np.searchsorted(anode, other)
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
