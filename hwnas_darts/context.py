"""The run context: what every stage reads - the run's inputs, its state on disk, the ranks, and
each earlier stage's artifact - with the artifacts' types. It sits below the stages (they import
it, it imports none of them); :mod:`hwnas_darts.runner` is the one module that knows the order
of the stages and sits above them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import RunDirError
from .io import atomic_write_json, read_json
from .ranks import Ranks
from .space.arch import Arch

if TYPE_CHECKING:
    from torch import nn

    from .config import Config
    from .data import HwnasDataModule
    from .hardware.model import LatencyModel
    from .hardware.table import LatencyTable
    from .hardware.timing import MeasureSettings
    from .objective import Targets
    from .space.space import SearchSpace
    from .supernet import SuperNet
    from .tracking import Tracker

__all__ = ["RunState", "RunContext", "Searched", "Derived", "Retrained", "fit_seconds", "STATE_VERSION"]

_logger = logging.getLogger("hwnas_darts.fit")

STATE_VERSION = 1


class Searched(Protocol):
    """The search stage's artifact as later stages read it (``search.SearchModule`` is one)."""

    supernet: "SuperNet"
    alpha_history: list[dict[str, Any]]


@dataclass
class Derived:
    """What derive hands on: the chosen architecture and the scored candidates."""

    chosen: Arch
    candidates: list[dict[str, Any]]
    skip_share: dict[str, Any] = field(default_factory=dict)
    alpha_history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Retrained:
    """The retrained network (CPU, eval mode), the data it was trained on, its test accuracy."""

    network: nn.Module
    data: "HwnasDataModule"
    test_accuracy: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)


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
    search: "Searched | None" = None
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
                limit_val_batches: int | float | None = 0, precision: str | None = None):
        """A Lightning Trainer for a training stage: rolling + last checkpoints (atomic), the run's
        logger on rank 0, Lightning's Timer for the stage's wall time. ``precision``: the stage's own
        (the retraining's measured choice), else ``trainer.precision`` (``auto``: fp32)."""
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
            precision=precision or t.fixed_precision(), max_epochs=max_epochs,
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
