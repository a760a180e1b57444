"""How well does a search's supernet rank the space? Kendall tau against retrained accuracy.

The ground-truth networks of ``tools/ground_truth.py`` (random networks of the space, each
retrained from scratch with a study's recipe) are scored by each given search run's last supernet
checkpoint exactly as derive scores candidates (BatchNorm re-estimated on 10 batches, accuracy on
the run's architecture-validation split). Rankers compared against the retrained test accuracy:

* ``supernet``: the supernet accuracy;
* ``supernet_loss``: the supernet's mean cross-entropy on the same images (lower ranks higher: a
  finer-grained score than accuracy, which counts only the images that change class);
* ``latency``: predicted latency alone ("bigger is better", the baseline to beat);
* ``combined``: the mean of a network's rank by supernet accuracy and its rank by latency (no
  fitted weight, so nothing is tuned on the data it is scored on); ``combined_loss`` the same with
  the supernet's cross-entropy;
* ``short_train`` (``--short-train STEPS``): random search's own ranker - each network trained from
  scratch for STEPS SGD steps and scored on the validation split, as ``search_vs_random`` does -
  and ``short_train_latency``, its mean rank with latency's. What the supernet must beat for a
  search of equal cost to beat random search.

Within latency bands: the same Kendall tau restricted to the pairs of networks whose predicted
latencies are within ``--band`` of each other, where latency alone cannot tell them apart - what a
ranker knows beyond latency, and what a search choosing among networks of one latency target needs.

The ceiling beside them: the tau a ranker that knew every network's true accuracy would reach
against the ground truth's accuracies, whose noise is one retraining's standard deviation
(``--retrain-sd``, or the one the ground truth measured with ``--seeds``) over the square root of
the retrainings averaged per network.

Between runs: how well the runs' rankings agree with one another, against how well they agree with
the ground truth (noise that more runs would average away, or a bias they share), and the runs'
mean rank as one ranker.

Per run and pooled over runs (each run's scores turned into ranks first), Kendall tau with a
bootstrap interval over networks, and each ranker's tau minus latency's with the paired bootstrap
interval of the difference (networks resampled, every ranker on the same resample).

Between designs (``--against OTHER_OUT``, another design's output of this tool on the same ground
truth): each ranker's pooled tau minus the other design's, with a paired bootstrap over networks.

    python tools/space_ranking.py --ground-truth runs/gt runs/s0 runs/s1 runs/s2 runs/s3 --out runs/space_ranking
    python tools/space_ranking.py --ground-truth runs/gt runs/sandwich/s{0,1,2,3} --out runs/sr_sandwich --against runs/space_ranking
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import stats as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from supernet_ranking import perfect_ranker_tau, rescore  # noqa: E402

from hwnas_darts.io import atomic_write_json, atomic_write_text  # noqa: E402

_logger = logging.getLogger("space_ranking")
RANKERS = ("supernet", "supernet_loss", "latency", "combined", "combined_loss")


def ranker_scores(supernet_acc: Sequence[float], latency: Sequence[float],
                  supernet_loss: Sequence[float] | None = None) -> dict[str, np.ndarray]:
    """Each ranker's score per network (higher = predicted more accurate), as within-run ranks."""
    s = st.rankdata(supernet_acc)
    lat = st.rankdata(latency)
    out = {"supernet": s, "latency": lat, "combined": (s + lat) / 2.0}
    if supernet_loss is not None:
        sl = st.rankdata(-np.asarray(supernet_loss, dtype=float))
        out.update(supernet_loss=sl, combined_loss=(sl + lat) / 2.0)
    return out


