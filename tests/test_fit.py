"""End-to-end runs of `python -m hwnas_darts.fit` on the tiny config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hwnas_darts.fit import main, parse_args
from hwnas_darts.report import CONTRACT_KEYS

from .conftest import ROOT, TINY, run_fit

CONTRACT_FILES = ("config.yaml", "lut.json", "alphas.json", "arch.json", "candidates.json", "metrics.json", "model.ts",
                  "report.md")


def test_contract_files_and_metrics(tiny_run):
    out, proc = tiny_run
    for name in CONTRACT_FILES:
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    for key in CONTRACT_KEYS:
        assert key in m, key
    assert 0.0 <= m["test_accuracy"] <= 1.0 and m["latency_ms"] > 0 and m["latency_ms_predicted"] > 0
    assert m["flops"] == 2 * m["macs"] and m["params"] > 0 and m["bytes"] > 0 and m["intensity"] > 0
    assert "test accuracy" in proc.stdout  # the end-of-run summary
    # the run's front: the latency target, the measured latency against it, the candidates' scatter in the report
    assert m["latency_target_ms"] > 0
    assert m["latency_vs_target"] == pytest.approx(m["latency_ms"] / m["latency_target_ms"])
    assert (out / "plots" / "candidates.png").is_file() and "plots/candidates.png" in (out / "report.md").read_text()
    state = json.loads((out / "state.json").read_text())
    assert all(state["stages"][s]["done"] for s in ("lut", "search", "derive", "scale", "retrain", "profile", "export",
                                                    "report"))
    cands = json.loads((out / "candidates.json").read_text())["candidates"]
    assert sum(c["chosen"] for c in cands) == 1
    chosen = next(c for c in cands if c["chosen"])
    # the target is a constraint: only candidates that meet it compete (all of them when none does)
    meeting = [c for c in cands if c.get("meets_target")]
    assert chosen.get("meets_target") or not meeting
    cands = meeting or cands
    if chosen.get("tie"):  # a close call within the latency noise: decided on the predicted latency
        tied = [c for c in cands if c.get("tie")]
        assert chosen["score_at_predicted"] == max(c["score_at_predicted"] for c in tied)
        assert "tie within the latency noise" in chosen["chosen_by"]
    else:
        assert chosen["score"] == max(c["score"] for c in cands)
    alphas = json.loads((out / "alphas.json").read_text())
    assert len(alphas["history"]) == 2 and set(alphas["final"]) == {"s2d.0", "stage1.0", "stage1.1"}
    report = (out / "report.md").read_text()
    for section in ("## Result", "## Candidates", "## Final network", "## Exports", "## Stage timings"):
        assert section in report
    assert (out / "plots" / "candidates.png").is_file() and (out / "plots" / "alphas.png").is_file()


def test_reported_entropies_and_placement_match_alphas_json(tiny_run):
    """The report's per-layer entropies, metrics.json's and alphas.json's are the same numbers, computed
    from alphas.json's final distribution; the placement of the returned network is that of arch_searched."""
    import math
    import re

    from hwnas_darts.decision import normalized_entropy

    out, _ = tiny_run
    alphas = json.loads((out / "alphas.json").read_text())
    m = json.loads((out / "metrics.json").read_text())
    recomputed = {layer: normalized_entropy(list(p.values())) for layer, p in alphas["final"].items()}
    assert alphas["entropy"] == pytest.approx(recomputed) and m["entropy"] == pytest.approx(recomputed)
    assert alphas["history"][-1]["entropy"] == pytest.approx(recomputed)  # the last epoch ends the search
    report = (out / "report.md").read_text()
    for layer, h in recomputed.items():
        row = re.search(rf"^\| {re.escape(layer)} \| ([0-9.]+) \|", report, re.M)
        assert row and math.isclose(float(row.group(1)), round(h, 3), abs_tol=1e-9), (layer, h)
    searched = json.loads((out / "arch_searched.json").read_text())
    argmax = alphas["argmax"].split("-")
    ops = searched["ops"]
    assert m["decision"]["differs_from_argmax"] == [l for l, a, b in zip(alphas["final"], argmax, ops) if a != b]
    assert m["decision"]["max_entropy"] == pytest.approx(max(recomputed.values()))


