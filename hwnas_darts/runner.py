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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .errors import RunDirError
from .io import atomic_write_json, read_json
from .ranks import Ranks

if TYPE_CHECKING:
    from .config import Config
    from .derive import Derived
    from .hardware.measure import MeasureSettings
    from .hardware.model import LatencyModel
    from .hardware.table import LatencyTable
    from .objective import Targets
    from .retrain import Retrained
    from .search import SearchModule
    from .space.arch import Arch
    from .space.space import SearchSpace
    from .tracking import Tracker

__all__ = ["RunState", "RunContext", "STAGES", "run_stages"]

_logger = logging.getLogger("hwnas_darts.fit")

STAGES = ("lut", "search", "derive", "scale", "retrain", "profile", "export", "report")
STATE_VERSION = 1


class RunState:
    """``state.json``: which stages are done, their timings and small results (rank 0 only)."""

    def __init__(self, run_dir: Path, data: dict[str, Any] | None = None):
        self.run_dir = run_dir
        self.data = data or {"version": STATE_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "stages": {}}

    @property
    def path(self) -> Path:
        return self.run_dir / "state.json"

    @classmethod
    def load(cls, run_dir: Path) -> "RunState":
        try:
            data = read_json(run_dir / "state.json", "run state")
        except (FileNotFoundError, ValueError) as exc:
            raise RunDirError(f"{run_dir} cannot be resumed: {exc}") from exc
        if data.get("version") != STATE_VERSION:
            raise RunDirError(f"{run_dir}/state.json has version {data.get('version')}, expected {STATE_VERSION}")
        return cls(run_dir, data)

    def done(self, stage: str) -> bool:
        return bool(self.data["stages"].get(stage, {}).get("done"))

    def get(self, stage: str, key: str, default: Any = None) -> Any:
        return self.data["stages"].get(stage, {}).get(key, default)

    def mark(self, stage: str, seconds: float, **info: Any) -> None:
        self.data["stages"][stage] = {"done": True, "seconds": round(seconds, 3), **info}
        self.save()

    def save(self) -> None:
        atomic_write_json(self.path, self.data)


@dataclass
class RunContext:
    """Everything a stage reads: the run's inputs, then each earlier stage's artifact."""

    cfg: "Config"
    run_dir: Path
    state: RunState
    ranks: Ranks = field(default_factory=Ranks)
    resumed: bool = False
    fixed_arch: str | None = None
    space: "SearchSpace | None" = None
    settings: "MeasureSettings | None" = None
    tracker: "Tracker | None" = None
    # artifacts, in stage order
    table: "LatencyTable | None" = None
    lut_check: dict[str, Any] | None = None
    model: "LatencyModel | None" = None
    targets: "Targets | None" = None
    search: "SearchModule | None" = None
    derived: "Derived | None" = None
    arch: "Arch | None" = None
    retrained: "Retrained | None" = None
    profile: dict[str, Any] | None = None
    exports: list[dict[str, Any]] | None = None

    @property
    def leader(self) -> bool:
        return self.ranks.leader

    def path(self, name: str) -> Path:
        return self.run_dir / name

    def seed(self, offset: int = 0) -> None:
        from ._pl import pl

        pl.seed_everything(self.cfg.seed + offset, workers=True, verbose=False)

    def compute_device(self):
        """Where candidate evaluation and testing run: the training accelerator when it is a GPU."""
        import torch

        if self.cfg.trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def input_size(self) -> int:
        return self.space.plan(self.arch)[0].h

    def last_ckpt(self, stage: str) -> str | None:
        p = self.path(f"checkpoints/{stage}/last.ckpt")
        return str(p) if p.is_file() else None

    def trainer(self, stage: str, max_epochs: int, limit_batches: int | None, callbacks: list | None = None,
                limit_val_batches: int | float | None = 0):
        """A Lightning Trainer for a training stage: rolling + last checkpoints (atomic), the run's
        logger on rank 0, Lightning's Timer for the stage's wall time."""
        from ._pl import pl
        from .checkpoint import AtomicCheckpointIO

        t = self.cfg.trainer
        strategy: Any = t.strategy
        if strategy in ("ddp", "ddp_find_unused_parameters_true") or (strategy == "auto" and self.ranks.world > 1):
            # the search's single path leaves the other candidates' weights unused in a step
            strategy = pl.strategies.DDPStrategy(find_unused_parameters=stage == "search")
        cbs: list = [pl.callbacks.ModelCheckpoint(dirpath=str(self.path(f"checkpoints/{stage}")), filename="{epoch}",
                                                  save_last=True, save_top_k=1, every_n_epochs=1,
                                                  save_on_train_epoch_end=True, enable_version_counter=False),
                     pl.callbacks.Timer(interval="epoch")]
        if t.progress:
            cbs.append(pl.callbacks.RichProgressBar(leave=True))
        kwargs: dict[str, Any] = dict(
            accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=strategy,
            precision=t.precision, max_epochs=max_epochs,
            logger=self.tracker.lightning_logger(stage) if self.tracker is not None else False,
            callbacks=cbs + list(callbacks or []), enable_progress_bar=t.progress, enable_model_summary=False,
            num_sanity_val_steps=0, deterministic=t.deterministic or None, default_root_dir=str(self.run_dir),
            plugins=[AtomicCheckpointIO()], log_every_n_steps=10, limit_val_batches=limit_val_batches)
        if limit_batches:
            kwargs["limit_train_batches"] = limit_batches
        return pl.Trainer(**kwargs)


def fit_seconds(trainer) -> float:
    """Wall time of a stage's ``fit`` including the part before an interruption (Lightning's
    Timer state travels in the checkpoints)."""
    from ._pl import pl

    timer = next(c for c in trainer.callbacks if isinstance(c, pl.callbacks.Timer))
    return float(timer.time_elapsed("train"))


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
