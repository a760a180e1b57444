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
    module = SimpleNamespace(network=None, channels_last=True)
    assert retrain.budget_plan(ctx, module, dm)[0] == expected
    assert RunState.load(tmp_path).data["retrain_plan"]["epochs"] == expected
    # a resumed run keeps its schedule (no new probe); another arch or budget plans afresh
    assert retrain.budget_plan(ctx, module, dm)[0] == expected and len(calls) == 1
    ctx.state = RunState.load(tmp_path)
    assert retrain.budget_plan(ctx, module, dm)[0] == expected and len(calls) == 1
    ctx.cfg = load_config(None, [f"retrain.time_budget_minutes={budget * 2}", f"retrain.epochs={max_epochs}"])
    retrain.budget_plan(ctx, module, dm)[0]
    assert len(calls) == 2


def test_the_run_budget_leaves_the_retraining_what_the_other_stages_did_not_spend(tmp_path, monkeypatch, caplog):
    """retrain.run_budget_minutes: the seconds the finished stages took (state.json) and an estimate of
    the stages after the training come off the run's budget; with a time budget too the smaller binds."""
    calls = []

    def probe(*args, **kw):
        calls.append(1)
        return {"step_s": 0.1, "train_s": 60.0, "val_s": 0.0, "epoch_s": 60.0, "eval_image_s": 0.001}

    monkeypatch.setattr(retrain, "probe_epoch_seconds", probe)
    ctx = _ctx(tmp_path, ["retrain.run_budget_minutes=30", "retrain.epochs=100"])
    ctx.state.mark("lut", 500.0)
    ctx.state.mark("search", 300.0)
    ctx.state.mark("derive", 100.0)
    dm = SimpleNamespace(train_dataloader=lambda: [0] * 100, arrays=SimpleNamespace(test_y=[0] * 10000))
    module = SimpleNamespace(network=None, channels_last=True)
    left = retrain.run_budget_left(ctx, probe(), 10000)
    calls.clear()
    assert left["spent_s"] == 900.0
    after = left["after_s"]  # testing 10,000 images at 1 ms, profile, export, report
    assert 10.0 + retrain.REPORT_S < after < 120.0
    assert left["left_s"] == pytest.approx(1800 - 900 - after)
    expected = int((1800 - 900 - after) / (60.0 * 1.08))
    assert retrain.budget_plan(ctx, module, dm)[0] == expected
    plan = RunState.load(tmp_path).data["retrain_plan"]
    assert plan["binding"] == "retrain.run_budget_minutes" and plan["epochs"] == expected
    # a resumed run keeps its plan even though its stages' seconds would now count the retraining's too
    ctx.state = RunState.load(tmp_path)
    assert retrain.budget_plan(ctx, module, dm)[0] == expected and len(calls) == 1
    # a tighter retraining budget binds instead
    ctx.cfg = load_config(None, ["retrain.run_budget_minutes=30", "retrain.time_budget_minutes=5", "retrain.epochs=100"])
    assert retrain.budget_plan(ctx, module, dm)[0] == 4 and len(calls) == 2
    assert RunState.load(tmp_path).data["retrain_plan"]["binding"] == "retrain.time_budget_minutes"
    # stages that spent the whole budget: one epoch, and a warning that says so
    ctx.cfg = load_config(None, ["retrain.run_budget_minutes=10", "retrain.epochs=100"])
    with caplog.at_level("WARNING", logger="hwnas_darts.fit"):
        assert retrain.budget_plan(ctx, module, dm)[0] == 1
    assert "does not fit" in caplog.text and "run_budget_minutes=10" in caplog.text


def test_no_budget_means_the_configured_epochs(tmp_path, monkeypatch):
    monkeypatch.setattr(retrain, "probe_epoch_seconds", lambda *a, **k: pytest.fail("no probe without a budget"))
    ctx = _ctx(tmp_path, ["retrain.epochs=7"])
    assert retrain.budget_plan(ctx, None, None)[0] == 7


