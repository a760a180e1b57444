from __future__ import annotations

import numpy as np
import pytest
import torch

from hwnas_darts.config import DeriveConfig, ObjectiveConfig
from hwnas_darts.derive import (Candidate, constrained_argmax, limit_skips, propose_candidates, score_candidates,
                                select_best, skip_share)
from hwnas_darts.hardware.model import LatencyModel
from hwnas_darts.objective import Targets
from hwnas_darts.space import Arch
from hwnas_darts.supernet import SuperNet


def _peaked(space, arch, strength=3.0):
    net = SuperNet(space)
    with torch.no_grad():
        for m, op in zip(net.mixed, arch.ops):
            m.alpha[m.candidates.index(op)] = strength
    return net


def test_candidates_deduplicated(tiny_space):
    arch = tiny_space.sample(0)
    net = _peaked(tiny_space, arch, strength=20.0)  # every sample equals the argmax
    cands = propose_candidates(net, DeriveConfig(candidates="samples", num_samples=6, constrained=False), seed=0)
    assert len(cands) == 1
    assert cands[0].arch == arch and set(cands[0].sources) == {"argmax", "sample"}
    cands = propose_candidates(SuperNet(tiny_space), DeriveConfig(candidates="samples", num_samples=12, constrained=False), seed=0)
    assert len({c.arch.ops for c in cands}) == len(cands)


def test_chosen_is_highest_score(tiny_space):
    t = Targets(latency=1.0, intensity=1.0, efficiency=1.0)
    cfg = ObjectiveConfig(form="score", latency_weight=-1.0)
    cands = [Candidate(tiny_space.sample(i), ["sample"], -1.0, val_accuracy=acc, latency_ms=lat, intensity=1, efficiency=1)
             for i, (acc, lat) in enumerate([(0.9, 2.0), (0.8, 1.0), (0.85, 4.0)])]
    score_candidates(cands, cfg, t)
    assert [round(c.score, 3) for c in cands] == [0.45, 0.8, 0.212]
    best = select_best(cands)
    assert best is cands[1] and best.chosen and not cands[0].chosen
    # equal scores: the faster candidate wins
    tie = [Candidate(tiny_space.sample(i), ["sample"], -1.0, latency_ms=lat, score=0.5) for i, lat in enumerate([3.0, 2.0])]
    assert select_best(tie) is tie[1]


def test_close_calls_are_not_decided_by_timing_noise(tiny_space):
    """Target 13.28 ms, mnasnet form (penalty above the target only). A and B are within the
    timing noise of each other and of the target: whichever side of the target the noisy
    measurement puts B, the choice must stay the same (decided on the predicted latency)."""
    t = Targets(latency=13.28, intensity=1.0, efficiency=1.0)
    cfg = ObjectiveConfig(form="mnasnet", latency_weight_below=0.0, latency_weight_above=-1.0)
    chosen = []
    for b_measured in (12.77, 13.68):  # the same network measured in two runs
        cands = [Candidate(tiny_space.sample(0), ["argmax"], -1.0, val_accuracy=0.7600, latency_ms=12.9,
                           latency_ms_predicted=12.5, intensity=1, efficiency=1),
                 Candidate(tiny_space.sample(1), ["sample"], -2.0, val_accuracy=0.7608, latency_ms=b_measured,
                           latency_ms_predicted=13.1, intensity=1, efficiency=1),
                 Candidate(tiny_space.sample(2), ["sample"], -3.0, val_accuracy=0.70, latency_ms=10.0,
                           latency_ms_predicted=10.0, intensity=1, efficiency=1)]
        score_candidates(cands, cfg, t)
        best = select_best(cands, noise=0.04, cfg=cfg, targets=t)
        chosen.append(best.arch)
        assert best is cands[1]
        if b_measured > t.latency:  # the noisy measurement put B over the target: a tie, decided on prediction
            assert best.extra["tie"] and "tie within the latency noise" in best.extra["chosen_by"]
        assert not cands[2].extra.get("tie")  # clearly worse: not part of the tie
    assert chosen[0] == chosen[1]
    # without the noise model the two runs disagree - the failure this guards against
    plain = []
    for b_measured in (12.77, 13.68):
        cands = [Candidate(tiny_space.sample(0), ["argmax"], -1.0, val_accuracy=0.7600, latency_ms=12.9, intensity=1,
                           efficiency=1),
                 Candidate(tiny_space.sample(1), ["sample"], -2.0, val_accuracy=0.7608, latency_ms=b_measured, intensity=1,
                           efficiency=1)]
        score_candidates(cands, cfg, t)
        plain.append(select_best(cands).arch)
    assert plain[0] != plain[1]


