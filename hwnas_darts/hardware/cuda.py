"""CUDA timing: events around blocks of runs (after warm-up, ``cudnn.benchmark`` on), interleaved
rounds for a set of runners, and CUDA-graph replay. Beside the CPU timing of
:mod:`hwnas_darts.hardware.measure` (which dispatches here), on :mod:`hwnas_darts.hardware.timing`."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import torch
from torch import nn

from .timing import MeasureSettings, Timing, finish_timing

__all__ = ["measure_cuda", "measure_modules_cuda", "graphed"]


def measure_cuda(fn: Callable[[], Any], settings: MeasureSettings) -> Timing:
    device = torch.device(settings.device)
    torch.backends.cudnn.benchmark = settings.cudnn_benchmark
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


def measure_modules_cuda(runners: list[Callable[[], Any]], settings: MeasureSettings,
                          progress: Callable[[int, int], None] | None) -> list[Timing]:
    """Each runner (a module's call on its batch, eager or graphed) in ``settings.rounds`` interleaved
    rounds of event-timed blocks; one :class:`Timing` per runner."""
    rounds = max(1, settings.rounds)
    per_round = dataclasses.replace(settings, min_run_time=settings.min_run_time / rounds,
                                    min_samples=max(1, math.ceil(settings.min_samples / rounds)),
                                    warmup=max(1, settings.warmup // rounds))
    samples: list[list[float]] = [[] for _ in runners]
    numbers = [1] * len(runners)
    with torch.inference_mode():
        for r in range(rounds):
            for i, run in enumerate(runners):
                t = measure_cuda(run, per_round)
                numbers[i] = t.runs_per_sample
                samples[i].extend(t.samples_ms)
                if progress:
                    progress(r * len(runners) + i + 1, rounds * len(runners))
    return [finish_timing(s, s, n) for s, n in zip(samples, numbers)]


def graphed(module: nn.Module, x: torch.Tensor, settings: MeasureSettings) -> Callable[[], Any]:
    torch.backends.cudnn.benchmark = settings.cudnn_benchmark
    stream = torch.cuda.Stream(device=x.device)
    stream.wait_stream(torch.cuda.current_stream(x.device))
    with torch.cuda.stream(stream):
        for _ in range(max(3, settings.warmup)):
            module(x)
    torch.cuda.current_stream(x.device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        module(x)

    def replay(_graph=graph, _keep=(module, x)) -> None:
        # the captured kernels read the module's weights and x at their addresses at capture time:
        # both must live as long as the graph, or a later allocation (or the allocator handing cached
        # blocks back to the driver) turns a replay into an illegal memory access
        _graph.replay()

    return replay
