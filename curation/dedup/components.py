"""Connected components of the verified edges, out of core: large-star and small-star rounds over node blocks.

An in-memory union-find needs a label per node in a cluster, so it grows with the
corpus. Here the graph lives on disk as edges ``(lo, hi)`` scattered by the block of
``lo`` (:mod:`curation.dedup.blocks`), and each round rewrites it block by block
(Kiveris et al., "Connected Components in MapReduce and Beyond", 2014):

- **large-star**: every edge ``(lo, hi)`` becomes ``(m(lo), hi)``, where ``m(u)`` is
  the smallest of ``u`` and its neighbours;
- **small-star**: every edge ``(lo, hi)`` becomes ``(m(hi), lo)`` and ``(m(hi), hi)``,
  where ``m(hi)`` is the smallest of ``hi`` and its smaller neighbours.

Both keep the components; alternated, they reach a graph that neither changes, a
star per component centred on its smallest node, which is the label the in-memory
union-find gives (:mod:`curation.dedup.unionfind`). ``m`` is found by grouping the
edges of a block by ``hi``, so a step holds one block of edges, whatever the corpus.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from curation.dedup.blocks import Blocks

PAIR_SCHEMA = pa.schema([pa.field("lo", pa.int64()), pa.field("hi", pa.int64())])
LABEL_SCHEMA = pa.schema([pa.field("node", pa.int64()), pa.field("label", pa.int64())])
#: rounds (one large-star and one small-star each) before the graph must be a set of stars
MAX_ROUNDS = 200

_MIX = np.uint64(0x9E3779B97F4A7C15)


def star_components(edges: Blocks, work: Path) -> Blocks:
    """``(node, label)`` of every node in an edge of ``edges`` (columns ``a``, ``b``), by node block, sorted by node.

    The label is the smallest node of the component. ``edges`` may hold a pair more than once and in
    either orientation. Intermediate graphs live under ``work``.
    """
    g = Blocks(work / "g", edges.starts, PAIR_SCHEMA)
    for k in range(len(edges)):
        _add(g, *_ordered(edges.read(k)))  # no name holds a block while the next is read: one block at a time
    sums = [_compact(g)]
    step = 0
    while not (len(sums) >= 3 and sums[-1] == sums[-2] == sums[-3]) and sums[-1][0]:
        if step >= 2 * MAX_ROUNDS:
            raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds")
        nxt = Blocks(work / f"g{step % 2}", edges.starts, PAIR_SCHEMA)
        (_large_star if step % 2 == 0 else _small_star)(g, nxt, work / "h")
        g.drop()
        g = nxt
        sums.append(_compact(g))
        step += 1
    labels = Blocks(work / "labels", edges.starts, LABEL_SCHEMA)
    for k in range(len(g)):
        lo, hi = _pairs(g.read(k))
        centre = np.unique(lo)
        labels.add(pa.table({"node": centre, "label": centre}, schema=LABEL_SCHEMA), centre)
        labels.add(pa.table({"node": hi, "label": lo}, schema=LABEL_SCHEMA), hi)
    g.drop()
    for k in range(len(labels)):
        t = labels.read(k)
        node = t.column("node").to_numpy()
        order = np.argsort(node, kind="stable")
        node = node[order]
        first = np.ones(node.size, dtype=bool)
        first[1:] = node[1:] != node[:-1]
        labels.replace(k, t.take(pa.array(order[first])))
    return labels


def _add(g: Blocks, lo: np.ndarray, hi: np.ndarray) -> None:
    keep = lo != hi
    lo, hi = lo[keep], hi[keep]
    g.add(pa.table({"lo": lo, "hi": hi}, schema=PAIR_SCHEMA), lo)


def _ordered(t: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """An edge block's pairs as ``(lo, hi)``."""
    a, b = t.column("a").to_numpy(), t.column("b").to_numpy()
    return np.minimum(a, b), np.maximum(a, b)


def _pairs(t: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    return t.column("lo").to_numpy(), t.column("hi").to_numpy()


def _compact(g: Blocks) -> tuple[int, int]:
    """Sort and deduplicate every block in place; (edges, a hash of the edge set) to tell when rounds stop changing it."""
    count, total = 0, 0
    for k in range(len(g)):
        lo, hi = _pairs(g.read(k))
        order = np.lexsort((hi, lo))
        lo, hi = lo[order], hi[order]
        keep = np.ones(lo.size, dtype=bool)
        keep[1:] = (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])
        lo, hi = lo[keep], hi[keep]
        g.replace(k, pa.table({"lo": lo, "hi": hi}, schema=PAIR_SCHEMA))
        count += lo.size
        x = lo.astype(np.uint64) * _MIX + hi.astype(np.uint64)
        x ^= x >> np.uint64(29)
        x *= _MIX
        x ^= x >> np.uint64(32)
        total = (total + int(x.sum(dtype=np.uint64))) & 0xFFFFFFFFFFFFFFFF
    return count, total


def _by_hi(g: Blocks, directory: Path) -> Blocks:
    """The edges of ``g`` scattered by the block of ``hi`` instead of ``lo``."""
    h = Blocks(directory, g.starts, PAIR_SCHEMA)
    for k in range(len(g)):
        t = g.read(k)
        h.add(t, t.column("hi").to_numpy())
    return h


def _smaller_min(t: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Edges of one hi-block sorted by (hi, lo), and per distinct hi: the node and its smallest neighbour."""
    lo, hi = _pairs(t)
    order = np.lexsort((lo, hi))
    lo, hi = lo[order], hi[order]
    first = np.ones(hi.size, dtype=bool)
    first[1:] = hi[1:] != hi[:-1]
    return lo, hi, hi[first], lo[first]


def _large_star(g: Blocks, out: Blocks, scratch: Path) -> None:
    h = _by_hi(g, scratch)
    for k in range(len(g)):
        _, _, node, m = _smaller_min(h.read(k))  # m(u) of the block's nodes that have a smaller neighbour
        lo, hi = _pairs(g.read(k))
        at = np.searchsorted(node, lo)
        found = at < node.size
        found[found] = node[at[found]] == lo[found]
        ml = lo.copy()
        ml[found] = m[at[found]]
        _add(out, ml, hi)
    h.drop()


def _small_star(g: Blocks, out: Blocks, scratch: Path) -> None:
    h = _by_hi(g, scratch)
    for k in range(len(h)):
        lo, hi, node, m = _smaller_min(h.read(k))
        mh = np.repeat(m, np.diff(np.append(np.flatnonzero(np.r_[True, hi[1:] != hi[:-1]]), hi.size)))
        _add(out, mh, lo)  # (m(hi), lo); lo == m(hi) is dropped
        _add(out, m, node)  # (m(hi), hi)
    h.drop()
