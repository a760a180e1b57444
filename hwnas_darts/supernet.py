"""The weight-sharing supernet: one :class:`MixedOp` per searchable layer.

Three relaxations of the categorical choice per layer:

* ``softmax`` (DARTS): every candidate runs, outputs weighted by ``softmax(alpha)``;
* ``gumbel`` (FBNet): every candidate runs, weighted by a Gumbel-softmax sample at temperature
  ``tau`` (annealed by the search);
* ``reinforce`` (TuNAS; the default): one candidate is sampled from ``softmax(alpha)`` and only it
  runs, so a step costs what one subnet costs; the forward pass has no gradient path to alpha.
  The search module scores several sampled paths on one validation batch and moves alpha by the
  policy gradient (:func:`hwnas_darts.search.policy_gradient_ce`). With ``weight_sampling="uniform"``
  the weight steps train uniformly sampled paths instead of the policy's (every op as often, as in
  SPOS/FairNAS), so the policy compares ops trained alike; ``weight_sampling="sandwich"`` (BigNAS's
  sandwich rule) trains the largest path, the smallest and uniform ones in every step
  (:meth:`SuperNet.sandwich_paths`; in-place distillation in :class:`hwnas_darts.search.SearchModule`).

``single_path`` (one sampled path with the straight-through gate ``1 + p_k - sg(p_k)``) was the
earlier default and is gone: its gradient does not estimate the loss's (docs/BENCHMARKS.md section
11), and a config that names it gets ``reinforce``.

The architecture parameters are ``nn.Parameter``s on the MixedOps (so on the supernet, which
keeps them identical across DDP ranks); :meth:`SuperNet.arch_parameters` and
:meth:`SuperNet.weight_parameters` split the two groups for the two optimizers.
"""

from __future__ import annotations

import typing
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .decision import normalized_entropy
from .network import build_layer
from .sections import Relaxation, WeightSampling
from .space.arch import Arch, Scale
from .space.ops import build_op, parse_op
from .space.space import LayerSpec, SearchSpace

__all__ = ["MixedOp", "SuperNet", "RELAXATIONS", "WEIGHT_SAMPLING"]

#: the relaxations a MixedOp implements: the ``search.relaxation`` choices of the config
RELAXATIONS: tuple[str, ...] = typing.get_args(Relaxation)
#: which paths the weight steps of the reinforce relaxation train: the ``search.weight_sampling`` choices
WEIGHT_SAMPLING: tuple[str, ...] = typing.get_args(WeightSampling)


def _check_relaxation(mode: str) -> str:
    if mode not in RELAXATIONS:
        raise ValueError(f"unknown relaxation {mode!r}; choose one of {', '.join(RELAXATIONS)}")
    return mode


def _tie_parameters(src: nn.Module, dst: nn.Module) -> None:
    """Make ``dst`` use ``src``'s parameters (same structure); buffers stay separate."""
    src_params = dict(src.named_parameters())
    for name, _ in list(dst.named_parameters()):
        *path, attr = name.split(".")
        owner = dst
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, attr, src_params[name])


