"""Why the architecture distribution moves or does not: its gradient's signal against its noise, per layer.

At a fixed supernet (a finished run's last search checkpoint; ``--uniform`` resets the alphas to
the uniform start of the architecture steps), the architecture gradient of the cross-entropy is
drawn ``--batches`` times, each on a fresh batch of the architecture-validation split, under each
estimator:

* ``st``: the straight-through estimator of the former ``single_path`` relaxation (one Gumbel-max
  path, gate ``1 + p_k - sg(p_k)``, at the temperature the run's schedule gives its first
  architecture epoch; ``--tau`` to change);
* ``reinforceK``: the policy gradient with K paths per batch and the leave-one-out baseline
  (``search.policy_gradient_ce``; K = 1 uses a moving-average baseline warmed up on 20 batches);
* ``layerwiseK``: the same, but the K paths share one sampled path except in one layer (each
  layer in turn, ``--batches`` draws per layer): the other layers' choices leave the comparison.

A step of ``layerwiseK`` estimates one layer's gradient; its steps-to-resolve figure counts that
layer's draws, so over all layers it needs that many steps times the number of layers.

Per layer and estimator: the norm of the mean gradient (signal), the square root of the trace of the
per-step covariance (noise), their ratio (per-step signal-to-noise), and the architecture steps the
mean needs to stand two standard errors above the noise (``4 / SNR^2``); the hardware term's exact
gradient norm beside them (the run's objective; 0 where its target does not bind); and the seconds
one estimate costs.

    python tools/arch_gradients.py runs/fashion_mnist --uniform --batches 200 --out runs/arch_gradients.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from hwnas_darts.config import load_config  # noqa: E402
from hwnas_darts.io import atomic_write_json  # noqa: E402


def load_run(run: Path):
    """The run's config, search module (last checkpoint) and objective."""
    from hwnas_darts.hardware.model import LatencyModel
    from hwnas_darts.hardware.table import LatencyTable
    from hwnas_darts.objective import HardwareObjective, Targets
    from hwnas_darts.search import SearchModule
    from hwnas_darts.space import SearchSpace

    ckpt = run / "checkpoints" / "search" / "last.ckpt"
    if not ckpt.is_file():
        raise SystemExit(f"{run} has no search checkpoint ({ckpt}); give a finished run directory")
    cfg = load_config(run / "config.yaml")
    space = SearchSpace.from_config(cfg)
    model = LatencyModel(LatencyTable.load(run / "lut.json"), space)
    targets = Targets(**json.loads((run / "state.json").read_text())["targets"])
    objective = HardwareObjective(cfg.objective, model, targets)
    module = SearchModule.load_from_checkpoint(ckpt, map_location="cpu", objective=objective, weights_only=False)
    return cfg, module, objective


def st_gradient(net, xv, yv, tau: float) -> list[torch.Tensor]:
    """One straight-through architecture gradient of the cross-entropy: the estimator of the former
    ``single_path`` relaxation, kept here to measure it (one Gumbel-max path per layer, its output
    times the gate ``1 + s_k - sg(s_k)``, ``s = softmax((alpha + gumbel) / tau)``)."""
    x = net.stem(xv)
    for m in net.mixed:
        g = -torch.empty_like(m.alpha).exponential_().log()
        soft = F.softmax((m.alpha + g) / tau, dim=-1)
        k = int(soft.argmax())
        x = m.ops[k](x) * (1.0 + soft[k] - soft[k].detach())
    return list(torch.autograd.grad(F.cross_entropy(net.head(x), yv), net.arch_parameters()))


def pg_gradient(net, xv, yv, k: int, baseline: torch.Tensor, layer: int | None = None) -> list[torch.Tensor]:
    """One policy-gradient estimate of the cross-entropy's architecture gradient with k paths
    (``layer``: the paths differ in that layer only; the other layers' gradients are 0)."""
    from hwnas_darts.search import policy_gradient_ce

    ce_sur, _ = policy_gradient_ce(net, xv, yv, k, baseline, layer=layer)
    return list(torch.autograd.grad(ce_sur, net.arch_parameters(), allow_unused=True))


