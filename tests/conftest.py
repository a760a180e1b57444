"""Shared fixtures: the tiny config, an isolated cache, W&B disabled, a session latency table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "tiny.yaml"

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")


def run_fit(*args: str, env: dict | None = None, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m hwnas_darts.fit ARGS`` in a subprocess from the repository root; raises with the
    tail of its output when it fails (``check``)."""
    e = dict(os.environ, **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "hwnas_darts.fit", *args], capture_output=True, text=True, env=e,
                          cwd=ROOT, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"fit failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("hwnas-cache")
    old = os.environ.get("HWNAS_CACHE")
    os.environ["HWNAS_CACHE"] = str(cache)
    os.environ["HWNAS_IMAGE_CACHE"] = str(tmp_path_factory.mktemp("hwnas-image-cache"))
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    yield cache
    if old is None:
        os.environ.pop("HWNAS_CACHE", None)
    else:
        os.environ["HWNAS_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, _isolated_cache):
    """One finished tiny run shared by the tests that only read its outputs."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    proc = run_fit("--config", str(TINY), "--out", str(out), "retrain.steps_per_epoch=20", "retrain.epochs=2")
    return out, proc


@pytest.fixture
def tiny_cfg():
    from hwnas_darts.config import load_config

    return load_config(TINY)


@pytest.fixture
def tiny_space(tiny_cfg):
    from hwnas_darts.space import SearchSpace

    return SearchSpace.from_config(tiny_cfg)


@pytest.fixture(scope="session")
def tiny_table():
    """A latency table of the tiny space measured quickly once per session (calibrated)."""
    from hwnas_darts.config import load_config
    from hwnas_darts.hardware.table import build_table
    from hwnas_darts.hardware.measure import MeasureSettings
    from hwnas_darts.lut import ensure_calibration
    from hwnas_darts.space import SearchSpace

    cfg = load_config(TINY)
    space = SearchSpace.from_config(cfg)
    settings = MeasureSettings.from_config(cfg.hardware)
    table = build_table(space, settings)
    ensure_calibration(table, space, settings, 6, 4, seed=0)
    return table


def has_cuda() -> bool:
    return torch.cuda.is_available()
