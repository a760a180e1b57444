"""Search space: candidate ops, the architecture genotype, and the layer-wise space."""

from .arch import ARCH_SCHEMA_VERSION, Arch, Scale
from .ops import OPS, build_op, parse_op
from .space import LayerSpec, OpKey, PlannedLayer, SearchSpace

__all__ = [
    "ARCH_SCHEMA_VERSION",
    "Arch",
    "Scale",
    "OPS",
    "build_op",
    "parse_op",
    "LayerSpec",
    "OpKey",
    "PlannedLayer",
    "SearchSpace",
]
