"""The stage runner: one run context, the stages in order, the resume bookkeeping, the ranks.

Stages (each recorded in ``RUN_DIR/state.json`` when done, so ``--resume RUN_DIR`` skips it);
every stage is a function of the module that owns its concept, taking the :class:`RunContext`
and returning its typed artifact:

=========  ====================================  ===========================================
stage      function                              artifact
=========  ====================================  ===========================================
lut        ``hardware.check.latency_stage``      :class:`~hwnas_darts.hardware.table.LatencyTable`
search     ``search.search_stage``               :class:`~hwnas_darts.search.SearchModule`
derive     ``derive.derive_stage``               :class:`~hwnas_darts.derive.Derived`
scale      ``space.scaling.scale_stage``         :class:`~hwnas_darts.space.arch.Arch`
retrain    ``retrain.retrain_stage``             :class:`~hwnas_darts.retrain.Retrained`
profile    ``profile.profile_stage``             profile dict (``profile.json``)
export     ``export.export_stage``               export results
report     ``report.report_stage``               metrics dict (``metrics.json``)
=========  ====================================  ===========================================

Under DDP rank 0 runs the single-process stages and writes every file; all ranks take part in
the two training stages, and rank 0 hands them what they need through the process group
(:mod:`hwnas_darts.ranks`).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from .context import RunContext, RunState  # noqa: F401  (the run context, re-exported for callers of the runner)

__all__ = ["RunState", "RunContext", "STAGES", "run_stages"]

_logger = logging.getLogger("hwnas_darts.fit")

STAGES = ("lut", "search", "derive", "scale", "retrain", "profile", "export", "report")


def _on_leader(ctx: RunContext, stage: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 and hand its result (or its failure) to every rank."""
    if not ctx.leader:
        return ctx.ranks.share(stage)
    try:
        value = fn()
    except BaseException as exc:
        ctx.ranks.share(stage, error=exc)
        raise
    return ctx.ranks.share(stage, value)


def setup(ctx: RunContext) -> None:
    from .hardware.measure import MeasureSettings, tune_allocator
    from .space.space import SearchSpace

    tune_allocator()  # the allocator regime the latency table describes (and faster CPU training)
    ctx.space = SearchSpace.from_config(ctx.cfg)
    ctx.settings = MeasureSettings.from_config(ctx.cfg.hardware)
    if ctx.leader:
        from .tracking import make_tracker

        ctx.tracker = make_tracker(ctx.cfg, ctx.run_dir, ctx.state.data.get("tracker"))
        ctx.state.data["tracker"] = ctx.tracker.state()
        ctx.state.save()
        if not ctx.resumed:
            ctx.tracker.log_config()
    _logger.info("space %s: %d searchable layers, %s architectures; run directory %s", ctx.space.space_id,
                 len(ctx.space), f"{ctx.space.size:.3g}", ctx.run_dir)
    if ctx.leader and not ctx.resumed:
        from .estimate import estimate_stages, format_estimate
        from .lut import find_matching_table

        lut = ctx.cfg.hardware.lut
        stored = lut not in (None, "auto", "build") or (
            lut == "auto" and find_matching_table(ctx.settings.record(), ctx.space) is not None)
        _logger.info("estimated time on this machine: %s", format_estimate(estimate_stages(ctx, stored)))


def run_stages(ctx: RunContext) -> dict[str, Any] | None:
    """Run (or skip, when done) every stage; returns the metrics on rank 0, None on the others."""
    from .derive import derive_stage
    from .export import export_stage
    from .hardware.check import latency_stage
    from .hardware.model import LatencyModel
    from .objective import resolve_run_targets
    from .profile import profile_stage
    from .report import report_stage
    from .retrain import retrain_stage
    from .search import search_stage
    from .space.scaling import scale_stage

    setup(ctx)
    ok = False
    try:
        def lut():
            table, ctx.lut_check = latency_stage(ctx)
            return table, resolve_run_targets(ctx, LatencyModel(table, ctx.space))

        ctx.table, ctx.targets = _on_leader(ctx, "lut", lut)
        ctx.model = LatencyModel(ctx.table, ctx.space)
        pending = _on_leader(ctx, "search", lambda: not (ctx.fixed_arch or ctx.state.done("search")))
        ctx.search = search_stage(ctx, pending)

        def pick():
            ctx.derived = derive_stage(ctx)
            ctx.arch = scale_stage(ctx)
            return ctx.arch, ctx.table, not ctx.state.done("retrain")

        ctx.arch, ctx.table, pending = _on_leader(ctx, "derive", pick)
        ctx.retrained = retrain_stage(ctx, pending)
        if not ctx.leader:
            ok = True
            return None
        ctx.profile = profile_stage(ctx)
        ctx.exports = export_stage(ctx)
        metrics = report_stage(ctx)
        ok = True
        return metrics
    finally:
        if ctx.tracker is not None:
            ctx.tracker.finish(ok)