class MixedOp(nn.Module):
    """All candidate ops of one layer and their architecture logits ``alpha``.

    With ``share_act_weights`` (the default), candidates that differ only in their activation
    (``mb_k3_e3_relu`` / ``mb_k3_e3_swish``) share their convolution and BN parameters (each
    keeps its own BN running statistics): the activation is then a choice on top of shared
    weights, and every structure is trained twice as often when one path is sampled per step.
    """

    def __init__(self, layer: LayerSpec, share_act_weights: bool = True):
        super().__init__()
        self.name = layer.name
        self.candidates = tuple(layer.candidates)
        self.ops = nn.ModuleList(build_op(op, layer.c_in, layer.c_out, layer.stride) for op in self.candidates)
        if share_act_weights:
            first: dict[tuple, nn.Module] = {}
            for name, op in zip(self.candidates, self.ops):
                spec = parse_op(name)
                key = (spec.family, spec.params)
                if key in first:
                    _tie_parameters(first[key], op)
                else:
                    first[key] = op
        self.alpha = nn.Parameter(torch.zeros(len(self.candidates)))
        self.last_index: int | None = None
        #: trainable parameters of each candidate (shared ones counted for each sharer): its size
        self.sizes = tuple(sum(p.numel() for p in op.parameters()) for op in self.ops)

    def probs(self) -> torch.Tensor:
        """The categorical distribution ``softmax(alpha)`` (differentiable)."""
        return F.softmax(self.alpha, dim=-1)

    def forward(self, x: torch.Tensor, mode: str = "softmax", tau: float = 1.0, index: int | None = None) -> torch.Tensor:
        if index is not None:  # a fixed choice (candidate evaluation)
            if not 0 <= index < len(self.ops):
                raise ValueError(f"{self.name}: candidate index {index} out of range (0..{len(self.ops) - 1})")
            self.last_index = index
            return self.ops[index](x)
        if tau <= 0:
            raise ValueError(f"temperature must be > 0, got {tau}")
        if len(self.ops) == 1:
            self.last_index = 0
            return self.ops[0](x)
        if mode == "softmax":
            w = self.probs()
            return sum(wi * op(x) for wi, op in zip(w, self.ops))
        if not self.training:  # deterministic evaluation of the stochastic relaxations: argmax path
            k = int(self.alpha.argmax())
            self.last_index = k
            return self.ops[k](x)
        if mode == "gumbel":
            w = F.gumbel_softmax(self.alpha, tau=tau, hard=False)
            return sum(wi * op(x) for wi, op in zip(w, self.ops))
        if mode in ("reinforce", "uniform"):  # a sample of the policy (or of the uniform distribution)
            with torch.no_grad():
                k = int(torch.multinomial(self.probs(), 1)) if mode == "reinforce" else int(torch.randint(len(self.ops), ()))
            self.last_index = k
            return self.ops[k](x)
        raise ValueError(f"unknown relaxation {mode!r}")

    def export(self) -> str:
        """The most likely op."""
        return self.candidates[int(self.alpha.detach().argmax())]

    def export_probs(self) -> dict[str, float]:
        """Probability of each candidate."""
        p = self.probs().detach().cpu().tolist()
        return dict(zip(self.candidates, p))


