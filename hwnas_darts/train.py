"""Retraining the chosen network from scratch (Lightning, torchmetrics accuracy)."""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from ._pl import pl
from .config import RetrainConfig
from .errors import TrainingError
from .search import ElapsedTime

__all__ = ["RetrainModule"]

_logger = logging.getLogger(__name__)


class RetrainModule(ElapsedTime, pl.LightningModule):
    """Cross-entropy (with label smoothing) training of a task network; top-1 test accuracy.

    Args:
        network: the task network (from :func:`~hwnas_darts.network.build_network`).
        cfg: the ``retrain`` section.
        num_classes: classifier outputs.
        channels_last: train in channels-last memory format (CUDA).
    """

    def __init__(self, network: nn.Module, cfg: RetrainConfig, num_classes: int, channels_last: bool = False):
        super().__init__()
        self.network = network.to(memory_format=torch.channels_last) if channels_last else network
        self.cfg = cfg
        self.channels_last = channels_last
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
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
        self._save_elapsed(checkpoint)
        checkpoint["retrain_history"] = self.history

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._load_elapsed(checkpoint)
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
