"""Accuracy against retraining wall-clock for several finished runs, on one plot and in one table.

Each run is a ``fit`` run directory (``state.json`` holds the retraining's per-epoch history with
its wall-clock seconds; ``metrics.json`` the test accuracy and the measured latency). Runs trained
with ``retrain.holdout`` show their held-out (test-free) validation accuracy; others their
training accuracy, labelled as such. A label can be given as ``LABEL=RUN_DIR``.

    python tools/time_to_accuracy.py searched=runs/best mbv2=runs/best_mbv2 fused=runs/best_fused \\
        --out docs/img/time_to_accuracy.png --levels 0.92,0.93,0.939

``--whole-run`` counts time from the start of each run instead: the seconds its stages before the
retraining took (latency table, search, derive; ``state.json``) come first, so a faster table, search
or retraining all show. A ``fit --arch`` retraining of another run's network has almost no stages
before it: ``--before LABEL=RUN_DIR`` charges it that run's instead (the same network found once,
retrained two ways).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hwnas_darts.plots import HELD_OUT, accuracy_curve, plot_time_to_accuracy, time_to_accuracy  # noqa: E402


def load_run(spec: str) -> tuple[str, dict, dict]:
    label, _, path = spec.rpartition("=")
    run = Path(path)
    state_path = run / "state.json"
    if not state_path.is_file():
        raise SystemExit(f"{run}: no state.json - give the directory of a fit run (its `out`)")
    state = json.loads(state_path.read_text())
    retrain = state.get("stages", {}).get("retrain") or {}
    if not retrain.get("history"):
        raise SystemExit(f"{run}: the retraining has not finished (no history in state.json)")
    metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
    return label or run.name, retrain, metrics


#: the stages that run before the retraining, in state.json
BEFORE_RETRAINING = ("lut", "search", "derive", "scale")


def seconds_before_retraining(run: Path) -> float:
    """Seconds a finished run's stages before the retraining took (``state.json``)."""
    state_path = run / "state.json"
    if not state_path.is_file():
        raise SystemExit(f"{run}: no state.json - give the directory of a fit run (its `out`)")
    stages = json.loads(state_path.read_text()).get("stages", {})
    return sum(float(stages.get(k, {}).get("seconds") or 0.0) for k in BEFORE_RETRAINING)


def table(runs: list[tuple[str, dict, dict]], levels: list[float], offsets: dict[str, float] | None = None) -> str:
    head = ["run", "arch", "epochs"] + (["min before retraining"] if offsets is not None else []) + \
        ["retrain min", "held-out acc", "test acc", "latency ms"] + \
        [f"min {'from the start ' if offsets is not None else ''}to {100 * lv:.1f} %" for lv in levels]
    rows = []
    for label, retrain, m in runs:
        kind, pts = accuracy_curve(retrain["history"])
        held = pts[-1][1] if kind == HELD_OUT else None
        off = (offsets or {}).get(label, 0.0)
        reach = [time_to_accuracy(retrain["history"], lv) for lv in levels]
        rows.append([label, f"`{m.get('arch', '?')}`", retrain.get("epochs")]
                    + ([f"{off / 60:.1f}"] if offsets is not None else [])
                    + [f"{retrain.get('seconds', 0) / 60:.1f}",
                       f"{held:.4f}" if held is not None else "-", m.get("test_accuracy", "-"),
                       f"{m['latency_ms']:.2f}" if m.get("latency_ms") else "-"]
                    + [f"{(off + t) / 60:.1f}" if t is not None else "not reached" for t in reach])
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="RUN_DIR or LABEL=RUN_DIR")
    p.add_argument("--out", default="time_to_accuracy.png", help="the plot (PNG)")
    p.add_argument("--levels", default="0.92,0.93,0.939", help="accuracies to report the time to (comma-separated)")
    p.add_argument("--whole-run", action="store_true",
                   help="time from the run's start: its stages before the retraining come first")
    p.add_argument("--before", action="append", default=[], metavar="LABEL=RUN_DIR",
                   help="with --whole-run: charge run LABEL the stages before the retraining of RUN_DIR "
                        "(for a `fit --arch` retraining of that run's network); repeatable")
    a = p.parse_args(argv)
    try:
        levels = [float(v) for v in a.levels.split(",") if v.strip()]
    except ValueError:
        p.error(f"--levels must be comma-separated numbers such as 0.92,0.93, got {a.levels!r}")
    if a.before and not a.whole_run:
        p.error("--before needs --whole-run")
    runs = [load_run(s) for s in a.runs]
    offsets = None
    if a.whole_run:
        dirs = {label: Path(spec.rpartition("=")[2]) for (label, _, _), spec in zip(runs, a.runs)}
        for spec in a.before:
            label, eq, run = spec.partition("=")
            if not eq or label not in dirs:
                p.error(f"--before {spec!r}: give LABEL=RUN_DIR with LABEL one of the runs' labels ({', '.join(dirs)})")
            dirs[label] = Path(run)
        offsets = {label: seconds_before_retraining(d) for label, d in dirs.items()}
    path = plot_time_to_accuracy({label: r["history"] for label, r, _ in runs}, Path(a.out), levels=levels,
                                 offsets=offsets, title="accuracy against time since the run started"
                                 if offsets is not None else "accuracy against retraining time")
    print(table(runs, levels, offsets))
    print(f"\nplot: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
