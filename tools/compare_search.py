"""Search-quality study: the hardware-aware search against the alternatives a user has.

Methods, on one config (default: Fashion-MNIST on this CPU), one seed and one latency table:

* ``hw``     this package's search, once per latency setting in ``--hw`` (objective overrides);
* ``flops``  the same searches with MACs from the table in place of latency (``objective.cost=macs``);
* ``random`` random search at the same compute budget: architectures sampled from the space,
             each trained with a short schedule on the search split and scored on the
             architecture-validation split, as many as fit in the median wall time of one ``hw``
             search; the most accurate in each of ``--buckets`` latency buckets is kept;
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
from hwnas_darts.hardware.model import LatencyModel  # noqa: E402
from hwnas_darts.io import atomic_write_json, atomic_write_text  # noqa: E402
from hwnas_darts.lut import obtain_table  # noqa: E402
from hwnas_darts.network import build_network  # noqa: E402
from hwnas_darts.plots import hypervolume, pareto_front  # noqa: E402
from hwnas_darts.space import Arch, SearchSpace  # noqa: E402

_logger = logging.getLogger("compare_search")

DEFAULT_HW = [
    "objective.form=score objective.latency_weight=0.0",
    "objective.form=mnasnet",
    "objective.form=score objective.latency_weight=-0.07",
    "objective.form=score objective.latency_weight=-0.3",
]


def run_fit(out: Path, cfg_path: str | None, overrides: list[str], arch: str | None = None) -> dict[str, Any]:
    """One ``fit`` run (or reuse its finished metrics); returns metrics.json plus the wall time."""
    metrics = out / "metrics.json"
    if metrics.is_file():
        return json.loads(metrics.read_text())
    cmd = [sys.executable, "-m", "hwnas_darts.fit", "--out", str(out), "trainer.progress=false", *overrides]
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


def hand_designed(space: SearchSpace) -> dict[str, Arch]:
    """MobileNetV2-like (MBConv e6/e4, k3) and all-fused (fused MBConv e4/e2) in the space's vocabulary."""

    def pick(layer, prefs):
        for p in prefs:
            for op in layer.candidates:
                if op.startswith(p):
                    return op
        return layer.candidates[0]

    mbv2 = [pick(l, ["mb_k3_e6", "mb_k3_e4", "mb_k3_e3", "mb_"]) for l in space.layers]
    fused = [pick(l, ["fmb_k3_e4", "fmb_k3_e2", "fmb_"]) for l in space.layers]
    return {"mobilenetv2-like": Arch(tuple(mbv2), space_id=space.space_id),
            "all-fused": Arch(tuple(fused), space_id=space.space_id)}


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config")
    ap.add_argument("--out", default="runs/study")
    ap.add_argument("--methods", default="hw,flops,random,hand")
    ap.add_argument("--hw", action="append", help="objective overrides of one hw search (repeatable); "
                                                  "default: a latency-weight sweep")
    ap.add_argument("--flops", action="append", help="objective overrides of one FLOPs-proxy search (repeatable); "
                                                     "default: the hw settings with a nonzero latency weight")
    ap.add_argument("--buckets", type=int, default=3, help="latency buckets for random search")
    ap.add_argument("--random-steps", type=int, default=300, help="short-schedule steps per random architecture")
    ap.add_argument("--random-max", type=int, default=40, help="cap on random architectures")
    ap.add_argument("--random-budget", type=float, help="seconds for random search (default: median hw search time)")
    ap.add_argument("fit_overrides", nargs="*", help="overrides for every fit run (e.g. retrain.epochs=3)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    methods = args.methods.split(",")
    hw_settings = args.hw or DEFAULT_HW
    flops_settings = args.flops or [h for h in hw_settings if "latency_weight=0.0" not in h]
    base = list(args.fit_overrides)
    cfg = load_config(args.config, base)
    space = SearchSpace.from_config(cfg)
    settings = MeasureSettings.from_config(cfg.hardware)
    table, source = obtain_table(cfg, space, settings)  # every run reuses this (cached) table
    _logger.info("latency table: %s", source)
    model = LatencyModel(table, space)
    rows: list[dict[str, Any]] = []
    search_times = []

    for method in ("hw", "flops"):
        if method not in methods:
            continue
        for i, setting in enumerate(hw_settings if method == "hw" else flops_settings):
            ov = base + setting.split() + (["objective.cost=macs"] if method == "flops" else [])
            name = f"{method}{i}"
            _logger.info("%s: %s", name, " ".join(ov))
            m = run_fit(out / name, args.config, ov)
            search_times.append(m["search_seconds"])
            rows.append({"method": method, "name": name, "setting": setting, **{k: m[k] for k in (
                "test_accuracy", "latency_ms", "latency_ms_predicted", "macs", "params", "arch", "search_seconds",
                "retrain_seconds")}})

    if "random" in methods:
        rs_path = out / "random_search.json"
        if rs_path.is_file():
            rs = json.loads(rs_path.read_text())
        else:
            budget = args.random_budget or (statistics.median(search_times) if search_times else 300.0)
            dm = HwnasDataModule(cfg.data, cfg.seed, mode="search")
            dm.setup()
            rs = {"budget_seconds": budget, "steps": args.random_steps, "archs": []}
            t0 = time.perf_counter()
            seed = cfg.seed
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
            m = run_fit(out / name, args.config, base, arch=a["arch"])
            rows.append({"method": "random", "name": name, "setting": f"bucket {b} of {len(rs['archs'])} sampled",
                         **{k: m[k] for k in ("test_accuracy", "latency_ms", "latency_ms_predicted", "macs", "params",
                                              "arch", "retrain_seconds")}, "search_seconds": rs["seconds"]})

    if "hand" in methods:
        for label, arch in hand_designed(space).items():
            m = run_fit(out / label, args.config, base, arch=arch.to_string())
            rows.append({"method": "hand", "name": label, "setting": label, **{k: m[k] for k in (
                "test_accuracy", "latency_ms", "latency_ms_predicted", "macs", "params", "arch", "retrain_seconds")},
                "search_seconds": 0.0})

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


if __name__ == "__main__":
    sys.exit(main())
