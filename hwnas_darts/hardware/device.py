"""The machine a latency table describes: cores, CPU name, allocator regime, GPU name."""

from __future__ import annotations

import logging
import os
import platform

import torch

__all__ = ["available_cores", "cpu_name", "tune_allocator", "device_name"]

_logger = logging.getLogger(__name__)


def available_cores() -> int:
    """Cores this process may run on (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


def cpu_name() -> str:
    """The CPU model string and its microarchitecture (family, model, widest vector unit).

    Cloud VMs often report only a generic name ("AMD EPYC") for several processor generations
    whose relative op costs differ; family/model and the vector extensions tell them apart, so
    a latency table measured on one generation is not silently used on another.
    """
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if ":" not in line:
                    if info:
                        break  # first processor only
                    continue
                k, v = line.split(":", 1)
                info.setdefault(k.strip().lower(), v.strip())
    except OSError:
        pass
    name = info.get("model name") or platform.processor() or platform.machine() or "unknown-cpu"
    flags = set(info.get("flags", "").split())
    vec = next((f for f in ("avx512f", "avx2", "avx", "sse4_2", "asimd") if f in flags), None)
    ident = [f"family {info['cpu family']} model {info['model']}"] if "cpu family" in info and "model" in info else []
    if vec:
        ident.append(vec)
    return f"{name} ({', '.join(ident)})" if ident else name


#: glibc mallopt parameters: allocations up to 32 MiB from the heap, freed memory kept (no trimming)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TUNED_MMAP, _TUNED_TRIM = 32 * 2**20, 1 << 30
_ALLOCATOR_STATE: dict[str, str] = {}


def tune_allocator() -> str:
    """Put glibc's allocator into a fixed, warm regime for this process; returns the regime's name.

    With glibc's defaults, large activation buffers (a batch of expanded 28x28 feature maps is
    several MB) are served by ``mmap`` or trimmed back to the OS after use, depending on a
    threshold that adapts to the process's allocation history: the same memory-bound op then runs
    2-3x slower in one process than in another (measured: an MBConv block at 28x28, batch 32,
    13-15 ms with the defaults, 4-6 ms tuned, in fresh processes). Fixing the thresholds (what
    ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824`` do from the environment)
    makes latencies reproducible and is what a deployment should use too (or jemalloc/tcmalloc).
    Returns ``"glibc-tuned"``, or ``"system"`` where glibc's ``mallopt`` is not available.
    """
    if "regime" in _ALLOCATOR_STATE:
        return _ALLOCATOR_STATE["regime"]
    regime = "system"
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if libc.mallopt(_M_MMAP_THRESHOLD, _TUNED_MMAP) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _TUNED_TRIM) == 1:
            regime = "glibc-tuned"
    except (OSError, AttributeError):  # pragma: no cover - not glibc (macOS, musl, Windows)
        pass
    _ALLOCATOR_STATE["regime"] = regime
    return regime


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_name()
