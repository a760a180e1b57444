"""Latency measurement on the target device.

CPU: the thread count is set explicitly (default: every core this process may use); after
warm-up, every measured module (and two reference workloads) is timed once per *cycle*, cycles
repeated, so that all of them see the same machine conditions (see :func:`measure_modules`);
small modules run in bursts of about ``burst_time`` per cycle to swamp the timer's resolution.

CUDA: CUDA events around blocks of runs, after warm-up with ``cudnn.benchmark`` on, with a
synchronisation before every read; optionally the module is captured once in a CUDA graph and
the graph is replayed (deployment without launch overhead).

Every measurement runs the module in eval mode under ``torch.inference_mode`` with the
configured dtype and memory format, and keeps the median, the inter-quartile range, the p90 and
the raw samples.
"""

from __future__ import annotations

import contextlib
import logging
import math
import statistics
from typing import Any, Callable, Iterator

import torch
from torch import nn

from .cuda import graphed, measure_cuda, measure_modules_cuda
from .device import available_cores, cpu_name, device_name, tune_allocator
from .reference import REFERENCE_INPUTS, compute_share, drift_factors, reference_modules
from .timing import MeasureSettings, Timing, eager_runner, finish_timing

__all__ = ["MeasureSettings", "Timing", "measure_module", "measure_modules", "measure_callable", "module_runner",
           "cpu_name", "device_name", "available_cores", "tune_allocator", "reference_modules", "drift_factors",
           "compute_share"]

_logger = logging.getLogger(__name__)

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


def measure_callable(fn: Callable[[], Any], settings: MeasureSettings) -> Timing:
    """Time ``fn()`` on the settings' device (the caller moved everything there)."""
    if settings.is_cuda:
        return measure_cuda(fn, settings)
    return _measure_cpu(fn, settings)


def module_runner(module: nn.Module, input_shape: tuple[int, ...], settings: MeasureSettings) -> Callable[[], Any]:
    """A call of ``module`` on one batch of ``input_shape``: eager, or a CUDA-graph replay."""
    if settings.cuda_graphs:
        module, x = settings.prepare(module, (settings.batch_size, *input_shape))
        return graphed(module, x, settings)
    return eager_runner(module, input_shape, settings)


