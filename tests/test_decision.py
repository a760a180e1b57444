"""How decided a search is: entropy, near-ties, placement of a network in the distribution."""

from __future__ import annotations

import math

import pytest
import torch

from hwnas_darts.config import DeriveConfig
from hwnas_darts.decision import decision_summary, near_tie_variants, normalized_entropy, placement, tied_layers
from hwnas_darts.derive import propose_candidates
from hwnas_darts.supernet import SuperNet


def test_normalized_entropy_known_values():
    assert normalized_entropy([0.25] * 4) == pytest.approx(1.0)
    assert normalized_entropy([1.0, 0.0, 0.0]) == pytest.approx(0.0)
    # p = (1/2, 1/4, 1/4): H = 1.5 ln 2, uniform over 3: ln 3
    assert normalized_entropy([0.5, 0.25, 0.25]) == pytest.approx(1.5 * math.log(2) / math.log(3))
    assert normalized_entropy([1.0]) == 0.0
    with pytest.raises(ValueError, match="not a distribution"):
        normalized_entropy([0.5, -0.5, 1.0])


def _net_with(space, logits):
    net = SuperNet(space)
    with torch.no_grad():
        for m, row in zip(net.mixed, logits):
            m.alpha.copy_(torch.tensor(row[: len(m.candidates)] + [-9.0] * (len(m.candidates) - len(row))))
    return net


def test_near_ties_and_their_variants(tiny_space):
    # layer 0 decided, layers 1 and 2 a near-tie between candidates 0 and 1 (p equal)
    net = _net_with(tiny_space, [[4.0, 0.0], [2.0, 2.0], [1.0, 1.0]])
    probs = net.probs()
    assert tied_layers(probs, 0.1) == [1, 2]
    variants = near_tie_variants(tiny_space, probs, 0.1, limit=10)
    assert len(variants) == 3  # {1}, {2}, {1, 2}
    argmax = net.derive()
    for v in variants:
        diff = [i for i, (a, b) in enumerate(zip(v.ops, argmax.ops)) if a != b]
        assert diff and set(diff) <= {1, 2}
    assert len(near_tie_variants(tiny_space, probs, 0.1, limit=1)) == 1
    assert len(near_tie_variants(tiny_space, probs, 0.0, limit=10)) == 3  # exact ties count at margin 0


def test_decision_candidates_stay_in_the_ties(tiny_space):
    net = _net_with(tiny_space, [[4.0, 0.0], [2.0, 2.0], [5.0, 0.0]])
    cands = propose_candidates(net, DeriveConfig(candidates="decision", constrained=False), seed=0)
    argmax = net.derive()
    assert cands[0].arch == argmax and cands[0].sources == ["argmax"]
    assert len(cands) == 2 and cands[1].sources == ["near-tie"]
    assert [i for i, (a, b) in enumerate(zip(cands[1].arch.ops, argmax.ops)) if a != b] == [1]
    # a decided distribution: the argmax alone
    decided = _net_with(tiny_space, [[6.0], [6.0], [6.0]])
    assert len(propose_candidates(decided, DeriveConfig(candidates="decision", constrained=False), seed=0)) == 1


def test_placement_and_summary(tiny_space):
    net = _net_with(tiny_space, [[3.0, 0.0], [2.0, 2.0], [5.0, 0.0]])
    alphas = net.alphas_dict()
    argmax = net.derive()
    rows = placement(alphas, argmax.ops)
    assert [r["rank"] for r in rows] == [1, 1, 1]
    assert [r["tie"] for r in rows] == [False, True, False]
    assert rows[0]["entropy"] == pytest.approx(normalized_entropy(list(alphas[rows[0]["layer"]].values())))
    ops = list(argmax.ops)
    ops[1] = rows[1]["second"]
    s = decision_summary(placement(alphas, ops))
    assert s["differs_from_argmax"] == [rows[1]["layer"]] and s["differs_only_in_ties"]
    ops[0] = rows[0]["second"]
    assert not decision_summary(placement(alphas, ops))["differs_only_in_ties"]
    with pytest.raises(ValueError, match="not among its candidates"):
        placement(alphas, ["nope"] * len(ops))
    with pytest.raises(ValueError, match="searchable layers"):
        placement(alphas, ops[:1])
