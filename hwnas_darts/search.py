"""The bi-level differentiable search as a LightningModule (manual optimization).

Each training step takes a pair of batches: one from the architecture-validation split and one
from the weight-training split.

1. Architecture step (after ``warmup_epochs``): the loss on the validation batch plus the
   hardware terms of the objective, back-propagated to the architecture parameters only
   (the weights are frozen with ``toggle_optimizer``); first-order DARTS by default, the
   second-order (unrolled) update with ``second_order: true``. With the ``reinforce``
   relaxation the cross-entropy's gradient is a policy gradient instead (TuNAS, REINFORCE with
   a baseline): ``arch_samples`` paths are drawn from the current distribution and scored on the
   same validation batch without back-propagation through the network, and each path's
   log-probability is pushed by how much better than the others' mean it did (the leave-one-out
   baseline; scoring the paths on one batch removes the batch's difficulty from the comparison).
   The hardware terms keep their exact gradient through the expected cost.
2. Weight step: cross-entropy on the training batch, back-propagated to the weights only.

The temperature of the Gumbel relaxations is annealed geometrically from ``tau_start`` to
``tau_end`` over the search epochs. At the end of every epoch the per-layer distribution is
appended to ``alpha_history`` (saved in checkpoints, so a resumed search keeps its history).
A non-finite loss or architecture parameter stops the search with a :class:`TrainingError`
naming the step; the last end-of-epoch checkpoint stays on disk.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from ._pl import pl
from .checkpoint import rng_state, set_rng_state
from .config import SearchConfig
from .context import fit_seconds
from .errors import RunDirError, TrainingError
from .io import atomic_write_json
from .objective import HardwareObjective
from .space.space import SearchSpace
from .supernet import SuperNet

__all__ = ["SearchModule", "temperature", "policy_gradient_ce", "search_stage", "load_search_module"]

if TYPE_CHECKING:
    from .context import RunContext

_logger = logging.getLogger(__name__)


def temperature(cfg: SearchConfig, epoch: int) -> float:
    """Geometric annealing from ``tau_start`` (epoch 0) to ``tau_end`` (last epoch)."""
    if cfg.epochs <= 1:
        return cfg.tau_end if cfg.epochs == 1 else cfg.tau_start
    frac = min(max(epoch / (cfg.epochs - 1), 0.0), 1.0)
    return float(cfg.tau_start * (cfg.tau_end / cfg.tau_start) ** frac)


def policy_gradient_ce(net: SuperNet, xv: torch.Tensor, yv: torch.Tensor, samples: int,
                       baseline: torch.Tensor | None = None, decay: float = 0.95,
                       layer: int | None = None, share: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The cross-entropy of the architecture step as a policy-gradient surrogate (REINFORCE).

    ``samples`` paths are drawn from ``softmax(alpha)`` and scored on the same batch without
    back-propagation through the network. The result's value is the paths' mean cross-entropy;
    its gradient with respect to the alphas is ``mean_i (CE_i - b_i) grad log p(path_i)``, an
    unbiased estimate of ``grad E_p[CE]``. With two or more samples ``b_i`` is the mean of the
    other paths' CE on the same batch (leave-one-out); with one, ``baseline`` (a one-element
    tensor, nan before the first step) holds a moving average of past CEs and is updated in place.
    Any objective form composes with the result as with a differentiable cross-entropy.

    ``layer``: the paths share one sampled path everywhere but in that layer, where each draws its
    own op; the estimate is then the (still unbiased) gradient of that layer's alphas alone, and the
    other layers' choices no longer add noise to the comparison.

    ``share``: the paths are scored with :meth:`SuperNet.forward_paths` (shared prefixes computed
    once: the same logits for deterministic ops); false: one separate forward per path (ops that
    draw random numbers inside the searched layers need this, or paths sharing a prefix share its
    draw and their advantages shrink).
    """
    idx = net.sample_indices(samples)
    if layer is not None:  # every path takes the first one's ops outside ``layer``
        others = [i for i in range(idx.shape[1]) if i != layer]
        idx[:, others] = idx[0, others]
    with torch.no_grad():
        ces, hits = [], []
        rows = idx.tolist()
        for logits in (net.forward_paths(xv, rows) if share else [net(xv, indices=r) for r in rows]):
            ces.append(F.cross_entropy(logits.float(), yv))
            hits.append((logits.argmax(1) == yv).float().mean())
        ce = torch.stack(ces)
        if samples > 1:
            base = (ce.sum() - ce) / (samples - 1)
        elif baseline is None or torch.isnan(baseline):
            base = ce  # no history yet: no update from this step
            if baseline is not None:
                baseline.copy_(ce.mean())
        else:
            base = baseline.expand_as(ce).clone()
            baseline.mul_(decay).add_((1 - decay) * ce.mean())
        adv = ce - base
    logp = net.log_prob(idx) if layer is None else net.log_prob(idx, layers=[layer])
    surrogate = (adv * logp).mean()
    ce_sur = ce.mean() + surrogate - surrogate.detach()
    stats = {"ce": ce.mean(), "acc": torch.stack(hits).mean(),
             "advantage_sd": adv.std() if samples > 1 else adv.abs().mean()}
    return ce_sur, stats


