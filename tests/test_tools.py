"""Smoke runs of the benchmark and study tools on the tiny config (not the studies themselves)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, TINY


def test_bench_search_smoke(tmp_path):
    out = tmp_path / "b.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_search.py"), "--config", str(TINY), "--iters", "2",
                           "--warmup", "1", "--json", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert set(res["relaxations"]) == {"reinforce", "gumbel", "softmax"}
    for r in res["relaxations"].values():
        assert r["iteration_s"] > 0 and r["ratio_to_floor"] > 0 and r["peak_bytes"] > 0
    assert "x floor" in proc.stdout


def test_compare_search_smoke(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "compare_search.py"), "--config", str(TINY), "--out",
                           str(tmp_path / "s"), "--hw", "objective.form=score objective.latency_weight=-0.3",
                           "--flops", "objective.form=score objective.latency_weight=-0.3", "--methods", "hw,flops,random,hand",
                           "--random-max", "2", "--random-steps", "3", "--buckets", "2", "retrain.steps_per_epoch=3",
                           "search.steps_per_epoch=3"],
                          capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    study = json.loads((tmp_path / "s" / "study.json").read_text())
    methods = {r["method"] for r in study["rows"]}
    assert methods == {"hw", "flops", "random", "hand"}
    assert set(study["hypervolume"]) == methods
    assert (tmp_path / "s" / "study.png").is_file() and "Hypervolume" in (tmp_path / "s" / "study.md").read_text()


def test_gpu_check_cpu_dry_run(tmp_path):
    """tools/gpu_check.py on tiny shapes on the CPU: every part runs (or says why it is skipped),
    so the GPU check cannot rot while no GPU is lent."""
    out = tmp_path / "g"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--device", "cpu", "--tiny", "--out",
                           str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    rep = json.loads((out / "gpu_check.json").read_text())
    assert proc.returncode == 0, json.dumps({k: (v["status"], v.get("error")) for k, v in rep["parts"].items()})[-3000:]
    parts = rep["parts"]
    assert list(parts) == ["roofline", "lut", "search", "fit", "ddp"]
    assert {p["status"] for p in parts.values()} <= {"ok", "skipped"}
    assert parts["roofline"]["result"]["float32"]["ridge_flop_per_byte"] > 0
    lut = parts["lut"]["result"]
    assert (out / lut["eager"]["table"]).is_file() and "skipped" in lut["cuda_graph"]
    assert lut["eager"]["learned"]["n"] == 4 and lut["eager"]["repeatability"]["n"] == 4
    search = parts["search"]["result"]
    assert search["fp32_contiguous"]["reinforce"]["ms"] > 0 and search["fp32_channels_last"]["softmax"]["x_floor"] > 0
    assert "CUDA only" in search["bf16_contiguous"]["skipped"]
    fit = parts["fit"]["result"]
    assert fit["metrics"]["test_accuracy"] is not None and all(e["ok"] for e in fit["exports"])
    assert fit["retrain_throughput"]["samples_per_s"] > 0 and 0 <= fit["retrain_throughput"]["data_share"] <= 1
    assert "two CUDA GPUs" in parts["ddp"]["result"]["skipped"]
    assert rep["total_seconds"] > 0  # recorded; how long it takes is a benchmark, not a test (the timeout bounds it)


def test_gpu_check_fmnist_part_dry_run(tmp_path):
    """The real-data GPU run's part on the CPU at tiny sizes: the GPU config's pipeline runs end to end,
    its table is validated out of sample by the CLI, and the issue's criteria are recorded."""
    out = tmp_path / "g"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--device", "cpu", "--tiny", "--parts",
                           "fmnist", "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    rep = json.loads((out / "gpu_check.json").read_text())
    part = rep["parts"]["fmnist"]
    assert proc.returncode == 0 and part["status"] == "ok", json.dumps(part)[-3000:]
    res = part["result"]
    assert set(res["criteria"]) == {"test_accuracy_at_least_0.93", "validation_within_10pct_at_least_99pct",
                                    "measured_within_5pct_of_predicted", "exports_verified"}
    assert res["criteria"]["exports_verified"] and res["validation"]["n"] == 4
    assert (out / "fmnist" / "model.ts").is_file() and (out / "fmnist_validation.json").is_file()
    assert res["metrics"]["latency_ms"] > 0 and res["measured_over_predicted"] > 0
    assert res["retrain_throughput"]["samples_per_s"] > 0


