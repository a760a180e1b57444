"""Discretisation: candidate architectures, their measured hardware metrics, the score, the choice.

Candidates are the argmax architecture, its near-tie variants (``candidates: decision``, the
default: in every layer whose top two probabilities are within ``tie_margin``, the runner-up in
place of the argmax op, alone and combined, most probable first, at most ``num_samples``) or
``num_samples`` architectures sampled from the final distribution (``candidates: samples``),
deduplicated, and, when a latency target is set, the *constrained argmax*: the argmax
architecture with the swaps that cost the least probability per millisecond saved until its
predicted latency meets the target. Each candidate gets

* accuracy on the architecture-validation split with the supernet's shared weights
  (optionally after a short fine-tune of a copy of the supernet on that subnet), and
* latency **measured on the device** end to end (all candidates in interleaved rounds; a lone
  candidate, whose choice no latency changes, keeps its prediction and is measured once, by the
  profile stage), MACs, bytes, intensity I and efficiency E against the device roofline,

and the multi-objective score; the highest score wins, with a target-seeking form (``hinge``,
``mnasnet``) among the candidates that meet the target (on the latency model's prediction; all
of them when none does). ``max_skips`` caps the number of skip
layers of every candidate (the guard against the DARTS collapse onto skip connections).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import torch

from .config import DeriveConfig, ObjectiveConfig
from .context import Derived
from .decision import near_tie_variants
from .evaluate import evaluate_accuracy, finetune_subnet, recalibrate_bn
from .io import atomic_write_json, read_json
from .objective import TARGET_FORMS, Targets, score
from .space.arch import Arch
from .supernet import SuperNet

if TYPE_CHECKING:
    from .hardware.model import LatencyModel
    from .context import RunContext

__all__ = ["Candidate", "Derived", "select_under_accuracy_noise", "derive_stage", "MAX_TIE_NOISE", "propose_candidates", "constrained_argmax", "limit_skips", "evaluate_accuracy", "recalibrate_bn",
           "score_candidates", "select_best", "skip_share", "admissible", "meets_target", "judged_latency"]

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
                       cost: str = "latency", frontier_cap: int = 20000) -> Arch | None:
    """The most probable architecture (the largest sum of per-layer log-probabilities) whose predicted
    cost meets ``target_ms``: the search's decision under the latency target.

    Exact for per-layer costs that add up: a dynamic programme over the layers keeps the Pareto
    frontier of (cost, log-probability) - no partial architecture that costs more and is less
    probable than another survives - and the frontier's members are then checked, most probable
    first, with the model's own prediction of the whole network (which may add a calibration on top
    of the per-layer sum). Returns ``None`` when the argmax already meets the target, and the
    cheapest architecture of the frontier when none does.
    """
    space = supernet.space
    probs = [p.detach().double() for p in supernet.probs()]
    idx = [int(p.argmax()) for p in probs]

    def total(ix: list[int] | tuple[int, ...]) -> float:
        a = space.from_indices(list(ix))
        return model.counts(a)["macs"] if cost == "macs" else model.predict(a)

    if total(idx) <= target_ms:
        return None
    frontier: list[tuple[float, float, tuple[int, ...]]] = [(0.0, 0.0, ())]
    for li, layer in enumerate(space.layers):
        opts = [(model.cost(li, op, cost), math.log(max(float(probs[li][ci]), 1e-30)), ci)
                for ci, op in enumerate(layer.candidates)]
        grown = sorted(((c + oc, lp + olp, ix + (ci,)) for c, lp, ix in frontier for oc, olp, ci in opts),
                       key=lambda t: (t[0], -t[1]))
        frontier, best_lp = [], -math.inf
        for item in grown:  # cheapest first: keep a member only if it is more probable than every cheaper one
            if item[1] > best_lp:
                frontier.append(item)
                best_lp = item[1]
        if len(frontier) > frontier_cap:  # thin evenly (never hit by the shipped spaces' few thousand)
            step = len(frontier) / frontier_cap
            frontier = [frontier[int(i * step)] for i in range(frontier_cap)] + [frontier[-1]]
    for _, _, ix in sorted(frontier, key=lambda t: -t[1]):
        if total(ix) <= target_ms:
            return space.from_indices(list(ix))
    return space.from_indices(list(frontier[0][2]))


def propose_candidates(supernet: SuperNet, cfg: DeriveConfig, seed: int, model: "LatencyModel | None" = None,
                       targets: Targets | None = None) -> list[Candidate]:
    """Argmax, the constrained argmax (if a target applies) and the near-tie variants or sampled
    architectures (``cfg.candidates``), deduplicated."""
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
    if cfg.candidates == "decision":
        for a in near_tie_variants(supernet.space, supernet.probs(), cfg.tie_margin, cfg.num_samples):
            add(a, "near-tie")
        return list(found.values())
    g = torch.Generator().manual_seed(seed if cfg.seed is None else cfg.seed)
    for a in supernet.sample_archs(cfg.num_samples, generator=g):
        add(a, "sample")
    return list(found.values())


def score_candidates(candidates: Sequence[Candidate], cfg: ObjectiveConfig, targets: Targets) -> None:
    """Fill in each candidate's score (needs accuracy, latency or MACs, I and E)."""
    for c in candidates:
        cost = c.macs if targets.cost == "macs" else c.latency_ms
        c.score = score(cfg, targets, c.val_accuracy or 0.0, float(cost), float(c.intensity or 0.0),
                        float(c.efficiency or 0.0))


