"""Typed configuration: dataclass sections, YAML loading, dotted overrides, validation.

A configuration is a YAML file whose top-level keys are the sections of :class:`Config`. Every
key is checked against the dataclasses below: an unknown key, a value of the wrong type or a
value out of range is reported with its YAML path (``search.epochs``), all problems at once, in
one :class:`~hwnas_darts.errors.ConfigError`, before any work starts.

Overrides use dotted paths and YAML values, e.g. ``search.epochs=2`` or
``space.stages.0.width=48`` or ``data.dataset=digits``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .errors import ConfigError

__all__ = [
    "Config",
    "DataConfig",
    "SyntheticConfig",
    "LayerConfig",
    "StageConfig",
    "HeadConfig",
    "SpaceConfig",
    "SearchConfig",
    "HardwareConfig",
    "ObjectiveConfig",
    "DeriveConfig",
    "RetrainConfig",
    "ScaleConfig",
    "ExportConfig",
    "LoggerConfig",
    "TrainerConfig",
    "load_config",
    "apply_overrides",
    "config_to_dict",
    "config_to_yaml",
    "default_config_path",
]

MAX_WIDTH = 16384
DATASETS = ("fashion_mnist", "cifar10", "digits", "imagefolder", "synthetic")
RELAXATIONS = ("softmax", "gumbel", "single_path")
OBJECTIVE_FORMS = ("score", "fbnet", "hinge", "mnasnet")


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------
@dataclass
class SyntheticConfig:
    """A learnable synthetic image set (class-dependent patterns plus noise), for tests."""

    num_train: int = 512
    num_test: int = 256
    channels: int = 1
    size: int = 16
    num_classes: int = 4
    noise: float = 0.6


@dataclass
class DataConfig:
    """Where the images come from and how they are split and batched."""

    dataset: str = "fashion_mnist"
    root: str | None = None
    download: bool = True
    val_fraction: float = 0.2
    search_subset: int | None = 24000
    batch_size: int = 64
    eval_batch_size: int = 500
    num_workers: int = 0
    augment: bool = True
    image_size: int | None = None
    channels: int | None = None
    test_fraction: float = 0.2
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class LayerConfig:
    """One fixed layer of the stem: an op of the registry, its output width and stride."""

    op: str = "conv_k3_relu"
    width: int = 16
    stride: int = 1


@dataclass
class StageConfig:
    """A stage of searchable layers: every layer chooses one op among ``ops``.

    Ops written without an activation suffix are expanded once per entry of ``acts``. The first
    layer of the stage has ``stride``; the others have stride 1. Ops that cannot run at a
    layer's shape (a skip where the shape changes, a space-to-depth op at stride 1) are left out
    of that layer's choices; an op that fits no layer of the stage is an error.
    """

    width: int = 32
    layers: int = 1
    stride: int = 1
    ops: list[str] = field(default_factory=list)
    acts: list[str] = field(default_factory=lambda: ["relu"])
    name: str | None = None


@dataclass
class HeadConfig:
    """Classifier head: 1x1 conv to ``width``, activation, global pool, dropout, linear."""

    width: int = 128
    act: str = "relu"
    dropout: float = 0.0


def _default_stem() -> list[LayerConfig]:
    return [LayerConfig(op="conv_k3_relu", width=16, stride=1)]


def _default_stages() -> list[StageConfig]:
    return [
        StageConfig(
            name="s2d",
            width=24,
            layers=1,
            stride=2,
            ops=["s2dconv_n2", "s2d_n2", "conv_k3", "fmb_k3_e2", "mb_k3_e4"],
            acts=["relu", "swish"],
        ),
        StageConfig(
            name="stage1",
            width=24,
            layers=2,
            stride=1,
            ops=["mb_k3_e3", "mb_k5_e3", "fmb_k3_e2", "fmb_k3_e4", "conv_k3", "skip"],
            acts=["relu", "swish"],
        ),
        StageConfig(
            name="stage2",
            width=48,
            layers=3,
            stride=2,
            ops=["mb_k3_e3", "mb_k5_e3", "mb_k3_e6", "fmb_k3_e2", "fmb_k3_e4", "s2dconv_n2", "skip"],
            acts=["relu", "swish"],
        ),
    ]


@dataclass
class SpaceConfig:
    """The macro search space (claim-16 template: stem -> space-to-depth -> stages -> head)."""

    stem: list[LayerConfig] = field(default_factory=_default_stem)
    stages: list[StageConfig] = field(default_factory=_default_stages)
    head: HeadConfig = field(default_factory=lambda: HeadConfig(width=128, act="relu", dropout=0.1))


@dataclass
class SearchConfig:
    """The bi-level differentiable search."""

    relaxation: str = "single_path"
    epochs: int = 6
    warmup_epochs: int = 3
    steps_per_epoch: int | None = None
    weight_lr: float = 0.05
    weight_momentum: float = 0.9
    weight_decay: float = 4.0e-5
    alpha_lr: float = 0.01
    alpha_weight_decay: float = 0.0
    tau_start: float = 5.0
    tau_end: float = 0.5
    second_order: bool = False
    share_act_weights: bool = True
    grad_clip: float | None = 5.0


@dataclass
class HardwareConfig:
    """The target device, how latency is measured there, and where the latency table lives."""

    device: str = "cpu"
    batch_size: int = 32
    dtype: str = "float32"
    channels_last: bool = True
    cuda_graphs: bool = False
    threads: int | None = None
    lut: str | None = "auto"
    allow_mismatch: bool = False
    min_run_time: float = 0.4
    processes: int = 3
    rounds: int = 4
    reference: bool | None = None
    warmup: int = 4
    calibration_archs: int = 80
    validation_archs: int = 30
    probe: bool = True
    build_devices: list[str] = field(default_factory=list)
    check_archs: int = 8
    check_tolerance: float = 10.0
    on_check_fail: str = "warn"


@dataclass
class ObjectiveConfig:
    """Hardware terms of the search loss and of the candidate score.

    ``score(m) = ACC * (LAT/LAT_t)^w * (I/I_t)^theta * (E/E_t)^gamma`` with
    ``w = latency_weight`` (negative: slower is worse), ``theta = intensity_weight`` and
    ``gamma = efficiency_weight``. Targets are numbers or ``auto``.
    """

    form: str = "mnasnet"
    cost: str = "latency"
    latency_weight: float = -0.07
    intensity_weight: float = 0.0
    efficiency_weight: float = 0.0
    latency_target: float | str = "auto"
    target_quantile: float = 0.5
    intensity_target: float | str = "auto"
    efficiency_target: float | str = "auto"
    latency_weight_below: float = 0.0
    latency_weight_above: float = -1.0
    hinge_weight: float = 2.0
    fbnet_alpha: float = 0.2
    fbnet_beta: float = 0.6


@dataclass
class DeriveConfig:
    """Discretisation: which candidates are scored, and how."""

    num_samples: int = 8
    constrained: bool = True
    measure: bool = True
    finetune_steps: int = 0
    bn_batches: int = 10
    eval_batches: int | None = None
    max_skips: int | None = None
    seed: int | None = None
    noise_floor: float = 0.02


@dataclass
class RetrainConfig:
    """Retraining the chosen network from scratch."""

    epochs: int = 5
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5.0e-4
    label_smoothing: float = 0.1
    steps_per_epoch: int | None = None
    full_train: bool = True


@dataclass
class ScaleConfig:
    """Optional EfficientNet-style compound scaling of the chosen architecture."""

    enabled: bool = False
    phi: float = 1.0
    depth_coef: float = 1.2
    width_coef: float = 1.1
    resolution_coef: float = 1.15
    depth: float | None = None
    width: float | None = None
    resolution: float | None = None


@dataclass
class ExportConfig:
    """Which exports are written (each is verified in a fresh process)."""

    torchscript: bool = True
    program: bool = True
    onnx: bool = False
    verify_batch: int = 3


@dataclass
class LoggerConfig:
    """Experiment tracking."""

    kind: str = "csv"
    project: str = "hwnas_darts"
    entity: str | None = None
    mode: str = "auto"
    tags: list[str] = field(default_factory=list)


@dataclass
class TrainerConfig:
    """Passed to Lightning's ``Trainer`` for the search and the retraining."""

    accelerator: str = "auto"
    devices: int | str | list[int] = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    deterministic: bool = False
    channels_last: bool = True
    progress: bool = True


