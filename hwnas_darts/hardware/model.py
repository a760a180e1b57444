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
the grid); the fit and the validation live in :mod:`hwnas_darts.hardware.calibration`.

Because the model is linear in one-hot op choices, its expectation under per-layer candidate
probabilities ``p_l`` is exact and differentiable: ``E[LAT] = c0 + LUT_fixed +
sum_l sum_i p_li * cost_li``. The same holds for MACs and bytes, from which expected
intensity ``I = 2 E[macs] / E[bytes]`` and efficiency ``E = C / C_ideal(I)`` follow.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..errors import LUTError
from ..network import build_network
from ..space.arch import Arch
from ..space.ops import parse_op
from ..space.space import SearchSpace
from .table import LatencyTable
from .measure import MeasureSettings, Timing, measure_modules
from .roofline import Roofline, intensity

__all__ = ["LatencyModel", "group_of", "row_id", "measure_archs", "measure_arch_timings", "arch_intensities",
           "anchor_archs"]

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


#: the least a learned prediction may be, as a share of the network's plain table sum (see ``predict``)
MIN_FRACTION_OF_TABLE_SUM = 0.25


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
        self._warned_floor = False
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
        """Predicted end-to-end latency of ``arch`` in milliseconds (calibrated when available).

        A linear model fitted on noisy measurements (a busy machine, a tiny space) can extrapolate
        to zero or below for the fastest networks; a latency cannot, and a ratio to the target
        raised to a fractional power would turn complex. Such a prediction is floored at
        :data:`MIN_FRACTION_OF_TABLE_SUM` of the plain table sum, with a warning that names the
        network and the command that refits the model."""
        total, raw = self._intercept, 0.0
        for layer in self.space.plan(arch):  # one pass: the calibrated cost and the plain table sum
            total += self.layer_cost(layer.name, layer.op, layer.key, layer.role)
            raw += self.table.lookup(layer.key).latency_ms
        floor = MIN_FRACTION_OF_TABLE_SUM * raw
        if total < floor:
            if not self._warned_floor:
                _logger.warning("the learned latency model predicts %.3g ms for %s, below %.0f %% of its table sum "
                                "(%.3g ms): the fit extrapolates badly here (measured on a busy machine?); using the floor. "
                                "Rebuild the table on an idle machine: python -m hwnas_darts.lut build",
                                total, arch.to_string(), 100 * MIN_FRACTION_OF_TABLE_SUM, floor / MIN_FRACTION_OF_TABLE_SUM)
                self._warned_floor = True
            total = floor
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
