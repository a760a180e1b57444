"""Everything CUDA-specific of hwnas_darts verified in one command on one GPU, in under 8 minutes.

    python tools/gpu_check.py --out gpu_check                 # on a CUDA machine
    python tools/gpu_check.py --device cpu --tiny --out /tmp/g  # CPU dry run on tiny shapes (in the tests)

Parts, in order, each in its own process with its own time budget (a part that fails or runs
out of time records its error and the check goes on to the next):

1. ``roofline``: peak GEMM rate in bf16 and fp32, copy bandwidth, ridge points.
2. ``lut``: the latency table of ``configs/cifar10.yaml``'s space in the deployment dtype and
   memory format (bf16, channels-last, batch 128), eager and with CUDA graphs, each calibrated on
   random networks and validated on *other* networks measured afterwards (Spearman, MAPE, share
   within +-10 %, the measurement's repeatability) - the CUDA counterpart of ``lut validate``.
   The tables are written under ``OUT/luts/``; commit the eager one to ``configs/luts/``.
3. ``search``: time and memory per search iteration for each relaxation against the floor, in
   fp32/contiguous, bf16, channels-last and bf16 + channels-last (``tools/bench_search.py``).
4. ``fit``: a short end-to-end ``fit`` on the CIFAR-10-shaped config with synthetic 32x32 images
   (no network), with the table of part 2: search, derive, retrain (its samples per second
   recorded), profile and the exports,
   each reloaded in a fresh process and compared with the eager network.
   The fit times with CUDA graphs when part 2 built that table (the recommended GPU setting).
5. ``ddp``: a 2-GPU DDP search when the machine has two GPUs (skipped, and said, otherwise).
6. ``fmnist`` (only on request, ``--parts fmnist``: it needs a device call of its own): the whole
   pipeline on real Fashion-MNIST with ``configs/fashion_mnist_gpu.yaml`` - the table built on the
   GPU with CUDA graphs, search, derive, a GPU-sized retraining, profile, both exports verified -
   then the run's table validated out of sample on 30 other networks (``lut validate``), and the
   issue's criteria recorded: test accuracy >= 0.93, >= 99 % of the networks within +-10 %, the
   found network's measured latency within 5 % of its prediction. The GPU machine reaches no
   network: stage the IDX files with ``tools/gpu_data.sh`` and carry ``.gpu_data``.

Everything goes to ``OUT/gpu_check.json`` (written after every part, atomically) plus the
artefacts. The GPU machine lacks fvcore (and wandb, which the check does not use): prepare the
wheels it needs with ``tools/gpu_wheels.sh`` here, carry ``.whl`` and install them there first
(see docs/BENCHMARKS.md, section "GPU").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: part -> seconds on a GPU (the whole check stays under 8 minutes); the tiny CPU dry run uses TINY_BUDGETS
BUDGETS = {"roofline": 30, "lut": 170, "search": 80, "fit": 150, "ddp": 50, "fmnist": 540}
TINY_BUDGETS = {"roofline": 60, "lut": 120, "search": 120, "fit": 180, "ddp": 60, "fmnist": 300}  # CI machines are shared
#: what a plain call runs (under 8 minutes on a GPU); ``fmnist`` runs when asked for, in a call of its own
DEFAULT_PARTS = ["roofline", "lut", "search", "fit", "ddp"]
PARTS = list(BUDGETS)
#: where the fmnist part looks for the four IDX files: the carried copy, then Debian's package
FMNIST_DIRS = (ROOT / ".gpu_data" / "fashion-mnist", Path("/usr/share/datasets/fashion-mnist"))
#: the fmnist part's dry run on the CPU: the GPU config's space and stages at tiny sizes and synthetic 28x28 images
FMNIST_TINY = ["data.dataset=synthetic", "data.synthetic.size=28", "data.synthetic.channels=1",
               "data.synthetic.num_classes=10", "data.synthetic.num_train=512", "data.synthetic.num_test=128",
               "data.batch_size=32", "data.eval_batch_size=128", "search.epochs=2", "search.warmup_epochs=1",
               "search.steps_per_epoch=3", "retrain.epochs=1", "retrain.steps_per_epoch=3",
               "retrain.time_budget_minutes=null", "trainer.accelerator=cpu", "trainer.precision=32-true"]
FMNIST_TINY_HW = ["hardware.device=cpu", "hardware.cuda_graphs=false", "hardware.dtype=float32", "hardware.batch_size=8",
                  "hardware.min_run_time=0.02", "hardware.rounds=2", "hardware.warmup=1", "hardware.calibration_archs=6",
                  "hardware.validation_archs=4", "hardware.check_archs=3", "hardware.probe=false"]


def _write_json(path: Path, data) -> None:
    from hwnas_darts.io import atomic_write_json

    atomic_write_json(path, data)


def _settings(args, dtype: str | None = None, cuda_graphs: bool = False):
    from hwnas_darts.hardware.measure import MeasureSettings

    cuda = args.device.startswith("cuda")
    if args.tiny:
        return MeasureSettings(device=args.device, batch_size=8, dtype=dtype or "float32", channels_last=True,
                               cuda_graphs=cuda_graphs and cuda, min_run_time=0.02, warmup=1, rounds=2, min_samples=4,
                               processes=1)  # a smoke run: no fresh measurement processes
    return MeasureSettings(device=args.device, batch_size=128, dtype=dtype or "bfloat16", channels_last=True,
                           cuda_graphs=cuda_graphs and cuda, min_run_time=0.1, warmup=5, rounds=3,
                           cudnn_benchmark=not args.no_cudnn_benchmark)


def _space(args):
    from hwnas_darts.config import load_config
    from hwnas_darts.space import SearchSpace

    cfg = load_config(ROOT / "configs" / ("tiny.yaml" if args.tiny else "cifar10.yaml"))
    return cfg, SearchSpace.from_config(cfg)


# ------------------------------------------------------------------------------------------ parts
def part_roofline(args, out: Path) -> dict:
    from hwnas_darts.hardware.roofline import probe_roofline

    res = {}
    for dtype in ("bfloat16", "float32"):
        if dtype == "bfloat16" and not args.device.startswith("cuda"):
            res[dtype] = {"skipped": "the bf16 peak is measured on CUDA only"}
            continue
        s = _settings(args, dtype)
        kw = {"gemm_n": 256, "copy_mb": 16} if args.tiny else {}
        r = probe_roofline(s, **kw)
        res[dtype] = {"peak_tflops": r.peak_flops / 1e12, "bandwidth_gbs": r.bandwidth / 1e9, "ridge_flop_per_byte": r.ridge}
    return res


def part_lut(args, out: Path) -> dict:
    from hwnas_darts.hardware.roofline import probe_roofline

    cfg, space = _space(args)
    n_cal, n_val = (6, 4) if args.tiny else (40, 24)
    res = {"space_id": space.space_id, "rows": len(space.all_keys())}
    roof = probe_roofline(_settings(args), **({"gemm_n": 256, "copy_mb": 16} if args.tiny else {}))
    for mode in ("eager", "cuda_graph"):
        if mode == "cuda_graph" and not args.device.startswith("cuda"):
            res[mode] = {"skipped": "CUDA graphs need a CUDA device"}
            continue
        try:
            res[mode] = _lut_mode(args, out, cfg, space, roof, mode, n_cal, n_val)
        except Exception as exc:  # the eager result stays recorded when the graph mode fails
            if mode == "eager":
                raise
            res[mode] = {"failed": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
    return res


def _lut_mode(args, out: Path, cfg, space, roof, mode: str, n_cal: int, n_val: int) -> dict:
    from hwnas_darts.hardware.table import build_table
    from hwnas_darts.hardware.calibration import calibrate_and_validate, validate_model
    from hwnas_darts.hardware.model import LatencyModel

    s = _settings(args, cuda_graphs=(mode == "cuda_graph"))
    t0 = time.perf_counter()
    table = build_table(space, s, roofline=roof)
    rows_s = time.perf_counter() - t0
    calibrate_and_validate(table, space, s, n_cal, 0, seed=cfg.seed)
    cal_s = time.perf_counter() - t0 - rows_s
    # validation: other networks, measured after the fit, in a separate measurement call
    val = validate_model(LatencyModel(table, space), space, s, n_val, seed=777)
    table.validation = dict(val, kind="after the fit, other networks")
    name = f"{'cuda' if s.is_cuda else 'cpu'}-{mode}-{s.dtype}-b{s.batch_size}-{space.space_id}.json"
    (out / "luts").mkdir(parents=True, exist_ok=True)
    table.save(out / "luts" / name)
    rep = val.get("repeatability") or {}
    res = {"table": f"luts/{name}", "rows_seconds": rows_s, "calibration_seconds": cal_s,
           "validation_seconds": val["seconds"], "learned": val["learned"], "table_sum": val["table_sum"],
           "repeatability": rep, "device": table.device}
    try:
        from hwnas_darts.plots import plot_lut_validation

        plot_lut_validation(val, out / f"lut_validation_{mode}.png")
    except Exception as exc:  # a plot must not fail the part
        res["plot_error"] = repr(exc)
    return res


def part_search(args, out: Path) -> dict:
    sys.path.insert(0, str(ROOT / "tools"))
    from bench_search import bench

    cfg_path = str(ROOT / "configs" / ("tiny.yaml" if args.tiny else "cifar10.yaml"))
    overrides = ["data.dataset=synthetic"]
    if not args.tiny:
        overrides += ["data.synthetic.size=32", "data.synthetic.channels=3", "data.synthetic.num_classes=10",
                      "data.synthetic.num_train=8192", "data.synthetic.num_test=256", "data.batch_size=256",
                      "data.num_workers=0"]
    iters, warm = (2, 1) if args.tiny else (10, 3)
    res = {}
    cuda = args.device.startswith("cuda")
    for bf16 in (False, True):
        for cl in (False, True):
            key = f"{'bf16' if bf16 else 'fp32'}_{'channels_last' if cl else 'contiguous'}"
            if bf16 and not cuda:
                res[key] = {"skipped": "bf16 autocast is measured on CUDA only"}
                continue
            r = bench(cfg_path, overrides, iters, warm, ["reinforce", "gumbel", "softmax"], args.device,
                      bf16=bf16, channels_last=cl)
            res[key] = {"floor_ms": r["floor_s"] * 1e3, "floor_peak_mib": r["floor_peak_bytes"] / 2**20,
                        **{m: {"ms": v["iteration_s"] * 1e3, "x_floor": v["ratio_to_floor"],
                               "peak_mib": v["peak_bytes"] / 2**20, "mem_x_floor": v["memory_ratio_to_floor"]}
                           for m, v in r["relaxations"].items()}}
    return res


def _fit_args(args, out: Path, lut: Path | None, extra: list[str]) -> list[str]:
    cfg = ROOT / "configs" / ("tiny.yaml" if args.tiny else "cifar10.yaml")
    a = [sys.executable, "-m", "hwnas_darts.fit", "--config", str(cfg), "--out", str(out), "--overwrite",
         "logger.kind=none", "trainer.progress=false", "data.dataset=synthetic"]
    if args.tiny:
        a += ["hardware.device=" + args.device, "trainer.accelerator=cpu", "derive.num_samples=1", "hardware.check_archs=3"]
    else:
        a += ["data.synthetic.size=32", "data.synthetic.channels=3", "data.synthetic.num_classes=10",
              "data.synthetic.num_train=4096", "data.synthetic.num_test=512", "data.num_workers=0",
              "search.epochs=2", "search.warmup_epochs=1", "search.steps_per_epoch=20", "retrain.epochs=1",
              "retrain.steps_per_epoch=20", "derive.num_samples=3", "hardware.calibration_archs=8",
              "hardware.validation_archs=0", "hardware.check_archs=4", "hardware.min_run_time=0.05"]
    if lut is not None and lut.is_file():
        a.append(f"hardware.lut={lut}")
    return a + extra


def _run_fit(args, out: Path, extra: list[str], timeout: float, graphs: bool = False) -> dict:
    lut = None
    prev = _load(Path(args.out) / "gpu_check.json").get("parts", {}).get("lut", {}).get("result", {})
    # graphs=True: the recommended GPU setting, timing with CUDA graphs, when part 2 built that table
    # (BENCHMARKS section 6: eager timings on a GPU are mostly host launch time); else the eager table
    if graphs and prev.get("cuda_graph", {}).get("table"):
        lut = Path(args.out) / prev["cuda_graph"]["table"]
        extra = ["hardware.cuda_graphs=true", *extra]
    elif prev.get("eager", {}).get("table"):
        lut = Path(args.out) / prev["eager"]["table"]
    cmd = _fit_args(args, out, lut, extra)
    # in this part's own process (already isolated, and under the orchestrator's time budget):
    # one interpreter start less than a subprocess
    # (DDP re-launches its script per rank, so the 2-GPU fit runs as a subprocess of its own)
    os.environ["WANDB_MODE"] = "disabled"
    t0 = time.perf_counter()
    if any(a.startswith("trainer.devices=") and a != "trainer.devices=1" for a in extra):
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        rc, log = proc.returncode, (proc.stdout + proc.stderr)[-3000:]
    else:
        from hwnas_darts.fit import main as fit_main

        rc, log = fit_main(cmd[3:]), "(in this part's output)"
    res = {"seconds": time.perf_counter() - t0, "returncode": rc, "command": " ".join(cmd[1:]), "budget_s": timeout}
    if rc != 0:
        raise RuntimeError(f"fit exited {rc}:\n{log}")
    metrics = json.loads((out / "metrics.json").read_text())
    state = json.loads((out / "state.json").read_text())
    res["metrics"] = {k: metrics.get(k) for k in ("test_accuracy", "latency_ms", "latency_ms_predicted", "latency_ms_batch1",
                                                  "macs", "params", "intensity", "efficiency", "device", "arch",
                                                  "latency_check")}
    res["stages"] = {k: v.get("seconds") for k, v in state.get("stages", {}).items()}
    res["exports"] = state.get("stages", {}).get("export", {}).get("results")
    res["retrain_throughput"] = retrain_throughput(state)
    return res


def retrain_throughput(state: dict) -> dict:
    """The retraining's samples per second (images through a training step, the loader's wait
    included) and its data path's share of the time, as the retrain stage recorded them."""
    stage = state.get("stages", {}).get("retrain", {})
    data = stage.get("data_path") or {}
    return {"samples_per_s": data.get("consumed_images_per_s"), "data_images_per_s": data.get("data_images_per_s"),
            "data_share": data.get("data_share"), "epochs": stage.get("epochs"), "seconds": stage.get("seconds")}


