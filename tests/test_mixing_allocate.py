"""The streaming allocation (thresholds found digit by digit, replayed per chunk) against a sort-based reference."""
from __future__ import annotations

import numpy as np
import pytest

from curation.mixing import allocate as A


def reference(mass, weight, keep, cap, target, rng, integral):
    """The documented algorithm with the whole group in memory: sort by priority, full passes, partial passes."""
    n = len(mass)
    rep = np.zeros(n, dtype=np.int64)
    if n == 0 or target <= 0:
        return rep
    key = -np.log(1.0 - rng.random(n)) / weight
    prio = np.lexsort((key, ~keep))  # kept rows first, then by key, ties in scan order
    m, c = mass[prio], cap[prio]
    curve = A.capped_mass_curve(np.bincount(c, weights=m))
    level = max(0, min(int(np.searchsorted(curve, target, side="right")) - 1, len(curve) - 1))
    r = np.minimum(c, level)
    left = target - curve[level]
    if left > 0 and level < len(curve) - 1:
        if integral:
            open_rows = np.flatnonzero(c > level)
            r[open_rows[: int(min(round(left), len(open_rows)))]] += 1
        else:
            for j in range(level + 1, int(c.max()) + 1):
                open_rows = np.flatnonzero((c >= j) & (r == j - 1))
                if len(open_rows) == 0 or left <= 0:
                    break
                taken = np.zeros(len(open_rows), bool)
                budget = left
                for rnd in range(A.FILL_ROUNDS + 1):
                    if budget <= 0:
                        break
                    fit = np.flatnonzero(~taken & ((m[open_rows] <= budget) & (m[open_rows] > 0) if rnd else True))
                    if len(fit) == 0:
                        break
                    cum = np.cumsum(m[open_rows][fit])
                    k = int(np.searchsorted(cum, budget, side="right"))
                    taken[fit[:k]] = True
                    budget -= cum[k - 1] if k else 0.0
                    if rnd and k == len(fit):
                        break
                if not taken.any():
                    break
                r[open_rows[taken]] += 1
                left -= float(m[open_rows[taken]].sum())
            if left > 0:
                over = np.flatnonzero((r < c) & (m > left) & (m - left < left))
                if len(over):
                    r[over[0]] += 1
    rep[prio] = r
    return rep


@pytest.mark.parametrize("trial", range(120))
def test_streamed_decisions_equal_the_in_memory_sort(trial):
    """Samples and tokens; ties (weights so small that keys overflow to inf), rows without mass, a row larger than
    the target, kept rows, caps 1-4; the rows cut into random chunks: the same repeat count for every row."""
    g = np.random.default_rng(trial)
    n = int(g.integers(1, 250))
    integral = trial % 3 == 0
    mass = np.ones(n) if integral else g.choice([0, 1, 5, 50, 700, 5000], n).astype(float)
    if not integral and trial % 4 == 1:
        mass[g.integers(0, n)] = 1e6
    weight = g.choice([1.0, 0.5, 2.0, 1e-300], n) if trial % 5 == 0 else g.uniform(0.1, 3, n)
    keep = g.random(n) < (0.2 if trial % 2 else 0.0)
    cap = g.integers(1, 5, n)
    target = min(float(g.uniform(0, 1.1) * (mass * cap).sum()), float((mass * cap).sum()))
    if integral:
        target = float(np.floor(target))
    want = reference(mass, weight, keep, cap, target, A.group_rng(trial, "g"), integral)
    bounds = np.unique(np.concatenate([[0, n], g.integers(0, n + 1, int(g.integers(0, 6)))]))

    def chunks():
        rng = A.group_rng(trial, "g")
        for a, b in zip(bounds[:-1], bounds[1:]):
            yield A.Chunk(int(a), A.priorities(rng, weight[a:b], keep[a:b]), mass[a:b], cap[a:b].astype(np.int64))

    draw = A.allocate_group(chunks, np.bincount(cap, weights=mass), target, integral)
    replay = A.Replay(draw)
    got = np.concatenate([replay.repeat(c) for c in chunks()])
    assert np.array_equal(got, want)


def test_priorities_do_not_depend_on_how_the_stream_is_chunked():
    w = np.random.default_rng(1).uniform(0.1, 2, 1000)
    keep = np.zeros(1000, bool)
    keep[::7] = True
    whole = A.priorities(A.group_rng(3, "x"), w, keep)
    rng = A.group_rng(3, "x")
    parts = np.concatenate([A.priorities(rng, w[a:b], keep[a:b]) for a, b in ((0, 1), (1, 400), (400, 400), (400, 1000))])
    assert np.array_equal(whole, parts)
    assert (whole[keep].max() < whole[~keep].min())  # kept rows come first
