"""Roofline quantities: computation W, memory traffic Q, intensity I, efficiency E, device probe.

* W: multiply-accumulates of convolutions and linear layers, counted by fvcore (which counts
  one multiply-add as one "flop"; we call it ``macs`` and use ``flops = 2 * macs`` wherever a
  rate is compared with a device peak).
* Q: bytes moved, counted per aten op by a dispatch-mode counter as the bytes of every tensor
  an op reads plus every tensor it writes (weights included, views excluded). That is the
  traffic of an unfused execution: an upper bound on what a fusing runtime moves.
* I = flops / Q (FLOP per byte); ridge point R = C_max / b.
* C_ideal = b * I below the ridge, C_max above it; achieved C = flops / latency;
  execution efficiency E = C / C_ideal.

The counting itself lives in :mod:`hwnas_darts.hardware.counting` (re-exported here); this
module adds the device's roofline and its probe, which times a GEMM and a copy.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch

from .counting import ByteCounter, count_bytes, count_macs, count_macs_dispatch, count_params, eval_mode, intensity
from .measure import measure_callable
from .timing import MeasureSettings

__all__ = [
    "Roofline",
    "ByteCounter",
    "count_macs",
    "count_macs_dispatch",
    "eval_mode",
    "count_bytes",
    "count_params",
    "intensity",
    "probe_roofline",
]

_logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class Roofline:
    """A device's roofline: peak compute rate (FLOP/s) and memory bandwidth (bytes/s)."""

    peak_flops: float
    bandwidth: float
    source: str = "probe"

    @property
    def ridge(self) -> float:
        """Ridge point R = C_max / b (FLOP per byte)."""
        return self.peak_flops / self.bandwidth

    def ideal_rate(self, i: float) -> float:
        """C_ideal: b * I below the ridge, C_max above it."""
        return min(self.peak_flops, self.bandwidth * i)

    def efficiency(self, macs: float, nbytes: float, latency_ms: float) -> float:
        """E = achieved rate / C_ideal for a workload of ``macs`` and ``nbytes`` taking ``latency_ms``."""
        if latency_ms <= 0 or macs <= 0 or nbytes <= 0:
            return 0.0
        achieved = 2.0 * macs / (latency_ms / 1e3)
        return achieved / self.ideal_rate(intensity(macs, nbytes))

    def to_dict(self) -> dict[str, Any]:
        return {"peak_flops": self.peak_flops, "bandwidth": self.bandwidth, "ridge": self.ridge, "source": self.source}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Roofline":
        return cls(float(d["peak_flops"]), float(d["bandwidth"]), str(d.get("source", "probe")))


def probe_roofline(settings: MeasureSettings, gemm_n: int | None = None, copy_mb: int | None = None) -> Roofline:
    """Measure C_max (large GEMM in the configured dtype) and b (large copy, read + write bytes).

    Each figure is the best of several timed samples (the peak the device reaches), so the ridge
    point is a property of the device, not of a noisy moment.
    """
    dev = torch.device(settings.device)
    dtype = settings.torch_dtype
    n = gemm_n or (8192 if settings.is_cuda else 1536)
    mb = copy_mb or (2048 if settings.is_cuda else 256)
    t0 = time.perf_counter()
    with torch.inference_mode():
        a = torch.randn(n, n, device=dev, dtype=dtype)
        b = torch.randn(n, n, device=dev, dtype=dtype)
        gemm = measure_callable(lambda: torch.mm(a, b), _probe_settings(settings))
        peak = 2.0 * n**3 / (min(gemm.samples_ms) / 1e3)

        numel = mb * 2**20 // 4
        src = torch.empty(numel, device=dev, dtype=torch.float32).uniform_()
        dst = torch.empty_like(src)
        copy = measure_callable(lambda: dst.copy_(src), _probe_settings(settings))
        bandwidth = 2.0 * numel * 4 / (min(copy.samples_ms) / 1e3)

    _logger.info("roofline probe: %.1f GFLOP/s, %.1f GB/s (%.1fs)", peak / 1e9, bandwidth / 1e9, time.perf_counter() - t0)
    return Roofline(peak, bandwidth, "probe")


def _probe_settings(s: MeasureSettings) -> MeasureSettings:
    return MeasureSettings(device=s.device, batch_size=s.batch_size, dtype=s.dtype, threads=s.threads,
                           warmup=2, min_run_time=0.5, block_time=0.0, min_samples=5)
