"""Interrupted runs: SIGKILL in the middle of the search, then --resume; kills at random points."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch

from .conftest import ROOT, TINY, run_fit

# derive.measure=false: the chosen candidate then depends only on the search, not on timing noise
DETERMINISTIC = ["derive.measure=false", "search.epochs=3", "search.steps_per_epoch=6", "retrain.steps_per_epoch=4"]
NO_EXPORTS = ["export.torchscript=false", "export.program=false"]  # runs compared by their arch and alphas only

SLOW_FIT = textwrap.dedent(
    """
    import sys, time
    import hwnas_darts.search as s
    _orig = s.SearchModule.training_step
    def slow(self, batch, idx):
        time.sleep(float(sys.argv[1]))
        return _orig(self, batch, idx)
    s.SearchModule.training_step = slow
    from hwnas_darts.fit import main
    sys.exit(main(sys.argv[2:]))
    """
)


def start_slow_fit(delay: float, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SLOW_FIT, str(delay), *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def stages_done(out: Path) -> set[str]:
    try:
        st = json.loads((out / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return set()
    return {k for k, v in st["stages"].items() if v.get("done")}


def test_sigkill_mid_search_then_resume_gives_the_same_arch(tmp_path):
    ref = tmp_path / "ref"
    run_fit("--config", str(TINY), "--out", str(ref), *DETERMINISTIC, *NO_EXPORTS)
    out = tmp_path / "killed"
    proc = start_slow_fit(0.15, "--config", str(TINY), "--out", str(out), *DETERMINISTIC)
    ckpt = out / "checkpoints" / "search" / "last.ckpt"
    t0 = time.monotonic()
    while not ckpt.exists():  # the end-of-epoch-0 checkpoint
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() - t0 < 300, "search never checkpointed"
        time.sleep(0.05)
    time.sleep(0.3)  # well inside epoch 1 (6 steps x 0.15 s)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert "search" not in stages_done(out), "the kill came too late to interrupt the search"
    assert not (out / "arch.json").exists()
    run_fit("--resume", str(out))
    for name in ("arch.json", "metrics.json", "model.ts", "report.md", "candidates.json", "alphas.json"):
        assert (out / name).is_file(), name
    assert (out / "arch.json").read_bytes() == (ref / "arch.json").read_bytes()
    hist = json.loads((out / "alphas.json").read_text())["history"]
    assert [h["epoch"] for h in hist] == [0, 1, 2]


def test_same_seed_gives_byte_identical_arch(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run_fit("--config", str(TINY), "--out", str(a), *DETERMINISTIC, *NO_EXPORTS)
    run_fit("--config", str(TINY), "--out", str(b), *DETERMINISTIC, *NO_EXPORTS)
    assert (a / "arch.json").read_bytes() == (b / "arch.json").read_bytes()
    assert json.loads((a / "alphas.json").read_text())["logits"] == json.loads((b / "alphas.json").read_text())["logits"]


def _check_files_complete(out: Path) -> int:
    """Every output file present is complete: JSON parses, tensors load, models load."""
    n = 0
    for path in out.rglob("*"):
        if not path.is_file() or path.name.startswith("."):
            continue  # hidden temporaries of an interrupted atomic write are never outputs
        n += 1
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix in (".ckpt", ".pt"):
            torch.load(path, map_location="cpu", weights_only=False)
        elif path.suffix == ".ts":
            torch.jit.load(str(path))
        elif path.suffix == ".pt2":
            torch.export.load(str(path))
        elif path.suffix == ".png":
            assert path.read_bytes()[-8:] == b"IEND\xaeB`\x82", path
        elif path.suffix in (".md", ".yaml"):
            assert path.read_text().endswith("\n"), path
    return n


def test_kill_at_random_points_leaves_no_truncated_file(tmp_path):
    rng = random.Random(7)
    for trial in range(4):
        out = tmp_path / f"k{trial}"
        proc = start_slow_fit(0.02, "--config", str(TINY), "--out", str(out), *DETERMINISTIC)
        time.sleep(rng.uniform(3.0, 14.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if out.exists():
            _check_files_complete(out)
    # and a resumed run cleans up and completes
    last = tmp_path / "k3"
    if (last / "state.json").exists():
        run_fit("--resume", str(last))
        assert not list(last.rglob(".*.tmp"))
        assert _check_files_complete(last) > 5