def test_ema_weights_are_the_trained_networks_at_the_end(tmp_path):
    """retrain.ema_decay: the network that training leaves (tested, saved, exported) holds the moving
    average of the weights after every optimizer step, with TensorFlow's decay warm-up, computed here
    independently."""
    import torch

    from hwnas_darts._pl import pl
    from hwnas_darts.config import RetrainConfig
    from hwnas_darts.space import SearchSpace

    from .conftest import TINY

    space = SearchSpace.from_config(load_config(TINY))
    decay = 0.3  # below the warm-up's first decays (0.18, 0.25, 0.31...): both regimes are exercised
    module = retrain.RetrainModule(space, space.sample(seed=0), RetrainConfig(epochs=1, lr=0.05, ema_decay=decay))
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(8, *space.input_shape, generator=g), torch.randint(0, space.num_classes, (8,), generator=g))
            for _ in range(6)]
    raw: list[dict[str, torch.Tensor]] = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            raw.append({k: v.detach().clone() for k, v in pl_module.network.named_parameters()})

    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()],
                         default_root_dir=str(tmp_path))
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=None))
    assert len(raw) == 6 and int(module.ema.n_averaged) == 6
    expected = dict(raw[0])
    for n, step in enumerate(raw[1:], start=1):  # the n-th update after the copy: TF's warm-up, capped at decay
        d = min(decay, (1 + n) / (10 + n))
        expected = {k: d * expected[k] + (1 - d) * v for k, v in step.items()}
    final = dict(module.network.named_parameters())
    for k, v in expected.items():
        assert torch.allclose(final[k], v, atol=1e-6), k
    assert any(not torch.allclose(final[k], raw[-1][k]) for k in expected), "the last raw weights were kept"
    assert not any(p.requires_grad for p in module.ema.parameters())
    counts = [int(b) for n, b in module.network.named_buffers() if n.endswith("num_batches_tracked")]
    assert counts and set(counts) == {6}, "BatchNorm's step count is the network's, not an average of counts"
    assert retrain.ema_decay_at(0.999, 1) == 2 / 11 and retrain.ema_decay_at(0.999, 10**6) == 0.999


def _step_ctx(tmp_path, overrides):
    import torch

    ctx = _ctx(tmp_path, overrides)
    ctx.compute_device = lambda: torch.device("cpu")
    return ctx


def _batches(n=3, b=4):
    import torch

    g = torch.Generator().manual_seed(0)
    return SimpleNamespace(train_dataloader=lambda: [(torch.randn(b, 1, 28, 28, generator=g), torch.randint(0, 10, (b,), generator=g))
                                                     for _ in range(n)])


def test_set_step_settings_are_used_without_a_probe(tmp_path, monkeypatch):
    monkeypatch.setattr(retrain, "time_training_steps", lambda *a, **k: pytest.fail("set values need no probe"))
    ctx = _step_ctx(tmp_path, ["trainer.channels_last=false", "trainer.precision=bf16-mixed"])
    assert retrain.choose_step(ctx, None, None) == {"channels_last": False, "precision": "bf16-mixed", "chosen_by": "config"}
    # the other stages read `auto` as the defaults they had: channels-last, fp32
    t = load_config(None, ["trainer.channels_last=auto", "trainer.precision=auto"]).trainer
    assert t.fixed_channels_last() is True and t.fixed_precision() == "32-true"


