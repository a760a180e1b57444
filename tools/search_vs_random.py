"""Does the search beat random search of equal cost? The TuNAS protocol, per latency target and seed.

For every seed and latency target (a quantile of the space's latency on this device):

* **hw**: this package's search (``fit`` with ``objective.target_quantile=q``); its network is
  the one derive returns.
* **random**: random search with the same wall-clock budget as that seed's hw searches spent
  choosing (median of search + derive seconds): architectures sampled from the space, each
  trained ``--random-steps`` steps on the weight split and scored on the architecture-validation
  split, as many as the budget allows. One pool per seed serves every target (sampling does not
  depend on the target); for each target random search returns its most accurate network whose
  predicted latency meets that seed's target.

Both methods' networks are retrained with the same recipe and seed and tested on the official
test images (retrains are shared by architecture and seed). A method whose network misses the
target (predicted latency above it by more than ``--tolerance``), or that has none under it,
loses that seed. With ``--ground-truth DIR`` (``tools/ground_truth.py``) every network also gets
its percentile among the random networks within +-5 % of its predicted latency. With
``--baseline DIR`` (another study of the same protocol, e.g. other ``--hw`` settings) the hw
networks are also compared with that study's, paired by seed, beside the two searches' cost.

Output: ``OUT/tunas.json`` and ``OUT/tunas.md`` (per target: paired differences with 95 %
intervals, wins, forfeits, percentiles). Finished runs are reused, so the command resumes.

    python tools/search_vs_random.py --out runs/tunas --seeds 0,1,2,3,4 --targets 0.1,0.3,0.5 \\
        --ground-truth runs/gt retrain.epochs=3 retrain.augment=true
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_search import run_fit, short_train_accuracy  # noqa: E402
from ground_truth import rank, recipe_problems  # noqa: E402

from hwnas_darts.config import load_config  # noqa: E402
from hwnas_darts.hardware.model import LatencyModel  # noqa: E402
from hwnas_darts.io import atomic_write_json, atomic_write_text  # noqa: E402
from hwnas_darts.lut import obtain_model  # noqa: E402
from hwnas_darts.space import SearchSpace  # noqa: E402
from hwnas_darts.stats import paired_interval, sign_interval  # noqa: E402

_logger = logging.getLogger("search_vs_random")


def random_pool(out: Path, cfg, space: SearchSpace, model: LatencyModel, seed: int, budget: float, steps: int,
                cap: int) -> dict[str, Any]:
    """Random search's scored architectures for one seed (``random_pool.json``, reused when present)."""
    from hwnas_darts.data import HwnasDataModule

    path = out / "random_pool.json"
    if path.is_file():
        return json.loads(path.read_text())
    dm = HwnasDataModule(cfg.data, seed, mode="search")
    dm.setup()
    pool: dict[str, Any] = {"budget_seconds": budget, "steps": steps, "archs": []}
    t0 = time.perf_counter()
    for arch in space.sample_unique(cap, seed=seed + 4242):
        if time.perf_counter() - t0 > budget:
            break
        acc = short_train_accuracy(space, arch, dm, steps, seed)
        pool["archs"].append({"arch": arch.to_string(), "val_accuracy": acc, "latency_ms_predicted": model.predict(arch)})
        _logger.info("seed %d random %d: %s val acc %.4f (%.0f of %.0f s)", seed, len(pool["archs"]), arch, acc,
                     time.perf_counter() - t0, budget)
    pool["seconds"] = time.perf_counter() - t0
    atomic_write_json(path, pool)
    return pool


def pick(pool: dict[str, Any], target_ms: float) -> dict[str, Any] | None:
    """The most accurate pool member whose predicted latency meets the target (None: none does)."""
    ok = [a for a in pool["archs"] if a["latency_ms_predicted"] <= target_ms]
    return max(ok, key=lambda a: a["val_accuracy"]) if ok else None


def _retrain_dir(root: Path, arch: str, seed: int) -> Path:
    return root / "retrained" / f"s{seed}-{hashlib.sha1(arch.encode()).hexdigest()[:12]}"


def outcome(r: dict[str, Any]) -> float | None:
    """One seed's hw minus random test accuracy, where a method without a network under the target
    loses the seed: ``+inf`` when only random search forfeits, ``-inf`` when only hw does, None when
    both do."""
    hw_ok, rnd_ok = r["hw"]["meets"], bool(r["random"] and r["random"]["meets"])
    if hw_ok and rnd_ok:
        return r["hw"]["test_accuracy"] - r["random"]["test_accuracy"]
    return None if hw_ok == rnd_ok else (math.inf if hw_ok else -math.inf)


