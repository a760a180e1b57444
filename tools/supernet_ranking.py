"""Does the supernet rank candidates right? Kendall tau between weight-sharing and retrained accuracy.

Derive chooses among candidates by their accuracy with the supernet's shared weights. This tool
takes a finished run, retrains every one of its candidates from scratch with the run's own recipe
(``fit --arch``, reused when already done), and reports Kendall's tau between the supernet
accuracy and the retrained test accuracy, with a bootstrap interval. With ``--variants`` it also
re-scores the candidates on the run's last search checkpoint under other evaluation settings
(more BatchNorm re-estimation batches, a short per-candidate fine-tune) and reports the tau each
gives, so the cheapest setting that ranks well can be chosen.

    python tools/supernet_ranking.py runs/fashion_mnist --out runs/ranking retrain.epochs=3
    python tools/supernet_ranking.py runs/fashion_mnist --variants bn50,ft100 --out runs/ranking
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_search import run_fit  # noqa: E402

from hwnas_darts.config import load_config  # noqa: E402
from hwnas_darts.io import atomic_write_json, atomic_write_text  # noqa: E402
from hwnas_darts.stats import kendall_tau_interval  # noqa: E402

_logger = logging.getLogger("supernet_ranking")


def rescore(run: Path, archs: list[str], bn_batches: int, finetune_steps: int,
            losses: list[float] | None = None) -> list[float]:
    """Supernet accuracy of each architecture under other evaluation settings (the run's last
    search checkpoint, its own validation split); ``losses`` receives each one's mean cross-entropy."""
    from hwnas_darts.data import HwnasDataModule, make_loader
    from hwnas_darts.evaluate import evaluate_accuracy, finetune_subnet
    from hwnas_darts.search import SearchModule
    from hwnas_darts.space import Arch

    cfg = load_config(run / "config.yaml")
    module = SearchModule.load_from_checkpoint(run / "checkpoints" / "search" / "last.ckpt", map_location="cpu",
                                               weights_only=False)
    sn = module.supernet
    dm = HwnasDataModule(cfg.data, cfg.seed, mode="search")
    dm.setup()
    calib = make_loader(dm.weight_dataset(augment=False), 256, True, cfg.seed + 11)
    out = []
    for text in archs:
        arch = Arch.from_string(text)
        net = sn
        if finetune_steps:
            net = finetune_subnet(sn, arch, make_loader(dm.weight_dataset(), cfg.data.batch_size, True, cfg.seed + 7),
                                  finetune_steps, cfg.search.weight_lr)
        per_image: list[float] = []
        out.append(evaluate_accuracy(net, arch, dm.archval_dataloader(), cfg.derive.eval_batches,
                                     calib_loader=calib if bn_batches else None, calib_batches=bn_batches,
                                     losses=per_image))
        if losses is not None:
            losses.append(sum(per_image) / max(len(per_image), 1))
    return out


def run_labels(runs: list[Path]) -> list[str]:
    """A directory name per run: the run's name, with its parent's where two runs share a name
    (``study/seed0/hw1`` and ``study/seed1/hw1`` -> ``seed0-hw1``, ``seed1-hw1``)."""
    names = [r.name for r in runs]
    labels = [f"{r.parent.name}-{r.name}" if names.count(r.name) > 1 else r.name for r in runs]
    if len(set(labels)) != len(labels):
        raise SystemExit(f"two runs map to the same output directory: {labels}; pass distinct run directories")
    return labels


def retrained_accuracy(run: Path, out: Path, index: int, cand: dict[str, Any], overrides: list[str]) -> tuple[float, str]:
    """Test accuracy of one candidate retrained from scratch with the run's recipe; the run's chosen
    candidate reuses the run's own retraining (same config, same seed) unless overrides change the recipe."""
    if cand.get("chosen") and not overrides and (run / "metrics.json").is_file():
        m = json.loads((run / "metrics.json").read_text())
        if m.get("arch") == cand["arch"]:
            return float(m["test_accuracy"]), str(run)
    m = run_fit(out / f"cand{index}", str(run / "config.yaml"), overrides, arch=cand["arch"])
    return float(m["test_accuracy"]), str(out / f"cand{index}")


