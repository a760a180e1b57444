"""Candidate operations: one registry, one factory signature, shared by supernet and final net.

An op is named by a compact string::

    name   := family ("_" param)* ("_" act)?
    param  := letter integer            e.g. k3 (kernel), e4 (expansion), n2 (block), w128 (width)
    act    := relu | swish | hswish

Families (``OPS``):

=============  ==========  =====================================================================
family         params      module
=============  ==========  =====================================================================
``conv``       k           kxk conv, BN, act (residual when shapes match)
``mb``         k, e        MBConv: 1x1 expand x e, depthwise kxk (stride), 1x1 project, BN
``fmb``        k, e        fused MBConv: regular kxk conv expanding x e (stride), 1x1 project
``s2dconv``    n           space-to-depth convolution: n x n conv with stride n, BN, act
``s2d``        n           space-to-depth reshape: pixel-unshuffle by n (+ 1x1 conv, BN, act
                           when the channels do not already equal the layer's width)
``skip``       (none)      identity (depth search); only where input and output shapes match
``head``       w           classifier: 1x1 conv to w, act, global pool, dropout, linear
=============  ==========  =====================================================================

Every factory has the signature ``factory(c_in, c_out, stride, act=..., **params)``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..errors import SpaceError

__all__ = [
    "ACTIVATIONS",
    "OPS",
    "OpFamily",
    "OpSpec",
    "Registry",
    "parse_op",
    "build_op",
    "op_out_hw",
    "op_problem",
    "expand_ops",
]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "swish": nn.SiLU,
    "hswish": nn.Hardswish,
}


class Registry(dict):
    """A name -> object mapping where duplicates raise and misses list what exists."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def register(self, name: str, obj) -> None:
        if name in self:
            raise ValueError(f"{self.what} {name!r} is already registered")
        self[name] = obj

    def __missing__(self, name):
        raise SpaceError(f"unknown {self.what} {name!r}; registered: {', '.join(sorted(self))}")


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------
def _act(name: str | None) -> nn.Module:
    return ACTIVATIONS[name]() if name else nn.Identity()


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> activation (or none)."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1,
                 act: str | None = "relu", padding: int | None = None):
        pad = k // 2 if padding is None else padding
        super().__init__(
            nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
            _act(act),
        )


class _Block(nn.Module):
    """A body with an optional identity residual (stride 1 and equal channels)."""

    def __init__(self, body: nn.Module, residual: bool):
        super().__init__()
        self.body = body
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out + x if self.residual else out


def _conv(c_in, c_out, stride, act="relu", k=3):
    return _Block(ConvBNAct(c_in, c_out, k, stride, act=act), stride == 1 and c_in == c_out)


def _mbconv(c_in, c_out, stride, act="relu", k=3, e=4):
    mid = c_in * e
    layers: list[nn.Module] = []
    if e != 1:
        layers.append(ConvBNAct(c_in, mid, 1, act=act))
    layers += [ConvBNAct(mid, mid, k, stride, groups=mid, act=act), ConvBNAct(mid, c_out, 1, act=None)]
    return _Block(nn.Sequential(*layers), stride == 1 and c_in == c_out)


def _fused_mbconv(c_in, c_out, stride, act="relu", k=3, e=4):
    if e == 1:  # fused with expansion 1: a single regular conv
        body: nn.Module = ConvBNAct(c_in, c_out, k, stride, act=act)
    else:
        mid = c_in * e
        body = nn.Sequential(ConvBNAct(c_in, mid, k, stride, act=act), ConvBNAct(mid, c_out, 1, act=None))
    return _Block(body, stride == 1 and c_in == c_out)


def _s2d_conv(c_in, c_out, stride, act="relu", n=2):
    return ConvBNAct(c_in, c_out, n, stride=n, act=act, padding=0)


def _s2d_reshape(c_in, c_out, stride, act="relu", n=2):
    mods: list[nn.Module] = [nn.PixelUnshuffle(n)]
    if c_in * n * n != c_out:
        mods.append(ConvBNAct(c_in * n * n, c_out, 1, act=act))
    return nn.Sequential(*mods)


def _skip(c_in, c_out, stride, act=None):
    return nn.Identity()