def tau_table(scores: dict[str, np.ndarray], truth: np.ndarray, runs: int, n_boot: int = 2000,
              seed: int = 0) -> dict[str, Any]:
    """Kendall tau of every ranker pooled over ``runs`` blocks (each block: the same networks in the same
    order), its bootstrap interval, and its difference to latency's with the paired bootstrap interval
    (a resample draws networks and keeps them in every block, the same draw for every ranker)."""
    rng = np.random.default_rng(seed)
    n = len(truth) // runs
    point = {k: float(st.kendalltau(v, truth).statistic) for k, v in scores.items()}
    boots: dict[str, list[float]] = {k: [] for k in scores}
    for _ in range(n_boot):
        pick = rng.integers(0, n, n)
        idx = np.concatenate([r * n + pick for r in range(runs)])
        if np.unique(truth[idx]).size < 2 or any(np.unique(v[idx]).size < 2 for v in scores.values()):
            continue
        for k, v in scores.items():
            boots[k].append(float(st.kendalltau(v[idx], truth[idx]).statistic))
    out = {}
    for k in scores:
        b = np.asarray(boots[k])
        out[k] = {"kendall_tau": point[k], "ci": [float(np.quantile(b, 0.025)), float(np.quantile(b, 0.975))]}
        if k != "latency":
            d = b - np.asarray(boots["latency"])
            out[k]["minus_latency"] = point[k] - point["latency"]
            out[k]["minus_latency_ci"] = [float(np.quantile(d, 0.025)), float(np.quantile(d, 0.975))]
    return out


def band_tau(scores: dict[str, np.ndarray], truth: np.ndarray, latency: np.ndarray, band: float, n_boot: int = 2000,
             seed: int = 0) -> dict[str, Any]:
    """Kendall tau over the pairs of networks within ``band`` of each other's latency, pooled over runs.
    ``scores[k]``: shape (runs, n); ``truth``, ``latency``: shape (n,). Bootstrap over networks (a pair
    of two copies of one network does not count); each ranker's difference to latency's, paired."""
    runs, n = next(iter(scores.values())).shape

    def taus(idx: np.ndarray) -> dict[str, float] | None:
        lat, tru = latency[idx], truth[idx]
        i, j = np.triu_indices(len(idx), 1)
        keep = (np.abs(np.log(lat[i] / lat[j])) <= np.log1p(band)) & (idx[i] != idx[j]) & (tru[i] != tru[j])
        if keep.sum() < 2:
            return None
        i, j = i[keep], j[keep]
        t = np.sign(tru[i] - tru[j])
        return {k: float((np.sign(v[:, idx][:, i] - v[:, idx][:, j]) * t).mean()) for k, v in scores.items()}

    point = taus(np.arange(n))
    if point is None:
        return {"pairs": 0}
    rng = np.random.default_rng(seed)
    boots = [b for b in (taus(rng.integers(0, n, n)) for _ in range(n_boot)) if b is not None]
    i, j = np.triu_indices(n, 1)
    pairs = int(((np.abs(np.log(latency[i] / latency[j])) <= np.log1p(band)) & (truth[i] != truth[j])).sum())
    out: dict[str, Any] = {"pairs": pairs, "band": band}
    for k in scores:
        b = np.array([x[k] for x in boots])
        out[k] = {"tau": point[k], "ci": [float(np.quantile(b, 0.025)), float(np.quantile(b, 0.975))]}
        if k != "latency":
            d = b - np.array([x["latency"] for x in boots])
            out[k]["minus_latency"] = point[k] - point["latency"]
            out[k]["minus_latency_ci"] = [float(np.quantile(d, 0.025)), float(np.quantile(d, 0.975))]
    return out


def design_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray], truth: np.ndarray, n_boot: int = 2000,
                      seed: int = 0) -> dict[str, Any]:
    """Pooled Kendall tau of design ``a``'s runs minus design ``b``'s, per ranker both have (latency
    aside: the same in both), with a paired bootstrap: a resample draws networks and keeps them in every
    run of both designs. ``a[k]``, ``b[k]``: shape (runs, n) - each design's own number of runs of the
    same ``n`` networks; ``truth``: shape (n,)."""
    keys = [k for k in a if k in b and k != "latency"]
    n = len(truth)
    if any(a[k].shape[1] != n or b[k].shape[1] != n for k in keys):
        raise ValueError("both designs must score the same networks as the ground truth")

    def taus(idx: np.ndarray) -> dict[str, float]:
        return {k: float(st.kendalltau(a[k][:, idx].ravel(), np.tile(truth[idx], len(a[k]))).statistic)
                - float(st.kendalltau(b[k][:, idx].ravel(), np.tile(truth[idx], len(b[k]))).statistic) for k in keys}

    point = taus(np.arange(n))
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        pick = rng.integers(0, n, n)
        if np.unique(truth[pick]).size > 1:
            boots.append(taus(pick))
    return {k: {"difference": point[k], "ci": [float(np.quantile([x[k] for x in boots], 0.025)),
                                               float(np.quantile([x[k] for x in boots], 0.975))]} for k in keys}