@dataclass
class Config:
    """The whole run."""

    name: str = "fashion_mnist"
    seed: int = 0
    out: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    derive: DeriveConfig = field(default_factory=DeriveConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def run_dir(self) -> Path:
        """The run directory: ``out`` if set, else ``runs/<name>``."""
        return Path(self.out) if self.out else Path("runs") / self.name


# --------------------------------------------------------------------------------------------
# Conversion from plain data, with every problem collected
# --------------------------------------------------------------------------------------------
_MISSING = object()


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        return f"list of {_type_name(arg)}"
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, path: str, problems: list[str]) -> Any:
    """Convert ``value`` to ``tp``; append a message to ``problems`` and return _MISSING on error."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        # try exact-kind matches first (so 3 stays an int in int | str)
        for arg in args:
            if arg is type(None):
                continue
            sub: list[str] = []
            out = _convert(value, arg, path, sub)
            if not sub:
                return out
        problems.append(f"{path}: expected {_type_name(tp)}, got {value!r}")
        return _MISSING
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            problems.append(f"{path}: expected a list, got {value!r}")
            return _MISSING
        out_list = []
        for i, item in enumerate(value):
            conv = _convert(item, arg, f"{path}.{i}", problems)
            if conv is not _MISSING:
                out_list.append(conv)
        return out_list
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, path, problems)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        problems.append(f"{path}: expected true or false, got {value!r}")
        return _MISSING
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        problems.append(f"{path}: expected an integer, got {value!r}")
        return _MISSING
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        problems.append(f"{path}: expected a number, got {value!r}")
        return _MISSING
    if tp is str:
        if isinstance(value, str):
            return value
        problems.append(f"{path}: expected a string, got {value!r}")
        return _MISSING
    raise TypeError(f"unsupported config type {tp!r} at {path}")  # a bug, not user input


def _from_dict(cls: type, data: Any, path: str, problems: list[str]) -> Any:
    where = path or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(f"{where}: expected a mapping of keys to values, got {data!r}")
        return _MISSING
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        sub = f"{path}.{key}" if path else str(key)
        if key not in fields:
            valid = ", ".join(fields)
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"{sub}: unknown key{hint}; valid keys of {where}: {valid}")
            continue
        conv = _convert(value, hints[key], sub, problems)
        if conv is not _MISSING:
            kwargs[key] = conv
    return cls(**kwargs)


# --------------------------------------------------------------------------------------------
# Semantic validation (ranges and choices); the space's shapes are checked by SearchSpace
# --------------------------------------------------------------------------------------------
def _check(problems: list[str], ok: bool, path: str, msg: str) -> None:
    if not ok:
        problems.append(f"{path}: {msg}")


def _validate(cfg: Config) -> list[str]:
    p: list[str] = []
    d, s, h, o = cfg.data, cfg.search, cfg.hardware, cfg.objective
    _check(p, bool(cfg.name) and "/" not in cfg.name, "name", f"must be a non-empty name without '/', got {cfg.name!r}")
    _check(p, d.dataset in DATASETS, "data.dataset", f"unknown dataset {d.dataset!r}; choose one of {', '.join(DATASETS)}")
    _check(p, 0.0 < d.val_fraction < 1.0, "data.val_fraction", f"must be in (0, 1), got {d.val_fraction}")
    _check(p, 0.0 < d.test_fraction < 1.0, "data.test_fraction", f"must be in (0, 1), got {d.test_fraction}")
    _check(p, 1 <= d.batch_size <= 65536, "data.batch_size", f"must be >= 1 (and <= 65536), got {d.batch_size}")
    _check(p, 1 <= d.eval_batch_size <= 65536, "data.eval_batch_size", f"must be >= 1 (and <= 65536), got {d.eval_batch_size}")
    _check(p, d.num_workers >= 0, "data.num_workers", f"must be >= 0, got {d.num_workers}")
    _check(p, d.search_subset is None or d.search_subset >= 10, "data.search_subset", f"must be null or >= 10, got {d.search_subset}")
    _check(p, d.image_size is None or 4 <= d.image_size <= 4096, "data.image_size", f"must be null or in [4, 4096], got {d.image_size}")
    _check(p, d.channels in (None, 1, 3), "data.channels", f"must be null, 1 or 3, got {d.channels}")
    if d.dataset == "imagefolder":
        _check(p, d.root is not None, "data.root", "the imagefolder dataset needs data.root=DIR (one sub-directory per class)")
    syn = d.synthetic
    for key, hi in (("num_train", 10**7), ("num_test", 10**7), ("size", 1024), ("num_classes", 1000)):
        val = getattr(syn, key)
        _check(p, 2 <= val <= hi, f"data.synthetic.{key}", f"must be in [2, {hi}], got {val}")
    _check(p, syn.channels in (1, 3), "data.synthetic.channels", f"must be 1 or 3, got {syn.channels}")
    _check(p, syn.noise >= 0, "data.synthetic.noise", f"must be >= 0, got {syn.noise}")

    _check(p, len(cfg.space.stem) >= 1, "space.stem", "needs at least one layer")
    _check(p, len(cfg.space.stages) >= 1, "space.stages", "needs at least one stage")
    for i, st in enumerate(cfg.space.stages):
        _check(p, 1 <= st.width <= MAX_WIDTH, f"space.stages.{i}.width", f"must be >= 1 (and <= {MAX_WIDTH}), got {st.width}")
        _check(p, 1 <= st.layers <= 64, f"space.stages.{i}.layers", f"must be >= 1 (and <= 64), got {st.layers}")
        _check(p, 1 <= st.stride <= 8, f"space.stages.{i}.stride", f"must be in [1, 8], got {st.stride}")
        _check(p, len(st.ops) >= 1, f"space.stages.{i}.ops", "needs at least one candidate op")
    for i, lay in enumerate(cfg.space.stem):
        _check(p, 1 <= lay.width <= MAX_WIDTH, f"space.stem.{i}.width", f"must be >= 1 (and <= {MAX_WIDTH}), got {lay.width}")
        _check(p, 1 <= lay.stride <= 8, f"space.stem.{i}.stride", f"must be in [1, 8], got {lay.stride}")
    _check(p, 1 <= cfg.space.head.width <= MAX_WIDTH, "space.head.width",
           f"must be >= 1 (and <= {MAX_WIDTH}), got {cfg.space.head.width}")
    _check(p, 0.0 <= cfg.space.head.dropout < 1.0, "space.head.dropout", f"must be in [0, 1), got {cfg.space.head.dropout}")

    _check(p, s.relaxation in RELAXATIONS, "search.relaxation", f"unknown relaxation {s.relaxation!r}; choose one of {', '.join(RELAXATIONS)}")
    _check(p, s.epochs >= 0, "search.epochs", f"must be >= 0, got {s.epochs}")
    _check(p, s.warmup_epochs >= 0, "search.warmup_epochs", f"must be >= 0, got {s.warmup_epochs}")
    _check(p, s.steps_per_epoch is None or s.steps_per_epoch >= 1, "search.steps_per_epoch", f"must be null or >= 1, got {s.steps_per_epoch}")
    _check(p, s.weight_lr > 0, "search.weight_lr", f"must be > 0, got {s.weight_lr}")
    _check(p, s.alpha_lr > 0, "search.alpha_lr", f"must be > 0, got {s.alpha_lr}")
    _check(p, 0 <= s.weight_momentum < 1, "search.weight_momentum", f"must be in [0, 1), got {s.weight_momentum}")
    _check(p, s.weight_decay >= 0, "search.weight_decay", f"must be >= 0, got {s.weight_decay}")
    _check(p, s.alpha_weight_decay >= 0, "search.alpha_weight_decay", f"must be >= 0, got {s.alpha_weight_decay}")
    _check(p, s.tau_start > 0, "search.tau_start", f"temperature must be > 0, got {s.tau_start}")
    _check(p, s.tau_end > 0, "search.tau_end", f"temperature must be > 0, got {s.tau_end}")
    _check(p, s.grad_clip is None or s.grad_clip > 0, "search.grad_clip", f"must be null or > 0, got {s.grad_clip}")

    _check(p, h.device in ("cpu", "cuda", "auto") or h.device.startswith("cuda:"), "hardware.device", f"must be cpu, cuda, cuda:N or auto, got {h.device!r}")
    _check(p, 1 <= h.batch_size <= 65536, "hardware.batch_size", f"must be >= 1 (and <= 65536), got {h.batch_size}")
    _check(p, h.dtype in ("float32", "float16", "bfloat16"), "hardware.dtype", f"must be float32, float16 or bfloat16, got {h.dtype!r}")
    _check(p, h.threads is None or h.threads >= 1, "hardware.threads", f"must be null or >= 1, got {h.threads}")
    _check(p, 0 < h.min_run_time <= 30, "hardware.min_run_time",
           f"must be > 0 and <= 30 seconds of timing per item, got {h.min_run_time}")
    _check(p, 0 <= h.check_archs <= 200, "hardware.check_archs", f"must be in [0, 200], got {h.check_archs}")
    _check(p, 0 < h.check_tolerance <= 100, "hardware.check_tolerance",
           f"must be a percentage in (0, 100], got {h.check_tolerance}")
    _check(p, h.on_check_fail in ("warn", "recalibrate"), "hardware.on_check_fail",
           f"must be warn or recalibrate, got {h.on_check_fail!r}")
    _check(p, h.warmup >= 0, "hardware.warmup", f"must be >= 0, got {h.warmup}")
    _check(p, h.rounds >= 1, "hardware.rounds", f"must be >= 1, got {h.rounds}")
    _check(p, 1 <= h.processes <= 16, "hardware.processes", f"must be in [1, 16], got {h.processes}")
    _check(p, h.calibration_archs >= 0, "hardware.calibration_archs", f"must be >= 0, got {h.calibration_archs}")
    _check(p, h.validation_archs >= 0, "hardware.validation_archs", f"must be >= 0, got {h.validation_archs}")
    if h.cuda_graphs:
        _check(p, h.device != "cpu", "hardware.cuda_graphs", "CUDA graphs need hardware.device=cuda")

    _check(p, o.form in OBJECTIVE_FORMS, "objective.form", f"unknown form {o.form!r}; choose one of {', '.join(OBJECTIVE_FORMS)}")
    _check(p, o.cost in ("latency", "macs"), "objective.cost", f"must be latency or macs, got {o.cost!r}")
    for key in ("latency_target", "intensity_target", "efficiency_target"):
        val = getattr(o, key)
        if isinstance(val, str):
            _check(p, val == "auto", f"objective.{key}", f"must be a positive number or 'auto', got {val!r}")
        else:
            _check(p, val > 0, f"objective.{key}", f"must be > 0, got {val}")
    _check(p, 0.0 < o.target_quantile < 1.0, "objective.target_quantile", f"must be in (0, 1), got {o.target_quantile}")
    _check(p, o.hinge_weight >= 0, "objective.hinge_weight", f"must be >= 0, got {o.hinge_weight}")
    _check(p, o.fbnet_alpha >= 0, "objective.fbnet_alpha", f"must be >= 0, got {o.fbnet_alpha}")
    _check(p, o.fbnet_beta >= 0, "objective.fbnet_beta", f"must be >= 0, got {o.fbnet_beta}")

    dv = cfg.derive
    _check(p, dv.num_samples >= 0, "derive.num_samples", f"must be >= 0, got {dv.num_samples}")
    _check(p, dv.finetune_steps >= 0, "derive.finetune_steps", f"must be >= 0, got {dv.finetune_steps}")
    _check(p, dv.bn_batches >= 0, "derive.bn_batches", f"must be >= 0, got {dv.bn_batches}")
    _check(p, 0 <= dv.noise_floor < 0.5, "derive.noise_floor",
           f"must be a relative latency noise in [0, 0.5), got {dv.noise_floor}")
    _check(p, dv.eval_batches is None or dv.eval_batches >= 1, "derive.eval_batches", f"must be null or >= 1, got {dv.eval_batches}")
    _check(p, dv.max_skips is None or dv.max_skips >= 0, "derive.max_skips", f"must be null or >= 0, got {dv.max_skips}")

    r = cfg.retrain
    _check(p, r.epochs >= 1, "retrain.epochs", f"must be >= 1, got {r.epochs}")
    _check(p, r.optimizer in ("sgd", "adamw"), "retrain.optimizer", f"must be sgd or adamw, got {r.optimizer!r}")
    _check(p, r.lr > 0, "retrain.lr", f"must be > 0, got {r.lr}")
    _check(p, 0 <= r.momentum < 1, "retrain.momentum", f"must be in [0, 1), got {r.momentum}")
    _check(p, r.weight_decay >= 0, "retrain.weight_decay", f"must be >= 0, got {r.weight_decay}")
    _check(p, 0 <= r.label_smoothing < 1, "retrain.label_smoothing", f"must be in [0, 1), got {r.label_smoothing}")
    _check(p, r.steps_per_epoch is None or r.steps_per_epoch >= 1, "retrain.steps_per_epoch", f"must be null or >= 1, got {r.steps_per_epoch}")

    sc = cfg.scale
    for key in ("depth_coef", "width_coef", "resolution_coef"):
        _check(p, getattr(sc, key) >= 1.0, f"scale.{key}", f"must be >= 1, got {getattr(sc, key)}")
    _check(p, sc.phi >= 0, "scale.phi", f"must be >= 0, got {sc.phi}")
    for key in ("depth", "width", "resolution"):
        val = getattr(sc, key)
        _check(p, val is None or val > 0, f"scale.{key}", f"must be null or > 0, got {val}")
    _check(p, cfg.export.verify_batch >= 1, "export.verify_batch", f"must be >= 1, got {cfg.export.verify_batch}")

    lg = cfg.logger
    _check(p, lg.kind in ("wandb", "csv", "none"), "logger.kind", f"must be wandb, csv or none, got {lg.kind!r}")
    _check(p, lg.mode in ("auto", "online", "offline", "disabled"), "logger.mode", f"must be auto, online, offline or disabled, got {lg.mode!r}")

    t = cfg.trainer
    _check(p, t.num_nodes >= 1, "trainer.num_nodes", f"must be >= 1, got {t.num_nodes}")
    precisions = ("32-true", "32", "16-mixed", "bf16-mixed", "64-true", "bf16-true", "16-true")
    _check(p, t.precision in precisions, "trainer.precision", f"must be one of {', '.join(precisions)}, got {t.precision!r}")
    return p


# --------------------------------------------------------------------------------------------
# Public helpers
# --------------------------------------------------------------------------------------------
def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The configuration as plain data (what ``config.yaml`` holds)."""
    return dataclasses.asdict(cfg)


