"""Ground truth of the search space: random networks retrained with a study's recipe, and where a
found network ranks among the random networks of its latency.

Samples ``-n`` distinct random architectures of the config's space (``--sample-seed``), retrains
each from scratch through ``fit --arch`` with the given overrides (the study's recipe, e.g.
``retrain.epochs=3``; finished runs are reused, unfinished ones resumed) and writes
``OUT/ground_truth.json``: each network's test accuracy on the official test images, its
predicted latency (the latency model: deterministic, so bands compare across runs and sessions on
one table) and its measured latency. ``--rank RUN...`` prints each finished run's percentile of
test accuracy among the ground-truth networks within ``+-band`` of its predicted latency (ties
count half) and how many networks that band holds.

    python tools/ground_truth.py --out runs/gt -n 30 retrain.epochs=3
    python tools/ground_truth.py --out runs/gt --rank runs/study/seed0/hw0 runs/study/seed1/hw0
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_search import run_fit  # noqa: E402

from hwnas_darts.config import load_config  # noqa: E402
from hwnas_darts.io import atomic_write_json  # noqa: E402
from hwnas_darts.space import SearchSpace  # noqa: E402
from hwnas_darts.stats import band_percentile  # noqa: E402

_logger = logging.getLogger("ground_truth")

#: every ground-truth run skips the start-of-run table check (it changes no accuracy or latency)
BASE_OVERRIDES = ["hardware.check_archs=0"]
KEYS = ("test_accuracy", "latency_ms", "latency_ms_predicted", "macs", "params", "arch", "seed", "retrain_seconds")


def build(out: Path, cfg_path: str | None, n: int, sample_seed: int, overrides: Sequence[str],
          missing: list[str] | None = None) -> list[dict[str, Any]]:
    """Retrain ``n`` random networks (reusing finished runs); their metrics, in sampling order.
    ``missing``: start nothing, list the unfinished runs there."""
    cfg = load_config(cfg_path, list(overrides))
    space = SearchSpace.from_config(cfg)
    rows = []
    for i, arch in enumerate(space.sample_unique(n, seed=sample_seed)):
        run = out / f"net{i:02d}"
        _logger.info("ground truth %d/%d: %s", i + 1, n, arch)
        m = run_fit(run, cfg_path, [*BASE_OVERRIDES, *overrides], arch=arch.to_string(), missing=missing)
        if m is not None:
            rows.append({**{k: m.get(k) for k in KEYS}, "dir": str(run)})
    return rows


def rank(truth: Sequence[dict[str, Any]], metrics: dict[str, Any], band: float = 0.05) -> dict[str, Any]:
    """A finished run's test-accuracy percentile among the ground-truth networks of its predicted latency."""
    ref = [(t["latency_ms_predicted"], t["test_accuracy"]) for t in truth]
    pct, k = band_percentile(metrics["test_accuracy"], metrics["latency_ms_predicted"], ref, band)
    inside = [t["test_accuracy"] for t in truth if abs(t["latency_ms_predicted"] / metrics["latency_ms_predicted"] - 1) <= band]
    return {"percentile": pct, "in_band": k, "band": band, "test_accuracy": metrics["test_accuracy"],
            "latency_ms_predicted": metrics["latency_ms_predicted"], "band_accuracies": sorted(inside)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="the study's config (default: the package default)")
    ap.add_argument("--out", required=True, help="directory of the ground-truth runs and ground_truth.json")
    ap.add_argument("-n", type=int, default=30, help="random networks to retrain")
    ap.add_argument("--sample-seed", type=int, default=777, help="seed of the architecture sample (not the retraining)")
    ap.add_argument("--band", type=float, default=0.05, help="relative latency band for --rank")
    ap.add_argument("--rank", nargs="*", default=[], metavar="RUN", help="finished runs to place among the ground truth")
    ap.add_argument("--report", action="store_true", help="start nothing: use the finished ground-truth runs")
    ap.add_argument("fit_overrides", nargs="*", help="the study's overrides for every run (e.g. retrain.epochs=3)")
    args = ap.parse_args(argv)
    if args.n < 1 or not 0 < args.band < 1:
        raise SystemExit("-n must be at least 1 and --band between 0 and 1 (a relative latency band, e.g. 0.05)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    missing: list[str] | None = [] if args.report else None
    truth = build(out, args.config, args.n, args.sample_seed, args.fit_overrides, missing)
    if not truth:
        raise SystemExit(f"no finished ground-truth run under {out}")
    atomic_write_json(out / "ground_truth.json", {"n": args.n, "sample_seed": args.sample_seed, "finished": len(truth),
                                                   "overrides": args.fit_overrides, "networks": truth,
                                                   "missing": missing or []})
    accs = sorted(t["test_accuracy"] for t in truth)
    print(f"ground truth: {len(truth)} of {args.n} networks retrained; test accuracy {accs[0]:.4f} .. {accs[-1]:.4f} "
          f"(median {accs[len(accs) // 2]:.4f})")
    for run in args.rank:
        p = Path(run) / "metrics.json"
        if not p.is_file():
            print(f"{run}: not finished (no metrics.json)")
            continue
        r = rank(truth, json.loads(p.read_text()), args.band)
        pct = "-" if r["percentile"] is None else f"{r['percentile']:.0f}"
        print(f"{run}: test accuracy {r['test_accuracy']:.4f} at {r['latency_ms_predicted']:.2f} ms predicted: "
              f"percentile {pct} among {r['in_band']} ground-truth networks within +-{100 * args.band:.0f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