def select_best(candidates: Sequence[Candidate], noise: float = 0.0, cfg: ObjectiveConfig | None = None,
                targets: Targets | None = None) -> Candidate:
    """The highest-scoring candidate; with a target-seeking objective form (``hinge``,
    ``mnasnet``: ``cfg`` given) only among those that meet the target (:func:`admissible`).
    Close calls are not left to timing noise.

    With ``noise`` (the relative noise of the latency measurement), each candidate's score is
    also computed at its latency times ``1 - noise`` and ``1 + noise``. Every candidate whose best
    case reaches the leader's worst case ties with the leader; among tied candidates the one
    with the best score at its *predicted* latency wins (the model is deterministic, the
    measurement is not), then the more probable one. Without ties (or noise) the highest
    measured score wins; exact ties go to the faster, then to the more probable candidate.
    """
    if not candidates:
        raise ValueError("no candidates to select from")
    everyone = list(candidates)
    if cfg is not None and cfg.form in TARGET_FORMS:
        candidates = admissible(everyone, targets)

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
                c.extra["score_at_predicted"] = at(c, judged_latency(c))
            best = max(tied, key=lambda c: (c.extra["score_at_predicted"], c.log_prob))
            best.extra["chosen_by"] = (f"tie within the latency noise (+-{100 * noise:.1f}%) between {len(tied)} "
                                       "candidates: best score at the predicted latency")
    for c in everyone:
        c.chosen = c is best
    return best


def judged_latency(c: Candidate) -> float:
    """The latency a target judges ``c`` by: the deterministic prediction where there is one (the
    measurement's noise is several per cent on a shared machine), else the measurement."""
    v = c.latency_ms_predicted if c.latency_ms_predicted is not None else c.latency_ms
    return math.inf if v is None else v


def meets_target(c: Candidate, targets: Targets | None) -> bool:
    """Whether ``c`` meets the latency (:func:`judged_latency`) or MACs target; always true without one."""
    if targets is None:
        return True
    if targets.cost == "macs":
        return c.macs is not None and c.macs <= targets.latency
    return judged_latency(c) <= targets.latency


def admissible(candidates: Sequence[Candidate], targets: Targets | None) -> list[Candidate]:
    """The candidates that meet the target, or all of them when none does.

    The target is a constraint: a candidate over it does not compete with one under it, however
    the score trades the two (a positive ``latency_weight_below`` scores a network just over
    the target above one well under it; 4 of 26 searches with 0.3 in BENCHMARKS.md 11.14 returned such a
    network while their argmax met the target). Each candidate's ``extra["meets_target"]``
    records the verdict.
    """
    verdict = [meets_target(c, targets) for c in candidates]
    if targets is not None:
        for c, ok in zip(candidates, verdict):
            c.extra["meets_target"] = ok
    return [c for c, ok in zip(candidates, verdict) if ok] or list(candidates)


