"""The latency model learned from the table, and its differentiable expectation for the search.

The plain table sum ``sum_l LUT(op_l, shape_l)`` times each op alone. Inside a network an op
costs something else: what precedes it decides the memory format and cache state of its input,
oneDNN picks primitives per context, and the framework adds per-layer overheads. The model
learns each searchable row's *in-context* cost from end-to-end measurements of random networks,
with the table as the prior::

    LAT(arch) = c0 + LUT_fixed + sum_l LUT(op_l @ l) * (s_g(l, op_l) + d(l, op_l))

``g`` is the op family within a stage (``mb@stage1``, ...), shared by all rows of that family
and stage; ``d`` is a per-row (layer position x op) correction. Both are fitted by bounded
least squares on the relative error with a ridge prior (``s_g -> 1``, ``d -> 0``): rows the
random networks rarely separate stay at the table's own value, rows they pin down move to what
whole networks show. The two ridge strengths are chosen by K-fold cross-validation on the
calibration networks with the one-standard-error rule (the most regularised setting within one
standard error of the best; an infinite row ridge, which drops the per-row corrections, is on
the grid).

Because the model is linear in one-hot op choices, its expectation under per-layer candidate
probabilities ``p_l`` is exact and differentiable: ``E[LAT] = c0 + LUT_fixed +
sum_l sum_i p_li * cost_li``. The same holds for MACs and bytes, from which expected
intensity ``I = 2 E[macs] / E[bytes]`` and efficiency ``E = C / C_ideal(I)`` follow.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from ..errors import LUTError
from ..network import build_network
from ..space.arch import Arch
from ..space.ops import parse_op
from ..space.space import SearchSpace
from .lut import LatencyTable
from .measure import MeasureSettings, Timing, measure_modules
from .roofline import Roofline, intensity

__all__ = ["LatencyModel", "group_of", "row_id", "measure_archs", "measure_arch_timings", "fit_calibration",
           "validate_model", "validation_report", "rank_metrics", "calibrate_and_validate", "check_table",
           "measurement_noise", "between_processes"]

_logger = logging.getLogger(__name__)

def _stage(layer_name: str) -> str:
    return layer_name.rsplit(".", 1)[0]


def group_of(layer_name: str, op: str, role: str = "search") -> str:
    """Calibration group of an op at a layer: ``family@stage``, or ``fixed`` for stem and head."""
    if role != "search":
        return "fixed"
    return f"{parse_op(op).family}@{_stage(layer_name)}"


def row_id(layer_name: str, op: str) -> str:
    """Calibration row of an op at a layer position: ``layer:op``."""
    return f"{layer_name}:{op}"


#: floor of a calibrated row's scale (a row never costs less than this share of its table value)
MIN_ROW_SCALE = 0.05


def arch_intensities(space: SearchSpace, archs: Sequence[Arch], table: LatencyTable | None) -> list[float | None]:
    """Operational intensity of each architecture's network from the table rows (``None`` when
    the table lacks a row), for the drift correction of the measurement."""
    out: list[float | None] = []
    for a in archs:
        if table is None:
            out.append(None)
            continue
        macs = nbytes = 0.0
        ok = True
        for layer in space.plan(a):
            if layer.key not in table:
                ok = False
                break
            row = table.lookup(layer.key)
            macs += row.macs
            nbytes += row.bytes
        out.append(intensity(macs, nbytes) if ok else None)
    return out


#: calibration networks measured beside every later network measurement (units anchor)
N_ANCHORS = 3


def anchor_archs(table: LatencyTable, space: SearchSpace) -> tuple[list[Arch], list[float]]:
    """The table's anchor networks: calibration networks of this space (fastest, median and
    slowest of the fit) with the latencies stored when the table was calibrated."""
    cal = table.calibration or {}
    if cal.get("space_id") != space.space_id or len(cal.get("archs", [])) < N_ANCHORS:
        return [], []
    order = sorted(range(len(cal["archs"])), key=lambda i: cal["measured_ms"][i])
    picks = [order[0], order[len(order) // 2], order[-1]][:N_ANCHORS]
    return [Arch.from_string(cal["archs"][i]) for i in picks], [float(cal["measured_ms"][i]) for i in picks]


def _scaled(t: Timing, f: float) -> Timing:
    t.median_ms *= f
    t.iqr_ms *= f
    t.p90_ms *= f
    t.mean_ms *= f
    t.samples_ms = [v * f for v in t.samples_ms]
    if t.half_medians_ms:
        t.half_medians_ms = (t.half_medians_ms[0] * f, t.half_medians_ms[1] * f)
    return t


def measure_arch_timings(space: SearchSpace, archs: Sequence[Arch], settings: MeasureSettings,
                         table: LatencyTable | None = None, progress: Callable[[int, int], None] | None = None,
                         anchors: bool = True, info: dict[str, Any] | None = None) -> list[Timing]:
    """End-to-end timings of several architectures' networks, measured together, in the table's
    units; each with the medians of its two halves.

    With a calibrated ``table`` (and ``anchors``), three of its calibration networks are measured
    in the same cycles, and every timing is scaled by ``median(stored / measured now)`` of those
    anchors: whatever drift the two reference workloads miss between the table's build and now
    (a neighbour filling the shared cache slows multi-megabyte networks more than the small
    references) cancels, because the anchors are networks of the same kind. ``info`` receives
    the ``anchor_factor``.

    On a CPU with ``settings.processes > 1`` the whole measurement is repeated in that many fresh
    processes, one after another, and each network's latency is the geometric mean of its
    per-process results (kept in ``Timing.process_medians_ms``). A process fixes things a
    network keeps for its lifetime - where its buffers and weights land in memory, which cache
    sets they share - and on a shared VM that moves a network's latency by 2-3% from one
    process to the next, more than the timing noise within a process; averaging processes is
    what makes a measurement repeatable in *another* process.
    """
    archs = list(archs)
    if settings.processes > 1 and not settings.is_cuda and archs:
        return _measure_in_processes(space, archs, settings, table, progress, anchors, info)
    extra, stored = anchor_archs(table, space) if (table is not None and anchors) else ([], [])
    nets = [build_network(space, a) for a in archs + extra]
    items = [(n, n.input_shape) for n in nets]
    if table is None:
        timings, _ = measure_modules(items, settings, progress)
        return timings
    timings = table.measure(items, settings, progress, intensities=arch_intensities(space, archs + extra, table))
    if extra:
        factor = float(np.median([s / t.median_ms for s, t in zip(stored, timings[len(archs):])]))
        timings = [_scaled(t, factor) for t in timings[: len(archs)]]
        if info is not None:
            info["anchor_factor"] = factor
    return timings


def _process_worker(space: SearchSpace, arch_strings: list[str], settings: MeasureSettings,
                    table: LatencyTable | None, anchors: bool) -> tuple[list[Timing], dict[str, Any]]:
    """One fresh process's share of :func:`_measure_in_processes` (module level: it is pickled)."""
    info: dict[str, Any] = {}
    timings = measure_arch_timings(space, [Arch.from_string(a) for a in arch_strings], settings, table,
                                   anchors=anchors, info=info)
    return timings, info


