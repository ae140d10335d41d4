"""Paired statistics for findings: two arms of one experiment, compared seed by seed.

Each seed trains both arms from the same initialization seed and batch order,
so the difference ``arm - baseline`` per seed removes the seed-to-seed spread
that both arms share. Its mean gets a percentile bootstrap 95% interval
(resampling seeds with replacement, vectorized, from a fixed generator seed so
a report is reproducible), and the interval gives the verdict:

- ``reproduced``: the interval excludes 0 on the side the paper predicts;
- ``reversed``: it excludes 0 on the other side;
- ``inconclusive``: it contains 0, or there are too few paired seeds, with the reason.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, Mapping, Sequence

import numpy as np

Direction = Literal["higher", "lower"]

#: fewest paired seeds a verdict other than inconclusive needs (with 2, the percentile interval is the range of the two)
MIN_PAIRS = 3


@dataclass(frozen=True)
class PairedResult:
    """The paired comparison of one finding: per-seed differences, their mean, its interval and the verdict."""

    seeds: list[int]
    differences: list[float]
    mean: float
    low: float
    high: float
    verdict: str
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def paired_differences(arm: Mapping[int, float], baseline: Mapping[int, float]) -> tuple[list[int], np.ndarray]:
    """``arm[seed] - baseline[seed]`` for the seeds both have a finite value for, in seed order."""
    seeds = sorted(
        s for s in set(arm) & set(baseline)
        if arm[s] is not None and baseline[s] is not None and np.isfinite(arm[s]) and np.isfinite(baseline[s])
    )
    diff = np.array([float(arm[s]) - float(baseline[s]) for s in seeds], dtype=np.float64)
    return seeds, diff


def bootstrap_interval(values: Sequence[float] | np.ndarray, level: float = 0.95, resamples: int = 10_000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean: ``resamples`` draws of len(values) values with replacement."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def verdict(low: float, high: float, direction: Direction, n_pairs: int) -> tuple[str, str]:
    """Verdict and its reason from the interval of ``arm - baseline`` and the side the paper predicts."""
    if n_pairs < MIN_PAIRS:
        return "inconclusive", f"{n_pairs} paired seed(s); an interval needs at least {MIN_PAIRS}"
    if not (np.isfinite(low) and np.isfinite(high)):
        return "inconclusive", "the interval is undefined (missing metric values)"
    predicted = "above" if direction == "higher" else "below"
    span = f"[{low:+.4g}, {high:+.4g}]"
    if low > 0 or high < 0:
        side = "above" if low > 0 else "below"
        if side == predicted:
            return "reproduced", f"the 95% interval {span} lies {side} 0, as the paper predicts"
        return "reversed", f"the 95% interval {span} lies {side} 0; the paper predicts {predicted}"
    return "inconclusive", f"the 95% interval {span} contains 0 ({n_pairs} paired seeds)"


def compare(arm: Mapping[int, float], baseline: Mapping[int, float], direction: Direction,
            level: float = 0.95, resamples: int = 10_000, seed: int = 0) -> PairedResult:
    """Paired differences over seeds, their bootstrap interval and the verdict against the paper's direction."""
    if direction not in ("higher", "lower"):
        raise ValueError(f"direction must be higher or lower, got {direction!r}")
    seeds, diff = paired_differences(arm, baseline)
    low, high = bootstrap_interval(diff, level, resamples, seed)
    v, reason = verdict(low, high, direction, len(seeds))
    mean = float(diff.mean()) if diff.size else float("nan")
    return PairedResult(seeds, [float(d) for d in diff], mean, low, high, v, reason)