def select_under_accuracy_noise(candidates: Sequence[Candidate], correct: Sequence[Sequence[bool]],
                                target_ms: float | None = None, z: float = 1.96) -> Candidate:
    """The fastest candidate whose supernet accuracy is within the noise of the best one.

    ``correct[i]`` is candidate i's per-image correctness on the validation images (the same
    images for every candidate). Admissible candidates are those whose predicted latency (the
    measured one where there is no prediction) is at or below ``target_ms`` (all when none is); among them the most accurate is the reference, and every candidate whose
    accuracy lies within ``z`` paired standard errors of it (:func:`~hwnas_darts.stats.paired_accuracy_se`)
    is as good as far as the validation images can tell: the fastest of those is returned. Each
    candidate's ``extra["accuracy_gap_se"]`` says how many standard errors it is behind.
    """
    from .stats import paired_accuracy_se

    idx = [i for i, c in enumerate(candidates) if target_ms is None or judged_latency(c) <= target_ms]
    idx = idx or list(range(len(candidates)))
    ref = max(idx, key=lambda i: (candidates[i].val_accuracy or 0.0, -(candidates[i].latency_ms or math.inf)))
    close = []
    for i in idx:
        c = candidates[i]
        gap = (candidates[ref].val_accuracy or 0.0) - (c.val_accuracy or 0.0)
        se = paired_accuracy_se(correct[i], correct[ref]) if i != ref else 0.0
        c.extra["accuracy_gap_se"] = 0.0 if gap <= 0 else (math.inf if se == 0 else gap / se)
        if c.extra["accuracy_gap_se"] <= z:
            close.append(c)
    return min(close, key=lambda c: (c.latency_ms if c.latency_ms is not None else math.inf, -c.log_prob))


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


# ------------------------------------------------------------------------------------------------
# The run's ``derive`` stage
# ------------------------------------------------------------------------------------------------
#: largest relative latency noise that derive treats as a tie band (beyond it the machine was busy)
MAX_TIE_NOISE = 0.10


def _hardware_metrics(ctx: "RunContext", c: Candidate, latency_ms: float) -> None:
    counts = ctx.model.counts(c.arch)
    c.latency_ms = float(latency_ms)
    c.latency_ms_predicted = ctx.model.predict(c.arch)
    c.macs, c.bytes, c.intensity = counts["macs"], counts["bytes"], counts["intensity"]
    roof = ctx.table.roofline
    c.efficiency = roof.efficiency(c.macs, c.bytes, c.latency_ms) if roof else 0.0


def _measure(ctx: "RunContext", cands: list[Candidate]) -> float:
    """Latency of every candidate on the device (or predicted); returns the tie band."""
    from .hardware.calibration import measurement_noise
    from .hardware.model import measure_arch_timings

    if not ctx.cfg.derive.measure or len(cands) == 1:
        # one candidate (a decided search): no choice rests on its latency, and the profile stage
        # measures the network the same way (fresh processes, anchored), so it is measured once
        for c in cands:
            _hardware_metrics(ctx, c, ctx.model.predict(c.arch))
            c.extra["latency_source"] = ("predicted" if not ctx.cfg.derive.measure
                                         else "predicted (the only candidate: profile.json has its measurement)")
        return 0.0
    timings = measure_arch_timings(ctx.space, [c.arch for c in cands], ctx.settings, ctx.table)
    noise = max(ctx.cfg.derive.noise_floor, measurement_noise(timings))
    if noise > MAX_TIE_NOISE:
        _logger.warning("the candidates' latency measurement disagrees with itself by about %.0f%%: the machine was "
                        "busy. Close calls within +-%.0f%% go to the predicted latency", 100 * noise, 100 * MAX_TIE_NOISE)
        noise = MAX_TIE_NOISE
    for c, t in zip(cands, timings):
        _hardware_metrics(ctx, c, t.median_ms)
        c.extra.update(latency_source="measured",
                       latency_halves_ms=list(t.half_medians_ms) if t.half_medians_ms else None)
        if t.process_medians_ms:
            c.extra["latency_processes_ms"] = list(t.process_medians_ms)
    return noise