def part_fit(args, out: Path) -> dict:
    res = _run_fit(args, out / "fit", [], (TINY_BUDGETS if args.tiny else BUDGETS)["fit"] - 5, graphs=True)
    bad = [e for e in (res.get("exports") or []) if not e.get("ok") and e.get("kind") != "onnx"]
    if bad:
        raise RuntimeError(f"exports failed verification: {bad}")
    return res


def part_ddp(args, out: Path) -> dict:
    import torch

    if not args.device.startswith("cuda") or torch.cuda.device_count() < 2:
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return {"skipped": f"needs two CUDA GPUs; this machine has {n}"}
    return _run_fit(args, out / "ddp", ["trainer.devices=2", "trainer.strategy=ddp", "retrain.epochs=1"],
                    (TINY_BUDGETS if args.tiny else BUDGETS)["ddp"] - 5)


def part_fmnist(args, out: Path) -> dict:
    """The real Fashion-MNIST run on the GPU config, its table validated out of sample, the criteria."""
    from hwnas_darts.fit import main as fit_main
    from hwnas_darts.lut import main as lut_main

    cfg = str(ROOT / "configs" / "fashion_mnist_gpu.yaml")
    if args.tiny:
        extra, hw = FMNIST_TINY, FMNIST_TINY_HW
    else:
        root = next((d for d in FMNIST_DIRS if (d / "t10k-labels-idx1-ubyte.gz").is_file()
                     or (d / "t10k-labels-idx1-ubyte").is_file()), None)
        if root is None:
            raise RuntimeError("Fashion-MNIST not found in " + ", ".join(map(str, FMNIST_DIRS)) + ": run "
                               "tools/gpu_data.sh here and carry .gpu_data with the device tool")
        extra, hw = [f"data.root={root}"], []
        if args.no_cudnn_benchmark:
            raise RuntimeError("--no-cudnn-benchmark is not wired into the fmnist part's run")
    os.environ["WANDB_MODE"] = "disabled"
    run = out / "fmnist"
    t0 = time.perf_counter()
    rc = fit_main(["--config", cfg, "--out", str(run), "--overwrite", *extra, *hw])
    if rc != 0:
        raise RuntimeError(f"fit exited {rc} (its output is in this part's log)")
    seconds = time.perf_counter() - t0
    metrics = json.loads((run / "metrics.json").read_text())
    state = json.loads((run / "state.json").read_text())
    # out of sample: other networks than the table's calibration ones, measured after the run, by the CLI
    t1 = time.perf_counter()
    n = 4 if args.tiny else 30
    if lut_main(["validate", "--config", cfg, "--lut", str(run / "lut.json"), "-n", str(n), "--seed", "4242",
                 "--json", str(out / "fmnist_validation.json"), *hw]) != 0:
        raise RuntimeError("lut validate failed (its output is in this part's log)")
    val = json.loads((out / "fmnist_validation.json").read_text())
    ratio = metrics["latency_ms"] / metrics["latency_ms_predicted"]
    exports = state.get("stages", {}).get("export", {}).get("results") or []
    res = {"seconds": seconds, "validation_seconds": time.perf_counter() - t1,
           "metrics": {k: metrics.get(k) for k in ("test_accuracy", "latency_ms", "latency_ms_predicted", "latency_ms_batch1",
                                                   "macs", "params", "device", "arch", "latency_check", "decision")},
           "stages": {k: v.get("seconds") for k, v in state.get("stages", {}).items()},
           "retrain_throughput": retrain_throughput(state), "exports": exports, "validation": {"n": val.get("n"), "learned": val.get("learned"),
                                               "repeatability": val.get("repeatability")}}
    res["criteria"] = {
        "test_accuracy_at_least_0.93": metrics["test_accuracy"] >= 0.93,
        "validation_within_10pct_at_least_99pct": (val.get("learned") or {}).get("within_10pct", 0) >= 0.99,
        "measured_within_5pct_of_predicted": abs(ratio - 1) <= 0.05,
        "exports_verified": bool(exports) and all(e.get("ok") for e in exports if e.get("kind") != "onnx"),
    }
    res["measured_over_predicted"] = ratio
    if not res["criteria"]["exports_verified"]:
        raise RuntimeError(f"exports failed verification: {exports}")
    return res


