"""The macro, layer-wise search space: stem -> searchable stages -> head.

The space knows every layer's input shape, so every shape problem (a space-to-depth block that
does not divide the spatial size, a skip where the shape changes) is reported when the space is
built, before any training starts. :meth:`SearchSpace.plan` turns an :class:`Arch` into the
concrete list of layers (op, channels, stride, input size) that :func:`build_network`, the
latency table and the profiler all share.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

from ..errors import ArchError, SpaceError
from .arch import Arch, Scale
from .ops import OPS, expand_ops, op_out_hw, op_problem, parse_op

if TYPE_CHECKING:
    from ..config import Config, SpaceConfig

__all__ = ["SearchSpace", "LayerSpec", "PlannedLayer", "OpKey", "round_width", "dataset_input"]

WIDTH_DIVISOR = 8


@dataclass(frozen=True, order=True)
class OpKey:
    """Identifies one latency-table row: an op at an exact input shape (batch is per table)."""

    op: str
    c_in: int
    c_out: int
    stride: int
    h: int
    w: int

    def __str__(self) -> str:
        return f"{self.op}[{self.c_in}x{self.h}x{self.w}->{self.c_out},s{self.stride}]"

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "c_in": self.c_in, "c_out": self.c_out, "stride": self.stride, "h": self.h, "w": self.w}


@dataclass(frozen=True)
class LayerSpec:
    """A searchable layer of the base space: its shape and its candidate ops."""

    index: int
    name: str
    stage: int
    c_in: int
    c_out: int
    stride: int
    h: int
    w: int
    candidates: tuple[str, ...]

    def key(self, op: str) -> OpKey:
        return OpKey(op, self.c_in, self.c_out, self.stride, self.h, self.w)


@dataclass(frozen=True)
class PlannedLayer(OpKey):
    """A concrete layer of a discrete network (stem, chosen op, or head): its op at its shape
    (the fields of :class:`OpKey`), its name and role."""

    name: str = ""
    role: str = "search"  # "stem", "search" or "head"
    dropout: float = 0.0

    @property
    def key(self) -> OpKey:
        return OpKey(self.op, self.c_in, self.c_out, self.stride, self.h, self.w)


def round_width(width: float, divisor: int = WIDTH_DIVISOR) -> int:
    """Round a scaled width to a multiple of ``divisor`` (EfficientNet's rule: never drop >10%)."""
    new = max(divisor, int(width + divisor / 2) // divisor * divisor)
    if new < 0.9 * width:
        new += divisor
    return int(new)


def dataset_input(cfg: "Config") -> tuple[int, int, int]:
    """(channels, image size, number of classes) of the configured dataset, without loading it."""
    from ..data import dataset_info  # local import: data imports torch-heavy helpers

    info = dataset_info(cfg.data)
    return info.channels, info.size, info.num_classes


class SearchSpace:
    """Stem, searchable stages and head, with every layer's shape resolved.

    Args:
        space_cfg: the ``space`` section of the config.
        in_channels: image channels.
        image_size: image height = width.
        num_classes: classifier outputs.

    Raises:
        SpaceError: unknown ops or impossible shapes, one message per problem with its YAML path.
    """

    def __init__(self, space_cfg: "SpaceConfig", in_channels: int, image_size: int, num_classes: int):
        self.cfg = space_cfg
        self.in_channels = int(in_channels)
        self.image_size = int(image_size)
        self.num_classes = int(num_classes)
        problems: list[str] = []
        self.stage_ops: list[tuple[str, ...]] = []
        for i, st in enumerate(space_cfg.stages):
            try:
                ops = expand_ops(st.ops, st.acts)
                for op in ops:
                    if not OPS[parse_op(op).family].searchable:
                        raise SpaceError(f"op {op!r} is not a searchable op")
                self.stage_ops.append(tuple(ops))
            except SpaceError as exc:
                problems.append(f"space.stages.{i}.ops: {exc.problems[0]}")
                self.stage_ops.append(())
        for i, lay in enumerate(space_cfg.stem):
            try:
                fam = OPS[parse_op(lay.op).family]
                if not fam.searchable:
                    raise SpaceError(f"op {lay.op!r} cannot be used in the stem")
            except SpaceError as exc:
                problems.append(f"space.stem.{i}.op: {exc.problems[0]}")
        if space_cfg.head.act not in ("relu", "swish", "hswish"):
            problems.append(f"space.head.act: unknown activation {space_cfg.head.act!r}; known: relu, swish, hswish")
        if problems:
            raise SpaceError(problems)
        self.layers: tuple[LayerSpec, ...] = tuple(self._resolve_layers(Scale(), problems, base=True))
        if problems:
            raise SpaceError(problems)
        self.space_id = self._compute_id()

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: "Config | SpaceConfig", in_channels: int | None = None,
                    image_size: int | None = None, num_classes: int | None = None) -> "SearchSpace":
        """Build from a whole :class:`Config` (input shape from its dataset) or a space section."""
        from ..config import Config

        if isinstance(cfg, Config):
            c, s, n = dataset_input(cfg)
            return cls(cfg.space, in_channels or c, image_size or s, num_classes or n)
        if in_channels is None or image_size is None or num_classes is None:
            raise ValueError("SearchSpace.from_config with a space section needs in_channels, image_size and num_classes")
        return cls(cfg, in_channels, image_size, num_classes)

    def _scaled_input(self, scale: Scale) -> int:
        if scale.resolution == 1.0:
            return self.image_size
        total_stride = math.prod(l.stride for l in self.cfg.stem) * math.prod(st.stride for st in self.cfg.stages)
        size = max(total_stride, int(round(self.image_size * scale.resolution / total_stride)) * total_stride)
        return size

    def _widths(self, scale: Scale) -> tuple[list[int], list[int], int]:
        if scale.width == 1.0:
            return ([l.width for l in self.cfg.stem], [st.width for st in self.cfg.stages], self.cfg.head.width)
        return (
            [round_width(l.width * scale.width) for l in self.cfg.stem],
            [round_width(st.width * scale.width) for st in self.cfg.stages],
            round_width(self.cfg.head.width * scale.width),
        )

    def _resolve_layers(self, scale: Scale, problems: list[str], base: bool) -> list[LayerSpec]:
        stem_w, stage_w, _ = self._widths(scale)
        size = self._scaled_input(scale)
        h = w = size
        c = self.in_channels
        for i, lay in enumerate(self.cfg.stem):
            op = parse_op(lay.op).name
            why = op_problem(op, c, stem_w[i], lay.stride, h, w)
            if why:
                problems.append(f"space.stem.{i}: {why}")
                return []
            h, w = op_out_hw(op, h, w, lay.stride)
            c = stem_w[i]
        layers: list[LayerSpec] = []
        for si, st in enumerate(self.cfg.stages):
            name = st.name or f"stage{si}"
            n_layers = st.layers if base else max(1, math.ceil(st.layers * scale.depth))
            usable: set[str] = set()
            for li in range(n_layers):
                stride = st.stride if li == 0 else 1
                if h < 1 or w < 1 or (stride > 1 and (h < stride or w < stride)):
                    problems.append(
                        f"space.stages.{si}: the feature map is {h}x{w} at layer {li}, too small for stride {stride}; "
                        "reduce the strides or use larger images"
                    )
                    return layers
                cands = []
                for op in self.stage_ops[si]:
                    if op_problem(op, c, stage_w[si], stride, h, w) is None:
                        cands.append(op)
                        usable.add(op)
                if not cands:
                    reasons = "; ".join(f"{op}: {op_problem(op, c, stage_w[si], stride, h, w)}" for op in self.stage_ops[si])
                    problems.append(f"space.stages.{si}: no candidate op fits layer {li} ({c}x{h}x{w} -> {stage_w[si]}, stride {stride}): {reasons}")
                    return layers
                layers.append(LayerSpec(len(layers), f"{name}.{li}", si, c, stage_w[si], stride, h, w, tuple(cands)))
                outs = {op_out_hw(op, h, w, stride) for op in cands}
                h, w = outs.pop()  # all valid candidates agree (s2d ops need exact division)
                c = stage_w[si]
            if base:
                for op in self.stage_ops[si]:
                    if op not in usable:
                        first = layers[-n_layers]
                        why = op_problem(op, first.c_in, first.c_out, first.stride, first.h, first.w)
                        problems.append(f"space.stages.{si}.ops: {op!r} fits no layer of this stage ({why})")
        return layers

    def _compute_id(self) -> str:
        data = self.to_dict()
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:12]

    def spec(self) -> dict[str, Any]:
        """Plain data :meth:`from_spec` rebuilds this space from (checkpoint hyperparameters)."""
        return {"space_cfg": self.cfg.model_dump(), "in_channels": self.in_channels, "image_size": self.image_size,
                "num_classes": self.num_classes}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "SearchSpace":
        from ..config import SpaceConfig

        return cls(SpaceConfig.model_validate(spec["space_cfg"]), spec["in_channels"], spec["image_size"],
                   spec["num_classes"])

    # -- description --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The resolved definition (inputs, stem, per-layer candidates, head)."""
        return {
            "input": [self.in_channels, self.image_size, self.image_size],
            "num_classes": self.num_classes,
            "stem": [{"op": parse_op(l.op).name, "width": l.width, "stride": l.stride} for l in self.cfg.stem],
            "layers": [
                {"name": l.name, "c_in": l.c_in, "c_out": l.c_out, "stride": l.stride, "h": l.h, "w": l.w,
                 "candidates": list(l.candidates)}
                for l in self.layers
            ],
            "head": {"width": self.cfg.head.width, "act": self.cfg.head.act},
        }

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.image_size, self.image_size)

    @property
    def num_choices(self) -> list[int]:
        return [len(l.candidates) for l in self.layers]

    @property
    def size(self) -> int:
        """Number of distinct architectures."""
        return math.prod(self.num_choices)

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        return (f"SearchSpace(id={self.space_id}, input={self.input_shape}, layers={len(self.layers)}, "
                f"choices={self.num_choices}, size={self.size:.3g})")

    # -- architectures ------------------------------------------------------------------------
    def sample(self, seed: int | None = None, rng: random.Random | None = None) -> Arch:
        """A uniformly random architecture (reproducible for a given ``seed``)."""
        rng = rng or random.Random(seed)
        return Arch(tuple(rng.choice(l.candidates) for l in self.layers), Scale(), self.space_id)

    def sample_unique(self, n: int, seed: int, exclude: Iterable[Arch] = ()) -> list[Arch]:
        """Up to ``n`` distinct random architectures, none in ``exclude``."""
        rng = random.Random(seed)
        seen = {a.ops for a in exclude}
        out: list[Arch] = []
        tries = 0
        while len(out) < n and tries < 50 * max(n, 1):
            tries += 1
            a = self.sample(rng=rng)
            if a.ops not in seen:
                seen.add(a.ops)
                out.append(a)
        return out

    def validate(self, arch: Arch) -> Arch:
        """Check that ``arch`` belongs to this space; return it with this space's id."""
        if arch.space_id is not None and arch.space_id != self.space_id:
            raise ArchError(
                f"architecture was derived from space {arch.space_id}, this space is {self.space_id}; "
                "use the config of the run that produced it"
            )
        if len(arch.ops) != len(self.layers):
            raise ArchError(f"architecture has {len(arch.ops)} ops, the space has {len(self.layers)} searchable layers")
        for layer, op in zip(self.layers, arch.ops):
            if op not in layer.candidates:
                raise ArchError(f"layer {layer.name}: op {op!r} is not a candidate here; candidates: {', '.join(layer.candidates)}")
        return arch if arch.space_id == self.space_id else Arch(arch.ops, arch.scale, self.space_id)

    def index_of(self, arch: Arch) -> list[int]:
        """Candidate index per layer."""
        self.validate(arch)
        return [l.candidates.index(op) for l, op in zip(self.layers, arch.ops)]

    def from_indices(self, indices: Iterable[int], scale: Scale | None = None) -> Arch:
        ops = tuple(l.candidates[int(i)] for l, i in zip(self.layers, indices))
        return Arch(ops, scale or Scale(), self.space_id)

    def plan(self, arch: Arch) -> list[PlannedLayer]:
        """The concrete layers of the network of ``arch`` (scaling applied), stem to head.

        Depth scaling appends layers at the end of each stage that repeat the op of the stage's
        last searched layer; where that op cannot run at stride 1 (a space-to-depth op), the
        first of the stage's candidates that can is used.
        """
        arch = self.validate(arch)
        scale = arch.scale
        stem_w, stage_w, head_w = self._widths(scale)
        size = self._scaled_input(scale)
        h = w = size
        c = self.in_channels
        out: list[PlannedLayer] = []
        for i, lay in enumerate(self.cfg.stem):
            op = parse_op(lay.op).name
            out.append(PlannedLayer(op, c, stem_w[i], lay.stride, h, w, name=f"stem.{i}", role="stem"))
            h, w = op_out_hw(op, h, w, lay.stride)
            c = stem_w[i]
        by_stage: dict[int, list[str]] = {}
        for layer, op in zip(self.layers, arch.ops):
            by_stage.setdefault(layer.stage, []).append(op)
        for si, st in enumerate(self.cfg.stages):
            name = st.name or f"stage{si}"
            ops = by_stage[si]
            n_layers = len(ops) if scale.depth == 1.0 else max(1, math.ceil(st.layers * scale.depth))
            for li in range(n_layers):
                stride = st.stride if li == 0 else 1
                op = ops[li] if li < len(ops) else ops[-1]
                if op_problem(op, c, stage_w[si], stride, h, w) is not None:
                    fits = [o for o in self.stage_ops[si] if op_problem(o, c, stage_w[si], stride, h, w) is None]
                    if not fits:
                        raise ArchError(f"scaled layer {name}.{li}: no op of the stage fits {c}x{h}x{w} -> {stage_w[si]}")
                    op = fits[0]
                out.append(PlannedLayer(op, c, stage_w[si], stride, h, w, name=f"{name}.{li}", role="search"))
                h, w = op_out_hw(op, h, w, stride)
                c = stage_w[si]
        head_op = f"head_w{head_w}_{self.cfg.head.act}"
        out.append(PlannedLayer(head_op, c, self.num_classes, 1, h, w, name="head", role="head",
                                dropout=self.cfg.head.dropout))
        return out

    def fixed_keys(self) -> list[OpKey]:
        """Table keys of the fixed parts (stem and head) at the base scale."""
        base = self.plan(Arch(tuple(l.candidates[0] for l in self.layers), Scale(), self.space_id))
        return [p.key for p in base if p.role != "search"]

    def all_keys(self) -> list[OpKey]:
        """Every table key the base space can need: each layer x candidate, plus stem and head."""
        keys = {l.key(op) for l in self.layers for op in l.candidates}
        keys.update(self.fixed_keys())
        return sorted(keys)
