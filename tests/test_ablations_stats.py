"""Paired bootstrap statistics and verdicts of the findings report (ablations.stats)."""
from __future__ import annotations

import numpy as np
import pytest

from ablations.stats import bootstrap_interval, compare, paired_differences, verdict


def test_constant_differences_give_a_point_interval():
    low, high = bootstrap_interval([0.25] * 5)
    assert low == pytest.approx(0.25) and high == pytest.approx(0.25)


def test_two_values_interval_spans_both():
    # resampled means of {0, 1} are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4: the 2.5/97.5 percentiles are 0 and 1
    low, high = bootstrap_interval([0.0, 1.0], resamples=20_000)
    assert (low, high) == (0.0, 1.0)


def test_bootstrap_matches_the_normal_interval_for_many_values():
    x = np.random.default_rng(3).normal(2.0, 1.0, size=400)
    low, high = bootstrap_interval(x, resamples=20_000)
    se = x.std(ddof=0) / np.sqrt(x.size)
    assert low == pytest.approx(x.mean() - 1.96 * se, abs=0.25 * se)
    assert high == pytest.approx(x.mean() + 1.96 * se, abs=0.25 * se)


def test_bootstrap_is_seeded_and_matches_a_loop():
    x = np.array([0.1, -0.3, 0.7, 0.2, 0.05])
    a = bootstrap_interval(x, seed=7, resamples=2000)
    assert a == bootstrap_interval(x, seed=7, resamples=2000)
    rng = np.random.default_rng(7)
    idx = rng.integers(0, x.size, size=(2000, x.size))
    means = [float(np.mean([x[j] for j in row])) for row in idx]
    assert a == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))


def test_paired_differences_use_common_finite_seeds_in_order():
    seeds, d = paired_differences({2: 1.0, 0: 0.5, 1: float("nan"), 5: 3.0}, {0: 0.25, 1: 0.0, 2: 0.5, 3: 9.0})
    assert seeds == [0, 2]
    assert d.tolist() == [0.25, 0.5]


@pytest.mark.parametrize(
    "arm, base, direction, expected",
    [
        ([0.9, 0.8, 0.85, 0.95, 0.9], [0.5, 0.6, 0.55, 0.5, 0.6], "higher", "reproduced"),
        ([0.9, 0.8, 0.85, 0.95, 0.9], [0.5, 0.6, 0.55, 0.5, 0.6], "lower", "reversed"),
        ([0.2, 0.3, 0.25, 0.2, 0.3], [0.5, 0.6, 0.55, 0.5, 0.6], "lower", "reproduced"),
        ([0.2, 0.3, 0.25, 0.2, 0.3], [0.5, 0.6, 0.55, 0.5, 0.6], "higher", "reversed"),
        ([0.6, 0.4, 0.7, 0.3, 0.5], [0.5, 0.5, 0.5, 0.5, 0.5], "higher", "inconclusive"),
    ],
)
def test_verdicts_on_constructed_cases(arm, base, direction, expected):
    r = compare(dict(enumerate(arm)), dict(enumerate(base)), direction)
    assert r.verdict == expected
    assert r.seeds == [0, 1, 2, 3, 4]
    assert r.mean == pytest.approx(np.mean(arm) - np.mean(base))
    assert r.low <= r.mean <= r.high
    if expected == "inconclusive":
        assert "contains 0" in r.reason
    else:
        assert "lies" in r.reason


def test_one_seed_is_inconclusive_whatever_the_difference():
    r = compare({0: 1.0}, {0: 0.0}, "higher")
    assert r.verdict == "inconclusive" and "at least 3" in r.reason


def test_missing_metric_is_inconclusive():
    v, reason = verdict(float("nan"), float("nan"), "higher", 5)
    assert v == "inconclusive" and "undefined" in reason


def test_bad_direction_is_rejected():
    with pytest.raises(ValueError):
        compare({0: 1.0}, {0: 0.0}, "up")  # type: ignore[arg-type]
