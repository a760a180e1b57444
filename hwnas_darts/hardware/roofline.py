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
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
import weakref
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .measure import MeasureSettings, measure_callable

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

def _mac_handles() -> dict[str, Any]:
    """fvcore's handles for the multiply-accumulate ops only (norms and pools are not MACs)."""
    from fvcore.nn import jit_handles as jh

    return {
        "aten::addmm": jh.addmm_flop_jit,
        "aten::bmm": jh.bmm_flop_jit,
        "aten::_convolution": jh.conv_flop_jit,
        "aten::einsum": jh.einsum_flop_jit,
        "aten::matmul": jh.matmul_flop_jit,
        "aten::mm": jh.matmul_flop_jit,
        "aten::linear": jh.linear_flop_jit,
    }


@contextlib.contextmanager
def eval_mode(module: Any) -> Iterator[None]:
    """Eval mode for the duration, restored afterwards; a no-op for modules that cannot switch
    (a ``torch.export`` program's module refuses ``.eval()``; it is exported in eval form)."""
    was = getattr(module, "training", False)
    try:
        module.eval()
        switched = True
    except (NotImplementedError, RuntimeError, AttributeError):
        switched = False
    try:
        yield
    finally:
        if switched:
            module.train(was)


def _is_plain_module(module: Any) -> bool:
    """A regular eager ``nn.Module`` (forward hooks work), not TorchScript or an exported program."""
    if isinstance(module, torch.jit.ScriptModule):
        return False
    return not type(module).__name__.endswith("GraphModule") or not hasattr(module, "graph")


def count_macs_dispatch(module: Any, x: torch.Tensor) -> int:
    """Multiply-accumulates of ``module(x)`` counted at the dispatcher (``FlopCounterMode``): works
    for eager modules, TorchScript and ``torch.export`` programs alike (FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    with eval_mode(module), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            module(x)
    return int(counter.get_total_flops() // 2)


def count_macs(module: Any, x: torch.Tensor) -> int:
    """Multiply-accumulates of ``module(x)`` (conv, linear, matmul): counted by fvcore for eager
    modules, at the dispatcher for TorchScript and exported programs (fvcore's hooks need an
    eager module)."""
    if not _is_plain_module(module):
        return count_macs_dispatch(module, x)
    from fvcore.nn.jit_analysis import JitModelAnalysis

    with eval_mode(module), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = JitModelAnalysis(module, (x,)).set_op_handle(**_mac_handles())
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        with torch.no_grad():
            return int(analysis.total())


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _tensors(obj: Any) -> list[torch.Tensor]:
    flat, _ = tree_flatten(obj)
    return [t for t in flat if isinstance(t, torch.Tensor)]


def _storage_key(t: torch.Tensor) -> int:
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # pragma: no cover - exotic tensors
        return id(t)


class ByteCounter(TorchDispatchMode):
    """Counts bytes read and written by every aten op run under it (views move nothing).

    Also follows the activation memory: every new output tensor adds its bytes to the live
    total until it is freed; ``peak_bytes`` is the largest live total seen (inputs and
    weights excluded).
    """

    def __init__(self):
        super().__init__()
        self.bytes = 0
        self.by_op: Counter[str] = Counter()
        self.calls = 0
        self.live = 0
        self.peak_bytes = 0

    def _release(self, n: int) -> None:
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        ins = _tensors((args, kwargs))
        outs = _tensors(out)
        in_storages = {_storage_key(t) for t in ins}
        aliased = bool(outs) and all(_storage_key(t) in in_storages for t in outs)
        if getattr(func, "is_view", False) or (aliased and not func._schema.is_mutable):
            return out  # views (reshape, permute, slices) move nothing; in-place ops read and write
        moved = sum(t.numel() * t.element_size() for t in ins) + sum(t.numel() * t.element_size() for t in outs)
        self.bytes += moved
        self.by_op[str(func.overloadpacket.__name__)] += moved
        self.calls += 1
        for t in outs:
            if _storage_key(t) in in_storages:
                continue
            n = t.numel() * t.element_size()
            self.live += n
            weakref.finalize(t, self._release, n)
        self.peak_bytes = max(self.peak_bytes, self.live)
        return out


def count_bytes(module: Any, x: torch.Tensor) -> int:
    """Bytes moved by an unfused eval-mode forward of ``module(x)``."""
    with eval_mode(module):
        counter = ByteCounter()
        with torch.inference_mode(), counter:
            module(x)
        return int(counter.bytes)


def intensity(macs: float, nbytes: float) -> float:
    """Operational intensity I = 2 * macs / bytes (FLOP per byte); 0 when nothing moves."""
    return 2.0 * macs / nbytes if nbytes > 0 else 0.0


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
