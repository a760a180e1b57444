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

Retrained accuracy does not depend on the machine's latency table, so a ground truth can outlive
the machine: ``--save FILE`` writes each network's architecture, retraining seed, test accuracy
and the CPU it was trained on (no latency: that belongs to a machine), and ``--reuse FILE`` on
another machine takes every network of the same sample, recipe and space from it instead of
retraining, and predicts its latency with this machine's latency model. Networks the file lacks
are retrained; ``--save`` again accumulates them. The resolved recipe (the ``retrain`` section,
defaults included) is recorded in both files, and ``--reuse`` and ``search_vs_random.py
--ground-truth`` refuse a ground truth retrained with another one (a file without a record
predates ``retrain.augment`` and was retrained with augmentation: pass ``retrain.augment=true``).

One retraining's test accuracy carries noise (about 0.2 points here) that caps how well any ranker
can agree with it. ``--seeds 0,1`` retrains every network once per seed and takes the mean, and
reports the pooled standard deviation of one retraining (the noise to put beside any tau); seeds
already run, here or in a ``--reuse`` file, are not run again.

    python tools/ground_truth.py --out runs/gt -n 30 retrain.epochs=3 retrain.augment=true
    python tools/ground_truth.py --out runs/gt -n 30 --shard 1/2 retrain.epochs=3 retrain.augment=true   # a second process
    python tools/ground_truth.py --out runs/gt --rank runs/study/seed0/hw0 runs/study/seed1/hw0
    python tools/ground_truth.py --out runs/gt --save docs/data/ground_truth_fashion_mnist_e3.json retrain.epochs=3 retrain.augment=true
    python tools/ground_truth.py --out runs/gt --reuse docs/data/ground_truth_fashion_mnist_e3.json retrain.epochs=3 retrain.augment=true
    python tools/ground_truth.py --out runs/gt --reuse docs/data/ground_truth_fashion_mnist_e3.json --seeds 0,1 \
        --save docs/data/ground_truth_fashion_mnist_e3.json retrain.epochs=3 retrain.augment=true    # add a second seed everywhere
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_search import run_fit  # noqa: E402

from hwnas_darts.config import load_config  # noqa: E402
from hwnas_darts.hardware.device import cpu_name  # noqa: E402
from hwnas_darts.io import atomic_write_json  # noqa: E402
from hwnas_darts.lut import obtain_model  # noqa: E402
from hwnas_darts.space import SearchSpace  # noqa: E402
from hwnas_darts.stats import band_percentile  # noqa: E402

_logger = logging.getLogger("ground_truth")

#: every ground-truth run skips the start-of-run table check (it changes no accuracy or latency) and
#: measures its network's latency once, in one process, at the end (bands use the predicted latency;
#: derive has nothing to choose for a given network): a third of a run's time saved, the recipe unchanged
BASE_OVERRIDES = ["hardware.check_archs=0", "derive.measure=false", "hardware.processes=1"]
KEYS = ("test_accuracy", "latency_ms", "latency_ms_predicted", "macs", "params", "arch", "seed", "retrain_seconds")
#: what a saved ground truth keeps of each network (nothing that belongs to one machine's latency)
SAVED_KEYS = ("arch", "seed", "test_accuracy", "macs", "params", "retrain_seconds", "trained_on")
FORMAT = "hwnas_darts ground truth v1"


def recipe(cfg) -> dict[str, Any]:
    """The retraining recipe a ground truth's accuracies depend on, resolved (defaults included), so
    that a changed default cannot pass for the same study: the ``retrain`` section with its
    augmentation switch resolved against ``data.augment``."""
    return {"retrain": dict(cfg.retrain.model_dump(), augment=cfg.retrain_augment())}


def recipe_problems(saved: dict[str, Any], cfg) -> list[str]:
    """How ``cfg``'s retraining differs from the one a ground truth recorded. A file without a recipe
    predates ``retrain.augment`` and was retrained with augmentation; only that is checked."""
    here = recipe(cfg)["retrain"]
    if "recipe" not in saved:
        return [] if here["augment"] else ["the ground truth was retrained with augmentation (it predates "
                                           "retrain.augment), this study without: add retrain.augment=true"]
    there = saved["recipe"].get("retrain", {})
    return [f"retrain.{k}: the ground truth {there.get(k)!r}, this study {here.get(k)!r}"
            for k in sorted(set(here) | set(there)) if here.get(k) != there.get(k)]


