"""The bottom of the timing layer: how latency is measured (:class:`MeasureSettings`, from which
a latency table's device record derives), what one measurement is (:class:`Timing`), how raw
per-cycle samples become one (:func:`finish_timing`), and the eager runner of a module on a
batch. CPU timing (:mod:`~hwnas_darts.hardware.measure`) and CUDA timing
(:mod:`~hwnas_darts.hardware.cuda`) both build on it.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..config import HardwareConfig
from .device import available_cores, device_name, tune_allocator
from .reference import REFERENCE_VERSION

__all__ = ["MeasureSettings", "Timing", "finish_timing", "eager_runner", "MAX_STORED_SAMPLES"]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: samples kept per timing in a stored table (an even subsample of the cycles beyond it)
MAX_STORED_SAMPLES = 48

_HW = HardwareConfig()  # the one source of the defaults shared with the config's hardware section


@dataclass
class MeasureSettings:
    """How and where latency is measured (the device record of a latency table derives from it).

    The fields shared with the ``hardware`` config section default to that section's defaults;
    :meth:`from_config` is how the pipeline builds them.
    """

    device: str = _HW.device
    batch_size: int = _HW.batch_size
    dtype: str = _HW.dtype
    channels_last: bool = _HW.channels_last
    cuda_graphs: bool = _HW.cuda_graphs
    threads: int | None = _HW.threads
    warmup: int = _HW.warmup
    min_run_time: float = _HW.min_run_time
    block_time: float = 0.002  # CUDA: runs per event-timed sample reach at least this long
    min_samples: int = 8
    rounds: int = _HW.rounds  # CUDA: interleaved rounds of event-timed blocks
    reference: bool | None = _HW.reference
    burst_time: float = 0.002  # CPU: calls of one item per cycle last at least this long (seconds)
    warm_call: bool = True  # CPU: one untimed call of an item right before its timed burst in each cycle
    max_cycles: int = 2000
    processes: int = _HW.processes  # CPU: fresh processes a set of networks is measured in (see hardware.model)
    cudnn_benchmark: bool = True  # CUDA: let cuDNN pick the fastest algorithm (what a deployment does); off if one faults

    def __post_init__(self):
        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            from ..errors import HwnasError

            raise HwnasError(f"hardware.device={self.device} but CUDA is not available here "
                             "(no GPU or a CPU-only torch build); use hardware.device=cpu")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {self.dtype!r}")
        if self.cuda_graphs and not self.device.startswith("cuda"):
            raise ValueError("CUDA graphs need a CUDA device")

    @classmethod
    def from_config(cls, hw: HardwareConfig) -> "MeasureSettings":
        """Every field the hardware section shares with the settings, taken from it."""
        shared = {f.name for f in dataclasses.fields(cls)} & set(type(hw).model_fields)
        return cls(**{k: getattr(hw, k) for k in shared})

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    @property
    def use_reference(self) -> bool:
        """Reference normalisation: on by default on the CPU (noisy, shared), off on CUDA."""
        return (not self.is_cuda) if self.reference is None else bool(self.reference)

    @property
    def num_threads(self) -> int:
        return int(self.threads or available_cores())

    @property
    def mode(self) -> str:
        return "cuda_graph" if self.cuda_graphs else "eager"

    def record(self) -> dict[str, Any]:
        """The device record stored with a latency table."""
        return {
            "kind": "cuda" if self.is_cuda else "cpu",
            "name": device_name(self.device),
            "torch": torch.__version__.split("+")[0],
            "dtype": self.dtype,
            "batch_size": self.batch_size,
            "threads": None if self.is_cuda else self.num_threads,
            "memory_format": "channels_last" if self.channels_last else "contiguous",
            "mode": self.mode,
            "reference": REFERENCE_VERSION if self.use_reference else None,
            "allocator": None if self.is_cuda else tune_allocator(),
        }

    def prepare(self, module: nn.Module, shape: tuple[int, ...]) -> tuple[nn.Module, torch.Tensor]:
        """Move ``module`` to the device/dtype/memory format and make an input batch of ``shape``."""
        try:
            module = module.eval()
        except (NotImplementedError, RuntimeError):  # an exported program's module is already in eval form
            pass
        module = module.to(self.device, self.torch_dtype)
        x = torch.randn(*shape, device=self.device, dtype=self.torch_dtype)
        if self.channels_last and x.dim() == 4:
            module = module.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        return module, x


@dataclass
class Timing:
    """Latency statistics of one measurement, in milliseconds."""

    median_ms: float
    iqr_ms: float
    p90_ms: float
    mean_ms: float
    samples_ms: list[float] = field(default_factory=list)
    runs_per_sample: int = 1
    raw_median_ms: float | None = None
    half_medians_ms: tuple[float, float] | None = None
    process_medians_ms: list[float] | None = None

    @property
    def half_disagreement(self) -> float | None:
        """Relative difference between the medians of the two halves of the measurement."""
        if not self.half_medians_ms:
            return None
        a, b = self.half_medians_ms
        return abs(a - b) / max((a + b) / 2.0, 1e-12)

    @classmethod
    def from_samples(cls, samples_ms: list[float], runs_per_sample: int) -> "Timing":
        s = sorted(samples_ms)
        q = statistics.quantiles(s, n=20, method="inclusive") if len(s) > 1 else [s[0]] * 19
        return cls(
            median_ms=statistics.median(s),
            iqr_ms=q[14] - q[4],  # 75th - 25th percentile
            p90_ms=q[17],
            mean_ms=statistics.fmean(s),
            samples_ms=[round(v, 6) for v in samples_ms],
            runs_per_sample=runs_per_sample,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"median_ms": self.median_ms, "iqr_ms": self.iqr_ms, "p90_ms": self.p90_ms, "mean_ms": self.mean_ms,
                "raw_median_ms": self.raw_median_ms, "runs_per_sample": self.runs_per_sample,
                "half_medians_ms": list(self.half_medians_ms) if self.half_medians_ms else None,
                "samples_ms": self.samples_ms}


def finish_timing(samples: list[float], raw: list[float], runs_per_sample: int) -> Timing:
    t = Timing.from_samples(samples, runs_per_sample)
    t.raw_median_ms = statistics.median(raw)
    half = len(samples) // 2
    if half >= 1:
        t.half_medians_ms = (statistics.median(samples[:half]), statistics.median(samples[half:]))
    if len(t.samples_ms) > MAX_STORED_SAMPLES:  # keep tables small: an even subsample of the cycles
        step = len(t.samples_ms) / MAX_STORED_SAMPLES
        t.samples_ms = [t.samples_ms[int(i * step)] for i in range(MAX_STORED_SAMPLES)]
    return t



def eager_runner(module: nn.Module, input_shape: tuple[int, ...], settings: MeasureSettings) -> Callable[[], Any]:
    """A call of ``module`` on one batch of ``input_shape`` (without the batch dimension), on the
    settings' device, dtype and memory format."""
    module, x = settings.prepare(module, (settings.batch_size, *input_shape))
    return lambda: module(x)