def variant_accuracies(run: Path, out: Path, variant: str, archs: list[str]) -> list[float]:
    """Supernet accuracies of ``archs`` under one evaluation ``variant`` (cached in ``out``)."""
    path = out / f"variant_{variant}.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("archs") == archs:
            return saved["supernet_accuracy"]
    if not variant[2:].isdigit() or variant[:2] not in ("bn", "ft"):
        raise SystemExit(f"unknown variant {variant!r}: bnN (N BatchNorm re-estimation batches) or ftN (N fine-tune steps)")
    bn, ft = (int(variant[2:]), 0) if variant.startswith("bn") else (10, int(variant[2:]))
    accs = rescore(run, archs, bn, ft)
    atomic_write_json(path, {"variant": variant, "archs": archs, "supernet_accuracy": accs})
    return accs


def perfect_ranker_tau(observed: list[float], sd: float, n: int = 2000, seed: int = 0) -> float:
    """Expected Kendall tau between the true accuracies and one noisy retraining of each, for candidates
    whose retrained accuracies are ``observed`` and whose retraining noise is ``sd``: the true spread is
    the observed one shrunk by the noise (variance minus sd^2), then re-observed ``n`` times."""
    import numpy as np
    from scipy import stats as st

    y = np.asarray(observed, dtype=float)
    var = float(y.var(ddof=1))
    if var <= 0:
        return float("nan")
    true = y.mean() + (y - y.mean()) * (max(var - sd ** 2, 0.0) / var) ** 0.5
    if np.ptp(true) == 0:
        return 0.0
    rng = np.random.default_rng(seed)
    taus = [st.kendalltau(true, true + rng.normal(0.0, sd, y.size)).statistic for _ in range(n)]
    return float(np.mean(taus))


def _tau_entry(x: list[float], y: list[float]) -> dict[str, Any]:
    """Kendall tau of ``x`` against ``y`` with its bootstrap interval, as stored in ranking.json."""
    t = kendall_tau_interval(x, y)
    return {"kendall_tau": t[0], "kendall_tau_ci": [t[1], t[2]]}