def outcome_summary(outcomes: list[float | None]) -> dict[str, Any]:
    """What a list of per-seed outcomes (:func:`outcome`) shows: the paired mean and its Student-t
    interval over the seeds where both methods meet the target; the median over every seed, a
    forfeit counted as a loss of unknown size and a double forfeit as a tie, with its sign-test
    interval (distribution-free; its coverage is stated, at least 95 %); hw's wins."""
    finite = [x for x in outcomes if x is not None and math.isfinite(x)]
    rec: dict[str, Any] = {"paired": len(finite), "n": len(outcomes), "d_per_seed": finite,
                           "hw_wins": sum(1 for x in outcomes if x is not None and x > 0)}
    if finite:
        m, lo, hi = paired_interval(finite, [0.0] * len(finite))
        rec.update(d_accuracy=m, d_accuracy_ci=[lo, hi])
    if outcomes:
        med, lo, hi, cov = sign_interval([0.0 if x is None else x for x in outcomes])
        rec.update(median_with_forfeits=med, median_with_forfeits_ci=[lo, hi], median_ci_coverage=cov)
    return rec


def compare(records: list[dict[str, Any]], tolerance: float) -> list[dict[str, Any]]:
    """Per target: hw minus random, paired by seed (:func:`outcome_summary`: the paired mean over the
    seeds where both meet the target, the median with forfeits as losses), wins, forfeits (a method
    without a network under the target loses that seed) and percentiles."""
    out = []
    for q in sorted({r["target_quantile"] for r in records}):
        rows = sorted((r for r in records if r["target_quantile"] == q), key=lambda r: r["seed"])
        rec: dict[str, Any] = {"target_quantile": q, "seeds": [r["seed"] for r in rows]}
        rec.update(outcome_summary([outcome(r) for r in rows]))
        rec.update(hw_forfeits=[r["seed"] for r in rows if not r["hw"]["meets"]],
                   random_forfeits=[r["seed"] for r in rows if not (r["random"] and r["random"]["meets"])])
        for method in ("hw", "random"):
            pcts = [r[method]["percentile"] for r in rows if r[method] and r[method].get("percentile") is not None]
            rec[f"{method}_percentiles"] = pcts
            rec[f"{method}_median_percentile"] = statistics.median(pcts) if pcts else None
        out.append(rec)
    return out


def num(v: Any, fmt: str) -> str:
    """A number for a table cell; ``-`` when there is none."""
    return "-" if v is None else format(v, fmt)


def pct_cell(r: dict[str, Any]) -> str:
    """A network's band percentile and, in brackets, how many ground-truth networks its band holds."""
    if "in_band" not in r:
        return "-"
    return f"{num(r.get('percentile'), '.0f')} ({r['in_band']})"


def pcts(values: list[float]) -> str:
    """Percentiles for a table cell, rounded, with their median."""
    if not values:
        return "-"
    return ", ".join(f"{v:.0f}" for v in values) + f" (median {statistics.median(values):.0f})"


def signed(v: float) -> str:
    """A paired difference in points for a table cell; a forfeit's infinity as words."""
    return "hw by forfeit" if v == math.inf else "random by forfeit" if v == -math.inf else f"{100 * v:+.2f}"


