"""Discretisation: candidate architectures, their measured hardware metrics, the score, the choice.

Candidates are the argmax architecture, ``num_samples`` architectures sampled from the final
distribution (deduplicated), and, when a latency target is set, the *constrained argmax*: the
argmax architecture with the swaps that cost the least probability per millisecond saved until
its predicted latency meets the target. Each candidate gets

* accuracy on the architecture-validation split with the supernet's shared weights
  (optionally after a short fine-tune of a copy of the supernet on that subnet), and
* latency **measured on the device** end to end (all candidates in interleaved rounds), MACs,
  bytes, intensity I and efficiency E against the device roofline,

and the multi-objective score; the highest score wins. ``max_skips`` caps the number of skip
layers of every candidate (the guard against the DARTS collapse onto skip connections).
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import torch
import torch.nn.functional as F

from .config import DeriveConfig, ObjectiveConfig
from .data import cycle_batches
from .objective import Targets, score
from .space.arch import Arch
from .supernet import SuperNet

if TYPE_CHECKING:
    from .hardware.model import LatencyModel

__all__ = ["Candidate", "propose_candidates", "constrained_argmax", "limit_skips", "evaluate_accuracy", "recalibrate_bn",
           "score_candidates", "select_best", "skip_share"]

_logger = logging.getLogger(__name__)


@dataclass
class Candidate:
    """One candidate architecture and everything measured about it."""

    arch: Arch
    sources: list[str]
    log_prob: float
    val_accuracy: float | None = None
    latency_ms: float | None = None
    latency_ms_raw: float | None = None
    latency_ms_predicted: float | None = None
    macs: float | None = None
    bytes: float | None = None
    intensity: float | None = None
    efficiency: float | None = None
    score: float | None = None
    chosen: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch.to_string(), "sources": self.sources, "log_prob": self.log_prob,
            "val_accuracy": self.val_accuracy, "latency_ms": self.latency_ms, "latency_ms_raw": self.latency_ms_raw,
            "latency_ms_predicted": self.latency_ms_predicted, "macs": self.macs, "flops": None if self.macs is None else 2 * self.macs,
            "bytes": self.bytes, "intensity": self.intensity, "efficiency": self.efficiency, "score": self.score,
            "chosen": self.chosen, **self.extra,
        }


def _log_prob(supernet: SuperNet, arch: Arch) -> float:
    idx = supernet.space.index_of(arch)
    with torch.no_grad():
        return float(sum(torch.log(p[i].clamp_min(1e-30)) for p, i in zip(supernet.probs(), idx)))


def limit_skips(supernet: SuperNet, arch: Arch, max_skips: int | None) -> Arch:
    """Replace the least likely skips of ``arch`` by their layer's most likely other op."""
    if max_skips is None:
        return arch
    space = supernet.space
    probs = [p.detach() for p in supernet.probs()]
    ops = list(arch.ops)
    skips = [i for i, op in enumerate(ops) if op == "skip"]
    if len(skips) <= max_skips:
        return arch
    skips.sort(key=lambda i: float(probs[i][space.layers[i].candidates.index("skip")]))
    for i in skips[: len(skips) - max_skips]:
        layer = space.layers[i]
        order = torch.argsort(probs[i], descending=True).tolist()
        ops[i] = next(layer.candidates[j] for j in order if layer.candidates[j] != "skip")
    return Arch(tuple(ops), arch.scale, space.space_id)


