"""Loss forms on hand-computed numbers, zero weights, gradients, the score."""

from __future__ import annotations

import math

import pytest
import torch

from hwnas_darts.config import ObjectiveConfig
from hwnas_darts.objective import HardwareObjective, Targets, resolve_targets, score


class FakeModel:
    """Expected metrics as simple functions of one probability vector (latency = 10*p0 + 2)."""

    from hwnas_darts.hardware.roofline import Roofline

    roofline = Roofline(1e9, 1e8)

    def expected(self, probs):
        p = probs[0]
        lat = 10.0 * p[0] + 2.0
        macs = 1000.0 * p[1] + 500.0
        return {"latency_ms": lat, "macs": macs, "bytes": macs * 0 + 400.0, "intensity": 2 * macs / 400.0,
                "efficiency": 0.1 + 0.3 * p[1]}


def _run(cfg, p0=0.5, ce=1.0, targets=Targets(latency=4.0, intensity=2.0, efficiency=0.5)):
    alpha = torch.tensor([math.log(p0 / (1 - p0)), 0.0], requires_grad=True)
    probs = [torch.softmax(alpha, 0)]
    obj = HardwareObjective(cfg, FakeModel(), targets)
    loss, d = obj(torch.tensor(ce), probs)
    return loss, d, alpha, probs


def test_score_form_is_negative_log_score():
    cfg = ObjectiveConfig(form="score", latency_weight=-0.5, intensity_weight=0.2, efficiency_weight=0.1)
    loss, d, _, probs = _run(cfg, p0=0.5)
    lat = 10 * 0.5 + 2  # 7 ms against a 4 ms target
    inten = 2 * (1000 * 0.5 + 500) / 400  # 5 against 2
    expected = 1.0 + 0.5 * math.log(lat / 4) - 0.2 * math.log(inten / 2) - 0.1 * math.log(0.25 / 0.5)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    assert float(d["expected_latency_ms"]) == pytest.approx(7.0)


def test_fbnet_form():
    cfg = ObjectiveConfig(form="fbnet", fbnet_alpha=0.2, fbnet_beta=0.6)
    loss, *_ = _run(cfg, ce=2.0)
    assert float(loss.detach()) == pytest.approx(2.0 * 0.2 * math.log1p(7 / 4) ** 0.6, rel=1e-5)


def test_hinge_form_only_above_target():
    cfg = ObjectiveConfig(form="hinge", hinge_weight=3.0, argmax_latency=False)
    loss, *_ = _run(cfg)
    assert float(loss.detach()) == pytest.approx(1.0 + 3.0 * (7 / 4 - 1), rel=1e-5)
    loss, *_ = _run(cfg, targets=Targets(latency=10.0, intensity=2.0, efficiency=0.5))
    assert float(loss.detach()) == pytest.approx(1.0)


def test_mnasnet_two_sided():
    cfg = ObjectiveConfig(form="mnasnet", latency_weight_below=-0.07, latency_weight_above=-1.0, argmax_latency=False)
    loss, *_ = _run(cfg)  # above target: exponent -1.0
    assert float(loss.detach()) == pytest.approx(1.0 + 1.0 * math.log(7 / 4), rel=1e-5)
    loss, *_ = _run(cfg, targets=Targets(latency=10.0, intensity=2.0, efficiency=0.5))
    assert float(loss.detach()) == pytest.approx(1.0 + 0.07 * math.log(7 / 10), rel=1e-5)


def test_mnasnet_positive_weight_below_pulls_up_to_the_target():
    """TuNAS's absolute-value reward in this form: a positive exponent below the target costs
    being faster, so below the target the gradient raises the expected latency (p0 up), above it
    lowers it, and the cost is zero exactly at the target."""
    cfg = ObjectiveConfig(form="mnasnet", latency_weight_below=0.3, latency_weight_above=-1.0, argmax_latency=False)
    below = Targets(latency=10.0, intensity=2.0, efficiency=0.5)  # 7 ms expected against 10
    loss, d, alpha, _ = _run(cfg, targets=below)
    assert float(d["latency_term"]) == pytest.approx(-0.3 * math.log(7 / 10), rel=1e-5) and float(d["latency_term"]) > 0
    loss.backward()
    assert alpha.grad[0] < 0  # descending raises alpha_0, the slower op's logit
    loss, d, alpha, _ = _run(cfg)  # 7 ms against 4: the penalty above the target pushes down
    loss.backward()
    assert alpha.grad[0] > 0
    _, d, _, _ = _run(cfg, targets=Targets(latency=7.0, intensity=2.0, efficiency=0.5))
    assert float(d["latency_term"]) == pytest.approx(0.0, abs=1e-6)
    assert score(cfg, below, 0.9, 7.0, 1.0, 1.0) < score(cfg, below, 0.9, 10.0, 1.0, 1.0)  # derive ranks the same way


