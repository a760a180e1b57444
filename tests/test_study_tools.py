"""The search-quality study tools on synthetic finished runs (no training) and one tiny run:
ground truth and band percentiles, search vs equal-budget random search, the space ranking,
and the architecture-gradient diagnostic."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from .conftest import TINY
from .test_tools import _load_tool

ARCHS = ["s2dconv_n2_relu-fmb_k3_e2_relu-skip", "s2d_n2_relu-conv_k3_relu-skip", "fmb_k3_e2_relu-mb_k3_e2_relu-skip",
         "s2dconv_n2_relu-conv_k3_swish-conv_k3_relu", "s2d_n2_relu-skip-skip"]


def _metrics(d, **m):
    d.mkdir(parents=True, exist_ok=True)
    (d / "metrics.json").write_text(json.dumps(m))


def _no_fit(*a, **k):
    raise AssertionError(f"a finished run was recomputed: {a}")


def test_ground_truth_reuses_runs_and_ranks_within_the_band(tmp_path, monkeypatch):
    tool = _load_tool("ground_truth")
    from hwnas_darts.config import load_config
    from hwnas_darts.space import SearchSpace

    space = SearchSpace.from_config(load_config(TINY))
    archs = space.sample_unique(4, seed=777)
    for i, (a, acc, ms) in enumerate(zip(archs, [0.80, 0.85, 0.90, 0.70], [10.0, 10.2, 9.8, 20.0])):
        _metrics(tmp_path / f"net{i:02d}", test_accuracy=acc, latency_ms=ms, latency_ms_predicted=ms, arch=a.to_string(),
                 seed=0)
    monkeypatch.setattr(sys.modules["compare_search"].subprocess, "run", _no_fit)
    assert tool.main(["--config", str(TINY), "--out", str(tmp_path), "-n", "4"]) == 0
    truth = json.loads((tmp_path / "ground_truth.json").read_text())["networks"]
    assert [t["test_accuracy"] for t in truth] == [0.80, 0.85, 0.90, 0.70]
    r = tool.rank(truth, {"test_accuracy": 0.87, "latency_ms_predicted": 10.0})
    assert r["in_band"] == 3 and r["percentile"] == pytest.approx(200 / 3)  # beats 0.80 and 0.85, not 0.90
    assert tool.rank(truth, {"test_accuracy": 0.87, "latency_ms_predicted": 15.0})["percentile"] is None
    with pytest.raises(SystemExit, match="-n must be"):
        tool.main(["--out", str(tmp_path), "-n", "0"])


def test_ground_truth_saved_and_reused_on_another_machine(tmp_path, monkeypatch):
    """--save keeps what does not depend on the machine; --reuse takes those networks instead of
    retraining them, predicts their latency with this machine's model, and refuses another study's file."""
    tool = _load_tool("ground_truth")
    from hwnas_darts.config import load_config
    from hwnas_darts.space import SearchSpace

    space = SearchSpace.from_config(load_config(TINY))
    archs = space.sample_unique(3, seed=5)
    first = tmp_path / "gt"
    for i, (a, acc) in enumerate(zip(archs, [0.81, 0.86, 0.77])):
        _metrics(first / f"net{i:02d}", test_accuracy=acc, latency_ms=3.0, latency_ms_predicted=3.1,
                 arch=a.to_string(), seed=0, macs=10, params=5, retrain_seconds=9.0)
    monkeypatch.setattr(sys.modules["compare_search"].subprocess, "run", _no_fit)
    saved = tmp_path / "saved.json"
    assert tool.main(["--config", str(TINY), "--out", str(first), "-n", "3", "--sample-seed", "5",
                      "--save", str(saved), "retrain.epochs=1"]) == 0
    rec = json.loads(saved.read_text())
    assert [n["test_accuracy"] for n in rec["retrainings"]] == [0.81, 0.86, 0.77]
    assert all("latency_ms" not in n and "latency_ms_predicted" not in n and n["trained_on"] for n in rec["retrainings"])

    class Model:  # this machine's latency model: a stand-in that tells the archs apart
        def predict(self, arch):
            return 1.0 + len(arch.to_string()) / 100

    monkeypatch.setattr(tool, "obtain_model", lambda cfg, sp: (Model(), None, "a stand-in"))
    second = tmp_path / "gt2"  # a new machine: no runs, only the file; -n 4 asks for one network more than it holds
    with pytest.raises(AssertionError, match="recomputed"):  # the fourth is retrained (here: refused by _no_fit)
        tool.main(["--config", str(TINY), "--out", str(second), "-n", "4", "--sample-seed", "5", "--reuse", str(saved),
                   "retrain.epochs=1"])
    assert tool.main(["--config", str(TINY), "--out", str(second), "-n", "3", "--sample-seed", "5", "--reuse", str(saved),
                      "retrain.epochs=1"]) == 0
    truth = json.loads((second / "ground_truth.json").read_text())["networks"]
    assert [t["test_accuracy"] for t in truth] == [0.81, 0.86, 0.77]
    assert [t["latency_ms_predicted"] for t in truth] == [Model().predict(a) for a in archs]
    # the recorded recipe is compared resolved: other override strings that resolve to it pass, a changed
    # setting (or a changed default) does not
    resolved = tool.recipe(load_config(TINY, ["retrain.epochs=1"]))["retrain"]["augment"]
    aug = "retrain.augment=" + ("true" if resolved else "false")
    assert tool.main(["--config", str(TINY), "--out", str(second), "-n", "3", "--sample-seed", "5", "--reuse", str(saved),
                      "retrain.epochs=1", aug]) == 0
    flipped = "retrain.augment=" + ("false" if resolved else "true")
    for bad, match in ((["retrain.epochs=3"], "retrain.epochs: the ground truth 1, this study 3"),
                       (["retrain.epochs=1", flipped], "retrain.augment"),
                       (["--sample-seed", "6", "retrain.epochs=1"], "sample-seed")):
        with pytest.raises(SystemExit, match=match):
            tool.main(["--config", str(TINY), "--out", str(tmp_path / "x"), "-n", "3", "--reuse", str(saved), *bad])
    # a file saved before recipes were recorded: the override strings must match, and it was retrained with augmentation
    old = dict(rec, overrides=["retrain.epochs=1", "retrain.augment=true"])
    old.pop("recipe")
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert tool.main(["--config", str(TINY), "--out", str(second), "-n", "3", "--sample-seed", "5", "--reuse",
                      str(tmp_path / "old.json"), "retrain.epochs=1", "retrain.augment=true"]) == 0
    old["overrides"] = ["retrain.epochs=1", "retrain.augment=false"]  # even with matching strings
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(SystemExit, match="predates retrain.augment"):
        tool.main(["--config", str(TINY), "--out", str(tmp_path / "y"), "-n", "3", "--sample-seed", "5", "--reuse",
                   str(tmp_path / "old.json"), "retrain.epochs=1", "retrain.augment=false"])
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(SystemExit, match="not a saved ground truth"):
        tool.main(["--config", str(TINY), "--out", str(tmp_path / "x"), "--reuse", str(tmp_path / "junk.json")])
    with pytest.raises(SystemExit, match="no such file"):
        tool.main(["--config", str(TINY), "--out", str(tmp_path / "x"), "--reuse", str(tmp_path / "none.json")])
    with pytest.raises(SystemExit, match="--shard"):
        tool.main(["--config", str(TINY), "--out", str(tmp_path / "x"), "--shard", "2/2"])


def _fake_fit(started):
    def fake_fit(out, cfg_path, overrides, arch=None, missing=None):
        if (out / "metrics.json").is_file():
            return json.loads((out / "metrics.json").read_text())
        if missing is not None:
            missing.append(str(out))
            return None
        started.append(out.name)
        seed = int(next((o.split("=")[1] for o in overrides if o.startswith("seed=")), 0))
        _metrics(out, test_accuracy=0.8 + 0.01 * seed, latency_ms=1.0, latency_ms_predicted=1.0, arch=arch, seed=seed)
        return json.loads((out / "metrics.json").read_text())
    return fake_fit


def test_ground_truth_shards_share_the_work(tmp_path, monkeypatch):
    """--shard 1/2 retrains only the odd networks and reads the even ones when they are finished."""
    tool = _load_tool("ground_truth")
    from hwnas_darts.config import load_config
    from hwnas_darts.space import SearchSpace

    archs = SearchSpace.from_config(load_config(TINY)).sample_unique(4, seed=777)
    started: list[str] = []
    monkeypatch.setattr(tool, "run_fit", _fake_fit(started))
    _metrics(tmp_path / "net00", test_accuracy=0.9, latency_ms=1.0, latency_ms_predicted=1.0, arch=archs[0].to_string())
    assert tool.main(["--config", str(TINY), "--out", str(tmp_path), "-n", "4", "--shard", "1/2"]) == 0
    assert started == ["net01", "net03"]
    res = json.loads((tmp_path / "ground_truth.json").read_text())
    assert res["finished"] == 3 and res["missing"] == [str(tmp_path / "net02")]


def test_ground_truth_several_seeds_average_and_measure_the_noise(tmp_path, monkeypatch):
    """--seeds 0,1 keeps the seed-0 runs, adds a seed-1 run per network, averages them, and reports one
    retraining's pooled sd; a saved file reused with more seeds runs only the seeds it lacks."""
    tool = _load_tool("ground_truth")
    started: list[str] = []
    monkeypatch.setattr(tool, "run_fit", _fake_fit(started))
    gt = tmp_path / "gt"
    assert tool.main(["--config", str(TINY), "--out", str(gt), "-n", "2", "--save", str(tmp_path / "s.json")]) == 0
    assert started == ["net00", "net01"]
    assert tool.main(["--config", str(TINY), "--out", str(gt), "-n", "2", "--seeds", "0,1"]) == 0
    assert started[2:] == ["net00_seed1", "net01_seed1"]
    res = json.loads((gt / "ground_truth.json").read_text())
    assert [n["test_accuracy"] for n in res["networks"]] == pytest.approx([0.805, 0.805])
    assert res["retrain_sd"] == pytest.approx((2 * 2 * 0.005 ** 2 / 2) ** 0.5) and res["retrain_sd_dof"] == 2
    monkeypatch.setattr(tool, "obtain_model", lambda cfg, sp: (type("M", (), {"predict": lambda self, a: 2.0})(), None, "a stand-in"))
    # a ground truth half-way through its second seed saves every finished retraining, not only whole networks
    (gt / "net01_seed1" / "metrics.json").unlink()
    assert tool.main(["--config", str(TINY), "--out", str(gt), "-n", "2", "--seeds", "0,1", "--report",
                      "--save", str(tmp_path / "half.json")]) == 0
    assert len(json.loads((tmp_path / "half.json").read_text())["retrainings"]) == 3
    started.clear()  # another machine: seed 0 comes from the file, seed 1 is run
    assert tool.main(["--config", str(TINY), "--out", str(tmp_path / "gt2"), "-n", "2", "--seeds", "0,1",
                      "--reuse", str(tmp_path / "s.json"), "--save", str(tmp_path / "s2.json")]) == 0
    assert started == ["net00_seed1", "net01_seed1"]
    assert len(json.loads((tmp_path / "s2.json").read_text())["retrainings"]) == 4
    with pytest.raises(SystemExit, match="--seeds"):
        tool.main(["--config", str(TINY), "--out", str(gt), "seed=3"])