def test_model_ts_loads_without_the_package_and_matches(tiny_run):
    out, _ = tiny_run
    from hwnas_darts.config import load_config
    from hwnas_darts.network import build_network
    from hwnas_darts.space import Arch, SearchSpace

    cfg = load_config(out / "config.yaml")
    space = SearchSpace.from_config(cfg)
    net = build_network(space, Arch.load(out / "arch.json")).eval()
    net.load_state_dict(torch.load(out / "model_state.pt", weights_only=True))
    x = torch.randn(6, 1, 16, 16)
    torch.save(x, out / "x.pt")
    code = ("import sys, torch; m = torch.jit.load(sys.argv[1]); x = torch.load(sys.argv[2]); "
            "assert 'hwnas_darts' not in sys.modules; torch.save(m(x), sys.argv[3])")
    subprocess.run([sys.executable, "-c", code, str(out / "model.ts"), str(out / "x.pt"), str(out / "y.pt")],
                   check=True, cwd=out)
    with torch.no_grad():
        assert torch.equal(torch.load(out / "y.pt").argmax(1), net(x).argmax(1))


def test_print_config_and_overrides(capsys):
    assert main(["--config", str(TINY), "--print_config", "search.epochs=7", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "epochs: 7" in out and "seed: 3" in out


def test_unknown_key_is_a_clean_error(capsys):
    assert main(["--config", str(TINY), "--print_config", "search.epoch=7"]) == 2
    err = capsys.readouterr().err
    assert "search.epoch: unknown key (did you mean 'epochs'?)" in err and "Traceback" not in err


def test_existing_run_dir_is_not_overwritten(tiny_run, capsys):
    out, _ = tiny_run
    before = (out / "metrics.json").read_bytes()
    assert main(["--config", str(TINY), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "metrics.json").read_bytes() == before


def test_unwritable_output_dir_fails_early(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(["--config", str(TINY), "--out", str(blocker / "run")]) == 2
    assert "cannot create output directory" in capsys.readouterr().err


def test_full_disk_fails_early(tmp_path, capsys, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 2**20, 2**20))
    assert main(["--config", str(TINY), "--out", str(tmp_path / "run")]) == 2
    assert "MiB free" in capsys.readouterr().err


def test_parse_args_accepts_both_override_styles():
    args, ov = parse_args(["--config", "x.yaml", "search.epochs=2", "--data.batch_size=8", "--seed", "1"])
    assert ov == ["search.epochs=2", "data.batch_size=8"] and args.seed == 1


def test_compound_scaling_end_to_end(tmp_path):
    out = tmp_path / "scaled"
    run_fit("--config", str(TINY), "--out", str(out), "scale.enabled=true", "scale.width=2.0", "scale.depth=1.5",
            "scale.resolution=1.5", "retrain.steps_per_epoch=3")
    from hwnas_darts.space import Arch

    arch = Arch.load(out / "arch.json")
    searched = Arch.load(out / "arch_searched.json")
    assert arch.ops == searched.ops and (arch.scale.width, arch.scale.depth, arch.scale.resolution) == (2.0, 1.5, 1.5)
    meta_shape = json.loads((out / "metrics.json").read_text())
    assert meta_shape["arch"].endswith("@w2,d1.5,r1.5")
    # the exported model takes the scaled resolution (16 * 1.5 = 24)
    code = ("import sys, torch; m = torch.jit.load(sys.argv[1]); print(tuple(m(torch.zeros(2, 1, 24, 24)).shape))")
    res = subprocess.run([sys.executable, "-c", code, str(out / "model.ts")], capture_output=True, text=True)
    assert res.stdout.strip() == "(2, 4)", res.stderr
    prof = json.loads((out / "profile.json").read_text())
    assert prof["latency_ms_predicted"] is not None  # the scaled network's rows were measured into the table


def test_checkpoints_load_with_lightning(tiny_run):
    """Both modules save their hyperparameters: load_from_checkpoint rebuilds them, with the
    run's final alphas and retrained weights."""
    from hwnas_darts.retrain import RetrainModule
    from hwnas_darts.search import SearchModule

    out, _ = tiny_run
    sm = SearchModule.load_from_checkpoint(out / "checkpoints" / "search" / "last.ckpt", map_location="cpu",
                                           weights_only=False)
    final = json.loads((out / "alphas.json").read_text())["logits"]
    assert {m.name: m.alpha.detach().tolist() for m in sm.supernet.mixed} == final
    assert len(sm.alpha_history) == sm.cfg.epochs  # restored by on_load_checkpoint
    rm = RetrainModule.load_from_checkpoint(out / "checkpoints" / "retrain" / "last.ckpt", map_location="cpu",
                                            weights_only=False)
    saved = torch.load(out / "model_state.pt", weights_only=True)
    state = rm.network.state_dict()
    assert state.keys() == saved.keys() and all(torch.equal(state[k].float(), saved[k].float()) for k in saved)
    assert rm.hparams["arch"] == json.loads((out / "metrics.json").read_text())["arch"]


def test_stage_estimate_follows_the_step_counts(tiny_cfg, monkeypatch):
    """The estimate printed before the run scales with what the config asks for."""
    import hwnas_darts.estimate as est
    from hwnas_darts.runner import RunContext, RunState
    from hwnas_darts.space import SearchSpace

    monkeypatch.setattr(est, "probe_step_seconds", lambda ctx, steps=3: 0.01)

    def estimate(**search):
        cfg = tiny_cfg.model_copy(update={"search": tiny_cfg.search.model_copy(update=search)})
        ctx = RunContext(cfg, Path("."), RunState(Path(".")), space=SearchSpace.from_config(cfg))
        return est.estimate_stages(ctx, table_stored=True)

    base = estimate(epochs=2, warmup_epochs=2, steps_per_epoch=10)
    assert base["search"] == pytest.approx(2 * 10 * 0.01)
    assert estimate(epochs=20, warmup_epochs=20, steps_per_epoch=10)["search"] == pytest.approx(10 * base["search"])
    # architecture steps after the warm-up cost more: reinforce scores arch_samples paths, each a forward pass
    # (a third of a training step); softmax runs every path
    k = tiny_cfg.search.arch_samples
    assert estimate(epochs=2, warmup_epochs=0, steps_per_epoch=10)["search"] == pytest.approx((1 + k / 3) * base["search"])
    assert estimate(epochs=2, warmup_epochs=2, steps_per_epoch=10, relaxation="softmax")["search"] > base["search"]
    assert "total" in est.format_estimate(base)


def test_quality_config_runs_its_first_steps_at_tiny_shapes(tmp_path):
    """configs/fashion_mnist_best.yaml end to end on synthetic 16x16 images with a few steps per stage:
    its space builds, its table is measured, and the retraining scores the holdout after every epoch."""
    out = tmp_path / "best"
    tiny_hw = ["hardware.batch_size=8", "hardware.min_run_time=0.02", "hardware.rounds=2", "hardware.processes=1",
               "hardware.warmup=2", "hardware.calibration_archs=6", "hardware.validation_archs=4",
               "hardware.check_archs=4", "hardware.probe=false"]
    run_fit("--config", str(ROOT / "configs" / "fashion_mnist_best.yaml"), "--out", str(out), "data.dataset=synthetic",
            "data.search_subset=null", "data.batch_size=32", *tiny_hw, "search.epochs=2", "search.warmup_epochs=1",
            "search.steps_per_epoch=3", "derive.num_samples=2", "retrain.epochs=2", "retrain.steps_per_epoch=3",
            "retrain.holdout=64", "retrain.random_erasing=0.5", "retrain.time_budget_minutes=10", "logger.kind=none",
            "trainer.progress=false", "export.program=false")
    m = json.loads((out / "metrics.json").read_text())
    state = json.loads((out / "state.json").read_text())
    hist = state["stages"]["retrain"]["history"]
    plan = state["retrain_plan"]  # two 3-step epochs fit in 10 minutes many times over: capped at retrain.epochs
    assert plan["epochs"] == 2 and plan["max_epochs"] == 2 and plan["probe"]["step_s"] > 0 and plan["probe"]["val_s"] > 0
    # the config's whole-run budget leaves far more than 10 minutes, so the retraining's own budget binds
    assert plan["binding"] == "retrain.time_budget_minutes" and plan["run_budget"]["left_s"] > 600
    assert m["retrain_plan"]["epochs"] == 2 and m["retrain_plan"]["binding"] == "retrain.time_budget_minutes"
    # the first epoch was measured and the plan checked again: still capped at retrain.epochs
    rp = plan["replan"]
    assert rp["epochs_before"] == rp["epochs"] == 2 and 0 < rp["epoch_s"] <= rp["elapsed_s"] and m["retrain_plan"]["replan"] == rp
    assert [h["epoch"] for h in hist] == [0, 1] and state["stages"]["retrain"]["epochs"] == 2
    assert all(0 <= h["retrain/val_acc"] <= 1 and h["seconds"] > 0 for h in hist)
    assert hist[1]["seconds"] > hist[0]["seconds"]
    assert m["holdout_accuracy"] == hist[-1]["retrain/val_acc"] and set(m["time_to_accuracy_s"]) == {"0.9", "0.93", "0.939"}
    assert (out / "plots" / "time_to_accuracy.png").is_file()
    report = (out / "report.md").read_text()
    assert "### Time to accuracy" in report and "Retraining schedule: **2 epochs** (at most 2)" in report
    assert "which kept the plan" in report


def test_bf16_training_exports_an_fp32_model_that_matches_the_trained_network(tmp_path, tiny_space):
    """#31: whatever precision the retraining ran in (here bf16 autocast on the CPU), the saved and
    exported network is fp32 and its exports reproduce the trained network's eager fp32 outputs."""
    from hwnas_darts.network import build_network
    from hwnas_darts.space import Arch

    out = tmp_path / "bf16"
    arch = tiny_space.sample(seed=3).to_string()
    run_fit("--config", str(TINY), "--out", str(out), "--arch", arch, "trainer.precision=bf16-mixed",
            "retrain.steps_per_epoch=10", "retrain.epochs=1", "logger.kind=none")
    saved = torch.load(out / "model_state.pt", weights_only=True)
    assert all(v.dtype == torch.float32 for k, v in saved.items() if v.is_floating_point())
    net = build_network(tiny_space, Arch.load(out / "arch.json")).eval()
    net.load_state_dict(saved)
    x = torch.randn(5, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eager = net(x)
    ts = torch.jit.load(str(out / "model.ts"))
    assert all(p.dtype == torch.float32 for p in ts.parameters())
    with torch.no_grad():
        torch.testing.assert_close(ts(x), eager, rtol=1e-4, atol=1e-5)
        program = torch.export.load(str(out / "model.pt2")).module()
        torch.testing.assert_close(program(x), eager, rtol=1e-4, atol=1e-5)
    exports = json.loads((out / "state.json").read_text())["stages"]["export"]["results"]
    assert {r["kind"] for r in exports if r["ok"]} >= {"torchscript", "program"}


def test_measured_training_step_is_recorded_reported_and_used(tmp_path, tiny_space):
    """#31: with `auto` the retraining times its step in each format and precision this machine offers,
    trains in the fastest, and says so in state.json, metrics.json and the report; the test stays fp32."""
    out = tmp_path / "auto"
    arch = tiny_space.sample(seed=3).to_string()
    run_fit("--config", str(TINY), "--out", str(out), "--arch", arch, "trainer.channels_last=auto",
            "trainer.precision=auto", "retrain.steps_per_epoch=5", "retrain.epochs=1", "logger.kind=none",
            "export.program=false")
    state = json.loads((out / "state.json").read_text())
    chosen, used = state["retrain_step"], state["stages"]["retrain"]["step"]
    assert chosen["chosen_by"] == "measured" and chosen["arch"] == arch
    assert {"fp32 channels-last", "fp32 contiguous"} <= set(chosen["ms_per_step"])
    assert all(len(v) == 5 and min(v) > 0 for v in chosen["ms_per_step"].values())
    assert used == {k: chosen[k] for k in ("channels_last", "precision", "chosen_by")}
    m = json.loads((out / "metrics.json").read_text())
    assert m["retrain_step"]["precision"] == chosen["precision"] and m["retrain_step"]["ms_per_step"] == chosen["ms_per_step"]
    assert "Training step: **" in (out / "report.md").read_text()
    saved = torch.load(out / "model_state.pt", weights_only=True)
    assert all(v.dtype == torch.float32 for v in saved.values() if v.is_floating_point())