@pytest.mark.parametrize("ms, expected", [
    ({(True, "32-true"): 50, (False, "32-true"): 40, (True, "bf16-mixed"): 38, (False, "bf16-mixed"): 37},
     (False, "32-true")),                    # bf16 3-8 % faster: not enough to change the arithmetic
    ({(True, "32-true"): 50, (False, "32-true"): 60, (True, "bf16-mixed"): 30, (False, "bf16-mixed"): 44},
     (True, "bf16-mixed")),                  # bf16 40 % faster: taken
])
def test_auto_takes_the_fastest_measured_step_and_keeps_it(tmp_path, monkeypatch, ms, expected):
    """#31: a machine-dependent training choice is made by measurement, recorded (device, every
    round's timing) and honoured: a resumed run keeps it without probing again."""
    calls = []

    def timed(network, batches, candidates, device, **kw):
        calls.append(candidates)
        return {c: [ms[c] / 1000 * f for f in (1.0, 1.1, 0.95)] for c in candidates}

    monkeypatch.setattr(retrain, "time_training_steps", timed)
    monkeypatch.setattr(retrain, "bf16_supported", lambda device: True)
    ctx = _step_ctx(tmp_path, ["trainer.channels_last=auto", "trainer.precision=auto"])
    choice = retrain.choose_step(ctx, None, _batches())
    assert (choice["channels_last"], choice["precision"]) == expected and choice["chosen_by"] == "measured"
    assert set(calls[0]) == set(ms) and len(choice["ms_per_step"]) == 4 and choice["device"]
    saved = RunState.load(tmp_path).data["retrain_step"]
    assert saved == choice and saved["arch"] == "conv_k3_relu-skip"
    ctx.state = RunState.load(tmp_path)                      # resumed: the recorded choice, no new probe
    assert retrain.choose_step(ctx, None, _batches()) == choice and len(calls) == 1
    ctx.cfg = load_config(None, ["trainer.channels_last=true", "trainer.precision=auto"])   # asked otherwise: measured again
    assert retrain.choose_step(ctx, None, _batches())["asked"] == [True, "auto"] and len(calls) == 2
    assert set(calls[1]) == {(True, "32-true"), (True, "bf16-mixed")}
    # only memory format `auto`, no bf16 on this device: two fp32 candidates
    monkeypatch.setattr(retrain, "bf16_supported", lambda device: False)
    ctx = _step_ctx(tmp_path / "b", ["trainer.channels_last=auto", "trainer.precision=32-true"])
    choice = retrain.choose_step(ctx, None, _batches())
    assert set(calls[-1]) == {(True, "32-true"), (False, "32-true")} and choice["precision"] == "32-true"


def test_training_step_timer_runs_every_candidate_on_a_real_network():
    import torch

    from hwnas_darts.network import build_network
    from hwnas_darts.space import SearchSpace

    from .conftest import TINY

    space = SearchSpace.from_config(load_config(TINY))
    net = build_network(space, space.sample(seed=1))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(4, *space.input_shape)
    y = torch.randint(0, space.num_classes, (4,))
    cands = [(True, "32-true"), (False, "32-true"), (False, "bf16-mixed")]
    times = retrain.time_training_steps(net, [(x, y)], cands, torch.device("cpu"), rounds=3, steps=1)
    assert set(times) == set(cands) and all(len(v) == 3 and min(v) > 0 for v in times.values())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())   # timed on copies


def test_a_network_is_put_in_the_format_asked_whatever_its_format_now():
    """The contiguous candidate of the step choice must run contiguous weights even when the network it
    copies was built channels-last (as the retraining's module is): the first probe timed channels-last
    weights under both labels."""
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
    w = net[0].weight
    retrain.in_format(net, True)
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last) and not net[0].weight.is_contiguous()
    retrain.in_format(net, False)
    assert net[0].weight.is_contiguous()
    assert torch.equal(net[0].weight, w)


@pytest.mark.parametrize("epoch_s, elapsed, expected", [
    (30.0, 30.0, 3),    # as the probe said: 70 s left / (30 x 1.08) = 2.2 -> 1 + 2
    (20.0, 25.0, 4),    # faster than probed: 75 / 21.6 = 3.5 -> 1 + 3
    (45.0, 50.0, 2),    # slower: 50 / 48.6 = 1.03 -> 1 + 1
    (5.0, 5.0, 10),     # much faster: capped at max_epochs
    (200.0, 200.0, 1),  # the first epoch alone spent the budget: stop after it
])
def test_replan_counts_the_epochs_that_still_fit(epoch_s, elapsed, expected):
    plan = {"budget_s": 100.0, "max_epochs": 10}
    assert retrain.replan_epochs(plan, epoch_s, elapsed) == expected


