"""Phase 4 of resolve: connected components, representatives, contamination and the ledger details.

Nothing here holds a value per clustered row of the whole corpus: the verified edges arrive scattered
by node block (:mod:`curation.dedup.blocks`), the components are found out of core
(:mod:`curation.dedup.components`), and three block-by-block passes follow:

1. per node block: each clustered row's label joined with its attributes (from the per-file node
   tables), and each edge with its label, both scattered to the block of the label;
2. per label block (whole components): representatives by the documented rank and each duplicate's
   strongest match, scattered back to the block of the row;
3. per node block: the answer's strings built and written input file by input file, sorted by id.

Contamination (new rows that meet evaluation rows) is held in memory: it grows with the contaminated
rows, not with the corpus.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.dedup.config import EvalSetConfig
from curation.dedup.layout import (
    K_BYTES, NODE_SCHEMA, RESULT_SCHEMA, ROLE_AGAINST, ROLE_NEW,
)
from curation.dedup.blocks import Blocks
from curation.dedup.buckets import dedupe_edges, group_bounds
from curation.dedup.components import star_components
from curation.dedup.inputs import SigFile
from curation.dedup.methods import edge_kinds, exact_kinds
from manifests.fsutil import atomic_write


#: the evidence shown for a duplicate with no edge of its own (a copy of its representative; none arises in practice)
NO_EDGE = K_BYTES

COMP_SCHEMA = pa.schema([
    pa.field("label", pa.int64()), pa.field("node", pa.int64()), pa.field("role", pa.int8()),
    pa.field("area", pa.int64()), pa.field("nbytes", pa.int64()), pa.field("textlen", pa.int32()),
    pa.field("id", pa.string()),
])
LABELLED_EDGE_SCHEMA = pa.schema([
    pa.field("label", pa.int64()), pa.field("a", pa.int64()), pa.field("b", pa.int64()),
    pa.field("kind", pa.int8()), pa.field("dist", pa.float32()),
])
#: a new row in a cluster: its representative's id, duplicate or not, its strongest match (kind, distance, id)
MEMBER_SCHEMA = pa.schema([
    pa.field("node", pa.int64()), pa.field("id", pa.string()), pa.field("dup_cluster", pa.string()), pa.field("dup", pa.bool_()),
    pa.field("kind", pa.int8()), pa.field("dist", pa.float32()), pa.field("with", pa.string()),
])


def clusters(edges: Blocks, contam: pa.Table, work: Path, evals: list[EvalSetConfig], files: Sequence[SigFile],
             out: Path) -> dict[int, Path]:
    """Write the answer of phase 4 input file by input file; returns {file index: its part} (files with rows in it).

    ``edges``: the verified dedup edges (``EDGE_SCHEMA`` columns, ``a < b``) by the block of ``a``, a pair
    possibly more than once (the strongest evidence wins); ``contam``: the verified edges between new and
    evaluation rows, deduplicated; ``files``: every input file (new, against, eval) with its node range.
    The node tables are ``work/nodes/f-<file index>.parquet``; intermediate blocks go under ``work/clusters``.
    """
    scratch = work / "clusters"
    starts = edges.starts
    offsets = np.array([f.offset for f in files], dtype=np.int64)
    roles = np.array([f.role for f in files], dtype=np.int8)

    def role_of(node: np.ndarray) -> np.ndarray:
        return roles[np.searchsorted(offsets, node, side="right") - 1]

    ca, cb = contam.column("a").to_numpy(), contam.column("b").to_numpy()
    ck, cdist = contam.column("kind").to_numpy(), contam.column("dist").to_numpy()
    c_new = np.where(role_of(ca) == ROLE_NEW, ca, cb)
    c_eval = np.where(role_of(ca) == ROLE_NEW, cb, ca)
    cont_nodes = np.unique(c_new)
    c_wanted = np.unique(np.concatenate((c_new, c_eval)))

    labels = star_components(edges, scratch / "cc")
    comp = Blocks(scratch / "comp", starts, COMP_SCHEMA)
    labelled = Blocks(scratch / "labelled", starts, LABELLED_EDGE_SCHEMA)
    file_block = np.searchsorted(starts, offsets, side="right") - 1
    c_attrs = []
    for k in range(len(starts)):
        lab = labels.read(k)
        node_l, label_l = lab.column("node").to_numpy(), lab.column("label").to_numpy()
        attrs = _attributes(work, np.flatnonzero(file_block == k), np.union1d(node_l, c_wanted))
        if attrs is None:
            continue
        anode = attrs.column("node").to_numpy()
        in_cluster = np.isin(anode, node_l, assume_unique=True)
        members = attrs.filter(pa.array(in_cluster))
        mlabel = label_l[np.searchsorted(node_l, members.column("node").to_numpy())]
        comp.add(pa.table({"label": mlabel, **{c: members.column(c) for c in COMP_SCHEMA.names[1:]}}, schema=COMP_SCHEMA),
                 mlabel)
        c_attrs.append(attrs.filter(pa.array(np.isin(anode, c_wanted, assume_unique=True))).select(["node", "id", "set"]))
        e = dedupe_edges(edges.read(k))
        ea = e.column("a").to_numpy()
        elabel = label_l[np.searchsorted(node_l, ea)]
        labelled.add(pa.table({"label": elabel, "a": ea, "b": e.column("b"), "kind": e.column("kind"),
                               "dist": e.column("dist")}, schema=LABELLED_EDGE_SCHEMA), elabel)
        del lab, node_l, label_l, attrs, anode, in_cluster, members, mlabel, e, ea, elabel  # one block at a time
    labels.drop()
    edges.drop()
    contaminated, c_attrs = _contamination(c_attrs, c_new, c_eval, ck, cdist, evals)

    answer = Blocks(scratch / "members", starts, MEMBER_SCHEMA)
    for j in range(len(starts)):
        rows = _members(comp.read(j), labelled.read(j), cont_nodes)
        answer.add(rows, rows.column("node").to_numpy())
    comp.drop()
    labelled.drop()

    out.mkdir(parents=True, exist_ok=True)
    written: dict[int, Path] = {}
    for k in range(len(starts)):
        mine = np.flatnonzero((file_block == k) & (roles == ROLE_NEW))
        if mine.size == 0:
            continue
        lo, hi = offsets[mine[0]], offsets[mine[-1]] + files[mine[-1]].rows
        rows = answer.read(k)
        extra = cont_nodes[(cont_nodes >= lo) & (cont_nodes < hi)]
        extra = extra[~np.isin(extra, rows.column("node").to_numpy())]  # contaminated rows outside every cluster
        extra_id = c_attrs.column("id").take(pa.array(np.searchsorted(c_attrs.column("node").to_numpy(), extra)))
        rows = pa.concat_tables([rows, pa.table({
            "node": extra, "id": extra_id, "dup_cluster": pa.nulls(extra.size, pa.string()), "dup": np.zeros(extra.size, bool),
            "kind": np.full(extra.size, NO_EDGE, np.int8), "dist": np.zeros(extra.size, np.float32),
            "with": pa.nulls(extra.size, pa.string())}, schema=MEMBER_SCHEMA)])
        rows = rows.take(pc.sort_indices(rows, sort_keys=[("node", "ascending")]))
        rnode = rows.column("node").to_numpy()
        for fi in mine:
            r0, r1 = np.searchsorted(rnode, [offsets[fi], offsets[fi] + files[fi].rows])
            if r1 == r0:
                continue
            part = _part(rows.slice(r0, r1 - r0), contaminated)
            path = out / f"part-{fi:06d}.parquet"
            atomic_write(path, lambda p, t=part: pq.write_table(t, p))
            written[int(fi)] = path
    answer.drop()
    return written


def _attributes(work: Path, file_indices: np.ndarray, wanted: np.ndarray) -> pa.Table | None:
    """Node attributes of the wanted nodes among the given files' node tables, sorted by node."""
    parts = []
    for fi in file_indices:
        path = work / "nodes" / f"f-{int(fi):06d}.parquet"
        if not path.is_file():
            continue
        t = pq.read_table(path)
        m = np.isin(t.column("node").to_numpy(), wanted)
        if m.any():
            parts.append(t.filter(pa.array(m)))
    if not parts:
        return None
    attrs = pa.concat_tables(parts)
    node = attrs.column("node").to_numpy()
    # the files hold ascending node ranges in index order, so this is sorted already (no second copy)
    return attrs if bool(np.all(node[1:] > node[:-1])) else attrs.sort_by("node")


