"""Fitting and validating the latency model on whole networks measured end to end.

:func:`fit_calibration` fits the group scales and per-row corrections of
:class:`~hwnas_darts.hardware.model.LatencyModel` (ridge strengths by K-fold cross-validation with
the one-standard-error rule); :func:`validate_model` and :func:`check_table` measure fresh networks
and report rank and error metrics beside the measurement's own repeatability (halves of each
network's timing, and fresh processes), the noise floor every error figure is read against.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..space.arch import Arch
from ..space.space import SearchSpace
from .measure import MeasureSettings, Timing
from .model import LatencyModel, group_of, measure_arch_timings, row_id
from .table import LatencyTable

__all__ = ["fit_calibration", "validate_model", "validation_report", "rank_metrics", "calibrate_and_validate",
           "check_table", "measurement_noise", "between_processes", "repeatability", "RIDGE_GRID"]

_logger = logging.getLogger(__name__)


RIDGE_GRID = [(g, r) for g in (0.001, 0.01, 0.1, 1.0, 10.0)
              for r in (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, math.inf)]


def _design(model: LatencyModel, archs: Sequence[Arch]) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Columns: intercept, one per group (sum of its table latencies), one per row (its latency);
    and the offset of the fixed layers (stem, head: the same in every network of the space, so
    only the intercept can absorb their in-context difference)."""
    plans = [model.space.plan(a) for a in archs]
    groups = sorted({group_of(lay.name, lay.op) for p in plans for lay in p if lay.role == "search"})
    rows = sorted({row_id(lay.name, lay.op) for p in plans for lay in p if lay.role == "search"})
    gi = {g: 1 + i for i, g in enumerate(groups)}
    ri = {r: 1 + len(groups) + i for i, r in enumerate(rows)}
    x = np.zeros((len(archs), 1 + len(groups) + len(rows)))
    offset = np.zeros(len(archs))
    x[:, 0] = 1.0
    for n, plan in enumerate(plans):
        for lay in plan:
            lat = model.table.lookup(lay.key).latency_ms
            if lay.role != "search":
                offset[n] += lat
                continue
            x[n, gi[group_of(lay.name, lay.op)]] += lat
            x[n, ri[row_id(lay.name, lay.op)]] += lat
    return x, offset, groups, rows


def _solve(x: np.ndarray, offset: np.ndarray, y: np.ndarray, n_groups: int, ridge_group: float,
           ridge_row: float) -> np.ndarray:
    """Bounded ridge least squares on the relative error, prior s_g = 1, d = 0, c0 = 0 (an infinite
    row ridge fixes every d at 0)."""
    from scipy.optimize import lsq_linear

    k = x.shape[1]
    if math.isinf(ridge_row) and k > 1 + n_groups:
        theta = np.zeros(k)
        theta[:1 + n_groups] = _solve(x[:, :1 + n_groups], offset, y, n_groups, ridge_group, ridge_row)
        return theta
    a = x / y[:, None]
    b = 1.0 - offset / y
    lam = np.empty(k)
    lam[0] = 0.1 / float(np.mean(y))  # intercept pulled towards 0 on the scale of the latencies
    lam[1:1 + n_groups] = math.sqrt(ridge_group)
    lam[1 + n_groups:] = math.sqrt(ridge_row) if k > 1 + n_groups else 0.0
    prior = np.zeros(k)
    prior[1:1 + n_groups] = 1.0
    lower = np.array([-np.inf] + [0.0] * n_groups + [-1.0] * (k - 1 - n_groups))
    sol = lsq_linear(np.concatenate([a, np.diag(lam)]), np.concatenate([b, lam * prior]),
                     bounds=(lower, np.full(k, np.inf)))
    return sol.x


