"""The sections of a configuration: pydantic models with ``extra="forbid"``, strict types,
``Literal`` choices and ``Field`` ranges (upper bounds on every value that scales time or memory).
:class:`hwnas_darts.config.Config` puts them together; import them from there."""

from __future__ import annotations

import logging
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

_logger = logging.getLogger("hwnas_darts.config")

MAX_WIDTH = 16384
Relaxation = Literal["softmax", "gumbel", "reinforce"]
#: which paths the weight steps of the reinforce relaxation train (``search.weight_sampling``)
WeightSampling = Literal["policy", "uniform", "sandwich"]
#: strictly positive / non-negative numbers with an upper bound (``le``) where they scale cost
Pos = Annotated[float, Field(gt=0)]
Target = Union[Annotated[float, Field(gt=0)], Literal["auto"]]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=False)


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------
class SyntheticConfig(Section):
    """A learnable synthetic image set (class-dependent patterns plus noise), for tests."""

    num_train: int = Field(512, ge=2, le=10**7)
    num_test: int = Field(256, ge=2, le=10**7)
    channels: Literal[1, 3] = 1
    size: int = Field(16, ge=2, le=1024)
    num_classes: int = Field(4, ge=2, le=1000)
    noise: float = Field(0.6, ge=0)


class DataConfig(Section):
    """Where the images come from and how they are split and batched."""

    dataset: Literal["fashion_mnist", "cifar10", "digits", "imagefolder", "litdata", "synthetic"] = "fashion_mnist"
    root: Optional[str] = None
    download: bool = True
    val_fraction: float = Field(0.2, gt=0, lt=1)
    search_subset: Optional[int] = Field(24000, ge=10, le=10**8)
    batch_size: int = Field(64, ge=1, le=65536)
    eval_batch_size: int = Field(500, ge=1, le=65536)
    num_workers: int = Field(0, ge=0, le=64)
    augment: bool = True
    image_size: Optional[int] = Field(None, ge=4, le=4096)
    channels: Optional[Literal[1, 3]] = None
    test_fraction: float = Field(0.2, gt=0, lt=1)
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)

    @model_validator(mode="after")
    def _root_for_folders(self):
        if self.dataset == "imagefolder" and self.root is None:
            raise ValueError("the imagefolder dataset needs data.root=DIR (one sub-directory per class)")
        if self.dataset == "litdata" and self.root is None:
            raise ValueError("the litdata dataset needs data.root=DIR, a shard directory written by "
                             "python -m hwnas_darts.shards IMAGE_FOLDER DIR")
        return self


class LayerConfig(Section):
    """One fixed layer of the stem: an op of the registry, its output width and stride."""

    op: str = "conv_k3_relu"
    width: int = Field(16, ge=1, le=MAX_WIDTH)
    stride: int = Field(1, ge=1, le=8)


class StageConfig(Section):
    """A stage of searchable layers: every layer chooses one op among ``ops``.

    Ops written without an activation suffix are expanded once per entry of ``acts``. The first
    layer of the stage has ``stride``; the others have stride 1. Ops that cannot run at a
    layer's shape (a skip where the shape changes, a space-to-depth op at stride 1) are left out
    of that layer's choices; an op that fits no layer of the stage is an error.
    """

    width: int = Field(32, ge=1, le=MAX_WIDTH)
    layers: int = Field(1, ge=1, le=64)
    stride: int = Field(1, ge=1, le=8)
    ops: list[str] = Field(default_factory=list, min_length=1)
    acts: list[str] = Field(default_factory=lambda: ["relu"])
    name: Optional[str] = None


class HeadConfig(Section):
    """Classifier head: 1x1 conv to ``width``, activation, global pool, dropout, linear."""

    width: int = Field(128, ge=1, le=MAX_WIDTH)
    act: str = "relu"
    dropout: float = Field(0.0, ge=0, lt=1)


