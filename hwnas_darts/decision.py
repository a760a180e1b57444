"""How decided a search is: per-layer entropy, near-ties, and where a network sits in the
final architecture distribution.

A search *decides* a layer when its distribution is concentrated: normalised entropy well below
1 (uniform) and a clear gap between the two most probable candidates. Derive's default candidates
are the argmax and its runner-up swaps in the layers that are *not* decided (top two within
``tie_margin``), so the returned network differs from the search's decision only where the search
left a near-tie; :func:`placement` states, per layer, the returned op's probability and rank.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch

if TYPE_CHECKING:
    from .space.arch import Arch
    from .space.space import SearchSpace

__all__ = ["normalized_entropy", "tied_layers", "near_tie_variants", "placement", "decision_summary"]


def normalized_entropy(probs: Sequence[float] | torch.Tensor) -> float:
    """Entropy of a categorical distribution divided by that of the uniform one over as many
    outcomes: 1.0 is uniform, 0.0 a single certain outcome (a layer with one candidate: 0)."""
    p = [float(v) for v in (probs.tolist() if torch.is_tensor(probs) else probs)]
    if len(p) < 2:
        return 0.0
    total = sum(p)
    if total <= 0 or any(v < 0 or not math.isfinite(v) for v in p):
        raise ValueError(f"not a distribution: {p}")
    h = -sum(v / total * math.log(v / total) for v in p if v > 0)
    return h / math.log(len(p))


def _top_two(p: torch.Tensor) -> list[int]:
    """The argmax (the first of equals, as ``argmax`` and derive pick it) and the most probable other candidate."""
    first = int(p.argmax())
    if len(p) < 2:
        return [first, first]
    rest = p.clone()
    rest[first] = -math.inf
    return [first, int(rest.argmax())]


def tied_layers(probs: Sequence[torch.Tensor], margin: float) -> list[int]:
    """Layers whose two most probable candidates are within ``margin`` of each other (undecided)."""
    out = []
    for i, p in enumerate(probs):
        if len(p) > 1:
            p = p.detach()
            a, b = _top_two(p)
            if float(p[a] - p[b]) <= margin:
                out.append(i)
    return out


def near_tie_variants(space: "SearchSpace", probs: Sequence[torch.Tensor], margin: float, limit: int) -> list["Arch"]:
    """The argmax with its runner-up op in some of the tied layers (every non-empty subset of at
    most 16 tied layers), the ``limit`` most probable, most probable first."""
    tied = tied_layers(probs, margin)[:16]
    if not tied or limit <= 0:
        return []
    p64 = [p.detach().double() for p in probs]
    top = [_top_two(p) for p in p64]
    cost = {i: math.log(max(float(p64[i][top[i][0]]), 1e-30)) - math.log(max(float(p64[i][top[i][1]]), 1e-30))
            for i in tied}
    subsets = sorted((sum(cost[tied[b]] for b in range(len(tied)) if mask >> b & 1), mask)
                     for mask in range(1, 2 ** len(tied)))
    out = []
    for _, mask in subsets[:limit]:
        idx = [t[0] for t in top]
        for b, i in enumerate(tied):
            if mask >> b & 1:
                idx[i] = top[i][1]
        out.append(space.from_indices(idx))
    return out


def placement(alphas: Mapping[str, Mapping[str, float]], ops: Sequence[str], margin: float = 0.1) -> list[dict[str, Any]]:
    """Per layer of the final distribution ``{layer: {op: probability}}``: normalised entropy, the
    most probable op and the runner-up with their probabilities, whether the layer is a near-tie
    (top two within ``margin``), and the given network's op there with its probability and rank
    (1 = the argmax)."""
    if len(ops) != len(alphas):
        raise ValueError(f"the network has {len(ops)} searchable layers, the distribution {len(alphas)}")
    rows = []
    for (layer, dist), op in zip(alphas.items(), ops):
        if op not in dist:
            raise ValueError(f"layer {layer}: op {op!r} is not among its candidates ({', '.join(dist)})")
        order = sorted(dist, key=lambda k: -dist[k])
        second = order[1] if len(order) > 1 else None
        p1, p2 = dist[order[0]], (dist[second] if second else 0.0)
        rows.append({"layer": layer, "entropy": normalized_entropy(list(dist.values())), "top": order[0], "p_top": p1,
                     "second": second, "p_second": p2, "tie": second is not None and p1 - p2 <= margin,
                     "op": op, "p_op": dist[op], "rank": order.index(op) + 1})
    return rows


def decision_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What :func:`placement` says in a few numbers: the largest and mean entropy, the layers where the
    network differs from the argmax, and whether each of those is a near-tie."""
    differs = [r["layer"] for r in rows if r["rank"] != 1]
    ent = [r["entropy"] for r in rows]
    return {"max_entropy": max(ent) if ent else 0.0, "mean_entropy": sum(ent) / len(ent) if ent else 0.0,
            "differs_from_argmax": differs,
            "differs_only_in_ties": all(r["tie"] for r in rows if r["rank"] != 1)}