def fit_calibration(model: LatencyModel, archs: Sequence[Arch], measured_ms: Sequence[float],
                    ridge: tuple[float, float] | None = None, folds: int = 5, seed: int = 0,
                    grid: Sequence[tuple[float, float]] = ()) -> dict[str, Any]:
    """Fit group scales and per-row in-context corrections on whole-network measurements.

    Args:
        model: a model over the table and space (its calibration is ignored).
        archs: the calibration networks; ``measured_ms`` their end-to-end latencies (normalised
            like the table's rows).
        ridge: ``(group, row)`` ridge strengths; ``None`` chooses them by ``folds``-fold
            cross-validation (mean relative error) from ``grid`` (default :data:`RIDGE_GRID`).
    """
    if len(archs) != len(measured_ms) or len(archs) < 3:
        raise ValueError(f"calibration needs >= 3 measured architectures, got {len(archs)}")
    y = np.asarray(measured_ms, dtype=np.float64)
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise ValueError("calibration measurements must be positive, finite milliseconds")
    raw = LatencyModel(model.table, model.space, calibration={})
    x, offset, groups, rows = _design(raw, archs)
    ng = len(groups)
    cv: dict[str, float] = {}
    cv_chosen = None
    if ridge is None:
        k = max(2, min(folds, len(y)))
        order = np.random.default_rng(seed).permutation(len(y))
        parts = [order[i::k] for i in range(k)]
        scores = []
        for lg, lr in (grid or RIDGE_GRID):
            err = np.zeros(len(y))
            for part in parts:
                train = np.setdiff1d(order, part)
                th = _solve(x[train], offset[train], y[train], ng, lg, lr)
                err[part] = np.abs(x[part] @ th + offset[part] - y[part]) / y[part]
            scores.append(((lg, lr), float(err.mean()), float(err.std(ddof=1) / math.sqrt(len(y)))))
            cv[f"{lg:g}/{lr:g}"] = float(err.mean()) * 100
        # the one-standard-error rule: the most regularised model (fewest effective corrections)
        # whose error is within one standard error of the best - corrections must earn their place
        best = min(scores, key=lambda t: t[1])
        within = [t for t in scores if t[1] <= best[1] + best[2]]
        ridge = max(within, key=lambda t: (t[0][1], t[0][0]))[0]
        cv_chosen = dict((t[0], t[1]) for t in scores)[ridge] * 100
    theta = _solve(x, offset, y, ng, *ridge)
    pred = x @ theta + offset
    coef = dict(zip(groups, (float(v) for v in theta[1:1 + ng])))
    row_d = {r: float(v) for r, v in zip(rows, theta[1 + ng:]) if abs(v) > 1e-9}
    return {
        "form": "c0 + LUT_fixed + sum_l LUT_l * (s_g + d_row), g = op family @ stage, row = layer x op",
        "space_id": model.space.space_id,
        "coef": coef,
        "rows": row_d,
        "intercept_ms": float(theta[0]),
        "ridge": {"group": ridge[0], "row": (None if math.isinf(ridge[1]) else ridge[1])},
        "cv_mape_pct": (cv_chosen if cv else None),
        "cv_best_mape_pct": (min(cv.values()) if cv else None),
        "n_archs": len(y),
        "fit_mape_pct": float(np.mean(np.abs(pred - y) / y) * 100),
        "archs": [a_.to_string() for a_ in archs],
        "measured_ms": [float(v) for v in y],
    }


def rank_metrics(pred: Sequence[float], meas: Sequence[float]) -> dict[str, float]:
    """Spearman, Kendall, MAPE (%), the largest error (%) and the share within +-10%."""
    from scipy.stats import kendalltau, spearmanr

    p, m = np.asarray(pred, dtype=np.float64), np.asarray(meas, dtype=np.float64)
    rel = np.abs(p - m) / m
    return {
        "spearman": float(spearmanr(p, m).statistic) if len(p) > 2 else float("nan"),
        "kendall": float(kendalltau(p, m).statistic) if len(p) > 2 else float("nan"),
        "mape_pct": float(rel.mean() * 100),
        "max_err_pct": float(rel.max() * 100) if len(rel) else float("nan"),
        "within_10pct": float((rel <= 0.10).mean()),
        "n": int(len(p)),
    }