def agreement(per_run: Sequence[dict[str, np.ndarray]], truth: np.ndarray, latency: Sequence[float],
              n_boot: int = 2000) -> dict[str, Any]:
    """What separates the supernets from the ground truth: noise or bias.

    ``between_runs``: Kendall tau between every two runs' rankings of the same networks (each run has
    its own seed, weights and validation split, so this is what the supernet ranking repeats to);
    ``ensemble``: the tau against the ground truth of the runs' mean rank (what averaging away that
    noise buys, at the cost of every run), alone and with latency. When the runs agree with each other
    far better than with the ground truth, the gap is the supernet's bias (what weight sharing
    measures is not what standalone training gives), which more runs or more images do not remove."""
    out: dict[str, Any] = {"runs": len(per_run)}
    lat = st.rankdata(latency)
    for k in ("supernet", "supernet_loss"):
        if any(k not in r for r in per_run):
            continue
        pairs = [float(st.kendalltau(a[k], b[k]).statistic)
                 for i, a in enumerate(per_run) for b in per_run[i + 1:]]
        mean_rank = np.mean([r[k] for r in per_run], axis=0)
        ens = tau_table({"latency": lat, "ensemble": mean_rank, "ensemble_with_latency": (st.rankdata(mean_rank) + lat) / 2},
                        truth, 1, n_boot)
        out[k] = {"between_runs": pairs, "between_runs_mean": float(np.mean(pairs)) if pairs else None,
                  "ensemble": ens["ensemble"], "ensemble_with_latency": ens["ensemble_with_latency"]}
    return out