class SearchModule(pl.LightningModule):
    """Supernet + bi-level optimisation.

    Args:
        space: the search space.
        cfg: the ``search`` section.
        objective: the hardware-aware objective (``None``: plain cross-entropy, i.e. DARTS).
        channels_last: run the supernet in channels-last memory format (CUDA).

    ``space`` and ``cfg`` are saved as hyperparameters (plain data), so a checkpoint loads with
    ``SearchModule.load_from_checkpoint(path, objective=...)``.
    """

    def __init__(self, space: SearchSpace | dict, cfg: SearchConfig | dict, objective: HardwareObjective | None = None,
                 channels_last: bool = False):
        super().__init__()
        space = space if isinstance(space, SearchSpace) else SearchSpace.from_spec(space)
        cfg = cfg if isinstance(cfg, SearchConfig) else SearchConfig.model_validate(cfg)
        self.save_hyperparameters({"space": space.spec(), "cfg": cfg.model_dump(), "channels_last": channels_last})
        self.automatic_optimization = False
        self.cfg = cfg
        self.space = space
        self.supernet = SuperNet(space, cfg.relaxation, cfg.tau_start, cfg.share_act_weights, cfg.weight_sampling)
        self.objective = objective
        self.channels_last = channels_last
        if channels_last:
            self.supernet = self.supernet.to(memory_format=torch.channels_last)
        self.alpha_history: list[dict[str, Any]] = []
        # reinforce with one path per step: moving average of past cross-entropies (nan: none yet)
        self.register_buffer("ce_baseline", torch.tensor(float("nan")))

    # -- optimizers -------------------------------------------------------------------------------
    def configure_optimizers(self):
        c = self.cfg
        w_opt = torch.optim.SGD(self.supernet.weight_parameters(), lr=c.weight_lr, momentum=c.weight_momentum,
                                weight_decay=c.weight_decay, nesterov=c.weight_momentum > 0)
        a_opt = torch.optim.Adam(self.supernet.arch_parameters(), lr=c.alpha_lr, betas=(0.5, 0.999),
                                 weight_decay=c.alpha_weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, T_max=total, eta_min=c.weight_lr * 0.01)
        return [w_opt, a_opt], [sched]

    # -- hooks -------------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self.supernet.tau = temperature(self.cfg, self.current_epoch)

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _track(self, name: str, value: torch.Tensor, batch_size: int) -> None:
        """An epoch mean, reduced across ranks by Lightning (no host sync per step)."""
        self.log(f"search/{name}", value.detach(), on_step=False, on_epoch=True, sync_dist=True, batch_size=batch_size)

    def _check_finite(self, loss: torch.Tensor, what: str, batch_idx: int) -> None:
        if not torch.isfinite(loss):
            raise TrainingError(
                f"search stopped: the {what} is {float(loss.detach())} at epoch {self.current_epoch}, step {batch_idx} "
                f"(global step {self.global_step}). The last good end-of-epoch checkpoint is kept; lower "
                "search.weight_lr / search.alpha_lr or set search.grad_clip, then rerun (or --resume)."
            )

    def arch_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Validation cross-entropy plus the hardware terms."""
        logits = self.supernet(self._prep(x))
        ce = F.cross_entropy(logits, y)
        acc = (logits.argmax(1) == y).float().mean()
        if self.objective is not None:
            loss, details = self.objective(ce, self.supernet.probs())
        else:
            loss, details = ce, {"ce": ce.detach()}
        ent = torch.tensor(list(self.supernet.entropies().values())).mean()
        details = dict(details, acc=acc.detach(), entropy=ent)
        return loss, details

    def training_step(self, batch: dict[str, Any], batch_idx: int):
        (x, y), (xv, yv) = batch["train"], batch["val"]
        w_opt, a_opt = self.optimizers()
        if self.current_epoch >= self.cfg.warmup_epochs:
            self.toggle_optimizer(a_opt)
            a_opt.zero_grad(set_to_none=True)
            if self.cfg.relaxation == "reinforce":
                loss, details = self._policy_gradient(xv, yv)
            elif self.cfg.second_order:
                loss, details = self._unrolled_grads(x, y, xv, yv, w_opt)
            else:
                loss, details = self.arch_loss(xv, yv)
                self._check_finite(loss, "architecture loss", batch_idx)
                self.manual_backward(loss)
            a_opt.step()
            self.untoggle_optimizer(a_opt)
            for p in self.supernet.arch_parameters():
                self._check_finite(p.detach().sum(), "architecture parameter sum", batch_idx)
            for k, v in details.items():
                self._track(f"arch/{k}", torch.as_tensor(v, dtype=torch.float32), len(yv))
            if "expected_latency_ms" in details:
                self.log("search/exp_lat_ms", details["expected_latency_ms"].detach(), prog_bar=True, on_step=True,
                         on_epoch=False, batch_size=len(yv))
        # weight step
        self.toggle_optimizer(w_opt)
        w_opt.zero_grad(set_to_none=True)
        if self.cfg.weight_sampling == "sandwich":
            logits, ce = self._sandwich_step(self._prep(x), y, batch_idx)
        else:
            logits = self.supernet(self._prep(x))
            ce = F.cross_entropy(logits, y)
            self._check_finite(ce, "training loss", batch_idx)
            self.manual_backward(ce)
        if self.cfg.grad_clip:
            self.clip_gradients(w_opt, gradient_clip_val=self.cfg.grad_clip, gradient_clip_algorithm="norm")
        w_opt.step()
        self.untoggle_optimizer(w_opt)
        sched = self.lr_schedulers()
        if sched is not None:
            sched.step()
        acc = (logits.argmax(1) == y).float().mean()
        self._track("train/ce", ce, len(y))
        self._track("train/acc", acc, len(y))
        self.log("search/train_ce", ce.detach(), prog_bar=True, on_step=True, on_epoch=False, batch_size=len(y))

    def _sandwich_step(self, x: torch.Tensor, y: torch.Tensor, batch_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The sandwich rule's weight gradients (BigNAS): the largest path on the labels, then the
        smallest and ``sandwich_random`` uniform paths - on the largest's detached soft predictions
        with ``inplace_distill``, else on the labels - their gradients summed into one step. Returns
        the largest path's logits and the paths' mean cross-entropy against the labels (logged)."""
        net = self.supernet
        paths = net.sandwich_paths(self.cfg.sandwich_random)
        teacher = net(x, indices=paths[0])
        ces = [F.cross_entropy(teacher, y)]
        self._check_finite(ces[0], "training loss", batch_idx)
        self.manual_backward(ces[0])
        soft = F.softmax(teacher.detach().float(), dim=1) if self.cfg.inplace_distill else None
        for row in paths[1:]:
            logits = net(x, indices=row)
            loss = F.cross_entropy(logits, y if soft is None else soft.to(logits.dtype))
            self._check_finite(loss, "training loss", batch_idx)
            self.manual_backward(loss)
            ces.append(F.cross_entropy(logits.detach(), y) if soft is not None else loss.detach())
        return teacher, torch.stack([c.detach() for c in ces]).mean()

    def _policy_gradient(self, xv: torch.Tensor, yv: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """REINFORCE with a baseline (:func:`policy_gradient_ce`) plus the hardware terms' exact
        gradient; leaves the result in ``alpha.grad`` (averaged across ranks)."""
        net = self.supernet
        ce_sur, stats = policy_gradient_ce(net, self._prep(xv), yv, self.cfg.arch_samples, self.ce_baseline,
                                           self.cfg.baseline_decay, share=self.cfg.share_paths)
        if self.objective is not None:
            loss, details = self.objective(ce_sur, net.probs())
        else:
            loss, details = ce_sur, {"ce": stats["ce"]}
        self._check_finite(loss, "architecture loss", -1)
        alphas = net.arch_parameters()
        for a, g in zip(alphas, torch.autograd.grad(loss, alphas)):
            if self.trainer.world_size > 1:
                g = self.trainer.strategy.reduce(g, reduce_op="mean")
            a.grad = g.detach()
        ent = torch.tensor(list(net.entropies().values())).mean()
        return loss, dict(details, **stats, entropy=ent)

    def _unrolled_grads(self, x, y, xv, yv, w_opt) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Second-order DARTS: grad_alpha L_val(w - xi*grad_w L_train(w)), the mixed
        Hessian-vector product by double backward; leaves the result in ``alpha.grad``
        (all-reduced under DDP)."""
        net = self.supernet
        weights = [p for p in net.weight_parameters()]
        alphas = net.arch_parameters()
        xi = w_opt.param_groups[0]["lr"]
        wd = self.cfg.weight_decay
        backup = [p.detach().clone() for p in weights]
        with torch.enable_grad():
            for p in weights:
                p.requires_grad_(True)
            train_loss = F.cross_entropy(net(self._prep(x)), y)
            g_train = torch.autograd.grad(train_loss, weights, allow_unused=True)
            with torch.no_grad():
                for p, g in zip(weights, g_train):
                    if g is not None:
                        p.sub_(xi * (g + wd * p))
            loss, details = self.arch_loss(xv, yv)
            self._check_finite(loss, "architecture loss", -1)
            grads = torch.autograd.grad(loss, alphas + weights, allow_unused=True)
            d_alpha, d_w = grads[: len(alphas)], grads[len(alphas):]
            with torch.no_grad():
                for p, b in zip(weights, backup):
                    p.copy_(b)
            # the mixed second derivative times v = grad_w' L_val, exactly: d/d alpha of
            # (grad_w L_train(w, alpha) . v) by double backward. DARTS's central difference
            # (w +- eps v, eps = 0.01 / |v|) steps across the kinks of ReLU networks and can be
            # off by more than the term itself (tests/test_search.py checks this one).
            train_loss = F.cross_entropy(net(self._prep(x)), y)
            g_w = torch.autograd.grad(train_loss, weights, create_graph=True, allow_unused=True)
            dot = sum((g * v.detach()).sum() for g, v in zip(g_w, d_w) if g is not None and v is not None)
            hvp = (torch.autograd.grad(dot, alphas, allow_unused=True) if torch.is_tensor(dot) and dot.requires_grad
                   else [None] * len(alphas))
            for a, da, h in zip(alphas, d_alpha, hvp):
                grad = da if da is not None else torch.zeros_like(a)
                if h is not None:
                    grad = grad - xi * h
                if self.trainer.world_size > 1:
                    grad = self.trainer.strategy.reduce(grad, reduce_op="mean")
                a.grad = grad.detach()
        return loss, details

    def on_train_epoch_end(self) -> None:
        # the epoch means logged with on_epoch=True (already reduced across ranks)
        stats = {k[len("search/"):]: float(v) for k, v in self.trainer.callback_metrics.items()
                 if k.startswith("search/") and k.count("/") == 2}
        entry = {"epoch": int(self.current_epoch), "tau": self.supernet.tau, "alphas": self.supernet.alphas_dict(),
                 "entropy": self.supernet.entropies(), "argmax": self.supernet.derive().to_string(), "stats": stats}
        self.alpha_history.append(entry)
        self.log("search/tau", self.supernet.tau, on_step=False, on_epoch=True)

    # -- checkpoint state --------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["alpha_history"] = self.alpha_history
        checkpoint["rng_states"] = rng_state()
        checkpoint["space_id"] = self.space.space_id

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if checkpoint.get("space_id") not in (None, self.space.space_id):
            raise TrainingError(f"checkpoint belongs to space {checkpoint.get('space_id')}, this run's space is "
                                f"{self.space.space_id}; it cannot be resumed with this config")
        self.alpha_history = list(checkpoint.get("alpha_history", []))
        # checkpoints written before the reinforce relaxation have no moving-average baseline
        checkpoint.get("state_dict", {}).setdefault("ce_baseline", torch.tensor(float("nan")))
        if "rng_states" in checkpoint:
            set_rng_state(checkpoint["rng_states"])


# ------------------------------------------------------------------------------------------------
# The run's ``search`` stage
# ------------------------------------------------------------------------------------------------
def _new_module(ctx: "RunContext", objective: HardwareObjective) -> SearchModule:
    ctx.seed()  # the supernet's initial weights and alphas depend on the seed alone
    return SearchModule(ctx.space, ctx.cfg.search, objective, channels_last=ctx.cfg.trainer.fixed_channels_last())


def alpha_digest(module: SearchModule) -> str:
    """A digest of the architecture parameters (equal on every rank when DDP kept them in sync)."""
    h = hashlib.sha1()
    for a in module.supernet.arch_parameters():
        h.update(a.detach().cpu().double().numpy().tobytes())
    return h.hexdigest()[:16]


def search_stage(ctx: "RunContext", pending: bool) -> SearchModule | None:
    """Bi-level search on every rank (``pending``), or rank 0's reload of a finished one; None with
    ``--arch``. Writes ``alphas.json`` and ends with the ranks' architecture parameters compared."""
    from .data import HwnasDataModule, batches_done, data_path_report
    from .tracking import TrackingCallback

    objective = HardwareObjective(ctx.cfg.objective, ctx.model, ctx.targets)
    if ctx.fixed_arch:
        if ctx.leader and not ctx.state.done("search"):
            ctx.state.mark("search", 0.0, skipped=f"architecture given: {ctx.fixed_arch}")
        return None
    if not pending:
        return load_search_module(ctx, objective) if ctx.leader else None
    t0 = time.perf_counter()
    module = _new_module(ctx, objective)
    seconds, digests, data = 0.0, [alpha_digest(module)], None
    if ctx.cfg.search.epochs > 0:
        cbs = [TrackingCallback(ctx.tracker, ctx.path("plots"))] if ctx.tracker is not None else []
        trainer = ctx.trainer("search", ctx.cfg.search.epochs, ctx.cfg.search.steps_per_epoch, cbs)
        dm = HwnasDataModule(ctx.cfg.data, ctx.cfg.seed, mode="search")
        trainer.fit(module, datamodule=dm, ckpt_path=ctx.last_ckpt("search"))
        seconds = fit_seconds(trainer)
        if ctx.leader:
            data = data_path_report(dm.train_dataloader(), batches_done(trainer) * 2 * ctx.cfg.data.batch_size
                                    * ctx.ranks.world, seconds, "search", ctx.cfg.data.num_workers)
        digests = ctx.ranks.gather(alpha_digest(module))
        if len(set(digests)) > 1:
            raise TrainingError(f"the architecture parameters differ across ranks after the search ({digests}); "
                                "they are registered on the supernet so DDP keeps them in sync - report this")
    if not ctx.leader:
        return module
    save_alphas(ctx, module)
    ctx.state.mark("search", seconds if ctx.cfg.search.epochs > 0 else time.perf_counter() - t0,
                   epochs=ctx.cfg.search.epochs, argmax=module.supernet.derive().to_string(),
                   ranks=ctx.ranks.world, alpha_digests=digests, data_path=data)
    return module


def load_search_module(ctx: "RunContext", objective: HardwareObjective) -> SearchModule:
    """A finished search: its last checkpoint (``load_from_checkpoint``), or the seeded initial
    supernet when it ran zero epochs."""
    if ctx.cfg.search.epochs == 0:
        return _new_module(ctx, objective)
    ckpt = ctx.last_ckpt("search")
    if ckpt is None:
        raise RunDirError(f"stage 'search' is marked done but {ctx.run_dir}/checkpoints/search/last.ckpt is missing")
    return SearchModule.load_from_checkpoint(ckpt, map_location="cpu", objective=objective, weights_only=False)


def save_alphas(ctx: "RunContext", module: SearchModule) -> None:
    sn = module.supernet
    atomic_write_json(ctx.path("alphas.json"), {
        "space_id": ctx.space.space_id, "relaxation": ctx.cfg.search.relaxation, "final": sn.alphas_dict(),
        "entropy": sn.entropies(),
        "logits": {m.name: m.alpha.detach().cpu().tolist() for m in sn.mixed}, "argmax": sn.derive().to_string(),
        "history": module.alpha_history})
