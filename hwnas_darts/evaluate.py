"""Accuracy of a subnet with the supernet's shared weights (after re-estimating its BatchNorm
statistics), and a short per-subnet fine-tune: how derive measures a candidate's accuracy."""

from __future__ import annotations

import copy
from typing import Iterable

import torch
import torch.nn.functional as F

from .data import cycle_batches
from .space.arch import Arch
from .supernet import SuperNet

__all__ = ["recalibrate_bn", "evaluate_accuracy", "finetune_subnet"]


@torch.no_grad()
def recalibrate_bn(supernet: SuperNet, arch: Arch, loader: Iterable, batches: int = 20,
                   device: torch.device | str = "cpu") -> None:
    """Recompute the BatchNorm statistics along the subnet ``arch``.

    During single-path training each BN layer's running statistics average over inputs coming
    from every sampled predecessor, which is not the distribution the fixed subnet produces;
    evaluating with them underestimates accuracy badly. The standard one-shot fix: reset the
    statistics and re-estimate them (cumulative average) on a few training batches.
    """
    from torch import nn

    bns = [m for m in supernet.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.training) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    supernet.train()
    for i, (x, _) in enumerate(loader):
        if i >= batches:
            break
        supernet(x.to(device), arch=arch)
    for m, (mom, _) in zip(bns, saved):
        m.momentum = mom


@torch.no_grad()
def evaluate_accuracy(supernet: SuperNet, arch: Arch, loader: Iterable, max_batches: int | None = None,
                      device: torch.device | str = "cpu", calib_loader: Iterable | None = None,
                      calib_batches: int = 20, per_image: list | None = None,
                      losses: list | None = None) -> float:
    """Top-1 accuracy of the subnet ``arch`` with the supernet's weights (eval mode), after
    re-estimating its BatchNorm statistics on ``calib_loader`` when given. ``per_image``: a list
    that receives each image's correctness (for paired comparisons between candidates);
    ``losses``: a list that receives each image's cross-entropy."""
    was = supernet.training
    if calib_loader is not None:
        recalibrate_bn(supernet, arch, calib_loader, calib_batches, device)
    supernet.eval()
    hits: list[torch.Tensor] = []
    try:
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            logits = supernet(x.to(device), arch=arch)
            hits.append((logits.argmax(1) == y.to(device)).cpu())
            if losses is not None:
                losses.extend(F.cross_entropy(logits.float(), y.to(device), reduction="none").cpu().tolist())
    finally:
        supernet.train(was)
    flat = torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool)
    if per_image is not None:
        per_image.extend(flat.tolist())
    return float(flat.float().mean()) if len(flat) else 0.0


def finetune_subnet(supernet: SuperNet, arch: Arch, loader: Iterable, steps: int, lr: float,
                    device: torch.device | str = "cpu") -> SuperNet:
    """A copy of the supernet whose ``arch`` subnet was trained ``steps`` more SGD steps."""
    net = copy.deepcopy(supernet).to(device)
    net.train()
    opt = torch.optim.SGD(net.weight_parameters(), lr=lr, momentum=0.9)
    for x, y in cycle_batches(loader, steps):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x.to(device), arch=arch), y.to(device))
        loss.backward()
        opt.step()
    return net
