"""Inference with an exported model on new inputs.

``python -m hwnas_darts.predict --model runs/NAME/model.ts INPUT...`` (or ``model.pt2``, or
``model.onnx`` with the ``onnx`` extra installed) where each INPUT is an
image (PNG, JPEG, ...), an IDX file (``*-idx3-ubyte[.gz]``) or a directory of those. The
preprocessing stored in the model file (input size, channels, normalisation) is applied; the
class predictions with probabilities are printed, or written with ``--output FILE.csv|.json``.
With ``--labels`` (an IDX label file) the accuracy is printed too.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DataError, ModelFileError
from .io import IMAGE_EXTENSIONS, META_NAME

__all__ = ["load_model", "load_inputs", "predict", "Prediction", "main"]

_logger = logging.getLogger(__name__)



FORMATS = {".ts": "torchscript", ".pt": "torchscript", ".pt2": "program", ".onnx": "onnx"}
_FORMAT_NAMES = {"torchscript": "TorchScript", "program": "torch.export program", "onnx": "ONNX"}


class OnnxModel:
    """An ONNX model run by onnxruntime, called like the torch models (tensor in, logits out)."""

    def __init__(self, path: Path):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input_name: x.detach().cpu().numpy().astype(np.float32)})[0]
        return torch.from_numpy(out)


def model_format(path: Path) -> str:
    """``torchscript``, ``program`` or ``onnx`` from the file name; a file whose content does not
    fit its name is refused with what it appears to be."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ModelFileError(f"{path}: unknown model format {path.suffix!r}; use model.ts (TorchScript), model.pt2 "
                             "(torch.export) or model.onnx (ONNX) from a run directory")
    is_zip = zipfile.is_zipfile(path)
    if kind == "onnx" and is_zip:
        raise ModelFileError(f"{path} is a zip archive (TorchScript or torch.export), not an ONNX model; give it its "
                             "own name (model.ts / model.pt2)")
    if kind != "onnx" and not is_zip:
        raise ModelFileError(f"{path} is not a readable {_FORMAT_NAMES[kind]} file (those are zip archives); if it is an "
                             "ONNX model, name it *.onnx - otherwise it is corrupted: export it again from the run directory")
    return kind


def _load_onnx(path: Path) -> tuple[Any, dict[str, Any]]:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ModelFileError(f"{path} is an ONNX model; running it needs onnxruntime: pip install 'hwnas_darts[onnx]' "
                             "(or pip install onnxruntime). model.ts and model.pt2 of the same run need nothing extra") from None
    sidecar = path.with_suffix(".onnx.json")
    if not sidecar.is_file():
        raise ModelFileError(f"{path}: its metadata {sidecar.name} (input size, normalisation, classes) is missing; it is "
                             "written beside model.onnx by the export - copy both files together")
    try:
        raw = sidecar.read_text()
        model = OnnxModel(path)
    except Exception as exc:  # onnxruntime raises its own exception types for invalid files
        raise ModelFileError(f"{path} is not a readable ONNX file ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
                             "; export it again from the run directory") from exc
    return model, raw


def load_model(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Load ``model.ts`` (TorchScript), ``model.pt2`` (torch.export) or ``model.onnx`` (ONNX, with
    onnxruntime) and its metadata; the returned model maps a float tensor batch to logits.

    Raises:
        ModelFileError: missing, corrupted, of another format than its name says, or not
            written by hwnas_darts.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    kind = model_format(path)
    extra = {META_NAME: ""}
    if kind == "onnx":
        model, raw = _load_onnx(path)
    else:
        try:
            if kind == "program":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ep = torch.export.load(str(path), extra_files=extra)
                model = ep.module()
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except (RuntimeError, ValueError, OSError, zipfile.BadZipFile, KeyError, EOFError) as exc:
            raise ModelFileError(f"{path} is not a readable {_FORMAT_NAMES[kind]} file ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0][:200]}); it is corrupted or not a model file - export it "
                                 "again from the run directory") from exc
        raw = extra[META_NAME]
    raw = raw.decode() if isinstance(raw, bytes) else raw
    if not raw:
        raise ModelFileError(f"{path} carries no {META_NAME}: it was not exported by hwnas_darts, so its input size "
                             "and normalisation are unknown")
    try:
        meta = json.loads(raw)
        for key in ("input_shape", "mean", "std"):
            meta[key]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{path}: its {META_NAME} is damaged ({exc})") from exc
    meta["format_kind"] = kind
    if kind == "torchscript":  # an exported program is already in eval form (and refuses .eval())
        model.eval()
    return model, meta


def _read_image(path: Path, channels: int, size: int, strict: bool) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            src_mode, src_size = im.mode, im.size
            if strict and (src_size != (size, size)):
                raise DataError(f"{path}: image is {src_size[0]}x{src_size[1]}, the model takes {size}x{size} "
                                "(drop --strict to resize)")
            im = im.convert("L" if channels == 1 else "RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: cannot read the image ({exc})") from exc
    if strict and channels == 1 and src_mode not in ("L", "1", "P", "I;16", "I"):
        raise DataError(f"{path}: image has mode {src_mode}, the model takes 1-channel images (drop --strict to convert)")
    return arr.reshape(size, size, channels).transpose(2, 0, 1)


def _read_idx_images(path: Path, channels: int, size: int) -> np.ndarray:
    from .datasets import read_idx

    arr = read_idx(path)
    if arr.ndim == 3:
        arr = arr[:, None, :, :]
    elif arr.ndim == 4 and arr.shape[-1] in (1, 3):
        arr = arr.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"{path}: IDX array of shape {arr.shape} is not a stack of images (N x H x W)")
    if arr.shape[1] != channels or arr.shape[2:] != (size, size):
        raise DataError(f"{path}: images are {arr.shape[1]}x{arr.shape[2]}x{arr.shape[3]} (CxHxW), the model takes "
                        f"{channels}x{size}x{size}")
    if arr.dtype != np.uint8:
        raise DataError(f"{path}: IDX images must be unsigned bytes (0-255), got {arr.dtype}")
    return arr