def _plan_bursts(est_ms: list[float], settings: MeasureSettings) -> tuple[list[int], int]:
    """Calls per cycle for each item (each item's burst lasts at least ``burst_time``) and the
    number of cycles (every item is timed for about ``min_run_time`` in all)."""
    burst_ms = settings.burst_time * 1e3
    reps = [max(1, math.ceil(burst_ms / max(t, 1e-4))) for t in est_ms]
    per_cycle = sorted(r * t for r, t in zip(reps, est_ms))
    typical = per_cycle[len(per_cycle) // 2] if per_cycle else 1.0
    cycles = max(settings.min_samples, 2 * math.ceil(settings.min_run_time * 1e3 / max(typical, 1e-3) / 2))
    return reps, min(cycles, settings.max_cycles)


def _round_robin_cpu(runners: list[Callable[[], Any]], ref_runs: dict[str, Callable[[], Any]],
                     settings: MeasureSettings, progress: Callable[[int, int], None] | None
                     ) -> tuple[list[list[float]], dict[str, list[float]]]:
    """Time every runner once per cycle, cycles repeated (CPU ops are synchronous).

    Fine interleaving is what makes a shared CPU measurable: the machine's speed changes within
    a fraction of a second, so timing one item for a whole block and the next item afterwards
    lets each see different conditions. Here every item (and both references) is timed in every
    cycle, a cycle lasting a few tens of milliseconds.

    Returns per-item per-cycle times (ms per call) and the references' per-cycle times.
    """
    import time as _time

    clock = _time.perf_counter
    with _threads(settings.num_threads):
        est = []
        for run in runners:
            for _ in range(max(1, settings.warmup)):
                run()
            t0 = clock()
            run()
            est.append((clock() - t0) * 1e3)
        for run in ref_runs.values():
            for _ in range(max(1, settings.warmup)):
                run()
        reps, cycles = _plan_bursts(est, settings)
        ref_reps = {}
        for name, run in ref_runs.items():
            t0 = clock()
            run()
            ref_reps[name] = max(1, math.ceil(settings.burst_time * 1e3 / max((clock() - t0) * 1e3, 1e-4)))
        for run in list(ref_runs.values()) + runners:  # one untimed cycle: every buffer of the call touched once
            run()
        times: list[list[float]] = [[] for _ in runners]
        refs: dict[str, list[float]] = {name: [] for name in ref_runs}
        order = list(range(len(runners)))
        for c in range(cycles):
            # alternate the direction of the sweep so no item always follows the same neighbour
            seq = order if c % 2 == 0 else order[::-1]
            for name, run in ref_runs.items():
                k = ref_reps[name]
                if settings.warm_call:
                    run()
                t0 = clock()
                for _ in range(k):
                    run()
                refs[name].append((clock() - t0) * 1e3 / k)
            for i in seq:
                k, run = reps[i], runners[i]
                if settings.warm_call:
                    run()  # the item's weights and buffers back in cache: timed as a deployed network runs
                t0 = clock()
                for _ in range(k):
                    run()
                times[i].append((clock() - t0) * 1e3 / k)
            if progress:
                progress((c + 1) * len(runners), cycles * len(runners))
    return times, refs


def measure_module(module: nn.Module, input_shape: tuple[int, ...], settings: MeasureSettings,
                   ref_nominal: dict[str, float] | None = None, intensity: float | None = None) -> Timing:
    """Median latency of ``module`` on a batch of ``input_shape`` (without the batch dimension).

    Args:
        module: any module; it is put in eval mode and moved to the device and dtype.
        input_shape: ``(C, H, W)``; the batch size comes from ``settings``.
        settings: device, dtype, memory format, threads, CUDA graphs, reference.
        ref_nominal: the reference workloads' nominal latencies (from the latency table) when
            timings are normalised; ``None`` uses this call's own reference medians.
        intensity: the module's operational intensity (FLOP/byte), for the drift correction.
    """
    return measure_modules([(module, input_shape)], settings, ref_nominal=ref_nominal,
                           intensities=None if intensity is None else [intensity])[0][0]


def measure_modules(items: list[tuple[nn.Module, tuple[int, ...]]], settings: MeasureSettings,
                    progress: Callable[[int, int], None] | None = None,
                    ref_nominal: dict[str, float] | None = None,
                    intensities: list[float | None] | None = None) -> tuple[list[Timing], dict[str, float] | None]:
    """Measure several modules together; one :class:`Timing` per module.

    CPU (a shared, noisy machine): every module is timed once per *cycle*, cycles repeated until
    each has been timed for about ``min_run_time`` (see :func:`_round_robin_cpu`). With the
    reference normalisation on (the CPU default), two reference workloads - one compute bound,
    one memory bound - are timed in every cycle too, and each timing is divided by the
    machine's slowdown in its cycle, mixed from both references by the item's intensity
    (:func:`drift_factors`, :func:`compute_share`). Timings then read as "latency at the
    references' nominal speed", comparable across a whole build, across processes and across
    days on the same kind of machine. Raw medians are kept (``Timing.raw_median_ms``), and the
    medians of the first and second half of the cycles (``Timing.half_medians_ms``) give the
    measurement's own repeatability.

    CUDA: each module in ``settings.rounds`` interleaved rounds of event-timed blocks; no
    reference (a GPU of its own does not drift like a shared CPU).

    Returns:
        The timings, and the reference medians of this call (``None`` without reference).
    """
    if settings.is_cuda:
        return measure_modules_cuda([module_runner(m, shape, settings) for m, shape in items], settings,
                                    progress), None
    tune_allocator()
    use_ref = settings.use_reference
    # prepared outside inference mode: preparing converts the callers' modules in place (device, dtype, memory
    # format), and parameters converted inside it would be inference tensors that no later training or
    # torch.export of the same module could use
    runners = [eager_runner(m, shape, settings) for m, shape in items]
    ref_runs = ({name: eager_runner(mod, REFERENCE_INPUTS[name], settings) for name, mod in reference_modules().items()}
                if use_ref else {})
    with torch.inference_mode():
        times, refs = _round_robin_cpu(runners, ref_runs, settings, progress)
    ref_median = {name: statistics.median(v) for name, v in refs.items()} if use_ref else None
    nominal = ref_nominal if ref_nominal else ref_median
    shares = [compute_share(intensities[i] if intensities else None) for i in range(len(items))]
    timings = []
    for i, raw in enumerate(times):
        if use_ref and nominal:
            f = drift_factors(refs["compute"], refs["memory"], nominal, shares[i])
            samples = [v / fc for v, fc in zip(raw, f)]
        else:
            samples = list(raw)
        timings.append(finish_timing(samples, raw, 1))
    return timings, ref_median


