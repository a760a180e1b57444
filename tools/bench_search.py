"""Search cost: time and peak memory per search iteration for each relaxation, against the floor.

One search iteration = an architecture step on a validation batch + a weight step on a training
batch (after warm-up). The floor is what any search must pay at least: one sampled subnet's
forward + backward on a training batch and on a validation batch, built as a plain network.
The all-path cost is what DARTS pays: every candidate of every layer runs.

Times are medians over the measured iterations, taken side by side in one process (this
machine is shared; compare the printed ratios, not absolute times across runs). Peak memory is
the largest live size of the tensors the step allocates (activations, saved tensors, gradients),
followed by a dispatch-mode counter.

    python tools/bench_search.py                      # default config, batch 64, every relaxation
    python tools/bench_search.py --config configs/tiny.yaml --iters 5 --json out.json
    python tools/bench_search.py --run runs/fashion_mnist --relaxations reinforce   # + stage times of a fit run
    python tools/bench_search.py --paths --iters 30   # reinforce's path scoring: separate forwards vs shared prefixes

``--paths``: the architecture step's scoring of ``search.arch_samples`` sampled paths on a
validation batch (no gradient through the network), as separate forwards (before 2026-12-07) and
as one :meth:`SuperNet.forward_paths` tree (shared prefixes once), interleaved, at distributions
from uniform to decided (the top op's logit ``c`` above the rest, ``--concentrations``); both
give the same logits (checked every iteration).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hwnas_darts.config import load_config  # noqa: E402
from hwnas_darts.data import HwnasDataModule  # noqa: E402
from hwnas_darts.hardware.roofline import ByteCounter  # noqa: E402
from hwnas_darts.network import build_network  # noqa: E402
from hwnas_darts.search import policy_gradient_ce  # noqa: E402
from hwnas_darts.space import SearchSpace  # noqa: E402
from hwnas_darts.supernet import SuperNet  # noqa: E402


def _batches(dm, n):
    it = iter(dm.train_dataloader())
    out = []
    for _ in range(n):
        b, _, _ = next(it)
        out.append(((b["train"][0], b["train"][1]), (b["val"][0], b["val"][1])))
    return out


def search_iteration(net: SuperNet, w_opt, a_opt, batch, samples: int = 4) -> None:
    """One bi-level iteration exactly as SearchModule does it (first order, weights frozen in the
    architecture step; ``reinforce``: ``samples`` paths scored on the validation batch)."""
    (x, y), (xv, yv) = batch
    weights = net.weight_parameters()
    for p in weights:
        p.requires_grad_(False)
    a_opt.zero_grad(set_to_none=True)
    if net.relaxation == "reinforce":
        policy_gradient_ce(net, xv, yv, samples)[0].backward()
    else:
        F.cross_entropy(net(xv), yv).backward()
    a_opt.step()
    for p in weights:
        p.requires_grad_(True)
    alphas = net.arch_parameters()
    for a in alphas:
        a.requires_grad_(False)
    w_opt.zero_grad(set_to_none=True)
    F.cross_entropy(net(x), y).backward()
    w_opt.step()
    for a in alphas:
        a.requires_grad_(True)


def _gpu_busy_s(step, device: torch.device, bf16: bool, n: int = 5) -> float | None:
    """Seconds of GPU kernel time per call of ``step(i)`` (``torch.profiler``, CUDA activity): what the
    GPU works, against which the wall time shows how much the host's launching costs. None when the
    profiler gives no device times here."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for i in range(n):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                step(i)
        torch.cuda.synchronize(device)
    us = sum(getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0) for e in prof.key_averages())
    return us / 1e6 / n if us > 0 else None


def floor_iteration(net, opt, batch) -> None:
    (x, y), (xv, yv) = batch
    for xx, yy in ((xv, yv), (x, y)):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(xx), yy).backward()
        opt.step()


def _to(batch, device, channels_last: bool):
    (x, y), (xv, yv) = batch
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return ((x.to(device).contiguous(memory_format=fmt), y.to(device)),
            (xv.to(device).contiguous(memory_format=fmt), yv.to(device)))


