"""The hardware-aware search loss and the multi-objective score.

The score of a candidate architecture ``m`` (the patent's multi-objective metric)::

    score(m) = ACC(m) * (LAT(m)/LAT_t)^w * (I(m)/I_t)^theta * (E(m)/E_t)^gamma

The default search loss is its negative logarithm with CE in place of ``-log ACC``, so the
differentiable search optimises the quantity the final selection scores::

    loss = CE - w*log(LAT/LAT_t) - theta*log(I/I_t) - gamma*log(E/E_t)

``LAT``, ``I`` and ``E`` are expectations under the current architecture distribution,
computed from the latency model (see :mod:`hwnas_darts.hardware.model`). Other forms of the
latency term (the intensity and efficiency terms are the same in every form):

* ``fbnet``: ``CE * a * log(1 + LAT/LAT_t)^b`` (FBNet's multiplicative ``a*log(LAT)^b`` with
  latency in units of the target, so the base stays positive on any device);
* ``hinge``: ``CE + lambda * max(0, LAT/LAT_t - 1)``: only latency above the target costs;
* ``mnasnet``: ``CE - w(LAT)*log(LAT/LAT_t)`` with ``w = latency_weight_below`` at or below the
  target and ``latency_weight_above`` above it (MnasNet's two-sided exponent).

In the target-seeking forms (``hinge``, ``mnasnet``) ``LAT`` is, with ``argmax_latency`` (the
default), the larger of the expectation and the predicted latency of the argmax network, with the
expectation's gradient: a nearly decided distribution can average under the target while its most
probable network, the one the run returns, misses it; the term then keeps pushing until the decision
itself meets the target. For these forms the score uses the two-sided exponent
too; for ``score`` and ``fbnet`` it uses ``latency_weight``. A weight of 0 drops its term; with
every weight 0 the search is plain DARTS. With ``cost: macs`` MACs stand in for latency
everywhere (the FLOPs-proxy baseline).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch import nn

from .config import ObjectiveConfig
from .errors import ConfigError

if TYPE_CHECKING:
    from .hardware.model import LatencyModel
    from .space.space import SearchSpace

__all__ = ["Targets", "resolve_targets", "resolve_run_targets", "HardwareObjective", "score", "latency_exponent", "TARGET_FORMS"]

_logger = logging.getLogger(__name__)


TARGET_FORMS = ("hinge", "mnasnet")  # the forms whose latency is a target (a constraint), not a reference


@dataclass(frozen=True)
class Targets:
    """Resolved targets: latency in ms (or MACs with ``cost: macs``), intensity, efficiency."""

    latency: float
    intensity: float
    efficiency: float
    cost: str = "latency"
    fastest: float | None = None
    median: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"latency": self.latency, "intensity": self.intensity, "efficiency": self.efficiency,
                "cost": self.cost, "fastest": self.fastest, "median": self.median}


def _random_costs(model: "LatencyModel", space: "SearchSpace", cost: str, n: int, seed: int) -> np.ndarray:
    archs = [space.sample(seed=seed * 100_003 + i) for i in range(n)]
    if cost == "macs":
        return np.array([model.counts(a)["macs"] for a in archs])
    return np.array([model.predict(a) for a in archs])


def _fastest(model: "LatencyModel", space: "SearchSpace", cost: str) -> float:
    """Cost of the per-layer cheapest architecture (exact for the additive model)."""
    idx = [int(np.argmin([model.cost(li, op, cost) for op in layer.candidates])) for li, layer in enumerate(space.layers)]
    arch = space.from_indices(idx)
    return model.counts(arch)["macs"] if cost == "macs" else model.predict(arch)


def resolve_targets(cfg: ObjectiveConfig, model: "LatencyModel", space: "SearchSpace", seed: int = 0,
                    n_random: int = 1000) -> Targets:
    """Turn ``auto`` targets into numbers and check that a fixed latency target is reachable.

    * latency ``auto``: the ``target_quantile`` of the predicted latencies (or MACs) of
      ``n_random`` random architectures of the space on this device;
    * intensity ``auto``: the device's ridge point R = C_max / b (below it, a network is
      memory-bound);
    * efficiency ``auto``: 1.0, the roofline itself.

    A latency target below the fastest architecture of the space is reported with the fastest
    achievable value (a warning: the search still runs and gets as close as it can).
    """
    costs = _random_costs(model, space, cfg.cost, n_random, seed)
    fastest = _fastest(model, space, cfg.cost)
    median = float(np.median(costs))
    if cfg.latency_target == "auto":
        lat_t = float(np.quantile(costs, cfg.target_quantile))
    else:
        lat_t = float(cfg.latency_target)
        if cfg.cost == "macs":
            raise ConfigError("objective.latency_target must be 'auto' with objective.cost=macs (a target in ms "
                              "cannot be compared with MACs)")
        if lat_t < fastest:
            _logger.warning("objective.latency_target=%.3g ms is below the fastest architecture of this space on this "
                            "device (%.3g ms predicted); the search will get as close as it can", lat_t, fastest)
    roof = model.roofline
    if cfg.intensity_target == "auto":
        i_t = roof.ridge if roof is not None else float(np.median([model.counts(space.sample(seed=i))["intensity"] for i in range(50)]))
    else:
        i_t = float(cfg.intensity_target)
    e_t = 1.0 if cfg.efficiency_target == "auto" else float(cfg.efficiency_target)
    return Targets(lat_t, i_t, e_t, cfg.cost, fastest, median)


def latency_exponent(cfg: ObjectiveConfig, ratio: float) -> float:
    """The exponent ``w`` applied to ``LAT/LAT_t`` in the score for this form."""
    if cfg.form in TARGET_FORMS:
        return cfg.latency_weight_below if ratio <= 1.0 else cfg.latency_weight_above
    return cfg.latency_weight


def score(cfg: ObjectiveConfig, targets: Targets, accuracy: float, latency: float, intensity: float,
          efficiency: float) -> float:
    """``ACC * (LAT/LAT_t)^w * (I/I_t)^theta * (E/E_t)^gamma`` (``latency`` is MACs with cost=macs)."""
    if accuracy < 0:
        raise ValueError(f"accuracy must be >= 0, got {accuracy}")
    if not latency > 0 or not targets.latency > 0:
        raise ValueError(f"latency and its target must be positive, got {latency} and {targets.latency} "
                         f"({'MACs' if targets.cost == 'macs' else 'ms'}); a latency model that predicts this needs refitting")
    ratio = latency / targets.latency
    s = accuracy * ratio ** latency_exponent(cfg, ratio)
    if cfg.intensity_weight:
        s *= (max(intensity, 1e-12) / targets.intensity) ** cfg.intensity_weight
    if cfg.efficiency_weight:
        s *= (max(efficiency, 1e-12) / targets.efficiency) ** cfg.efficiency_weight
    return float(s)


class HardwareObjective(nn.Module):
    """``forward(ce, probs) -> (loss, details)``: the search loss and every term, for logging.

    Args:
        cfg: the ``objective`` section.
        model: the latency model (expectations are taken from it).
        targets: resolved targets.
    """

    def __init__(self, cfg: ObjectiveConfig, model: "LatencyModel", targets: Targets):
        super().__init__()
        self.cfg, self.model, self.targets = cfg, model, targets
        if cfg.efficiency_weight and model.roofline is None:
            raise ConfigError("objective.efficiency_weight needs a device roofline in the latency table "
                              "(hardware.probe=true, or `python -m hwnas_darts.lut probe`)")

    @property
    def latency_on(self) -> bool:
        """Whether this form's latency term has a non-zero weight."""
        c = self.cfg
        return {"score": c.latency_weight != 0, "fbnet": c.fbnet_alpha != 0, "hinge": c.hinge_weight != 0,
                "mnasnet": c.latency_weight_below != 0 or c.latency_weight_above != 0}[c.form]

    @property
    def active(self) -> bool:
        c = self.cfg
        return self.latency_on or c.intensity_weight != 0 or c.efficiency_weight != 0

    def forward(self, ce: torch.Tensor, probs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c, t = self.cfg, self.targets
        exp = self.model.expected(probs)
        lat = exp["macs"] if c.cost == "macs" else exp["latency_ms"]
        lat = lat.to(ce.dtype)
        mode_lat = None
        if c.argmax_latency and c.form in TARGET_FORMS and self.latency_on:
            # the target binds the network the search returns: the argmax's own cost raises the
            # term's value where it exceeds the expectation; the gradient is the expectation's
            mode_lat = self.argmax_cost(probs)
            lat = lat + (lat.detach().clamp_min(mode_lat) - lat.detach())
        ratio = lat / t.latency
        log_ratio = torch.log(ratio.clamp_min(1e-12))
        zero = ce.new_zeros(())
        if c.form == "score":
            lat_term = -c.latency_weight * log_ratio
            loss = ce + lat_term
        elif c.form == "fbnet":
            if c.fbnet_alpha:
                loss = ce * (c.fbnet_alpha * torch.log1p(ratio) ** c.fbnet_beta)
                lat_term = loss - ce  # what the latency factor adds on top of CE, for logging
            else:
                loss, lat_term = ce, zero
        elif c.form == "hinge":
            lat_term = c.hinge_weight * torch.relu(ratio - 1.0)
            loss = ce + lat_term
        elif c.form == "mnasnet":
            w = c.latency_weight_below if float(ratio.detach()) <= 1.0 else c.latency_weight_above
            lat_term = -w * log_ratio
            loss = ce + lat_term
        else:  # validated in config; a bug if reached
            raise ValueError(f"unknown objective form {c.form!r}")
        i_term = e_term = zero
        if c.intensity_weight:
            i_term = -c.intensity_weight * torch.log(exp["intensity"].to(ce.dtype).clamp_min(1e-12) / t.intensity)
            loss = loss + i_term
        if c.efficiency_weight:
            e_term = -c.efficiency_weight * torch.log(exp["efficiency"].to(ce.dtype).clamp_min(1e-12) / t.efficiency)
            loss = loss + e_term
        details = {
            "ce": ce.detach(),
            "loss": loss.detach(),
            "latency_term": lat_term.detach(),
            "intensity_term": i_term.detach(),
            "efficiency_term": e_term.detach(),
            "expected_latency_ms": exp["latency_ms"].detach(),
            "expected_macs": exp["macs"].detach(),
            "expected_intensity": exp["intensity"].detach(),
        }
        if "efficiency" in exp:
            details["expected_efficiency"] = exp["efficiency"].detach()
        if mode_lat is not None:
            details["argmax_" + ("macs" if c.cost == "macs" else "latency_ms")] = torch.tensor(mode_lat)
        return loss, details

    def argmax_cost(self, probs: Sequence[torch.Tensor]) -> float:
        """Predicted cost (ms, or MACs with ``cost: macs``) of the network of each layer's most
        probable candidate - what derive checks against the target."""
        arch = self.model.space.from_indices([int(p.detach().argmax()) for p in probs])
        return float(self.model.counts(arch)["macs"]) if self.cfg.cost == "macs" else self.model.predict(arch)


def log_score_terms(cfg: ObjectiveConfig, targets: Targets, latency: float, intensity: float, efficiency: float) -> dict[str, float]:
    """Each factor of the score for a report: ``(LAT/LAT_t)^w`` etc."""
    ratio = latency / targets.latency
    out = {"latency_factor": ratio ** latency_exponent(cfg, ratio)}
    out["intensity_factor"] = (max(intensity, 1e-12) / targets.intensity) ** cfg.intensity_weight if cfg.intensity_weight else 1.0
    out["efficiency_factor"] = (max(efficiency, 1e-12) / targets.efficiency) ** cfg.efficiency_weight if cfg.efficiency_weight else 1.0
    if not all(math.isfinite(v) for v in out.values()):
        _logger.warning("non-finite score factor: %s", out)
    return out


def resolve_run_targets(ctx: Any, model: "LatencyModel") -> Targets:
    """The run's targets: resolved once (``objective`` section, this device's table) and kept in
    ``state.json``, so a resumed run optimises what it started with."""
    saved = ctx.state.data.get("targets")
    if saved:
        return Targets(**saved)
    targets = resolve_targets(ctx.cfg.objective, model, ctx.space, seed=ctx.cfg.seed)
    ctx.state.data["targets"] = targets.to_dict()
    ctx.state.save()
    return targets
