"""Connected components over an edge list, vectorized.

Duplicate clusters are the connected components of the verified pairs. The
edges arrive as numpy arrays (millions of them on a large corpus), so instead
of a Python loop per union this runs min-label propagation with pointer
jumping: every round each edge pulls both endpoints to the smaller label, then
labels are compressed (``label = label[label]``) until they are stable. It
needs O(log n) rounds in practice and memory proportional to the nodes that
appear in edges, not to the corpus.
"""
from __future__ import annotations

import numpy as np


def connected_components(u: np.ndarray, v: np.ndarray, n: int | None = None) -> np.ndarray:
    """Component label (the smallest node index in it) of every node ``0..n-1``, for edges (u[i], v[i])."""
    u = np.asarray(u, dtype=np.int64).reshape(-1)
    v = np.asarray(v, dtype=np.int64).reshape(-1)
    if u.shape != v.shape:
        raise ValueError("u and v must have the same length")
    if n is None:
        n = int(max(u.max(initial=-1), v.max(initial=-1))) + 1
    label = np.arange(n, dtype=np.int64)
    if u.size == 0:
        return label
    while True:
        lu, lv = label[u], label[v]
        low = np.minimum(lu, lv)
        changed = lu != lv
        if not changed.any():
            break
        # hook the root of each endpoint's tree onto the smaller label
        np.minimum.at(label, lu[changed], low[changed])
        np.minimum.at(label, lv[changed], low[changed])
        # pointer jumping until every node points at a root
        while True:
            nxt = label[label]
            if np.array_equal(nxt, label):
                break
            label = nxt
    return label


class UnionFind:
    """Union-find over arbitrary int64 node keys that accumulates edges and resolves them in one vectorized pass.

    ``union(a, b)`` accepts scalars or arrays; ``find``/``components`` compact the
    keys seen so far, so memory follows the nodes that appear in edges only.
    """

    def __init__(self) -> None:
        self._u: list[np.ndarray] = []
        self._v: list[np.ndarray] = []
        self._keys: np.ndarray | None = None
        self._roots: np.ndarray | None = None

    def union(self, a, b) -> None:
        a = np.atleast_1d(np.asarray(a, dtype=np.int64))
        b = np.atleast_1d(np.asarray(b, dtype=np.int64))
        if a.shape != b.shape:
            raise ValueError("union needs arrays of equal length")
        self._u.append(a)
        self._v.append(b)
        self._keys = None

    def _solve(self) -> None:
        if self._keys is not None:
            return
        u = np.concatenate(self._u) if self._u else np.zeros(0, np.int64)
        v = np.concatenate(self._v) if self._v else np.zeros(0, np.int64)
        keys, inv = np.unique(np.concatenate((u, v)), return_inverse=True)
        labels = connected_components(inv[: u.size], inv[u.size :], keys.size)
        self._keys, self._roots = keys, keys[labels]
        # keep the solved state compact: later unions build on the component forest
        self._u, self._v = [keys], [self._roots]

    def find(self, x) -> np.ndarray:
        """Root key (the smallest key in its component) of each x; keys never unioned are their own root."""
        self._solve()
        x = np.atleast_1d(np.asarray(x, dtype=np.int64))
        assert self._keys is not None and self._roots is not None
        pos = np.searchsorted(self._keys, x)
        pos_c = np.minimum(pos, max(self._keys.size - 1, 0))
        hit = (pos < self._keys.size) & (self._keys[pos_c] == x) if self._keys.size else np.zeros(x.shape, bool)
        out = x.copy()
        out[hit] = self._roots[pos_c[hit]]
        return out

    def components(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys, roots) of every key that appeared in an edge."""
        self._solve()
        assert self._keys is not None and self._roots is not None
        return self._keys, self._roots