def repeatability(timings: Sequence[Timing]) -> dict[str, float] | None:
    """How well a measurement agrees with itself: its first half of cycles against its second.

    ``mape_pct`` is the mean relative difference between the halves; the error of the full
    measurement (twice the samples of a half) is about half of it, reported as ``noise_pct`` -
    the floor below which no model's error against these measurements can be told apart.
    """
    halves = [t.half_medians_ms for t in timings]
    if not halves or any(h is None for h in halves) or len(halves) < 3:
        return None
    a = [h[0] for h in halves]
    b = [h[1] for h in halves]
    from scipy.stats import spearmanr

    rel = np.abs(np.asarray(a) - np.asarray(b)) / ((np.asarray(a) + np.asarray(b)) / 2.0)
    out = {"spearman": float(spearmanr(a, b).statistic), "mape_pct": float(rel.mean() * 100),
           "max_pct": float(rel.max() * 100), "noise_pct": float(rel.mean() * 50), "n": len(a)}
    procs = between_processes(timings)
    if procs:
        out["processes"] = procs
        out["noise_pct"] = max(out["noise_pct"], procs["noise_pct"])
    return out


def _process_stderr(log_values: np.ndarray) -> np.ndarray:
    """Relative standard error of a geometric mean over processes, from the log latencies
    (last axis: the processes)."""
    k = log_values.shape[-1]
    return np.expm1(np.std(log_values, axis=-1, ddof=1) / math.sqrt(k))


def measurement_noise(timings: Sequence[Timing]) -> float:
    """The relative noise of a typical combined value of this measurement (a fraction): per item
    the larger of half its halves' disagreement and its between-process standard error, the
    median over items (0 when nothing tells)."""
    vals = []
    for t in timings:
        v = (t.half_disagreement or 0.0) / 2.0
        p = t.process_medians_ms
        if p and len(p) >= 2:
            v = max(v, float(_process_stderr(np.log(p))))
        vals.append(v)
    return float(np.median(vals)) if vals else 0.0


def between_processes(timings: Sequence[Timing]) -> dict[str, Any] | None:
    """How well the fresh processes of a measurement agree (``None`` for a one-process one).

    ``spearman``: mean over pairs of processes of the rank correlation of their latencies;
    ``mape_pct``: mean relative difference between two processes' values of a network;
    ``noise_pct``: the standard error of the combined value from the spread between processes
    (per network: the standard deviation of the log latencies over processes / sqrt(processes),
    averaged) - the floor for any comparison with a measurement taken in another process.
    """
    import itertools

    from scipy.stats import spearmanr

    per = [t.process_medians_ms for t in timings]
    if len(per) < 3 or any(not p or len(p) < 2 for p in per) or len({len(p) for p in per}) != 1:
        return None
    m = np.log(np.asarray(per, dtype=np.float64))  # networks x processes
    k = m.shape[1]
    pairs = list(itertools.combinations(range(k), 2))
    sp = [float(spearmanr(m[:, i], m[:, j]).statistic) for i, j in pairs]
    rel = [float(np.mean(np.abs(np.expm1(m[:, i] - m[:, j])))) for i, j in pairs]
    se = _process_stderr(m)
    return {"n_processes": k, "spearman": float(np.mean(sp)), "spearman_min": float(min(sp)),
            "mape_pct": float(np.mean(rel) * 100), "noise_pct": float(np.mean(se) * 100)}