def _peak(fn, device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    counter = ByteCounter()
    with counter:
        fn()
    return counter.peak_bytes


def bench(cfg_path: str | None, overrides: list[str], iters: int, warmup: int, relaxations: list[str],
          device: str = "cpu", bf16: bool = False, channels_last: bool | None = None) -> dict:
    """Median time and peak memory per search iteration for each relaxation and the floor.

    ``device``: cpu or cuda; ``bf16``: autocast to bfloat16 (the GPU's training precision);
    ``channels_last``: NHWC training (default: the config's ``trainer.channels_last``).
    """
    cfg = load_config(cfg_path, overrides)
    space = SearchSpace.from_config(cfg)
    dev = torch.device(device)
    dm = HwnasDataModule(cfg.data, cfg.seed, mode="search")
    dm.setup()
    cl = cfg.trainer.fixed_channels_last() if channels_last is None else channels_last
    batches = [_to(b, dev, cl) for b in _batches(dm, iters + warmup)]
    torch.manual_seed(cfg.seed)
    results: dict = {"config": cfg_path or "default", "batch_size": cfg.data.batch_size, "threads": torch.get_num_threads(),
                     "space": repr(space), "iterations": iters, "channels_last": cl, "device": str(dev), "bf16": bf16,
                     "relaxations": {}}
    fmt = torch.channels_last if cl else torch.contiguous_format
    nets = {}
    for mode in relaxations:
        net = SuperNet(space, mode, tau=1.0).train().to(dev, memory_format=fmt)
        w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.01, momentum=0.9)
        a_opt = torch.optim.Adam(net.arch_parameters(), lr=0.01)
        nets[mode] = (net, w_opt, a_opt)
    floors = []
    for i in range(iters + warmup):
        net = build_network(space, space.sample(seed=1000 + i)).train().to(dev, memory_format=fmt)
        floors.append((net, torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)))

    def timed(fn) -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            fn()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {m: [] for m in relaxations}
    times["floor"] = []
    # interleave: every iteration measures each method once, so drift hits all of them alike
    for i, batch in enumerate(batches):
        for mode in relaxations:
            net, w_opt, a_opt = nets[mode]
            t = timed(lambda: search_iteration(net, w_opt, a_opt, batch))
            if i >= warmup:
                times[mode].append(t)
        t = timed(lambda: floor_iteration(*floors[i], batch))
        if i >= warmup:
            times["floor"].append(t)
    floor = statistics.median(times["floor"])
    results["floor_s"] = floor
    if dev.type == "cuda":  # how much of each iteration the GPU is busy (the rest: the host launching work)
        floor_busy = _gpu_busy_s(lambda i: floor_iteration(*floors[i % len(floors)], batches[i % len(batches)]), dev, bf16)
        results["floor_gpu_busy_s"] = floor_busy
        results["floor_gpu_busy_fraction"] = None if floor_busy is None else floor_busy / floor

    def amp(fn):
        def run():
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                fn()
        return run

    # memory: one step of each (reinforce: the sampled subnet; floor: a subnet)
    mem_floor = statistics.median(_peak(amp(lambda f=f, b=b: floor_iteration(*f, b)), dev)
                                  for f, b in zip(floors[:3], batches[:3]))
    results["floor_peak_bytes"] = mem_floor
    for mode in relaxations:
        net, w_opt, a_opt = nets[mode]
        med = statistics.median(times[mode])
        mem = statistics.median(_peak(amp(lambda b=b: search_iteration(net, w_opt, a_opt, b)), dev) for b in batches[:3])
        results["relaxations"][mode] = {"iteration_s": med, "ratio_to_floor": med / floor, "peak_bytes": mem,
                                        "memory_ratio_to_floor": mem / max(mem_floor, 1)}
        if dev.type == "cuda":
            busy = _gpu_busy_s(lambda i: search_iteration(net, w_opt, a_opt, batches[i % len(batches)]), dev, bf16)
            results["relaxations"][mode].update(
                gpu_busy_s=busy, gpu_busy_fraction=None if busy is None else busy / med,
                ratio_to_floor_gpu_busy=None if not busy or not results.get("floor_gpu_busy_s") else
                med / results["floor_gpu_busy_s"])
    if "softmax" in results["relaxations"]:
        results["all_path_s"] = results["relaxations"]["softmax"]["iteration_s"]
    return results


