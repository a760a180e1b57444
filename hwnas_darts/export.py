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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn


__all__ = ["ExportResult", "export_torchscript", "export_program", "export_onnx", "export_all", "META_NAME",
           "MODEL_FORMAT"]

_logger = logging.getLogger(__name__)

META_NAME = "hwnas_meta.json"
MODEL_FORMAT = "hwnas_darts.model/1"


@dataclass
class ExportResult:
    kind: str
    path: str | None
    ok: bool
    max_abs_diff: float | None = None
    same_predictions: bool | None = None
    verify_batch: int | None = None
    seconds: float | None = None
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "ok": self.ok, "max_abs_diff": self.max_abs_diff,
                "same_predictions": self.same_predictions, "verify_batch": self.verify_batch,
                "seconds": self.seconds, "reason": self.reason, **self.extra}


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


def _finish(kind: str, tmp: Path, dest: Path, net: nn.Module, verify_batch: int, input_shape, atol: float) -> ExportResult:
    res = _verify(kind, tmp, net, verify_batch, input_shape, atol)
    if res.ok:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, dest)
        res.path = str(dest)
    else:
        tmp.unlink(missing_ok=True)
        _logger.error("%s export not kept: %s", kind, res.reason)
    return res


def _tmp_for(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp" + dest.suffix, dir=dest.parent)
    os.close(fd)
    return Path(name)


def export_torchscript(net: nn.Module, dest: str | os.PathLike, input_shape: tuple[int, ...], meta: dict[str, Any],
                       export_batch: int = 2, verify_batch: int = 3, atol: float = 1e-4) -> ExportResult:
    """Trace ``net`` (eval mode) to TorchScript, save with metadata, verify, keep if it matches."""
    dest = Path(dest)
    net = net.eval()
    tmp = _tmp_for(dest)
    try:
        example = torch.randn(export_batch, *input_shape)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.jit.*deprecated.*")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            with torch.no_grad():
                traced = torch.jit.trace(net, example, check_trace=True)
                traced = torch.jit.freeze(traced) if hasattr(torch.jit, "freeze") else traced
            torch.jit.save(traced, str(tmp), _extra_files={META_NAME: _meta_bytes(meta)})
        return _finish("torchscript", tmp, dest, net, verify_batch, input_shape, atol)
    except Exception as exc:  # any tracing/saving failure: report, keep nothing
        tmp.unlink(missing_ok=True)
        return ExportResult("torchscript", None, False, reason=f"{type(exc).__name__}: {exc}")


def export_program(net: nn.Module, dest: str | os.PathLike, input_shape: tuple[int, ...], meta: dict[str, Any],
                   export_batch: int = 2, verify_batch: int = 3, atol: float = 1e-4) -> ExportResult:
    """``torch.export`` with a dynamic batch dimension, saved as ``.pt2`` with metadata, verified."""
    dest = Path(dest)
    net = net.eval()
    tmp = _tmp_for(dest)
    try:
        example = torch.randn(max(2, export_batch), *input_shape)
        batch = torch.export.Dim("batch", min=1, max=65536)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ep = torch.export.export(net, (example,), dynamic_shapes=({0: batch},))
            torch.export.save(ep, str(tmp), extra_files={META_NAME: _meta_bytes(meta).decode()})
        return _finish("program", tmp, dest, net, verify_batch, input_shape, atol)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        return ExportResult("program", None, False, reason=f"{type(exc).__name__}: {exc}")


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
    tmp = _tmp_for(dest)
    try:
        example = torch.randn(max(2, export_batch), *input_shape)
        with warnings.catch_warnings(), _quiet_loggers("torch.onnx", "onnxscript"):
            warnings.simplefilter("ignore")
            # verbose=False: no step-by-step progress lines; the quiet loggers drop the exporter's
            # "torchvision is not installed. Skipping torchvision::nms" notes (this package has no
            # torchvision ops, so they say nothing to the user)
            torch.onnx.export(net, (example,), str(tmp), input_names=["input"], output_names=["logits"],
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},), dynamo=True,
                              verbose=False)
        res = _finish("onnx", tmp, dest, net, verify_batch, input_shape, atol)
        if res.ok:
            from .io import atomic_write_bytes

            atomic_write_bytes(dest.with_suffix(".onnx.json"), _meta_bytes(meta))
        return res
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        return ExportResult("onnx", None, False, reason=f"{type(exc).__name__}: {exc}")


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
