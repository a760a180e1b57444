"""Search-quality study: the hardware-aware search against the alternatives a user has.

Methods, on one config (default: Fashion-MNIST on this CPU) and one latency table, for one seed or
(``--seeds 0,1,2``) for each seed in ``OUT/seedN`` with means, 95 % intervals and differences
paired by seed (``--targets 0.1,0.3,0.5``: one hw and one FLOPs-proxy search per latency target,
given as quantiles of the space's latency on this device). Finished runs are reused and
unfinished ones resumed, so an interrupted study continues where it stopped:

* ``hw``     this package's search, once per latency setting in ``--hw`` (objective overrides);
* ``flops``  the same searches with MACs from the table in place of latency (``objective.cost=macs``);
* ``random`` random search at the same compute budget: architectures sampled from the space,
             each trained with a short schedule on the search split and scored on the
             architecture-validation split, as many as fit in the median time one ``hw`` run
             spent choosing (search + derive, measured); the most accurate in each of
             ``--buckets`` latency buckets is kept;
* ``hand``   two hand-designed networks in the space's vocabulary: MobileNetV2-like (MBConv
             everywhere) and all-fused-MBConv.

Every final network goes through the same ``fit`` retraining (same schedule, same seed), test
evaluation and profiling (latency measured on the device, normalised like the table). Output:
``study.json``, ``study.md`` (table + hypervolumes) and ``study.png`` (accuracy vs latency,
each method's Pareto front).

    python tools/compare_search.py --out runs/study
    python tools/compare_search.py --config configs/tiny.yaml --out /tmp/s --hw "objective.latency_weight=-0.3" \\
        --random-max 3 fit-overrides: retrain.steps_per_epoch=4
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from hwnas_darts.config import load_config  # noqa: E402
from hwnas_darts.data import HwnasDataModule, cycle_batches, make_loader  # noqa: E402
from hwnas_darts.hardware.measure import MeasureSettings  # noqa: E402
from hwnas_darts.hardware.model import LatencyModel, measure_arch_timings  # noqa: E402
from hwnas_darts.io import atomic_write_json, atomic_write_text  # noqa: E402
from hwnas_darts.lut import obtain_model  # noqa: E402
from hwnas_darts.network import build_network  # noqa: E402
from hwnas_darts.plots import hypervolume, pareto_front  # noqa: E402
from hwnas_darts.space import Arch, SearchSpace  # noqa: E402
from hwnas_darts.stats import mean_interval, paired_interval  # noqa: E402

_logger = logging.getLogger("compare_search")

DEFAULT_HW = [
    "objective.form=score objective.latency_weight=0.0",
    "objective.form=mnasnet",
    "objective.form=score objective.latency_weight=-0.07",
    "objective.form=score objective.latency_weight=-0.3",
]


def run_fit(out: Path, cfg_path: str | None, overrides: list[str], arch: str | None = None,
            missing: list[str] | None = None) -> dict[str, Any] | None:
    """One ``fit`` run (or reuse its finished metrics); returns metrics.json plus the wall time.
    ``missing`` (report mode): start nothing; an unfinished run is appended to it and None returned."""
    metrics = out / "metrics.json"
    if metrics.is_file():
        return json.loads(metrics.read_text())
    if missing is not None:
        missing.append(str(out))
        return None
    # a study compares accuracy and latency: the exports (and their verification processes) are skipped
    cmd = [sys.executable, "-m", "hwnas_darts.fit", "--out", str(out), "trainer.progress=false",
           "export.torchscript=false", "export.program=false", *overrides]
    if cfg_path:
        cmd[3:3] = ["--config", cfg_path]
    if arch:
        cmd += ["--arch", arch]
    if (out / "state.json").is_file():
        cmd = [sys.executable, "-m", "hwnas_darts.fit", "--resume", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"fit failed for {out}:\n{proc.stderr[-2000:]}")
    m = json.loads(metrics.read_text())
    m["wall_seconds"] = time.perf_counter() - t0
    atomic_write_json(metrics, m)
    return m


def short_train_accuracy(space: SearchSpace, arch: Arch, dm: HwnasDataModule, steps: int, seed: int) -> float:
    """Train ``arch`` from scratch for ``steps`` on the weight split; accuracy on the validation split."""
    torch.manual_seed(seed)
    net = build_network(space, arch).train().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps, pct_start=0.2)
    loader = make_loader(dm.weight_dataset(), dm.cfg.batch_size, True, seed, drop_last=True)
    for x, y in cycle_batches(loader, steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y, label_smoothing=0.1).backward()
        opt.step()
        sched.step()
    net.eval()
    correct = total = 0
    with torch.inference_mode():
        for x, y in dm.archval_dataloader():
            correct += int((net(x).argmax(1) == y).sum())
            total += len(y)
    return correct / total


def hand_designed(space: SearchSpace, plain: bool = False) -> dict[str, Arch]:
    """MobileNetV2-like (MBConv e6/e4, k3) and all-fused (fused MBConv e4/e2) in the space's vocabulary;
    ``plain``: also the plain conv-BN network (see :func:`plain_cnn`)."""

    def pick(layer, prefs):
        for p in prefs:
            for op in layer.candidates:
                if op.startswith(p):
                    return op
        return layer.candidates[0]

    mbv2 = [pick(l, ["mb_k3_e6", "mb_k3_e4", "mb_k3_e3", "mb_"]) for l in space.layers]
    fused = [pick(l, ["fmb_k3_e4", "fmb_k3_e2", "fmb_"]) for l in space.layers]
    out = {"mobilenetv2-like": Arch(tuple(mbv2), space_id=space.space_id),
           "all-fused": Arch(tuple(fused), space_id=space.space_id)}
    if plain:
        out["plain-cnn"] = plain_cnn(space)
    return out


def plain_cnn(space: SearchSpace) -> Arch:
    """The Fashion-MNIST benchmark table's conv-BN-pool network in the space's vocabulary: a 3x3
    conv-BN-ReLU wherever the shape changes (a strided conv in place of conv + pooling), skip elsewhere,
    so the network is the stem's conv, one conv per downsampling and the head."""
    ops = []
    for layer in space.layers:
        if "skip" in layer.candidates:
            ops.append("skip")
            continue
        conv = [op for op in layer.candidates if op.startswith("conv_k3_relu")] or \
            [op for op in layer.candidates if op.startswith("conv_")]
        if not conv:
            raise SystemExit(f"layer {layer.name} offers no plain conv ({', '.join(layer.candidates)}); "
                             "the plain-CNN reference needs conv_k3 where the shape changes")
        ops.append(conv[0])
    return Arch(tuple(ops), space_id=space.space_id)