def _default_stages() -> list[StageConfig]:
    acts = ["relu", "swish"]
    return [
        StageConfig(name="s2d", width=24, layers=1, stride=2,
                    ops=["s2dconv_n2", "s2d_n2", "conv_k3", "fmb_k3_e2", "mb_k3_e4"], acts=acts),
        StageConfig(name="stage1", width=24, layers=2, stride=1,
                    ops=["mb_k3_e3", "mb_k5_e3", "fmb_k3_e2", "fmb_k3_e4", "conv_k3", "skip"], acts=acts),
        StageConfig(name="stage2", width=48, layers=3, stride=2,
                    ops=["mb_k3_e3", "mb_k5_e3", "mb_k3_e6", "fmb_k3_e2", "fmb_k3_e4", "s2dconv_n2", "skip"], acts=acts),
    ]


class SpaceConfig(Section):
    """The macro search space (claim-16 template: stem -> space-to-depth -> stages -> head)."""

    stem: list[LayerConfig] = Field(default_factory=lambda: [LayerConfig()], min_length=1)
    stages: list[StageConfig] = Field(default_factory=_default_stages, min_length=1)
    head: HeadConfig = Field(default_factory=lambda: HeadConfig(width=128, act="relu", dropout=0.1))


class SearchConfig(Section):
    """The bi-level differentiable search."""

    relaxation: Relaxation = "reinforce"
    epochs: int = Field(6, ge=0, le=1000)
    warmup_epochs: int = Field(2, ge=0, le=1000)
    steps_per_epoch: Optional[int] = Field(None, ge=1, le=10**6)
    weight_lr: Pos = 0.05
    weight_momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(4.0e-5, ge=0)
    alpha_lr: Pos = 0.1
    alpha_weight_decay: float = Field(0.0, ge=0)
    tau_start: Pos = 5.0
    tau_end: Pos = 0.5
    second_order: bool = False
    share_act_weights: bool = True
    grad_clip: Optional[Pos] = 5.0
    # reinforce: paths scored on each architecture batch (>= 2: each against the others' mean, the
    # leave-one-out baseline; 1: against a moving average of past rewards with this decay)
    arch_samples: int = Field(4, ge=1, le=64)
    baseline_decay: float = Field(0.95, ge=0, lt=1)
    # reinforce: the scored paths share the computation of the layers they agree on (the stem always;
    # a decided distribution's paths nearly everywhere). The same logits as separate forwards for
    # deterministic ops - every op this package builds (its only dropout, the head's, runs per path);
    # false for custom ops that draw random numbers, whose paths would then share one draw
    share_paths: bool = True
    # reinforce: which paths the weight steps train - the policy's samples (TuNAS) or uniform ones
    # (SPOS/FairNAS: every op trained as often, so the policy compares ops trained alike) or the
    # sandwich rule (BigNAS): each step trains the largest path, the smallest and sandwich_random
    # uniform ones, the others on the largest's soft predictions when inplace_distill is on
    weight_sampling: WeightSampling = "policy"
    sandwich_random: int = Field(2, ge=0, le=16)
    inplace_distill: bool = True

    @model_validator(mode="before")
    @classmethod
    def _single_path_is_reinforce(cls, data):
        if isinstance(data, dict) and data.get("relaxation") == "single_path":
            _logger.warning("search.relaxation=single_path (the straight-through estimator) was replaced by 'reinforce' "
                            "(one sampled path per step too, with a policy gradient); running reinforce. Its gradient did "
                            "not estimate the loss's: docs/BENCHMARKS.md section 11")
            data = {**data, "relaxation": "reinforce"}
        return data

    @model_validator(mode="after")
    def _relaxation_combinations(self):
        if self.weight_sampling != "policy" and self.relaxation != "reinforce":
            raise ValueError(f"search.weight_sampling={self.weight_sampling} needs search.relaxation=reinforce (softmax "
                             "and gumbel train every path in every step); set weight_sampling=policy")
        if self.second_order and self.relaxation == "reinforce":
            raise ValueError("search.second_order=true differentiates through the weights, which the reinforce "
                             "relaxation does not (its architecture gradient is a policy gradient); use "
                             "gumbel or softmax with second_order, or set second_order=false")
        return self