def config_to_yaml(cfg: Config) -> str:
    """The configuration as YAML text, sections in declaration order."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node: Any = data
    for i, key in enumerate(keys[:-1]):
        where = ".".join(keys[: i + 1])
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ConfigError(f"{where}: list index out of range (the list has {len(node)} items)")
            node = node[int(key)]
            continue
        if key not in node or node[key] is None:
            node[key] = {}
        node = node[key]
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"{where}: is a value, not a section; cannot set {dotted}")
    last = keys[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"{dotted}: list index out of range (the list has {len(node)} items)")
        node[int(last)] = value
    else:
        node[last] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a plain config dict."""
    data = copy.deepcopy(data)
    for item in overrides:
        item = item[2:] if item.startswith("--") else item
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value (e.g. search.epochs=2)")
        key, raw = item.split("=", 1)
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {key}: value {raw!r} is not valid YAML ({exc})") from exc
        _set_dotted(data, key, value)
    return data


def default_config_path() -> Path | None:
    """``configs/fashion_mnist.yaml`` from the working directory or the source checkout."""
    for base in (Path.cwd(), Path(__file__).resolve().parent.parent):
        cand = base / "configs" / "fashion_mnist.yaml"
        if cand.is_file():
            return cand
    return None


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from plain data; raise ConfigError on any problem."""
    problems: list[str] = []
    cfg = _from_dict(Config, data, "", problems)
    if cfg is _MISSING or problems:
        raise ConfigError(problems)
    problems = _validate(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML config file into a dict, with clear errors for missing or malformed files."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (default: ``configs/fashion_mnist.yaml``), apply overrides, validate.

    Args:
        path: YAML file; ``None`` uses the default config (or the built-in defaults, which are
            the same values, when the file is not found).
        overrides: dotted ``key=value`` strings applied on top of the file.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: listing every problem with its YAML path.
    """
    if path is None:
        path = default_config_path()
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    return config_from_dict(data)