def summary_lines(summary: list[dict[str, Any]]) -> list[str]:
    """The per-target table of :func:`compare`'s rows: the paired mean over the seeds where both
    methods meet the target (Student t), and the median over every seed with forfeits as losses
    (sign-test interval: distribution-free, and a forfeit counts)."""
    lines = ["| target | seeds paired | hw - random test acc, paired mean (points) | 95 % interval | median, forfeits "
             "as losses (points) | its interval (coverage) | hw wins | hw forfeits | random forfeits | hw median pct "
             "| random median pct |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        ci, mci = s.get("d_accuracy_ci"), s.get("median_with_forfeits_ci")
        lines.append(f"| q{s['target_quantile']:g} | {s['paired']} of {s['n']} | "
                     + (f"{100 * s['d_accuracy']:+.2f} | [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]" if ci else "- | -")
                     + (f" | {signed(s['median_with_forfeits'])} | " + (
                         f"[{signed(mci[0])}, {signed(mci[1])}] ({100 * s['median_ci_coverage']:.1f} %)"
                         if math.isfinite(s["median_ci_coverage"]) else "- (too few seeds)") if mci else " | - | -")
                     + f" | {s['hw_wins']} | {s['hw_forfeits'] or '-'} | {s['random_forfeits'] or '-'} | "
                     f"{num(s['hw_median_percentile'], '.0f')} | {num(s['random_median_percentile'], '.0f')} |")
    return lines


def versus(records: list[dict[str, Any]], baseline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per target: this study's hw network minus another study's (``--baseline``), paired by seed,
    over the seeds where both meet the target; and this study's search cost over the baseline's
    (each seed's hw search + derive seconds, the random budget), per seed."""
    base = {(r["seed"], r["target_quantile"]): r for r in baseline}
    out = []
    for q in sorted({r["target_quantile"] for r in records}):
        pairs = [(r, base[(r["seed"], q)]) for r in sorted(records, key=lambda r: r["seed"])
                 if r["target_quantile"] == q and (r["seed"], q) in base]
        both = [(a, b) for a, b in pairs if a["hw"]["meets"] and b["hw"]["meets"]]
        rec: dict[str, Any] = {"target_quantile": q, "seeds": [a["seed"] for a, _ in pairs], "paired": len(both),
                               "cost_ratio_per_seed": [a["budget_seconds"] / b["budget_seconds"] for a, b in pairs],
                               "forfeits": [a["seed"] for a, _ in pairs if not a["hw"]["meets"]],
                               "baseline_forfeits": [b["seed"] for _, b in pairs if not b["hw"]["meets"]]}
        if both:
            d = [a["hw"]["test_accuracy"] - b["hw"]["test_accuracy"] for a, b in both]
            m, lo, hi = paired_interval(d, [0.0] * len(d))
            rec.update(d_accuracy=m, d_accuracy_ci=[lo, hi], d_per_seed=d,
                       wins=sum(x > 0 for x in d), ties=sum(x == 0 for x in d))
        for name, side in (("percentiles", 0), ("baseline_percentiles", 1)):
            rec[name] = [p[side]["hw"].get("percentile") for p in pairs if p[side]["hw"].get("percentile") is not None]
        out.append(rec)
    return out


def versus_lines(rows: list[dict[str, Any]], baseline: str) -> list[str]:
    lines = [f"hw search against the hw search of `{baseline}` (paired by seed; cost = search + derive seconds, "
             "this study over the baseline):", "",
             "| target | seeds paired | hw - baseline hw test acc | 95 % interval | wins / ties | per seed | cost ratio "
             "(median, range) | pct (this) | pct (baseline) |", "|---|---|---|---|---|---|---|---|---|"]
    for v in rows:
        ci, c = v.get("d_accuracy_ci"), v["cost_ratio_per_seed"]
        lines.append(f"| q{v['target_quantile']:g} | {v['paired']} of {len(v['seeds'])} | "
                     + (f"{v['d_accuracy']:+.4f} | [{ci[0]:+.4f}, {ci[1]:+.4f}] | {v['wins']} / {v['ties']} | "
                        + ", ".join(f"{x:+.4f}" for x in v["d_per_seed"]) if ci else "- | - | - | -")
                     + (f" | {statistics.median(c):.2f} ({min(c):.2f}-{max(c):.2f})" if c else " | -")
                     + f" | {pcts(v['percentiles'])} | {pcts(v['baseline_percentiles'])} |")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--targets", default="0.1,0.3,0.5", help="latency targets as quantiles of the space")
    ap.add_argument("--hw", default="", help="extra overrides of the hw searches (e.g. a search setting under test)")
    ap.add_argument("--random-steps", type=int, default=300)
    ap.add_argument("--random-max", type=int, default=60, help="cap on random architectures per seed")
    ap.add_argument("--tolerance", type=float, default=0.0, help="relative slack on the target before a network misses it")
    ap.add_argument("--ground-truth", help="a tools/ground_truth.py directory: percentiles of every network")
    ap.add_argument("--baseline", help="another study's output directory (e.g. the same protocol with other --hw "
                    "settings): this study's hw networks against its hw networks, paired by seed")
    ap.add_argument("--report", action="store_true", help="start nothing: report the finished runs")
    ap.add_argument("fit_overrides", nargs="*", help="overrides for every fit run (the recipe, e.g. retrain.epochs=3)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    baseline = None
    if args.baseline:  # checked before any run starts, not after hours of them
        bpath = Path(args.baseline) / "tunas.json"
        if not bpath.is_file():
            raise SystemExit(f"--baseline {args.baseline}: no tunas.json there (run this tool with --out {args.baseline} first)")
        baseline = json.loads(bpath.read_text()).get("records")
        if not isinstance(baseline, list):
            raise SystemExit(f"--baseline {bpath}: no 'records' list in it (not written by this tool?)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    qs = [float(q) for q in args.targets.split(",")]
    base = list(args.fit_overrides)
    cfg = load_config(args.config, base)
    space = SearchSpace.from_config(cfg)
    model, table, _ = obtain_model(cfg, space)
    truth = None
    if args.ground_truth:
        gt = json.loads((Path(args.ground_truth) / "ground_truth.json").read_text())
        problems = recipe_problems(gt, cfg)
        if problems:
            raise SystemExit(f"--ground-truth {args.ground_truth} was retrained with another recipe than this study's "
                             f"({'; '.join(problems)}): percentiles would compare different trainings; pass the "
                             "ground truth's recipe as overrides")
        truth = gt["networks"]
    missing: list[str] | None = [] if args.report else None
    records = []
    contended: list[str] = []

    def finish(m: dict[str, Any], target: float) -> dict[str, Any]:
        r = {k: m.get(k) for k in ("arch", "test_accuracy", "latency_ms", "latency_ms_predicted")}
        r["meets"] = m["latency_ms_predicted"] <= target * (1 + args.tolerance)
        if truth:
            rk = rank(truth, m)
            r["percentile"], r["in_band"] = rk["percentile"], rk["in_band"]
        return r

    for seed in seeds:
        sd = out / f"seed{seed}"
        hw: dict[float, dict] = {}
        for q in qs:
            ov = base + [f"seed={seed}", f"objective.target_quantile={q}"] + args.hw.split()
            m = run_fit(sd / f"hw_q{q:g}", args.config, ov, missing=missing)
            if m is not None:
                hw[q] = m
        if len(hw) < len(qs):
            continue
        costs = [m["search_seconds"] + (m.get("derive_seconds") or 0.0) for m in hw.values()]
        budget = statistics.median(costs)
        if max(costs) > 1.5 * min(costs):
            contended.append(f"seed {seed}: hw search + derive took {min(costs):.0f}-{max(costs):.0f} s across targets "
                             "(a shared machine?); random search's budget is their median")
        if args.report and not (sd / "random_pool.json").is_file():
            missing.append(str(sd / "random_pool.json"))
            continue
        pool = random_pool(sd, cfg, space, model, seed, budget, args.random_steps, args.random_max)
        for q in qs:
            target = hw[q]["latency_target_ms"]
            choice = pick(pool, target)
            rnd = None
            if choice is not None:
                r = run_fit(_retrain_dir(out, choice["arch"], seed), args.config, base + [f"seed={seed}"],
                            arch=choice["arch"], missing=missing)
                rnd = None if r is None else {**finish(r, target), "val_accuracy": choice["val_accuracy"]}
                if r is None:
                    continue
            records.append({"seed": seed, "target_quantile": q, "target_ms": target, "budget_seconds": budget,
                            "pool": len(pool["archs"]), "pool_under_target": sum(a["latency_ms_predicted"] <= target
                                                                                for a in pool["archs"]),
                            "hw": finish(hw[q], target), "random": rnd})
    summary = compare(records, args.tolerance)
    against = None if baseline is None else versus(records, baseline)
    lines = []
    if missing:
        lines += [f"**Interim report**: {len(missing)} run(s) unfinished and left out.", ""]
    if contended:
        lines += ["**Uneven search cost** (random search's budget follows it):"] + [f"- {c}" for c in contended] + [""]
    lines += summary_lines(summary)
    if against is not None:
        lines += [""] + versus_lines(against, args.baseline)
    lines += ["", "| seed | target | target ms | pool (under target) | hw arch | hw acc | hw ms pred | hw pct (band) | random acc "
                  "| random ms pred | random pct (band) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        h, x = r["hw"], r["random"] or {}
        lines.append(f"| {r['seed']} | q{r['target_quantile']:g} | {r['target_ms']:.2f} | {r['pool']} ({r['pool_under_target']}) "
                     f"| `{h['arch']}` | {h['test_accuracy']:.4f} | {h['latency_ms_predicted']:.2f} | "
                     f"{pct_cell(h)} | {num(x.get('test_accuracy'), '.4f')} | "
                     f"{num(x.get('latency_ms_predicted'), '.2f')} | {pct_cell(x)} |")
    atomic_write_text(out / "tunas.md", "\n".join(lines) + "\n")
    atomic_write_json(out / "tunas.json", {"records": records, "summary": summary, "missing": missing or [],
                                           "uneven_cost": contended, "table": str(table.path), "device": table.device,
                                           "baseline": args.baseline, "versus_baseline": against})
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