def test_gpu_check_part_with_a_failed_mode_fails_and_keeps_the_rest(tmp_path, monkeypatch):
    """A part whose second mode failed (the CUDA-graph table after a finished eager one) is
    reported failed, with the failure named, and the finished mode's result kept."""
    import argparse

    sys.path.insert(0, str(ROOT / "tools"))
    import gpu_check

    monkeypatch.setattr(gpu_check, "part_fake", lambda args, out: {"eager": {"table": "luts/t.json"},
                                                                 "cuda_graph": {"failed": "AcceleratorError: boom"}},
                        raising=False)
    assert gpu_check.run_part(argparse.Namespace(out=str(tmp_path), part="fake")) == 0
    rec = json.loads((tmp_path / "part_fake.json").read_text())
    assert rec["status"] == "failed" and "cuda_graph: AcceleratorError: boom" in rec["error"]
    assert rec["result"]["eager"]["table"] == "luts/t.json"
    monkeypatch.setattr(gpu_check, "part_fake", lambda args, out: {"eager": {"table": "x"}}, raising=False)
    gpu_check.run_part(argparse.Namespace(out=str(tmp_path), part="fake"))
    assert json.loads((tmp_path / "part_fake.json").read_text())["status"] == "ok"


def test_cuda_row_check_names_every_row_and_skips(capsys):
    """tools/cuda_row_check.py (the CUDA fault finder) on the CPU: every row of the space is named
    before it runs, a skipped row is not, --only narrows to the rows given."""
    sys.path.insert(0, str(ROOT / "tools"))
    import cuda_row_check

    cfg = str(ROOT / "configs" / "tiny.yaml")
    assert cuda_row_check.main(["--config", cfg, "--device", "cpu", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    rows = [ln[4:] for ln in out.splitlines() if ln.startswith("row ")]
    assert len(rows) == len(set(rows)) >= 4 and f"all {len(rows)} rows ran" in out
    assert cuda_row_check.main(["--config", cfg, "--device", "cpu", "--repeats", "1", "--skip", rows[0]]) == 0
    again = [ln[4:] for ln in capsys.readouterr().out.splitlines() if ln.startswith("row ")]
    assert again == rows[1:]
    assert cuda_row_check.main(["--config", cfg, "--device", "cpu", "--only", rows[2]]) == 0
    assert "all 1 rows ran" in capsys.readouterr().out


def test_gpu_check_refuses_cuda_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--out", str(tmp_path / "g")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and "no CUDA device here" in proc.stderr


def test_process_noise_on_a_synthetic_report(tmp_path, capsys):
    """Networks whose per-process values carry independent 3% noise: single processes agree less
    than means of two, the learned predictor (the truth) ranks above a scrambled table sum, and a
    one-process report is refused with a clear message."""
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("process_noise", ROOT / "tools" / "process_noise.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    rng = np.random.default_rng(0)
    truth = np.linspace(10, 20, 30)
    per = truth[:, None] * np.exp(rng.normal(0, 0.03, (30, 6)))
    rep = {"process_ms": per.tolist(), "halves_ms": np.stack([per.mean(1)] * 2, 1).tolist(),
           "predicted_ms": truth.tolist(), "predicted_raw_ms": (truth * np.exp(rng.normal(0, 0.1, 30))).tolist()}
    path = tmp_path / "v.json"
    path.write_text(json.dumps(rep))
    assert tool.main([str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {int(ln.split()[0]): ln.split() for ln in lines if ln.strip()[:1].isdigit() and "networks" not in ln}
    assert set(rows) == {1, 2, 3}
    assert float(rows[1][2]) < float(rows[2][2]) and float(rows[2][4]) < float(rows[1][4])  # averaging helps
    learned, table_sum = (float(v) for v in rows[1][-1].split("/")) if "/" in rows[1][-1] else (float(rows[1][-3]), float(rows[1][-1]))
    assert learned > table_sum
    rep["process_ms"] = [[v] for v in truth]
    path.write_text(json.dumps(rep))
    assert tool.main([str(path)]) == 2 and "hardware.processes" in capsys.readouterr().err


def _load_tool(name: str):
    import importlib.util

    # registered under a name of its own (dataclasses look their module up), apart from the tools'
    # imports of one another (``from compare_search import run_fit``)
    spec = importlib.util.spec_from_file_location(f"_tool_under_test_{name}", ROOT / "tools" / f"{name}.py")
    tool = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = tool
    spec.loader.exec_module(tool)
    return tool


def test_compare_search_seeds_reuses_finished_runs_and_aggregates(tmp_path, monkeypatch):
    """A multi-seed study whose runs are all finished: nothing is recomputed (no fit process is
    started), and the means, intervals and paired differences come from the runs' metrics."""
    tool = _load_tool("compare_search")
    acc = {(0, "hw0"): 0.90, (0, "flops0"): 0.88, (1, "hw0"): 0.92, (1, "flops0"): 0.91,
           (0, "mobilenetv2-like"): 0.89, (1, "mobilenetv2-like"): 0.90, (0, "all-fused"): 0.87, (1, "all-fused"): 0.88}
    for (seed, name), a in acc.items():
        d = tmp_path / f"seed{seed}" / name
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({
            "test_accuracy": a, "latency_ms": 10.0 + seed + (name == "flops0"), "latency_ms_predicted": 10.0,
            "macs": 1000, "params": 10, "retrain_seconds": 1.0, "search_seconds": 5.0,
            "derive_seconds": 1.0, "intensity": 2.0 + seed, "efficiency": 0.25,
            "arch": "fmb_k3_e2_relu-skip" if name == "hw0" else name}))

    # seed 0's hw search: derive's accuracy-noise rule picked another (faster) candidate, already retrained
    rule = {"choice": "conv_k3_relu-skip", "differs": True, "applied": False}
    (tmp_path / "seed0" / "hw0" / "candidates.json").write_text(json.dumps({"accuracy_noise_rule": rule}))
    (tmp_path / "seed0" / "hw0_rule").mkdir()
    (tmp_path / "seed0" / "hw0_rule" / "metrics.json").write_text(json.dumps({
        "test_accuracy": 0.895, "latency_ms": 8.0, "arch": "conv_k3_relu-skip"}))

    def no_fit(*a, **k):
        raise AssertionError(f"a finished run was recomputed: {a}")

    monkeypatch.setattr(tool.subprocess, "run", no_fit)
    assert tool.main(["--config", str(TINY), "--out", str(tmp_path), "--seeds", "0,1", "--methods", "hw,flops,hand",
                      "--hw", "objective.latency_weight=-0.1", "--rule-picks"]) == 0
    study = json.loads((tmp_path / "study.json").read_text())
    hw = next(g for g in study["groups"] if g["method"] == "hw")
    assert hw["n"] == 2 and abs(hw["test_accuracy"] - 0.91) < 1e-12
    lo, hi = hw["test_accuracy_ci"]
    assert lo < 0.91 < hi  # t(0.975, 1) * sd / sqrt(2) = 12.706 * 0.01414 / 1.414 = 0.127
    assert abs((hi - lo) / 2 - 0.12706) < 1e-3
    flops = next(p for p in study["paired"] if p["vs"] == "flops")
    assert flops["n"] == 2 and abs(flops["d_accuracy"] - 0.015) < 1e-12 and abs(flops["d_latency_ms"] + 1.0) < 1e-12
    assert (tmp_path / "study.png").is_file() and "Paired by seed" in (tmp_path / "study.md").read_text()
    # noise floors: every network recurs across the two seeds; pooled variance over the four
    # architectures (hw0 0.90/0.92, flops0 0.88/0.91, the hand ones 0.01 apart), one degree of freedom each;
    # latency 10 vs 11 ms (10 %, flops0 11 vs 12: 9.1 %)
    noise = study["noise"]
    assert noise["accuracy_archs"] == 4 and noise["accuracy_dof"] == 4
    assert abs(noise["accuracy_seed_sd"] - ((2e-4 + 4.5e-4 + 5e-5 + 5e-5) / 4) ** 0.5) < 1e-9
    assert abs(noise["latency_spread_median"] - 0.10) < 1e-9 and noise["latency_archs"] == 4
    assert abs(noise["latency_spread_max"] - 0.10) < 1e-9
    rp = study["rule_picks"]
    assert rp["n"] == 1 and abs(rp["d_accuracy"] + 0.005) < 1e-12 and abs(rp["d_ms"] + 2.0) < 1e-12
    assert "rule chose differently" in (tmp_path / "study.md").read_text()
    assert "another candidate in 1 of 1 searches" in (tmp_path / "study.md").read_text()
    assert tool.short_setting("objective.form=mnasnet objective.target_quantile=0.3 objective.intensity_weight=0.2") \
        == "q0.3 theta=0.2"
    # what the found networks are: mean I and E over seeds, one distinct architecture, its op mix
    assert abs(hw["intensity"] - 2.5) < 1e-12 and hw["distinct_archs"] == 1 and hw["op_mix"] == "fmb 2, skip 2; relu 2"
    assert "| hw | objective.latency_weight=-0.1 | 2.50 | 0.250 | 1 of 2 | fmb 2, skip 2; relu 2 |" in (tmp_path / "study.md").read_text()


def test_compare_search_rule_pick_runs_under_its_search_objective(tmp_path, monkeypatch):
    """The accuracy-noise rule's pick is retrained with the objective of the search it came from (so its
    metrics state that search's latency target), with the study seed and the rule's architecture."""
    tool = _load_tool("compare_search")
    for seed in (0, 1):
        d = tmp_path / f"seed{seed}" / "hw0"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({
            "test_accuracy": 0.90 + seed / 100, "latency_ms": 10.0, "latency_ms_predicted": 10.0, "macs": 1, "params": 1,
            "search_seconds": 5.0, "intensity": 2.0, "efficiency": 0.3, "arch": "fmb_k3_e2_relu-skip"}))
    (tmp_path / "seed0" / "hw0" / "candidates.json").write_text(json.dumps(
        {"accuracy_noise_rule": {"choice": "conv_k3_relu-skip", "differs": True, "applied": False}}))
    calls = []
    real_run_fit = tool.run_fit

    def fake_run_fit(out, cfg_path, overrides, arch=None, missing=None):
        if out.name.endswith("_rule") and not (out / "metrics.json").is_file():  # stands in for the fit process
            calls.append((out.relative_to(tmp_path).as_posix(), list(overrides), arch))
            out.mkdir(parents=True)
            (out / "metrics.json").write_text(json.dumps({"test_accuracy": 0.89, "latency_ms": 8.0, "arch": arch}))
        return real_run_fit(out, cfg_path, overrides, arch=arch, missing=missing)

    def no_fit(*a, **k):
        raise AssertionError(f"a finished run was recomputed: {a}")

    monkeypatch.setattr(tool, "run_fit", fake_run_fit)
    monkeypatch.setattr(tool.subprocess, "run", no_fit)
    setting = "objective.form=mnasnet objective.target_quantile=0.3"
    assert tool.main(["--config", str(TINY), "--out", str(tmp_path), "--seeds", "0,1", "--methods", "hw",
                      "--hw", setting, "--rule-picks", "retrain.epochs=3"]) == 0
    assert calls == [("seed0/hw0_rule", ["retrain.epochs=3", "seed=0", *setting.split()], "conv_k3_relu-skip")]
    assert json.loads((tmp_path / "study.json").read_text())["rule_picks"]["n"] == 1


def test_compare_search_report_and_paired_against_a_baseline(tmp_path, monkeypatch):
    """``--report`` on a study in progress starts nothing, leaves the unfinished run out and names it;
    ``--paired-against hw0`` gives each setting minus the baseline by seed (accuracy, latency, I, E);
    a baseline that never finished is a clear error."""
    tool = _load_tool("compare_search")
    runs = {(0, "hw0"): (0.90, 10.0, 2.0, 0.30, "a"), (1, "hw0"): (0.91, 11.0, 3.0, 0.40, "b"),
            (0, "hw1"): (0.92, 9.0, 5.0, 0.35, "c"), (1, "hw1"): (0.92, 10.0, 6.0, 0.50, "b"),
            (0, "hw2"): (0.89, 12.0, 2.0, 0.30, "a")}  # seed 1's hw2 never finished
    for (seed, name), (a, ms, i, e, arch) in runs.items():
        d = tmp_path / f"seed{seed}" / name
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({
            "test_accuracy": a, "latency_ms": ms, "latency_ms_predicted": ms, "macs": 1, "params": 1,
            "search_seconds": 5.0, "intensity": i, "efficiency": e, "arch": f"fmb_k3_e2_relu-{arch}"}))
    (tmp_path / "seed1" / "hw2").mkdir()  # started, not finished: report mode must not resume it

    def no_fit(*a, **k):
        raise AssertionError(f"report mode started a process: {a}")

    monkeypatch.setattr(tool.subprocess, "run", no_fit)
    args = ["--config", str(TINY), "--out", str(tmp_path), "--seeds", "0,1", "--methods", "hw", "--hw", "objective.form=mnasnet",
            "--hw", "objective.intensity_weight=0.2", "--hw", "objective.efficiency_weight=0.2", "--report"]
    assert tool.main(args + ["--paired-against", "hw0"]) == 0
    study = json.loads((tmp_path / "study.json").read_text())
    assert study["missing"] == [str(tmp_path / "seed1" / "hw2")]
    md = (tmp_path / "study.md").read_text()
    assert md.startswith("**Interim report**: 1 run(s) not finished") and "`seed1/hw2`" in md
    assert "Paired by seed (hw minus the other" not in md  # an hw-only study: no empty hw-vs-FLOPs/random table
    hw1, hw2 = study["paired_against"]
    assert hw1["hw"] == "hw1" and hw1["n"] == 2 and hw1["same_arch"] == 1
    assert abs(hw1["d_test_accuracy"] - 0.015) < 1e-12 and abs(hw1["d_latency_ms"] + 1.0) < 1e-12
    assert abs(hw1["d_intensity"] - 3.0) < 1e-12 and abs(hw1["d_efficiency"] - 0.075) < 1e-12
    lo, hi = hw1["d_test_accuracy_ci"]  # differences 0.02 and 0.01: t(0.975, 1) * 0.00707 / 1.414 = 0.0635
    assert abs((hi - lo) / 2 - 0.06353) < 1e-4
    assert hw2["n"] == 1 and hw2["same_arch"] == 1 and abs(hw2["d_latency_ms"] - 2.0) < 1e-12
    assert "| hw1 | theta=0.2 | 2 | 1 of 2 | +0.0150 |" in md
    with pytest.raises(SystemExit, match="not an hw run of this study"):
        tool.main(args + ["--paired-against", "hw7"])
    (tmp_path / "seed0" / "hw0" / "metrics.json").unlink()
    (tmp_path / "seed1" / "hw0" / "metrics.json").unlink()
    with pytest.raises(SystemExit, match="no finished hw run of that name"):
        tool.main(args + ["--paired-against", "hw0"])
    with pytest.raises(SystemExit, match="give --seeds too"):
        tool.main(["--config", str(TINY), "--out", str(tmp_path / "x"), "--report"])


def test_compare_search_remeasure_passes_and_takes_the_median(tmp_path, monkeypatch):
    """``--remeasure 2``: every network measured again, pass after pass over all networks (one
    measurement call per pass, as a run's profile stage measures); the tables use the median of the
    in-run and re-measured latencies, the spread is a noise floor, and a second invocation (or
    ``--report``) measures nothing."""
    from types import SimpleNamespace

    tool = _load_tool("compare_search")
    for seed in (0, 1):
        d = tmp_path / f"seed{seed}" / "hw0"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({
            "test_accuracy": 0.9, "latency_ms": 10.0, "latency_ms_predicted": 10.0, "macs": 1, "params": 1,
            "search_seconds": 5.0, "arch": "conv_k3_relu" if seed == 0 else "fmb_k3_e2_relu"}))
    calls = []
    again = iter([12.0, 10.0, 11.0, 10.0])  # seed 0's network: 10 in its run, then 12 and 11: median 11, spread 20 %

    def fake_measure(space, archs, settings, table, info=None):
        calls.append([a.to_string() for a in archs])
        info["anchor_factor"] = 1.0
        return [SimpleNamespace(median_ms=next(again), process_medians_ms=[1.0]) for _ in archs]

    def no_fit(*a, **k):
        raise AssertionError(f"a finished run was recomputed: {a}")

    monkeypatch.setattr(tool, "measure_arch_timings", fake_measure)
    monkeypatch.setattr(tool.subprocess, "run", no_fit)
    monkeypatch.setattr(tool, "hand_designed", lambda space: {})
    args = ["--config", str(TINY), "--out", str(tmp_path), "--seeds", "0,1", "--methods", "hw", "--hw",
            "objective.form=mnasnet", "--remeasure", "2"]
    assert tool.main(args) == 0
    assert calls == [["conv_k3_relu", "fmb_k3_e2_relu"]] * 2  # two passes, each over both networks
    study = json.loads((tmp_path / "study.json").read_text())
    r0 = next(r for r in study["rows"] if r["seed"] == 0)
    assert r0["latency_ms_all"] == [10.0, 12.0, 11.0] and r0["latency_ms"] == 11.0 and r0["latency_ms_in_run"] == 10.0
    noise = study["noise"]
    assert noise["remeasured"] == 2 and noise["remeasure_n"] == 3 and abs(noise["remeasure_spread_max"] - 0.2) < 1e-12
    assert "measured up to 3 times" in (tmp_path / "study.md").read_text()
    assert json.loads((tmp_path / "seed0" / "hw0" / "remeasure2.json").read_text())["pass"] == 2
    calls.clear()
    assert tool.main(args) == 0 and tool.main(args + ["--report"]) == 0 and calls == []


def test_time_to_accuracy_curves_and_table(tmp_path, capsys):
    from hwnas_darts.plots import accuracy_curve, time_to_accuracy

    held = [{"epoch": i, "seconds": 60.0 * (i + 1), "retrain/train_acc": 0.8 + 0.01 * i, "retrain/val_acc": v}
            for i, v in enumerate([0.90, 0.925, 0.931, 0.929, 0.94])]
    assert accuracy_curve(held)[0] == "held-out validation"
    assert time_to_accuracy(held, 0.93) == 180.0 and time_to_accuracy(held, 0.939) == 300.0
    assert time_to_accuracy(held, 0.95) is None
    train_only = [{k: v for k, v in h.items() if k != "retrain/val_acc"} for h in held]
    assert accuracy_curve(train_only)[0].startswith("training")
    assert time_to_accuracy(train_only, 0.5) is None  # training accuracy is not a time-to-accuracy claim
    for name, hist in (("a", held), ("b", train_only)):
        run = tmp_path / name
        run.mkdir()
        (run / "state.json").write_text(json.dumps({"stages": {"retrain": {"history": hist, "seconds": 300.0, "epochs": 5}}}))
        (run / "metrics.json").write_text(json.dumps({"arch": "conv_k3_relu", "test_accuracy": 0.94, "latency_ms": 3.0}))
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import time_to_accuracy as tool
    finally:
        sys.path.pop(0)
    out = tmp_path / "t.png"
    assert tool.main([f"found={tmp_path / 'a'}", str(tmp_path / "b"), "--out", str(out), "--levels", "0.93,0.95"]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and out.stat().st_size > 1000
    lines = [l for l in text.splitlines() if l.startswith("| found") or l.startswith("| b ")]
    assert "| 0.9400 |" in lines[0] and lines[0].rstrip().endswith("| 3.0 | not reached |")
    assert lines[1].rstrip().endswith("| not reached | not reached |")
    # --whole-run: the stages before the retraining come first; --before charges a --arch retraining
    # another run's stages (here run a's 600 s of table, search and derive)
    st = json.loads((tmp_path / "a" / "state.json").read_text())
    st["stages"].update(lut={"done": True, "seconds": 400.0}, search={"done": True, "seconds": 150.0},
                        derive={"done": True, "seconds": 50.0})
    (tmp_path / "a" / "state.json").write_text(json.dumps(st))
    assert tool.main([f"found={tmp_path / 'a'}", f"again={tmp_path / 'b'}", "--out", str(out), "--levels", "0.93",
                      "--whole-run", f"--before=again={tmp_path / 'a'}"]) == 0
    rows = [l for l in capsys.readouterr().out.splitlines() if l.startswith("| found") or l.startswith("| again")]
    assert "| 10.0 | 5.0 |" in rows[0] and rows[0].rstrip().endswith("| 13.0 |")  # 600 s before, 0.93 after 180 s more
    assert "| 10.0 | 5.0 |" in rows[1]
    empty = tmp_path / "c"
    empty.mkdir()
    import pytest

    with pytest.raises(SystemExit, match="no state.json"):
        tool.main([str(empty)])
    with pytest.raises(SystemExit):  # --before names no run
        tool.main([f"found={tmp_path / 'a'}", "--whole-run", f"--before=nobody={tmp_path / 'a'}"])
    assert "LABEL one of the runs' labels" in capsys.readouterr().err


def test_side_by_side_references_reach_the_run_report(tiny_run, tmp_path):
    """tools/side_by_side.py --run writes references.json into the run; a resume rewrites report.md and
    metrics.json with the references and this run's latency relative to each, per repetition."""
    import shutil

    from .conftest import run_fit

    run = tmp_path / "run"
    shutil.copytree(tiny_run[0], run)
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "side_by_side.py"), "--run", str(run), "--repeats", "2"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    refs = json.loads((run / "references.json").read_text())
    arch = json.loads((run / "metrics.json").read_text())["arch"]
    assert refs["archs"]["run"] == arch and len(refs["repeats"]) == 2 and "fit --resume" in proc.stdout
    assert "No hand-designed references" in (run / "report.md").read_text()
    run_fit("--resume", str(run))
    m = json.loads((run / "metrics.json").read_text())
    labels = [k for k in refs["archs"] if k != "run"]
    assert labels and set(m["latency_vs_references"]) == set(labels) == set(m["references_ms"])
    for k in labels:
        ratios = [r["median_ms"]["run"] / r["median_ms"][k] for r in refs["repeats"]]
        assert abs(m["latency_vs_references"][k] - sum(ratios) / 2) < 1e-9
        assert abs(m["references_ms"][k] - sum(r["median_ms"][k] for r in refs["repeats"]) / 2) < 1e-9
    report = (run / "report.md").read_text()
    assert "### Measured references" in report and all(f"| {k} |" in report for k in labels)


def test_load_references_ignores_files_that_do_not_describe_the_run(tmp_path, caplog):
    from hwnas_darts.report import REFERENCES_FILE, load_references

    assert load_references(tmp_path, "a") is None  # no file: nothing, quietly
    rec = {"batch_size": 32, "device": {"name": "cpu"}, "archs": {"run": "a", "ref": "b"},
           "repeats": [{"median_ms": {"run": 2.0, "ref": 4.0}}, {"median_ms": {"run": 3.0, "ref": 5.0}}]}
    (tmp_path / REFERENCES_FILE).write_text(json.dumps(rec))
    got = load_references(tmp_path, "a", 32)
    assert got["repeats"] == 2 and got["run_ms"] == [2.0, 3.0]
    assert got["networks"]["ref"]["mean_ms"] == 4.5 and got["networks"]["ref"]["ratio"] == [0.5, 0.6]
    with caplog.at_level("WARNING"):
        assert load_references(tmp_path, "another") is None
        assert load_references(tmp_path, "a", 64) is None
        (tmp_path / REFERENCES_FILE).write_text("{not json")
        assert load_references(tmp_path, "a") is None
    text = caplog.text
    assert "measured another network" in text and "batch 32" in text and "unreadable" in text


def _fake_candidate_run(run, sup, test, chosen):
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 0\n")
    cands = [{"arch": f"a{i}", "val_accuracy": s, "latency_ms": 1.0 + i, "chosen": i == chosen} for i, s in enumerate(sup)]
    rule = {"choice": "a0", "differs": chosen != 0, "applied": False}
    (run / "candidates.json").write_text(json.dumps({"candidates": cands, "accuracy_noise_rule": rule}))
    (run / "metrics.json").write_text(json.dumps({"arch": f"a{chosen}", "test_accuracy": test[chosen]}))


def test_supernet_ranking_reuses_retrains_and_reports_tau(tmp_path, monkeypatch):
    """Two runs of the same name (seed0/hw1, seed1/hw1) get distinct output directories; the chosen
    candidate reuses its run's own retraining, finished candidate retrains are reused (no fit process
    starts), and Kendall's tau is computed on the candidates' accuracies (5 concordant, 1 discordant
    pair of 4 candidates: tau = 4/6)."""
    tool = _load_tool("supernet_ranking")
    sup, test = [0.70, 0.72, 0.74, 0.76], [0.90, 0.91, 0.93, 0.92]
    runs, out = [tmp_path / "seed0" / "hw1", tmp_path / "seed1" / "hw1"], tmp_path / "ranking"
    for r in runs:
        _fake_candidate_run(r, sup, test, chosen=2)
        label = f"{r.parent.name}-{r.name}"
        for i, a in enumerate(test):
            if i != 2:
                (out / label / f"cand{i}").mkdir(parents=True)
                (out / label / f"cand{i}" / "metrics.json").write_text(json.dumps({"test_accuracy": a}))

    def no_fit(*a, **k):
        raise AssertionError(f"a finished retrain was recomputed: {a}")

    monkeypatch.setattr(sys.modules["compare_search"].subprocess, "run", no_fit)
    assert tool.main([str(r) for r in runs] + ["--out", str(out)]) == 0
    rep = json.loads((out / "ranking.json").read_text())
    assert [e["label"] for e in rep["runs"]] == ["seed0-hw1", "seed1-hw1"]
    for e in rep["runs"]:
        assert abs(e["kendall_tau"] - 4 / 6) < 1e-12 and e["chosen_rank"] == 1
        assert e["candidates"][2]["retrained_in"] == e["run"]
        assert abs(e["proxies"]["latency_ms"]["kendall_tau"] - 4 / 6) < 1e-12  # latency 1, 2, 3, 4 ms: same order
        assert e["noise_rule"] == {"arch": "a0", "differs": True, "test_accuracy": 0.90, "latency_ms": 1.0}
    assert abs(rep["pooled"]["latency_ms"]["kendall_tau"] - rep["pooled"]["kendall_tau"]) < 1e-12  # same order
    assert rep["pooled"]["n"] == 8 and (out / "ranking.png").is_file() and "| seed1-hw1 | 0.9300 | 3.00 | 0.9000 | 1.00 | no |" in (out / "ranking.md").read_text()
    # the chosen candidate retrained with two more seeds (finished: reused): sd of 0.93, 0.92, 0.94 = 0.01
    for r in runs:
        for sd, a in ((1, 0.92), (2, 0.94)):
            d = out / f"{r.parent.name}-{r.name}" / f"cand2_seed{sd}"
            d.mkdir()
            (d / "metrics.json").write_text(json.dumps({"test_accuracy": a}))
    assert tool.main([str(r) for r in runs] + ["--out", str(out), "--noise-seeds", "1,2"]) == 0
    rn = json.loads((out / "ranking.json").read_text())["retrain_noise"]
    assert abs(rn["sd"] - 0.01) < 1e-9 and rn["dof"] == 4 and len(rn["perfect_ranker_tau"]) == 2
    assert "Retraining noise" in (out / "ranking.md").read_text()
    # the retraining-noise ceiling: no noise, a perfect ranker reaches tau 1; noise far above the spread, about 0
    assert tool.perfect_ranker_tau(test, 0.0) == 1.0 and abs(tool.perfect_ranker_tau(test, 1.0)) < 0.05
    assert 0.2 < tool.perfect_ranker_tau([0.90, 0.905, 0.91, 0.915, 0.92], 0.004) < 0.9
    with pytest.raises(SystemExit, match="unknown variant"):
        tool.variant_accuracies(runs[0], out / "x", "zz5", ["a0"])
    with pytest.raises(SystemExit, match="no candidates.json"):
        tool.main([str(tmp_path), "--out", str(out)])


def test_bench_retrain_smoke(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_retrain.py"), "--config", str(TINY), "--rounds", "2",
                           "--warmup", "1", "--batch-sizes", "16,32", "--lightning-steps", "2,4", "--json", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["optimizer"]["loop"]["median_s"] > 0 and len(res["optimizer"]["loop"]["all_s"]) == 2
    assert set(res["batch_size"]) == {"16", "32"} and res["batch_size"]["32"]["per_image_ms"] > 0
    assert "overhead_s" in res["lightning"] and res["profile_ms_per_step"]["convolution"] >= 0
    assert "ms/image" in proc.stdout
    assert {"fp32 channels-last", "fp32 contiguous"} <= set(res["step"]) and len(res["step"]["fp32 contiguous"]["all_ms"]) == 2
    assert res["step"]["choice"] in res["step"] and "the auto rule would train in" in proc.stdout
    only = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_retrain.py"), "--config", str(TINY), "--rounds", "2",
                           "--parts", "step", "--json", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert only.returncode == 0, only.stderr[-2000:]
    assert set(json.loads(out.read_text())) >= {"step", "arch"} and "optimizer" not in json.loads(out.read_text())
    bad = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_retrain.py"), "--config", str(TINY), "--parts", "stpe"],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert bad.returncode != 0 and "unknown ['stpe']" in bad.stderr


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_bench_search_reports_gpu_busy_time_on_cuda():
    sys.path.insert(0, str(ROOT / "tools"))
    from bench_search import bench

    res = bench(str(TINY), [], 2, 1, ["reinforce"], "cuda")
    r = res["relaxations"]["reinforce"]
    assert 0 < res["floor_gpu_busy_fraction"] <= 1.5 and 0 < r["gpu_busy_fraction"] <= 1.5
    assert r["ratio_to_floor_gpu_busy"] > 0


def test_rss_watch_counts_the_whole_process_tree_and_passes_the_exit_code_on(tmp_path):
    tool = _load_tool("rss_watch")
    # a parent holding 40 MiB starts a child holding 120 MiB (written, so resident), then fails with status 3
    child = "import time; b = b'x' * (120 * 2**20); time.sleep(1.0)"
    parent = ("import subprocess, sys; a = b'x' * (40 * 2**20); "
              f"subprocess.run([sys.executable, '-c', {child!r}]); sys.exit(3)")
    out = tmp_path / "w" / "rss.json"
    rc = tool.main(["--out", str(out), "--interval", "0.05", "--", sys.executable, "-c", parent])
    assert rc == 3
    summary = json.loads(out.read_text())
    assert summary["exit_code"] == 3 and summary["processes_seen"] >= 2
    assert summary["peak_process_rss_mib"] >= 120            # the child alone
    assert summary["peak_tree_rss_mib"] >= 160               # parent and child at once
    assert summary["peak_tree_rss_mib"] > summary["peak_process_rss_mib"]
    rows = (tmp_path / "w" / "rss.csv").read_text().splitlines()
    assert rows[0] == "t_s,processes,rss_mib,pss_mib" and len(rows) > 5
    with pytest.raises(SystemExit):
        tool.main(["--out", str(out), "--"])                 # no command
    assert tool.main(["--out", str(out)]) == 2                # no "--" at all
    assert tool.main(["--out", str(out), "--", str(tmp_path / "no-such-command")]) == 127
    assert tool.main(["plot", "--out", str(tmp_path / "rss.png"), f"run={tmp_path / 'w' / 'rss.csv'}"]) == 0
    assert (tmp_path / "rss.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        tool.main(["plot", "--out", str(tmp_path / "x.png"), f"bad={out}"])  # the JSON, not a timeline