def test_search_vs_random_pairs_by_seed_with_forfeits(tmp_path, monkeypatch):
    """Two seeds, two targets, all runs finished: random search returns its most accurate pool member
    under each target; a method without a network under the target loses that seed."""
    tool = _load_tool("search_vs_random")
    hw = {(0, 0.1): (0.90, 9.0, 10.0), (0, 0.5): (0.92, 14.0, 15.0),
          (1, 0.1): (0.91, 11.0, 10.0), (1, 0.5): (0.93, 13.0, 15.0)}  # seed 1 at q0.1 misses its 10 ms target
    for (seed, q), (acc, pred, target) in hw.items():
        _metrics(tmp_path / f"seed{seed}" / f"hw_q{q:g}", test_accuracy=acc, latency_ms=pred, latency_ms_predicted=pred,
                 latency_target_ms=target, search_seconds=100.0, derive_seconds=20.0, arch=ARCHS[seed])
    pools = {0: [(ARCHS[2], 0.75, 9.5), (ARCHS[3], 0.78, 14.5), (ARCHS[4], 0.70, 8.0)],
             1: [(ARCHS[1], 0.74, 12.0), (ARCHS[3], 0.76, 14.5)]}  # seed 1: nothing under 10 ms
    retrained = {(0, ARCHS[2]): 0.89, (0, ARCHS[3]): 0.93, (1, ARCHS[3]): 0.92}
    for seed, pool in pools.items():
        (tmp_path / f"seed{seed}").mkdir(exist_ok=True)
        (tmp_path / f"seed{seed}" / "random_pool.json").write_text(json.dumps(
            {"archs": [{"arch": a, "val_accuracy": v, "latency_ms_predicted": ms} for a, v, ms in pool], "seconds": 100}))
    lat = {a: ms for pool in pools.values() for a, _, ms in pool}
    for (seed, arch), acc in retrained.items():
        _metrics(tool._retrain_dir(tmp_path, arch, seed), test_accuracy=acc, latency_ms=lat[arch],
                 latency_ms_predicted=lat[arch], arch=arch)
    monkeypatch.setattr(sys.modules["compare_search"].subprocess, "run", _no_fit)
    assert tool.main(["--config", str(TINY), "--out", str(tmp_path), "--seeds", "0,1", "--targets", "0.1,0.5"]) == 0
    res = json.loads((tmp_path / "tunas.json").read_text())
    s = {r["target_quantile"]: r for r in res["summary"]}
    # q0.1: seed 0 paired (0.90 vs 0.89, the pool's best under 10 ms); seed 1: hw misses, random has none
    assert s[0.1]["paired"] == 1 and s[0.1]["d_per_seed"] == pytest.approx([0.01])
    assert s[0.1]["hw_forfeits"] == [1] and s[0.1]["random_forfeits"] == [1] and s[0.1]["hw_wins"] == 1
    # q0.5: random picks the 0.78 member in both seeds (0.93, 0.92 retrained): hw - random = -0.01, +0.01
    assert s[0.5]["paired"] == 2 and s[0.5]["d_per_seed"] == pytest.approx([-0.01, 0.01]) and s[0.5]["hw_wins"] == 1
    assert "| q0.5 | 2 of 2 |" in (tmp_path / "tunas.md").read_text()
    # the median over every seed, forfeits as losses: two seeds hold no 95 % sign-test interval
    assert s[0.5]["median_with_forfeits"] == pytest.approx(0.0) and s[0.5]["median_ci_coverage"] is None
    assert "- (too few seeds)" in (tmp_path / "tunas.md").read_text()
    assert [tool.outcome(r) for r in res["records"] if r["target_quantile"] == 0.1] == [pytest.approx(0.01), None]
    assert tool.pick({"archs": [{"latency_ms_predicted": 20.0, "val_accuracy": 1.0}]}, 10.0) is None

    # --baseline: this study's hw networks against another study's, paired by seed where both meet the target
    base = tmp_path / "baseline"
    base.mkdir()
    brec = [{"seed": sd, "target_quantile": q, "budget_seconds": 100.0, "hw": {"test_accuracy": acc, "meets": ok}}
            for sd, q, acc, ok in [(0, 0.1, 0.88, True), (1, 0.1, 0.95, True), (0, 0.5, 0.93, True), (1, 0.5, 0.90, True)]]
    (base / "tunas.json").write_text(json.dumps({"records": brec}))
    assert tool.main(["--config", str(TINY), "--out", str(tmp_path), "--seeds", "0,1", "--targets", "0.1,0.5",
                      "--baseline", str(base)]) == 0
    v = {r["target_quantile"]: r for r in json.loads((tmp_path / "tunas.json").read_text())["versus_baseline"]}
    assert v[0.1]["paired"] == 1 and v[0.1]["d_per_seed"] == pytest.approx([0.02]) and v[0.1]["forfeits"] == [1]
    assert v[0.5]["d_per_seed"] == pytest.approx([-0.01, 0.03]) and v[0.5]["wins"] == 1
    assert v[0.5]["cost_ratio_per_seed"] == pytest.approx([1.2, 1.2])  # (100 + 20) s against 100 s
    assert "hw search against the hw search of" in (tmp_path / "tunas.md").read_text()
    with pytest.raises(SystemExit, match="no tunas.json"):
        tool.main(["--config", str(TINY), "--out", str(tmp_path), "--seeds", "0,1", "--targets", "0.1,0.5",
                   "--baseline", str(tmp_path / "nowhere")])
    # a ground truth retrained with another recipe than the study's: refused before anything runs
    gt_tool = _load_tool("ground_truth")
    from hwnas_darts.config import load_config

    gt = tmp_path / "gt"
    gt.mkdir()
    (gt / "ground_truth.json").write_text(json.dumps({"networks": [], "recipe": gt_tool.recipe(load_config(TINY, ["retrain.epochs=3"]))}))
    with pytest.raises(SystemExit, match="retrain.epochs: the ground truth 3"):
        tool.main(["--config", str(TINY), "--out", str(tmp_path), "--seeds", "0,1", "--targets", "0.1,0.5",
                   "--ground-truth", str(gt)])