class SuperNet(nn.Module):
    """Stem, one MixedOp per searchable layer, head; the relaxation and temperature are attributes."""

    def __init__(self, space: SearchSpace, relaxation: str = "reinforce", tau: float = 1.0,
                 share_act_weights: bool = True, weight_sampling: str = "policy"):
        super().__init__()
        if weight_sampling not in WEIGHT_SAMPLING:
            raise ValueError(f"weight_sampling must be one of {', '.join(WEIGHT_SAMPLING)}, got {weight_sampling!r}")
        self.space = space
        self.relaxation = _check_relaxation(relaxation)
        self.tau = float(tau)
        #: reinforce: the path a training-mode forward samples (the policy's, or uniform: every path as often)
        self.weight_sampling = weight_sampling
        base = space.plan(Arch(tuple(l.candidates[0] for l in space.layers), Scale(), space.space_id))
        self.stem = nn.Sequential(*(build_layer(p) for p in base if p.role == "stem"))
        self.mixed = nn.ModuleList(MixedOp(l, share_act_weights) for l in space.layers)
        self.head = build_layer(next(p for p in base if p.role == "head"))

    # -- parameter groups ---------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture logits, one tensor per searchable layer."""
        return [m.alpha for m in self.mixed]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every other parameter (what the weight optimizer updates)."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    # -- forward ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, arch: Arch | None = None, indices: Sequence[int] | None = None) -> torch.Tensor:
        """Relaxed forward, or the subnet of ``arch`` (or of candidate ``indices``, one per layer) when given."""
        if arch is not None:
            indices = self.space.index_of(arch)
        elif indices is None:
            indices = [None] * len(self.mixed)
        elif len(indices) != len(self.mixed):
            raise ValueError(f"{len(indices)} candidate indices for {len(self.mixed)} searchable layers")
        mode = self.relaxation
        if mode == "reinforce" and self.weight_sampling != "policy" and self.training:
            mode = "uniform"
        x = self.stem(x)
        for m, idx in zip(self.mixed, indices):
            x = m(x, mode, self.tau, idx)
        return self.head(x)

    def forward_paths(self, x: torch.Tensor, paths: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """The logits of several subnets (candidate ``indices`` per layer, one row per path) on one batch.

        The same as ``[self(x, indices=row) for row in paths]``, with the computation the paths
        share done once: the stem runs once, and the paths are grouped layer by layer into a tree
        (paths that took the same ops so far share one activation), evaluated depth first. A
        decided distribution's samples are mostly one path, so scoring ``k`` of them costs little
        more than one forward. The head runs once per path, in row order, so a dropout in it draws
        the same random numbers as separate forwards would, and every logit is the same. Only the
        BatchNorm running statistics (training mode) differ: a shared layer updates them once per
        batch instead of once per path that runs it.
        """
        rows = [list(r) for r in paths]
        for r in rows:
            if len(r) != len(self.mixed):
                raise ValueError(f"{len(r)} candidate indices for {len(self.mixed)} searchable layers")
        feats: list[torch.Tensor | None] = [None] * len(rows)

        def grow(h: torch.Tensor, depth: int, members: list[int]) -> None:
            if depth == len(self.mixed):
                for i in members:
                    feats[i] = h
                return
            groups: dict[int, list[int]] = {}
            for i in members:
                groups.setdefault(rows[i][depth], []).append(i)
            for op, group in groups.items():
                grow(self.mixed[depth](h, self.relaxation, self.tau, op), depth + 1, group)

        if rows:
            grow(self.stem(x), 0, list(range(len(rows))))
            for m, i in zip(self.mixed, rows[-1]):  # as after the last of separate forwards
                m.last_index = i
        return [self.head(f) for f in feats]

    def sandwich_paths(self, k: int, generator: torch.Generator | None = None) -> list[list[int]]:
        """The sandwich rule's paths of one weight step: the largest (per layer the candidate with
        the most parameters), the smallest (the fewest) and ``k`` uniformly sampled ones, as
        candidate indices per layer. Ties - candidates that differ only in their activation - are
        broken at random, so every activation takes its turn in the extreme paths."""
        def pick(m: MixedOp, best: int) -> int:
            tied = [i for i, s in enumerate(m.sizes) if s == best]
            return tied[int(torch.randint(len(tied), (), generator=generator))]
        largest = [pick(m, max(m.sizes)) for m in self.mixed]
        smallest = [pick(m, min(m.sizes)) for m in self.mixed]
        rand = [[int(torch.randint(len(m.ops), (), generator=generator)) for m in self.mixed] for _ in range(k)]
        return [largest, smallest, *rand]

    # -- architecture distribution ------------------------------------------------------------
    def probs(self) -> list[torch.Tensor]:
        """Differentiable per-layer candidate probabilities ``softmax(alpha)``."""
        return [m.probs() for m in self.mixed]

    def sampled_arch(self) -> Arch:
        """The subnet the last sampled (``reinforce``) forward ran."""
        idx = [m.last_index if m.last_index is not None else 0 for m in self.mixed]
        return self.space.from_indices(idx)

    def derive(self) -> Arch:
        """The argmax architecture."""
        return Arch(tuple(m.export() for m in self.mixed), Scale(), self.space.space_id)

    def alphas_dict(self) -> dict[str, dict[str, float]]:
        """``{layer name: {op: probability}}``."""
        return {m.name: m.export_probs() for m in self.mixed}

    def sample_indices(self, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``k`` paths sampled independently per layer from ``softmax(alpha)``: a ``(k, layers)`` long tensor."""
        with torch.no_grad():
            return torch.stack([torch.multinomial(p.detach().cpu(), k, replacement=True, generator=generator)
                                for p in self.probs()], dim=1)

    def log_prob(self, indices: torch.Tensor, layers: Sequence[int] | None = None) -> torch.Tensor:
        """Differentiable log-probability of each path of a ``(k, layers)`` index tensor under
        ``softmax(alpha)`` (summed over ``layers`` only, when given)."""
        which = range(len(self.mixed)) if layers is None else layers
        logp = [F.log_softmax(self.mixed[i].alpha, dim=-1)[indices[:, i].to(self.mixed[i].alpha.device)] for i in which]
        return torch.stack(logp, dim=1).sum(dim=1)

    def entropies(self) -> dict[str, float]:
        """Normalised entropy of each layer's distribution: 1 = uniform, 0 = decided (:func:`~hwnas_darts.decision.normalized_entropy`)."""
        return {m.name: normalized_entropy(m.probs().detach()) for m in self.mixed}

    def sample_archs(self, k: int, generator: torch.Generator | None = None) -> list[Arch]:
        """``k`` architectures sampled independently per layer from ``softmax(alpha)``."""
        out = []
        with torch.no_grad():
            probs = [p.detach().cpu() for p in self.probs()]
            for _ in range(k):
                idx = [int(torch.multinomial(p, 1, generator=generator)) for p in probs]
                out.append(self.space.from_indices(idx))
        return out

    def extra_repr(self) -> str:
        return f"relaxation={self.relaxation}, tau={self.tau:g}, space={self.space.space_id}"