def load_saved(path: Path, space_id: str, sample_seed: int, overrides: Sequence[str],
               cfg=None) -> dict[tuple[str, int], dict[str, Any]]:
    """A saved ground truth's retrainings by (architecture, seed), checked against this study's space, sample and recipe."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--reuse {path}: cannot read it ({exc}); pass a file written by --save") from exc
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise SystemExit(f"--reuse {path}: not a saved ground truth (no format {FORMAT!r}); pass a file written by --save")
    checks = [("space", saved.get("space_id"), space_id), ("--sample-seed", saved.get("sample_seed"), sample_seed)]
    if "recipe" not in saved:  # a file with a recorded recipe is matched on it, not on the override strings
        checks.append(("recipe overrides", saved.get("overrides"), list(overrides)))
    problems = [f"{what}: the file has {have!r}, this study {want!r}" for what, have, want in checks if have != want]
    if cfg is not None:
        problems += recipe_problems(saved, cfg)
    if problems:
        raise SystemExit(f"--reuse {path} belongs to another study ({'; '.join(problems)}): run with the file's "
                         f"settings or retrain without --reuse")
    return {(n["arch"], int(n["seed"])): n for n in saved["retrainings"]}


def save(path: Path, rows: Sequence[dict[str, Any]], space_id: str, sample_seed: int, overrides: Sequence[str],
         cfg_path: str | None, partial: Sequence[dict[str, Any]] = (), cfg=None) -> None:
    """Write the machine-independent part of a ground truth (see the module's doc) atomically: one
    entry per retraining (a network retrained with two seeds has two), those of networks still
    missing a seed (``partial``) included."""
    entries = [{k: r.get(k) for k in SAVED_KEYS} for r in [*(r for row in rows for r in row["retrainings"]), *partial]]
    atomic_write_json(path, {"format": FORMAT, "config": cfg_path or "default", "space_id": space_id,
                             "sample_seed": sample_seed, "overrides": list(overrides),
                             **({"recipe": recipe(cfg)} if cfg is not None else {}), "retrainings": entries})


def retrain_sd(rows: Sequence[dict[str, Any]]) -> tuple[float | None, int]:
    """Pooled standard deviation of one retraining's test accuracy over the networks retrained with
    several seeds, and its degrees of freedom."""
    ss, dof = 0.0, 0
    for row in rows:
        accs = [r["test_accuracy"] for r in row["retrainings"]]
        if len(accs) > 1:
            mean = sum(accs) / len(accs)
            ss += sum((a - mean) ** 2 for a in accs)
            dof += len(accs) - 1
    return ((ss / dof) ** 0.5 if dof else None), dof


@dataclass
class GroundTruth:
    """What :func:`build` found: the finished networks (sampling order), the finished retrainings of
    networks still missing a seed, the unfinished runs it did not start, and the space's id."""

    rows: list[dict[str, Any]]
    partial: list[dict[str, Any]]
    missing: list[str]
    space_id: str


def build(out: Path, cfg_path: str | None, n: int, sample_seed: int, overrides: Sequence[str], report: bool = False,
          shard: tuple[int, int] = (0, 1), reuse: Path | None = None, seeds: Sequence[int] | None = None) -> GroundTruth:
    """Retrain ``n`` random networks (reusing finished runs). ``report``: start nothing. ``shard``
    ``(i, k)``: retrain only the networks whose index is ``i`` modulo ``k`` (``k`` processes share the
    work); the others are read when finished. ``reuse``: a saved ground truth whose retrainings are
    taken instead of run, their latency predicted here. ``seeds``: the retraining seeds (default: the
    config's); a network counts when every seed has finished, its test accuracy the mean over them."""
    cfg = load_config(cfg_path, list(overrides))
    space = SearchSpace.from_config(cfg)
    seeds = list(seeds) if seeds else [cfg.seed]
    saved = load_saved(reuse, space.space_id, sample_seed, overrides, cfg) if reuse is not None else {}
    model = None
    truth = GroundTruth([], [], [], space.space_id)
    for i, arch in enumerate(space.sample_unique(n, seed=sample_seed)):
        text = arch.to_string()
        start = not report and i % shard[1] == shard[0]
        if start:
            _logger.info("ground truth %d/%d: %s", i + 1, n, arch)
        done = []
        for seed in seeds:
            # the config's seed keeps the historical directory name, so earlier ground truths are reused
            run = out / (f"net{i:02d}" if seed == cfg.seed else f"net{i:02d}_seed{seed}")
            if (text, seed) in saved and not (run / "metrics.json").is_file():
                if model is None:
                    model, _, _ = obtain_model(cfg, space)
                done.append({**{k: saved[(text, seed)].get(k) for k in SAVED_KEYS}, "latency_ms": None,
                             "latency_ms_predicted": model.predict(arch), "dir": str(reuse)})
                continue
            extra = [] if seed == cfg.seed else [f"seed={seed}"]
            m = run_fit(run, cfg_path, [*BASE_OVERRIDES, *overrides, *extra], arch=text,
                        missing=None if start else truth.missing)
            if m is not None:
                done.append({**{k: m.get(k) for k in KEYS}, "seed": m.get("seed", seed),
                             "trained_on": m.get("trained_on") or _trained_on(run), "dir": str(run)})
        if len(done) == len(seeds):
            accs = [r["test_accuracy"] for r in done]
            truth.rows.append({**done[0], "test_accuracy": sum(accs) / len(accs), "test_accuracies": accs,
                               "seeds": [r["seed"] for r in done], "retrainings": done})
        else:
            truth.partial.extend(done)
    return truth


def _trained_on(run: Path) -> str:
    """The CPU a ground-truth run trained on: recorded once beside its metrics (the run may be read on another machine)."""
    path = run / "trained_on.txt"
    if not path.is_file():
        path.write_text(cpu_name() + "\n")
    return path.read_text().strip()


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
    ap.add_argument("--shard", default="0/1", metavar="I/K",
                    help="retrain only networks I, I+K, I+2K, ... (run K processes with I = 0..K-1 to share the work)")
    ap.add_argument("--seeds", help="retraining seeds, e.g. 0,1: each network retrained once per seed, its test "
                    "accuracy the mean (less retraining noise; the spread between seeds is reported). Default: the config's seed")
    ap.add_argument("--save", metavar="FILE", help="write the machine-independent ground truth (architectures, seeds, "
                    "test accuracies, the CPU trained on) to FILE, e.g. under docs/data/ to commit it")
    ap.add_argument("--reuse", metavar="FILE", help="a file written by --save: its networks are taken, not retrained")
    ap.add_argument("fit_overrides", nargs="*", help="the study's overrides for every run (e.g. retrain.epochs=3)")
    args = ap.parse_args(argv)
    if args.n < 1 or not 0 < args.band < 1:
        raise SystemExit("-n must be at least 1 and --band between 0 and 1 (a relative latency band, e.g. 0.05)")
    try:
        shard = tuple(int(v) for v in args.shard.split("/"))
        if len(shard) != 2 or not 0 <= shard[0] < shard[1]:
            raise ValueError
    except ValueError:
        raise SystemExit(f"--shard {args.shard!r}: expected I/K with 0 <= I < K, e.g. 0/2 and 1/2 for two processes")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        seeds = [int(v) for v in args.seeds.split(",")] if args.seeds else None
    except ValueError:
        raise SystemExit(f"--seeds {args.seeds!r}: expected integers separated by commas, e.g. 0,1")
    if any(o.startswith("seed=") for o in args.fit_overrides):
        raise SystemExit("the retraining seed is this tool's: pass --seeds instead of a seed= override")
    reuse = Path(args.reuse) if args.reuse else None
    if reuse is not None and not reuse.is_file():
        raise SystemExit(f"--reuse {reuse}: no such file (write one with --save on a machine that has the runs)")
    gt = build(out, args.config, args.n, args.sample_seed, args.fit_overrides, args.report, shard, reuse, seeds)
    cfg = load_config(args.config, list(args.fit_overrides))
    truth = gt.rows
    if not truth:
        raise SystemExit(f"no finished ground-truth run under {out}")
    sd, dof = retrain_sd(truth)
    atomic_write_json(out / "ground_truth.json", {"n": args.n, "sample_seed": args.sample_seed, "finished": len(truth),
                                                   "seeds": seeds, "retrain_sd": sd, "retrain_sd_dof": dof,
                                                   "overrides": args.fit_overrides,
                                                   "recipe": recipe(cfg),
                                                   "networks": truth,
                                                   "missing": gt.missing})
    if args.save:
        save(Path(args.save), truth, gt.space_id, args.sample_seed, args.fit_overrides, args.config, gt.partial, cfg)
        print(f"saved {len(truth)} networks ({len(gt.partial)} more retrainings of networks still missing a seed) to {args.save}")
    accs = sorted(t["test_accuracy"] for t in truth)
    reused = sum(1 for t in truth if reuse is not None and t["dir"] == str(reuse))
    source = f" ({reused} of them read from {reuse}, not retrained here)" if reused else ""
    noise = f"; one retraining's sd {sd:.4f} ({dof} degrees of freedom)" if sd else ""
    print(f"ground truth: {len(truth)} of {args.n} networks retrained{source}; test accuracy {accs[0]:.4f} .. "
          f"{accs[-1]:.4f} (median {accs[len(accs) // 2]:.4f}){noise}")
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
