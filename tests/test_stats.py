"""The interval code on samples whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hwnas_darts.stats import (bootstrap_interval, kendall_tau_interval, mean_interval, paired_accuracy_se,
                               paired_interval, sign_interval)


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


def test_sign_interval_order_statistics_and_forfeits():
    # n = 10: [x_(2), x_(9)], coverage 1 - 2 * (1 + 10) / 1024 (the binomial table); k = 3 would cover only 0.891
    med, lo, hi, cov = sign_interval([float(v) for v in range(10, 0, -1)])
    assert (med, lo, hi) == (5.5, 2.0, 9.0) and cov == pytest.approx(1 - 22 / 1024)
    # coverage by simulation: the interval holds the true median at least 95 % of the time
    rng = np.random.default_rng(0)
    hits = [lo <= 0.0 <= hi for lo, hi in (sign_interval(rng.standard_t(3, 14))[1:3] for _ in range(2000))]
    assert np.mean(hits) >= 0.95 - 0.012  # 0.987 nominal for n = 14, three binomial se of slack
    # forfeits are losses of unknown size: they move ranks, never a mean
    med, lo, hi, _ = sign_interval([0.1, 0.2, math.inf, math.inf, 0.3, 0.4, -0.1, 0.5, 0.6, 0.7])
    assert lo == 0.1 and hi == math.inf and med == pytest.approx(0.45)
    assert sign_interval([-math.inf] * 6 + [1.0] * 4)[2] == 1.0  # 6 of 10 lost by forfeit: the interval reaches them
    assert math.isnan(sign_interval([1.0, 2.0, 3.0, 4.0, 5.0])[1])  # five values: no 95 % interval exists (1 - 2/32 < 0.95)
    assert not math.isnan(sign_interval([1.0] * 6)[1])  # six: 1 - 2/64 = 0.969
    with pytest.raises(ValueError, match="nan"):
        sign_interval([1.0, math.nan])
    with pytest.raises(ValueError):
        sign_interval([])
