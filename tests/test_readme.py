"""Every ``python -m hwnas_darts ...`` command shown in the README runs.

The commands are extracted from the README's fenced code blocks (continuation lines joined,
comments dropped) and run, each in a fresh process, against one tiny run directory made once
for this module (tiny config, synthetic images). What the README points at that a test cannot
have - the default config's long run, Fashion-MNIST's 28x28 files for a 16x16 model, a photo
folder - is substituted by its tiny counterpart (:data:`SUBSTITUTIONS`); commands that cannot
run here at all are listed in :data:`NOT_RUN` with the reason. A command fails the test on a
non-zero exit or a traceback in its output. A README command that is neither runnable nor
listed fails :func:`test_every_readme_command_is_covered`, so a new README command cannot slip by.
"""

from __future__ import annotations

import gzip
import os
import re
import shlex
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import ROOT, TINY

README = ROOT / "README.md"

#: commands that cannot run in the test suite, with the reason (matched by prefix)
NOT_RUN = {
    "python -m hwnas_darts.fit --config configs/cifar10.yaml trainer.devices=4":
        "needs 4 GPUs (DDP); the distributed path is tested on CPU with gloo in test_distributed.py",
}

TINY_ARCH = "s2dconv_n2_relu-fmb_k3_e2_relu-skip"


