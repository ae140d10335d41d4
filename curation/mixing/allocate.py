"""How many times each row goes into the mixture: seeded, capped, without copying rows.

Each group (a source, modality or category with a share) gets a target mass in
samples or tokens. Its rows are put in a seeded priority order (weighted
Efraimidis-Spirakis keys: a row of weight w is drawn as if its key were an
exponential of rate w; rows kept "at 100%" come first). Full passes over the
group are taken while they fit the target; each row's repeat count stops at its
cap (``max_epochs``); the remainder is a partial pass in priority order (in token
mode, further partial passes of the rows that still fit). So down-sampling is a
draw without replacement, up-sampling is a repeat count, and two rows of a group
differ by at most one repeat unless a cap binds or, by tokens, a row is too large
for what is left of the target.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

#: first-fit rounds of the last partial pass before it gives up (each round takes at least one row)
FILL_ROUNDS = 64


@dataclass
class GroupResult:
    """What one group asked for, could hold, and got (masses in the mixture's `by` unit)."""

    name: str
    share: float
    target: float
    rows: int  # eligible rows (weight > 0)
    mass: float  # eligible mass, one epoch
    capacity: float  # mass with every row at its cap
    kept_mass: float
    achieved: float = 0.0
    rows_selected: int = 0
    samples: int = 0
    max_repeat: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def shortfall(self) -> float:
        return max(0.0, self.target - self.capacity)


def group_rng(seed: int, name: str) -> np.random.Generator:
    """An independent stream per group, so adding a source does not reshuffle another's draw."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode("utf-8"))])


def capped_mass_curve(mass: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """M[L] = sum(mass * min(cap, L)) for L = 0..max(cap): the mass of L full passes under the caps."""
    if len(mass) == 0:
        return np.zeros(1)
    top = int(cap.max())
    by_cap = np.bincount(cap, weights=mass, minlength=top + 1)  # mass of rows whose cap is c
    levels = np.arange(top + 1, dtype=np.float64)
    below = np.concatenate([[0.0], np.cumsum(by_cap * levels)[:-1]])  # sum over c < L of mass_c * c
    at_or_above = by_cap[::-1].cumsum()[::-1]  # sum over c >= L of mass_c
    return below + levels * at_or_above


def fill(mass: np.ndarray, budget: float) -> np.ndarray:
    """Rows (in priority order) taken by one partial pass of `budget`: the longest fitting prefix, then
    first-fit of later rows that still fit. Rows without mass are not taken past the prefix."""
    taken = np.zeros(len(mass), dtype=bool)
    if budget <= 0 or len(mass) == 0:
        return taken
    cum = np.cumsum(mass)
    k = int(np.searchsorted(cum, budget, side="right"))
    taken[:k] = True
    remaining = budget - (cum[k - 1] if k else 0.0)
    for _ in range(FILL_ROUNDS):
        if remaining <= 0:
            break
        fit = np.flatnonzero(~taken & (mass <= remaining) & (mass > 0))
        if len(fit) == 0:
            break
        cum = np.cumsum(mass[fit])
        k = int(np.searchsorted(cum, remaining, side="right"))
        taken[fit[:k]] = True
        remaining -= cum[k - 1]
        if k == len(fit):
            break
    return taken


def allocate_group(
    mass: np.ndarray,
    weight: np.ndarray,
    keep: np.ndarray,
    cap: np.ndarray,
    target: float,
    rng: np.random.Generator,
    integral: bool,
) -> np.ndarray:
    """Repeat count per row of one group (rows given in scan order; all weights > 0)."""
    n = len(mass)
    repeat = np.zeros(n, dtype=np.int32)
    if n == 0 or target <= 0:
        return repeat
    u = 1.0 - rng.random(n)  # (0, 1]
    key = -np.log(u) / weight
    prio = np.lexsort((key, ~keep))  # kept rows first, then by key
    del u, key
    m = mass[prio]
    c = cap[prio]
    curve = capped_mass_curve(m, c)
    level = int(np.searchsorted(curve, target, side="right")) - 1  # full passes that fit
    level = max(0, min(level, len(curve) - 1))
    rep = np.minimum(c, level).astype(np.int32)
    remaining = target - curve[level]
    if remaining > 0 and level < len(curve) - 1:
        if integral:
            open_rows = np.flatnonzero(c > level)
            k = int(min(round(remaining), len(open_rows)))
            rep[open_rows[:k]] += 1
        else:
            _top_up(m, c, rep, level, remaining)
    repeat[prio] = rep
    return repeat


def _top_up(mass: np.ndarray, cap: np.ndarray, rep: np.ndarray, level: int, remaining: float) -> None:
    """Partial passes after the full ones, in priority order, until nothing more fits (token mode).

    A row too large for what is left sits out the pass while smaller rows go on,
    so a group with one huge row (a 500-page PDF) still lands near its target;
    then one more row is added if that lands closer to the target than stopping.
    """
    top = int(cap.max())
    for j in range(level + 1, top + 1):
        open_rows = np.flatnonzero((cap >= j) & (rep == j - 1))
        if len(open_rows) == 0 or remaining <= 0:
            break
        took = open_rows[fill(mass[open_rows], remaining)]
        if len(took) == 0:
            break
        rep[took] += 1
        remaining -= float(mass[took].sum())
    if remaining > 0:
        over = np.flatnonzero((rep < cap) & (mass > remaining) & (mass - remaining < remaining))
        if len(over):
            rep[over[0]] += 1