@pytest.mark.parametrize("form", ["score", "hinge", "mnasnet", "fbnet"])
def test_zero_weights_reduce_to_ce(form):
    cfg = ObjectiveConfig(form=form, latency_weight=0.0, hinge_weight=0.0, latency_weight_below=0.0,
                          latency_weight_above=0.0, fbnet_alpha=0.0, intensity_weight=0.0, efficiency_weight=0.0)
    loss, *_ = _run(cfg, ce=1.234)
    assert float(loss.detach()) == pytest.approx(1.234)
    assert not HardwareObjective(cfg, FakeModel(), Targets(1, 1, 1)).active


def test_efficiency_term_needs_a_roofline():
    from hwnas_darts.errors import ConfigError

    class NoRoof(FakeModel):
        roofline = None

    with pytest.raises(ConfigError, match="roofline"):
        HardwareObjective(ObjectiveConfig(efficiency_weight=0.1), NoRoof(), Targets(1, 1, 1))


@pytest.mark.parametrize("cfg", [
    ObjectiveConfig(form="score", latency_weight=-0.5),
    ObjectiveConfig(form="score", latency_weight=0.0, intensity_weight=0.5),
    ObjectiveConfig(form="score", latency_weight=0.0, efficiency_weight=0.5, ),
    ObjectiveConfig(form="fbnet"),
    ObjectiveConfig(form="hinge", argmax_latency=False),
    ObjectiveConfig(form="mnasnet", argmax_latency=False),
])
def test_gradients_reach_alphas_through_each_term(cfg):
    loss, _, alpha, _ = _run(cfg)
    loss.backward()
    assert alpha.grad is not None and alpha.grad.abs().sum() > 0


def _leaning_to_the_slowest(model, space, p_slow=0.6):
    """Per layer, ``p_slow`` on the costliest candidate and the rest on the cheapest: the argmax is
    the slowest network while the expectation sits well below it."""
    logits, slow, fast = [], [], []
    for li, layer in enumerate(space.layers):
        costs = [model.cost(li, op) for op in layer.candidates]
        hi, lo = max(range(len(costs)), key=costs.__getitem__), min(range(len(costs)), key=costs.__getitem__)
        p = torch.full((len(costs),), 1e-4, dtype=torch.float64)
        p[hi], p[lo] = p_slow, 1 - p_slow
        logits.append(torch.log(p / p.sum()).requires_grad_(True))
        slow.append(hi)
        fast.append(lo)
    return logits, space.from_indices(slow)


@pytest.mark.parametrize("form", ["mnasnet", "hinge"])
def test_the_argmax_network_is_held_to_the_target(tiny_table, tiny_space, form):
    """A distribution whose expectation meets the target while its most probable network (the one the
    run returns) misses it: with ``argmax_latency`` the term sees the argmax's predicted latency and
    keeps the expectation's gradient; without it the term is silent (below the target the term is
    silent here: ``latency_weight_below`` 0, the default before BENCHMARKS.md 11.14)."""
    from hwnas_darts.hardware.model import LatencyModel

    model = LatencyModel(tiny_table, tiny_space)
    logits, slow = _leaning_to_the_slowest(model, tiny_space)
    probs = [torch.softmax(lg, 0) for lg in logits]
    exp_lat = float(model.expected(probs)["latency_ms"])
    arg_lat = model.predict(slow)
    assert arg_lat > 1.1 * exp_lat
    target = Targets(latency=(exp_lat + arg_lat) / 2, intensity=1.0, efficiency=1.0)
    ce = torch.tensor(0.7, dtype=torch.float64)
    off = HardwareObjective(ObjectiveConfig(form=form, argmax_latency=False, latency_weight_below=0.0), model, target)
    loss, _ = off(ce, probs)
    assert float(loss) == pytest.approx(0.7)  # the expectation is under the target: no push
    on = HardwareObjective(ObjectiveConfig(form=form, argmax_latency=True, latency_weight_below=0.0), model, target)
    loss, d = on(ce, probs)
    ratio = arg_lat / target.latency
    term = math.log(ratio) if form == "mnasnet" else 2.0 * (ratio - 1)
    assert float(loss) == pytest.approx(0.7 + term, rel=1e-6)
    assert float(d["argmax_latency_ms"]) == pytest.approx(arg_lat)
    assert on.argmax_cost(probs) == pytest.approx(arg_lat)
    grads = torch.autograd.grad(loss, logits)
    # the gradient is the expectation's, scaled as the term's derivative at the argmax's value
    scale = 1.0 / arg_lat if form == "mnasnet" else 2.0 / target.latency
    want = torch.autograd.grad(scale * model.expected([torch.softmax(lg, 0) for lg in logits])["latency_ms"], logits)
    for g, w in zip(grads, want):
        assert torch.allclose(g, w, rtol=1e-6, atol=1e-12)
    # a target the argmax meets: the same as the expectation alone (silent below the target)
    loose = Targets(latency=1.5 * arg_lat, intensity=1.0, efficiency=1.0)
    assert float(HardwareObjective(ObjectiveConfig(form=form, latency_weight_below=0.0), model, loose)(ce, probs)[0]) == pytest.approx(0.7)