def _contamination(attrs: list[pa.Table], new: np.ndarray, ev: np.ndarray, kind: np.ndarray, dist: np.ndarray,
                   evals: list[EvalSetConfig]) -> tuple[dict[int, tuple[str, str]], pa.Table]:
    """{new row: (reason, detail)} from its strongest evidence (exact kinds, then smallest distance, then eval id),
    and the attributes (node, id, set) of the rows on contaminated edges, by node."""
    t = pa.concat_tables(attrs).sort_by("node") if attrs else NODE_SCHEMA.empty_table().select(["node", "id", "set"])
    if new.size == 0:
        return {}, t
    tnode = t.column("node").to_numpy()
    evpos = np.searchsorted(tnode, ev)
    ids = t.column("id").combine_chunks()
    rank = _dense_rank(ids)
    evset = t.column("set").to_numpy()[evpos]
    exact_first = (~np.isin(kind, exact_kinds())).astype(np.int8)
    order = np.lexsort((rank[evpos], dist, exact_first, new))
    first = np.ones(order.size, dtype=bool)
    first[1:] = new[order][1:] != new[order][:-1]
    out = {}
    for o in order[first]:  # one per contaminated row (few)
        name = evals[int(evset[o])].label if evals else "eval"
        out[int(new[o])] = (f"contaminated:{name}",
                            _detail(None, edge_kinds()[int(kind[o])].match, float(dist[o]), ids[int(evpos[o])].as_py(), kind[o]))
    return out, t


