"""How many times each row goes into the mixture: seeded, capped, without copying rows or holding them.

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

Nothing here holds a value per row. A group's keys come from its own random
stream, drawn in scan order, so any pass can draw them again chunk by chunk. A
partial pass "takes the first rows of the priority order while they fit" is
found as a threshold on the priority, digit by digit (16 bits per pass, counts
or masses per digit), and the decisions (:class:`Draw`) are replayed row by row
(:class:`Replay`) to give each row's repeat count when it is needed.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

#: first-fit rounds of the last partial pass before it gives up (each round takes at least one row)
FILL_ROUNDS = 64
_DIGIT = 16
_BINS = 1 << _DIGIT
_LATE = np.uint64(1 << 63)  # priority bit of rows that are not kept at 100%


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


def capped_mass_curve(by_cap: np.ndarray) -> np.ndarray:
    """M[L] = sum(mass * min(cap, L)) for L = 0..max(cap), from the mass of the rows of each cap (``by_cap[c]``)."""
    top = len(by_cap) - 1
    if top < 0:
        return np.zeros(1)
    levels = np.arange(top + 1, dtype=np.float64)
    below = np.concatenate([[0.0], np.cumsum(by_cap * levels)[:-1]])  # sum over c < L of mass_c * c
    at_or_above = by_cap[::-1].cumsum()[::-1]  # sum over c >= L of mass_c
    return below + levels * at_or_above


@dataclass
class Chunk:
    """A run of one group's rows in scan order: their index in the group, priority, mass, cap (and tokens, for the
    plan's figures; the allocation never reads them)."""

    first: int
    prio: np.ndarray  # uint64: kept rows first, then by key (the bits of a non-negative float order as it does)
    mass: np.ndarray  # float64
    cap: np.ndarray  # int64
    tokens: np.ndarray | None = None  # int64


