"""The run's ``scale`` stage: optional EfficientNet-style compound scaling of the chosen network.

``depth = depth_coef ** phi``, ``width = width_coef ** phi``, ``resolution = resolution_coef ** phi``
unless given directly (``scale.depth`` ...). Latency-table rows the scaled network needs and the
table lacks are measured here, so its latency can be predicted and profiled.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from .arch import Arch, Scale

if TYPE_CHECKING:
    from ..config import ScaleConfig
    from ..context import RunContext

__all__ = ["compound_scale", "scale_stage"]

_logger = logging.getLogger("hwnas_darts.fit")


def compound_scale(sc: "ScaleConfig") -> Scale:
    """The multipliers of the ``scale`` section (explicit values win over ``coef ** phi``)."""
    return Scale(width=sc.width if sc.width is not None else sc.width_coef ** sc.phi,
                 depth=sc.depth if sc.depth is not None else sc.depth_coef ** sc.phi,
                 resolution=sc.resolution if sc.resolution is not None else sc.resolution_coef ** sc.phi)


def scale_stage(ctx: "RunContext") -> Arch:
    """``arch.json``: the chosen architecture, compound-scaled when ``scale.enabled``."""
    from ..hardware.table import LatencyTable, build_table

    if ctx.state.done("scale"):
        ctx.table = LatencyTable.load(ctx.path("lut.json"))
        return Arch.load(ctx.path("arch.json"))
    t0 = time.perf_counter()
    arch = ctx.derived.chosen
    if ctx.cfg.scale.enabled:
        scale = compound_scale(ctx.cfg.scale)
        arch = arch.with_scale(scale)
        missing = ctx.table.missing([p.key for p in ctx.space.plan(arch)])
        if missing and not ctx.table.mismatches(ctx.settings.record()):
            _logger.info("measuring %d latency-table rows of the scaled network", len(missing))
            ctx.table = build_table(None, ctx.settings, ctx.table, keys=missing)
            ctx.table.save(ctx.path("lut.json"))
        _logger.info("compound scaling %s: %s", scale, arch)
    arch.save(ctx.path("arch.json"))
    ctx.state.mark("scale", time.perf_counter() - t0, arch=arch.to_string(), scaled=ctx.cfg.scale.enabled)
    return arch
