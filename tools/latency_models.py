"""Compare latency-model forms on held-out measurements: which one generalises?

Refits each form on the table's own calibration networks (their stored end-to-end latencies)
and scores it on the networks of one or more ``lut validate --json`` reports (other networks,
measured in another process at another time):

* ``table sum``: the plain sum of the table's rows;
* ``intercept``: the sum plus a constant;
* ``groups``: a scale per op family x stage, plus a constant (the previous model);
* ``rows``: groups plus a per-row (layer x op) in-context correction, both ridges chosen by
  cross-validation (lowest error);
* ``shipped``: what ``fit_calibration`` chooses - the one-standard-error rule over the same grid,
  which drops the row corrections when the data do not support them.

    python tools/latency_models.py configs/luts/cpu-amd-epyc-zen3-2threads-fashion_mnist.json val1.json val2.json
"""

from __future__ import annotations

import argparse
import math
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hwnas_darts.config import load_config  # noqa: E402
from hwnas_darts.hardware.table import LatencyTable  # noqa: E402
from hwnas_darts.hardware.calibration import RIDGE_GRID, fit_calibration, rank_metrics  # noqa: E402
from hwnas_darts.hardware.model import LatencyModel  # noqa: E402
from hwnas_darts.space import Arch, SearchSpace  # noqa: E402

#: (group ridge, row ridge) per form; None = cross-validated; a huge ridge switches a term off
FORMS = {"intercept": (1e6, math.inf), "groups": (None, math.inf), "rows": (None, None), "shipped": None}


def fit_form(table: LatencyTable, space: SearchSpace, form: str) -> LatencyModel:
    """The form refitted on the table's calibration networks (cross-validated ridges, same folds
    as the shipped fit; a huge ridge switches a term off)."""
    cal = table.calibration
    archs = [Arch.from_string(a) for a in cal["archs"]]
    raw = LatencyModel(table, space, calibration={})
    ridge = FORMS[form]
    if ridge is None or None not in ridge:
        fitted = fit_calibration(raw, archs, cal["measured_ms"], ridge=ridge)
    else:  # cross-validated, the lowest error wins (no one-standard-error rule)
        grid = [(g, r) for g, r in RIDGE_GRID if (ridge[1] is None or r == ridge[1]) and (ridge[1] is not None or not math.isinf(r))]
        scores = {}
        for g, r in grid:
            scores[(g, r)] = fit_calibration(raw, archs, cal["measured_ms"], ridge=None, grid=[(g, r)])["cv_mape_pct"]
        fitted = fit_calibration(raw, archs, cal["measured_ms"], ridge=min(scores, key=scores.get))
    return LatencyModel(table, space, calibration=fitted)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("lut")
    ap.add_argument("reports", nargs="+", help="lut validate --json outputs")
    ap.add_argument("--config", help="config of the table's space (default: configs/fashion_mnist.yaml)")
    args = ap.parse_args(argv)
    table = LatencyTable.load(args.lut)
    space = SearchSpace.from_config(load_config(args.config))
    models = {form: fit_form(table, space, form) for form in FORMS}
    print(f"{'report':28s} {'form':10s} {'Spearman':>8s} {'MAPE %':>7s} {'max %':>6s} {'<=10%':>6s}   noise %")
    for rep_path in args.reports:
        rep = json.loads(Path(rep_path).read_text())
        archs = [Arch.from_string(a) for a in rep["archs"]]
        meas = rep["measured_ms"]
        noise = (rep.get("repeatability") or {}).get("noise_pct")
        rows = {"table sum": [LatencyModel(table, space, calibration={}).predict(a) for a in archs]}
        rows.update({form: [m.predict(a) for a in archs] for form, m in models.items()})
        for form, pred in rows.items():
            r = rank_metrics(pred, meas)
            nz = f"{noise:.2f}" if noise is not None else "-"
            print(f"{Path(rep_path).name:28s} {form:10s} {r['spearman']:8.3f} {r['mape_pct']:7.2f} {r['max_err_pct']:6.1f} "
                  f"{100 * r['within_10pct']:5.0f}%   {nz}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
