"""Lightning DDP on two CPU processes (gloo): one architecture across ranks, one set of files,
ranks that coordinate through the process group and never through each other's files."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from .conftest import TINY, run_fit


def _state(run_dir) -> dict:
    return json.loads((run_dir / "state.json").read_text())


@pytest.mark.distributed
def test_ddp_two_cpu_processes_share_one_architecture(tmp_path):
    out = tmp_path / "ddp"
    run_fit("--config", str(TINY), "--out", str(out), "trainer.accelerator=cpu", "trainer.devices=2",
            "trainer.strategy=ddp", "search.steps_per_epoch=6", "retrain.steps_per_epoch=4", "retrain.epochs=2",
            "retrain.time_budget_minutes=5", timeout=400)
    search = _state(out)["stages"]["search"]
    # the runner gathers every rank's digest of the architecture parameters after the search
    assert search["ranks"] == 2 and len(search["alpha_digests"]) == 2
    assert len(set(search["alpha_digests"])) == 1, "alphas differ between ranks"
    # the retraining's budget: planned and re-planned after the first epoch on rank 0, followed by both ranks
    state = _state(out)
    assert state["retrain_plan"]["replan"]["epochs"] == 2 and state["stages"]["retrain"]["epochs"] == 2
    alphas = json.loads((out / "alphas.json").read_text())
    assert any(abs(v) > 0 for logits in alphas["logits"].values() for v in logits), "the alphas did not move"
    assert len(list(tmp_path.rglob("arch.json"))) == 1
    m = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= m["test_accuracy"] <= 1.0
    assert m["arch"] in json.dumps(json.loads((out / "arch.json").read_text()))
    from hwnas_darts.config import load_config
    from hwnas_darts.space import SearchSpace

    space = SearchSpace.from_config(load_config(TINY))
    logits = torch.jit.load(str(out / "model.ts"))(torch.randn(2, *space.input_shape))
    assert logits.shape == (2, space.num_classes) and torch.isfinite(logits).all()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_node(node: int, cwd, port: int, *extra: str) -> subprocess.Popen:
    """One process per 'node' (as torchrun or SLURM would start them), each in its own directory."""
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", NODE_RANK=str(node),
               LOCAL_RANK="0", PYTHONPATH=str(TINY.parent.parent))
    cmd = [sys.executable, "-m", "hwnas_darts.fit", "--config", str(TINY), "--out", "run", "trainer.accelerator=cpu",
           "trainer.devices=1", "trainer.num_nodes=2", "trainer.strategy=ddp", "search.steps_per_epoch=3",
           "retrain.steps_per_epoch=3", *extra]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.distributed
def test_ranks_need_no_shared_file_system(tmp_path):
    """Rank 1 runs in another directory (another node's disk): it reads and writes no run files,
    and gets the table and the architecture from rank 0 through the process group."""
    a, b = tmp_path / "node0", tmp_path / "node1"
    a.mkdir()
    b.mkdir()
    port = _free_port()
    procs = [_launch_node(0, a, port), _launch_node(1, b, port)]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n\n".join(o[-3000:] for o in outs)
    assert (a / "run" / "metrics.json").is_file() and (a / "run" / "model.ts").is_file()
    assert _state(a / "run")["stages"]["search"]["ranks"] == 2
    assert not any(p.is_file() for p in b.rglob("*")), f"rank 1 wrote files: {list(b.rglob('*'))}"


@pytest.mark.distributed
def test_a_failing_rank_0_ends_the_others_with_a_clear_error(tmp_path):
    """Rank 0 fails in a single-process stage (an architecture that does not parse); rank 1,
    waiting for that stage's result, stops at once with rank 0's error instead of waiting."""
    a, b = tmp_path / "node0", tmp_path / "node1"
    a.mkdir()
    b.mkdir()
    port = _free_port()
    bad = ["--arch", "no_such_op-skip-skip"]
    procs = [_launch_node(0, a, port, *bad), _launch_node(1, b, port, *bad)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert procs[0].returncode != 0 and procs[1].returncode != 0
    assert "rank 0 failed in stage 'derive'" in outs[1], outs[1][-2000:]