def derive_stage(ctx: "RunContext") -> Derived:
    """Candidates from the searched distribution, evaluated with the supernet's weights, measured
    on the device and scored; the best is ``arch_searched.json``. With ``--arch`` the given
    architecture is measured and passed on."""
    if ctx.fixed_arch:
        return _derive_given(ctx)
    sn = ctx.search.supernet.to(ctx.compute_device())
    history, shares = ctx.search.alpha_history, skip_share(sn)
    if ctx.state.done("derive"):
        return Derived(Arch.load(ctx.path("arch_searched.json")), read_json(ctx.path("candidates.json"))["candidates"],
                       shares, history)
    from .data import HwnasDataModule, make_loader

    t0 = time.perf_counter()
    dc, seed, device = ctx.cfg.derive, ctx.cfg.seed, ctx.compute_device()
    cands = propose_candidates(sn, dc, seed, ctx.model, ctx.targets)
    dm = HwnasDataModule(ctx.cfg.data, seed, mode="search")
    dm.setup()
    loader = dm.archval_dataloader()
    calib = make_loader(dm.weight_dataset(augment=False), 256, True, seed + 11)
    _logger.info("scoring %d candidate architectures", len(cands))
    correct: list[list[bool]] = []
    for c in cands:
        net = sn
        if dc.finetune_steps:
            net = finetune_subnet(sn, c.arch, make_loader(dm.weight_dataset(), dm.cfg.batch_size, True, seed + 7),
                                  dc.finetune_steps, ctx.cfg.search.weight_lr, device=device)
        correct.append([])
        c.val_accuracy = evaluate_accuracy(net, c.arch, loader, dc.eval_batches, device=device,
                                           calib_loader=calib if dc.bn_batches else None, calib_batches=dc.bn_batches,
                                           per_image=correct[-1])
    sn.cpu()
    noise = _measure(ctx, cands)
    score_candidates(cands, ctx.cfg.objective, ctx.targets)
    best = select_best(cands, noise, ctx.cfg.objective, ctx.targets)
    target = ctx.targets.latency if ctx.targets.cost == "latency" else None
    alt = select_under_accuracy_noise(cands, correct, target)
    accuracy_rule = {"choice": alt.arch.to_string(), "differs": alt is not best, "applied": dc.accuracy_noise}
    if dc.accuracy_noise and alt is not best:
        for c in cands:
            c.chosen = c is alt
        alt.extra["chosen_by"] = "the fastest within the supernet accuracy's noise of the best admissible candidate"
        best = alt
    dicts = [c.to_dict() for c in cands]
    atomic_write_json(ctx.path("candidates.json"), {"targets": ctx.targets.to_dict(), "candidates": dicts,
                                                    "skip_share": shares, "latency_noise": noise,
                                                    "accuracy_noise_rule": accuracy_rule})
    best.arch.save(ctx.path("arch_searched.json"))
    if shares.get("collapsed"):
        _logger.warning("architecture collapse: skip connections dominate the distribution (%s); consider "
                        "derive.max_skips", shares)
    ctx.state.mark("derive", time.perf_counter() - t0, chosen=best.arch.to_string(), candidates=len(cands),
                   latency_noise=noise, tie=bool(best.extra.get("tie")), accuracy_noise_rule=accuracy_rule)
    _logger.info("chosen: %s (val acc %.4f, %.3f ms measured, score %.4f)", best.arch, best.val_accuracy,
                 best.latency_ms, best.score)
    return Derived(best.arch, dicts, shares, history)


def _derive_given(ctx: "RunContext") -> Derived:
    """``--arch``: no search; the given architecture is measured and goes on to retraining."""
    from .hardware.model import measure_archs

    if ctx.state.done("derive"):
        return Derived(Arch.load(ctx.path("arch_searched.json")), read_json(ctx.path("candidates.json"))["candidates"])
    t0 = time.perf_counter()
    text = ctx.fixed_arch
    arch = Arch.load(text) if text.endswith(".json") else Arch.from_string(text)
    arch = ctx.space.validate(Arch(arch.ops, arch.scale, None))
    c = Candidate(arch, ["given"], 0.0)
    _hardware_metrics(ctx, c, measure_archs(ctx.space, [arch], ctx.settings, ctx.table)[0])
    c.chosen = True
    chosen = arch.with_scale(type(arch.scale)())
    atomic_write_json(ctx.path("candidates.json"), {"targets": ctx.targets.to_dict(), "candidates": [c.to_dict()]})
    chosen.save(ctx.path("arch_searched.json"))
    ctx.state.mark("derive", time.perf_counter() - t0, chosen=arch.to_string(), given=True)
    return Derived(chosen, [c.to_dict()])
