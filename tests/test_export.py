"""Exports: round trips at a new batch size in a fresh process; a failing check keeps nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from hwnas_darts.export import export_program, export_torchscript, onnx_available, export_onnx
from hwnas_darts.network import build_network

META = {"arch": "x", "input_shape": [1, 16, 16], "mean": [0.5], "std": [0.25], "class_names": ["a", "b", "c", "d"]}


def test_torchscript_and_program_round_trip(tmp_path, tiny_space):
    torch.manual_seed(0)
    net = build_network(tiny_space, tiny_space.sample(1)).eval()
    ts = export_torchscript(net, tmp_path / "model.ts", (1, 16, 16), META, export_batch=2, verify_batch=5)
    assert ts.ok, ts.reason
    assert ts.verify_batch == 5 and ts.max_abs_diff < 1e-4 and ts.same_predictions
    pt2 = export_program(net, tmp_path / "model.pt2", (1, 16, 16), META, export_batch=2, verify_batch=7)
    assert pt2.ok, pt2.reason
    # the TorchScript file loads with plain torch in a process that never imports hwnas_darts
    code = ("import sys, torch; m = torch.jit.load(sys.argv[1]); x = torch.zeros(3, 1, 16, 16); "
            "assert 'hwnas_darts' not in sys.modules; print(m(x).shape)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "model.ts")], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "torch.Size([3, 4])" in out.stdout
    assert not list(tmp_path.glob(".*.tmp*"))  # no temporary files left behind


class Drifting(nn.Module):
    """Traces to a constant that differs from what the eager module returns later."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(256, 4)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.lin(x.flatten(1)) + float(self.calls)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the drift is the point: the tracer notices it too
def test_failed_check_keeps_nothing(tmp_path):
    res = export_torchscript(Drifting(), tmp_path / "model.ts", (1, 16, 16), META)
    assert not res.ok and "differ" in res.reason
    assert not (tmp_path / "model.ts").exists()
    assert not list(tmp_path.iterdir())


def test_onnx_optional(tmp_path, tiny_space):
    net = build_network(tiny_space, tiny_space.sample(1)).eval()
    res = export_onnx(net, tmp_path / "model.onnx", (1, 16, 16), META)
    if onnx_available() is None:
        assert res.ok, res.reason
    else:
        assert not res.ok and "pip install" in res.reason and not (tmp_path / "model.onnx").exists()
