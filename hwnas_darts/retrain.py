"""Retraining the chosen network from scratch, and its test (Lightning, torchmetrics accuracy)."""

from __future__ import annotations

import logging
import statistics
import time
import warnings
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from ._pl import pl
from .config import RetrainConfig
from .context import Retrained, fit_seconds
from .errors import TrainingError
from .io import atomic_path
from .network import build_network
from .space.arch import Arch
from .space.space import SearchSpace

if TYPE_CHECKING:
    from .data import HwnasDataModule
    from .context import RunContext

__all__ = ["RetrainModule", "Retrained", "retrain_stage"]

_logger = logging.getLogger(__name__)


def ema_decay_at(decay: float, updates: int) -> float:
    """The decay of the moving average at its ``updates``-th update: TensorFlow's
    ``ExponentialMovingAverage(decay, num_updates)`` warm-up, ``min(decay, (1 + n) / (10 + n))``.

    A fixed decay of 0.999 keeps 42 % of the random initial weights after a 5-epoch retraining's
    first epoch (859 steps) and 1.3 % at its end; averaged with the BatchNorm statistics, that
    network scored at chance on the holdout for three epochs and 0.35 on the test images at the end
    (docs/BENCHMARKS.md section 8.1). With the warm-up the average follows the network early on
    and reaches ``decay`` only after about ``9 / (1 - decay)`` updates.
    """
    return min(decay, (1.0 + updates) / (10.0 + updates))