def priorities(rng: np.random.Generator, weight: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The next ``len(weight)`` rows' priorities from the group's stream (the same however the rows are chunked)."""
    u = 1.0 - rng.random(len(weight))  # (0, 1]
    key = -np.log(u) / weight.astype(np.float64)
    return key.view(np.uint64) | np.where(keep, np.uint64(0), _LATE)


@dataclass
class Prefix:
    """The first rows of a subset in priority order (ties in scan order) while they fit a budget.

    Rows of the subset with a priority below ``limit`` are taken, and the first ``ties`` of those equal to it;
    ``limit`` None takes the whole subset."""

    limit: int | None
    ties: int
    mass: float  # the mass it took
    count: int  # the rows it took
    size: int  # the rows in the subset


@dataclass
class Level:
    """One partial pass of token mode: first-fit rounds over the rows at ``j - 1`` repeats whose cap allows ``j``."""

    j: int
    rounds: list[tuple[Prefix, float]]  # each round's prefix and the budget it had (its rows weigh at most that)


@dataclass
class Draw:
    """Every decision of one group's allocation, in the order they apply."""

    level: int  # full passes (each row: min(cap, level))
    extra: Prefix | None = None  # samples: one more repeat for the first rows whose cap allows it
    levels: list[Level] = field(default_factory=list)  # tokens: the partial passes
    over: int | None = None  # tokens: the row (index in the group) given one more repeat to land nearer the target


class Replay:
    """Repeat counts of a group's rows, chunk by chunk in scan order, from its :class:`Draw` (or part of it)."""

    def __init__(self, draw: Draw) -> None:
        self.draw = draw
        self.seen: dict[int, int] = {}  # per prefix (by id): rows equal to its limit seen so far

    def take(self, p: Prefix, prio: np.ndarray, subset: np.ndarray) -> np.ndarray:
        if p.limit is None:
            return subset.copy()
        t = np.uint64(p.limit)
        out = subset & (prio < t)
        tie = subset & (prio == t)
        if tie.any():
            before = self.seen.get(id(p), 0)
            rank = before + np.cumsum(tie) - 1
            out |= tie & (rank < p.ties)
            self.seen[id(p)] = before + int(tie.sum())
        return out

    def repeat(self, c: Chunk) -> np.ndarray:
        d = self.draw
        rep = np.minimum(c.cap, d.level)
        if d.extra is not None:
            rep += self.take(d.extra, c.prio, c.cap > d.level)
        for lv in d.levels:
            rep += self.level(lv, c, rep)
        if d.over is not None and c.first <= d.over < c.first + len(rep):
            rep[d.over - c.first] += 1
        return rep

    def level(self, lv: Level, c: Chunk, rep: np.ndarray, upto: int | None = None) -> np.ndarray:
        """The rows a partial pass takes (its first ``upto`` rounds)."""
        opened = (c.cap >= lv.j) & (rep == lv.j - 1)
        taken = np.zeros(len(rep), dtype=bool)
        for r, (p, budget) in enumerate(lv.rounds[:upto]):
            subset = opened & ~taken
            if r:
                subset &= (c.mass <= budget) & (c.mass > 0)
            taken |= self.take(p, c.prio, subset)
        return taken


Chunks = Callable[[], Iterator[Chunk]]


def prefix(chunks: Chunks, subset: Callable[[Replay, Chunk], np.ndarray], draw: Draw, budget: float,
           weighted: bool) -> Prefix:
    """The longest prefix (priority order, ties in scan order) of the rows ``subset`` picks whose cumulative mass
    (or count) stays within ``budget``: one pass per 16-bit digit of the priority, then one for the ties."""

    def rows(fixed: int, bits: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        replay = Replay(draw)
        for c in chunks():
            m = subset(replay, c)
            prio, mass = c.prio[m], (c.mass[m] if weighted else np.ones(int(m.sum())))
            if bits:
                keep = (prio >> np.uint64(64 - bits)) == np.uint64(fixed >> (64 - bits))
                prio, mass = prio[keep], mass[keep]
            yield prio, mass

    fixed, left, took_mass, took_count, size = 0, float(budget), 0.0, 0, 0
    for d in range(64 // _DIGIT):
        shift = np.uint64(64 - _DIGIT * (d + 1))
        hist = np.zeros(_BINS)
        count = np.zeros(_BINS, dtype=np.int64)
        for prio, mass in rows(fixed, _DIGIT * d):
            digit = ((prio >> shift) & np.uint64(_BINS - 1)).astype(np.int64)
            hist += np.bincount(digit, weights=mass, minlength=_BINS)
            count += np.bincount(digit, minlength=_BINS)
        if d == 0:
            size = int(count.sum())
        cum = np.cumsum(hist)
        b = int(np.searchsorted(cum, left, side="right"))  # digits wholly within the budget
        if b == _BINS:  # only at the first digit: the whole subset fits
            return Prefix(None, 0, float(cum[-1]), size, size)
        if b:
            left -= float(cum[b - 1])
            took_mass += float(cum[b - 1])
            took_count += int(count[:b].sum())
        fixed |= b << int(shift)
    ties = 0
    for prio, mass in rows(fixed, 64):  # the rows equal to the limit, in scan order, while they fit
        cum = np.cumsum(mass)
        k = int(np.searchsorted(cum, left, side="right"))
        ties += k
        if k:
            left -= float(cum[k - 1])
            took_mass += float(cum[k - 1])
        if k < len(mass):
            break
    return Prefix(fixed, ties, took_mass, took_count + ties, size)


def allocate_group(chunks: Chunks, by_cap: np.ndarray, target: float, integral: bool) -> Draw:
    """The decisions of one group (its rows streamed by ``chunks``; ``by_cap[c]``: the mass of its rows of cap c,
    ``max(cap) + 1`` long; empty for a group without rows)."""
    draw = Draw(level=0)
    if target <= 0 or len(by_cap) == 0:
        return draw
    curve = capped_mass_curve(by_cap)
    level = int(np.searchsorted(curve, target, side="right")) - 1  # full passes that fit
    draw.level = level = max(0, min(level, len(curve) - 1))
    remaining = target - curve[level]
    if remaining <= 0 or level >= len(curve) - 1:
        return draw
    if integral:
        draw.extra = prefix(chunks, lambda r, c: c.cap > level, draw, float(round(remaining)), weighted=False)
        return draw
    _top_up(chunks, draw, len(curve) - 1, remaining)
    return draw


def _top_up(chunks: Chunks, draw: Draw, top: int, remaining: float) -> None:
    """Partial passes after the full ones, in priority order, until nothing more fits (token mode).

    A row too large for what is left sits out the pass while smaller rows go on,
    so a group with one huge row (a 500-page PDF) still lands near its target;
    then one more row is added if that lands closer to the target than stopping.
    """
    for j in range(draw.level + 1, top + 1):
        if remaining <= 0:
            break
        lv = Level(j, [])
        draw.levels.append(lv)
        took = 0
        for r in range(FILL_ROUNDS + 1):
            if remaining <= 0:
                break

            def subset(replay: Replay, c: Chunk, r: int = r, budget: float = remaining) -> np.ndarray:
                rep = _before(replay, c, lv)
                opened = (c.cap >= lv.j) & (rep == lv.j - 1)
                m = opened & ~replay.level(lv, c, rep, upto=r)
                return m & (c.mass <= budget) & (c.mass > 0) if r else m

            p = prefix(chunks, subset, draw, remaining, weighted=True)
            if p.size == 0:
                break
            lv.rounds.append((p, remaining))
            took += p.count
            remaining -= p.mass
            if p.count == p.size and r:  # every row that fit was taken
                break
        if took == 0:
            draw.levels.pop()
            break
    if remaining > 0:
        best: tuple[int, int] | None = None
        replay = Replay(draw)
        for c in chunks():
            rep = replay.repeat(c)
            m = np.flatnonzero((rep < c.cap) & (c.mass > remaining) & (c.mass - remaining < remaining))
            if m.size:
                i = m[np.argmin(c.prio[m])]  # argmin: the first of equal priorities, in scan order
                if best is None or int(c.prio[i]) < best[0]:
                    best = (int(c.prio[i]), c.first + int(i))
        if best is not None:
            draw.over = best[1]


def _before(replay: Replay, c: Chunk, lv: Level) -> np.ndarray:
    """Repeat counts before the partial pass ``lv`` (the draw's full passes and the partial passes before it)."""
    d = replay.draw
    rep = np.minimum(c.cap, d.level)
    for other in d.levels:
        if other is lv:
            break
        rep += replay.level(other, c, rep)
    return rep
