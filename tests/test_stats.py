"""The interval code on samples whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hwnas_darts.stats import (bootstrap_interval, kendall_tau_interval, mean_interval, paired_accuracy_se,
                               paired_interval)


def test_mean_interval_matches_the_t_table():
    # mean 2, sd 1, n 3: half width t(0.975, 2) * 1 / sqrt(3) = 4.302653 / 1.7320508 = 2.484138
    m, lo, hi = mean_interval([1.0, 2.0, 3.0])
    assert m == 2.0 and hi - m == pytest.approx(2.484138, abs=1e-5) and m - lo == pytest.approx(2.484138, abs=1e-5)
    m, lo, hi = mean_interval([5.0])
    assert m == 5.0 and math.isnan(lo) and math.isnan(hi)  # one seed: no interval is claimed
    with pytest.raises(ValueError):
        mean_interval([])


def test_paired_interval_removes_the_shared_seed_effect():
    a = [0.90, 0.92, 0.94]
    b = [0.89, 0.91, 0.93]  # always exactly 0.01 lower: the paired interval has zero width
    d, lo, hi = paired_interval(a, b)
    assert d == pytest.approx(0.01) and lo == pytest.approx(0.01) and hi == pytest.approx(0.01)
    assert mean_interval(a)[1] < 0.9  # while each method's own interval is wide
    with pytest.raises(ValueError, match="length"):
        paired_interval([1.0], [1.0, 2.0])


def test_bootstrap_interval_covers_the_mean_of_a_normal_sample():
    x = np.random.default_rng(1).normal(10.0, 1.0, 400)
    m, lo, hi = bootstrap_interval(x, n=1000)
    assert lo < 10.0 < hi and hi - lo == pytest.approx(2 * 1.96 / 20, rel=0.25)


def test_paired_accuracy_se_is_zero_for_identical_predictions_and_binomial_when_independent():
    a = [True, False, True, True]
    assert paired_accuracy_se(a, a) == 0.0
    rng = np.random.default_rng(0)
    x, y = rng.random(20000) < 0.7, rng.random(20000) < 0.7
    # independent classifiers: var(diff) = 2 p (1 - p)
    assert paired_accuracy_se(x, y) == pytest.approx(math.sqrt(2 * 0.21 / 20000), rel=0.05)


def test_kendall_tau_interval():
    tau, lo, hi = kendall_tau_interval([1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6])
    assert tau == pytest.approx(1.0) and hi == pytest.approx(1.0)
    tau, lo, hi = kendall_tau_interval([1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1])
    assert tau == pytest.approx(-1.0)
    rng = np.random.default_rng(3)
    x = rng.random(12)
    tau, lo, hi = kendall_tau_interval(x, x + rng.normal(0, 0.3, 12))
    assert lo <= tau <= hi


def test_band_percentile_counts_only_the_band():
    from hwnas_darts.stats import band_percentile

    ref = [(10.0, 0.90), (10.4, 0.91), (9.6, 0.92), (10.2, 0.93), (12.0, 0.99), (7.0, 0.50)]
    # band +-5 % of 10 ms: the first four; 0.915 beats two of them
    assert band_percentile(0.915, 10.0, ref) == (50.0, 4)
    assert band_percentile(0.91, 10.0, ref) == (37.5, 4)  # one below, one tie (half)
    assert band_percentile(0.95, 10.0, ref, band=0.25) == (80.0, 5)  # 12 ms joins the band; 7 ms stays out
    assert band_percentile(0.95, 30.0, ref) == (None, 0)
    with pytest.raises(ValueError, match="positive cost"):
        band_percentile(0.9, 0.0, ref)