def _expand(inputs: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and (f.suffix.lower() in IMAGE_EXTENSIONS or "idx" in f.name))
            if not files:
                raise DataError(f"{p}: directory holds no images or IDX files")
            out.extend(files)
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"input not found: {p}")
    return out


def load_inputs(inputs: Iterable[str | Path], meta: dict[str, Any], strict: bool = False) -> tuple[torch.Tensor, list[str]]:
    """Read images / IDX files into a uint8 batch ``[N, C, H, W]`` and a name per image."""
    channels, size = int(meta["input_shape"][0]), int(meta["input_shape"][1])
    arrays, names = [], []
    for path in _expand(inputs):
        if "idx" in path.name and path.suffix.lower() not in IMAGE_EXTENSIONS:
            arr = _read_idx_images(path, channels, size)
            arrays.append(arr)
            names.extend(f"{path.name}[{i}]" for i in range(len(arr)))
        else:
            arrays.append(_read_image(path, channels, size, strict)[None])
            names.append(str(path))
    if not arrays:
        raise DataError("no inputs given")
    return torch.from_numpy(np.concatenate(arrays)), names


@dataclass
class Prediction:
    name: str
    label: int
    class_name: str
    probability: float
    top: list[tuple[str, float]]


def predict_tensor(model: Any, meta: dict[str, Any], images_u8: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Class probabilities ``[N, classes]`` for uint8 images, with the model's preprocessing."""
    mean = torch.tensor(meta["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(meta["std"], dtype=torch.float32).view(1, -1, 1, 1)
    probs = []
    with torch.no_grad():
        for chunk in torch.split(images_u8, batch_size):
            x = (chunk.float() / 255.0 - mean) / std
            probs.append(F.softmax(model(x).float(), dim=1))
    return torch.cat(probs)


def predict(model_path: str | Path, inputs: Sequence[str | Path], top_k: int = 3, batch_size: int = 256,
            strict: bool = False) -> list[Prediction]:
    """Predict the class of every input image (see :func:`load_inputs` for what an input is)."""
    model, meta = load_model(model_path)
    x, names = load_inputs(inputs, meta, strict)
    probs = predict_tensor(model, meta, x, batch_size)
    classes = list(meta.get("class_names") or [str(i) for i in range(probs.shape[1])])
    out = []
    k = min(top_k, probs.shape[1])
    top_p, top_i = probs.topk(k, dim=1)
    for name, p_row, i_row in zip(names, top_p.tolist(), top_i.tolist()):
        out.append(Prediction(name, i_row[0], classes[i_row[0]], p_row[0],
                              [(classes[i], p) for i, p in zip(i_row, p_row)]))
    return out


def _write(preds: list[Prediction], path: Path) -> None:
    from .io import atomic_write_json, atomic_write_text

    if path.suffix == ".json":
        atomic_write_json(path, [p.__dict__ for p in preds])
        return
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["input", "label", "class", "probability", "top"])
    for p in preds:
        w.writerow([p.name, p.label, p.class_name, f"{p.probability:.6f}",
                    "; ".join(f"{c}:{q:.4f}" for c, q in p.top)])
    atomic_write_text(path, buf.getvalue())


def main(argv: Sequence[str] | None = None) -> int:
    from .cli import run_cli, setup_logging

    ap = argparse.ArgumentParser(prog="python -m hwnas_darts.predict",
                                 description="Classify images with an exported hwnas_darts model.")
    ap.add_argument("--model", required=True, help="model.ts, model.pt2 or model.onnx from a run directory")
    ap.add_argument("inputs", nargs="+", help="images, IDX files (e.g. t10k-images-idx3-ubyte.gz) or directories")
    ap.add_argument("--labels", help="IDX label file: print the accuracy of the predictions")
    ap.add_argument("--output", help="write predictions to FILE.csv or FILE.json instead of printing them")
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--strict", action="store_true", help="refuse images whose size or channels differ from the model's")
    ap.add_argument("--limit", type=int, default=20, help="rows to print (default 20; all go to --output)")
    args = ap.parse_args(argv)
    setup_logging()

    def run() -> int:
        preds = predict(args.model, args.inputs, args.top_k, args.batch_size, args.strict)
        if args.output:
            _write(preds, Path(args.output))
            print(f"wrote {len(preds)} predictions to {args.output}")
        else:
            for p in preds[: args.limit]:
                tops = ", ".join(f"{c} {q:.3f}" for c, q in p.top)
                print(f"{p.name}\t{p.class_name}\t{p.probability:.4f}\t[{tops}]")
            if len(preds) > args.limit:
                print(f"... {len(preds) - args.limit} more (use --output FILE to keep them all)")
        if args.labels:
            from .datasets import read_idx

            labels = read_idx(args.labels).astype(np.int64)
            if len(labels) != len(preds):
                raise DataError(f"{args.labels} holds {len(labels)} labels for {len(preds)} inputs")
            acc = float(np.mean(np.array([p.label for p in preds]) == labels))
            print(f"accuracy: {acc:.4f} ({int(round(acc * len(preds)))}/{len(preds)})")
        return 0

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
