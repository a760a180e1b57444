"""Small statistics for comparing methods across seeds and candidates across validation images.

Every function takes plain sequences and returns plain numbers, so a study script, a test and
the derive stage use the same code: a mean with its Student-t interval, the interval of paired
differences (same seed, two methods), a percentile bootstrap, the standard error of an accuracy
difference between two classifiers scored on the same images, Kendall's tau with a
bootstrap interval, and a value's percentile among reference points of similar cost.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
from scipy import stats as _st

__all__ = ["mean_interval", "paired_interval", "bootstrap_interval", "paired_accuracy_se", "kendall_tau_interval",
           "band_percentile", "sign_interval"]


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and the two-sided Student-t interval ``(mean, low, high)``; one value: an interval of
    zero width cannot be claimed, so ``low = high = nan``."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("no values")
    m = float(x.mean())
    if x.size < 2:
        return m, math.nan, math.nan
    half = float(_st.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return m, m - half, m + half


def paired_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``a - b`` over pairs (same seed) and its Student-t interval."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    return mean_interval(np.asarray(a, dtype=float) - np.asarray(b, dtype=float), level)


def sign_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float, float]:
    """Median and its distribution-free interval from order statistics (the sign test's interval):
    ``(median, low, high, coverage)``.

    ``values`` may hold ``+inf`` / ``-inf`` (a paired difference whose one side forfeited: the
    other side wins by an unknown amount), which no mean can take but a rank can. The interval is
    ``[x_(k), x_(n+1-k)]`` for the largest ``k`` whose coverage ``1 - 2 P(Binomial(n, 1/2) < k)``
    is at least ``level``; ``coverage`` is that exact value (at least ``level``, more for small
    ``n``, since order statistics come in steps). Too few values for any interval at ``level``
    (fewer than 6 at 95 %): ``low = high = nan``, coverage ``nan``.
    """
    x = np.sort(np.asarray(values, dtype=float))
    if x.size == 0:
        raise ValueError("no values")
    if np.isnan(x).any():
        raise ValueError("values hold nan")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    n = x.size
    lo_mid, hi_mid = x[(n - 1) // 2], x[n // 2]
    med = float(lo_mid) if lo_mid == hi_mid else float((lo_mid + hi_mid) / 2)  # -inf and +inf in the middle: nan
    k = 0
    while k + 1 <= n // 2 and 1.0 - 2.0 * float(_st.binom.cdf(k, n, 0.5)) >= level:
        k += 1
    if k == 0:
        return med, math.nan, math.nan, math.nan
    return med, float(x[k - 1]), float(x[n - k]), 1.0 - 2.0 * float(_st.binom.cdf(k - 1, n, 0.5))


def bootstrap_interval(values: Sequence[float], stat: Callable[[np.ndarray], float] = np.mean, level: float = 0.95,
                       n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """``stat`` of the sample and its percentile-bootstrap interval."""
    x = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    boots = np.array([stat(x[rng.integers(0, x.size, x.size)]) for _ in range(n)])
    lo, hi = np.quantile(boots, [0.5 - level / 2, 0.5 + level / 2])
    return float(stat(x)), float(lo), float(hi)


def paired_accuracy_se(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> float:
    """Standard error of ``acc(a) - acc(b)`` for two classifiers scored on the same images: the
    per-image differences' standard deviation over sqrt(n) (images both get right or both get
    wrong carry no noise, which is why a paired comparison is much tighter than two separate ones)."""
    a, b = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    if a.shape != b.shape or a.size < 2:
        raise ValueError("need two equally long correctness vectors of at least two images")
    return float(np.std(a - b, ddof=1) / math.sqrt(a.size))


def kendall_tau_interval(x: Sequence[float], y: Sequence[float], level: float = 0.95, n: int = 2000,
                         seed: int = 0) -> tuple[float, float, float]:
    """Kendall's tau-b between ``x`` and ``y`` and a percentile-bootstrap interval over the pairs."""
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xa.size != ya.size or xa.size < 3:
        raise ValueError("need two equally long samples of at least three values")
    tau = float(_st.kendalltau(xa, ya).statistic)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n):
        i = rng.integers(0, xa.size, xa.size)
        if np.unique(xa[i]).size > 1 and np.unique(ya[i]).size > 1:
            boots.append(_st.kendalltau(xa[i], ya[i]).statistic)
    lo, hi = np.quantile(boots, [0.5 - level / 2, 0.5 + level / 2])
    return tau, float(lo), float(hi)


def band_percentile(value: float, cost: float, reference: Sequence[tuple[float, float]],
                    band: float = 0.05) -> tuple[float | None, int]:
    """Percentile of ``value`` among the reference values whose cost lies within ``+-band`` (relative)
    of ``cost``: ``reference`` holds ``(cost, value)`` pairs (e.g. latency and accuracy of retrained
    random networks). Ties count half. Returns ``(percentile, references in the band)``, and
    ``(None, 0)`` when the band holds none."""
    if cost <= 0 or band < 0:
        raise ValueError(f"need a positive cost and a non-negative band, got cost={cost}, band={band}")
    inside = [v for c, v in reference if abs(c / cost - 1.0) <= band]
    if not inside:
        return None, 0
    below = sum(v < value for v in inside)
    equal = sum(v == value for v in inside)
    return 100.0 * (below + 0.5 * equal) / len(inside), len(inside)
