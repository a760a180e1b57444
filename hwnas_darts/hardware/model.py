"""The latency model learned from the table, and its differentiable expectation for the search.

The plain table sum ``sum_l LUT(op_l, shape_l)`` ignores what happens between ops in a whole
network (allocation, cache reuse, framework overhead). The model corrects it with a calibration
learned from end-to-end measurements of K random architectures::

    LAT(arch) = c0 + sum_g s_g * sum_{layers l in group g} LUT(op_l, shape_l)

where a group is an op family within a stage (``mb@stage1``, ``fmb@s2d``, ...; the stem and
head form the group ``fixed``): the gap between an op timed alone and the same op inside a
network depends on the kind of op and on the size of the feature maps around it (cache
regime). Each scale ``s_g >= 0`` and the constant ``c0`` are fitted by bounded least squares
on the *relative* error, with a small ridge pull of each ``s_g`` towards 1, so that groups the
random architectures rarely separate stay near the table's own value.

Because the model is linear in the table terms, its expectation under per-layer candidate
probabilities ``p_l`` is exact and differentiable: ``E[LAT] = c0 + s_fixed*fixed +
sum_l sum_i p_li * s_g(l,i) * LUT_li``. The same holds for MACs and bytes, from which expected
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
from .measure import MeasureSettings, measure_modules
from .roofline import Roofline, intensity

__all__ = ["LatencyModel", "group_of", "measure_arch", "measure_archs", "fit_calibration", "validate_model",
           "rank_metrics", "calibrate_and_validate"]

_logger = logging.getLogger(__name__)

def _stage(layer_name: str) -> str:
    return layer_name.rsplit(".", 1)[0]


def group_of(layer_name: str, op: str, role: str = "search") -> str:
    """Calibration group of an op at a layer: ``family@stage``, or ``fixed`` for stem and head."""
    if role != "search":
        return "fixed"
    return f"{parse_op(op).family}@{_stage(layer_name)}"


def measure_arch(space: SearchSpace, arch: Arch, settings: MeasureSettings, table: LatencyTable | None = None) -> float:
    """End-to-end median latency (ms) of the network of ``arch`` at the settings' batch size."""
    return measure_archs(space, [arch], settings, table)[0]