def test_macs_cost_uses_expected_macs():
    cfg = ObjectiveConfig(form="score", latency_weight=-1.0, cost="macs")
    loss, *_ = _run(cfg, targets=Targets(latency=500.0, intensity=2.0, efficiency=0.5, cost="macs"))
    assert float(loss.detach()) == pytest.approx(1.0 + math.log(1000 / 500), rel=1e-5)


def test_score_formula():
    cfg = ObjectiveConfig(form="score", latency_weight=-0.5, intensity_weight=0.2, efficiency_weight=0.1)
    t = Targets(latency=4.0, intensity=2.0, efficiency=0.5)
    s = score(cfg, t, 0.9, 8.0, 4.0, 1.0)
    assert s == pytest.approx(0.9 * 2 ** -0.5 * 2 ** 0.2 * 2 ** 0.1)
    two = ObjectiveConfig(form="mnasnet", latency_weight_below=0.0, latency_weight_above=-1.0)
    assert score(two, t, 0.9, 2.0, 1, 1) == pytest.approx(0.9)  # below target: no penalty
    assert score(two, t, 0.9, 8.0, 1, 1) == pytest.approx(0.45)  # above: (8/4)^-1
    with pytest.raises(ValueError):
        score(cfg, t, -0.1, 1, 1, 1)
    with pytest.raises(ValueError, match="must be positive"):  # (-1/4)^-0.5 would be complex
        score(cfg, t, 0.9, -1.0, 1, 1)


def test_a_learned_model_never_predicts_a_latency_at_or_below_zero(tiny_table, tiny_space, caplog):
    """A calibration fitted on noisy measurements may carry a large negative intercept; its prediction
    is floored at a share of the table sum, with a warning, so the score stays real (it raised
    TypeError on a complex number on a busy machine)."""
    import logging

    from hwnas_darts.hardware.model import MIN_FRACTION_OF_TABLE_SUM, LatencyModel

    arch = tiny_space.sample(seed=3)
    # the plain table sum stands for a sane model (the session's quick calibration on 6 networks can
    # itself extrapolate to the floor when the machine is busy)
    good = LatencyModel(tiny_table, tiny_space, calibration={})
    assert good.predict(arch) == pytest.approx(good.predict_raw(arch))  # untouched by the floor
    cal = dict(tiny_table.calibration, intercept_ms=-10 * good.predict_raw(arch))
    bad = LatencyModel(tiny_table, tiny_space, calibration=cal)
    with caplog.at_level(logging.WARNING, logger="hwnas_darts.hardware.model"):
        lat = bad.predict(arch)
        bad.predict(tiny_space.sample(seed=4))
    assert lat == pytest.approx(MIN_FRACTION_OF_TABLE_SUM * bad.predict_raw(arch))
    assert sum("extrapolates badly" in r.getMessage() for r in caplog.records) == 1  # once per model
    cfg = ObjectiveConfig(form="score", latency_weight=-0.3)
    assert isinstance(score(cfg, Targets(latency=good.predict(arch), intensity=1, efficiency=1), 0.8, lat, 1, 1), float)


def test_auto_targets(tiny_table, tiny_space):
    from hwnas_darts.hardware.model import LatencyModel

    model = LatencyModel(tiny_table, tiny_space)
    t = resolve_targets(ObjectiveConfig(target_quantile=0.5), model, tiny_space, n_random=200)
    lats = sorted(model.predict(tiny_space.sample(seed=i)) for i in range(200))
    assert t.latency == pytest.approx((lats[99] + lats[100]) / 2, rel=1e-6)
    assert t.fastest <= min(lats) + 1e-9
    low = resolve_targets(ObjectiveConfig(target_quantile=0.1), model, tiny_space, n_random=200)
    assert low.latency <= t.latency
    assert t.efficiency == 1.0


def test_unreachable_latency_target_warns_with_the_fastest(tiny_table, tiny_space, caplog):
    import logging

    from hwnas_darts.hardware.model import LatencyModel

    model = LatencyModel(tiny_table, tiny_space)
    with caplog.at_level(logging.WARNING, logger="hwnas_darts.objective"):
        t = resolve_targets(ObjectiveConfig(latency_target=1e-6), model, tiny_space, n_random=50)
    assert t.latency == 1e-6
    assert any("below the fastest architecture" in r.getMessage() for r in caplog.records)