def _geomean(values: Sequence[float]) -> float:
    return float(np.exp(np.mean(np.log(np.asarray(values, dtype=np.float64)))))


def _measure_in_processes(space: SearchSpace, archs: list[Arch], settings: MeasureSettings,
                          table: LatencyTable | None, progress: Callable[[int, int], None] | None,
                          anchors: bool, info: dict[str, Any] | None) -> list[Timing]:
    import concurrent.futures as cf
    import dataclasses
    import multiprocessing as mp

    n_proc = settings.processes
    one = dataclasses.replace(settings, processes=1)
    strings = [a.to_string() for a in archs]
    per_process: list[list[Timing]] = []
    factors = []
    ctx = mp.get_context("spawn")  # a fresh interpreter: nothing inherited from this process's heap
    for k in range(n_proc):
        # one worker per process, never reused: each measurement starts from a new address space
        with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            try:
                timings, pinfo = pool.submit(_process_worker, space, strings, one, table, anchors).result()
            except cf.process.BrokenProcessPool as e:
                raise LUTError(f"a latency measurement process died (process {k + 1} of {n_proc}); "
                               "rerun, or measure in this process with hardware.processes=1") from e
        per_process.append(timings)
        if "anchor_factor" in pinfo:
            factors.append(pinfo["anchor_factor"])
        if progress:
            progress((k + 1) * len(archs), n_proc * len(archs))
    out = []
    for i in range(len(archs)):
        ts = [p[i] for p in per_process]
        med = _geomean([t.median_ms for t in ts])
        t = Timing.from_samples([v for t_ in ts for v in t_.samples_ms], ts[0].runs_per_sample)
        t.median_ms = med
        t.raw_median_ms = _geomean([t_.raw_median_ms or t_.median_ms for t_ in ts])
        if all(t_.half_medians_ms for t_ in ts):
            t.half_medians_ms = (_geomean([t_.half_medians_ms[0] for t_ in ts]),
                                 _geomean([t_.half_medians_ms[1] for t_ in ts]))
        t.process_medians_ms = [t_.median_ms for t_ in ts]
        out.append(t)
    if info is not None:
        info["processes"] = n_proc
        if factors:
            info["anchor_factor"] = _geomean(factors)
            info["anchor_factors"] = factors
    return out


