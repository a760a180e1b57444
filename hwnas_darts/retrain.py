"""Retraining the chosen network from scratch, and its test (Lightning, torchmetrics accuracy)."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from ._pl import pl
from .config import RetrainConfig
from .errors import TrainingError
from .io import atomic_path
from .network import build_network
from .space.arch import Arch
from .space.space import SearchSpace

if TYPE_CHECKING:
    from .data import HwnasDataModule
    from .runner import RunContext

__all__ = ["RetrainModule", "Retrained", "retrain_stage"]

_logger = logging.getLogger(__name__)


class RetrainModule(pl.LightningModule):
    """Cross-entropy (with label smoothing) training of a task network; top-1 test accuracy.

    Args:
        space: the search space (or its :meth:`~hwnas_darts.space.space.SearchSpace.spec`).
        arch: the architecture (or its compact string) whose task network is trained.
        cfg: the ``retrain`` section.
        channels_last: train in channels-last memory format.

    The arguments are saved as hyperparameters (plain data): a checkpoint loads with
    ``RetrainModule.load_from_checkpoint(path)``.
    """

    def __init__(self, space: SearchSpace | dict, arch: Arch | str, cfg: RetrainConfig | dict,
                 channels_last: bool = False):
        super().__init__()
        space = space if isinstance(space, SearchSpace) else SearchSpace.from_spec(space)
        arch = arch if isinstance(arch, Arch) else Arch.from_string(arch)
        cfg = cfg if isinstance(cfg, RetrainConfig) else RetrainConfig.model_validate(cfg)
        self.save_hyperparameters({"space": space.spec(), "arch": arch.to_string(), "cfg": cfg.model_dump(),
                                   "channels_last": channels_last})
        network = build_network(space, arch)
        num_classes = space.num_classes
        self.network = network.to(memory_format=torch.channels_last) if channels_last else network
        self.cfg = cfg
        self.channels_last = channels_last
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        # the test runs on rank 0 alone, over every test image once: nothing to gather from other ranks
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro", sync_on_compute=False)
        self.history: list[dict[str, float]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.network(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.cfg.label_smoothing)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"retraining stopped: the loss is {float(loss)} at epoch {self.current_epoch}, step {batch_idx}. "
                "The last good end-of-epoch checkpoint is kept; lower retrain.lr, then rerun (or --resume)."
            )
        self.train_acc(logits.detach(), y)
        self.log("retrain/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=True, batch_size=len(y))
        self.log("retrain/train_acc", self.train_acc, prog_bar=True, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.val_acc(self(x), y)
        self.log("retrain/val_acc", self.val_acc, prog_bar=True, on_step=False, on_epoch=True)

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.test_acc(self(x), y)
        self.log("test/accuracy", self.test_acc, on_step=False, on_epoch=True)

    def on_train_epoch_end(self) -> None:
        m = self.trainer.callback_metrics
        self.history.append({"epoch": int(self.current_epoch),
                             **{k: float(v) for k, v in m.items() if k.startswith("retrain/")}})

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["retrain_history"] = self.history

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("retrain_history", []))

    def configure_optimizers(self):
        c = self.cfg
        if c.optimizer == "sgd":
            opt = torch.optim.SGD(self.network.parameters(), lr=c.lr, momentum=c.momentum,
                                  weight_decay=c.weight_decay, nesterov=c.momentum > 0)
        else:
            opt = torch.optim.AdamW(self.network.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=c.lr, total_steps=total, pct_start=0.15,
                                                    anneal_strategy="cos", div_factor=10.0, final_div_factor=100.0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


# ------------------------------------------------------------------------------------------------
# The run's ``retrain`` stage
# ------------------------------------------------------------------------------------------------
@dataclass
class Retrained:
    """The retrained network (CPU, eval mode), the data it was trained on, its test accuracy."""

    network: nn.Module
    data: "HwnasDataModule"
    test_accuracy: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def test_accuracy(ctx: "RunContext", module: RetrainModule, dm: "HwnasDataModule") -> float:
    """Top-1 accuracy on the whole official test split, every image exactly once (``trainer.test``
    on one device, the torchmetrics accuracy of ``test_step``)."""
    t = ctx.cfg.trainer
    trainer = pl.Trainer(accelerator="gpu" if ctx.compute_device().type == "cuda" else "cpu", devices=1, num_nodes=1,
                         precision=t.precision, logger=ctx.tracker.lightning_logger("retrain") if ctx.tracker else False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         default_root_dir=str(ctx.run_dir))
    loader = dm.test_dataloader()
    out = trainer.test(module, dataloaders=loader, verbose=False)
    n = len(loader.dataset)
    return round(float(out[0]["test/accuracy"]) * n) / n  # the exact fraction (the metric is a float32)


def retrain_stage(ctx: "RunContext", pending: bool) -> Retrained:
    """Train ``ctx.arch`` from scratch on every rank (``pending``); rank 0 tests it and writes
    ``model_state.pt``. A finished stage is reloaded from that file."""
    from .data import HwnasDataModule
    from .runner import fit_seconds

    size = ctx.input_size()
    image_size = size if size != ctx.space.image_size else None
    ctx.seed(1)
    if not pending:
        module = RetrainModule(ctx.space, ctx.arch, ctx.cfg.retrain)
        module.network.load_state_dict(torch.load(ctx.path("model_state.pt"), map_location="cpu", weights_only=True))
        dm = HwnasDataModule(ctx.cfg.data, ctx.cfg.seed, mode="retrain", image_size=image_size)
        dm.setup()
        return Retrained(module.network.eval(), dm, ctx.state.get("retrain", "test_accuracy"),
                         ctx.state.get("retrain", "history", []))
    full = ctx.cfg.retrain.full_train
    dm = HwnasDataModule(ctx.cfg.data, ctx.cfg.seed, mode="retrain", full_train=full, image_size=image_size)
    module = RetrainModule(ctx.space, ctx.arch, ctx.cfg.retrain, ctx.cfg.trainer.channels_last)
    trainer = ctx.trainer("retrain", ctx.cfg.retrain.epochs, ctx.cfg.retrain.steps_per_epoch,
                          limit_val_batches=0 if full else None)
    dm.setup()
    with warnings.catch_warnings():
        # full_train: every training image is trained on, so there is no validation split to score
        warnings.filterwarnings("ignore", message=".*`validation_step` but have no `val_dataloader`.*")
        trainer.fit(module, train_dataloaders=dm.train_dataloader(),
                    val_dataloaders=None if full else dm.archval_dataloader(), ckpt_path=ctx.last_ckpt("retrain"))
    if not ctx.leader:
        return Retrained(module.network, dm)
    acc = test_accuracy(ctx, module, dm)
    net = module.network.cpu().float().eval()
    with atomic_path(ctx.path("model_state.pt")) as tmp:
        torch.save(net.state_dict(), tmp)
    ctx.state.mark("retrain", fit_seconds(trainer), test_accuracy=acc, epochs=ctx.cfg.retrain.epochs,
                   history=module.history)
    _logger.info("test accuracy of the retrained network: %.4f", acc)
    return Retrained(net, dm, acc, module.history)