class Head(nn.Module):
    """1x1 conv to ``width`` + BN + act, global average pool, dropout, linear classifier."""

    def __init__(self, c_in: int, num_classes: int, width: int, act: str = "relu", dropout: float = 0.0):
        super().__init__()
        self.conv = ConvBNAct(c_in, width, 1, act=act)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.conv(x)).flatten(1)
        return self.fc(self.dropout(x))


def _head(c_in, c_out, stride, act="relu", w=128, dropout=0.0):
    return Head(c_in, c_out, w, act=act, dropout=dropout)


# --------------------------------------------------------------------------------------------
# Families and the registry
# --------------------------------------------------------------------------------------------
def _same_hw(h, w, stride, p):
    return (math.ceil(h / stride), math.ceil(w / stride))


def _s2d_hw(h, w, stride, p):
    return (h // p["n"], w // p["n"])


def _check_odd_kernel(p, c_in, c_out, stride, h, w):
    return None


def _check_s2d(p, c_in, c_out, stride, h, w):
    n = p["n"]
    if stride != n:
        return f"a space-to-depth op with n={n} needs a layer of stride {n}, this layer has stride {stride}"
    if h % n or w % n:
        return f"space-to-depth n={n} does not divide the spatial size {h}x{w}"
    return None


def _check_skip(p, c_in, c_out, stride, h, w):
    if stride != 1 or c_in != c_out:
        return f"skip needs stride 1 and equal widths, this layer has stride {stride} and {c_in}->{c_out} channels"
    return None


@dataclass(frozen=True)
class OpFamily:
    """One family of ops: its parameters, factory and shape rules."""

    name: str
    params: tuple[str, ...]
    factory: Callable[..., nn.Module]
    has_act: bool = True
    searchable: bool = True
    out_hw: Callable = _same_hw
    check: Callable = _check_odd_kernel
    doc: str = ""  # shown when an op name is not understood


OPS: Registry = Registry("op family")
for _fam in (
    OpFamily("conv", ("k",), _conv, doc="kxk conv, BN, act"),
    OpFamily("mb", ("k", "e"), _mbconv, doc="MBConv (1x1 expand, depthwise kxk, 1x1 project)"),
    OpFamily("fmb", ("k", "e"), _fused_mbconv, doc="fused MBConv (kxk expand conv, 1x1 project)"),
    OpFamily("s2dconv", ("n",), _s2d_conv, out_hw=_s2d_hw, check=_check_s2d, doc="space-to-depth conv (n x n, stride n)"),
    OpFamily("s2d", ("n",), _s2d_reshape, out_hw=_s2d_hw, check=_check_s2d, doc="space-to-depth reshape (pixel-unshuffle)"),
    OpFamily("skip", (), _skip, has_act=False, check=_check_skip, doc="identity"),
    OpFamily("head", ("w",), _head, searchable=False, out_hw=lambda h, w, s, p: (1, 1), doc="classifier head"),
):
    OPS.register(_fam.name, _fam)

_PARAM_RE = re.compile(r"^([a-z])(\d+)$")


@dataclass(frozen=True)
class OpSpec:
    """A parsed op name."""

    family: str
    params: tuple[tuple[str, int], ...]
    act: str | None

    @property
    def name(self) -> str:
        parts = [self.family] + [f"{k}{v}" for k, v in self.params]
        if self.act:
            parts.append(self.act)
        return "_".join(parts)

    @property
    def kwargs(self) -> dict[str, int]:
        return dict(self.params)

    def __str__(self) -> str:
        return self.name


def parse_op(name: str, default_act: str | None = None) -> OpSpec:
    """Parse an op name such as ``mb_k3_e4_swish``.

    Args:
        name: the op string.
        default_act: activation used when the name has none (``None``: the name must have one
            if the family takes an activation).

    Raises:
        SpaceError: unknown family, parameter or activation, or a value out of range.
    """
    if not isinstance(name, str) or not name:
        raise SpaceError(f"op name must be a non-empty string, got {name!r}")
    tokens = name.strip().split("_")
    fam_name = tokens[0]
    if fam_name not in OPS:
        known = "; ".join(f"{f} ({OPS[f].doc or ', '.join(OPS[f].params)})" for f in sorted(OPS))
        raise SpaceError(f"unknown op family {fam_name!r} in {name!r}; registered: {known}")
    fam: OpFamily = OPS[fam_name]
    rest = tokens[1:]
    act = None
    if rest and rest[-1] in ACTIVATIONS:
        act = rest.pop()
    elif rest and not _PARAM_RE.match(rest[-1]):
        raise SpaceError(
            f"op {name!r}: {rest[-1]!r} is neither a parameter (letter+number) nor an activation "
            f"({', '.join(ACTIVATIONS)})"
        )
    values: dict[str, int] = {}
    for tok in rest:
        m = _PARAM_RE.match(tok)
        if not m:
            raise SpaceError(f"op {name!r}: cannot read {tok!r}; parameters look like k3, e4, n2")
        key, val = m.group(1), int(m.group(2))
        if key not in fam.params:
            allowed = ", ".join(fam.params) or "none"
            raise SpaceError(f"op {name!r}: family {fam_name!r} has no parameter {key!r} (allowed: {allowed})")
        if key in values:
            raise SpaceError(f"op {name!r}: parameter {key!r} given twice")
        values[key] = val
    missing = [k for k in fam.params if k not in values]
    if missing:
        raise SpaceError(f"op {name!r}: missing parameter(s) {', '.join(missing)} (e.g. {fam_name}_" + "_".join(f"{k}3" for k in fam.params) + ")")
    if "k" in values and (not 1 <= values["k"] <= 11 or values["k"] % 2 == 0):
        raise SpaceError(f"op {name!r}: kernel size must be odd and in [1, 11], got {values['k']}")
    if "e" in values and not 1 <= values["e"] <= 16:
        raise SpaceError(f"op {name!r}: expansion must be in [1, 16], got {values['e']}")
    if "n" in values and not 2 <= values["n"] <= 8:
        raise SpaceError(f"op {name!r}: space-to-depth block size must be in [2, 8], got {values['n']}")
    if "w" in values and not 1 <= values["w"] <= 16384:
        raise SpaceError(f"op {name!r}: width must be in [1, 16384], got {values['w']}")
    if fam.has_act:
        act = act or default_act
        if act is None:
            raise SpaceError(f"op {name!r} needs an activation suffix ({', '.join(ACTIVATIONS)})")
    elif act is not None:
        raise SpaceError(f"op {name!r}: family {fam_name!r} takes no activation")
    params = tuple((k, values[k]) for k in fam.params)
    return OpSpec(fam_name, params, act)


def expand_ops(ops: list[str], acts: list[str]) -> list[str]:
    """Expand op names without an activation once per activation; keep order, drop duplicates."""
    for a in acts:
        if a not in ACTIVATIONS:
            raise SpaceError(f"unknown activation {a!r}; known: {', '.join(ACTIVATIONS)}")
    out: list[str] = []
    for name in ops:
        tokens = name.split("_")
        fam = OPS[tokens[0]] if tokens[0] in OPS else None
        if fam is not None and fam.has_act and tokens[-1] not in ACTIVATIONS:
            names = [parse_op(name, default_act=a).name for a in acts]
        else:
            names = [parse_op(name).name]
        for n in names:
            if n not in out:
                out.append(n)
    return out


def op_problem(name: str, c_in: int, c_out: int, stride: int, h: int, w: int) -> str | None:
    """Why op ``name`` cannot run at this layer shape, or ``None`` when it can."""
    spec = parse_op(name)
    fam: OpFamily = OPS[spec.family]
    return fam.check(spec.kwargs, c_in, c_out, stride, h, w)


def op_out_hw(name: str, h: int, w: int, stride: int) -> tuple[int, int]:
    """Output spatial size of op ``name`` on an ``h x w`` input at ``stride``."""
    spec = parse_op(name)
    return OPS[spec.family].out_hw(h, w, stride, spec.kwargs)


def build_op(name: str, c_in: int, c_out: int, stride: int, **extra) -> nn.Module:
    """Build the module for op ``name`` (the one factory signature of the registry)."""
    spec = parse_op(name)
    fam: OpFamily = OPS[spec.family]
    kwargs = dict(spec.kwargs)
    if spec.family == "head":
        kwargs = {"w": kwargs["w"], "dropout": float(extra.get("dropout", 0.0))}
    if fam.has_act:
        kwargs["act"] = spec.act
    return fam.factory(c_in, c_out, stride, **kwargs)
