"""Phase 4 of resolve: connected components, representatives, contamination and the ledger details."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
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
    aid = np.asarray(attrs.column("id").to_pylist(), dtype=object)
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
        evid = aid[idx(ev)]
        # strongest evidence per row: exact kinds, then smallest distance, then eval id
        exact_first = (~np.isin(ck, exact_kinds())).astype(np.int8)
        order = np.lexsort((evid.astype(str), cdist, exact_first, new))
        new_sorted = new[order]
        first = np.ones(order.size, dtype=bool)
        first[1:] = new_sorted[1:] != new_sorted[:-1]
        for o in order[first]:
            nn = int(new[o])
            name = evals[int(evset[o])].label if evals else "eval"
            contaminated[nn] = (
                f"contaminated:{name}",
                _detail(None, edge_kinds()[int(ck[o])].match, float(cdist[o]), str(evid[o]), ck[o]),
            )

    # clusters: representative by rank; existing (against) rows win, contaminated rows never represent
    rows_out: dict[int, list] = {}
    if keys.size:
        k_idx = idx(keys)
        role = arole[k_idx]
        ids = aid[k_idx].astype(str)
        area = attrs.column("area").to_numpy()[k_idx]
        textlen = attrs.column("textlen").to_numpy()[k_idx]
        nbytes = attrs.column("nbytes").to_numpy()[k_idx]
        bad = np.isin(keys, np.fromiter(contaminated, dtype=np.int64, count=len(contaminated)))
        tab = pa.table(
            {
                "node": keys,
                "root": roots,
                "not_existing": (role != ROLE_AGAINST).astype(np.int8),
                "bad": bad.astype(np.int8),
                "area": area,
                "nbytes": nbytes,
                "textlen": textlen,
                "id": ids,
            }
        ).sort_by([("root", "ascending"), ("not_existing", "ascending"), ("bad", "ascending"),
                   ("area", "descending"), ("nbytes", "descending"), ("textlen", "descending"), ("id", "ascending")])
        root_s = tab.column("root").to_numpy()
        node_s = tab.column("node").to_numpy()
        id_s = np.asarray(tab.column("id").to_pylist(), dtype=object)
        starts, sizes = group_bounds(root_s)
        rep_pos = np.repeat(starts, sizes)
        rep_node = node_s[rep_pos]
        rep_id = id_s[rep_pos]
        best = _best_match(a[dd], b[dd], kind[dd], dist[dd], aid, anode)
        is_new_s = arole[idx(node_s)] == ROLE_NEW
        for i in np.flatnonzero(is_new_s):
            nn = int(node_s[i])
            rep = str(rep_id[i])
            if nn in contaminated:
                reason, detail = contaminated[nn]
            elif int(rep_node[i]) == nn:
                reason, detail = None, None
            else:
                bk, bd, bn = best.get(nn, (K_BYTES, 0.0, rep))
                reason, detail = "duplicate", _detail(rep, edge_kinds()[int(bk)].match, bd, bn, bk)
            rows_out[nn] = [str(id_s[i]), rep, reason, detail]
    for nn, (reason, detail) in contaminated.items():
        if nn not in rows_out:
            rows_out[nn] = [str(aid[idx(np.array([nn]))[0]]), None, reason, detail]
    if not rows_out:
        return RESULT_SCHEMA.empty_table()
    vals = sorted(rows_out.values(), key=lambda r: r[0])
    return pa.table(
        {
            "id": pa.array([v[0] for v in vals], pa.string()),
            "dup_cluster": pa.array([v[1] for v in vals], pa.string()),
            "reason": pa.array([v[2] for v in vals], pa.string()),
            "detail": pa.array([v[3] for v in vals], pa.string()),
        },
        schema=RESULT_SCHEMA,
    )


def _best_match(a, b, kind, dist, aid, anode) -> dict[int, tuple[int, float, str]]:
    """Per node: its strongest verified match (kind, distance, neighbour id) -- what the ledger detail shows."""
    if a.size == 0:
        return {}
    node = np.concatenate((a, b))
    other = np.concatenate((b, a))
    k = np.concatenate((kind, kind))
    d = np.concatenate((dist, dist))
    oid = aid[np.searchsorted(anode, other)].astype(str)
    exact_first = (~np.isin(k, exact_kinds())).astype(np.int8)
    order = np.lexsort((oid, d, exact_first, node))
    node, k, d, oid = node[order], k[order], d[order], oid[order]
    first = np.ones(node.size, dtype=bool)
    first[1:] = node[1:] != node[:-1]
    return {int(n): (int(kk), float(dd), str(o)) for n, kk, dd, o in zip(node[first], k[first], d[first], oid[first])}


def _detail(rep: str | None, match: str, dist: float, neighbour: str, kind: int) -> str:
    parts = {}
    if rep is not None:
        parts["rep"] = rep
    parts["match"] = match
    parts.update(edge_kinds()[int(kind)].detail(dist))
    parts["with"] = neighbour
    return json.dumps(parts, sort_keys=False)