def ema_with_warmup(decay: float):
    """``AveragedModel``'s ``multi_avg_fn``: the moving average with :func:`ema_decay_at`'s decay,
    computed on the tensors' device (no host sync per step). Integer buffers (BatchNorm's
    ``num_batches_tracked``) take the network's value."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        if not (torch.is_floating_point(averaged[0]) or torch.is_complex(averaged[0])):
            for a, c in zip(averaged, current):
                a.copy_(c)
            return
        n = n_averaged.to(averaged[0].dtype)
        d = torch.clamp((1.0 + n) / (10.0 + n), max=decay)
        torch._foreach_mul_(averaged, d)
        torch._foreach_add_(averaged, torch._foreach_mul(current, 1.0 - d))

    return update


def in_format(module: nn.Module, channels_last: bool) -> nn.Module:
    """``module`` with its 4-d weights in channels-last or in contiguous (NCHW) memory format, whichever
    format they are in now (in place; returned for chaining)."""
    return module.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


class RetrainModule(pl.LightningModule):
    """Cross-entropy (with label smoothing) training of a task network; top-1 test accuracy.

    Args:
        space: the search space (or its :meth:`~hwnas_darts.space.space.SearchSpace.spec`).
        arch: the architecture (or its compact string) whose task network is trained.
        cfg: the ``retrain`` section.
        channels_last: train in channels-last memory format.

    The arguments are saved as hyperparameters (plain data): a checkpoint loads with
    ``RetrainModule.load_from_checkpoint(path)``.
    """

    def __init__(self, space: SearchSpace | dict, arch: Arch | str, cfg: RetrainConfig | dict,
                 channels_last: bool = False):
        super().__init__()
        space = space if isinstance(space, SearchSpace) else SearchSpace.from_spec(space)
        arch = arch if isinstance(arch, Arch) else Arch.from_string(arch)
        cfg = cfg if isinstance(cfg, RetrainConfig) else RetrainConfig.model_validate(cfg)
        self.save_hyperparameters({"space": space.spec(), "arch": arch.to_string(), "cfg": cfg.model_dump(),
                                   "channels_last": channels_last})
        network = build_network(space, arch)
        num_classes = space.num_classes
        self.network = network.to(memory_format=torch.channels_last) if channels_last else network
        self.cfg = cfg
        # an exponential moving average of the weights (and BatchNorm statistics), updated after every
        # optimizer step; it scores the holdout, and its weights replace the network's when training ends
        self.ema = None
        if cfg.ema_decay:
            from torch.optim.swa_utils import AveragedModel

            self.ema = AveragedModel(self.network, multi_avg_fn=ema_with_warmup(cfg.ema_decay), use_buffers=True)
            self.ema.requires_grad_(False)  # updated by copying, never by the optimizer (nor reduced by DDP)
        self.channels_last = channels_last
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        # the test runs on rank 0 alone, over every test image once: nothing to gather from other ranks
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro", sync_on_compute=False)
        self.history: list[dict[str, float]] = []
        self._clock: tuple[float, float] | None = None  # (perf_counter at the fit's start, seconds before it)

    def use_channels_last(self, channels_last: bool) -> None:
        """Train (and average) in channels-last memory format or not, chosen after construction (the
        retraining's measured step choice); the weights' values are unchanged."""
        in_format(self.network, channels_last)
        if self.ema is not None:
            in_format(self.ema.module, channels_last)
        self.channels_last = channels_last
        self.hparams["channels_last"] = channels_last

    def forward(self, x: torch.Tensor, network: nn.Module | None = None) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return (self.network if network is None else network)(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.cfg.label_smoothing)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"retraining stopped: the loss is {float(loss)} at epoch {self.current_epoch}, step {batch_idx}. "
                "The last good end-of-epoch checkpoint is kept; lower retrain.lr, then rerun (or --resume)."
            )
        self.train_acc(logits.detach(), y)
        self.log("retrain/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=True, batch_size=len(y))
        self.log("retrain/train_acc", self.train_acc, prog_bar=True, on_step=False, on_epoch=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.network)

    def on_train_end(self) -> None:
        if self.ema is not None:  # what is tested, saved and exported from here on is the average
            self.network.load_state_dict(self.ema.module.state_dict())

    def _scored(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the weights being scored: the average while it is training, the network after."""
        averaging = self.ema is not None and self.trainer.state.fn == "fit"
        return self(x, self.ema.module if averaging else None)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.val_acc(self._scored(x), y)
        self.log("retrain/val_acc", self.val_acc, prog_bar=True, on_step=False, on_epoch=True)

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.test_acc(self(x), y)
        self.log("test/accuracy", self.test_acc, on_step=False, on_epoch=True)

    def on_train_start(self) -> None:
        # wall-clock of the retraining so far: a resumed fit continues the clock of its checkpoint
        self._clock = (time.perf_counter(), float(self.history[-1].get("seconds", 0.0)) if self.history else 0.0)

    def on_train_epoch_end(self) -> None:
        # Lightning has run this epoch's validation (the holdout) before this hook
        m = self.trainer.callback_metrics
        entry = {"epoch": int(self.current_epoch), **{k: float(v) for k, v in m.items() if k.startswith("retrain/")}}
        if self._clock is not None:
            entry["seconds"] = round(self._clock[1] + time.perf_counter() - self._clock[0], 3)
        self.history.append(entry)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["retrain_history"] = self.history

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("retrain_history", []))

    def configure_optimizers(self):
        c = self.cfg
        if c.optimizer == "sgd":
            opt = torch.optim.SGD(self.network.parameters(), lr=c.lr, momentum=c.momentum,
                                  weight_decay=c.weight_decay, nesterov=c.momentum > 0)
        else:
            opt = torch.optim.AdamW(self.network.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": one_cycle(opt, c, total), "interval": "step"}}


def one_cycle(opt: torch.optim.Optimizer, cfg: RetrainConfig, total: int, done: int = 0):
    """The retraining's one-cycle schedule over ``total`` optimizer steps (warm-up ``cfg.warmup_fraction``
    from lr/10 to ``cfg.lr``, cosine anneal to lr/1000), positioned after ``done`` steps: a schedule rebuilt
    for another length mid-training (the budget's re-plan) carries on from the step it is at."""
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=cfg.warmup_fraction,
                                               anneal_strategy="cos", div_factor=10.0, final_div_factor=100.0,
                                               last_epoch=done - 1)