# ------------------------------------------------------------------------------------------ driver
def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def run_part(args) -> int:
    """Child process: run one part, write ``OUT/part_NAME.json``."""
    out = Path(args.out)
    t0 = time.perf_counter()
    try:
        result = globals()[f"part_{args.part}"](args, out)
        rec = {"status": "skipped" if isinstance(result, dict) and "skipped" in result else "ok", "result": result}
        sub_failed = [f"{k}: {v['failed']}" for k, v in (result or {}).items() if isinstance(v, dict) and "failed" in v]
        if sub_failed:  # a part that got only some of its results done fails, and keeps what it got
            rec.update(status="failed", error="; ".join(sub_failed))
    except Exception as exc:
        rec = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]}
    rec["seconds"] = round(time.perf_counter() - t0, 2)
    _write_json(out / f"part_{args.part}.json", rec)
    return 0


def environment(device: str) -> dict:
    import platform

    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "device": device,
           "cuda": torch.version.cuda, "gpus": [], "host_cpu": platform.processor() or platform.machine()}
    if torch.cuda.is_available():
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    try:
        import fvcore  # noqa: F401

        env["fvcore"] = True
    except ImportError:
        env["fvcore"] = False
    return env


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="gpu_check", help="output folder (gpu_check.json, luts/, plots, fit runs)")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu for the dry run")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes and budgets (the CPU dry run of the tests)")
    ap.add_argument("--no-cudnn-benchmark", action="store_true",
                    help="time with cudnn.benchmark off (a workaround where a cuDNN algorithm faults; see tools/cuda_row_check.py)")
    ap.add_argument("--parts", default=",".join(DEFAULT_PARTS),
                    help=f"comma-separated subset of {','.join(PARTS)} (default: {','.join(DEFAULT_PARTS)})")
    ap.add_argument("--part", help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args(argv)
    if args.part:
        return run_part(args)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        ap.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device here (use --device cpu --tiny for the dry run)", file=sys.stderr)
            return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budgets = TINY_BUDGETS if args.tiny else BUDGETS
    report = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "args": vars(args), "environment": environment(args.device),
              "budgets_s": budgets, "parts": {}}
    _write_json(out / "gpu_check.json", report)
    t_all = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), WANDB_MODE="disabled",
               PYTHONUNBUFFERED="1")
    for name in parts:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--out", str(out), "--device", args.device]
        if args.tiny:
            cmd.append("--tiny")
        if args.no_cudnn_benchmark:
            cmd.append("--no-cudnn-benchmark")
        t0 = time.perf_counter()
        print(f"[gpu_check] {name} (budget {budgets[name]} s) ...", flush=True)
        if name == "ddp" and not args.device.startswith("cuda"):  # decided here: no process needed
            rec = {"status": "skipped", "result": {"skipped": "needs two CUDA GPUs; this run is on the CPU"},
                   "wall_seconds": 0.0}
            report["parts"][name] = rec
            _write_json(out / "gpu_check.json", report)
            print("[gpu_check] ddp: skipped (needs two CUDA GPUs)", flush=True)
            continue
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=budgets[name])
            rec = _load(out / f"part_{name}.json") or {"status": "failed", "error": f"exit {proc.returncode}",
                                                        "output": (proc.stdout + proc.stderr)[-4000:]}
        except subprocess.TimeoutExpired as exc:
            tail = ((exc.stdout or b"") + (exc.stderr or b""))
            tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
            rec = {"status": "timeout", "error": f"exceeded its budget of {budgets[name]} s", "output": tail[-4000:]}
        rec["wall_seconds"] = round(time.perf_counter() - t0, 2)
        report["parts"][name] = rec
        report["total_seconds"] = round(time.perf_counter() - t_all, 2)
        _write_json(out / "gpu_check.json", report)
        print(f"[gpu_check] {name}: {rec['status']} in {rec['wall_seconds']} s"
              + (f" - {rec.get('error')}" if rec["status"] in ("failed", "timeout") else ""), flush=True)
    failed = [n for n, r in report["parts"].items() if r["status"] in ("failed", "timeout")]
    print(f"[gpu_check] done in {report['total_seconds']} s; {len(parts) - len(failed)}/{len(parts)} parts ok or skipped; "
          f"results in {out / 'gpu_check.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