def test_pool_studies_pools_machines_and_counts_forfeits(tmp_path):
    """A search_vs_random study and transcribed earlier outcomes pool into one paired summary; a
    forfeit is a loss in the median, never in the mean; a pair counted twice is refused."""
    tool = _load_tool("pool_studies")
    recs = [{"seed": sd, "target_quantile": 0.1, "hw": {"meets": True, "test_accuracy": hw, "percentile": 90},
             "random": None if rnd is None else {"meets": True, "test_accuracy": rnd, "percentile": 50}}
            for sd, hw, rnd in [(20, 0.91, 0.90), (21, 0.90, None), (22, 0.92, 0.925)]]
    study = tmp_path / "z5"
    study.mkdir()
    (study / "tunas.json").write_text(json.dumps({"records": recs, "device": {"name": "CPU B"}}))
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps({"studies": [{"section": "x", "machine": "CPU A", "target_quantile": 0.1, "records": [
        {"seed": 0, "hw_test_accuracy": 0.905, "random_test_accuracy": 0.900},
        {"seed": 1, "d_points": 0.3},
        {"seed": 2, "random_forfeit": True, "hw_test_accuracy": 0.9},
        {"seed": 3, "hw_forfeit": True, "random_test_accuracy": 0.9}]}]}))
    out = tmp_path / "pooled.md"
    assert tool.main([str(earlier), str(study), "--out", str(out)]) == 0
    rows = [r for s in (str(earlier), str(study)) for r in tool.load_study(s)]
    (s,) = tool.pool(rows)
    # finite pairs: +0.5, +0.3 (earlier), +1.0, -0.5 (this machine) points; two forfeits each way
    assert s["paired"] == 4 and s["d_accuracy"] == pytest.approx(0.0033, abs=1e-4)
    assert s["n"] == 7 and s["hw_wins"] == 5 and s["random_forfeits"] == [2, 21] and s["hw_forfeits"] == [3]
    assert s["median_with_forfeits"] == pytest.approx(0.005)  # ranks: -inf, -0.5, +0.3, +0.5, +1.0, inf, inf
    assert s["machines"] == ["CPU A", "CPU B"] and "21: hw by forfeit" in out.read_text()
    with pytest.raises(SystemExit, match="count once"):
        tool.main([str(study), str(study / "tunas.json")])
    with pytest.raises(SystemExit, match="neither both test accuracies nor d_points"):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"studies": [{"machine": "A", "target_quantile": 0.5, "records": [{"seed": 0}]}]}))
        tool.main([str(bad)])
    with pytest.raises(SystemExit, match="no such study"):
        tool.main([str(tmp_path / "nowhere")])


