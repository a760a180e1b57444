"""Profiling a tiny network whose MACs, parameters and bytes are computed by hand."""

from __future__ import annotations

import pytest
import torch

from hwnas_darts.hardware.measure import MeasureSettings
from hwnas_darts.hardware.roofline import count_bytes
from hwnas_darts.network import build_network
from hwnas_darts.profile import main, profile_network
from hwnas_darts.space import Arch


def test_profile_numbers_on_a_hand_computed_network(tiny_space):
    # stem conv 1->8 3x3 at 16x16; s2d reshape 8->32 channels + 1x1 conv to 16 at 8x8; two skips;
    # head: 1x1 conv 16->32 at 8x8, pool, linear 32->4
    arch = Arch(("s2d_n2_relu", "skip", "skip"), space_id=tiny_space.space_id)
    net = build_network(tiny_space, arch)
    macs_per_image = 16 * 16 * 8 * 1 * 9 + 8 * 8 * 16 * 32 + 8 * 8 * 32 * 16 + 32 * 4
    params = (72 + 16) + (512 + 32) + (512 + 64) + (128 + 4)
    settings = MeasureSettings(batch_size=2, threads=1, min_run_time=0.02, rounds=2, warmup=1, reference=False)
    prof = profile_network(net, (1, 16, 16), settings)
    assert prof["macs"] == 2 * macs_per_image
    assert prof["flops"] == 2 * prof["macs"]
    assert prof["params"] == params
    assert prof["bytes"] == count_bytes(net, torch.randn(2, 1, 16, 16))
    assert prof["intensity"] == pytest.approx(2 * prof["macs"] / prof["bytes"])
    assert prof["latency_ms"] > 0 and prof["latency_ms_batch1"] > 0 and prof["latency_ms_p90"] > 0
    assert prof["peak_bytes"] >= prof["param_bytes"] == params * 4
    layers = prof["layers"]
    assert [l["layer"] for l in layers] == ["stem.0", "s2d.0", "stage1.0", "stage1.1", "head"]
    assert sum(l["macs"] for l in layers) == prof["macs"]  # per layer adds up to the network
    assert sum(l["bytes"] for l in layers) == prof["bytes"]
    assert sum(l["share"] for l in layers) == pytest.approx(1.0)
    assert layers[2]["macs"] == 0 and layers[2]["op"] == "skip"


def test_profile_cli_on_an_arch_file(tmp_path, tiny_space, tiny_cfg, capsys):
    from hwnas_darts.config import config_to_yaml

    (tmp_path / "config.yaml").write_text(config_to_yaml(tiny_cfg))
    tiny_space.sample(1).save(tmp_path / "arch.json")
    assert main([str(tmp_path / "arch.json"), "--json", str(tmp_path / "p.json")]) == 0
    assert "per layer" in capsys.readouterr().out
    assert (tmp_path / "p.json").is_file()
    assert main([str(tmp_path / "missing.json")]) == 2
