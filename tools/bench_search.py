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
    python tools/bench_search.py --run runs/fashion_mnist --relaxations single_path   # + stage times of a fit run
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
from hwnas_darts.space import SearchSpace  # noqa: E402
from hwnas_darts.supernet import SuperNet  # noqa: E402


def _batches(dm, n):
    it = iter(dm.train_dataloader())
    out = []
    for _ in range(n):
        b, _, _ = next(it)
        out.append(((b["train"][0], b["train"][1]), (b["val"][0], b["val"][1])))
    return out


def search_iteration(net: SuperNet, w_opt, a_opt, batch) -> None:
    """One bi-level iteration exactly as SearchModule does it (first order, weights frozen in the
    architecture step)."""
    (x, y), (xv, yv) = batch
    weights = net.weight_parameters()
    for p in weights:
        p.requires_grad_(False)
    a_opt.zero_grad(set_to_none=True)
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


def make_floor(space, arch, channels_last: bool = False):
    net = build_network(space, arch).train()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net, torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)


def floor_iteration(net, opt, batch) -> None:
    (x, y), (xv, yv) = batch
    for xx, yy in ((xv, yv), (x, y)):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(xx), yy).backward()
        opt.step()


def _channels_last(batch):
    (x, y), (xv, yv) = batch
    cl = torch.channels_last
    return (x.contiguous(memory_format=cl), y), (xv.contiguous(memory_format=cl), yv)


def _peak(fn) -> int:
    counter = ByteCounter()
    with counter:
        fn()
    return counter.peak_bytes


def bench(cfg_path: str | None, overrides: list[str], iters: int, warmup: int, relaxations: list[str]) -> dict:
    cfg = load_config(cfg_path, overrides)
    space = SearchSpace.from_config(cfg)
    dm = HwnasDataModule(cfg.data, cfg.seed, mode="search")
    dm.setup()
    batches = _batches(dm, iters + warmup)
    cl = cfg.trainer.channels_last  # measured in the memory format the search trains in
    if cl:
        batches = [_channels_last(b) for b in batches]
    torch.manual_seed(cfg.seed)
    results: dict = {"config": cfg_path or "default", "batch_size": cfg.data.batch_size, "threads": torch.get_num_threads(),
                     "space": repr(space), "iterations": iters, "channels_last": cl, "relaxations": {}}
    nets = {}
    for mode in relaxations:
        net = SuperNet(space, mode, tau=1.0).train()
        if cl:
            net = net.to(memory_format=torch.channels_last)
        w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.01, momentum=0.9)
        a_opt = torch.optim.Adam(net.arch_parameters(), lr=0.01)
        nets[mode] = (net, w_opt, a_opt)
    floors = [make_floor(space, space.sample(seed=1000 + i), cl) for i in range(iters + warmup)]
    times: dict[str, list[float]] = {m: [] for m in relaxations}
    times["floor"] = []
    # interleave: every iteration measures each method once, so drift hits all of them alike
    for i, batch in enumerate(batches):
        for mode in relaxations:
            net, w_opt, a_opt = nets[mode]
            t0 = time.perf_counter()
            search_iteration(net, w_opt, a_opt, batch)
            if i >= warmup:
                times[mode].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        floor_iteration(*floors[i], batch)
        if i >= warmup:
            times["floor"].append(time.perf_counter() - t0)
    floor = statistics.median(times["floor"])
    results["floor_s"] = floor
    # memory: one step of each (single path: the sampled subnet; floor: a subnet)
    mem_floor = statistics.median(_peak(lambda f=f, b=b: floor_iteration(*f, b)) for f, b in zip(floors[:3], batches[:3]))
    results["floor_peak_bytes"] = mem_floor
    for mode in relaxations:
        net, w_opt, a_opt = nets[mode]
        med = statistics.median(times[mode])
        mem = statistics.median(_peak(lambda b=b: search_iteration(net, w_opt, a_opt, b)) for b in batches[:3])
        results["relaxations"][mode] = {"iteration_s": med, "ratio_to_floor": med / floor, "peak_bytes": mem,
                                        "memory_ratio_to_floor": mem / mem_floor}
    if "softmax" in results["relaxations"]:
        results["all_path_s"] = results["relaxations"]["softmax"]["iteration_s"]
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--relaxations", default="single_path,gumbel,softmax")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--run", help="also print the stage times of this fit run directory (state.json, lut.json)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    res = bench(args.config, args.overrides, args.iters, args.warmup, args.relaxations.split(","))
    print(f"{res['space']}; batch {res['batch_size']}, {res['threads']} threads, {res['iterations']} iterations, "
          f"channels_last={res['channels_last']}")
    print(f"floor (one sampled subnet, fwd+bwd on a train and a val batch): {res['floor_s'] * 1e3:.1f} ms, "
          f"peak {res['floor_peak_bytes'] / 2**20:.1f} MiB")
    print(f"{'relaxation':12s} {'ms/iter':>9s} {'x floor':>8s} {'peak MiB':>9s} {'x floor':>8s}")
    for mode, r in res["relaxations"].items():
        print(f"{mode:12s} {r['iteration_s'] * 1e3:9.1f} {r['ratio_to_floor']:8.2f} {r['peak_bytes'] / 2**20:9.1f} "
              f"{r['memory_ratio_to_floor']:8.2f}")
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