def test_space_ranking_rankers_and_the_paired_difference():
    tool = _load_tool("space_ranking")
    rng = np.random.default_rng(0)
    acc = np.linspace(0.88, 0.92, 30)
    lat = acc * 100 + rng.normal(0, 0.5, 30)  # latency tracks accuracy closely
    noise = rng.normal(0, 1, 30)  # a supernet that knows nothing
    scores = tool.ranker_scores(noise, lat)
    assert set(scores) == {"supernet", "latency", "combined"}
    with_loss = tool.ranker_scores(noise, lat, supernet_loss=-acc)  # a loss that knows the order: lower is better
    assert set(with_loss) == set(tool.RANKERS)
    assert np.array_equal(with_loss["supernet_loss"], np.arange(1, 31))
    pooled = {k: np.concatenate([v, v]) for k, v in scores.items()}
    res = tool.tau_table(pooled, np.tile(acc, 2), runs=2, n_boot=300)
    assert res["latency"]["kendall_tau"] > 0.8 and abs(res["supernet"]["kendall_tau"]) < 0.3
    lo, hi = res["supernet"]["minus_latency_ci"]
    assert hi < 0  # the uninformed supernet ranks worse than latency, and the interval says so
    assert res["combined"]["ci"][0] <= res["combined"]["kendall_tau"] <= res["combined"]["ci"][1]


