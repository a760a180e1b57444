"""Lightning DDP on two CPU processes (gloo): one architecture across ranks, one set of files."""

from __future__ import annotations

import json

import pytest
import torch

from .conftest import TINY, run_fit


@pytest.mark.distributed
def test_ddp_two_cpu_processes_share_one_architecture(tmp_path):
    out = tmp_path / "ddp"
    run_fit("--config", str(TINY), "--out", str(out), "trainer.accelerator=cpu", "trainer.devices=2",
            "trainer.strategy=ddp", "search.steps_per_epoch=6", "retrain.steps_per_epoch=4",
            env={"HWNAS_DUMP_RANK_ALPHAS": "1"}, timeout=400)
    a0 = torch.load(out / "debug" / "alphas_rank0.pt")
    a1 = torch.load(out / "debug" / "alphas_rank1.pt")
    assert len(a0) == len(a1) == 3
    assert all(torch.equal(x, y) for x, y in zip(a0, a1)), "alphas differ between ranks"
    assert any(x.abs().sum() > 0 for x in a0), "the architecture steps did not move the alphas"
    assert len(list(tmp_path.rglob("arch.json"))) == 1
    m = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= m["test_accuracy"] <= 1.0
    arch = json.loads((out / "arch.json").read_text())
    assert m["arch"] in json.dumps(arch)  # one architecture, the one the metrics describe
    from hwnas_darts.config import load_config
    from hwnas_darts.space import SearchSpace

    space = SearchSpace.from_config(load_config(TINY))
    logits = torch.jit.load(str(out / "model.ts"))(torch.randn(2, *space.input_shape))
    assert logits.shape == (2, space.num_classes) and torch.isfinite(logits).all()