class HardwareConfig(Section):
    """The target device, how latency is measured there, and where the latency table lives.

    The measurement settings (:class:`~hwnas_darts.hardware.measure.MeasureSettings`) take their
    defaults from this section, so a table built from defaults and one built from a config agree.
    """

    device: str = Field("cpu", pattern=r"^(cpu|cuda|auto|cuda:\d+)$")
    batch_size: int = Field(32, ge=1, le=65536)
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    channels_last: bool = True
    cuda_graphs: bool = False
    threads: Optional[int] = Field(None, ge=1, le=1024)
    lut: Optional[str] = "auto"
    allow_mismatch: bool = False
    min_run_time: float = Field(0.4, gt=0, le=30, description="seconds of timing per measured item")
    processes: int = Field(3, ge=1, le=16)
    rounds: int = Field(4, ge=1, le=100)
    reference: Optional[bool] = None
    warmup: int = Field(4, ge=0, le=1000)
    calibration_archs: int = Field(80, ge=0, le=2000)
    validation_archs: int = Field(30, ge=0, le=1000)
    probe: bool = True
    build_devices: list[str] = Field(default_factory=list)
    check_archs: int = Field(8, ge=0, le=200)
    check_tolerance: float = Field(10.0, gt=0, le=100)
    on_check_fail: Literal["warn", "recalibrate"] = "warn"

    @model_validator(mode="after")
    def _graphs_need_cuda(self):
        if self.cuda_graphs and self.device == "cpu":
            raise ValueError("CUDA graphs need hardware.device=cuda")
        return self


class ObjectiveConfig(Section):
    """Hardware terms of the search loss and of the candidate score.

    ``score(m) = ACC * (LAT/LAT_t)^w * (I/I_t)^theta * (E/E_t)^gamma`` with
    ``w = latency_weight`` (negative: slower is worse), ``theta = intensity_weight`` and
    ``gamma = efficiency_weight``. Targets are numbers or ``auto``.
    """

    form: Literal["score", "fbnet", "hinge", "mnasnet"] = "mnasnet"
    cost: Literal["latency", "macs"] = "latency"
    latency_weight: float = -0.07
    intensity_weight: float = 0.0
    efficiency_weight: float = 0.0
    latency_target: Target = "auto"
    target_quantile: float = Field(0.5, gt=0, lt=1)
    intensity_target: Target = "auto"
    efficiency_target: Target = "auto"
    latency_weight_below: float = 0.3
    latency_weight_above: float = -1.0
    hinge_weight: float = Field(2.0, ge=0)
    fbnet_alpha: float = Field(0.2, ge=0)
    fbnet_beta: float = Field(0.6, ge=0)
    # hinge / mnasnet: the latency the target constrains is the larger of the expected latency and
    # the argmax network's predicted latency (the gradient stays the expectation's), so the search's
    # decision meets the target, not only its average
    argmax_latency: bool = True


class DeriveConfig(Section):
    """Discretisation: which candidates are scored, and how."""

    # decision: the argmax and, in layers whose top two probabilities are within tie_margin of each
    # other, its runner-up swaps (the search decides; derive settles its near-ties). samples: the
    # argmax and num_samples networks sampled from the final distribution (re-ranked by the score)
    candidates: Literal["decision", "samples"] = "decision"
    tie_margin: float = Field(0.1, ge=0, le=1)
    num_samples: int = Field(8, ge=0, le=1000)
    constrained: bool = True
    measure: bool = True
    finetune_steps: int = Field(0, ge=0, le=100000)
    bn_batches: int = Field(10, ge=0, le=1000)
    eval_batches: Optional[int] = Field(None, ge=1, le=100000)
    max_skips: Optional[int] = Field(None, ge=0)
    seed: Optional[int] = None
    noise_floor: float = Field(0.02, ge=0, lt=0.5)
    # true: among the admissible candidates whose supernet accuracy is within 1.96 paired standard
    # errors of the best one, the fastest is chosen (candidates.json records that choice either way)
    accuracy_noise: bool = False