def test_space_ranking_within_latency_bands():
    """Within a latency band latency cannot rank; a supernet that knows the residual accuracy can."""
    tool = _load_tool("space_ranking")
    rng = np.random.default_rng(1)
    lat = np.repeat([5.0, 10.0, 20.0], 10) * (1 + rng.uniform(-0.03, 0.03, 30))  # three bands of ten networks
    resid = rng.normal(0, 1, 30)
    acc = np.log(lat) + resid  # bigger is better, plus what only a good ranker knows
    good = tool.ranker_scores(resid, lat)
    blind = tool.ranker_scores(rng.normal(0, 1, 30), lat)
    res = tool.band_tau({k: np.stack([good[k], blind[k]]) for k in good}, acc, lat, band=0.1, n_boot=200)
    assert res["pairs"] == 3 * 45  # only pairs inside a band
    assert abs(res["latency"]["tau"]) < 0.35  # latency's order within +-3 % is noise
    assert res["supernet"]["tau"] > 0.3 and res["supernet"]["minus_latency_ci"][0] > 0  # half the runs know
    assert tool.band_tau({"latency": np.stack([lat])}, acc, lat * np.arange(1, 31), band=0.01) == {"pairs": 0}


def test_space_ranking_tells_shared_bias_from_noise():
    """Runs that share a bias agree with each other and not with the ground truth, and averaging them
    does not help; runs that are noisy copies of the truth agree less, and their mean rank ranks better
    than any one of them."""
    tool = _load_tool("space_ranking")
    rng = np.random.default_rng(2)
    acc = rng.normal(0.9, 0.005, 40)
    lat = rng.uniform(3, 8, 40)
    bias = rng.normal(0, 1, 40)  # what every biased supernet measures instead of accuracy
    biased = [tool.ranker_scores(bias + rng.normal(0, 0.1, 40), lat) for _ in range(4)]
    noisy = [tool.ranker_scores(acc / 0.005 + rng.normal(0, 1.5, 40), lat) for _ in range(4)]
    b = tool.agreement(biased, acc, lat, n_boot=200)["supernet"]
    n = tool.agreement(noisy, acc, lat, n_boot=200)["supernet"]
    assert len(b["between_runs"]) == 6 and b["between_runs_mean"] > 0.8 and abs(b["ensemble"]["kendall_tau"]) < 0.3
    single = [float(tool.st.kendalltau(r["supernet"], acc).statistic) for r in noisy]
    assert n["between_runs_mean"] < 0.7 and n["ensemble"]["kendall_tau"] > max(single)
    assert "supernet_loss" not in n  # no loss was scored
    assert n["ensemble_with_latency"]["minus_latency_ci"][0] > 0  # latency (unrelated here) ranks at chance