def measure_archs(space: SearchSpace, archs: Sequence[Arch], settings: MeasureSettings,
                  table: LatencyTable | None = None, progress: Callable[[int, int], None] | None = None) -> list[float]:
    """End-to-end median latencies (ms) of several architectures (see :func:`measure_arch_timings`)."""
    return [t.median_ms for t in measure_arch_timings(space, archs, settings, table, progress)]


class LatencyModel:
    """Predicts a network's latency from the table (plus calibration); differentiable expectation.

    Args:
        table: the latency table (must hold every row of ``space``).
        space: the search space.
        calibration: overrides the table's stored calibration (``None``: use the table's; a table
            without one predicts the plain sum).
    """

    def __init__(self, table: LatencyTable, space: SearchSpace, calibration: dict[str, Any] | None = None):
        self.table = table
        self.space = space
        missing = table.missing(space.all_keys())
        if missing:
            raise LUTError(f"the latency table lacks {len(missing)} rows this space needs (first: {missing[0]}); "
                           "build them with `python -m hwnas_darts.lut build`")
        cal = calibration if calibration is not None else table.calibration
        if cal and cal.get("space_id") not in (None, space.space_id):
            _logger.warning("the latency table's calibration was fitted for space %s, not %s; using the plain table sum",
                            cal.get("space_id"), space.space_id)
            cal = {}
        self.calibration = cal or {}
        self._coef = {str(k): float(v) for k, v in self.calibration.get("coef", {}).items()}
        self._rows = {str(k): float(v) for k, v in self.calibration.get("rows", {}).items()}
        self._intercept = float(self.calibration.get("intercept_ms", 0.0))
        # per-layer tensors for the differentiable expectation
        self._lat_cal: list[torch.Tensor] = []
        self._macs: list[torch.Tensor] = []
        self._bytes: list[torch.Tensor] = []
        for layer in space.layers:
            rows = [table.lookup(layer.key(op)) for op in layer.candidates]
            self._lat_cal.append(torch.tensor([self.layer_cost(layer.name, op) for op in layer.candidates],
                                              dtype=torch.float64))
            self._macs.append(torch.tensor([float(r.macs) for r in rows], dtype=torch.float64))
            self._bytes.append(torch.tensor([float(r.bytes) for r in rows], dtype=torch.float64))
        fixed = [table.lookup(k) for k in space.fixed_keys()]
        self._fixed_lat = sum(r.latency_ms for r in fixed)
        self._fixed_macs = float(sum(r.macs for r in fixed))
        self._fixed_bytes = float(sum(r.bytes for r in fixed))

    def coef(self, group: str) -> float:
        """Scale of a calibration group (1.0 for groups the calibration never saw)."""
        return self._coef.get(group, 1.0)

    def scale(self, layer_name: str, op: str, role: str = "search") -> float:
        """The calibrated multiple of the table latency of ``op`` at layer ``layer_name``."""
        s = self.coef(group_of(layer_name, op, role))
        if role == "search":
            s = max(s + self._rows.get(row_id(layer_name, op), 0.0), MIN_ROW_SCALE)
        return s

    def layer_cost(self, layer_name: str, op: str, key=None, role: str = "search") -> float:
        """Calibrated in-context latency (ms) of ``op`` at searchable layer ``layer_name`` of the base
        space (or at ``key`` for a planned layer of a scaled network)."""
        if key is None:
            layer = next(lay for lay in self.space.layers if lay.name == layer_name)
            key = layer.key(op)
        return self.scale(layer_name, op, role) * self.table.lookup(key).latency_ms

    def cost(self, layer_index: int, op: str, cost: str = "latency") -> float:
        """Cost of ``op`` at searchable layer ``layer_index``: calibrated latency (ms) or MACs."""
        layer = self.space.layers[layer_index]
        if cost == "macs":
            return float(self.table.lookup(layer.key(op)).macs)
        return self.layer_cost(layer.name, op, layer.key(op))

    @property
    def roofline(self) -> Roofline | None:
        return self.table.roofline

    @property
    def calibrated(self) -> bool:
        return bool(self.calibration)

    # -- discrete architectures ------------------------------------------------------------------
    def predict_raw(self, arch: Arch) -> float:
        """The plain table sum (ms)."""
        return float(sum(self.table.lookup(layer.key).latency_ms for layer in self.space.plan(arch)))

    def predict(self, arch: Arch) -> float:
        """Predicted end-to-end latency of ``arch`` in milliseconds (calibrated when available)."""
        total = self._intercept
        for layer in self.space.plan(arch):
            total += self.layer_cost(layer.name, layer.op, layer.key, layer.role)
        return float(total)

    def counts(self, arch: Arch) -> dict[str, float]:
        """MACs, bytes and intensity of the network of ``arch`` from the table rows."""
        macs = nbytes = 0.0
        for layer in self.space.plan(arch):
            row = self.table.lookup(layer.key)
            macs += row.macs
            nbytes += row.bytes
        return {"macs": macs, "bytes": nbytes, "intensity": intensity(macs, nbytes)}

    # -- differentiable expectation ---------------------------------------------------------------
    def expected(self, probs: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Expected latency (ms), MACs, bytes, intensity and efficiency under per-layer ``probs``.

        ``probs[l]`` is the candidate distribution of searchable layer ``l`` (e.g. from
        ``SuperNet.probs()``); gradients flow back to it.
        """
        if len(probs) != len(self._lat_cal):
            raise ValueError(f"expected {len(self._lat_cal)} probability vectors, got {len(probs)}")
        dt = probs[0].dtype

        def dot(vals: list[torch.Tensor]) -> torch.Tensor:
            return sum((p * v.to(device=p.device, dtype=dt)).sum() for p, v in zip(probs, vals))

        lat = self._intercept + self.coef("fixed") * self._fixed_lat + dot(self._lat_cal)
        macs = self._fixed_macs + dot(self._macs)
        nbytes = self._fixed_bytes + dot(self._bytes)
        inten = 2.0 * macs / nbytes
        out = {"latency_ms": lat, "macs": macs, "bytes": nbytes, "intensity": inten}
        if self.roofline is not None:
            achieved = 2.0 * macs / (lat.clamp_min(1e-6) / 1e3)
            ideal = torch.minimum(inten * self.roofline.bandwidth, torch.full_like(inten, self.roofline.peak_flops))
            out["efficiency"] = achieved / ideal
        return out


#: ridge strengths tried by the cross-validation of :func:`fit_calibration` (group, row); an
#: infinite row ridge drops the per-row corrections (group scales only)
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