def plot(points: dict[str, list[tuple[float, float, str]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    markers = {"hw": "o", "flops": "s", "random": "^", "hand": "D"}
    for method, pts in points.items():
        if not pts:
            continue
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=markers.get(method, "x"), s=50, label=method)
        front = pareto_front([(p[0], p[1]) for p in pts])
        ax.plot([p[0] for p in front], [p[1] for p in front], "--", lw=1)
        for lat, acc, label in pts:
            ax.annotate(label, (lat, acc), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("measured latency (ms, batch as configured)")
    ax.set_ylabel("test accuracy after retraining")
    ax.set_title("accuracy vs measured latency, Pareto front per method")
    ax.legend()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def study_seed(args, seed: int | None, out: Path, base: list[str], space: SearchSpace, cfg, model: LatencyModel,
               hw_settings: list[str], flops_settings: list[str],
               missing: list[str] | None = None) -> list[dict[str, Any]]:
    """Every method of the study for one seed (finished runs are reused, unfinished ones resumed).
    ``missing`` (report mode, ``--report``): nothing is run; unfinished runs are listed there and left out."""
    methods = args.methods.split(",")
    base = base + ([f"seed={seed}"] if seed is not None else [])
    seed = cfg.seed if seed is None else seed
    rows: list[dict[str, Any]] = []
    budgets = []
    keys = ("test_accuracy", "latency_ms", "latency_ms_predicted", "macs", "params", "arch", "retrain_seconds",
            "intensity", "efficiency", "latency_target_ms")
    for method in ("hw", "flops"):
        if method not in methods:
            continue
        for i, setting in enumerate(hw_settings if method == "hw" else flops_settings):
            ov = base + setting.split() + (["objective.cost=macs"] if method == "flops" else [])
            name = f"{method}{i}"
            _logger.info("seed %s %s: %s", seed, name, " ".join(ov))
            m = run_fit(out / name, args.config, ov, missing=missing)
            if m is None:
                continue
            # the budget random search gets: what the hw search spent choosing (search + derive)
            budgets.append(m["search_seconds"] + (m.get("derive_seconds") or 0.0))
            rule = _noise_rule(out / name)
            rows.append({"method": method, "name": name, "setting": setting, "seed": seed,
                         **{k: m.get(k) for k in keys}, "search_seconds": m["search_seconds"],
                         "derive_seconds": m.get("derive_seconds"),
                         "chosen_by_accuracy_noise_rule": None if rule is None else bool(rule["differs"]),
                         "dir": str(out / name)})
            if args.rule_picks and rule is not None and rule.get("choice") not in (None, m["arch"]):
                # the rule's pick, retrained with the same recipe and seed: what the rule would have cost or won;
                # under the search's own objective, so its metrics state that search's target (not the config's)
                r = run_fit(out / f"{name}_rule", args.config, ov, arch=rule["choice"], missing=missing)
                if r is not None:
                    rows[-1]["rule_pick"] = {**{k: r.get(k) for k in keys}, "dir": str(out / f"{name}_rule")}

    if "random" in methods:
        rs_path = out / "random_search.json"
        if rs_path.is_file():
            rs = json.loads(rs_path.read_text())
        elif missing is not None:
            missing.append(str(rs_path))
            rs = {"archs": [], "seconds": None}
        else:
            budget = args.random_budget or (statistics.median(budgets) if budgets else 300.0)
            dm = HwnasDataModule(cfg.data, seed, mode="search")
            dm.setup()
            rs = {"budget_seconds": budget, "steps": args.random_steps, "archs": []}
            t0 = time.perf_counter()
            for arch in space.sample_unique(args.random_max, seed=seed + 4242):
                if time.perf_counter() - t0 > budget:
                    break
                acc = short_train_accuracy(space, arch, dm, args.random_steps, seed)
                rs["archs"].append({"arch": arch.to_string(), "val_accuracy": acc, "latency_ms_predicted": model.predict(arch)})
                _logger.info("random %d: %s val acc %.4f (%.0f s used)", len(rs["archs"]), arch, acc, time.perf_counter() - t0)
            rs["seconds"] = time.perf_counter() - t0
            atomic_write_json(rs_path, rs)
        lats = sorted(a["latency_ms_predicted"] for a in rs["archs"])
        edges = [lats[int(len(lats) * k / args.buckets)] for k in range(1, args.buckets)] if lats else []
        best: dict[int, dict] = {}
        for a in rs["archs"]:
            b = sum(a["latency_ms_predicted"] >= e for e in edges)
            if b not in best or a["val_accuracy"] > best[b]["val_accuracy"]:
                best[b] = a
        for b, a in sorted(best.items()):
            name = f"random{b}"
            m = run_fit(out / name, args.config, base, arch=a["arch"], missing=missing)
            if m is None:
                continue
            rows.append({"method": "random", "name": name, "setting": f"bucket {b}", "seed": seed,
                         **{k: m.get(k) for k in keys}, "search_seconds": rs["seconds"],
                         "sampled": len(rs["archs"]), "dir": str(out / name)})

    if "hand" in methods:
        for label, arch in hand_designed(space).items():
            m = run_fit(out / label, args.config, base, arch=arch.to_string(), missing=missing)
            if m is None:
                continue
            rows.append({"method": "hand", "name": label, "setting": label, "seed": seed, **{k: m.get(k) for k in keys},
                         "search_seconds": 0.0, "dir": str(out / label)})
    return rows


def remeasure(rows: list[dict[str, Any]], repeats: int, space: SearchSpace, settings: MeasureSettings, table,
              report: bool = False) -> None:
    """Measure every network of the study again, ``repeats`` passes after all runs finished: each pass
    measures all networks together, the way a run's profile stage does (``measure_arch_timings``:
    ``hardware.processes`` fresh processes, anchored to the table's calibration networks), so one
    network's repeats lie minutes apart and in other processes than its in-run measurement. Each row
    (and rule pick) then reports the median of its in-run and re-measured latencies as ``latency_ms``,
    every measurement in ``latency_ms_all`` and the in-run one in ``latency_ms_in_run``. Finished
    passes (``RUN/remeasure{k}.json``) are reused; ``report``: measure nothing, use those present."""
    recs = [r for r in rows if r.get("dir")] + [r["rule_pick"] for r in rows if r.get("rule_pick", {}).get("dir")]
    for k in range(1, repeats + 1):
        todo = [rec for rec in recs if not (Path(rec["dir"]) / f"remeasure{k}.json").is_file()]
        if not todo or report:
            continue
        _logger.info("re-measure pass %d/%d: %d networks", k, repeats, len(todo))
        info: dict[str, Any] = {}
        timings = measure_arch_timings(space, [Arch.from_string(rec["arch"], space_id=space.space_id) for rec in todo],
                                       settings, table, info=info)
        when = time.strftime("%Y-%m-%dT%H:%M:%S")
        for rec, t in zip(todo, timings):
            atomic_write_json(Path(rec["dir"]) / f"remeasure{k}.json",
                              {"latency_ms": t.median_ms, "latency_ms_processes": t.process_medians_ms,
                               "anchor_factor": info.get("anchor_factor"), "pass": k, "networks_in_pass": len(todo),
                               "measured_at": when})
    for rec in recs:
        extra = [json.loads(p.read_text())["latency_ms"] for k in range(1, repeats + 1)
                 if (p := Path(rec["dir"]) / f"remeasure{k}.json").is_file()]
        if extra:
            rec["latency_ms_in_run"] = rec["latency_ms"]
            rec["latency_ms_all"] = [rec["latency_ms"], *extra]
            rec["latency_ms"] = statistics.median(rec["latency_ms_all"])


def _noise_rule(run: Path) -> dict[str, Any] | None:
    """What derive's accuracy-noise rule did in this run (``choice``, ``differs``; None: not recorded)."""
    try:
        return json.loads((run / "candidates.json").read_text()).get("accuracy_noise_rule") or None
    except FileNotFoundError:
        return None


def op_mix(archs: list[str]) -> str:
    """Which ops a set of architectures uses: layer count per op family (``fmb``, ``mb``, ``conv``,
    ``s2dconv``, ``s2d``, ``skip``) and per activation, most used first, e.g. ``mb 7, fmb 5, skip 3; swish 9, relu 6``."""
    fam: dict[str, int] = {}
    act: dict[str, int] = {}
    for a in archs:
        for op in a.split("-"):
            parts = op.split("_")
            fam[parts[0]] = fam.get(parts[0], 0) + 1
            if len(parts) > 1 and not parts[-1][-1].isdigit():
                act[parts[-1]] = act.get(parts[-1], 0) + 1

    def fmt(d: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(d.items(), key=lambda kv: (-kv[1], kv[0])))

    return fmt(fam) + ("; " + fmt(act) if act else "")


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (method, setting): mean and 95 % interval of test accuracy and measured latency over seeds;
    the mean operational intensity and execution efficiency and the op mix of the found networks."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["setting"]), []).append(r)
    out = []
    for (method, setting), rs in groups.items():
        acc, lo_a, hi_a = mean_interval([r["test_accuracy"] for r in rs])
        lat, lo_l, hi_l = mean_interval([r["latency_ms"] for r in rs])
        out.append({"method": method, "setting": setting, "seeds": sorted(r["seed"] for r in rs), "n": len(rs),
                    "test_accuracy": acc, "test_accuracy_ci": [lo_a, hi_a], "latency_ms": lat,
                    "latency_ms_ci": [lo_l, hi_l], "op_mix": op_mix([r["arch"] for r in rs]),
                    "intensity": _mean_of(rs, "intensity"), "efficiency": _mean_of(rs, "efficiency"),
                    "distinct_archs": len({r["arch"] for r in rs})})
    return sorted(out, key=lambda g: (g["method"], g["latency_ms"]))


def _mean_of(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.fmean(vals) if vals else None


def paired_tables(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per hw setting: hw minus FLOPs proxy (same setting index) and hw minus the random pick nearest
    in measured latency, paired by seed, with the mean difference and its 95 % interval."""
    by = {(r["method"], r["name"], r["seed"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    out = []
    for name in sorted({r["name"] for r in rows if r["method"] == "hw"}):
        idx = name[2:]
        for other in ("flops", "random"):
            d_acc, d_lat = [], []
            for s in seeds:
                hw = by.get(("hw", name, s))
                if hw is None:
                    continue
                if other == "flops":
                    o = by.get(("flops", f"flops{idx}", s))
                else:
                    cands = [r for r in rows if r["method"] == "random" and r["seed"] == s]
                    o = min(cands, key=lambda r: abs(r["latency_ms"] - hw["latency_ms"])) if cands else None
                if o is not None:
                    d_acc.append(hw["test_accuracy"] - o["test_accuracy"])
                    d_lat.append(hw["latency_ms"] - o["latency_ms"])
            if d_acc:
                a = paired_interval(d_acc, [0.0] * len(d_acc))
                lt = paired_interval(d_lat, [0.0] * len(d_lat))
                out.append({"hw": name, "vs": other, "n": len(d_acc), "d_accuracy": a[0], "d_accuracy_ci": [a[1], a[2]],
                            "d_latency_ms": lt[0], "d_latency_ms_ci": [lt[1], lt[2]]})
    return out


def paired_against(rows: list[dict[str, Any]], baseline: str) -> list[dict[str, Any]]:
    """Every hw run minus the hw run named ``baseline`` (an ablation's reference setting), paired by
    seed: test accuracy, measured latency, operational intensity and execution efficiency, each with
    its mean difference and 95 % interval, and in how many seeds the search found the baseline's network."""
    by = {(r["name"], r["seed"]): r for r in rows if r["method"] == "hw"}
    if not any(name == baseline for name, _ in by):
        raise SystemExit(f"--paired-against {baseline}: no finished hw run of that name "
                         f"(hw runs: {', '.join(sorted({n for n, _ in by})) or 'none'})")
    out = []
    for name in sorted({n for n, _ in by if n != baseline}):
        pairs = [(by[(name, s)], by[(baseline, s)]) for n, s in sorted(by) if n == name and (baseline, s) in by]
        if not pairs:
            continue
        rec: dict[str, Any] = {"hw": name, "vs": baseline, "setting": pairs[0][0]["setting"], "n": len(pairs),
                               "seeds": [a["seed"] for a, _ in pairs],
                               "same_arch": sum(a["arch"] == b["arch"] for a, b in pairs)}
        for key in ("test_accuracy", "latency_ms", "intensity", "efficiency"):
            if all(a.get(key) is not None and b.get(key) is not None for a, b in pairs):
                m, lo, hi = paired_interval([a[key] for a, _ in pairs], [b[key] for _, b in pairs])
                rec[f"d_{key}"], rec[f"d_{key}_ci"] = m, [lo, hi]
        out.append(rec)
    return out


_SHORT = (("objective.", ""), ("form=mnasnet", ""), ("target_quantile=", "q"), ("intensity_weight=", "theta="),
          ("efficiency_weight=", "gamma="), ("latency_weight=", "w="), ("latency_target=", "target="))


def short_setting(setting: str) -> str:
    """A plot label for a setting: ``objective.form=mnasnet objective.target_quantile=0.3
    objective.intensity_weight=0.2`` -> ``q0.3 theta=0.2``."""
    for a, b in _SHORT:
        setting = setting.replace(a, b)
    return " ".join(setting.split()) or "default"


def plot_multi(groups: list[dict[str, Any]], path: Path, rows: list[dict[str, Any]] | None = None) -> None:
    """Mean and 95 % interval per method and setting; with ``rows``, every seed's network as a faint
    point too, and the axes fitted to those points (a t-interval over 2-3 seeds is wide: it is clipped
    at the frame rather than shrinking the points into a corner)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    markers = {"hw": "o", "flops": "s", "random": "^", "hand": "D"}
    for k, method in enumerate(sorted({g["method"] for g in groups})):
        gs = [g for g in groups if g["method"] == method]
        color = f"C{k}"
        if rows:
            pts = [(r["latency_ms"], r["test_accuracy"]) for r in rows if r["method"] == method]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=markers.get(method, "x"), s=16, alpha=0.5,
                       color=color, linewidths=0)

        def err(key, ci):
            return [[g[key] - g[ci][0] if g[ci][0] == g[ci][0] else 0 for g in gs],
                    [g[ci][1] - g[key] if g[ci][1] == g[ci][1] else 0 for g in gs]]

        ax.errorbar([g["latency_ms"] for g in gs], [g["test_accuracy"] for g in gs],
                    xerr=err("latency_ms", "latency_ms_ci"), yerr=err("test_accuracy", "test_accuracy_ci"),
                    fmt=markers.get(method, "x"), capsize=3, elinewidth=0.8, label=method, color=color)
        for g in gs:
            ax.annotate(short_setting(g["setting"]), (g["latency_ms"], g["test_accuracy"]), fontsize=6,
                        xytext=(4, 4), textcoords="offset points")
    if rows:
        lat = [r["latency_ms"] for r in rows]
        acc = [r["test_accuracy"] for r in rows]
        pad_l, pad_a = 0.08 * (max(lat) - min(lat) or 1.0), 0.15 * (max(acc) - min(acc) or 0.01)
        ax.set_xlim(max(0.0, min(lat) - pad_l), max(lat) + pad_l)
        ax.set_ylim(min(acc) - pad_a, max(acc) + pad_a)
    ax.set_xlabel("measured latency (ms), mean and 95 % interval over seeds" + ("; faint: each seed" if rows else ""))
    ax.set_ylabel("test accuracy after retraining, mean and 95 % interval")
    ax.set_title("search methods across seeds")
    ax.legend()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _ci(v: list[float], d: int = 4) -> str:
    return "-" if v[0] != v[0] else f"[{v[0]:.{d}f}, {v[1]:.{d}f}]"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config")
    ap.add_argument("--out", default="runs/study")
    ap.add_argument("--methods", default="hw,flops,random,hand")
    ap.add_argument("--hw", action="append", help="objective overrides of one hw search (repeatable); "
                                                  "default: a latency-weight sweep")
    ap.add_argument("--flops", action="append", help="objective overrides of one FLOPs-proxy search (repeatable); "
                                                     "default: the hw settings with a nonzero latency weight")
    ap.add_argument("--targets", help="latency targets as quantiles of the space on this device, e.g. 0.1,0.3,0.5: "
                                      "one hw and one FLOPs-proxy search each (replaces the default --hw sweep)")
    ap.add_argument("--seeds", help="comma-separated seeds: the whole study once per seed (in OUT/seedN), then "
                                    "means, 95 %% intervals and paired differences")
    ap.add_argument("--buckets", type=int, default=3, help="latency buckets for random search")
    ap.add_argument("--random-steps", type=int, default=300, help="short-schedule steps per random architecture")
    ap.add_argument("--random-max", type=int, default=40, help="cap on random architectures")
    ap.add_argument("--random-budget", type=float, help="seconds for random search (default: the median hw run's "
                                                        "search + derive time)")
    ap.add_argument("--rule-picks", action="store_true", help="also retrain the candidate derive's accuracy-noise "
                                                                "rule picks where it differs from the score's choice, "
                                                                "and compare the two (multi-seed report)")
    ap.add_argument("--report", action="store_true", help="start nothing: aggregate the finished runs of the "
                    "given seeds (a study in progress: the unfinished runs are named in study.md and left out)")
    ap.add_argument("--paired-against", metavar="RUN", help="also compare every hw run with this one (e.g. hw0, an "
                    "ablation's reference setting), paired by seed: accuracy, latency, I and E differences")
    ap.add_argument("--remeasure", type=int, default=0, metavar="N", help="measure every network N more times, each in "
                    "a fresh process, after all runs finished (interleaved passes); latencies become the median of all "
                    "measurements and their spread is reported as a noise floor")
    ap.add_argument("fit_overrides", nargs="*", help="overrides for every fit run (e.g. retrain.epochs=3)")
    args = ap.parse_args(argv)
    if (args.report or args.paired_against or args.remeasure) and not args.seeds:
        raise SystemExit("--report, --paired-against and --remeasure work on a multi-seed study: give --seeds too")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.targets:
        qs = [float(q) for q in args.targets.split(",")]
        hw_settings = args.hw or [f"objective.form=mnasnet objective.target_quantile={q}" for q in qs]
    else:
        hw_settings = args.hw or DEFAULT_HW
    flops_settings = args.flops or [h for h in hw_settings if "latency_weight=0.0" not in h]
    names = [f"hw{i}" for i in range(len(hw_settings))]
    if args.paired_against and ("hw" not in args.methods.split(",") or args.paired_against not in names):
        raise SystemExit(f"--paired-against {args.paired_against}: not an hw run of this study "
                         f"(with --methods hw, its hw runs are {', '.join(names)}, one per --hw setting in order)")
    base = list(args.fit_overrides)
    cfg = load_config(args.config, base)
    space = SearchSpace.from_config(cfg)
    settings = MeasureSettings.from_config(cfg.hardware)
    model, table, _ = obtain_model(cfg, space)  # every run reuses this (cached) table
    if args.seeds:
        seeds = [int(s) for s in args.seeds.split(",")]
        missing: list[str] | None = [] if args.report else None
        rows = [r for s in seeds for r in study_seed(args, s, out / f"seed{s}", base, space, cfg, model, hw_settings,
                                                     flops_settings, missing)]
        if args.remeasure:
            remeasure(rows, args.remeasure, space, settings, table, report=args.report)
        return write_multi(out, rows, table, args.paired_against, missing)
    rows = study_seed(args, None, out, base, space, cfg, model, hw_settings, flops_settings)
    ref_lat = 1.1 * max(r["latency_ms"] for r in rows)
    ref_acc = min(r["test_accuracy"] for r in rows) - 0.01
    hv = {}
    points: dict[str, list] = {}
    for r in rows:
        points.setdefault(r["method"], []).append((r["latency_ms"], r["test_accuracy"], r["name"]))
    for method, pts in points.items():
        hv[method] = hypervolume([(p[0], p[1]) for p in pts], ref_lat, ref_acc)
    plot(points, out / "study.png")
    lines = ["| method | run | setting | test acc | latency ms | predicted ms | MACs | params | search s | arch |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["method"], r["latency_ms"])):
        lines.append(f"| {r['method']} | {r['name']} | {r['setting']} | {r['test_accuracy']:.4f} | {r['latency_ms']:.2f} | "
                     f"{r['latency_ms_predicted']:.2f} | {r['macs']:,} | {r['params']:,} | {r.get('search_seconds') or 0:.0f} | "
                     f"`{r['arch']}` |")
    lines += ["", f"Hypervolume (reference point: {ref_lat:.2f} ms, accuracy {ref_acc:.4f}; larger is better):", ""]
    lines += [f"- {m}: {v:.4f}" for m, v in sorted(hv.items(), key=lambda kv: -kv[1])]
    atomic_write_text(out / "study.md", "\n".join(lines) + "\n")
    atomic_write_json(out / "study.json", {"rows": rows, "hypervolume": hv, "reference": [ref_lat, ref_acc],
                                           "table": str(table.path), "device": table.device})
    print("\n".join(lines))
    return 0




def _spreads(groups: list[list[float]]) -> tuple[int, float | None, float | None]:
    """Relative spread max/min - 1 of each group of two or more latencies: (groups, median, max)."""
    sp = sorted(max(g) / min(g) - 1 for g in groups if len(g) > 1)
    return len(sp), (statistics.median(sp) if sp else None), (sp[-1] if sp else None)


def noise_floors(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The study's own noise, from networks that occur more than once: the same architecture measured
    in different runs (latency: relative spread max/min - 1 per architecture), the same network
    re-measured (``--remeasure``: the same spread over its measurements), and the same architecture
    retrained with different seeds (accuracy: pooled standard deviation over seeds)."""
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["arch"], []).append(r)
    lat_n, lat_med, lat_max = _spreads([[r["latency_ms"] for r in rs] for rs in by.values()])
    variances, dof = [], 0
    for rs in by.values():
        per_seed = {r["seed"]: r["test_accuracy"] for r in rs}  # same seed, same arch: the same retraining
        if len(per_seed) > 1:
            variances.append((statistics.variance(per_seed.values()), len(per_seed) - 1))
            dof += len(per_seed) - 1
    acc_sd = (sum(v * d for v, d in variances) / dof) ** 0.5 if dof else None
    again_n, again_med, again_max = _spreads([r.get("latency_ms_all", []) for r in rows])
    return {"remeasured": again_n, "remeasure_spread_median": again_med, "remeasure_spread_max": again_max,
            "remeasure_n": max((len(r.get("latency_ms_all", [])) for r in rows), default=0),
            "latency_archs": lat_n, "latency_spread_median": lat_med, "latency_spread_max": lat_max,
            "accuracy_archs": len(variances), "accuracy_seed_sd": acc_sd, "accuracy_dof": dof}


def rule_comparison(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Score's choice vs the accuracy-noise rule's retrained pick, paired per search, with 95 % intervals."""
    pairs = [{"name": r["name"], "seed": r["seed"], "score_accuracy": r["test_accuracy"], "score_ms": r["latency_ms"],
              "rule_accuracy": r["rule_pick"]["test_accuracy"], "rule_ms": r["rule_pick"]["latency_ms"],
              "d_accuracy": r["rule_pick"]["test_accuracy"] - r["test_accuracy"],
              "d_ms": r["rule_pick"]["latency_ms"] - r["latency_ms"]} for r in rows if r.get("rule_pick")]
    if not pairs:
        return None
    a = paired_interval([c["rule_accuracy"] for c in pairs], [c["score_accuracy"] for c in pairs])
    lt = paired_interval([c["rule_ms"] for c in pairs], [c["score_ms"] for c in pairs])
    return {"n": len(pairs), "pairs": pairs, "d_accuracy": a[0], "d_accuracy_ci": [a[1], a[2]],
            "d_ms": lt[0], "d_ms_ci": [lt[1], lt[2]]}


def write_multi(out: Path, rows: list[dict[str, Any]], table, baseline: str | None = None,
                missing: list[str] | None = None) -> int:
    """``study.json``, ``study.md`` and ``study.png`` of a multi-seed study (``baseline``: also every hw
    run against that one, paired by seed; ``missing``: a report of a study in progress, naming what is unfinished)."""
    if not rows:
        raise SystemExit(f"no finished run under {out}: nothing to report")
    groups, paired, noise = aggregate(rows), paired_tables(rows), noise_floors(rows)
    ablation = paired_against(rows, baseline) if baseline else []
    plot_multi(groups, out / "study.png", rows)
    lines = []
    if missing:
        lines += [f"**Interim report**: {len(missing)} run(s) not finished and left out: "
                  + ", ".join(f"`{Path(m).parent.name}/{Path(m).name}`" for m in missing) + ".", ""]
    lines += ["| method | setting | seeds | test acc (mean) | 95 % interval | latency ms (mean) | 95 % interval |",
             "|---|---|---|---|---|---|---|"]
    for g in groups:
        lines.append(f"| {g['method']} | {g['setting']} | {','.join(map(str, g['seeds']))} | {g['test_accuracy']:.4f} | "
                     f"{_ci(g['test_accuracy_ci'])} | {g['latency_ms']:.2f} | {_ci(g['latency_ms_ci'], 2)} |")
    if paired:  # an hw-only study (an ablation) has nothing to pair against here
        lines += ["", "Paired by seed (hw minus the other; an interval that contains 0 is no difference):", "",
                  "| hw run | vs | seeds | d test acc | 95 % interval | d latency ms | 95 % interval |",
                  "|---|---|---|---|---|---|---|"]
        for p in paired:
            lines.append(f"| {p['hw']} | {p['vs']} | {p['n']} | {p['d_accuracy']:+.4f} | {_ci(p['d_accuracy_ci'])} | "
                         f"{p['d_latency_ms']:+.2f} | {_ci(p['d_latency_ms_ci'], 2)} |")
    if ablation:
        lines += ["", f"Against {baseline} (that setting minus {baseline}, paired by seed; an interval that contains 0 "
                      "is no difference):", "",
                  "| hw run | setting | seeds | same network | d test acc | 95 % interval | d latency ms | 95 % interval "
                  "| d I | d E |", "|---|---|---|---|---|---|---|---|---|---|"]
        for p in ablation:
            di = f"{p['d_intensity']:+.2f} {_ci(p['d_intensity_ci'], 2)}" if "d_intensity" in p else "-"
            de = f"{p['d_efficiency']:+.3f} {_ci(p['d_efficiency_ci'], 3)}" if "d_efficiency" in p else "-"
            lines.append(f"| {p['hw']} | {short_setting(p['setting'])} | {p['n']} | {p['same_arch']} of {p['n']} | "
                         f"{p['d_test_accuracy']:+.4f} | {_ci(p['d_test_accuracy_ci'])} | {p['d_latency_ms']:+.2f} | "
                         f"{_ci(p['d_latency_ms_ci'], 2)} | {di} | {de} |")
    lines += ["", "What the found networks are (per method and setting, over its seeds): mean operational intensity "
                  "(FLOP/byte), mean execution efficiency (achieved / roofline), distinct architectures, layers per op "
                  "family and activation:", "",
              "| method | setting | I | E | distinct | ops |", "|---|---|---|---|---|---|"]
    for g in groups:
        i = "-" if g.get("intensity") is None else f"{g['intensity']:.2f}"
        e = "-" if g.get("efficiency") is None else f"{g['efficiency']:.3f}"
        lines.append(f"| {g['method']} | {g['setting']} | {i} | {e} | {g['distinct_archs']} of {g['n']} | {g['op_mix']} |")
    lines += ["", "Noise floors of this study (networks that occur more than once):"]
    if noise["latency_archs"]:
        lines.append(f"- latency: the same architecture measured in different runs ({noise['latency_archs']} "
                     f"architectures) differs by {100 * noise['latency_spread_median']:.1f} % (median; max "
                     f"{100 * noise['latency_spread_max']:.1f} %) between its fastest and slowest measurement;")
    else:
        lines.append("- latency: no architecture was measured twice;")
    if noise["remeasured"]:
        lines.append(f"- latency: each network measured up to {noise['remeasure_n']} times (in its run and again in fresh processes, "
                     f"`--remeasure`; the tables use the median): {100 * noise['remeasure_spread_median']:.1f} % between the "
                     f"fastest and slowest measurement (median over {noise['remeasured']} networks; max "
                     f"{100 * noise['remeasure_spread_max']:.1f} %);")
    if noise["accuracy_seed_sd"] is not None:
        lines.append(f"- accuracy: the same architecture retrained with different seeds ({noise['accuracy_archs']} "
                     f"architectures, {noise['accuracy_dof']} degrees of freedom) has a standard deviation of "
                     f"{noise['accuracy_seed_sd']:.4f} (pooled); differences of one run against another below about "
                     f"{2.8 * noise['accuracy_seed_sd']:.4f} (2.8 sd) are within this noise.")
    else:
        lines.append("- accuracy: no architecture was retrained with two seeds.")
    rule = [r["chosen_by_accuracy_noise_rule"] for r in rows if r.get("chosen_by_accuracy_noise_rule") is not None]
    if rule:
        lines += ["", f"derive's accuracy-noise rule would have chosen another candidate in {sum(rule)} of "
                      f"{len(rule)} searches."]
    rule_cmp = rule_comparison(rows)
    if rule_cmp:
        lines += ["", "Where the rule chose differently, its pick retrained with the same recipe and seed "
                      "(rule minus score's choice; `--rule-picks`):", "",
                  "| run | seed | score's choice: acc | ms | rule's pick: acc | ms | d acc | d ms |", "|---|---|---|---|---|---|---|---|"]
        for c in rule_cmp["pairs"]:
            lines.append(f"| {c['name']} | {c['seed']} | {c['score_accuracy']:.4f} | {c['score_ms']:.2f} | "
                         f"{c['rule_accuracy']:.4f} | {c['rule_ms']:.2f} | {c['d_accuracy']:+.4f} | {c['d_ms']:+.2f} |")
        lines += ["", f"Mean over {rule_cmp['n']} searches: d accuracy {rule_cmp['d_accuracy']:+.4f} "
                      f"{_ci(rule_cmp['d_accuracy_ci'])}, d latency {rule_cmp['d_ms']:+.2f} ms "
                      f"{_ci(rule_cmp['d_ms_ci'], 2)} (95 % intervals)."]
    atomic_write_text(out / "study.md", "\n".join(lines) + "\n")
    atomic_write_json(out / "study.json", {"rows": rows, "groups": groups, "paired": paired, "noise": noise,
                                           "rule_picks": rule_cmp, "paired_against": ablation,
                                           "missing": missing or [],
                                           "table": str(table.path), "device": table.device})
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