def constrained_argmax(supernet: SuperNet, model: "LatencyModel", target_ms: float,
                       cost: str = "latency") -> Arch | None:
    """The argmax architecture, with greedy swaps until the predicted cost meets ``target_ms``.

    Each swap replaces one layer's op by a cheaper candidate, choosing the swap that loses the
    least log-probability per unit of cost saved. Returns ``None`` when the argmax already meets
    the target, and the cheapest reachable architecture when the target cannot be met.
    """
    space = supernet.space
    probs = [p.detach().double() for p in supernet.probs()]
    idx = [int(p.argmax()) for p in probs]

    def layer_cost(li: int, ci: int) -> float:
        return model.cost(li, space.layers[li].candidates[ci], cost)

    def total(ix: list[int]) -> float:
        a = space.from_indices(ix)
        return model.counts(a)["macs"] if cost == "macs" else model.predict(a)

    if total(idx) <= target_ms:
        return None
    for _ in range(10 * len(idx)):
        if total(idx) <= target_ms:
            break
        best = None
        for li, layer in enumerate(space.layers):
            cur_c = layer_cost(li, idx[li])
            cur_lp = math.log(max(float(probs[li][idx[li]]), 1e-30))
            for ci in range(len(layer.candidates)):
                saved = cur_c - layer_cost(li, ci)
                if ci == idx[li] or saved <= 0:
                    continue
                lost = cur_lp - math.log(max(float(probs[li][ci]), 1e-30))
                ratio = lost / saved
                if best is None or ratio < best[0]:
                    best = (ratio, li, ci)
        if best is None:
            break
        idx[best[1]] = best[2]
    return space.from_indices(idx)


def propose_candidates(supernet: SuperNet, cfg: DeriveConfig, seed: int, model: "LatencyModel | None" = None,
                       targets: Targets | None = None) -> list[Candidate]:
    """Argmax, the constrained argmax (if a target applies) and sampled architectures, deduplicated."""
    found: dict[tuple[str, ...], Candidate] = {}

    def add(arch: Arch | None, source: str) -> None:
        if arch is None:
            return
        arch = limit_skips(supernet, arch, cfg.max_skips)
        if arch.ops in found:
            if source not in found[arch.ops].sources:
                found[arch.ops].sources.append(source)
            return
        found[arch.ops] = Candidate(arch, [source], _log_prob(supernet, arch))

    add(supernet.derive(), "argmax")
    if cfg.constrained and model is not None and targets is not None:
        add(constrained_argmax(supernet, model, targets.latency, targets.cost), "constrained")
    g = torch.Generator().manual_seed(seed if cfg.seed is None else cfg.seed)
    for a in supernet.sample_archs(cfg.num_samples, generator=g):
        add(a, "sample")
    return list(found.values())


@torch.no_grad()
def recalibrate_bn(supernet: SuperNet, arch: Arch, loader: Iterable, batches: int = 20,
                   device: torch.device | str = "cpu") -> None:
    """Recompute the BatchNorm statistics along the subnet ``arch``.

    During single-path training each BN layer's running statistics average over inputs coming
    from every sampled predecessor, which is not the distribution the fixed subnet produces;
    evaluating with them underestimates accuracy badly. The standard one-shot fix: reset the
    statistics and re-estimate them (cumulative average) on a few training batches.
    """
    from torch import nn

    bns = [m for m in supernet.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.training) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    supernet.train()
    for i, (x, _) in enumerate(loader):
        if i >= batches:
            break
        supernet(x.to(device), arch=arch)
    for m, (mom, _) in zip(bns, saved):
        m.momentum = mom


@torch.no_grad()
def evaluate_accuracy(supernet: SuperNet, arch: Arch, loader: Iterable, max_batches: int | None = None,
                      device: torch.device | str = "cpu", calib_loader: Iterable | None = None,
                      calib_batches: int = 20) -> float:
    """Top-1 accuracy of the subnet ``arch`` with the supernet's weights (eval mode), after
    re-estimating its BatchNorm statistics on ``calib_loader`` when given."""
    was = supernet.training
    if calib_loader is not None:
        recalibrate_bn(supernet, arch, calib_loader, calib_batches, device)
    supernet.eval()
    correct = total = 0
    try:
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x, y = x.to(device), y.to(device)
            logits = supernet(x, arch=arch)
            correct += int((logits.argmax(1) == y).sum())
            total += len(y)
    finally:
        supernet.train(was)
    return correct / max(total, 1)


def finetune_subnet(supernet: SuperNet, arch: Arch, loader: Iterable, steps: int, lr: float,
                    device: torch.device | str = "cpu") -> SuperNet:
    """A copy of the supernet whose ``arch`` subnet was trained ``steps`` more SGD steps."""
    net = copy.deepcopy(supernet).to(device)
    net.train()
    opt = torch.optim.SGD(net.weight_parameters(), lr=lr, momentum=0.9)
    for x, y in cycle_batches(loader, steps):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x.to(device), arch=arch), y.to(device))
        loss.backward()
        opt.step()
    return net