def summarize(samples: list[list[torch.Tensor]], names: list[str], per_layer: bool = False) -> dict[str, dict[str, float]]:
    """Per layer: signal (norm of the mean), noise (root trace of the covariance), SNR, steps for 2
    standard errors. ``samples[draw][layer]``, or with ``per_layer`` ``samples[layer][draw]``."""
    out = {}
    for i, name in enumerate(names):
        g = torch.stack(samples[i] if per_layer else [s[i] for s in samples]).double()
        mean = g.mean(0)
        noise = float(g.var(0, unbiased=True).sum().sqrt())
        signal = float(mean.norm())
        snr = signal / noise if noise > 0 else float("inf")
        out[name] = {"signal": signal, "noise": noise, "snr": snr,
                     "steps_for_2se": (4.0 / snr ** 2) if snr > 0 else float("inf"), "mean": mean.tolist()}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a finished run directory (its last search checkpoint is used)")
    ap.add_argument("--batches", type=int, default=200, help="gradient draws per estimator (fresh batches)")
    ap.add_argument("--estimators", default="st,reinforce1,reinforce4")
    ap.add_argument("--uniform", action="store_true", help="reset the alphas to uniform (the start of the arch steps)")
    ap.add_argument("--tau", type=float, help="temperature of the st estimator (default: the run's first arch epoch)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write the result as JSON here")
    args = ap.parse_args(argv)
    from hwnas_darts.data import HwnasDataModule, cycle_batches, make_loader, take
    from hwnas_darts.search import temperature

    cfg, module, objective = load_run(Path(args.run))
    net = module.supernet.train()
    if args.uniform:
        with torch.no_grad():
            for a in net.arch_parameters():
                a.zero_()
    tau = args.tau or temperature(cfg.search, cfg.search.warmup_epochs)
    names = [m.name for m in net.mixed]
    dm = HwnasDataModule(cfg.data, cfg.seed, mode="search")
    dm.setup()
    val = make_loader(dm._ds(take(dm.arrays.train_x, dm.val_idx), dm.arrays.train_y[dm.val_idx], True),
                      cfg.data.batch_size, True, args.seed + 1, drop_last=True)
    cl = cfg.trainer.fixed_channels_last()
    prep = (lambda x: x.contiguous(memory_format=torch.channels_last)) if cl else (lambda x: x)
    if cl:
        net.to(memory_format=torch.channels_last)
    ce0 = torch.tensor(2.0, dtype=torch.float32)
    hw = torch.autograd.grad(objective(ce0, net.probs())[0], net.arch_parameters(), allow_unused=True)
    result: dict[str, Any] = {"run": str(args.run), "uniform": args.uniform, "tau_st": tau, "batches": args.batches,
                              "batch_size": cfg.data.batch_size, "threads": torch.get_num_threads(),
                              "hardware_grad_norm": {n: 0.0 if g is None else float(g.norm()) for n, g in zip(names, hw)},
                              "estimators": {}}
    for est in args.estimators.split(","):
        torch.manual_seed(args.seed)
        baseline = torch.tensor(float("nan"))
        layerwise = est.startswith("layerwise")
        k = int(re.sub(r"^[a-z_]+", "", est) or 1) if est != "st" else 0
        if k == 1:  # warm the moving-average baseline up first
            for xv, yv in cycle_batches(val, 20):
                pg_gradient(net, prep(xv), yv, 1, baseline)
        samples, t0 = [], time.perf_counter()
        for b, (xv, yv) in enumerate(cycle_batches(val, args.batches * (len(names) if layerwise else 1))):
            xv = prep(xv)
            if est == "st":
                samples.append(st_gradient(net, xv, yv, tau))
            elif layerwise:  # each layer gets --batches estimates of its own (the others' entries are not drawn)
                g = pg_gradient(net, xv, yv, k, baseline, layer=b % len(names))
                samples.append([torch.zeros_like(a) if gi is None else gi for gi, a in zip(g, net.arch_parameters())])
            else:
                samples.append(pg_gradient(net, xv, yv, k, baseline))
        if layerwise:  # keep, per layer, only the draws that estimated it
            samples = [[s[i] for s in samples[i::len(names)]] for i in range(len(names))]
        sec = (time.perf_counter() - t0) / args.batches
        if layerwise:
            sec /= len(names)
        result["estimators"][est] = {"seconds_per_estimate": sec, "layers": summarize(samples, names, layerwise)}
        print(f"\n{est}: {1000 * sec:.0f} ms per estimate")
        print(f"{'layer':12s} {'signal':>9s} {'noise':>9s} {'SNR':>7s} {'steps(2se)':>11s} {'|hw grad|':>10s}")
        for n, r in result["estimators"][est]["layers"].items():
            print(f"{n:12s} {r['signal']:9.4f} {r['noise']:9.4f} {r['snr']:7.3f} {r['steps_for_2se']:11.0f} "
                  f"{result['hardware_grad_norm'][n]:10.4f}")
    ests = result["estimators"]
    ref = max((e for e in ests if e.startswith("reinforce")), key=lambda e: int(e[9:]), default=None)
    ref = ref or next((e for e in ests if e.startswith("layerwise")), None)
    if ref is not None:  # the policy gradient is unbiased: does each estimator point the same way?
        print(f"\ncosine between each estimator's mean gradient and {ref}'s (unbiased) mean, per layer:")
        for est, r in ests.items():
            cos = {}
            for n in names:
                a, b = torch.tensor(r["layers"][n]["mean"]), torch.tensor(ests[ref]["layers"][n]["mean"])
                cos[n] = float(F.cosine_similarity(a, b, dim=0))
                r["layers"][n]["cosine_to_" + ref] = cos[n]
            print(f"{est:12s} " + " ".join(f"{n}={c:+.2f}" for n, c in cos.items()))
    if args.out:
        atomic_write_json(Path(args.out), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
