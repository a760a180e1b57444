"""Exports of the final network, each verified in a fresh process before it is kept.

* TorchScript ``model.ts`` (the user's requirement). torch 2.13 marks ``torch.jit`` deprecated;
  the module is traced in eval mode with that warning silenced here (and explained in the
  README): TorchScript still loads with plain ``torch.jit.load`` everywhere, including C++.
* ``torch.export`` program ``model.pt2`` with a dynamic batch dimension.
* ONNX ``model.onnx`` when the optional extra is installed (``pip install .[onnx]``),
  verified with onnxruntime.

Each file carries ``hwnas_meta.json`` (arch, input shape, normalisation, class names) so
:mod:`hwnas_darts.predict` can apply the training preprocessing. Verification: a batch of
random inputs at a batch size different from the one used to export is run through the eager
network here and through the saved file in a new Python process that never imports
``hwnas_darts``; the maximum absolute difference of the logits and the agreement of the
predicted classes are recorded. A file that fails is deleted and the reason is reported.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import textwrap
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch
from torch import nn

from .io import META_NAME, atomic_path, atomic_write_bytes

if TYPE_CHECKING:
    from .context import RunContext


__all__ = ["ExportResult", "export_torchscript", "export_program", "export_onnx", "export_all", "META_NAME",
           "MODEL_FORMAT"]

_logger = logging.getLogger(__name__)

MODEL_FORMAT = "hwnas_darts.model/1"


@dataclass
class ExportResult:
    """One export: where it went, whether it was kept, how it compared with the eager network."""

    kind: str
    path: str | None
    ok: bool
    max_abs_diff: float | None = None
    same_predictions: bool | None = None
    verify_batch: int | None = None
    seconds: float | None = None
    reason: str | None = field(default=None)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**out, **self.extra}


_VERIFY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    kind, model_path, io_path = sys.argv[1], sys.argv[2], sys.argv[3]
    data = torch.load(io_path)
    x = data["x"]
    meta = {"hwnas_meta.json": ""}
    if kind == "torchscript":
        m = torch.jit.load(model_path, map_location="cpu", _extra_files=meta)
        with torch.no_grad():
            y = m(x)
    elif kind == "program":
        ep = torch.export.load(model_path, extra_files=meta)
        with torch.no_grad():
            y = ep.module()(x)
    elif kind == "onnx":
        import onnxruntime as ort
        sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        y = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])
        meta = {"hwnas_meta.json": "{}"}
    else:
        raise SystemExit("unknown kind " + kind)
    m_ = meta["hwnas_meta.json"]
    json.loads(m_.decode() if isinstance(m_, bytes) else m_)
    torch.save({"y": y}, io_path + ".out")
    """
)


def _verify(kind: str, path: Path, net: nn.Module, batch: int, input_shape: tuple[int, ...], atol: float) -> ExportResult:
    import time

    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(batch, *input_shape, generator=g)
    with torch.no_grad():
        ref = net.eval()(x)
    with tempfile.TemporaryDirectory() as tmp:
        io_path = os.path.join(tmp, "io.pt")
        torch.save({"x": x}, io_path)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONWARNINGS"] = "ignore"
        proc = subprocess.run([sys.executable, "-c", _VERIFY_SCRIPT, kind, str(path), io_path],
                              capture_output=True, text=True, env=env, cwd=tmp, timeout=600)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return ExportResult(kind, None, False, reason="reloading in a fresh process failed: " + " | ".join(tail))
        out = torch.load(io_path + ".out")["y"]
    diff = float((out.float() - ref.float()).abs().max())
    same = bool((out.argmax(1) == ref.argmax(1)).all())
    ok = diff <= atol and same
    reason = None if ok else f"outputs differ from the eager network (max abs diff {diff:.3g}, same predictions: {same})"
    return ExportResult(kind, str(path), ok, diff, same, batch, round(time.perf_counter() - t0, 3), reason)


def _meta_bytes(meta: dict[str, Any]) -> bytes:
    return json.dumps({"format": MODEL_FORMAT, **meta}, indent=1).encode()


class _Rejected(Exception):
    """The export was written but does not reproduce the eager network."""


def _write_verified(kind: str, dest: Path, write: Callable[[Path], None], net: nn.Module, verify_batch: int,
                    input_shape, atol: float) -> ExportResult:
    """``write(tmp)`` the export; it replaces ``dest`` (atomically) only when it verifies in a fresh process."""
    res: ExportResult | None = None
    try:
        with atomic_path(dest, keep_extension=True) as tmp:
            write(tmp)
            res = _verify(kind, tmp, net, verify_batch, input_shape, atol)
            if not res.ok:
                raise _Rejected
        res.path = str(dest)
    except _Rejected:
        pass  # res says why
    except Exception as exc:  # any tracing/saving failure: report, keep nothing
        return ExportResult(kind, None, False, reason=f"{type(exc).__name__}: {exc}")
    return res


def export_torchscript(net: nn.Module, dest: str | os.PathLike, input_shape: tuple[int, ...], meta: dict[str, Any],
                       export_batch: int = 2, verify_batch: int = 3, atol: float = 1e-4) -> ExportResult:
    """Trace ``net`` (eval mode) to TorchScript, save with metadata, verify, keep if it matches."""
    net = net.eval()

    def write(tmp: Path) -> None:
        example = torch.randn(export_batch, *input_shape)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.jit.*deprecated.*")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            with torch.no_grad():
                traced = torch.jit.trace(net, example, check_trace=True)
                traced = torch.jit.freeze(traced) if hasattr(torch.jit, "freeze") else traced
            torch.jit.save(traced, str(tmp), _extra_files={META_NAME: _meta_bytes(meta)})

    return _write_verified("torchscript", Path(dest), write, net, verify_batch, input_shape, atol)


