"""Latency measurement on the target device.

CPU: ``torch.utils.benchmark.Timer`` with the thread count set explicitly (default: every core
this process may use), warm-up runs, then repeated blocks; each sample is the mean time of one
block, long enough (about a millisecond or more) to swamp the timer's resolution.

CUDA: CUDA events around blocks of runs, after warm-up with ``cudnn.benchmark`` on, with a
synchronisation before every read; optionally the module is captured once in a CUDA graph and
the graph is replayed (deployment without launch overhead).

Every measurement runs the module in eval mode under ``torch.inference_mode`` with the
configured dtype and memory format, and keeps the median, the inter-quartile range, the p90 and
the raw samples.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import platform
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn

__all__ = ["MeasureSettings", "Timing", "measure_module", "measure_modules", "measure_callable", "cpu_name",
           "device_name", "available_cores"]

_logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def available_cores() -> int:
    """Cores this process may run on (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


def cpu_name() -> str:
    """The CPU model string (``/proc/cpuinfo`` on Linux), or the platform's processor name."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_name()


@dataclass
class MeasureSettings:
    """How and where latency is measured (the device record of a latency table derives from it)."""

    device: str = "cpu"
    batch_size: int = 32
    dtype: str = "float32"
    channels_last: bool = False
    cuda_graphs: bool = False
    threads: int | None = None
    warmup: int = 3
    min_run_time: float = 0.1
    block_time: float = 0.002  # CUDA: runs per event-timed sample reach at least this long
    min_samples: int = 5
    rounds: int = 4
    reference: bool | None = None
    reference_time: float = 0.015
    stability: float = 0.06
    max_retries: int = 3

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
    def from_config(cls, hw: Any) -> "MeasureSettings":
        return cls(device=hw.device, batch_size=hw.batch_size, dtype=hw.dtype, channels_last=hw.channels_last,
                   cuda_graphs=hw.cuda_graphs, threads=hw.threads, warmup=hw.warmup, min_run_time=hw.min_run_time,
                   rounds=hw.rounds, reference=hw.reference)

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
        }

    def prepare(self, module: nn.Module, shape: tuple[int, ...]) -> tuple[nn.Module, torch.Tensor]:
        """Move ``module`` to the device/dtype/memory format and make an input batch of ``shape``."""
        module = module.eval().to(self.device, self.torch_dtype)
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
                "samples_ms": self.samples_ms}


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _measure_cpu(fn: Callable[[], Any], settings: MeasureSettings) -> Timing:
    from torch.utils.benchmark import Timer

    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=settings.num_threads)
    with _threads(settings.num_threads):
        for _ in range(settings.warmup):
            fn()
        samples: list[float] = []
        number = 1
        while len(samples) < settings.min_samples:
            m = timer.blocked_autorange(min_run_time=settings.min_run_time)
            samples.extend(t * 1e3 for t in m.times)
            number = m.number_per_run
    return Timing.from_samples(samples, number)


def _measure_cuda(fn: Callable[[], Any], settings: MeasureSettings) -> Timing:
    device = torch.device(settings.device)
    torch.backends.cudnn.benchmark = True
    with torch.cuda.device(device):
        for _ in range(max(1, settings.warmup)):
            fn()
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        probe = max(start.elapsed_time(end) / 1e3, 1e-7)
        number = max(1, math.ceil(settings.block_time / probe))
        n_samples = min(200, max(settings.min_samples, math.ceil(settings.min_run_time / (probe * number))))
        samples = []
        for _ in range(n_samples):
            start.record()
            for _ in range(number):
                fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / number)
    return Timing.from_samples(samples, number)


def measure_callable(fn: Callable[[], Any], settings: MeasureSettings) -> Timing:
    """Time ``fn()`` on the settings' device (the caller moved everything there)."""
    return _measure_cuda(fn, settings) if settings.is_cuda else _measure_cpu(fn, settings)


def _runner(module: nn.Module, input_shape: tuple[int, ...], settings: MeasureSettings) -> Callable[[], Any]:
    module, x = settings.prepare(module, (settings.batch_size, *input_shape))
    if settings.cuda_graphs:
        return _graphed(module, x, settings)
    return lambda: module(x)


def reference_module() -> nn.Module:
    """The fixed reference workload used to normalise CPU timings (see :func:`measure_modules`)."""
    from ..space.ops import build_op

    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(0)
        return nn.Sequential(
            build_op("conv_k3_relu", 16, 32, 1),
            build_op("mb_k3_e4_swish", 32, 32, 1),
            build_op("fmb_k3_e2_relu", 32, 32, 1),
        ).eval()


REFERENCE_VERSION = "ref-v1"
REFERENCE_INPUT = (16, 16, 16)


def measure_module(module: nn.Module, input_shape: tuple[int, ...], settings: MeasureSettings,
                   ref_nominal_ms: float | None = None) -> Timing:
    """Median latency of ``module`` on a batch of ``input_shape`` (without the batch dimension).

    Args:
        module: any module; it is put in eval mode and moved to the device and dtype.
        input_shape: ``(C, H, W)``; the batch size comes from ``settings``.
        settings: device, dtype, memory format, threads, CUDA graphs, rounds, reference.
        ref_nominal_ms: the reference workload's nominal latency (from the latency table) when
            timings are normalised; ``None`` uses this call's own reference median.
    """
    return measure_modules([(module, input_shape)], settings, ref_nominal_ms=ref_nominal_ms)[0][0]


def measure_modules(items: list[tuple[nn.Module, tuple[int, ...]]], settings: MeasureSettings,
                    progress: Callable[[int, int], None] | None = None,
                    ref_nominal_ms: float | None = None) -> tuple[list[Timing], float | None]:
    """Measure several modules in interleaved rounds; one :class:`Timing` per module.

    On a shared machine interference comes in bursts and the CPU's speed drifts by tens of
    percent over seconds. Two defences, both on by default on the CPU:

    * rounds: every module is measured once per round, for ``settings.rounds`` rounds of
      ``min_run_time / rounds`` each, so a burst is spread over all modules instead of spoiling
      one module's whole measurement;
    * reference normalisation (``settings.reference``): a fixed reference workload is timed
      right before and after every block; a block whose two reference timings differ by more
      than ``settings.stability`` (the machine changed speed meanwhile) is measured again (up to
      ``max_retries`` times), and each block is rescaled by
      ``ref_nominal / mean(adjacent reference blocks)``. Timings then read as "latency at the
      reference's nominal speed" and stay comparable across a whole build and across runs. The
      raw medians are kept beside them (``Timing.raw_median_ms``).

    Returns:
        The timings, and the median reference latency of this call (``None`` without reference).
    """
    rounds = max(1, settings.rounds)
    per_round = dataclasses.replace(settings, min_run_time=settings.min_run_time / rounds,
                                    min_samples=max(1, math.ceil(settings.min_samples / rounds)),
                                    warmup=max(1, settings.warmup // rounds))
    use_ref = settings.use_reference
    ref_settings = dataclasses.replace(settings, min_run_time=settings.reference_time, min_samples=1, warmup=1)
    samples: list[list[float]] = [[] for _ in items]
    raw: list[list[float]] = [[] for _ in items]
    numbers = [1] * len(items)
    ref_meds: list[float] = []
    total = rounds * len(items)
    done = 0
    retries = 0
    with torch.inference_mode():
        runners = [_runner(m, shape, settings) for m, shape in items]
        ref_run = _runner(reference_module(), REFERENCE_INPUT, settings) if use_ref else None
        blocks: list[tuple[int, list[float], float, float]] = []  # (item, samples, ref_before, ref_after)
        for _ in range(rounds):
            before = measure_callable(ref_run, ref_settings).median_ms if ref_run else 1.0
            for i, run in enumerate(runners):
                for attempt in range(settings.max_retries + 1):
                    t = measure_callable(run, per_round)
                    after = measure_callable(ref_run, ref_settings).median_ms if ref_run else 1.0
                    stable = abs(after - before) <= settings.stability * min(after, before)
                    if stable or attempt == settings.max_retries:
                        break
                    retries += 1  # the machine's speed changed during the block: measure it again
                    before = after
                numbers[i] = t.runs_per_sample
                blocks.append((i, t.samples_ms, before, after))
                if ref_run:
                    ref_meds.extend([before, after])
                before = after
                done += 1
                if progress:
                    progress(done, total)
    if retries:
        _logger.debug("measure_modules: %d blocks re-measured after a change of machine speed", retries)
    ref_median = statistics.median(ref_meds) if ref_meds else None
    nominal = ref_nominal_ms if ref_nominal_ms is not None else ref_median
    for i, blk, before, after in blocks:
        raw[i].extend(blk)
        factor = (nominal / ((before + after) / 2.0)) if use_ref and nominal else 1.0
        samples[i].extend(v * factor for v in blk)
    timings = []
    for s_, r_, n in zip(samples, raw, numbers):
        t = Timing.from_samples(s_, n)
        t.raw_median_ms = statistics.median(r_)
        timings.append(t)
    return timings, ref_median


def _graphed(module: nn.Module, x: torch.Tensor, settings: MeasureSettings) -> Callable[[], Any]:
    torch.backends.cudnn.benchmark = True
    stream = torch.cuda.Stream(device=x.device)
    stream.wait_stream(torch.cuda.current_stream(x.device))
    with torch.cuda.stream(stream):
        for _ in range(max(3, settings.warmup)):
            module(x)
    torch.cuda.current_stream(x.device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        module(x)
    return graph.replay