def readme_commands(text: str) -> list[str]:
    """``python -m hwnas_darts...`` commands of the README's fenced code blocks, in order."""
    out = []
    for block in re.findall(r"```(?:bash|sh|shell)?\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            m = re.search(r"python -m hwnas_darts\.\S+.*", line)
            if not m:
                continue
            cmd = m.group(0)
            cmd = re.sub(r"\s+#.*$", "", cmd).strip()  # trailing comment
            if line.lstrip().startswith(("torchrun", "srun")):
                continue  # launcher lines: the same command as the plain one before them
            out.append(cmd)
    return out


def _write_idx(path: Path, arr: np.ndarray) -> None:
    code = 0x08
    header = struct.pack(">BBBB", 0, 0, code, arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def world(tmp_path_factory, _isolated_cache):
    """A tiny finished run (ONNX too when the extra is installed), tiny inputs and a work dir."""
    from PIL import Image

    from hwnas_darts.export import onnx_available

    base = tmp_path_factory.mktemp("readme")
    work = base / "work"
    work.mkdir()
    run = work / "runs" / "tiny"
    env = _env(_isolated_cache)
    overrides = ["export.onnx=true"] if onnx_available() is None else []
    res = subprocess.run([sys.executable, "-m", "hwnas_darts.fit", "--config", str(TINY), "--out", str(run), *overrides],
                         cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rng = np.random.default_rng(0)
    _write_idx(base / "images-idx3-ubyte.gz", rng.integers(0, 255, (20, 16, 16)))
    _write_idx(base / "labels-idx1-ubyte.gz", rng.integers(0, 4, (20,)))
    Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(base / "shirt.png")
    photos = base / "photos"
    for cls in ("a", "b"):
        (photos / cls).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(photos / cls / f"{i}.png")
    return {"base": base, "work": work, "run": run, "env": env, "onnx": onnx_available() is None}


def _env(cache) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HWNAS_CACHE=str(cache), WANDB_MODE="disabled", WANDB_SILENT="true", PYTHONWARNINGS="ignore",
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def substitute(cmd: str, w: dict) -> str:
    """The README command made to run on the tiny world (see the module docstring)."""
    base, run = w["base"], w["run"]
    subs = [
        ("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz", str(base / "images-idx3-ubyte.gz")),
        ("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz", str(base / "labels-idx1-ubyte.gz")),
        ("runs/fashion_mnist", str(run)),
        ("runs/<name>", str(run)),
        ("configs/fashion_mnist.yaml", str(TINY)),
        ("configs/luts/my-cpu.json", str(base / "my-cpu.json")),
        ("'s2dconv_n2_relu-conv_k3_relu-...'", TINY_ARCH),
        ("~/photos", str(base / "photos")),
        ("data.image_size=64", "data.image_size=16"),
        ("--image-size 64", "--image-size 16"),
        (" shirt.png", " " + str(base / "shirt.png")),
        (" photos/", " " + str(base / "photos")),
        ("preds.csv", str(base / "preds.csv")),
        ("val.png", str(base / "val.png")),
    ]
    for a, b in subs:
        cmd = cmd.replace(a, b)
    cmd = re.sub(r"(?<![/\w])configs/", str(ROOT / "configs") + "/", cmd)
    args = shlex.split(cmd)
    if args[2] == "hwnas_darts.fit" and "--config" not in args and "--resume" not in args:
        args[3:3] = ["--config", str(TINY)]  # the default config's 15-minute run, on the tiny space
    if args[2] == "hwnas_darts.lut" and len(args) > 3 and args[3] in ("probe", "validate") and "--config" not in args:
        args[4:4] = ["--config", str(TINY)]  # the table built above is the tiny space's
    if args[2] == "hwnas_darts.fit" and "--print_config" not in args and "--resume" not in args:
        w["fits"] = w.get("fits", 0) + 1
        # the exports of a fit are checked on the module's own run (world) and in test_fit.py; these
        # runs only show that each README line's config and options run end to end
        args += ["--out", str(w["work"] / "runs" / f"readme{w['fits']}"), "trainer.progress=false",
                 "export.torchscript=false", "export.program=false"]
    return shlex.join(args)


def _runnable(cmds: list[str]) -> list[str]:
    return [c for c in cmds if not any(c.startswith(p) for p in NOT_RUN)]


COMMANDS = readme_commands(README.read_text())


def test_readme_has_commands():
    assert len(COMMANDS) >= 12
    assert any(c.startswith("python -m hwnas_darts.profile") and c.endswith("model.ts") for c in COMMANDS)
    assert any(c.startswith("python -m hwnas_darts.profile") and c.endswith("model.pt2") for c in COMMANDS)


def test_every_readme_command_is_covered():
    skipped = [c for c in COMMANDS if c not in _runnable(COMMANDS)]
    assert all(any(c.startswith(p) for p in NOT_RUN) for c in skipped)
    assert len(_runnable(COMMANDS)) >= 12


@pytest.mark.timeout(900)
def test_every_readme_command_runs(world):
    """Runs each README command in order (``lut build`` before ``validate``/``show``), plus the
    form the README names in prose: ``predict`` on ``model.onnx`` (with the extra installed)."""
    cmds = [substitute(c, world) for c in _runnable(COMMANDS)]
    run = world["run"]
    extra = []
    if world["onnx"]:
        extra.append(f"python -m hwnas_darts.predict --model {run / 'model.onnx'} {world['base'] / 'images-idx3-ubyte.gz'} "
                     f"--labels {world['base'] / 'labels-idx1-ubyte.gz'}")
    failures = []
    for cmd in cmds + extra:
        args = shlex.split(cmd)
        args[0] = sys.executable
        res = subprocess.run(args, cwd=world["work"], env=world["env"], capture_output=True, text=True, timeout=600)
        out = res.stdout + res.stderr
        if res.returncode != 0 or "Traceback (most recent call last)" in out:
            failures.append(f"$ {cmd}\nexit {res.returncode}\n{out[-2500:]}")
    assert not failures, "\n\n".join(failures)


def test_predict_agrees_across_formats(world):
    """predict gives the same classes from model.ts, model.pt2 (and model.onnx with the extra)."""
    from hwnas_darts.predict import predict

    imgs = [world["base"] / "images-idx3-ubyte.gz"]
    ts = [p.label for p in predict(world["run"] / "model.ts", imgs)]
    assert ts == [p.label for p in predict(world["run"] / "model.pt2", imgs)]
    if world["onnx"]:
        assert ts == [p.label for p in predict(world["run"] / "model.onnx", imgs)]


def test_predict_on_onnx_without_onnxruntime_names_the_install(world, monkeypatch, tmp_path):
    from hwnas_darts.errors import ModelFileError
    from hwnas_darts.predict import load_model

    onnx = world["run"] / "model.onnx"
    if not onnx.is_file():  # no extra installed: any protobuf-like file stands in for the format check
        onnx = tmp_path / "model.onnx"
        onnx.write_bytes(b"\x08\x07\x12\x04fake")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(ModelFileError, match=r"ONNX model; running it needs onnxruntime: pip install"):
        load_model(onnx)


def test_model_file_of_the_wrong_format_is_named(world, tmp_path):
    from hwnas_darts.errors import ModelFileError
    from hwnas_darts.predict import load_model

    fake_ts = tmp_path / "model.ts"
    fake_ts.write_bytes(b"\x08\x07\x12\x04not a zip")
    with pytest.raises(ModelFileError, match=r"if it is an ONNX model, name it \*\.onnx"):
        load_model(fake_ts)
    wrong = tmp_path / "model.onnx"
    wrong.write_bytes((world["run"] / "model.ts").read_bytes())
    with pytest.raises(ModelFileError, match="zip archive .* not an ONNX model"):
        load_model(wrong)


def test_profile_counts_the_same_macs_for_every_format(world):
    """MACs counted at the dispatcher on the exported files equal fvcore's on the eager network."""
    import torch

    from hwnas_darts.hardware.roofline import count_macs
    from hwnas_darts.predict import load_model

    ts, meta = load_model(world["run"] / "model.ts")
    pt2, _ = load_model(world["run"] / "model.pt2")
    import json

    prof = json.loads((world["run"] / "profile.json").read_text())
    x = torch.randn(prof["batch_size"], *meta["input_shape"])
    assert count_macs(ts, x) == count_macs(pt2, x) == prof["macs"]