# ------------------------------------------------------------------------------------------------
# The run's ``retrain`` stage
# ------------------------------------------------------------------------------------------------
def test_accuracy(ctx: "RunContext", module: RetrainModule, dm: "HwnasDataModule") -> float:
    """Top-1 accuracy on the whole official test split, every image exactly once (``trainer.test``
    on one device, the torchmetrics accuracy of ``test_step``), in fp32 whatever precision trained it:
    the exported network is fp32, and so is the accuracy reported for it."""
    trainer = pl.Trainer(accelerator="gpu" if ctx.compute_device().type == "cuda" else "cpu", devices=1, num_nodes=1,
                         precision="32-true", logger=ctx.tracker.lightning_logger("retrain") if ctx.tracker else False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         default_root_dir=str(ctx.run_dir))
    loader = dm.test_dataloader()
    out = trainer.test(module, dataloaders=loader, verbose=False)
    n = len(loader.dataset)
    return round(float(out[0]["test/accuracy"]) * n) / n  # the exact fraction (the metric is a float32)


#: seconds per training step that a bare SGD step does not show (Lightning's loop, logging, metrics):
#: 0.011-0.013 s on the 2-core CPU of docs/BENCHMARKS.md section 8, for networks of 0.06-0.19 s per step
STEP_OVERHEAD_S = 0.012


def probe_epoch_seconds(network: nn.Module, loader, steps: int, channels_last: bool, holdout: int = 0,
                        eval_batch: int = 500, probe_steps: int = 12) -> dict[str, float]:
    """Seconds of one retraining epoch of ``network``'s architecture, timed here: ``probe_steps``
    SGD steps on real batches of ``loader`` (after two untimed ones) on a copy, plus
    :data:`STEP_OVERHEAD_S`, times ``steps``, plus the holdout's evaluation (forward passes timed
    on one eval batch)."""
    import copy
    import itertools

    from .estimate import sgd_step_seconds

    net = copy.deepcopy(network)
    step_s = sgd_step_seconds(net, itertools.islice(itertools.cycle(loader), probe_steps + 2), channels_last,
                              untimed=2, momentum=0.9)
    x, _ = next(iter(loader))
    net.eval()
    xb = x[:1].expand(min(eval_batch, holdout) if holdout else eval_batch, *x.shape[1:]).contiguous()
    with torch.no_grad():
        net(xb)
        t0 = time.perf_counter()
        net(xb)
    image_s = (time.perf_counter() - t0) / len(xb)
    val_s = image_s * holdout
    train_s = (step_s + STEP_OVERHEAD_S) * steps
    return {"step_s": step_s, "train_s": train_s, "val_s": val_s, "epoch_s": train_s + val_s, "eval_image_s": image_s}


#: seconds kept for writing the report after the last stage that measures
REPORT_S = 10.0


def run_budget_left(ctx: "RunContext", probe: dict[str, float], test_images: int) -> dict[str, float]:
    """What ``retrain.run_budget_minutes`` leaves the retraining: the budget, less the seconds the
    run's finished stages took (state.json, so a resumed run counts what it spent before), less an
    estimate of the work after the training (testing ``test_images`` at the probe's forward speed,
    profile, export, report)."""
    from .estimate import profile_export_seconds

    spent = sum(float(st.get("seconds", 0.0)) for st in ctx.state.data["stages"].values() if st.get("done"))
    after = test_images * probe.get("eval_image_s", 0.0) + sum(profile_export_seconds(ctx).values()) + REPORT_S
    left = ctx.cfg.retrain.run_budget_minutes * 60 - spent - after
    return {"spent_s": round(spent, 1), "after_s": round(after, 1), "left_s": round(left, 1)}


