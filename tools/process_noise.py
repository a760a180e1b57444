"""How much of a latency measurement's noise lives in the process, and what averaging buys.

Reads a ``lut validate --json`` report measured in several fresh processes
(``hardware.processes=K``) and prints, for groups of 1, 2, ... processes (disjoint groups, the
geometric mean within a group): how well two groups agree (Spearman, the standard deviation of
their log ratio) - the repeatability a measurement of that many processes has in *another*
process - beside the halves of the measurement within its processes, and the learned model's
and the table sum's rank correlation with each group.

    python -m hwnas_darts.lut validate --lut configs/luts/cpu-....json -n 30 --seed 4321 --json v.json hardware.processes=6
    python tools/process_noise.py v.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", help="lut validate --json output with per-process values (hardware.processes >= 2)")
    args = ap.parse_args(argv)
    rep = json.loads(Path(args.report).read_text())
    per = rep.get("process_ms")
    if not per or len(per[0]) < 2:
        print(f"{args.report}: no per-process values; measure with hardware.processes=4 or more", file=sys.stderr)
        return 2
    m = np.log(np.asarray(per, dtype=np.float64))  # networks x processes
    n, k = m.shape
    halves = np.log(np.asarray(rep["halves_ms"], dtype=np.float64))
    learned, table_sum = np.log(rep["predicted_ms"]), np.log(rep["predicted_raw_ms"])
    print(f"{n} networks, {k} processes; within the processes, halves: Spearman "
          f"{spearmanr(halves[:, 0], halves[:, 1]).statistic:.3f}, sd {np.std(halves[:, 0] - halves[:, 1]) * 100:.2f}%")
    print(f"{'processes':>9s} {'pairs':>5s} {'Spearman between groups':>26s} {'sd %':>6s}   learned / table sum Spearman")
    for g in range(1, k // 2 + 1):
        groups = [m[:, i:i + g].mean(axis=1) for i in range(0, k - g + 1, g)]
        pairs = list(itertools.combinations(range(len(groups)), 2))
        sp = [spearmanr(groups[a], groups[b]).statistic for a, b in pairs]
        sd = [np.std(groups[a] - groups[b]) * 100 for a, b in pairs]
        lr = [spearmanr(learned, x).statistic for x in groups]
        sr = [spearmanr(table_sum, x).statistic for x in groups]
        print(f"{g:9d} {len(pairs):5d} {np.mean(sp):8.3f} ({min(sp):.3f}-{max(sp):.3f}) {np.mean(sd):12.2f}   "
              f"{np.mean(lr):.3f} / {np.mean(sr):.3f}")
    allm = m.mean(axis=1)
    print(f"all {k}: learned Spearman {spearmanr(learned, allm).statistic:.3f}, table sum {spearmanr(table_sum, allm).statistic:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