class RetrainConfig(Section):
    """Retraining the chosen network from scratch."""

    epochs: int = Field(5, ge=1, le=1000)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: Pos = 0.1
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5.0e-4, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    steps_per_epoch: Optional[int] = Field(None, ge=1, le=10**6)
    full_train: bool = True
    holdout: int = Field(0, ge=0, le=10**7)
    time_budget_minutes: Optional[float] = Field(None, gt=0, le=10**5)
    # the whole run's budget: the retraining gets what the stages before it (latency table, search, derive)
    # left of it, less an estimate of the stages after it (test, profile, export, report); with
    # time_budget_minutes as well, the smaller of the two. For a machine that must first build its table
    run_budget_minutes: Optional[float] = Field(None, gt=0, le=10**5)
    random_erasing: float = Field(0.0, ge=0, le=1)
    # random crop + flip for the retraining's batches ("flip": the flip alone; None: as data.augment, which the search uses). Off
    # by default: the default 5-epoch schedule ends underfitted, and 5 epochs without it reached 1.2
    # points more (2 seeds, BENCHMARKS.md 8.3); longer schedules (the quality, GPU and CIFAR-10
    # configs) turn it on
    augment: Optional[Union[bool, Literal["flip"]]] = False
    warmup_fraction: float = Field(0.15, ge=0, lt=1)
    ema_decay: Optional[float] = Field(None, gt=0, lt=1)

    @model_validator(mode="after")
    def _erasing_needs_augmentation(self):
        if self.random_erasing and self.augment is False:
            raise ValueError(f"retrain.random_erasing={self.random_erasing} erases rectangles of augmented batches, "
                             "but retrain.augment=false turns augmentation off; set retrain.random_erasing=0 or "
                             "retrain.augment=true")
        return self

    @model_validator(mode="after")
    def _one_validation_split(self):
        if self.holdout and not self.full_train:
            raise ValueError("retrain.holdout needs retrain.full_train=true (with full_train=false the "
                             "architecture-validation split already scores every epoch); set one of them")
        return self


class ScaleConfig(Section):
    """Optional EfficientNet-style compound scaling of the chosen architecture."""

    enabled: bool = False
    phi: float = Field(1.0, ge=0, le=8)
    depth_coef: float = Field(1.2, ge=1, le=4)
    width_coef: float = Field(1.1, ge=1, le=4)
    resolution_coef: float = Field(1.15, ge=1, le=4)
    depth: Optional[Annotated[float, Field(gt=0, le=16)]] = None
    width: Optional[Annotated[float, Field(gt=0, le=16)]] = None
    resolution: Optional[Annotated[float, Field(gt=0, le=16)]] = None


class ExportConfig(Section):
    """Which exports are written (each is verified in a fresh process)."""

    torchscript: bool = True
    program: bool = True
    onnx: bool = False
    verify_batch: int = Field(3, ge=1, le=1024)


class LoggerConfig(Section):
    """Experiment tracking: W&B (online when logged in, else offline) by default."""

    kind: Literal["wandb", "csv", "none"] = "wandb"
    project: str = "hwnas_darts"
    entity: Optional[str] = None
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    tags: list[str] = Field(default_factory=list)


class TrainerConfig(Section):
    """Passed to Lightning's ``Trainer`` for the search and the retraining."""

    accelerator: str = "auto"
    devices: Union[int, str, list[int]] = 1
    num_nodes: int = Field(1, ge=1, le=4096)
    strategy: str = "auto"
    precision: Literal["auto", "32-true", "32", "16-mixed", "bf16-mixed", "64-true", "bf16-true", "16-true"] = "32-true"
    deterministic: bool = False
    channels_last: Union[bool, Literal["auto"]] = "auto"
    progress: bool = True
    sync_timeout_minutes: float = Field(120.0, gt=0, le=24 * 60,
                                        description="how long ranks wait for rank 0's single-process stages")

    def fixed_precision(self) -> str:
        """The precision of a stage that does not choose by measurement (the search, the test): ``auto``
        is fp32 there; only the retraining times the alternatives (``retrain.choose_step``)."""
        return "32-true" if self.precision == "auto" else self.precision

    def fixed_channels_last(self) -> bool:
        """The memory format of a stage that does not choose by measurement: ``auto`` is channels-last."""
        return True if self.channels_last == "auto" else bool(self.channels_last)