#: bf16 autocast changes the training's arithmetic, so it must beat the fastest fp32 step by this much
BF16_MARGIN = 0.10


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (CUDA: Ampere or later; CPU: oneDNN's AVX512-BF16 / AMX check)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


_PRECISION_NAMES = {"32-true": "fp32", "32": "fp32", "64-true": "fp64", "bf16-mixed": "bf16", "bf16-true": "bf16 weights",
                    "16-mixed": "fp16", "16-true": "fp16 weights"}


def step_label(channels_last: bool, precision: str) -> str:
    """A training step's name in logs, reports and benchmarks: ``fp32 channels-last``, ``bf16 contiguous``..."""
    return f"{_PRECISION_NAMES.get(precision, precision)} {'channels-last' if channels_last else 'contiguous'}"


def _is_fp32(precision: str) -> bool:
    return precision in ("32-true", "32")


def step_candidates(channels_last: bool | str, precision: str, device: torch.device) -> list[tuple[bool, str]]:
    """The (channels-last, precision) steps to time for these settings: both formats where the memory
    format is ``auto``, fp32 and - where ``device`` computes bf16 - bf16 autocast where the precision is."""
    formats = [True, False] if channels_last == "auto" else [bool(channels_last)]
    precisions = (["32-true"] + (["bf16-mixed"] if bf16_supported(device) else [])) if precision == "auto" else [precision]
    return [(cl, p) for p in precisions for cl in formats]


def time_training_steps(network: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]],
                        candidates: list[tuple[bool, str]], device: torch.device, rounds: int = 5,
                        steps: int = 2) -> dict[tuple[bool, str], list[float]]:
    """Seconds of one SGD step (forward, backward, update) of a copy of ``network`` in each candidate
    (channels-last or not, fp32 or bf16 autocast), timed in interleaved rounds of ``steps`` steps on
    real ``batches`` after one untimed warm-up step each, so the machine's drift falls on every
    candidate alike. Returns every round's per-step seconds."""
    import copy

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    nets, opts = {}, {}
    for cl, prec in candidates:
        net = in_format(copy.deepcopy(network).to(device).train(), cl)
        nets[cl, prec] = net
        opts[cl, prec] = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)
    data = [(x.to(device), y.to(device)) for x, y in batches]

    def step(key: tuple[bool, str], i: int) -> None:
        x, y = data[i % len(data)]
        if key[0]:
            x = x.contiguous(memory_format=torch.channels_last)
        opts[key].zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16 if key[1].startswith("16") else torch.bfloat16,
                            enabled=key[1].endswith("-mixed")):
            loss = F.cross_entropy(nets[key](x), y)
        loss.backward()
        opts[key].step()

    times: dict[tuple[bool, str], list[float]] = {k: [] for k in nets}
    for k in nets:
        step(k, 0)
    sync()
    for r in range(rounds):
        for k in (nets if r % 2 == 0 else list(nets)[::-1]):
            t0 = time.perf_counter()
            for i in range(steps):
                step(k, r * steps + i)
            sync()
            times[k].append((time.perf_counter() - t0) / steps)
    return times


def pick_step(times: dict[tuple[bool, str], list[float]]) -> tuple[bool, str]:
    """The candidate with the smallest median step time, where a lower precision (bf16) must beat the
    fastest fp32 one by :data:`BF16_MARGIN` (it changes the arithmetic)."""
    med = {k: statistics.median(v) for k, v in times.items()}
    fp32 = [k for k in med if _is_fp32(k[1])]
    best = min(fp32 or med, key=med.get)
    lower = [k for k in med if not _is_fp32(k[1])]
    if lower and fp32:
        fastest = min(lower, key=med.get)
        if med[fastest] < (1 - BF16_MARGIN) * med[best]:
            best = fastest
    return best


