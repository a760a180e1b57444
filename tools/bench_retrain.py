"""Where a retraining step's time goes on this machine, and what makes it cheaper - side by side.

One network (a finished run's, ``--run``, or ``--arch``) trained on real retraining batches:

* **variants of the bare step** (forward, label-smoothed cross-entropy, backward, SGD with
  Nesterov momentum and weight decay), timed interleaved - every round times each variant once,
  so the machine's drift hits all alike: the optimizer's per-tensor loop (PyTorch's CPU default),
  its ``foreach`` implementation, and ``fused`` where this torch has it for the CPU;
* **the per-image cost by batch size** (the bare step at each of ``--batch-sizes``);
* **the Lightning loop's overhead**: the package's own ``RetrainModule`` under a ``Trainer``
  (logging, metrics, scheduler, hooks) against the bare step at the same batch size, from two fits
  of different lengths, so the fit's setup cancels;
* **an operator profile** of the bare step (``torch.profiler``): self CPU time per operator,
  grouped into convolutions, BatchNorm, activations, the optimizer, the loss and the rest;
* **the step's memory format and precision** (``step``): channels-last and contiguous, fp32 and,
  where this machine computes bf16, bf16 autocast - timed by the same code and in the same way as
  the retraining's ``trainer.channels_last=auto`` / ``trainer.precision=auto`` choice, with the
  choice that rule would make.

Times are medians over rounds, with every round's value kept in the JSON. Compare the ratios.

    python tools/bench_retrain.py --run runs/fashion_mnist --json runs/bench_retrain.json
    python tools/bench_retrain.py --run runs/fashion_mnist --parts step --rounds 15
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from hwnas_darts.config import load_config  # noqa: E402
from hwnas_darts.io import atomic_write_json  # noqa: E402

CATEGORIES = (("convolution", ("conv", "mkldnn_convolution", "thnn_conv")), ("batch_norm", ("batch_norm",)),
              ("activation", ("silu", "relu", "sigmoid", "hardswish", "threshold")),
              ("optimizer", ("sgd", "_foreach", "add_", "mul_", "addcmul", "lerp")),
              ("loss", ("cross_entropy", "log_softmax", "nll_loss")))


def _sgd(net, cfg, impl: str):
    kw: dict[str, Any] = {}
    if impl == "foreach":
        kw["foreach"] = True
    elif impl == "fused":
        kw["fused"] = True
    return torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=cfg.momentum > 0, **kw)


def bare_step(net, opt, x, y, smoothing: float, channels_last: bool) -> None:
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(net(x), y, label_smoothing=smoothing).backward()
    opt.step()


def _timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def categorize(rows: list[tuple[str, float]]) -> dict[str, float]:
    """Self CPU milliseconds per category (by operator name)."""
    out = {name: 0.0 for name, _ in CATEGORIES} | {"other": 0.0}
    for op, ms in rows:
        low = op.lower()
        cat = next((name for name, keys in CATEGORIES if any(k in low for k in keys)), "other")
        out[cat] += ms
    return out


def lightning_step_seconds(space, arch, rc, batches, channels_last: bool, n_short: int, n_long: int) -> float:
    """Seconds per step of the package's RetrainModule under a Trainer, from fits of two lengths."""
    from hwnas_darts._pl import pl
    from hwnas_darts.retrain import RetrainModule

    def fit(n: int) -> float:
        torch.manual_seed(0)
        module = RetrainModule(space, arch, rc, channels_last=channels_last)
        trainer = pl.Trainer(max_epochs=1, limit_train_batches=n, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                             num_sanity_val_steps=0, limit_val_batches=0, log_every_n_steps=10)
        loader = torch.utils.data.DataLoader(batches[:n], batch_size=None)  # the prepared batches, as they are
        return _timed(lambda: trainer.fit(module, train_dataloaders=loader))

    fit(2)  # warm the code paths once
    return (fit(n_long) - fit(n_short)) / (n_long - n_short)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="a finished run: its config and architecture")
    ap.add_argument("--config")
    ap.add_argument("--arch", help="architecture string (default: the run's, or a sampled one)")
    ap.add_argument("--batch-sizes", default="64,128,256")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--lightning-steps", default="10,40", help="the two fit lengths of the Lightning measurement")
    ap.add_argument("--parts", default="optimizer,batch,lightning,profile,step",
                    help="which measurements (comma-separated): optimizer, batch, lightning, profile, step")
    ap.add_argument("--json", help="write every measurement here")
    args = ap.parse_args(argv)
    parts = set(args.parts.split(","))
    unknown = parts - {"optimizer", "batch", "lightning", "profile", "step"}
    if unknown:
        raise SystemExit(f"--parts: unknown {sorted(unknown)}; choose from optimizer, batch, lightning, profile, step")
    from hwnas_darts.data import HwnasDataModule, make_loader
    from hwnas_darts.network import build_network
    from hwnas_darts.space import Arch, SearchSpace

    cfg = load_config(str(Path(args.run) / "config.yaml") if args.run else args.config)
    space = SearchSpace.from_config(cfg)
    if args.arch:
        arch = Arch.from_string(args.arch)
    elif args.run:
        arch = Arch.load(Path(args.run) / "arch.json")
    else:
        arch = space.sample(seed=0)
    rc, cl = cfg.retrain, cfg.trainer.fixed_channels_last()
    dm = HwnasDataModule(cfg.data, cfg.seed, mode="retrain")
    dm.setup()
    sizes = [int(b) for b in args.batch_sizes.split(",")] if "batch" in parts else [cfg.data.batch_size]
    n_batches = args.rounds + args.warmup
    data = {b: [next(iter(make_loader(dm.retrain_dataset(), b, True, cfg.seed + i, drop_last=True)))
                for i in range(n_batches)] for b in sizes}
    res: dict[str, Any] = {"arch": arch.to_string(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                           "channels_last": cl, "rounds": args.rounds}

    def make(impl: str):
        torch.manual_seed(0)
        net = build_network(space, arch).train()
        if cl:
            net = net.to(memory_format=torch.channels_last)
        return net, _sgd(net, rc, impl)

    b0 = cfg.data.batch_size if cfg.data.batch_size in data else sizes[0]
    if parts & {"optimizer", "lightning"}:
        optimizer_part(res, make, data[b0], b0, n_batches, args.warmup, rc, cl)
    if "batch" in parts:
        batch_part(res, make, data, sizes, n_batches, args.warmup, rc, cl)
    if "lightning" in parts:
        short, long = (int(s) for s in args.lightning_steps.split(","))
        batches = [(x, y) for x, y in (data[b0] * (long // len(data[b0]) + 1))[:long]]
        pl_s = lightning_step_seconds(space, arch, rc, batches, cl, short, long)
        bare = res["optimizer"]["loop"]["median_s"]
        res["lightning"] = {"step_s": pl_s, "bare_step_s": bare, "overhead_s": pl_s - bare}
    if "profile" in parts:
        profile_part(res, make, data[b0], rc, cl)
    if "step" in parts:
        step_part(res, space, arch, data[b0], args.rounds)
    print(f"network {arch}; {res['threads']} threads; torch {res['torch']}; batch {b0}")
    for k, v in res.get("optimizer", {}).items():
        if isinstance(v, dict):
            print(f"  SGD {k:8s} {1e3 * v['median_s']:7.1f} ms/step")
    for k, v in res.get("unsupported", {}).items():
        print(f"  SGD {k:8s} unsupported here: {v}")
    for b, v in res.get("batch_size", {}).items():
        print(f"  batch {b:>4s}: {1e3 * v['median_s']:7.1f} ms/step, {v['per_image_ms']:.3f} ms/image")
    if "lightning" in res:
        lt = res["lightning"]
        print(f"  Lightning RetrainModule step {1e3 * lt['step_s']:.1f} ms vs bare {1e3 * lt['bare_step_s']:.1f} ms: "
              f"overhead {1e3 * lt['overhead_s']:+.1f} ms")
    if "profile_ms_per_step" in res:
        print("  profile (self CPU ms per step): " + ", ".join(f"{k} {v:.1f}" for k, v in res["profile_ms_per_step"].items()))
    if "step" in res:
        st = res["step"]
        ref = st["fp32 channels-last"]["median_ms"]
        for k, v in st.items():
            if isinstance(v, dict):
                print(f"  step {k:20s} {v['median_ms']:7.1f} ms ({v['median_ms'] / ref:.2f}x fp32 channels-last); rounds "
                      + ", ".join(f"{x:.1f}" for x in v["all_ms"]))
        print(f"  the auto rule would train in: {st['choice']}")
    if args.json:
        atomic_write_json(Path(args.json), res)
    return 0


def optimizer_part(res, make, pool, b0, n_batches, warmup, rc, cl) -> None:
    """1. optimizer implementations at the config's batch size, interleaved"""
    impls = {}
    for impl in ("loop", "foreach", "fused"):
        try:
            net, opt = make(impl)
            bare_step(net, opt, *pool[0], rc.label_smoothing, cl)
            impls[impl] = (net, opt)
        except (RuntimeError, TypeError, ValueError) as exc:
            res.setdefault("unsupported", {})[impl] = str(exc).splitlines()[0][:200]
    times: dict[str, list[float]] = {k: [] for k in impls}
    for i in range(n_batches):
        for k, (net, opt) in impls.items():
            t = _timed(lambda: bare_step(net, opt, *pool[i], rc.label_smoothing, cl))
            if i >= warmup:
                times[k].append(t)
    res["optimizer"] = {"batch_size": b0, **{k: {"median_s": statistics.median(v), "all_s": v} for k, v in times.items()}}


def batch_part(res, make, data, sizes, n_batches, warmup, rc, cl) -> None:
    """2. per-image cost by batch size (the loop optimizer), interleaved"""
    nets = {b: make("loop") for b in sizes}
    per: dict[int, list[float]] = {b: [] for b in sizes}
    for i in range(n_batches):
        for b in sizes:
            t = _timed(lambda: bare_step(*nets[b], *data[b][i], rc.label_smoothing, cl))
            if i >= warmup:
                per[b].append(t)
    res["batch_size"] = {str(b): {"median_s": statistics.median(v), "per_image_ms": 1e3 * statistics.median(v) / b,
                                  "all_s": v} for b, v in per.items()}


def profile_part(res, make, pool, rc, cl) -> None:
    """4. operator profile of the bare step"""
    from torch.profiler import ProfilerActivity, profile

    net, opt = make("loop")
    for i in range(3):
        bare_step(net, opt, *pool[i % len(pool)], rc.label_smoothing, cl)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(5):
            bare_step(net, opt, *pool[i % len(pool)], rc.label_smoothing, cl)
    rows = [(e.key, e.self_cpu_time_total / 1e3 / 5) for e in prof.key_averages()]
    res["profile_ms_per_step"] = {k: round(v, 3) for k, v in categorize(rows).items()}
    res["top_ops_ms_per_step"] = [(k, round(v, 3)) for k, v in sorted(rows, key=lambda r: -r[1])[:15]]


def step_part(res, space, arch, pool, rounds: int) -> None:
    """5. memory format and precision, timed as the retraining's `auto` choice times them"""
    from hwnas_darts.network import build_network
    from hwnas_darts.retrain import pick_step, step_candidates, step_label, time_training_steps

    torch.manual_seed(0)
    device = torch.device("cpu")
    cands = step_candidates("auto", "auto", device)
    times = time_training_steps(build_network(space, arch), pool[:3], cands, device, rounds=rounds)
    best = pick_step(times)
    res["step"] = {step_label(*k): {"median_ms": 1e3 * statistics.median(v), "all_ms": [1e3 * x for x in v]} for k, v in times.items()}
    res["step"]["choice"] = step_label(*best)


if __name__ == "__main__":
    sys.exit(main())