def test_a_candidate_over_the_target_does_not_beat_one_under_it(tiny_space):
    """BENCHMARKS.md 11.14, seed 24 at the 10th-percentile target (2.524 ms): with
    latency_weight_below 0.3 the near-tie variant predicted at 2.562 ms out-scored the argmax
    predicted at 2.304 ms (both measured 2.63 ms on a busy machine), and the run returned a network
    over its own target. The target is a constraint: only candidates that meet it compete."""
    from hwnas_darts.derive import admissible

    t = Targets(latency=2.524, intensity=1.0, efficiency=1.0)
    cfg = ObjectiveConfig(form="mnasnet", latency_weight_below=0.3, latency_weight_above=-1.0)

    def cands():
        return [Candidate(tiny_space.sample(0), ["argmax"], -0.69, val_accuracy=0.8575, latency_ms=2.633,
                          latency_ms_predicted=2.304, intensity=1, efficiency=1),
                Candidate(tiny_space.sample(1), ["near-tie"], -0.75, val_accuracy=0.8531, latency_ms=2.630,
                          latency_ms_predicted=2.562, intensity=1, efficiency=1)]

    for noise in (0.0, 0.1):
        cs = cands()
        score_candidates(cs, cfg, t)
        best = select_best(cs, noise=noise, cfg=cfg, targets=t)
        assert best is cs[0] and best.chosen and not cs[1].chosen
        assert cs[0].extra["meets_target"] and not cs[1].extra["meets_target"]
    # without a target both compete, and the score's choice is the variant
    # (scored at the predicted latencies: the variant is closer to the target)
    cs = cands()
    cs[0].latency_ms_predicted = cs[1].latency_ms_predicted = None
    cs[0].latency_ms, cs[1].latency_ms = 2.304, 2.562
    score_candidates(cs, cfg, t)
    assert select_best(cs) is cs[1]
    # when no candidate meets the target, every candidate competes (the least bad wins)
    cs = cands()
    for c in cs:
        c.latency_ms_predicted += 1.0
    score_candidates(cs, cfg, t)
    assert len(admissible(cs, t)) == 2 and select_best(cs, cfg=cfg, targets=t) in cs
    # in the score form the latency is a reference, not a target: nothing is excluded
    cs = cands()
    ref = ObjectiveConfig(form="score", latency_weight=-0.07)
    score_candidates(cs, ref, t)
    assert select_best(cs, cfg=ref, targets=t) is max(cs, key=lambda c: c.score)
    assert "meets_target" not in cs[0].extra
    # a MACs target is judged on MACs
    m = Targets(latency=1e6, intensity=1.0, efficiency=1.0, cost="macs")
    cs = cands()
    cs[0].macs, cs[1].macs = 2e6, 5e5
    assert admissible(cs, m) == [cs[1]]


def test_constrained_argmax_meets_target(tiny_table, tiny_space):
    model = LatencyModel(tiny_table, tiny_space)
    slowest = max((tiny_space.sample(s) for s in range(60)), key=model.predict)
    net = _peaked(tiny_space, slowest)
    fastest = min(model.predict(tiny_space.sample(s)) for s in range(200))
    target = (model.predict(slowest) + fastest) / 2
    arch = constrained_argmax(net, model, target)
    assert arch is not None and model.predict(arch) <= target
    assert constrained_argmax(net, model, model.predict(slowest) + 1.0) is None  # argmax already fits


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_constrained_argmax_is_the_most_probable_network_under_the_target(tiny_table, tiny_space, seed):
    """Against brute force over the whole tiny space: no network that meets the target is more probable
    than the one returned (a greedy swap can give up far more probability and latency than needed)."""
    import itertools
    import math

    model = LatencyModel(tiny_table, tiny_space)
    net = SuperNet(tiny_space)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.mixed:
            m.alpha.copy_(3.0 * torch.randn(m.alpha.shape, generator=g))
    probs = [p.detach().double() for p in net.probs()]
    every = [list(ix) for ix in itertools.product(*(range(len(l.candidates)) for l in tiny_space.layers))]
    lp = {tuple(ix): sum(math.log(float(probs[li][ci])) for li, ci in enumerate(ix)) for ix in every}
    lat = {tuple(ix): model.predict(tiny_space.from_indices(ix)) for ix in every}
    argmax = tuple(int(p.argmax()) for p in probs)
    for q in (0.2, 0.5, 0.8):
        target = sorted(lat.values())[int(q * (len(lat) - 1))]
        arch = constrained_argmax(net, model, target)
        if lat[argmax] <= target:
            assert arch is None
            continue
        got = tuple(l.candidates.index(op) for l, op in zip(tiny_space.layers, arch.ops))
        assert lat[got] <= target
        assert lp[got] == pytest.approx(max(v for ix, v in lp.items() if lat[ix] <= target))
    fastest = min(lat.values())
    arch = constrained_argmax(net, model, fastest / 2)          # unreachable: the cheapest network
    assert model.predict(arch) == pytest.approx(fastest)