def _members(comp: pa.Table, edges: pa.Table, cont_nodes: np.ndarray) -> pa.Table:
    """The new rows of whole components (one label block): representative, duplicate or not, strongest match.

    The representative follows the documented rank: existing (against) rows win, contaminated rows never
    represent, then the largest area, bytes, text, then the smallest id (code point order).
    """
    if comp.num_rows == 0:
        return MEMBER_SCHEMA.empty_table()
    comp = comp.sort_by("node")
    node = comp.column("node").to_numpy()
    label = comp.column("label").to_numpy()
    role = comp.column("role").to_numpy()
    ids = comp.column("id").combine_chunks()
    rank = _dense_rank(ids)
    contaminated = np.isin(node, cont_nodes).astype(np.int8)
    order = np.lexsort((
        node,
        rank,
        -comp.column("textlen").to_numpy().astype(np.int64),
        -comp.column("nbytes").to_numpy(),
        -comp.column("area").to_numpy(),
        contaminated,
        (role != ROLE_AGAINST).astype(np.int8),
        label,
    ))
    starts, sizes = group_bounds(label[order])
    rep = np.empty(node.size, dtype=np.int64)  # row of each row's representative
    rep[order] = np.repeat(order[starts], sizes)
    new = np.flatnonzero(role == ROLE_NEW)
    dup = (rep[new] != new) & (contaminated[new] == 0)
    rep_id = ids.take(pa.array(rep[new]))
    bk, bd, bn = _best_match(edges, node, rank, node[new][dup])
    kind = np.full(new.size, NO_EDGE, np.int8)
    dist = np.zeros(new.size, np.float32)
    kind[dup], dist[dup] = bk, bd
    nb = np.full(new.size, -1, np.int64)
    nb[dup] = bn
    with_id = pc.if_else(pa.array(nb >= 0), ids.take(pa.array(np.maximum(nb, 0))), pa.nulls(new.size, pa.string()))
    return pa.table({"node": node[new], "id": ids.take(pa.array(new)), "dup_cluster": rep_id, "dup": dup, "kind": kind, "dist": dist, "with": with_id},
                    schema=MEMBER_SCHEMA)


def _best_match(edges: pa.Table, node: np.ndarray, rank: np.ndarray, want: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each node of ``want``: its strongest verified match (kind, distance, the neighbour's row in ``node``),
    what the ledger detail shows: exact kinds first, then the smallest distance, then the smallest id;
    (NO_EDGE, 0, -1) where it has none."""
    k_out = np.full(want.size, NO_EDGE, dtype=np.int8)
    d_out = np.zeros(want.size, dtype=np.float32)
    n_out = np.full(want.size, -1, dtype=np.int64)
    if edges.num_rows == 0 or want.size == 0:
        return k_out, d_out, n_out
    a, b = edges.column("a").to_numpy(), edges.column("b").to_numpy()
    src, dst = np.concatenate((a, b)), np.concatenate((b, a))  # both directions
    k = np.concatenate((edges.column("kind").to_numpy(),) * 2)
    d = np.concatenate((edges.column("dist").to_numpy(),) * 2)
    opos = np.searchsorted(node, dst)
    exact_first = (~np.isin(k, exact_kinds())).astype(np.int8)
    order = np.lexsort((dst, rank[opos], d, exact_first, src))
    src, k, d, opos = src[order], k[order], d[order], opos[order]
    first = np.ones(src.size, dtype=bool)
    first[1:] = src[1:] != src[:-1]
    src, k, d, opos = src[first], k[first], d[first], opos[first]
    at = np.searchsorted(src, want)
    found = (at < src.size) & (src[np.minimum(at, src.size - 1)] == want)
    at = at[found]
    k_out[found], d_out[found], n_out[found] = k[at], d[at], opos[at]
    return k_out, d_out, n_out


def _part(rows: pa.Table, contaminated: dict[int, tuple[str, str]]) -> pa.Table:
    """The answer's rows of one input file (``MEMBER_SCHEMA`` rows, by node), sorted by id."""
    node = rows.column("node").to_numpy()
    dup = rows.column("dup").to_numpy(zero_copy_only=False)
    reason = np.full(node.size, None, dtype=object)
    detail = np.full(node.size, None, dtype=object)
    reason[dup] = "duplicate"
    for i in np.flatnonzero(~dup):
        hit = contaminated.get(int(node[i]))
        if hit is not None:  # contaminated rows are few: their own reason and detail
            reason[i], detail[i] = hit
    detail_arr = pa.array(detail, pa.string())
    rep_id = rows.column("dup_cluster").combine_chunks()
    ids = rows.column("id")
    if dup.any():
        sel = pa.array(dup)
        rep = rep_id.filter(sel)
        # a duplicate without an edge of its own is shown as a copy of its representative
        neighbour = pc.coalesce(rows.column("with").combine_chunks().filter(sel), rep)
        dup_detail = _details(rep, rows.column("kind").to_numpy()[dup], rows.column("dist").to_numpy()[dup], neighbour)
        slot = np.cumsum(dup) - 1
        detail_arr = pc.if_else(sel, dup_detail.take(pa.array(np.maximum(slot, 0))), detail_arr)
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
