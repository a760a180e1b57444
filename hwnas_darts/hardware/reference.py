"""Two reference workloads timed in every CPU measurement cycle, and the drift correction they give.

A shared machine slows compute-bound and memory-bound work differently; each measured item is
corrected by a mix of the two references' slowdowns, weighted by its own operational intensity.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .counting import count_bytes, count_macs, intensity

__all__ = ["REFERENCE_VERSION", "REFERENCE_INPUTS", "reference_modules", "reference_intensities", "compute_share",
           "drift_factors"]


REFERENCE_VERSION = "ref-v2"
#: input shapes (without batch) of the two reference workloads
REFERENCE_INPUTS = {"compute": (32, 8, 8), "memory": (48, 16, 16)}


class _MemoryRef(nn.Module):
    """Depthwise 3x3 conv + add + ReLU: low operational intensity, bandwidth bound on CPUs."""

    def __init__(self, c: int):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.dw(x) + x)


def reference_modules() -> dict[str, nn.Module]:
    """The two fixed reference workloads that normalise CPU timings (see :func:`measure_modules`).

    ``compute``: a dense 3x3 convolution (high operational intensity); ``memory``: a depthwise
    convolution with an elementwise add (low intensity). A shared machine slows the two
    differently (a noisy neighbour streaming memory hurts the second far more), so each timing
    is corrected by a mix of both, weighted by the measured item's own intensity.
    """
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(0)
        c = REFERENCE_INPUTS["compute"][0]
        compute = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()).eval()
        memory = _MemoryRef(REFERENCE_INPUTS["memory"][0]).eval()
    return {"compute": compute, "memory": memory}


_REF_INTENSITY: dict[str, float] = {}


def reference_intensities() -> dict[str, float]:
    """Operational intensity (FLOP/byte) of the two reference workloads (counted once, cached)."""
    if not _REF_INTENSITY:
        for name, mod in reference_modules().items():
            x = torch.randn(2, *REFERENCE_INPUTS[name])
            _REF_INTENSITY[name] = intensity(count_macs(mod, x), count_bytes(mod, x))
    return dict(_REF_INTENSITY)


def compute_share(item_intensity: float | None) -> float:
    """Weight of the compute reference in an item's drift correction, from its intensity.

    Linear in log-intensity between the memory reference's intensity (weight 0) and the compute
    reference's (weight 1), clipped to [0, 1]; ``None`` (unknown) gives 0.5.
    """
    if item_intensity is None or not math.isfinite(item_intensity) or item_intensity <= 0:
        return 0.5
    ri = reference_intensities()
    lo, hi = math.log(ri["memory"]), math.log(ri["compute"])
    return float(min(1.0, max(0.0, (math.log(item_intensity) - lo) / (hi - lo))))


def drift_factors(ref_compute: "list[float]", ref_memory: "list[float]", nominal: dict[str, float],
                  share: float, smooth: int = 1) -> list[float]:
    """Per-cycle slowdown of an item against the nominal machine speed.

    ``ref_compute[c]`` and ``ref_memory[c]`` are the two references' per-call times in cycle
    ``c``; each is averaged over ``smooth`` neighbouring cycles on each side (the references
    are short and noisy), divided by its nominal time, and the two slowdowns are mixed with the
    item's compute ``share``: ``f_c = share * rc_c / nominal_c + (1 - share) * rm_c / nominal_m``.
    Dividing a timing by ``f_c`` gives "the time at nominal speed".
    """
    n = len(ref_compute)

    def smoothed(v: list[float], i: int) -> float:
        window = v[max(0, i - smooth): min(n, i + smooth + 1)]
        return sum(window) / len(window)

    return [share * smoothed(ref_compute, i) / nominal["compute"]
            + (1.0 - share) * smoothed(ref_memory, i) / nominal["memory"] for i in range(n)]
