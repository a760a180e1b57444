"""Every op family: output shape and parameter count on hand-computed cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hwnas_darts.errors import SpaceError
from hwnas_darts.space.ops import OPS, Registry, build_op, expand_ops, op_out_hw, op_problem, parse_op


def n_params(m):
    return sum(p.numel() for p in m.parameters())


# (op, c_in, c_out, stride, expected output shape for a 2x{c_in}x8x8 input, expected params)
CASES = [
    # conv k3: 4*8*9 weights + 2*8 BN
    ("conv_k3_relu", 4, 8, 1, (2, 8, 8, 8), 4 * 8 * 9 + 16),
    ("conv_k3_swish", 4, 8, 2, (2, 8, 4, 4), 4 * 8 * 9 + 16),
    # MBConv e2: expand 4->8 (32+16), depthwise 8*9 (72+16), project 8->4 (32+8)
    ("mb_k3_e2_relu", 4, 4, 1, (2, 4, 8, 8), 48 + 88 + 40),
    # MBConv k5 e1: no expansion; depthwise 4*25 (100+8), project 4->8 (32+16)
    ("mb_k5_e1_relu", 4, 8, 2, (2, 8, 4, 4), 108 + 48),
    # fused MBConv e2: 3x3 conv 4->8 (288+16), project 8->8 (64+16)
    ("fmb_k3_e2_relu", 4, 8, 2, (2, 8, 4, 4), 304 + 80),
    # fused e1: a single 3x3 conv 4->8
    ("fmb_k3_e1_hswish", 4, 8, 1, (2, 8, 8, 8), 288 + 16),
    # space-to-depth conv n2: 2x2 stride-2 conv 4->16 (4*16*4 + 32)
    ("s2dconv_n2_relu", 4, 16, 2, (2, 16, 4, 4), 256 + 32),
    ("s2dconv_n4_relu", 4, 16, 4, (2, 16, 2, 2), 4 * 16 * 16 + 32),
    # space-to-depth reshape: 4*2*2 = 16 channels, no parameters
    ("s2d_n2_relu", 4, 16, 2, (2, 16, 4, 4), 0),
    # reshape to 16 channels then 1x1 conv to 8: 128 + 16
    ("s2d_n2_swish", 4, 8, 2, (2, 8, 4, 4), 128 + 16),
    ("skip", 4, 4, 1, (2, 4, 8, 8), 0),
    # head: 1x1 conv 4->16 (64 + 32 BN), linear 16->10 (170)
    ("head_w16_relu", 4, 10, 1, (2, 10), 64 + 32 + 170),
]


@pytest.mark.parametrize("name,c_in,c_out,stride,shape,params", CASES)
def test_shape_and_params(name, c_in, c_out, stride, shape, params):
    m = build_op(name, c_in, c_out, stride).eval()
    y = m(torch.randn(2, c_in, 8, 8))
    assert tuple(y.shape) == shape
    assert n_params(m) == params
    if len(shape) == 4:
        assert op_out_hw(name, 8, 8, stride) == shape[2:]


def test_pure_reshape_is_pixel_unshuffle():
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(build_op("s2d_n2_relu", 4, 16, 2)(x), F.pixel_unshuffle(x, 2))


def test_residual_only_when_shapes_match():
    assert build_op("mb_k3_e2_relu", 4, 4, 1).residual
    assert not build_op("mb_k3_e2_relu", 4, 8, 1).residual
    assert not build_op("fmb_k3_e2_relu", 4, 4, 2).residual
    assert build_op("conv_k3_relu", 8, 8, 1).residual


def test_shape_rules():
    assert op_problem("skip", 4, 8, 1, 8, 8) is not None
    assert op_problem("skip", 4, 4, 2, 8, 8) is not None
    assert op_problem("skip", 4, 4, 1, 8, 8) is None
    assert "stride" in op_problem("s2dconv_n2_relu", 4, 8, 1, 8, 8)
    assert "does not divide" in op_problem("s2d_n2_relu", 4, 8, 2, 7, 7)
    assert op_problem("s2d_n4_relu", 4, 8, 4, 8, 8) is None


def test_parse_and_canonical_names():
    spec = parse_op("mb_k3_e4_swish")
    assert (spec.family, spec.kwargs, spec.act, spec.name) == ("mb", {"k": 3, "e": 4}, "swish", "mb_k3_e4_swish")
    assert parse_op("mb_e4_k3_relu").name == "mb_k3_e4_relu"  # parameters in family order
    assert expand_ops(["conv_k3", "skip", "mb_k3_e2_swish"], ["relu", "swish"]) == [
        "conv_k3_relu", "conv_k3_swish", "skip", "mb_k3_e2_swish"]


@pytest.mark.parametrize("bad,match", [
    ("foo_k3_relu", r"unknown op family 'foo'.*registered: conv \(kxk conv, BN, act\); fmb \(fused MBConv"),
    ("mb_k3_relu", "missing parameter"),
    ("conv_k4_relu", "odd"),
    ("conv_k13_relu", "odd and in"),
    ("conv_k3", "activation suffix"),
    ("skip_relu", "takes no activation"),
    ("conv_x3_relu", "no parameter 'x'"),
    ("conv_k3_tanh", "neither a parameter"),
    ("s2d_n1_relu", "in \\[2, 8\\]"),
    ("", "non-empty"),
])
def test_parse_errors(bad, match):
    with pytest.raises(SpaceError, match=match):
        parse_op(bad)


def test_registry_duplicates_and_misses():
    reg = Registry("thing")
    reg.register("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", 2)
    with pytest.raises(SpaceError, match="registered: a"):
        reg["b"]
    assert set(OPS) == {"conv", "mb", "fmb", "s2dconv", "s2d", "skip", "head"}