def test_space_ranking_compares_two_designs_paired_over_networks():
    tool = _load_tool("space_ranking")
    rng = np.random.default_rng(3)
    acc = rng.normal(0.9, 0.005, 30)
    lat = rng.uniform(3, 8, 30)
    knows = [tool.ranker_scores(acc + rng.normal(0, 0.002, 30), lat) for _ in range(4)]
    blind = [tool.ranker_scores(rng.normal(0, 1, 30), lat) for _ in range(2)]  # fewer runs: each design pools its own
    stack = lambda runs: {k: np.stack([r[k] for r in runs]) for k in runs[0]}
    d = tool.design_difference(stack(knows), stack(blind), acc, n_boot=300)
    assert "latency" not in d and set(d) == {"supernet", "combined"}
    assert d["supernet"]["difference"] > 0.4 and d["supernet"]["ci"][0] > 0
    same = tool.design_difference(stack(knows), stack(knows), acc, n_boot=100)
    assert all(v["difference"] == 0 and v["ci"] == [0.0, 0.0] for v in same.values())
    with pytest.raises(ValueError, match="same networks"):
        tool.design_difference(stack(knows), {k: v[:, :20] for k, v in stack(blind).items()}, acc)


def test_space_ranking_with_random_searchs_proxy_on_a_tiny_run(tiny_run, tmp_path, monkeypatch):
    """The whole tool on a real (tiny) run: the supernet scores the ground-truth networks, --short-train
    trains each from scratch as random search does, and a second call reads both from its caches."""
    run, _ = tiny_run
    tool = _load_tool("space_ranking")
    gt = tmp_path / "gt"
    gt.mkdir()
    nets = [{"arch": a, "test_accuracy": 0.80 + 0.01 * i, "latency_ms_predicted": 1.0 + 0.1 * ((i * 3) % 5)}
            for i, a in enumerate(ARCHS)]
    (gt / "ground_truth.json").write_text(json.dumps({"networks": nets, "seeds": [0]}))
    argv = [str(run), "--ground-truth", str(gt), "--out", str(tmp_path / "sr"), "--short-train", "3"]
    assert tool.main(argv) == 0
    res = json.loads((tmp_path / "sr" / "space_ranking.json").read_text())
    assert {"short_train", "short_train_latency", "supernet_loss"} <= set(res["pooled"])
    assert len(res["runs"][0]["supernet_mean_loss"]) == len(ARCHS) and -1 <= res["runs"][0]["supernet_loss"] <= 1
    cache = json.loads(next((tmp_path / "sr").glob("short_train_3-*.json")).read_text())
    assert set(cache["accuracy"]) == set(ARCHS) and all(0 <= v <= 1 for v in cache["accuracy"].values())

    def no_training(*a, **k):
        raise AssertionError("retrained a cached network")

    monkeypatch.setattr(sys.modules["compare_search"], "short_train_accuracy", no_training)
    assert tool.main(argv) == 0
    assert json.loads((tmp_path / "sr" / "space_ranking.json").read_text())["pooled"] == res["pooled"]
    # against another design's output (here its own: every difference 0), and a wrong directory refused
    assert tool.main([str(run), "--ground-truth", str(gt), "--out", str(tmp_path / "sr2"), "--against", str(tmp_path / "sr")]) == 0
    versus = json.loads((tmp_path / "sr2" / "space_ranking.json").read_text())["against"]["difference"]
    assert versus and all(v["difference"] == 0 for v in versus.values())
    with pytest.raises(SystemExit, match="no space_ranking.json"):
        tool.main([str(run), "--ground-truth", str(gt), "--out", str(tmp_path / "sr3"), "--against", str(tmp_path)])
    with pytest.raises(SystemExit, match="--short-train"):
        tool.main([*argv[:-1], "-2"])


