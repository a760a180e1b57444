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
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_search import run_fit  # noqa: E402

from hwnas_darts.config import load_config  # noqa: E402
from hwnas_darts.io import atomic_write_json  # noqa: E402
from hwnas_darts.stats import kendall_tau_interval  # noqa: E402

_logger = logging.getLogger("supernet_ranking")


def rescore(run: Path, archs: list[str], bn_batches: int, finetune_steps: int) -> list[float]:
    """Supernet accuracy of each architecture under other evaluation settings (the run's last
    search checkpoint, its own validation split)."""
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
        out.append(evaluate_accuracy(net, arch, dm.archval_dataloader(), cfg.derive.eval_batches,
                                     calib_loader=calib if bn_batches else None, calib_batches=bn_batches))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="finished run directories (their candidates are pooled per run)")
    ap.add_argument("--out", default="runs/ranking")
    ap.add_argument("--variants", default="", help="comma-separated evaluation settings to compare: bnN (N BatchNorm "
                                                   "re-estimation batches), ftN (N fine-tune steps), e.g. bn50,ft100")
    ap.add_argument("fit_overrides", nargs="*", help="overrides of the retraining of every candidate")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    report: dict[str, Any] = {"runs": []}
    for run in map(Path, args.runs):
        cands = json.loads((run / "candidates.json").read_text())["candidates"]
        cfg_path = str(run / "config.yaml")
        rows = []
        for i, c in enumerate(cands):
            m = run_fit(out / run.name / f"cand{i}", cfg_path, list(args.fit_overrides), arch=c["arch"])
            rows.append({"arch": c["arch"], "supernet_accuracy": c["val_accuracy"], "test_accuracy": m["test_accuracy"]})
            _logger.info("%s cand%d: supernet %.4f, retrained %.4f", run.name, i, c["val_accuracy"], m["test_accuracy"])
        tau = kendall_tau_interval([r["supernet_accuracy"] for r in rows], [r["test_accuracy"] for r in rows])
        entry = {"run": str(run), "candidates": rows, "kendall_tau": tau[0], "kendall_tau_ci": [tau[1], tau[2]],
                 "variants": {}}
        for v in filter(None, args.variants.split(",")):
            bn, ft = (int(v[2:]), 0) if v.startswith("bn") else (10, int(v[2:]))
            accs = rescore(run, [r["arch"] for r in rows], bn, ft)
            t = kendall_tau_interval(accs, [r["test_accuracy"] for r in rows])
            entry["variants"][v] = {"supernet_accuracy": accs, "kendall_tau": t[0], "kendall_tau_ci": [t[1], t[2]]}
        report["runs"].append(entry)
        print(f"{run}: Kendall tau {tau[0]:+.3f} [{tau[1]:+.3f}, {tau[2]:+.3f}] over {len(rows)} candidates"
              + "".join(f"; {k}: {e['kendall_tau']:+.3f}" for k, e in entry["variants"].items()))
    atomic_write_json(out / "ranking.json", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
