from __future__ import annotations

import pytest
import torch

from hwnas_darts.config import load_config
from hwnas_darts.errors import ArchError, SpaceError
from hwnas_darts.network import build_network
from hwnas_darts.space import Arch, Scale, SearchSpace
from hwnas_darts.space.space import round_width

from .conftest import TINY


def test_tiny_space_shapes(tiny_space):
    sp = tiny_space
    assert sp.input_shape == (1, 16, 16)
    names = [l.name for l in sp.layers]
    assert names == ["s2d.0", "stage1.0", "stage1.1"]
    s2d = sp.layers[0]
    assert (s2d.c_in, s2d.c_out, s2d.stride, s2d.h) == (8, 16, 2, 16)
    assert set(s2d.candidates) == {"s2dconv_n2_relu", "s2d_n2_relu", "fmb_k3_e2_relu"}
    st = sp.layers[1]
    assert (st.c_in, st.h, st.w, st.stride) == (16, 8, 8, 1)
    assert "skip" in st.candidates and "conv_k3_swish" in st.candidates
    assert sp.size == 3 * 7 * 7


def test_candidates_filtered_per_layer():
    cfg = load_config(TINY, ["space.stages.1.stride=2", "space.stages.1.ops=[s2dconv_n2, skip, conv_k3]"])
    sp = SearchSpace.from_config(cfg)
    first, second = sp.layers[1], sp.layers[2]
    assert "skip" not in first.candidates and "s2dconv_n2_relu" in first.candidates
    assert "skip" in second.candidates and "s2dconv_n2_relu" not in second.candidates


@pytest.mark.parametrize("overrides,match", [
    (["space.stages.0.ops=[skip]"], "skip needs stride 1"),
    (["space.stages.0.stride=4", "space.stages.0.ops=[s2d_n4]", "data.synthetic.size=18"], "does not divide"),
    (["space.stages.1.ops=[s2dconv_n2]"], "fits no layer|no candidate op fits"),
    (["space.stages.1.ops=[warp_k3]"], "unknown op family 'warp'"),
    (["space.stem.0.op=head_w8_relu"], "cannot be used in the stem"),
    (["space.stages.1.ops=[head_w8]"], "not a searchable op"),
])
def test_space_errors(overrides, match):
    with pytest.raises(SpaceError, match=match):
        SearchSpace.from_config(load_config(TINY, overrides))


def test_impossible_widths_are_config_errors():
    from hwnas_darts.errors import ConfigError

    with pytest.raises(ConfigError, match="space.stages.0.width: must be >= 1"):
        load_config(TINY, ["space.stages.0.width=0"])


def test_sample_reproducible_and_validated(tiny_space):
    a, b = tiny_space.sample(3), tiny_space.sample(3)
    assert a == b and a.space_id == tiny_space.space_id
    assert len(tiny_space.sample_unique(20, seed=1)) == 20
    with pytest.raises(ArchError, match="not a candidate"):
        tiny_space.validate(Arch(("skip", "skip", "skip")))
    with pytest.raises(ArchError, match="3 searchable layers"):
        tiny_space.validate(Arch(("skip",)))
    with pytest.raises(ArchError, match="derived from space"):
        tiny_space.validate(Arch(a.ops, space_id="other"))


def test_space_id_changes_with_definition(tiny_cfg):
    a = SearchSpace.from_config(tiny_cfg).space_id
    b = SearchSpace.from_config(load_config(TINY, ["space.stages.1.width=24"])).space_id
    assert a != b


def test_build_network_for_sampled_archs(tiny_space):
    x = torch.randn(3, 1, 16, 16)
    for seed in range(8):
        arch = tiny_space.sample(seed)
        net = build_network(tiny_space, arch).eval()
        assert net(x).shape == (3, 4)
        assert [p.op for p in net.plan[1:-1]] == list(arch.ops)


def test_round_width():
    assert round_width(16 * 1.1) == 16
    assert round_width(24 * 1.21) == 32
    assert round_width(5) == 8


def test_compound_scaling_plan(tiny_space):
    arch = Arch(("s2dconv_n2_relu", "mb_k3_e2_relu", "skip"), Scale(width=2.0, depth=2.0, resolution=1.5),
                tiny_space.space_id)
    plan = tiny_space.plan(arch)
    names = [p.name for p in plan]
    assert names == ["stem.0", "s2d.0", "s2d.1", "stage1.0", "stage1.1", "stage1.2", "stage1.3", "head"]
    # widths doubled (multiples of 8), resolution 16*1.5 = 24 (a multiple of the total stride 2)
    assert plan[0].c_out == 16 and plan[1].c_out == 32 and plan[0].h == 24
    # the repeated layer of the s2d stage cannot be a space-to-depth op at stride 1: first fitting candidate
    assert plan[2].op == "fmb_k3_e2_relu" and plan[2].stride == 1
    # repeated layers of stage1 repeat its last op
    assert [p.op for p in plan[3:7]] == ["mb_k3_e2_relu", "skip", "skip", "skip"]
    net = build_network(tiny_space, arch).eval()
    assert net(torch.randn(2, 1, 24, 24)).shape == (2, 4)
    assert net.input_shape == (1, 24, 24)
