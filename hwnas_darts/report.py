"""The run's ``report`` stage: ``metrics.json``, ``report.md`` with the plots of
:mod:`hwnas_darts.plots`, the tracker's summary and artifacts, and the summary printed at the end.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .decision import decision_summary, placement
from .io import atomic_write_json, atomic_write_text
from .plots import (accuracy_curve, plot_alpha_history, plot_candidates, plot_layers, plot_losses, plot_lut_validation,
                    plot_retrain, plot_time_to_accuracy, time_to_accuracy, HELD_OUT)

#: accuracies whose time of first reach the report and metrics.json state
ACCURACY_LEVELS = (0.9, 0.93, 0.939)

#: hand-designed networks measured beside the run's own (``tools/side_by_side.py --run RUN`` writes it); the
#: report and metrics.json include them when the run directory has this file
REFERENCES_FILE = "references.json"

if TYPE_CHECKING:
    from .context import RunContext

__all__ = ["write_report", "collect_metrics", "report_stage", "flops_claim", "print_summary", "load_references",
           "CONTRACT_KEYS", "REFERENCES_FILE"]

#: keys every metrics.json holds (the public contract)
CONTRACT_KEYS = ("test_accuracy", "latency_ms", "latency_ms_predicted", "macs", "flops", "params", "bytes",
                 "intensity", "efficiency", "score", "search_seconds", "retrain_seconds", "device")

_logger = logging.getLogger(__name__)


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:,.{digits}g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def load_references(run_dir: Path, arch: str, batch_size: int | None = None) -> dict[str, Any] | None:
    """The hand-designed networks measured beside this run's network (:data:`REFERENCES_FILE`), or None.

    Returns ``{"batch_size", "device", "repeats", "run_ms": [...], "networks": {label: {"arch", "ms": [...],
    "mean_ms", "ratio": [...]}}}`` with one entry per repetition (``ratio`` = this run's network / the reference,
    within the same repetition). A file measured for another network or batch size is ignored with a warning: its
    numbers do not describe this run.
    """
    path = Path(run_dir) / REFERENCES_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        archs, reps = data["archs"], data["repeats"]
        if archs.get("run") != arch:
            _logger.warning("%s measured another network (%s), not this run's %s: ignored; re-run tools/side_by_side.py "
                            "--run %s", path, archs.get("run"), arch, run_dir)
            return None
        if batch_size is not None and data.get("batch_size") != batch_size:
            _logger.warning("%s was measured at batch %s, this run's latency at batch %s: ignored", path,
                            data.get("batch_size"), batch_size)
            return None
        run_ms = [float(r["median_ms"]["run"]) for r in reps]
        nets = {}
        for label, text in archs.items():
            if label == "run":
                continue
            ms = [float(r["median_ms"][label]) for r in reps]
            nets[label] = {"arch": text, "ms": ms, "mean_ms": statistics.fmean(ms),
                           "ratio": [a / b for a, b in zip(run_ms, ms)]}
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError, statistics.StatisticsError) as e:
        _logger.warning("%s is unreadable (%s): ignored; re-run tools/side_by_side.py --run %s", path, e, run_dir)
        return None
    if not run_ms or not nets:
        return None
    return {"batch_size": data.get("batch_size"), "device": (data.get("device") or {}).get("name"),
            "repeats": len(run_ms), "run_ms": run_ms, "networks": nets}


def write_report(run_dir: Path, ctx: dict[str, Any]) -> Path:
    """Write ``report.md`` (and its plots) from the pipeline's context dict."""
    run_dir = Path(run_dir)
    plots = run_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path | None] = {}
    hist = ctx.get("alpha_history") or []
    made["alphas"] = plot_alpha_history(hist, plots / "alphas.png")
    made["losses"] = plot_losses(hist, plots / "search_losses.png")
    cands = ctx.get("candidates") or []
    targets = ctx.get("targets") or {}
    refs = ctx.get("references")
    made["candidates"] = plot_candidates(cands, plots / "candidates.png",
                                         targets.get("latency") if targets.get("cost") == "latency" else None,
                                         references={k: v["mean_ms"] for k, v in refs["networks"].items()} if refs else None)
    made["lut"] = plot_lut_validation(ctx.get("lut_validation") or {}, plots / "lut_validation.png", ctx.get("lut_check"))
    prof = ctx.get("profile") or {}
    made["layers"] = plot_layers(prof.get("layers") or [], plots / "layers.png")
    made["retrain"] = plot_retrain(ctx.get("retrain_history") or [], plots / "retrain.png")
    made["time_to_accuracy"] = plot_time_to_accuracy({"this run": ctx.get("retrain_history") or []},
                                                     plots / "time_to_accuracy.png", levels=ACCURACY_LEVELS)

    def img(key: str, alt: str) -> str:
        p = made.get(key)
        return f"![{alt}](plots/{p.name})\n" if p else ""

    m = ctx.get("metrics", {})
    lines = [f"# hwnas_darts run `{ctx.get('name', run_dir.name)}`", ""]
    lines += ["## Result", "", _table(["metric", "value"], [[k, m.get(k)] for k in (
        "test_accuracy", "latency_ms", "latency_ms_predicted", "latency_ms_batch1", "macs", "flops", "params", "bytes",
        "intensity", "efficiency", "score", "peak_bytes", "search_seconds", "retrain_seconds") if k in m]), ""]
    arch = ctx.get("arch")
    if arch:
        lines += [f"Final architecture: `{arch}`", ""]
    dev = ctx.get("device") or {}
    if dev:
        lines += ["## Target device", "", _table(["field", "value"], [[k, v] for k, v in dev.items()]), ""]
        roof = ctx.get("roofline")
        if roof:
            lines += [f"Roofline (probed): peak {roof['peak_flops'] / 1e9:,.1f} GFLOP/s, bandwidth "
                      f"{roof['bandwidth'] / 1e9:,.1f} GB/s, ridge point {roof['ridge']:.2f} FLOP/byte.", ""]
    val = ctx.get("lut_validation")
    check = (ctx.get("metrics") or {}).get("latency_check")
    if val or check:
        lines += ["## Latency model", ""]
    if check:
        verdict = "passed" if check.get("ok") else f"**failed** (action: {check.get('action')})"
        lines += [f"This run's check of the stored table on {check['n']} fresh random networks measured at the start of "
                  f"the run: learned model MAPE {_fmt(check['learned_mape_pct'])}% (largest error "
                  f"{_fmt(check['learned_max_err_pct'])}%), Spearman {_fmt(check['learned_spearman'])}, median "
                  f"measured/predicted {_fmt(check['median_ratio'])}; table sum MAPE {_fmt(check['table_sum_mape_pct'])}%; "
                  f"measurement noise about {_fmt(check.get('noise_pct'))}%. Tolerance {_fmt(check['tolerance_pct'])}%: "
                  f"{verdict}.", ""]
    if val:
        rep = val.get("repeatability") or {}
        lines += [f"Stored validation of the table ({val.get('kind', 'held-out networks')}, {val['n']} random architectures "
                  "measured end to end):", "",
                  _table(["predictor", "Spearman", "Kendall", "MAPE %", "max error %", "within +-10%"],
                         [[name, val[key]["spearman"], val[key]["kendall"], val[key]["mape_pct"],
                           val[key].get("max_err_pct"), val[key]["within_10pct"]]
                          for name, key in (("table sum", "table_sum"), ("learned", "learned"))]), ""]
        if rep:
            pr = rep.get("processes")
            lines += [f"Repeatability of the measurement itself (first vs second half of each network's timing): "
                      f"Spearman {_fmt(rep['spearman'])}, mean difference {_fmt(rep['mape_pct'])}%"
                      + (f"; between its {pr['n_processes']} fresh processes: Spearman {_fmt(pr['spearman'])}, mean "
                         f"difference {_fmt(pr['mape_pct'])}%" if pr else "")
                      + f" - noise floor about {_fmt(rep['noise_pct'])}%.", ""]
        lines += [f"Rank correlation between MACs and measured latency on the same architectures: Spearman "
                  f"{_fmt(val['macs_vs_latency']['spearman'])}, Kendall {_fmt(val['macs_vs_latency']['kendall'])}.", "",
                  img("lut", "latency model validation")]
    cfgtext = ctx.get("config_yaml")
    lines += ["## Search", ""]
    if ctx.get("search"):
        s = ctx["search"]
        unit = "MACs" if targets.get("cost") == "macs" else "ms"
        lines += [f"Relaxation `{s.get('relaxation')}`, {s.get('epochs')} epochs ({s.get('warmup_epochs')} warm-up), "
                  f"{_fmt(s.get('seconds'))} s.", "",
                  f"Targets: latency {_fmt(targets.get('latency'))} {unit} (the fastest architecture of the space: "
                  f"{_fmt(targets.get('fastest'))} {unit}, median of random ones: {_fmt(targets.get('median'))} {unit}), "
                  f"intensity {_fmt(targets.get('intensity'))} FLOP/byte, efficiency {_fmt(targets.get('efficiency'))}.", ""]
    collapse = ctx.get("skip_share")
    if collapse:
        note = ("**Warning: the distribution collapsed onto skip connections** (the known DARTS failure); "
                "consider `derive.max_skips`." if collapse.get("collapsed") else "No collapse onto skip connections.")
        lines += [f"Skip connections: {collapse.get('argmax_skips')} of {collapse.get('layers_with_skip')} skip-capable "
                  f"layers choose skip in the argmax; mean skip probability {_fmt(collapse.get('mean_skip_prob'))}. {note}", ""]
    rows = ctx.get("decision") or []
    if rows:
        summ = decision_summary(rows)
        where = ("the search's decision (the argmax in every layer)" if not summ["differs_from_argmax"] else
                 f"the argmax except in {', '.join(summ['differs_from_argmax'])}"
                 + (" (near-ties only)" if summ["differs_only_in_ties"] else " (**not only near-ties**)"))
        lines += ["How decided the search is (normalised entropy of each layer's final distribution: 1 = uniform, "
                  "0 = one op), and where the returned network sits in it: " + where + ".", "",
                  _table(["layer", "entropy", "most probable", "p", "runner-up", "p", "returned op", "p", "rank"],
                         [[r["layer"], round(r["entropy"], 3), f"`{r['top']}`", round(r["p_top"], 3),
                           f"`{r['second']}`" + (" (tie)" if r["tie"] else ""), round(r["p_second"], 3),
                           f"`{r['op']}`", round(r["p_op"], 3), r["rank"]] for r in rows]), ""]
    lines += [img("alphas", "alpha heatmaps"), img("losses", "loss terms")]
    if cands:
        lone = len(cands) == 1 and str(cands[0].get("latency_source", "")).startswith("predicted (")
        lines += ["## Candidates", "", "Accuracy on the architecture-validation split with the supernet's weights; hardware "
                  + ("metrics from the latency model: the search returned one candidate, so no choice rests on its latency "
                     "(its measurement is the final network's, below)." if lone else "metrics measured on the device."), "",
                  _table(["", "arch", "sources", "val acc", "latency ms", "predicted ms", "MACs", "I", "E", "score"],
                         [["**>**" if c.get("chosen") else "", f"`{c['arch']}`", ",".join(c.get("sources", [])),
                           c.get("val_accuracy"), c.get("latency_ms"), c.get("latency_ms_predicted"), c.get("macs"),
                           c.get("intensity"), c.get("efficiency"), c.get("score")] for c in cands]), "",
                  img("candidates", "candidates")]
        claim = ctx.get("flops_claim")
        if claim:
            lines += [claim, ""]
        lines += _references_section(refs, run_dir)
    plan = ctx.get("plan") or []
    if plan:
        lines += ["## Final network", "", _table(["layer", "op", "input (CxHxW)", "out channels", "stride"],
                                               [[p["name"], f"`{p['op']}`", f"{p['c_in']}x{p['h']}x{p['w']}", p["c_out"],
                                                 p["stride"]] for p in plan]), ""]
    if prof.get("layers"):
        lines += ["### Profile per layer", "", _table(["layer", "op", "MACs", "bytes", "I", "latency ms", "share"],
                                                   [[l["layer"], f"`{l['op']}`", l["macs"], l["bytes"], l["intensity"],
                                                     l["latency_ms"], f"{100 * l['share']:.1f}%"] for l in prof["layers"]]),
                  "", img("layers", "per-layer latency")]
    lines += [img("retrain", "retraining")]
    step = m.get("retrain_step")
    if step:
        from .retrain import step_label

        label = step_label(step["channels_last"], str(step["precision"]))
        if step.get("chosen_by") == "measured":
            times = "; ".join(f"{k} {statistics.median(v):.1f} ms ({', '.join(f'{x:.1f}' for x in v)})"
                              for k, v in step["ms_per_step"].items())
            lines += [f"Training step: **{label}**, the fastest measured here ({step['device']}, {step['threads']} "
                      f"threads, batch {step['batch_size']}; median ms per step, every round in brackets: {times}). "
                      "Set `trainer.channels_last` / `trainer.precision` to a value to override.", ""]
        else:
            lines += [f"Training step: {label} (set in the config; `auto` times the alternatives on this device).", ""]
    plan = m.get("retrain_plan")
    if plan:
        binding = plan.get("binding") or "retrain.time_budget_minutes"
        spent = plan.get("run_budget") if binding == "retrain.run_budget_minutes" else None
        lines += [f"Retraining schedule: **{plan['epochs']} epochs** (at most {plan['max_epochs']}): `{binding}` left "
                  f"{_fmt((plan.get('budget_s') or 0) / 60, 3)} min"
                  + (f" (the stages before it took {_fmt(spent['spent_s'] / 60, 3)} min, those after it were "
                     f"estimated at {_fmt(spent['after_s'] / 60, 2)} min)" if spent else "")
                  + (f", and one epoch was probed at {_fmt(plan['epoch_s'], 3)} s here" if plan.get("epoch_s") else "")
                  + " (8 % kept for drift and checkpoints)."
                  + (f" Re-planned after the first epoch, which took {_fmt(rp['epoch_s'], 3)} s: {rp['epochs_before']} "
                     f"-> {rp['epochs']} epochs." if (rp := plan.get("replan")) and rp["epochs"] != rp["epochs_before"] else
                     f" The first epoch took {_fmt(rp['epoch_s'], 3)} s, which kept the plan." if rp else ""), ""]
    hist = ctx.get("retrain_history") or []
    kind, pts = accuracy_curve(hist)
    if pts:
        reach = [f"{100 * lv:.1f} % after {_fmt(t / 60, 3)} min" if t is not None else f"{100 * lv:.1f} % not reached"
                 for lv in ACCURACY_LEVELS for t in [time_to_accuracy(hist, lv)]]
        lines += ["### Time to accuracy", "",
                  f"{kind.capitalize()} accuracy after each epoch against the retraining's wall-clock time"
                  + (f" (final {_fmt(pts[-1][1])} after {_fmt(pts[-1][0] / 60, 3)} min; " + "; ".join(reach) + ")."
                     if kind == HELD_OUT else
                     " (no held-out split: set `retrain.holdout` to score every epoch on images kept out of training)."),
                  "", img("time_to_accuracy", "accuracy against retraining time")]
    exports = ctx.get("exports") or []
    if exports:
        lines += ["## Exports", "", "Each file was reloaded in a fresh process and compared with the eager network at a "
                  "batch size different from the one used to export.", "",
                  _table(["kind", "file", "kept", "max abs diff", "same predictions", "note"],
                         [[e["kind"], e.get("path") and Path(e["path"]).name, e["ok"], e.get("max_abs_diff"),
                           e.get("same_predictions"), e.get("reason") or ""] for e in exports]), ""]
    stages = ctx.get("stages") or {}
    if stages:
        lines += ["## Stage timings", "", _table(["stage", "seconds"], [[k, v.get("seconds")] for k, v in stages.items()]), ""]
    if cfgtext:
        lines += ["## Configuration", "", "```yaml", cfgtext.rstrip(), "```", ""]
    return atomic_write_text(run_dir / "report.md", "\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------------
# The run's ``report`` stage
# ------------------------------------------------------------------------------------------------
def collect_metrics(ctx: "RunContext", references: dict[str, Any] | None = None) -> dict[str, Any]:
    """``metrics.json``: the contract keys plus the details a comparison across runs needs (with
    ``references``, :func:`load_references`'s result, the hand-designed networks' mean latency and this run's
    latency relative to each)."""
    from .objective import score

    prof, st, targets = ctx.profile, ctx.state, ctx.targets
    acc = float(st.get("retrain", "test_accuracy"))
    cost = prof["macs"] if targets.cost == "macs" else prof["latency_ms"]
    rec = prof["device"]
    m: dict[str, Any] = {k: prof.get(k) for k in ("latency_ms", "latency_ms_predicted", "macs", "flops", "params",
                                                  "bytes", "intensity", "efficiency")}
    m.update(test_accuracy=acc,
             score=score(ctx.cfg.objective, targets, acc, cost, prof["intensity"], prof.get("efficiency") or 0.0),
             search_seconds=st.get("search", "seconds"), retrain_seconds=st.get("retrain", "seconds"),
             device=f"{rec['kind']}: {rec['name']}", device_record=rec, batch_size=prof["batch_size"],
             **{k: prof.get(k) for k in ("latency_ms_raw", "latency_ms_in_process", "latency_ms_p90",
                                         "latency_ms_batch1", "peak_bytes")},
             arch=ctx.arch.to_string(), arch_searched=ctx.derived.chosen.to_string(), space_id=ctx.space.space_id,
             seed=ctx.cfg.seed, targets=targets.to_dict(), lut_seconds=st.get("lut", "seconds"),
             derive_seconds=st.get("derive", "seconds"))
    step = st.get("retrain", "step")
    if step:
        measured = st.data.get("retrain_step") or {}
        m["retrain_step"] = {**step, **({k: measured[k] for k in ("device", "threads", "batch_size", "ms_per_step")
                                        if k in measured} if step.get("chosen_by") == "measured" else {})}
    plan = st.data.get("retrain_plan")
    if plan and plan.get("arch") == ctx.arch.to_string():
        m["retrain_plan"] = {k: plan.get(k) for k in ("epochs", "max_epochs", "binding", "budget_s", "run_budget", "replan")}
        m["retrain_plan"]["epoch_s"] = (plan.get("probe") or {}).get("epoch_s")
        if m["retrain_plan"]["budget_s"] is None and plan.get("budget_minutes"):  # a plan of an older run
            m["retrain_plan"]["budget_s"] = plan["budget_minutes"] * 60
    history = st.get("retrain", "history") or []
    kind, curve = accuracy_curve(history)
    if kind == HELD_OUT:
        m["holdout_accuracy"] = curve[-1][1]
        m["time_to_accuracy_s"] = {f"{lv:g}": time_to_accuracy(history, lv) for lv in ACCURACY_LEVELS}
    val = ctx.table.validation or {}
    if val.get("learned"):
        m["latency_model"] = {"spearman": val["learned"]["spearman"], "mape_pct": val["learned"]["mape_pct"],
                              "max_err_pct": val["learned"].get("max_err_pct"), "n": val["n"],
                              "noise_pct": (val.get("repeatability") or {}).get("noise_pct"),
                              "unit": val.get("unit"), "kind": val.get("kind", "stored validation")}
    if st.get("lut", "check"):
        m["latency_check"] = st.get("lut", "check")  # this run's own check of the table on fresh networks
    if targets.cost == "latency" and targets.latency:
        m["latency_target_ms"] = targets.latency
        m["latency_vs_target"] = prof["latency_ms"] / targets.latency
    if references:
        m["references_ms"] = {k: v["mean_ms"] for k, v in references["networks"].items()}
        m["latency_vs_references"] = {k: statistics.fmean(v["ratio"]) for k, v in references["networks"].items()}
    return m


def _references_section(refs: dict[str, Any] | None, run_dir: Path) -> list[str]:
    if not refs:
        return [f"No hand-designed references measured for this run: `python tools/side_by_side.py --run {run_dir}` "
                f"measures them beside this network, then `python -m hwnas_darts.fit --resume {run_dir}` adds them here.",
                ""]
    n = refs["repeats"]
    rows = [["this run", "", ", ".join(f"{x:.2f}" for x in refs["run_ms"]), statistics.fmean(refs["run_ms"]), ""]]
    rows += [[label, f"`{r['arch']}`", ", ".join(f"{x:.2f}" for x in r["ms"]), r["mean_ms"],
              ", ".join(f"{x:.2f}" for x in r["ratio"])] for label, r in refs["networks"].items()]
    return ["### Measured references", "",
            f"Hand-designed networks measured beside this run's network (`tools/side_by_side.py`: interleaved, {n} "
            f"repetition{'s' * (n != 1)}, batch {refs['batch_size']}, {refs['device']}); every repetition is listed.", "",
            _table(["network", "arch", "ms per repetition", "mean ms", "this run / reference (per repetition)"], rows), ""]


def report_stage(ctx: "RunContext") -> dict[str, Any]:
    """``metrics.json``, ``report.md`` and the tracker's summary (final metrics), plots and artifacts."""
    import time
    from dataclasses import asdict

    from .config import config_to_yaml

    t0 = time.perf_counter()
    refs = load_references(ctx.run_dir, ctx.arch.to_string(), ctx.profile["batch_size"])
    metrics = collect_metrics(ctx, refs)
    d = ctx.derived
    rows = []
    if ctx.search is not None and ctx.cfg.search.epochs > 0:
        rows = placement(ctx.search.supernet.alphas_dict(), d.chosen.ops, ctx.cfg.derive.tie_margin)
        metrics["decision"] = decision_summary(rows)
        metrics["entropy"] = {r["layer"]: r["entropy"] for r in rows}
    atomic_write_json(ctx.path("metrics.json"), metrics)
    write_report(ctx.run_dir, dict(
        name=ctx.cfg.name, config_yaml=config_to_yaml(ctx.cfg), metrics=metrics, arch=ctx.arch.to_string(),
        device=ctx.table.device, roofline=ctx.table.roofline.to_dict() if ctx.table.roofline else None,
        lut_validation=ctx.table.validation, lut_check=ctx.lut_check, targets=ctx.targets.to_dict(),
        plan=[asdict(p) for p in ctx.space.plan(ctx.arch)], stages=ctx.state.data["stages"],
        search={"relaxation": ctx.cfg.search.relaxation, "epochs": ctx.cfg.search.epochs,
                "warmup_epochs": ctx.cfg.search.warmup_epochs, "seconds": metrics["search_seconds"]},
        alpha_history=d.alpha_history, decision=rows, skip_share=d.skip_share, candidates=d.candidates,
        flops_claim=flops_claim(d.candidates), profile=ctx.profile, exports=ctx.exports,
        references=refs,
        retrain_history=ctx.retrained.history))
    if ctx.tracker is not None:
        ctx.tracker.summary({k: v for k, v in metrics.items() if not isinstance(v, dict)})
        for name in ("candidates", "alphas", "lut_validation", "layers", "search_losses"):
            p = ctx.path(f"plots/{name}.png")
            if p.is_file():
                ctx.tracker.log_image(f"report/{name}", p)
        ctx.tracker.artifacts([ctx.path(n) for n in ("arch.json", "lut.json", "model.ts", "model.pt2", "model.onnx",
                                                     "report.md", "metrics.json", "candidates.json", "alphas.json")])
    ctx.state.mark("report", time.perf_counter() - t0)
    return metrics


def flops_claim(cands: list[dict[str, Any]]) -> str | None:
    """Did the chosen candidate have more MACs but lower measured latency than the MACs-cheapest one?"""
    if len(cands) < 2:
        return None
    chosen = next((c for c in cands if c.get("chosen")), None)
    cheapest = min(cands, key=lambda c: c["macs"])
    if chosen is None or chosen is cheapest or chosen["arch"] == cheapest["arch"]:
        return "The chosen candidate is also the one with the fewest MACs."
    more_macs = chosen["macs"] > cheapest["macs"]
    faster = chosen["latency_ms"] < cheapest["latency_ms"]
    verdict = ("yes: more MACs, lower measured latency" if more_macs and faster else
               "no" + ("" if more_macs else " (it also has fewer MACs)"))
    return (f"More MACs but faster than the MACs-cheapest candidate? {verdict} - chosen {chosen['macs']:,.0f} MACs at "
            f"{chosen['latency_ms']:.3f} ms vs {cheapest['macs']:,.0f} MACs at {cheapest['latency_ms']:.3f} ms.")


#: the files the end-of-run table names, those of them the run wrote
_SUMMARY_FILES = ("metrics.json", "arch.json", "model.ts", "model.pt2", "model.onnx", "report.md")


def print_summary(metrics: dict[str, Any], run_dir: Path) -> None:
    """The table printed at the end of ``fit``."""
    from rich.table import Table

    from .cli import console

    t = Table(title=f"hwnas_darts run {run_dir}", show_header=False)
    f = _fmt
    rows = [("test accuracy", f(metrics["test_accuracy"])),
            ("latency (measured)", f"{f(metrics['latency_ms'])} ms at batch {metrics['batch_size']}"),
            ("latency (predicted)", f"{f(metrics['latency_ms_predicted'])} ms"),
            ("latency batch 1", f"{f(metrics.get('latency_ms_batch1'))} ms"),
            ("MACs / params", f"{f(metrics['macs'])} / {f(metrics['params'])}"),
            ("intensity I", f"{f(metrics['intensity'])} FLOP/B"),
            ("efficiency E", f(metrics["efficiency"])),
            ("score", f(metrics["score"])),
            ("search / retrain", f"{f(metrics['search_seconds'])} s / {f(metrics['retrain_seconds'])} s"),
            ("device", metrics["device"]),
            ("architecture", metrics["arch"]),
            ("files", f"{run_dir}/ ({', '.join(n for n in _SUMMARY_FILES if (Path(run_dir) / n).is_file())})")]
    for k, v in rows:
        t.add_row(k, v)
    console().print(t)
