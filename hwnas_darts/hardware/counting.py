"""Counting a workload's computation and memory traffic: MACs (fvcore, or the dispatcher for
TorchScript and exported programs), bytes moved (a dispatch-mode counter), parameters, and the
operational intensity ``I = 2 * macs / bytes``. The bottom of the hardware layer: it measures
nothing, so the reference workloads, the timing and the roofline probe all build on it.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from collections import Counter
from typing import Any, Iterator

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["ByteCounter", "count_macs", "count_macs_dispatch", "eval_mode", "count_bytes", "count_params", "intensity"]


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
