"""Long end-to-end checks (deselected by default; run with `python -m pytest -m slow`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, run_fit

FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
@pytest.mark.skipif(not (FASHION / "t10k-images-idx3-ubyte.gz").is_file(), reason="needs dataset-fashion-mnist")
def test_default_fashion_mnist_run(tmp_path):
    """The README's first command: the default search reaches >= 0.90 test accuracy, and predict on the
    10,000 test images reproduces it from model.ts and model.pt2."""
    out = tmp_path / "fm"
    run_fit("--out", str(out), "trainer.progress=false", timeout=3600)
    m = json.loads((out / "metrics.json").read_text())
    assert m["test_accuracy"] >= 0.90
    for model in ("model.ts", "model.pt2"):
        proc = subprocess.run([sys.executable, "-m", "hwnas_darts.predict", "--model", str(out / model),
                               str(FASHION / "t10k-images-idx3-ubyte.gz"), "--labels", str(FASHION / "t10k-labels-idx1-ubyte.gz"),
                               "--output", str(tmp_path / f"{model}.csv")], capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
        acc = float(proc.stdout.split("accuracy: ")[1].split()[0])
        assert abs(acc - m["test_accuracy"]) <= 0.001
    assert (tmp_path / "model.ts.csv").read_text() == (tmp_path / "model.pt2.csv").read_text()


@pytest.mark.slow
def test_cifar10_config_pipeline_on_cpu_with_synthetic_images(tmp_path):
    """The GPU-sized CIFAR-10 config's space and pipeline, run on the CPU with synthetic 32x32x3
    images and a few steps per stage (the real run needs CIFAR-10 and a GPU)."""
    out = tmp_path / "c10"
    run_fit("--config", str(ROOT / "configs" / "cifar10.yaml"), "--out", str(out), "data.dataset=synthetic",
            "data.synthetic.size=32", "data.synthetic.channels=3", "data.synthetic.num_classes=10",
            "data.synthetic.num_train=256", "data.synthetic.num_test=64", "data.batch_size=16", "data.num_workers=0",
            "search.epochs=2", "search.warmup_epochs=1", "search.steps_per_epoch=3", "retrain.epochs=1",
            "retrain.steps_per_epoch=3", "hardware.device=cpu", "hardware.dtype=float32", "hardware.batch_size=8",
            "hardware.min_run_time=0.02", "hardware.rounds=1", "hardware.processes=1", "hardware.calibration_archs=5", "hardware.validation_archs=3",
            "trainer.accelerator=cpu", "trainer.precision=32-true", "logger.kind=none", "trainer.progress=false",
            timeout=3600)
    m = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= m["test_accuracy"] <= 1.0 and (out / "model.pt2").is_file()
    import torch

    from hwnas_darts.config import load_config
    from hwnas_darts.space import Arch, SearchSpace

    space = SearchSpace.from_config(load_config(ROOT / "configs" / "cifar10.yaml", ["data.dataset=synthetic", "data.synthetic.size=32",
                                                                        "data.synthetic.channels=3",
                                                                        "data.synthetic.num_classes=10"]))
    space.validate(Arch.from_string(m["arch_searched"]))  # an architecture of the CIFAR-10 space
    logits = torch.jit.load(str(out / "model.ts"))(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
