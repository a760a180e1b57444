"""The retraining's time budget: epochs chosen from a probe, kept across a resume."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hwnas_darts import retrain
from hwnas_darts.config import load_config
from hwnas_darts.ranks import Ranks
from hwnas_darts.runner import RunState
from hwnas_darts.space import Arch


def _ctx(tmp_path, overrides):
    cfg = load_config(None, overrides)
    return SimpleNamespace(cfg=cfg, state=RunState(tmp_path), arch=Arch.from_string("conv_k3_relu-skip"), leader=True, ranks=Ranks())


@pytest.mark.parametrize("epoch_s, budget, max_epochs, expected", [
    (60.0, 5, 30, 4),      # 300 s / (60 s x 1.08) = 4.6 -> 4
    (60.0, 500, 30, 30),   # capped at retrain.epochs
    (600.0, 1, 30, 1),     # not even one epoch fits: one epoch, with a warning
])
def test_epochs_fit_the_budget(tmp_path, monkeypatch, epoch_s, budget, max_epochs, expected):
    calls = []

    def probe(*args, **kw):
        calls.append(1)
        return {"step_s": 0.1, "train_s": epoch_s, "val_s": 0.0, "epoch_s": epoch_s}

    monkeypatch.setattr(retrain, "probe_epoch_seconds", probe)
    ctx = _ctx(tmp_path, [f"retrain.time_budget_minutes={budget}", f"retrain.epochs={max_epochs}"])
    dm = SimpleNamespace(train_dataloader=lambda: [0] * 100)
    module = SimpleNamespace(network=None)
    assert retrain.plan_epochs(ctx, module, dm) == expected
    assert RunState.load(tmp_path).data["retrain_plan"]["epochs"] == expected
    # a resumed run keeps its schedule (no new probe); another arch or budget plans afresh
    assert retrain.plan_epochs(ctx, module, dm) == expected and len(calls) == 1
    ctx.state = RunState.load(tmp_path)
    assert retrain.plan_epochs(ctx, module, dm) == expected and len(calls) == 1
    ctx.cfg = load_config(None, [f"retrain.time_budget_minutes={budget * 2}", f"retrain.epochs={max_epochs}"])
    retrain.plan_epochs(ctx, module, dm)
    assert len(calls) == 2


def test_no_budget_means_the_configured_epochs(tmp_path, monkeypatch):
    monkeypatch.setattr(retrain, "probe_epoch_seconds", lambda *a, **k: pytest.fail("no probe without a budget"))
    ctx = _ctx(tmp_path, ["retrain.epochs=7"])
    assert retrain.plan_epochs(ctx, None, None) == 7