def choose_step(ctx: "RunContext", network: nn.Module, dm: "HwnasDataModule") -> dict[str, Any]:
    """The retraining's memory format and precision. ``trainer.channels_last`` / ``trainer.precision``
    set to a value are used as they are; ``auto`` times this network's training step in every
    alternative this device offers (channels-last and contiguous; fp32 and, where the device computes
    bf16, bf16 autocast) and takes the fastest (bf16 only when it beats the fastest fp32 step by
    :data:`BF16_MARGIN`: it changes the arithmetic). The decision, the device and every timing are kept
    in state.json (a resumed run trains on as it started) and reported; rank 0 decides for every rank."""
    t = ctx.cfg.trainer
    fixed = {"channels_last": t.fixed_channels_last(), "precision": t.fixed_precision(), "chosen_by": "config"}
    if t.channels_last != "auto" and t.precision != "auto":
        return fixed
    choice = None
    if ctx.leader:
        choice = ctx.state.data.get("retrain_step")
        asked = [t.channels_last, t.precision]
        if choice is None or choice.get("arch") != ctx.arch.to_string() or choice.get("asked") != asked:
            from .hardware.device import cpu_name

            device = ctx.compute_device()
            cands = step_candidates(t.channels_last, t.precision, device)
            with torch.random.fork_rng(devices=[]):  # the probe must not shift the training's random stream
                batches = [b for _, b in zip(range(3), dm.train_dataloader())]
                times = time_training_steps(network, batches, cands, device)
            best = pick_step(times)
            med = {k: statistics.median(v) for k, v in times.items()}
            name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
            choice = {"channels_last": best[0], "precision": best[1], "chosen_by": "measured", "arch": ctx.arch.to_string(),
                      "asked": asked,
                      "device": name, "threads": torch.get_num_threads(), "batch_size": ctx.cfg.data.batch_size,
                      "ms_per_step": {step_label(*k): [round(1000 * x, 2) for x in v] for k, v in times.items()}}
            _logger.info("retraining step on %s: %s (median ms per step: %s)", name, step_label(*best),
                         ", ".join(f"{step_label(*k)} {1000 * v:.1f}" for k, v in med.items()))
            ctx.state.data["retrain_step"] = choice
            ctx.state.save()
    return ctx.ranks.share("retrain-step", choice)


#: the epochs a budget buys are planned at this much more than an epoch's estimate (the machine's drift, checkpoints)
DRIFT_MARGIN = 1.08


def epochs_fitting(seconds: float, epoch_s: float) -> int:
    """Whole epochs of ``epoch_s`` seconds (with :data:`DRIFT_MARGIN`) that ``seconds`` hold (0 if none)."""
    return int(max(seconds, 0.0) / (max(epoch_s, 1e-9) * DRIFT_MARGIN))


