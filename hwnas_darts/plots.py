"""Plots of a run (PNG, written atomically): the alpha distribution of every layer over the
search epochs, the search's loss terms, the candidates (accuracy vs measured latency, Pareto
front, the chosen one marked), the latency model's predicted-vs-measured scatter, the
retraining curve and the per-layer latency of the final network.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .io import atomic_path  # noqa: E402

__all__ = ["plot_alpha_history", "plot_alpha_snapshot", "plot_candidates", "plot_lut_validation", "plot_losses",
           "plot_layers", "plot_retrain", "plot_time_to_accuracy", "accuracy_curve", "time_to_accuracy", "HELD_OUT",
           "pareto_front", "hypervolume"]

_logger = logging.getLogger(__name__)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def plot_alpha_snapshot(entry: dict[str, Any], path: Path) -> Path:
    """One epoch's distribution: layers x candidates heatmap."""
    alphas = entry["alphas"]
    layers = list(alphas)
    width = max(len(v) for v in alphas.values())
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * width), 0.45 * len(layers) + 1.5))
    grid = [[probs[op] for op in probs] + [math.nan] * (width - len(probs)) for probs in alphas.values()]
    im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=max(max(p.values()) for p in alphas.values()))
    ax.set_yticks(range(len(layers)), layers)
    ax.set_xticks(range(width), [f"#{i}" for i in range(width)])
    for r, probs in enumerate(alphas.values()):
        best = max(probs, key=probs.get)
        ax.text(width - 0.5, r, f" {best}", va="center", fontsize=7)
    ax.set_title(f"architecture distribution, epoch {entry['epoch']}")
    fig.colorbar(im, ax=ax, fraction=0.03)
    return _save(fig, path)