def bench_paths(cfg_path: str | None, overrides: list[str], iters: int, warmup: int,
                concentrations: list[float]) -> dict:
    """Median seconds of scoring ``arch_samples`` paths, separate forwards vs shared prefixes, per concentration."""
    import math

    cfg = load_config(cfg_path, overrides)
    space = SearchSpace.from_config(cfg)
    dm = HwnasDataModule(cfg.data, cfg.seed, mode="search")
    dm.setup()
    cl = cfg.trainer.fixed_channels_last()
    fmt = torch.channels_last if cl else torch.contiguous_format
    vals = [b[1][0].contiguous(memory_format=fmt) for b in _batches(dm, iters + warmup)]
    torch.manual_seed(cfg.seed)
    net = SuperNet(space, "reinforce").train().to(memory_format=fmt)
    k = cfg.search.arch_samples
    out = {"config": cfg_path or "default", "batch_size": cfg.data.batch_size, "threads": torch.get_num_threads(),
           "arch_samples": k, "channels_last": cl, "iterations": iters, "concentrations": {}}
    for c in concentrations:
        g = torch.Generator().manual_seed(cfg.seed)
        with torch.no_grad():
            for a in net.arch_parameters():  # op 0..n-1 at random on top, the rest level
                a.zero_()
                a[int(torch.randint(len(a), (1,), generator=g))] = c
        ent = statistics.mean(net.entropies().values())
        sep, sh, distinct = [], [], []
        for i, xv in enumerate(vals):
            rows = net.sample_indices(k).tolist()
            distinct.append(statistics.mean(len({r[j] for r in rows}) for j in range(len(space.layers))))
            with torch.no_grad():
                torch.manual_seed(i)
                t0 = time.perf_counter()
                a = [net(xv, indices=r) for r in rows]
                t1 = time.perf_counter()
                torch.manual_seed(i)
                b = net.forward_paths(xv, rows)
                t2 = time.perf_counter()
            if not all(torch.equal(u, v) for u, v in zip(a, b)):
                raise AssertionError("forward_paths gave other logits than separate forwards")
            if i >= warmup:
                sep.append(t1 - t0)
                sh.append(t2 - t1)
        ms, mh = statistics.median(sep), statistics.median(sh)
        out["concentrations"][str(c)] = {
            "top_prob": math.exp(c) / (math.exp(c) + len(space.layers[0].candidates) - 1),
            "mean_entropy": ent, "distinct_ops_per_layer": statistics.mean(distinct),
            "separate_ms": [1e3 * t for t in sep], "shared_ms": [1e3 * t for t in sh],
            "separate_median_ms": 1e3 * ms, "shared_median_ms": 1e3 * mh, "ratio": mh / ms}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--relaxations", default="reinforce,gumbel,softmax")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--bf16", action="store_true", help="autocast to bfloat16 (GPU training precision)")
    ap.add_argument("--run", help="also print the stage times of this fit run directory (state.json, lut.json)")
    ap.add_argument("--paths", action="store_true", help="time reinforce's path scoring: separate vs shared prefixes")
    ap.add_argument("--concentrations", default="0,1,2,3,4,6",
                    help="--paths: the top op's logit above the others' (0 = uniform)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    if args.paths:
        res = bench_paths(args.config, args.overrides, args.iters, args.warmup,
                          [float(c) for c in args.concentrations.split(",")])
        print(f"{res['arch_samples']} paths per architecture step, batch {res['batch_size']}, {res['threads']} threads, "
              f"{res['iterations']} iterations")
        print(f"{'c':>4s} {'entropy':>8s} {'ops/layer':>9s} {'separate ms':>12s} {'shared ms':>10s} {'ratio':>6s}")
        for c, r in res["concentrations"].items():
            print(f"{c:>4s} {r['mean_entropy']:8.2f} {r['distinct_ops_per_layer']:9.2f} {r['separate_median_ms']:12.1f} "
                  f"{r['shared_median_ms']:10.1f} {r['ratio']:6.2f}")
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1))
        return 0
    res = bench(args.config, args.overrides, args.iters, args.warmup, args.relaxations.split(","), args.device, args.bf16)
    print(f"{res['space']}; batch {res['batch_size']}, {res['threads']} threads, {res['iterations']} iterations, "
          f"channels_last={res['channels_last']}")
    print(f"floor (one sampled subnet, fwd+bwd on a train and a val batch): {res['floor_s'] * 1e3:.1f} ms, "
          f"peak {res['floor_peak_bytes'] / 2**20:.1f} MiB")
    print(f"{'relaxation':12s} {'ms/iter':>9s} {'x floor':>8s} {'peak MiB':>9s} {'x floor':>8s}")
    for mode, r in res["relaxations"].items():
        print(f"{mode:12s} {r['iteration_s'] * 1e3:9.1f} {r['ratio_to_floor']:8.2f} {r['peak_bytes'] / 2**20:9.1f} "
              f"{r['memory_ratio_to_floor']:8.2f}")
    if res.get("floor_gpu_busy_s"):
        print(f"GPU busy (kernel time per iteration, torch.profiler): floor {res['floor_gpu_busy_s'] * 1e3:.1f} ms "
              f"({100 * res['floor_gpu_busy_fraction']:.0f} % of its wall time); "
              + ", ".join(f"{m} {r['gpu_busy_s'] * 1e3:.1f} ms ({100 * r['gpu_busy_fraction']:.0f} %, "
                          f"{r['ratio_to_floor_gpu_busy']:.1f}x the floor's GPU-busy time)"
                          for m, r in res["relaxations"].items() if r.get("gpu_busy_s")))
    if args.run:
        run = Path(args.run)
        stages = json.loads((run / "state.json").read_text())["stages"]
        lut_meta = json.loads((run / "lut.json").read_text()).get("meta", {})
        res["stages"] = {k: v.get("seconds") for k, v in stages.items()}
        res["lut_rows_seconds"] = lut_meta.get("build_seconds")
        print(f"stage times of {run}: " + ", ".join(f"{k} {v:.1f} s" for k, v in res["stages"].items()))
        print(f"latency-table rows measured in {res['lut_rows_seconds']} s (the lut stage adds the roofline probe "
              "and the end-to-end calibration/validation networks)")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