def export_program(net: nn.Module, dest: str | os.PathLike, input_shape: tuple[int, ...], meta: dict[str, Any],
                   export_batch: int = 2, verify_batch: int = 3, atol: float = 1e-4) -> ExportResult:
    """``torch.export`` with a dynamic batch dimension, saved as ``.pt2`` with metadata, verified."""
    net = net.eval()

    def write(tmp: Path) -> None:
        example = torch.randn(max(2, export_batch), *input_shape)
        batch = torch.export.Dim("batch", min=1, max=65536)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ep = torch.export.export(net, (example,), dynamic_shapes=({0: batch},))
            torch.export.save(ep, str(tmp), extra_files={META_NAME: _meta_bytes(meta).decode()})

    return _write_verified("program", Path(dest), write, net, verify_batch, input_shape, atol)


def onnx_available() -> str | None:
    """``None`` when ONNX export and verification can run, else what is missing."""
    missing = []
    for mod in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    return None if not missing else ", ".join(missing)


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """Raise the given loggers (and their children's effective level) to ERROR for the duration."""
    loggers = [logging.getLogger(n) for n in names]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, old):
            lg.setLevel(lvl)


def export_onnx(net: nn.Module, dest: str | os.PathLike, input_shape: tuple[int, ...], meta: dict[str, Any],
                export_batch: int = 2, verify_batch: int = 3, atol: float = 1e-4) -> ExportResult:
    """ONNX (dynamo exporter, dynamic batch), verified with onnxruntime; metadata in a sidecar JSON."""
    dest = Path(dest)
    missing = onnx_available()
    if missing:
        return ExportResult("onnx", None, False, reason=f"skipped: install the optional extra (pip install "
                                                          f"'hwnas_darts[onnx]'); missing: {missing}")
    net = net.eval()

    def write(tmp: Path) -> None:
        example = torch.randn(max(2, export_batch), *input_shape)
        with warnings.catch_warnings(), _quiet_loggers("torch.onnx", "onnxscript"):
            warnings.simplefilter("ignore")
            # verbose=False: no step-by-step progress lines; the quiet loggers drop the exporter's
            # "torchvision is not installed. Skipping torchvision::nms" notes (this package has no
            # torchvision ops, so they say nothing to the user)
            torch.onnx.export(net, (example,), str(tmp), input_names=["input"], output_names=["logits"],
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},), dynamo=True,
                              verbose=False)

    res = _write_verified("onnx", dest, write, net, verify_batch, input_shape, atol)
    if res.ok:
        atomic_write_bytes(dest.with_suffix(".onnx.json"), _meta_bytes(meta))
    return res


def export_all(net: nn.Module, out_dir: str | os.PathLike, input_shape: tuple[int, ...], meta: dict[str, Any],
               torchscript: bool = True, program: bool = True, onnx: bool = False, verify_batch: int = 3,
               channels_last: bool = False) -> list[ExportResult]:
    """Every requested export into ``out_dir`` (``model.ts``, ``model.pt2``, ``model.onnx``).

    With ``channels_last`` the weights are stored channels-last (the deployment format the latency
    was measured in); the files still take ordinary NCHW input.
    """
    out = Path(out_dir)
    export_batch = 2 if verify_batch != 2 else 4
    results = []
    net = net.cpu().float().eval()
    net = net.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if torchscript:
        results.append(export_torchscript(net, out / "model.ts", input_shape, meta, export_batch, verify_batch))
    if program:
        results.append(export_program(net, out / "model.pt2", input_shape, meta, export_batch, verify_batch))
    if onnx:
        results.append(export_onnx(net, out / "model.onnx", input_shape, meta, export_batch, verify_batch))
    return results


def export_stage(ctx: "RunContext") -> list[dict[str, Any]]:
    """The run's ``export`` stage: TorchScript, ``.pt2`` (and ONNX) of the retrained network, each
    verified in a fresh process, with the metadata ``predict`` needs embedded."""
    import time

    if ctx.state.done("export"):
        return ctx.state.get("export", "results", [])
    t0 = time.perf_counter()
    dm, net = ctx.retrained.data, ctx.retrained.network
    mean, std = dm.normalization
    size = ctx.input_size()
    meta = {"arch": ctx.arch.to_string(), "space_id": ctx.space.space_id, "dataset": dm.info.name,
            "input_shape": [ctx.space.in_channels, size, size], "mean": list(mean), "std": list(std),
            "class_names": list(dm.info.class_names), "num_classes": ctx.space.num_classes,
            "params": sum(p.numel() for p in net.parameters())}
    e = ctx.cfg.export
    results = export_all(net, ctx.run_dir, tuple(meta["input_shape"]), meta, e.torchscript, e.program, e.onnx,
                         e.verify_batch, channels_last=ctx.cfg.hardware.channels_last)
    for r in results:
        if r.ok:
            _logger.info("exported %s: %s (max abs diff %.2g at batch %d, reloaded in a fresh process)", r.kind,
                         r.path, r.max_abs_diff, r.verify_batch)
        else:
            _logger.error("%s export not kept: %s", r.kind, r.reason)
    res = [r.to_dict() for r in results]
    ctx.state.mark("export", time.perf_counter() - t0, results=res)
    return res
