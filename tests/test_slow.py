"""Long end-to-end checks (deselected by default; run with `python -m pytest -m slow`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT
from .test_fit import run_fit

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
