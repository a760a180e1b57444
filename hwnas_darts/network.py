"""The discrete task network, built from (space, arch) alone.

This module never imports the supernet: a user who only has ``arch.json`` and the config can
rebuild the final network (and so can the exported files' loaders, which need neither).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .space.arch import Arch
from .space.ops import build_op
from .space.space import PlannedLayer, SearchSpace

__all__ = ["TaskNetwork", "build_network", "build_layer"]


def build_layer(layer: PlannedLayer) -> nn.Module:
    """The module of one planned layer (stem, searched op or head)."""
    return build_op(layer.op, layer.c_in, layer.c_out, layer.stride, dropout=layer.dropout)


def _module_name(name: str) -> str:
    return name.replace(".", "_")


class TaskNetwork(nn.Module):
    """A plain feed-forward network: stem layers, the chosen ops, the classifier head.

    ``layers`` is an ``nn.Sequential`` whose children are named after the plan
    (``stem_0``, ``s2d_0``, ``stage1_1``, ..., ``head``); ``plan`` keeps each layer's op and
    input shape for profiling.
    """

    def __init__(self, plan: list[PlannedLayer], arch: Arch | None = None):
        super().__init__()
        self.plan = tuple(plan)
        self.arch = arch
        self.layers = nn.Sequential(OrderedDict((_module_name(p.name), build_layer(p)) for p in plan))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        first = self.plan[0]
        return (first.c_in, first.h, first.w)


def build_network(space: SearchSpace, arch: Arch) -> TaskNetwork:
    """Build the discrete network of ``arch`` (scaling applied) in ``space``."""
    return TaskNetwork(space.plan(arch), space.validate(arch))