def _replanned_fit(tmp_path, clock_values, planned=3, steps=4):
    """A tiny retraining of `planned` epochs under BudgetReplan, whose clock reads `clock_values` (the
    plan's moment, the first epoch's start and end); every optimizer step's lr and momentum recorded."""
    import torch

    from hwnas_darts._pl import pl
    from hwnas_darts.config import RetrainConfig
    from hwnas_darts.space import SearchSpace

    from .conftest import TINY

    space = SearchSpace.from_config(load_config(TINY))
    rc = RetrainConfig(epochs=10, lr=0.1, warmup_fraction=0.3)
    module = retrain.RetrainModule(space, space.sample(seed=0), rc)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(4, *space.input_shape, generator=g), torch.randint(0, space.num_classes, (4,), generator=g))
            for _ in range(steps)]
    plan = {"budget_s": 100.0, "max_epochs": 10, "epochs": planned, "probe": {"epoch_s": 30.0}}
    ctx = SimpleNamespace(leader=True, ranks=Ranks(), state=RunState(tmp_path))
    ticks = iter(clock_values)
    seen: list[float] = []  # lr, momentum, lr, momentum... before every step

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            group = trainer.optimizers[0].param_groups[0]
            seen.extend((group["lr"], group["momentum"]))

    replan = retrain.BudgetReplan(ctx, plan, clock=lambda: next(ticks))
    trainer = pl.Trainer(max_epochs=planned, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path),
                         callbacks=[Record(), replan, pl.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ck"), save_last=True,
                                                                      save_on_train_epoch_end=True)])
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=None))
    return trainer, module, seen, rc


def _one_cycle_lrs(rc, total):
    import torch

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=rc.lr, momentum=0.9)
    sched = retrain.one_cycle(opt, rc, total)
    out = []
    for _ in range(total):
        out.extend((opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]))
        opt.step()
        sched.step()
    return out


def test_a_faster_first_epoch_stretches_the_schedule_to_the_budget(tmp_path):
    """#31: the first epoch took 10 s where the probe said 30: the budget's 100 s now hold 1 + 8 epochs.
    Training runs 9 epochs; the one-cycle schedule was the 3-epoch one during the first epoch and carries
    on from that step in a 9-epoch cycle, ending annealed; the plan records the re-plan; the checkpoint
    holds the new schedule (a resumed run continues it)."""
    import torch

    trainer, module, seen, rc = _replanned_fit(tmp_path, [0.0, 0.0, 10.0])
    steps = 4
    assert trainer.current_epoch == 9 and len(seen) == 2 * 9 * steps
    short, long = _one_cycle_lrs(rc, 3 * steps), _one_cycle_lrs(rc, 9 * steps)
    assert seen[:2 * steps] == pytest.approx(short[:2 * steps])   # the first epoch ran the planned schedule
    assert seen[2 * steps:] == pytest.approx(long[2 * steps:])    # then the stretched one, from the same step on
    assert seen[-2] < rc.lr / 100 and seen[-2] == pytest.approx(long[-2])   # and it ends annealed
    saved = RunState.load(tmp_path).data["retrain_plan"]
    assert saved["epochs"] == 9 and saved["replan"] == {"epoch_s": 10.0, "probe_epoch_s": 30.0, "elapsed_s": 10.0,
                                                         "epochs_before": 3, "epochs": 9}
    ck = torch.load(tmp_path / "ck" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ck["lr_schedulers"][0]["total_steps"] == 9 * steps


def test_a_slow_first_epoch_shortens_the_retraining(tmp_path):
    """The first epoch took 60 s of a 100 s budget planned at 30 s an epoch: no second epoch fits (40 s
    left against 64.8 s), so training stops after it."""
    trainer, module, seen, rc = _replanned_fit(tmp_path, [0.0, 0.0, 60.0], planned=3)
    assert trainer.current_epoch == 1 and len(seen) == 2 * 4
    saved = RunState.load(tmp_path).data["retrain_plan"]
    assert saved["epochs"] == 1 and saved["replan"]["epochs_before"] == 3