def test_limit_skips(tiny_space):
    arch = Arch(("s2dconv_n2_relu", "skip", "skip"), space_id=tiny_space.space_id)
    net = _peaked(tiny_space, arch)
    limited = limit_skips(net, arch, 1)
    assert sum(op == "skip" for op in limited.ops) == 1
    assert limit_skips(net, arch, 2) == arch
    assert sum(op == "skip" for op in limit_skips(net, arch, 0).ops) == 0


def test_skip_collapse_detection(tiny_space):
    arch = Arch(("s2dconv_n2_relu", "skip", "skip"), space_id=tiny_space.space_id)
    assert skip_share(_peaked(tiny_space, arch))["collapsed"]
    assert not skip_share(SuperNet(tiny_space))["collapsed"]  # uniform: skip is not dominant
    other = Arch(("s2dconv_n2_relu", "conv_k3_relu", "skip"), space_id=tiny_space.space_id)
    assert not skip_share(_peaked(tiny_space, other))["collapsed"]


def test_accuracy_noise_picks_the_fastest_of_the_statistically_tied():
    """Three candidates on 1000 shared images: B is 0.2 points behind A (a handful of images,
    well within the paired noise) and faster; C is far behind and fastest; D is over the target."""
    from hwnas_darts.derive import select_under_accuracy_noise
    from hwnas_darts.space.arch import Arch

    rng = np.random.default_rng(0)
    base = rng.random(1000) < 0.8
    a = base.copy()
    b = base.copy()
    b[np.flatnonzero(base)[:2]] = False  # 2 images fewer
    c = rng.random(1000) < 0.6
    d = base | (rng.random(1000) < 0.5)
    cands = []
    ops = {"a": "conv_k3_relu", "b": "mb_k3_e3_relu", "c": "skip", "d": "fmb_k3_e2_relu"}
    for name, corr, lat in (("a", a, 5.0), ("b", b, 4.0), ("c", c, 2.0), ("d", d, 9.0)):
        cand = Candidate(Arch((ops[name],)), ["sampled"], 0.0, val_accuracy=float(corr.mean()), latency_ms=lat)
        cands.append(cand)
    best = select_under_accuracy_noise(cands, [a, b, c, d], target_ms=6.0)
    assert best.arch.ops == ("mb_k3_e3_relu",)
    assert cands[1].extra["accuracy_gap_se"] < 1.96 < cands[2].extra["accuracy_gap_se"]
    assert "accuracy_gap_se" not in cands[3].extra  # not admissible: slower than the target
    # with no target the far more accurate D is the reference, and nothing else is close to it
    assert select_under_accuracy_noise(cands, [a, b, c, d]).arch.ops == ("fmb_k3_e2_relu",)


def test_a_lone_candidate_is_not_measured_twice(tiny_space, monkeypatch):
    """derive measures candidates only to choose between them: a lone one keeps its prediction (the
    profile stage measures the final network), two or more are measured."""
    from types import SimpleNamespace

    import hwnas_darts.hardware.model as hm
    from hwnas_darts import derive as d
    from hwnas_darts.hardware.timing import Timing

    model = SimpleNamespace(predict=lambda a: 4.0, counts=lambda a: {"macs": 1e6, "bytes": 1e5, "intensity": 10.0})
    ctx = SimpleNamespace(cfg=SimpleNamespace(derive=SimpleNamespace(measure=True, noise_floor=0.02)), model=model,
                          table=SimpleNamespace(roofline=None), space=tiny_space, settings=None)
    calls = []

    def fake(space, archs, settings, table):
        calls.append(len(archs))
        return [Timing.from_samples([5.0, 5.1, 4.9], 1) for _ in archs]

    monkeypatch.setattr(hm, "measure_arch_timings", fake)
    one = [Candidate(tiny_space.sample(0), ["argmax"], -1.0)]
    assert d._measure(ctx, one) == 0.0 and calls == []
    assert one[0].latency_ms == 4.0 and one[0].extra["latency_source"].startswith("predicted (the only candidate")
    two = [Candidate(tiny_space.sample(0), ["argmax"], -1.0), Candidate(tiny_space.sample(1), ["near-tie"], -2.0)]
    assert d._measure(ctx, two) >= 0.02 and calls == [2]
    assert all(c.latency_ms == pytest.approx(5.0) and c.extra["latency_source"] == "measured" for c in two)
    ctx.cfg.derive.measure = False
    assert d._measure(ctx, two) == 0.0 and calls == [2] and two[0].extra["latency_source"] == "predicted"