def calibrate_and_validate(
    table: LatencyTable,
    space: SearchSpace,
    settings: MeasureSettings,
    n_calib: int,
    n_valid: int,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[LatencyModel, dict[str, Any] | None]:
    """Measure ``n_calib`` random architectures end to end, fit the calibration into ``table``,
    then record in ``table`` the model's error on ``n_valid`` other architectures measured in
    the same session (the out-of-sample check in another process is ``lut validate``).
    """
    model = LatencyModel(table, space, calibration={})
    validation = None
    if n_calib < 3:
        return model, None
    calib = space.sample_unique(n_calib, seed=seed * 1000 + 17)
    valid = space.sample_unique(n_valid, seed=seed * 1000 + 91, exclude=calib) if n_valid >= 3 else []
    timings = measure_arch_timings(space, calib + valid, settings, table,
                                   (lambda d, t: progress("measure networks", d, t)) if progress else None, anchors=False)
    meas = [t.median_ms for t in timings]
    table.calibration = fit_calibration(model, calib, meas[: len(calib)], seed=seed)
    model = LatencyModel(table, space)
    if valid:
        validation = validation_report(model, valid, timings[len(calib):])
        validation["kind"] = "same session as the fit"
        table.validation = validation
    return model, validation


def validation_report(model: LatencyModel, archs: Sequence[Arch], timings: Sequence[Timing]) -> dict[str, Any]:
    """Rank and error metrics of the table sum, the learned model and MACs against measurements,
    beside the measurement's own repeatability (all latencies in the table's units)."""
    measured_ms = [t.median_ms for t in timings]
    raw = [model.predict_raw(a) for a in archs]
    cal = [model.predict(a) for a in archs]
    macs = [model.counts(a)["macs"] for a in archs]
    mv = rank_metrics(macs, measured_ms)
    return {
        "n": len(archs),
        "space_id": model.space.space_id,
        "unit": "ms at the table's reference speed" if model.table.reference_nominal else "ms",
        "table_sum": rank_metrics(raw, measured_ms),
        "learned": rank_metrics(cal, measured_ms),
        "repeatability": repeatability(timings),
        "macs_vs_latency": {"spearman": mv["spearman"], "kendall": mv["kendall"], "n": mv["n"]},
        "archs": [a.to_string() for a in archs],
        "measured_ms": [float(v) for v in measured_ms],
        "halves_ms": [list(t.half_medians_ms) if t.half_medians_ms else None for t in timings],
        "process_ms": [t.process_medians_ms for t in timings] if timings and timings[0].process_medians_ms else None,
        "measured_raw_ms": [t.raw_median_ms for t in timings],
        "predicted_raw_ms": raw,
        "predicted_ms": cal,
        "macs": macs,
    }


def validate_model(model: LatencyModel, space: SearchSpace, settings: MeasureSettings, n: int, seed: int,
                   exclude: Iterable[Arch] = (), progress: Callable[[int, int], None] | None = None,
                   archs: Sequence[Arch] | None = None) -> dict[str, Any]:
    """Measure ``n`` random architectures (never the calibration networks) and compare.

    ``archs`` measures these instead (e.g. the table's own calibration networks, to check that
    the fit's units and this measurement's agree)."""
    if archs is None:
        cal_archs = [Arch.from_string(a) for a in (model.calibration or {}).get("archs", [])]
        archs = space.sample_unique(n, seed=seed, exclude=list(exclude) + cal_archs)
    t0 = time.perf_counter()
    info: dict[str, Any] = {}
    timings = measure_arch_timings(space, list(archs), settings, model.table, progress, info=info)
    out = validation_report(model, list(archs), timings)
    out["anchor_factor"] = info.get("anchor_factor")
    if info.get("anchor_factors"):
        out["anchor_factors"] = info["anchor_factors"]
    out["processes"] = info.get("processes", 1)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    out["seed"] = seed
    return out


def check_table(model: LatencyModel, space: SearchSpace, settings: MeasureSettings, n: int, seed: int,
                tolerance_pct: float) -> dict[str, Any]:
    """A run's quick check of its stored table: ``n`` fresh random networks measured now.

    Returns the validation report plus ``ok`` (the learned model's mean error is within
    ``tolerance_pct`` and its median measured/predicted ratio within it too) and that ratio.
    """
    import dataclasses

    # seconds, not minutes: one process (the stored calibration was averaged over several)
    val = validate_model(model, space, dataclasses.replace(settings, processes=1), n, seed)
    ratios = np.asarray(val["measured_ms"]) / np.asarray(val["predicted_ms"])
    ratio = float(np.median(ratios))
    ok = val["learned"]["mape_pct"] <= tolerance_pct and abs(ratio - 1.0) * 100 <= tolerance_pct
    val.update(ok=bool(ok), median_ratio=ratio, tolerance_pct=tolerance_pct)
    return val