def _tau(t: dict[str, Any] | None) -> str:
    return "-" if t is None else f"{t['kendall_tau']:+.3f} [{t['kendall_tau_ci'][0]:+.2f}, {t['kendall_tau_ci'][1]:+.2f}]"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def plot_ranking(entries: list[dict[str, Any]], path: Path) -> None:
    """Left: supernet accuracy vs retrained accuracy; right: the size baseline (measured latency) vs the same."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for e in entries:
        rows = e["candidates"]
        y = [r["test_accuracy"] for r in rows]
        chosen = [r for r in rows if r.get("chosen")]
        lat = e.get("proxies", {}).get("latency_ms")
        for ax, key, tau in ((axes[0], "supernet_accuracy", e), (axes[1], "latency_ms", lat)):
            if any(r.get(key) is None for r in rows):
                continue
            label = e["label"] if tau is None else (f"{e['label']}: tau {tau['kendall_tau']:+.2f} "
                                                    f"[{tau['kendall_tau_ci'][0]:+.2f}, {tau['kendall_tau_ci'][1]:+.2f}]")
            ax.scatter([r[key] for r in rows], y, s=30, label=label)
            ax.scatter([r[key] for r in chosen], [r["test_accuracy"] for r in chosen], s=90, facecolors="none",
                       edgecolors="k")
    axes[0].set_xlabel("accuracy with the supernet's shared weights (validation split)")
    axes[0].set_ylabel("test accuracy retrained from scratch")
    axes[0].set_title("the supernet's ranking (circled: chosen)")
    axes[1].set_xlabel("measured latency (ms)")
    axes[1].set_title("the baseline: bigger is better")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def report_lines(report: dict[str, Any], variants: list[str]) -> list[str]:
    """``ranking.md``: per run tau, its interval, the chosen one's rank, the variants and the size
    baselines; the score's choice vs the accuracy-noise rule's; the retraining noise; the pooled tau."""
    lines = ["| run | candidates | Kendall tau | 95 % interval | chosen's rank after retraining | retrained acc range |"
             + "".join(f" tau {v} |" for v in variants) + " tau of latency alone | tau of MACs alone |",
             "|---|---|---|---|---|---|" + "---|" * (len(variants) + 2)]
    for e in report["runs"]:
        accs = [r["test_accuracy"] for r in e["candidates"]]
        lines.append(f"| {e['label']} | {len(accs)} | {e['kendall_tau']:+.3f} | [{e['kendall_tau_ci'][0]:+.3f}, "
                     f"{e['kendall_tau_ci'][1]:+.3f}] | {e['chosen_rank'] or '-'} of {len(accs)} | {min(accs):.4f}-{max(accs):.4f} |"
                     + "".join(f" {_tau(e['variants'][v])} |" for v in variants)
                     + "".join(f" {_tau(e['proxies'].get(k))} |" for k in ("latency_ms", "macs")))
    lines += ["", "The chosen candidate (derive's score) against the one derive's accuracy-noise rule picks (the fastest "
                  "candidate within the supernet accuracy's noise of the best admissible one), both retrained:", "",
              "| run | score's choice: test acc | ms | rule's choice: test acc | ms | same candidate |", "|---|---|---|---|---|---|"]
    for e in report["runs"]:
        c = next((r for r in e["candidates"] if r["chosen"]), None)
        n = e.get("noise_rule")
        if c is None or n is None:
            continue
        lines.append(f"| {e['label']} | {c['test_accuracy']:.4f} | {_ms(c['latency_ms'])} | {n['test_accuracy']:.4f} | "
                     f"{_ms(n['latency_ms'])} | {'no' if n['differs'] else 'yes'} |")
    if "retrain_noise" in report:
        rn = report["retrain_noise"]
        lines += ["", f"Retraining noise: the chosen candidate retrained with other seeds has a test-accuracy sd of "
                      f"{rn['sd']:.4f} ({rn['dof']} degrees of freedom, pooled over runs). Against retrained accuracies "
                      "this noisy, even a ranker that knew every candidate's true accuracy would reach about tau "
                      + ", ".join(f"{t:+.2f}" for t in rn["perfect_ranker_tau"]) + " (per run, simulated): the ceiling "
                      "to read the measured tau against."]
    if "pooled" in report:
        p = report["pooled"]
        lines += ["", f"Pooled over runs (supernet accuracy centred per run): tau {p['kendall_tau']:+.3f} "
                      f"[{p['kendall_tau_ci'][0]:+.3f}, {p['kendall_tau_ci'][1]:+.3f}] over {p['n']} candidates"
                      + (f"; measured latency alone: tau {_tau(p['latency_ms'])}." if "latency_ms" in p else ".")]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="finished run directories (their candidates are pooled per run)")
    ap.add_argument("--out", default="runs/ranking")
    ap.add_argument("--variants", default="", help="comma-separated evaluation settings to compare: bnN (N BatchNorm "
                                                   "re-estimation batches), ftN (N fine-tune steps), e.g. bn50,ft100")
    ap.add_argument("--noise-seeds", default="", help="comma-separated seeds: retrain each run's chosen candidate "
                                                      "with these seeds too, for the retraining's own noise (e.g. 1,2)")
    ap.add_argument("fit_overrides", nargs="*", help="overrides of the retraining of every candidate")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    runs = [Path(r) for r in args.runs]
    for run in runs:
        for f in ("candidates.json", "config.yaml"):
            if not (run / f).is_file():
                raise SystemExit(f"{run}: no {f} - give the directory of a fit run that finished its derive stage")
    variants = [v for v in args.variants.split(",") if v]
    report: dict[str, Any] = {"runs": [], "overrides": list(args.fit_overrides)}
    for run, label in zip(runs, run_labels(runs)):
        derived = json.loads((run / "candidates.json").read_text())
        cands = derived["candidates"]
        rows = []
        for i, c in enumerate(cands):
            acc, source = retrained_accuracy(run, out / label, i, c, list(args.fit_overrides))
            rows.append({"arch": c["arch"], "supernet_accuracy": c["val_accuracy"], "test_accuracy": acc,
                         "latency_ms": c.get("latency_ms"), "macs": c.get("macs"), "chosen": bool(c.get("chosen")),
                         "retrained_in": source})
            _logger.info("%s cand%d: supernet %.4f, retrained %.4f", label, i, c["val_accuracy"], acc)
        tau = _tau_entry([r["supernet_accuracy"] for r in rows], [r["test_accuracy"] for r in rows])
        proxies: dict[str, Any] = {}
        # the baselines a ranker has to beat: "bigger is better" by measured latency or by MACs alone
        for key in ("latency_ms", "macs"):
            vals = [r[key] for r in rows]
            if None not in vals and len(set(vals)) > 1:
                proxies[key] = _tau_entry(vals, [r["test_accuracy"] for r in rows])
        chosen = next((r["test_accuracy"] for r in rows if r["chosen"]), None)
        entry = {"run": str(run), "label": label, "candidates": rows, **tau,
                 # 1 = the chosen candidate is also the best after retraining (ties count in its favour)
                 "chosen_rank": None if chosen is None else 1 + sum(r["test_accuracy"] > chosen for r in rows),
                 "variants": {}, "proxies": proxies}
        rule = derived.get("accuracy_noise_rule") or {}
        pick = next((r for r in rows if r["arch"] == rule.get("choice")), None)
        if pick is not None:  # derive's accuracy-noise rule: the fastest within the supernet accuracy's noise
            entry["noise_rule"] = {"arch": pick["arch"], "differs": bool(rule.get("differs")),
                                   "test_accuracy": pick["test_accuracy"], "latency_ms": pick["latency_ms"]}
        noise_seeds = [int(x) for x in args.noise_seeds.split(",") if x]
        if noise_seeds:
            ref = next((r for r in rows if r["chosen"]), rows[0])
            i = rows.index(ref)
            accs = [ref["test_accuracy"]] + [
                run_fit(out / label / f"cand{i}_seed{sd}", str(run / "config.yaml"),
                        list(args.fit_overrides) + [f"seed={sd}"], arch=ref["arch"])["test_accuracy"]
                for sd in noise_seeds]
            entry["retrain_noise"] = {"arch": ref["arch"], "test_accuracy": accs, "sd": statistics.stdev(accs)}
            _logger.info("%s: %s retrained with %d seeds: %s", label, ref["arch"], len(accs), accs)
        for v in variants:
            accs = variant_accuracies(run, out / label, v, [r["arch"] for r in rows])
            entry["variants"][v] = {"supernet_accuracy": accs, **_tau_entry(accs, [r["test_accuracy"] for r in rows])}
        report["runs"].append(entry)
    if len(report["runs"]) > 1:
        # pooled: each run's supernet accuracies centred on their run's mean (different supernets, different scales)
        xs, ys = [], []
        for e in report["runs"]:
            sx = [r["supernet_accuracy"] for r in e["candidates"]]
            mx = sum(sx) / len(sx)
            xs += [x - mx for x in sx]
            ys += [r["test_accuracy"] for r in e["candidates"]]
        report["pooled"] = {"n": len(xs), **_tau_entry(xs, ys)}
        lat = [r["latency_ms"] for e in report["runs"] for r in e["candidates"]]
        if None not in lat:  # the size baseline pooled as is (one device, one unit)
            report["pooled"]["latency_ms"] = _tau_entry(lat, ys)
    sds = [e["retrain_noise"] for e in report["runs"] if "retrain_noise" in e]
    if sds:
        dof = sum(len(n["test_accuracy"]) - 1 for n in sds)
        sd = (sum(n["sd"] ** 2 * (len(n["test_accuracy"]) - 1) for n in sds) / dof) ** 0.5
        report["retrain_noise"] = {"sd": sd, "dof": dof,
                                   "perfect_ranker_tau": [perfect_ranker_tau([r["test_accuracy"] for r in e["candidates"]],
                                                                             sd) for e in report["runs"]]}
    atomic_write_json(out / "ranking.json", report)
    plot_ranking(report["runs"], out / "ranking.png")
    lines = report_lines(report, variants)
    atomic_write_text(out / "ranking.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