def budget_plan(ctx: "RunContext", module: RetrainModule, dm: "HwnasDataModule") -> tuple[int, dict | None, bool]:
    """The retraining's epochs: ``retrain.epochs``, or with a budget (``retrain.time_budget_minutes`` /
    ``retrain.run_budget_minutes``) as many epochs (at most ``retrain.epochs``) as fit in it, from a probe
    of this network on rank 0 (shared with every rank, and kept in state.json so a resumed run keeps its
    schedule). Returned with the plan (None without a budget) and whether it was made now (not reloaded
    from state.json): only a plan made in this process is re-planned after the first epoch, because its
    budget counts from this moment."""
    rc = ctx.cfg.retrain
    if not (rc.time_budget_minutes or rc.run_budget_minutes):
        return rc.epochs, None, False
    plan, fresh = None, False
    if ctx.leader:  # followers touch no files: rank 0 decides (or reloads its decision) and shares it
        plan = ctx.state.data.get("retrain_plan")
        if (plan is None or plan.get("arch") != ctx.arch.to_string() or plan.get("budget_minutes") != rc.time_budget_minutes
                or plan.get("run_budget_minutes") != rc.run_budget_minutes):
            loader = dm.train_dataloader()
            steps = rc.steps_per_epoch or -(-len(loader) // max(ctx.ranks.world, 1))
            with torch.random.fork_rng(devices=[]):  # the probe must not shift the training's random stream
                probe = probe_epoch_seconds(module.network, loader, steps, module.channels_last, rc.holdout,
                                            ctx.cfg.data.eval_batch_size)
            budgets = {}  # seconds each budget leaves the retraining
            if rc.time_budget_minutes:
                budgets["retrain.time_budget_minutes"] = rc.time_budget_minutes * 60
            run_left = None
            if rc.run_budget_minutes:
                test_images = len(dm.arrays.test_y) if getattr(dm, "arrays", None) is not None else 0
                run_left = run_budget_left(ctx, probe, test_images)
                budgets["retrain.run_budget_minutes"] = run_left["left_s"]
            binding = min(budgets, key=budgets.get)
            seconds = budgets[binding]
            fit = epochs_fitting(seconds, probe["epoch_s"])
            plan = {"arch": ctx.arch.to_string(), "budget_minutes": rc.time_budget_minutes,
                    "run_budget_minutes": rc.run_budget_minutes, "run_budget": run_left, "binding": binding,
                    "budget_s": round(seconds, 1), "max_epochs": rc.epochs,
                    "epochs": max(1, min(rc.epochs, fit)), "probe": {k: round(v, 4) for k, v in probe.items()}}
            why = (f"{binding}={getattr(rc, binding.split('.')[1]):g} leaves {seconds / 60:.1f} min"
                   + (f" (stages so far {run_left['spent_s'] / 60:.1f} min, after the training ~{run_left['after_s'] / 60:.1f} min)"
                      if binding == "retrain.run_budget_minutes" else ""))
            _logger.info("retraining time budget: %s; one epoch ~%.0f s here, so %d epochs (at most %d)",
                         why, probe["epoch_s"], plan["epochs"], rc.epochs)
            if fit < 1:
                _logger.warning("one epoch (~%.0f s) does not fit: %s; training 1 epoch (raise the budget, or lower "
                                "the cost of the stages before the retraining)", probe["epoch_s"], why)
            ctx.state.data["retrain_plan"] = plan
            ctx.state.save()
            fresh = True
    plan, fresh = ctx.ranks.share("retrain-plan", (plan, fresh))
    return int(plan["epochs"]), plan, fresh


def replan_epochs(plan: dict, epoch_s: float, elapsed_s: float) -> int:
    """The epochs a budget plan should train once its first epoch is measured: one done, plus as many
    as the plan's ``budget_s`` still holds after ``elapsed_s`` (counted from the plan) at ``epoch_s``
    each with :data:`DRIFT_MARGIN`, at most ``max_epochs``."""
    more = epochs_fitting(float(plan["budget_s"]) - elapsed_s, epoch_s)
    return max(1, min(int(plan["max_epochs"]), 1 + more))


class BudgetReplan(pl.Callback):
    """Re-plans a budgeted retraining once its first epoch is measured (training and holdout together).

    The plan's probe times a dozen steps before training, and on a shared or drifting machine the
    epochs then run 5-17 % off it (docs/BENCHMARKS.md 8.5), so the budget was left unused or overrun.
    At the end of the first epoch the epochs that still fit are counted again from the measured epoch
    (:func:`replan_epochs`); where that changes the count, the trainer's ``max_epochs`` and the one-cycle
    schedule's length change with it (the schedule carries on from the step it is at), and the plan in
    state.json records the re-plan, so a resumed run trains the new count. Rank 0 decides for every rank.
    """

    def __init__(self, ctx: "RunContext", plan: dict, clock=time.perf_counter):
        self.ctx, self.plan, self.clock = ctx, plan, clock
        self.t_plan = clock()
        self.t_epoch: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 0 and "replan" not in self.plan:
            self.t_epoch = self.clock()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.t_epoch is None or trainer.current_epoch != 0:
            return
        start, self.t_epoch = self.t_epoch, None
        ctx, plan, old = self.ctx, self.plan, int(trainer.max_epochs)
        decision = None
        if ctx.leader:
            now = self.clock()
            epoch_s, elapsed = now - start, now - self.t_plan
            new = replan_epochs(plan, epoch_s, elapsed) if old > 1 else old   # a finished schedule stays finished
            plan["replan"] = {"epoch_s": round(epoch_s, 2), "probe_epoch_s": round(plan["probe"]["epoch_s"], 2),
                              "elapsed_s": round(elapsed, 2), "epochs_before": old, "epochs": new}
            plan["epochs"] = new
            ctx.state.data["retrain_plan"] = plan
            ctx.state.save()
            decision = new
            if new != old:
                _logger.info("retraining re-planned after the first epoch: it took %.0f s (the probe said %.0f s), "
                             "so %d epochs instead of %d fit the budget's %.1f min", epoch_s, plan["probe"]["epoch_s"],
                             new, old, plan["budget_s"] / 60)
        new = int(ctx.ranks.share("retrain-replan", decision))
        if new == old:
            return
        trainer.fit_loop.max_epochs = new
        for sc in trainer.lr_scheduler_configs:  # the one-cycle schedule, stretched or shrunk from where it is
            done = int(sc.scheduler.last_epoch)
            total = max(done + 1, round(sc.scheduler.total_steps * new / old))
            sc.scheduler = one_cycle(sc.scheduler.optimizer, pl_module.cfg, total, done)


def retrain_stage(ctx: "RunContext", pending: bool) -> Retrained:
    """Train ``ctx.arch`` from scratch on every rank (``pending``); rank 0 tests it and writes
    ``model_state.pt``. A finished stage is reloaded from that file."""
    from .data import HwnasDataModule, batches_done, data_path_report

    size = ctx.input_size()
    image_size = size if size != ctx.space.image_size else None
    ctx.seed(1)
    if not pending:
        module = RetrainModule(ctx.space, ctx.arch, ctx.cfg.retrain)
        module.network.load_state_dict(torch.load(ctx.path("model_state.pt"), map_location="cpu", weights_only=True))
        dm = HwnasDataModule(ctx.cfg.data, ctx.cfg.seed, mode="retrain", image_size=image_size,
                             holdout=ctx.cfg.retrain.holdout)
        dm.setup()
        return Retrained(module.network.eval(), dm, ctx.state.get("retrain", "test_accuracy"),
                         ctx.state.get("retrain", "history", []))
    rc = ctx.cfg.retrain
    full = rc.full_train
    dm = HwnasDataModule(ctx.cfg.data, ctx.cfg.seed, mode="retrain", full_train=full, image_size=image_size,
                         holdout=rc.holdout, erase=rc.random_erasing, augment=ctx.cfg.retrain_augment())
    # built before the data and the step choice, as always: the network's initial weights keep their place in
    # the seeded random stream; the chosen memory format is applied to it afterwards
    module = RetrainModule(ctx.space, ctx.arch, rc, ctx.cfg.trainer.fixed_channels_last())
    scored = rc.holdout > 0 or not full
    dm.setup()
    step = choose_step(ctx, module.network, dm)
    module.use_channels_last(step["channels_last"])
    epochs, plan, fresh = budget_plan(ctx, module, dm)
    trainer = ctx.trainer("retrain", epochs, rc.steps_per_epoch, limit_val_batches=None if scored else 0,
                          precision=step["precision"], callbacks=[BudgetReplan(ctx, plan)] if fresh else None)
    val = (dm.holdout_dataloader() if rc.holdout else dm.archval_dataloader()) if scored else None
    with warnings.catch_warnings():
        # full_train without a holdout: every training image is trained on, there is no split to score
        warnings.filterwarnings("ignore", message=".*`validation_step` but have no `val_dataloader`.*")
        trainer.fit(module, train_dataloaders=dm.train_dataloader(), val_dataloaders=val,
                    ckpt_path=ctx.last_ckpt("retrain"))
    if not ctx.leader:
        return Retrained(module.network, dm)
    seconds = fit_seconds(trainer)
    epochs = int(trainer.max_epochs)  # the budget's re-plan may have changed it
    data = data_path_report(dm.train_dataloader(), batches_done(trainer) * ctx.cfg.data.batch_size * ctx.ranks.world,
                            seconds, "retraining", ctx.cfg.data.num_workers)
    acc = test_accuracy(ctx, module, dm)
    net = module.network.cpu().float().eval()
    with atomic_path(ctx.path("model_state.pt")) as tmp:
        torch.save(net.state_dict(), tmp)
    ctx.state.mark("retrain", seconds, test_accuracy=acc, epochs=epochs, history=module.history, data_path=data,
                   step={k: step[k] for k in ("channels_last", "precision", "chosen_by")})
    _logger.info("test accuracy of the retrained network: %.4f", acc)
    return Retrained(net, dm, acc, module.history)
