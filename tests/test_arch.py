from __future__ import annotations

import json

import pytest

from hwnas_darts.errors import ArchError
from hwnas_darts.space.arch import ARCH_SCHEMA_VERSION, Arch, Scale


def test_string_round_trip_and_canonical_form():
    a = Arch(("s2dconv_n2_relu", "mb_e3_k3_swish", "skip"))
    assert a.ops[1] == "mb_k3_e3_swish"  # canonicalised
    s = a.to_string()
    assert s == "s2dconv_n2_relu-mb_k3_e3_swish-skip"
    assert Arch.from_string(s) == a


def test_scale_in_string_and_json(tmp_path):
    a = Arch(("conv_k3_relu", "skip"), Scale(1.1, 1.2, 1.15), "abc")
    s = a.to_string()
    assert s.endswith("@w1.1,d1.2,r1.15")
    assert Arch.from_string(s, "abc") == a
    assert Arch.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    a.save(tmp_path / "arch.json")
    assert Arch.load(tmp_path / "arch.json") == a
    assert json.loads((tmp_path / "arch.json").read_text())["schema_version"] == ARCH_SCHEMA_VERSION


def test_round_trip_many_sampled(tiny_space):
    for seed in range(50):
        a = tiny_space.sample(seed)
        assert Arch.from_string(a.to_string(), tiny_space.space_id) == a
        assert Arch.from_dict(a.to_dict()) == a


def test_frozen():
    a = Arch(("skip",))
    with pytest.raises(Exception):
        a.ops = ("conv_k3_relu",)


@pytest.mark.parametrize("text", ["", "conv_k3_relu@w1,d1", "nope_k3", "conv_k3_relu@wx,d1,r1", "conv_k3_relu@w-1,d1,r1"])
def test_bad_strings(text):
    with pytest.raises(ArchError):
        Arch.from_string(text)


def test_bad_dicts(tmp_path):
    with pytest.raises(ArchError, match="schema version"):
        Arch.from_dict({"schema_version": 99, "ops": ["skip"]})
    with pytest.raises(ArchError, match="not an architecture"):
        Arch.from_dict({"foo": 1})
    p = tmp_path / "arch.json"
    p.write_text('{"schema_version": 1, "ops": ["ski')
    with pytest.raises(ArchError, match="not valid JSON"):
        Arch.load(p)
    with pytest.raises(ArchError, match="not found"):
        Arch.load(tmp_path / "missing.json")
    with pytest.raises(ArchError):
        Arch("conv_k3_relu")  # a string, not a sequence