def test_arch_gradients_on_a_tiny_run(tiny_run, tmp_path):
    run, _ = tiny_run
    tool = _load_tool("arch_gradients")
    out = tmp_path / "g.json"
    assert tool.main([str(run), "--uniform", "--batches", "4", "--estimators", "st,reinforce2,layerwise2",
                      "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res["estimators"]) == {"st", "reinforce2", "layerwise2"}
    for est in res["estimators"].values():
        for layer in est["layers"].values():
            assert layer["noise"] >= 0 and "cosine_to_reinforce2" in layer
    assert set(res["hardware_grad_norm"]) == set(res["estimators"]["st"]["layers"])
    samples = [[np.ones(2)], [np.ones(2) * 3]]  # mean (2, 2), per-step noise sqrt(2 + 2)
    import torch

    s = tool.summarize([[torch.tensor(x[0])] for x in samples], ["l"])["l"]
    assert s["signal"] == pytest.approx(8 ** 0.5) and s["noise"] == pytest.approx(2.0)


def test_outcome_power_fits_the_space_and_sizes_the_effect():
    """The space fit recovers a known line and residual spread (less the means' noise); a better proxy
    needs less noise; power grows with the search's quality and the seeds, and random search forfeits
    when no network lies under the target."""
    tool = _load_tool("outcome_power")
    rng = np.random.default_rng(0)
    lat = rng.uniform(5.0, 20.0, 4000)
    acc = 0.88 + 0.01 * np.log(lat) + rng.normal(0.0, 0.003, lat.size) + rng.normal(0.0, 0.002 / np.sqrt(2), lat.size)
    fit = tool.fit_space(lat, acc, retrain_sd=0.002, n_seeds=2)
    assert fit.b == pytest.approx(0.01, abs=5e-4) and fit.a == pytest.approx(0.88, abs=2e-3)
    assert fit.sigma_res == pytest.approx(0.003, rel=0.05) and fit.noise_of_means == pytest.approx(0.002 / np.sqrt(2))
    with pytest.raises(ValueError, match="at least 4"):
        tool.fit_space([1, 2, 3], [0.1, 0.2, 0.3], 0.001, 1)

    space = np.linspace(5.0, 20.0, 200)
    sd_good = tool.proxy_sd_for_tau(0.45, fit, space, reps=60)
    sd_poor = tool.proxy_sd_for_tau(0.15, fit, space, reps=60)
    assert 0 < sd_good < sd_poor
    assert tool.proxy_sd_for_tau(0.999, fit, space, reps=20) == 0.0      # above the ceiling: a perfect proxy

    common = dict(fit=fit, lat_space=space, target_ms=12.0, pool=12, proxy_sd=sd_poor, hw_gap=0.05,
                  retrain_sd=0.002, sims=400)
    median = tool.simulate(hw_percentile=50, seeds=5, **common)
    oracle = tool.simulate(hw_percentile=99.9, seeds=5, **common)
    oracle_many = tool.simulate(hw_percentile=99.9, seeds=30, **common)
    assert median["gain_true"] < oracle["gain_true"]
    assert median["power"] < oracle["power"] < oracle_many["power"] and oracle_many["power"] > 0.9
    assert oracle_many["gain_for_80pct_power"] < oracle["gain_for_80pct_power"]
    assert median["random_forfeit_rate"] == 0.0
    none_under = tool.simulate(hw_percentile=99.9, seeds=5, **{**common, "target_ms": 4.0})
    assert none_under["random_forfeit_rate"] == 1.0 and none_under["power"] == 0.0


def test_outcome_power_refuses_bad_input(tmp_path):
    tool = _load_tool("outcome_power")
    with pytest.raises(SystemExit, match="no ground_truth.json"):
        tool.main(["--ground-truth", str(tmp_path)])
    with pytest.raises(SystemExit, match="quantiles"):
        tool.main(["--ground-truth", str(tmp_path), "--targets", "5"])
    (tmp_path / "ground_truth.json").write_text(json.dumps({"networks": [
        {"latency_ms_predicted": 5.0 + i, "test_accuracy": 0.9} for i in range(5)], "retrain_sd": None}))
    with pytest.raises(SystemExit, match="--retrain-sd"):
        tool.main(["--ground-truth", str(tmp_path)])