def measure_archs(space: SearchSpace, archs: Sequence[Arch], settings: MeasureSettings,
                  table: LatencyTable | None = None, progress: Callable[[int, int], None] | None = None) -> list[float]:
    """End-to-end median latencies (ms) of several architectures, measured in interleaved rounds
    (normalised like ``table``'s rows when it uses a reference workload)."""
    nets = [build_network(space, a) for a in archs]
    items = [(n, n.input_shape) for n in nets]
    if table is not None:
        timings = table.measure(items, settings, progress)
    else:
        timings, _ = measure_modules(items, settings, progress)
    return [t.median_ms for t in timings]


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
        self.calibration = cal
        self._coef, self._intercept = self._unpack(self.calibration)
        # per-layer tensors for the differentiable expectation (base scale)
        self._lat_cal: list[torch.Tensor] = []
        self._macs: list[torch.Tensor] = []
        self._bytes: list[torch.Tensor] = []
        for layer in space.layers:
            rows = [table.lookup(layer.key(op)) for op in layer.candidates]
            scales = [self.coef(group_of(layer.name, op)) for op in layer.candidates]
            self._lat_cal.append(torch.tensor([c * r.latency_ms for r, c in zip(rows, scales)], dtype=torch.float64))
            self._macs.append(torch.tensor([float(r.macs) for r in rows], dtype=torch.float64))
            self._bytes.append(torch.tensor([float(r.bytes) for r in rows], dtype=torch.float64))
        fixed = [table.lookup(k) for k in space.fixed_keys()]
        self._fixed_lat = sum(r.latency_ms for r in fixed)
        self._fixed_macs = float(sum(r.macs for r in fixed))
        self._fixed_bytes = float(sum(r.bytes for r in fixed))

    @staticmethod
    def _unpack(cal: dict[str, Any] | None) -> tuple[dict[str, float], float]:
        if not cal:
            return {}, 0.0
        return {str(k): float(v) for k, v in cal.get("coef", {}).items()}, float(cal.get("intercept_ms", 0.0))

    def coef(self, group: str) -> float:
        """Scale of a calibration group (1.0 for groups the calibration never saw)."""
        return self._coef.get(group, 1.0)

    @property
    def roofline(self) -> Roofline | None:
        return self.table.roofline

    @property
    def calibrated(self) -> bool:
        return bool(self.calibration)

    # -- discrete architectures ------------------------------------------------------------------
    def features(self, arch: Arch) -> dict[str, float]:
        """Per-group sums of table latencies for the network of ``arch`` (scaling applied)."""
        feats: dict[str, float] = {}
        for layer in self.space.plan(arch):
            g = group_of(layer.name, layer.op, layer.role)
            feats[g] = feats.get(g, 0.0) + self.table.lookup(layer.key).latency_ms
        return feats

    def predict_raw(self, arch: Arch) -> float:
        """The plain table sum (ms)."""
        return float(sum(self.features(arch).values()))

    def predict(self, arch: Arch) -> float:
        """Predicted end-to-end latency of ``arch`` in milliseconds (calibrated when available)."""
        feats = self.features(arch)
        return float(self._intercept + sum(self.coef(g) * v for g, v in feats.items()))

    def counts(self, arch: Arch) -> dict[str, float]:
        """MACs, bytes and intensity of the network of ``arch`` from the table rows."""
        macs = nbytes = 0.0
        for layer in self.space.plan(arch):
            row = self.table.lookup(layer.key)
            macs += row.macs
            nbytes += row.bytes
        return {"macs": macs, "bytes": nbytes, "intensity": intensity(macs, nbytes)}

    def metrics(self, arch: Arch, latency_ms: float | None = None) -> dict[str, float]:
        """Predicted latency, MACs, bytes, I and E (E at ``latency_ms`` if given, else at the prediction)."""
        c = self.counts(arch)
        lat = self.predict(arch)
        at = latency_ms if latency_ms is not None else lat
        eff = self.roofline.efficiency(c["macs"], c["bytes"], at) if self.roofline else float("nan")
        return {"latency_ms_predicted": lat, **c, "efficiency": eff}

    # -- differentiable expectation ---------------------------------------------------------------
    def expected(self, probs: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Expected latency (ms), MACs, bytes, intensity and efficiency under per-layer ``probs``.

        ``probs[l]`` is the candidate distribution of searchable layer ``l`` (e.g. from
        ``SuperNet.probs()``); gradients flow back to it.
        """
        if len(probs) != len(self._lat_cal):
            raise ValueError(f"expected {len(self._lat_cal)} probability vectors, got {len(probs)}")
        ref = probs[0]
        dt = ref.dtype

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

    def argmax_latency(self, probs: Sequence[torch.Tensor]) -> float:
        idx = [int(p.argmax()) for p in probs]
        return self.predict(self.space.from_indices(idx))

    # -- calibration -------------------------------------------------------------------------------
    def fit(self, archs: Sequence[Arch], measured_ms: Sequence[float], ridge: float = 0.03) -> dict[str, Any]:
        """Fit and adopt the calibration on whole-network measurements; returns the calibration dict."""
        cal = fit_calibration(self, archs, measured_ms, ridge)
        self.calibration = cal
        self.__init__(self.table, self.space, cal)  # rebuild the per-layer tensors
        return cal


def fit_calibration(model: LatencyModel, archs: Sequence[Arch], measured_ms: Sequence[float],
                    ridge: float = 0.03) -> dict[str, Any]:
    """Bounded least squares on relative error: ``c0 + sum_g s_g * L_g(arch) ~ measured``."""
    from scipy.optimize import lsq_linear

    if len(archs) != len(measured_ms) or len(archs) < 3:
        raise ValueError(f"calibration needs >= 3 measured architectures, got {len(archs)}")
    y = np.asarray(measured_ms, dtype=np.float64)
    raw = LatencyModel(model.table, model.space, calibration={})
    feats = [raw.features(a) for a in archs]
    groups = sorted({g for f in feats for g, v in f.items() if v > 0})
    x = np.array([[1.0] + [f.get(g, 0.0) for g in groups] for f in feats])
    a = x / y[:, None]  # relative residuals
    b = np.ones_like(y)
    k = x.shape[1]
    lam = math.sqrt(ridge)
    reg = np.eye(k) * lam
    reg[0, 0] = lam / float(np.mean(y))  # intercept pulled towards 0, on the scale of the latencies
    reg_b = np.full(k, lam)
    reg_b[0] = 0.0
    lower = np.array([-np.inf] + [0.0] * (k - 1))
    sol = lsq_linear(np.concatenate([a, reg]), np.concatenate([b, reg_b]), bounds=(lower, np.full(k, np.inf)))
    pred = x @ sol.x
    return {
        "form": "c0 + sum_g s_g * LUT_g, g = op family @ stage",
        "space_id": model.space.space_id,
        "coef": dict(zip(groups, (float(v) for v in sol.x[1:]))),
        "intercept_ms": float(sol.x[0]),
        "ridge": ridge,
        "n_archs": len(y),
        "fit_mape_pct": float(np.mean(np.abs(pred - y) / y) * 100),
        "archs": [a_.to_string() for a_ in archs],
        "measured_ms": [float(v) for v in y],
    }


def rank_metrics(pred: Sequence[float], meas: Sequence[float]) -> dict[str, float]:
    """Spearman, Kendall, MAPE (%) and share of predictions within +-10% of the measurement."""
    from scipy.stats import kendalltau, spearmanr

    p, m = np.asarray(pred, dtype=np.float64), np.asarray(meas, dtype=np.float64)
    rel = np.abs(p - m) / m
    return {
        "spearman": float(spearmanr(p, m).statistic) if len(p) > 2 else float("nan"),
        "kendall": float(kendalltau(p, m).statistic) if len(p) > 2 else float("nan"),
        "mape_pct": float(rel.mean() * 100),
        "within_10pct": float((rel <= 0.10).mean()),
        "n": int(len(p)),
    }


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
    then measure ``n_valid`` other architectures and record the validation in ``table``.

    Both sets are measured together in interleaved rounds so that they see the same machine
    conditions; the validation architectures take no part in the fit.
    """
    model = LatencyModel(table, space, calibration={})
    validation = None
    if n_calib < 3:
        return model, None
    calib = space.sample_unique(n_calib, seed=seed * 1000 + 17)
    valid = space.sample_unique(n_valid, seed=seed * 1000 + 91, exclude=calib) if n_valid >= 3 else []
    meas = measure_archs(space, calib + valid, settings, table,
                         (lambda d, t: progress("measure networks", d, t)) if progress else None)
    table.calibration = fit_calibration(model, calib, meas[: len(calib)])
    model = LatencyModel(table, space)
    if valid:
        validation = validation_report(model, valid, meas[len(calib):])
        table.validation = validation
    return model, validation


def validation_report(model: LatencyModel, archs: Sequence[Arch], measured_ms: Sequence[float]) -> dict[str, Any]:
    """Rank and error metrics of the table sum and the learned model against measurements."""
    raw = [model.predict_raw(a) for a in archs]
    cal = [model.predict(a) for a in archs]
    macs = [model.counts(a)["macs"] for a in archs]
    mv = rank_metrics(macs, measured_ms)
    return {
        "n": len(archs),
        "space_id": model.space.space_id,
        "table_sum": rank_metrics(raw, measured_ms),
        "learned": rank_metrics(cal, measured_ms),
        "macs_vs_latency": {"spearman": mv["spearman"], "kendall": mv["kendall"], "n": mv["n"]},
        "archs": [a.to_string() for a in archs],
        "measured_ms": [float(v) for v in measured_ms],
        "predicted_raw_ms": raw,
        "predicted_ms": cal,
        "macs": macs,
    }


def validate_model(model: LatencyModel, space: SearchSpace, settings: MeasureSettings, n: int, seed: int,
                   exclude: Iterable[Arch] = (), progress: Callable[[int, int], None] | None = None
                   ) -> dict[str, Any]:
    """Measure ``n`` held-out random architectures; rank and error metrics for raw and learned models."""
    archs = space.sample_unique(n, seed=seed, exclude=exclude)
    t0 = time.perf_counter()
    meas = measure_archs(space, archs, settings, model.table, progress)
    out = validation_report(model, archs, meas)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out
