"""How long each stage of a run will take, printed before the first stage starts.

The estimate comes from the step counts the config implies (dataset size, batch size, epochs,
``steps_per_epoch``), a short probe (a few training steps of a sampled network of the space at
the training batch size, timed here) and the measurement settings (seconds per measured network,
fresh processes). It is a rough guide - within a factor of about two - whose job is to make a
config that would run for hours visible in the first seconds.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Iterable

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from .context import RunContext

__all__ = ["estimate_stages", "probe_step_seconds", "sgd_step_seconds", "format_estimate"]

_logger = logging.getLogger("hwnas_darts.fit")

#: seconds to start a fresh measurement process (spawn, imports) on a CPU
PROCESS_START_S = 4.0
#: fixed cost of exporting and verifying one format in a fresh process
EXPORT_S = 8.0


def sgd_step_seconds(net: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                     channels_last: bool = False, untimed: int = 1, momentum: float = 0.0) -> float:
    """Median seconds of one forward + backward + SGD step of ``net`` (trained in place) over
    ``batches``, the first ``untimed`` of them not timed."""
    net.train()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=momentum)
    times = []
    for i, (x, y) in enumerate(batches):
        t0 = time.perf_counter()
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()
        if i >= untimed:
            times.append(time.perf_counter() - t0)
    if not times:
        raise ValueError(f"no timed step: give more than untimed={untimed} batches")
    return sorted(times)[len(times) // 2]


def probe_step_seconds(ctx: "RunContext", steps: int = 3) -> float:
    """Median seconds of one forward + backward + SGD step of a sampled network of the space at
    ``data.batch_size`` (after one untimed step)."""
    from .network import build_network

    space, cfg = ctx.space, ctx.cfg
    net = build_network(space, space.sample(seed=cfg.seed))
    x = torch.randn(cfg.data.batch_size, *space.input_shape)
    y = torch.randint(0, space.num_classes, (cfg.data.batch_size,))
    return sgd_step_seconds(net, [(x, y)] * (steps + 1), cfg.trainer.fixed_channels_last(), untimed=1)


def _network_measurement_s(ctx: "RunContext", n: int) -> float:
    """Seconds to measure ``n`` networks end to end as derive/profile/calibration do."""
    hw = ctx.cfg.hardware
    per = hw.min_run_time * 1.5 + 0.05  # timed cycles plus warm-up and the untimed calls
    anchors = 3
    if hw.device == "cpu" and hw.processes > 1:
        return hw.processes * ((n + anchors) * per + PROCESS_START_S)
    return (n + anchors) * per


def profile_export_seconds(ctx: "RunContext") -> dict[str, float]:
    """Seconds of the profile stage (one network measured) and of the export stage (each format asked for)."""
    ex = ctx.cfg.export
    return {"profile": _network_measurement_s(ctx, 1) + 5.0,
            "export": EXPORT_S * (int(ex.torchscript) + int(ex.program) + int(ex.onnx))}


def estimate_stages(ctx: "RunContext", table_stored: bool) -> dict[str, float]:
    """Seconds per stage (``lut`` as a check of a stored table or as a build)."""
    from .data import HwnasDataModule

    cfg, space = ctx.cfg, ctx.space
    dm = HwnasDataModule(cfg.data, cfg.seed, mode="search")
    dm.setup()
    bs = cfg.data.batch_size
    step = probe_step_seconds(ctx)
    n_cand = sum(len(l.candidates) for l in space.layers) / max(len(space), 1)
    s = cfg.search
    search_steps = s.steps_per_epoch or max(len(dm.train_idx), len(dm.val_idx)) // bs
    width = 1.0 if s.relaxation == "reinforce" else n_cand  # softmax and gumbel run every path
    arch_step = (3.0 if s.second_order else 1.0) * width
    if s.relaxation == "reinforce":  # arch_samples forward passes without backward (about a third of a step each)
        arch_step = s.arch_samples / 3.0
    search = search_steps * step * (s.epochs * width + max(s.epochs - s.warmup_epochs, 0) * arch_step)
    r = cfg.retrain
    retrain_steps = r.steps_per_epoch or len(dm.retrain_idx) // bs
    retrain = retrain_steps * r.epochs * step * 1.1 + len(dm.arrays.test_y) / bs * step / 3
    if r.time_budget_minutes:  # the epochs are chosen to fit the budget (at most retrain.epochs)
        retrain = min(retrain, r.time_budget_minutes * 60 + len(dm.arrays.test_y) / bs * step / 3)
    d = cfg.derive
    cands = d.num_samples + 2
    eval_images = min(len(dm.val_idx), (d.eval_batches or 10**9) * cfg.data.eval_batch_size)
    fwd_per_image = step / 3 / bs
    derive = cands * (d.bn_batches * 256 + eval_images + d.finetune_steps * bs * 3) * fwd_per_image
    if d.measure:
        derive += _network_measurement_s(ctx, cands)
    if ctx.fixed_arch:  # --arch: the given network is only measured
        derive = _network_measurement_s(ctx, 1)
    hw = cfg.hardware
    if table_stored:
        lut = _network_measurement_s(ctx, hw.check_archs) if hw.check_archs >= 3 else 1.0
    else:
        rows = len(space.all_keys())
        lut = rows * (hw.min_run_time + 0.2) + _network_measurement_s(ctx, hw.calibration_archs + hw.validation_archs)
    est = {"lut": lut, "search": 0.0 if ctx.fixed_arch else search, "derive": derive, "retrain": retrain,
           **profile_export_seconds(ctx)}
    if r.run_budget_minutes:  # the retraining gets what the other stages leave of the run's budget
        others = sum(v for k, v in est.items() if k != "retrain")
        est["retrain"] = max(0.0, min(retrain, r.run_budget_minutes * 60 - others))
    return est


def format_estimate(est: dict[str, float]) -> str:
    def hms(x: float) -> str:
        return f"{x / 3600:.1f} h" if x >= 5400 else f"{x / 60:.0f} min" if x >= 90 else f"{x:.0f} s"

    return ", ".join(f"{k} ~{hms(v)}" for k, v in est.items()) + f"; total ~{hms(sum(est.values()))}"