def short_train_scores(run: Path, archs: Sequence[str], steps: int, cache: Path) -> list[float]:
    """Random search's own ranker on the same networks: each trained from scratch for ``steps`` SGD
    steps on ``run``'s weight split and scored on its validation split (``search_vs_random``'s proxy,
    :func:`compare_search.short_train_accuracy`), cached in ``cache`` network by network."""
    from compare_search import short_train_accuracy

    from hwnas_darts.config import load_config
    from hwnas_darts.data import HwnasDataModule
    from hwnas_darts.space import Arch, SearchSpace

    done = json.loads(cache.read_text()) if cache.is_file() else {}
    if done.get("steps") != steps or done.get("run") != str(run):
        done = {"steps": steps, "run": str(run), "accuracy": {}}
    cfg = load_config(run / "config.yaml")
    space = SearchSpace.from_config(cfg)
    dm = None
    for i, text in enumerate(archs):
        if text in done["accuracy"]:
            continue
        if dm is None:
            dm = HwnasDataModule(cfg.data, cfg.seed, mode="search")
            dm.setup()
        done["accuracy"][text] = short_train_accuracy(space, Arch.from_string(text), dm, steps, cfg.seed)
        _logger.info("short training %d/%d (%d steps): %s val acc %.4f", i + 1, len(archs), steps, text,
                     done["accuracy"][text])
        atomic_write_json(cache, done)
    return [done["accuracy"][t] for t in archs]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="finished search runs (their last search checkpoint scores the networks)")
    ap.add_argument("--ground-truth", required=True, help="a tools/ground_truth.py output directory")
    ap.add_argument("--out", required=True)
    ap.add_argument("--band", type=float, default=0.1, help="relative latency band of the within-band tau")
    ap.add_argument("--retrain-sd", type=float, default=None,
                    help="standard deviation of one retraining's test accuracy (e.g. from a network retrained with "
                         "several seeds): reports the tau a perfect ranker would reach against this noise")
    ap.add_argument("--against", metavar="OUT", default=None,
                    help="another design's space_ranking output directory (the same ground truth): report this "
                         "design's pooled tau minus that one's per ranker, paired over networks")
    ap.add_argument("--short-train", type=int, default=0, metavar="STEPS",
                    help="also rank by random search's proxy: each network trained from scratch for STEPS SGD steps "
                         "(search_vs_random uses 300) on the first run's weight split, scored on its validation split")
    args = ap.parse_args(argv)
    if args.short_train < 0:
        raise SystemExit(f"--short-train {args.short_train}: give a number of SGD steps (300 is random search's), or 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gt = json.loads((Path(args.ground_truth) / "ground_truth.json").read_text())
    truth_nets = gt["networks"]
    seeds_per_net = len(gt.get("seeds") or [None])
    if args.retrain_sd is None and gt.get("retrain_sd"):
        args.retrain_sd = gt["retrain_sd"]  # measured by the ground truth's own repeated retrainings
    archs = [t["arch"] for t in truth_nets]
    acc = np.array([t["test_accuracy"] for t in truth_nets])
    lat = [t["latency_ms_predicted"] for t in truth_nets]
    rankers = list(RANKERS)
    short = None
    if args.short_train:
        first = Path(args.runs[0])
        short = st.rankdata(short_train_scores(first, archs, args.short_train,
                                               out / f"short_train_{args.short_train}-{first.parent.name}-{first.name}.json"))
        rankers += ["short_train", "short_train_latency"]
    per_run, pooled_scores = [], {k: [] for k in rankers}
    for run in (Path(r) for r in args.runs):
        cache = out / f"{run.parent.name}-{run.name}.json"
        saved = json.loads(cache.read_text()) if cache.is_file() else {}
        if saved.get("archs") == archs and "supernet_loss" in saved:
            sup, loss = saved["supernet_accuracy"], saved["supernet_loss"]
        else:
            _logger.info("scoring %d networks with %s", len(archs), run)
            loss = []
            sup = rescore(run, archs, 10, 0, losses=loss)
            atomic_write_json(cache, {"run": str(run), "archs": archs, "supernet_accuracy": sup, "supernet_loss": loss})
        scores = ranker_scores(sup, lat, loss)
        if short is not None:  # one ranking, the same beside every run
            scores.update(short_train=short, short_train_latency=(short + scores["latency"]) / 2.0)
        per_run.append({"run": str(run), "supernet_accuracy": sup, "supernet_mean_loss": loss,  # (the taus use the rankers' names)
                        **{k: float(st.kendalltau(v, acc).statistic) for k, v in scores.items()}})
        for k in rankers:
            pooled_scores[k].append(scores[k])
    pooled = tau_table({k: np.concatenate(v) for k, v in pooled_scores.items()}, np.tile(acc, len(args.runs)),
                       len(args.runs))
    lines = [f"{len(archs)} ground-truth networks (retrained test accuracy {acc.min():.4f}-{acc.max():.4f}) ranked by "
             f"{len(args.runs)} search run(s); {len(archs) * len(args.runs)} (run, network) pairs pooled.", "",
             "| run | " + " | ".join(f"tau {k}" for k in rankers) + " |", "|---" * (len(rankers) + 1) + "|"]
    lines += ["| " + " | ".join([r["run"], *(f"{r[k]:+.3f}" for k in rankers)]) + " |" for r in per_run]
    lines += ["", "| ranker (pooled) | Kendall tau | 95 % interval | minus latency's | 95 % interval |", "|---|---|---|---|---|"]
    for k, v in pooled.items():
        d = (f"{v['minus_latency']:+.3f} | [{v['minus_latency_ci'][0]:+.3f}, {v['minus_latency_ci'][1]:+.3f}]"
             if "minus_latency" in v else "- | -")
        lines.append(f"| {k} | {v['kendall_tau']:+.3f} | [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}] | {d} |")
    within = band_tau({k: np.stack(v) for k, v in pooled_scores.items()}, acc, np.asarray(lat, dtype=float), args.band)
    if within["pairs"]:
        lines += ["", f"Within +-{100 * args.band:.0f} % of latency ({within['pairs']} pairs of networks, pooled over the runs):", "",
                  "| ranker | Kendall tau within band | 95 % interval | minus latency's | 95 % interval |", "|---|---|---|---|---|"]
        for k in rankers:
            v = within[k]
            d = (f"{v['minus_latency']:+.3f} | [{v['minus_latency_ci'][0]:+.3f}, {v['minus_latency_ci'][1]:+.3f}]"
                 if "minus_latency" in v else "- | -")
            lines.append(f"| {k} | {v['tau']:+.3f} | [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}] | {d} |")
    agree = None  # one run agrees with nothing: no bootstrap for it
    if len(args.runs) > 1:
        agree = agreement([{k: v[i] for k, v in pooled_scores.items()} for i in range(len(args.runs))], acc, lat)
        lines += ["", f"Agreement between the {len(args.runs)} runs, and their mean rank as one ranker:", "",
                  "| score | tau between two runs (each pair) | mean | runs' mean rank vs ground truth [95 %] | "
                  "with latency [95 %] | minus latency's [95 %] |", "|---|---|---|---|---|---|"]
        for k in ("supernet", "supernet_loss"):
            if k in agree:
                a, e, w = agree[k], agree[k]["ensemble"], agree[k]["ensemble_with_latency"]
                lines.append(f"| {k} | {', '.join(f'{t:+.2f}' for t in a['between_runs'])} | {a['between_runs_mean']:+.3f} | "
                             f"{e['kendall_tau']:+.3f} [{e['ci'][0]:+.2f}, {e['ci'][1]:+.2f}] | "
                             f"{w['kendall_tau']:+.3f} [{w['ci'][0]:+.2f}, {w['ci'][1]:+.2f}] | "
                             f"{w['minus_latency']:+.3f} [{w['minus_latency_ci'][0]:+.2f}, {w['minus_latency_ci'][1]:+.2f}] |")
    versus = None
    if args.against:
        other_path = Path(args.against) / "space_ranking.json"
        if not other_path.is_file():
            raise SystemExit(f"--against {args.against}: no space_ranking.json there; run this tool on the other "
                             "design's runs with --out " + args.against + " first")
        other = json.loads(other_path.read_text())
        if other.get("archs") != archs or other.get("test_accuracy") != acc.tolist():
            raise SystemExit(f"--against {args.against}: its networks or their accuracies differ from this ground "
                             "truth's; both designs must be scored against the same --ground-truth")
        theirs = [ranker_scores(r["supernet_accuracy"], lat, r.get("supernet_mean_loss")) for r in other["runs"]]
        mine = [{k: v[i] for k, v in pooled_scores.items()} for i in range(len(args.runs))]
        keys = [k for k in theirs[0] if k in mine[0]]
        versus = design_difference({k: np.stack([m[k] for m in mine]) for k in keys},
                                   {k: np.stack([t[k] for t in theirs]) for k in keys}, acc)
        lines += ["", f"This design ({len(args.runs)} runs) against {args.against} ({len(theirs)} runs), pooled tau "
                      "minus pooled tau, paired bootstrap over networks:", "",
                  "| ranker | difference | 95 % interval |", "|---|---|---|"]
        lines += [f"| {k} | {v['difference']:+.3f} | [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}] |" for k, v in versus.items()]
    ceiling = None
    if args.retrain_sd is not None:
        # the ground truth's accuracies are means of seeds_per_net retrainings: their noise shrinks accordingly
        ceiling = perfect_ranker_tau(acc.tolist(), args.retrain_sd / seeds_per_net ** 0.5)
        lines += ["", f"Noise ceiling: a ranker that knew every network's true accuracy would reach tau {ceiling:+.3f} "
                      f"against these ground-truth accuracies (one retraining's sd {args.retrain_sd:.4f}, "
                      f"{seeds_per_net} retraining(s) per network; simulated)."]
    atomic_write_json(out / "space_ranking.json", {"runs": per_run, "pooled": pooled, "within_band": within,
                                                   "agreement": agree, "archs": archs, "ceiling": ceiling,
                                                   "against": {"out": args.against, "difference": versus} if versus else None,
                                                   "retrain_sd": args.retrain_sd,
                                                   "test_accuracy": acc.tolist(), "latency_ms_predicted": lat})
    atomic_write_text(out / "space_ranking.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