def score_candidates(candidates: Sequence[Candidate], cfg: ObjectiveConfig, targets: Targets) -> None:
    """Fill in each candidate's score (needs accuracy, latency or MACs, I and E)."""
    for c in candidates:
        cost = c.macs if targets.cost == "macs" else c.latency_ms
        c.score = score(cfg, targets, c.val_accuracy or 0.0, float(cost), float(c.intensity or 0.0),
                        float(c.efficiency or 0.0))


def select_best(candidates: Sequence[Candidate], noise: float = 0.0, cfg: ObjectiveConfig | None = None,
                targets: Targets | None = None) -> Candidate:
    """The highest-scoring candidate; close calls are not left to timing noise.

    With ``noise`` (the relative noise of the latency measurement), each candidate's score is
    also computed at its latency times ``1 - noise`` and ``1 + noise``. Every candidate whose best
    case reaches the leader's worst case ties with the leader; among tied candidates the one
    with the best score at its *predicted* latency wins (the model is deterministic, the
    measurement is not), then the more probable one. Without ties (or noise) the highest
    measured score wins; exact ties go to the faster, then to the more probable candidate.
    """
    if not candidates:
        raise ValueError("no candidates to select from")

    def key(c: Candidate) -> tuple:
        return (c.score if c.score is not None else -math.inf,
                -(c.latency_ms if c.latency_ms is not None else math.inf), c.log_prob)

    best = max(candidates, key=key)
    usable = (noise > 0 and cfg is not None and targets is not None and targets.cost == "latency"
              and all(c.latency_ms and c.score is not None for c in candidates))
    if usable:
        def at(c: Candidate, lat: float) -> float:
            return score(cfg, targets, c.val_accuracy or 0.0, lat, float(c.intensity or 0.0), float(c.efficiency or 0.0))

        lo = {id(c): min(at(c, c.latency_ms * (1 - noise)), at(c, c.latency_ms * (1 + noise))) for c in candidates}
        hi = {id(c): max(at(c, c.latency_ms * (1 - noise)), at(c, c.latency_ms * (1 + noise))) for c in candidates}
        tied = [c for c in candidates if hi[id(c)] >= lo[id(best)]]
        if len(tied) > 1:
            for c in tied:
                c.extra["tie"] = True
                pred = c.latency_ms_predicted if c.latency_ms_predicted is not None else c.latency_ms
                c.extra["score_at_predicted"] = at(c, pred)
            best = max(tied, key=lambda c: (c.extra["score_at_predicted"], c.log_prob))
            best.extra["chosen_by"] = (f"tie within the latency noise (+-{100 * noise:.1f}%) between {len(tied)} "
                                       "candidates: best score at the predicted latency")
    for c in candidates:
        c.chosen = c is best
    return best


def skip_share(supernet: SuperNet) -> dict[str, Any]:
    """How much of the distribution sits on skip connections (the DARTS collapse symptom).

    A layer counts as taken over by skip when skip is its most likely op *and* holds at least
    twice the uniform share; the search has collapsed when that is true of more than half of
    the layers that offer a skip, or when skip holds most of the mass on average.
    """
    layers = [(m.name, m.export_probs(), len(m.candidates)) for m in supernet.mixed if "skip" in m.candidates]
    if not layers:
        return {"layers_with_skip": 0, "mean_skip_prob": 0.0, "argmax_skips": 0, "dominant_skips": 0, "collapsed": False}
    argmax_skips = sum(1 for _, p, _ in layers if max(p, key=p.get) == "skip")
    dominant = sum(1 for _, p, n in layers if max(p, key=p.get) == "skip" and p["skip"] >= 2.0 / n)
    mean_p = sum(p["skip"] for _, p, _ in layers) / len(layers)
    collapsed = dominant > len(layers) / 2 or mean_p > 0.5
    return {"layers_with_skip": len(layers), "mean_skip_prob": mean_p, "argmax_skips": argmax_skips,
            "dominant_skips": dominant, "collapsed": bool(collapsed),
            "per_layer": {name: p["skip"] for name, p, _ in layers}}