def plot_alpha_history(history: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Per layer: probability of every candidate over the epochs (heatmap)."""
    if not history:
        return None
    layers = list(history[0]["alphas"])
    cols = min(3, len(layers))
    rows = math.ceil(len(layers) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.0 * rows), squeeze=False)
    epochs = [h["epoch"] for h in history]
    vmax = max(max(p for probs in h["alphas"].values() for p in probs.values()) for h in history)
    im = None
    for i, layer in enumerate(layers):
        ax = axes[i // cols][i % cols]
        ops = list(history[0]["alphas"][layer])
        grid = [[h["alphas"][layer][op] for h in history] for op in ops]
        im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_yticks(range(len(ops)), ops, fontsize=6)
        ax.set_xticks(range(len(epochs)), [str(e) for e in epochs], fontsize=7)
        ax.set_title(layer, fontsize=9)
        ax.set_xlabel("epoch", fontsize=7)
    for j in range(len(layers), rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle("candidate probabilities per layer over the search (colour scale 0 to the largest probability)")
    fig.tight_layout()
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.015, pad=0.01)
    return _save(fig, path)


def plot_losses(history: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Search loss terms and expected latency per epoch."""
    if not history:
        return None
    keys = sorted({k for h in history for k in h.get("stats", {})})
    if not keys:
        return None
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    for k in keys:
        if k.endswith("expected_latency_ms") or k.endswith("expected_macs") or k.endswith("expected_intensity"):
            continue
        vals = [h["stats"].get(k, math.nan) for h in history]
        ax1.plot(epochs, vals, marker="o", label=k)
    ax1.set_xlabel("epoch")
    ax1.set_title("loss terms and accuracy")
    ax1.legend(fontsize=7)
    lat = [h["stats"].get("arch/expected_latency_ms", math.nan) for h in history]
    ax2.plot(epochs, lat, marker="o", color="tab:red")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("ms")
    ax2.set_title("expected latency under the architecture distribution")
    fig.tight_layout()
    return _save(fig, path)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points (latency, accuracy) not dominated by another (lower latency and higher accuracy)."""
    front = []
    for lat, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or acc > front[-1][1]:
            front.append((lat, acc))
    return front


def hypervolume(points: Sequence[tuple[float, float]], ref_latency: float, ref_accuracy: float = 0.0) -> float:
    """Area dominated by the front of (latency, accuracy) points up to the reference point."""
    front = [p for p in pareto_front(points) if p[0] < ref_latency and p[1] > ref_accuracy]
    hv = 0.0
    for i, (lat, acc) in enumerate(front):
        next_lat = front[i + 1][0] if i + 1 < len(front) else ref_latency
        hv += (next_lat - lat) * (acc - ref_accuracy)
    return hv


def plot_candidates(cands: Sequence[dict[str, Any]], path: Path, target: float | None = None,
                    xlabel: str = "measured latency (ms)", references: dict[str, float] | None = None) -> Path | None:
    """Validation accuracy vs measured latency of the candidates; Pareto front; the chosen one; the latency
    target and ``references`` (label -> measured latency of a hand-designed network) as vertical lines."""
    pts = [(c["latency_ms"], c["val_accuracy"]) for c in cands
           if c.get("latency_ms") is not None and c.get("val_accuracy") is not None]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], c="tab:blue", label="candidates")
    front = pareto_front(pts)
    ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="tab:gray", label="Pareto front")
    for c in cands:
        if c.get("chosen") and c.get("val_accuracy") is not None:
            ax.scatter([c["latency_ms"]], [c["val_accuracy"]], s=160, facecolors="none", edgecolors="tab:red",
                       linewidths=2, label="chosen")
    if target:
        ax.axvline(target, color="tab:orange", linestyle=":", label="latency target")
    styles = [("tab:green", "-."), ("tab:purple", "--"), ("tab:brown", (0, (1, 1))), ("tab:olive", (0, (5, 1, 1, 1)))]
    for i, (label, ms) in enumerate((references or {}).items()):
        color, ls = styles[i % len(styles)]
        ax.axvline(ms, color=color, linestyle=ls, label=f"{label} (measured {ms:.3g} ms)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation accuracy (supernet weights)")
    ax.set_title("candidates")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_lut_validation(val: dict[str, Any], path: Path, check: dict[str, Any] | None = None) -> Path | None:
    """Predicted vs measured latency of held-out architectures, table sum and learned model (and,
    when given, a run's own check of the table on fresh networks)."""
    if not val or not val.get("measured_ms"):
        return None
    m = val["measured_ms"]
    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    ax.scatter(m, val["predicted_raw_ms"], s=18, label=f"table sum (MAPE {val['table_sum']['mape_pct']:.1f}%)")
    ax.scatter(m, val["predicted_ms"], s=18, label=f"learned (MAPE {val['learned']['mape_pct']:.1f}%, "
                                                  f"Spearman {val['learned']['spearman']:.3f})")
    halves = val.get("halves_ms") or []
    if halves and all(h for h in halves):  # each network's two half-measurements: the noise floor, drawn
        lo_err = [mm - min(h) for mm, h in zip(m, halves)]
        hi_err = [max(h) - mm for mm, h in zip(m, halves)]
        rep = val.get("repeatability") or {}
        ax.errorbar(m, val["predicted_ms"], xerr=[[max(v, 0) for v in lo_err], [max(v, 0) for v in hi_err]], fmt="none",
                    ecolor="tab:orange", alpha=0.6, lw=1,
                    label=f"halves of each measurement (noise ~{rep.get('noise_pct', float('nan')):.1f}%)")
    if check and check.get("measured_ms"):
        m = m + check["measured_ms"]
        ax.scatter(check["measured_ms"], check["predicted_ms"], s=26, marker="x", color="tab:red",
                   label=f"learned, this run's check (MAPE {check['learned_mape_pct']:.1f}%)")
    lo = min(m + val["predicted_raw_ms"] + val["predicted_ms"])
    hi = max(m + val["predicted_raw_ms"] + val["predicted_ms"])
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="gray", alpha=0.15, label="+-10%")
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(f"latency model on {val['n']} held-out architectures", fontsize=10)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_layers(layers: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Per-layer latency share of the final network."""
    if not layers:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(layers) + 1.2))
    names = [f"{l['layer']}: {l['op']}" for l in layers]
    ax.barh(range(len(layers)), [l["latency_ms"] for l in layers], color="tab:green")
    ax.set_yticks(range(len(layers)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("latency (ms, from the table)")
    ax.set_title("per-layer latency of the final network")
    return _save(fig, path)


def plot_retrain(history: Sequence[dict[str, Any]], path: Path) -> Path | None:
    if not history:
        return None
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for key in ("retrain/loss_epoch", "retrain/train_acc", "retrain/val_acc"):
        vals = [h.get(key, math.nan) for h in history]
        if any(not math.isnan(v) for v in vals):
            ax.plot(ep, vals, marker="o", label=key.split("/")[1])
    ax.set_xlabel("epoch")
    ax.set_title("retraining")
    ax.legend(fontsize=8)
    return _save(fig, path)


#: the label :func:`accuracy_curve` gives a curve of held-out (test-free) validation accuracy
HELD_OUT = "held-out validation"


def accuracy_curve(history: Sequence[dict[str, Any]]) -> tuple[str, list[tuple[float, float]]]:
    """(which accuracy, [(seconds, accuracy), ...]) of a retraining history: the held-out (test-free)
    validation accuracy where the run scored one, else the training accuracy (augmented batches)."""
    for key, label in (("retrain/val_acc", HELD_OUT), ("retrain/train_acc", "training (augmented)")):
        pts = [(float(h["seconds"]), float(h[key])) for h in history if key in h and "seconds" in h]
        if pts:
            return label, pts
    return "", []


def time_to_accuracy(history: Sequence[dict[str, Any]], level: float) -> float | None:
    """Seconds of retraining until the held-out validation accuracy first reaches ``level``
    (None: never, or no held-out split)."""
    label, pts = accuracy_curve(history)
    if label != HELD_OUT:
        return None
    return next((t for t, a in pts if a >= level), None)


def plot_time_to_accuracy(curves: dict[str, Sequence[dict[str, Any]]], path: Path,
                          levels: Sequence[float] = (0.93,), title: str = "accuracy against retraining time",
                          offsets: dict[str, float] | None = None) -> Path | None:
    """Accuracy against wall-clock minutes of retraining, one line per run (``label -> history``);
    with ``offsets`` (label -> seconds the run spent before its retraining) against minutes since
    the run started, each line beginning where its retraining did."""
    drawn = {k: accuracy_curve(h) for k, h in curves.items()}
    drawn = {k: v for k, v in drawn.items() if v[1]}
    if not drawn:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    kinds = set()
    for name, (kind, pts) in drawn.items():
        kinds.add(kind)
        off = (offsets or {}).get(name, 0.0)
        line, = ax.plot([(off + t) / 60 for t, _ in pts], [a for _, a in pts], marker="o", ms=3, label=name)
        if offsets is not None:
            ax.axvline(off / 60, color=line.get_color(), lw=0.8, ls=":")
    lo = min(a for _, pts in drawn.values() for _, a in pts)
    for lv in levels:
        if lv >= lo:
            ax.axhline(lv, color="grey", lw=0.8, ls="--")
            ax.annotate(f"{100 * lv:.1f} %", (0, lv), xytext=(2, 2), textcoords="offset points", fontsize=7, color="grey")
    ax.set_xlabel("minutes since the run started (dotted: its retraining starts)" if offsets is not None
                  else "retraining wall-clock (minutes)")
    ax.set_ylabel(" / ".join(sorted(kinds)) + " accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
