from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hwnas_darts.supernet import MixedOp, SuperNet


def _count_calls(net):
    calls = {}
    hooks = []
    for m in net.mixed:
        for name, op in zip(m.candidates, m.ops):
            key = (m.name, name)
            calls[key] = 0

            def hook(mod, inp, out, key=key):
                calls[key] += 1

            hooks.append(op.register_forward_hook(hook))
    return calls, hooks


def test_parameter_groups_disjoint_and_complete(tiny_space):
    net = SuperNet(tiny_space)
    arch = {id(p) for p in net.arch_parameters()}
    weights = {id(p) for p in net.weight_parameters()}
    assert len(arch) == len(tiny_space.layers)
    assert not arch & weights
    assert arch | weights == {id(p) for p in net.parameters()}


def test_softmax_is_weighted_sum(tiny_space):
    torch.manual_seed(0)
    m = MixedOp(tiny_space.layers[1]).eval()
    with torch.no_grad():
        m.alpha.copy_(torch.randn_like(m.alpha))
    x = torch.randn(2, 16, 8, 8)
    w = F.softmax(m.alpha, -1)
    assert torch.allclose(w.sum(), torch.tensor(1.0))
    expected = sum(wi * op(x) for wi, op in zip(w, m.ops))
    assert torch.allclose(m(x, "softmax"), expected, atol=1e-6)


def test_reinforce_runs_one_candidate_per_layer(tiny_space):
    net = SuperNet(tiny_space, "reinforce").train()
    calls, hooks = _count_calls(net)
    net(torch.randn(4, 1, 16, 16))
    for m in net.mixed:
        ran = [k for k, v in calls.items() if k[0] == m.name and v]
        # skip is an nn.Identity and counts like any op
        assert len(ran) == 1, ran
    sampled = net.sampled_arch()
    assert all(calls[(l.name, op)] == 1 for l, op in zip(tiny_space.layers, sampled.ops))
    for h in hooks:
        h.remove()


def test_softmax_and_gumbel_run_every_candidate(tiny_space):
    for mode in ("softmax", "gumbel"):
        net = SuperNet(tiny_space, mode).train()
        calls, hooks = _count_calls(net)
        net(torch.randn(2, 1, 16, 16))
        assert all(v == 1 for v in calls.values())
        for h in hooks:
            h.remove()


@pytest.mark.parametrize("mode", ["softmax", "gumbel"])
def test_gradients_reach_alphas(tiny_space, mode):
    torch.manual_seed(1)
    net = SuperNet(tiny_space, mode, tau=1.0).train()
    loss = F.cross_entropy(net(torch.randn(8, 1, 16, 16)), torch.randint(0, 4, (8,)))
    loss.backward()
    for a in net.arch_parameters():
        assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


def test_fixed_arch_forward_and_derive(tiny_space):
    net = SuperNet(tiny_space).eval()
    arch = tiny_space.sample(4)
    assert net(torch.randn(2, 1, 16, 16), arch=arch).shape == (2, 4)
    with torch.no_grad():
        for m, op in zip(net.mixed, arch.ops):
            m.alpha[m.candidates.index(op)] = 5.0
    assert net.derive() == arch
    probs = net.alphas_dict()
    assert all(abs(sum(p.values()) - 1) < 1e-6 for p in probs.values())
    samples = net.sample_archs(20, torch.Generator().manual_seed(0))
    assert sum(s == arch for s in samples) >= 15  # the distribution is concentrated


def test_bad_inputs(tiny_space):
    with pytest.raises(ValueError, match="unknown relaxation"):
        SuperNet(tiny_space, "magic")
    m = MixedOp(tiny_space.layers[1])
    with pytest.raises(ValueError, match="out of range"):
        m(torch.randn(1, 16, 8, 8), index=99)
    with pytest.raises(ValueError, match="temperature"):
        m(torch.randn(1, 16, 8, 8), "gumbel", tau=0.0)


def test_reinforce_forward_has_no_gradient_path_and_samples_the_distribution(tiny_space):
    torch.manual_seed(0)
    net = SuperNet(tiny_space, "reinforce").train()
    with torch.no_grad():
        net.mixed[0].alpha.copy_(torch.tensor([2.0, 0.0, -1.0]))
    net(torch.randn(2, 1, 16, 16)).sum().backward()
    assert all(a.grad is None for a in net.arch_parameters())  # the policy gradient is the search module's
    assert any(w.grad is not None for w in net.weight_parameters())
    counts = torch.zeros(3)
    for _ in range(600):
        net(torch.randn(1, 1, 16, 16))
        counts[net.mixed[0].last_index] += 1
    p = net.mixed[0].probs().detach()
    assert torch.allclose(counts / 600, p, atol=4 * (p * (1 - p) / 600).sqrt().max())


@pytest.mark.parametrize("samples", [1, 4])
def test_policy_gradient_is_unbiased(tiny_space, samples):
    """The mean of many policy-gradient estimates matches the exact gradient of E_p[CE] (every path
    of the tiny space enumerated) within 4 standard errors, component by component."""
    import itertools

    from hwnas_darts.search import policy_gradient_ce

    torch.manual_seed(0)
    net = SuperNet(tiny_space, "reinforce").train()
    with torch.no_grad():
        for a in net.arch_parameters():
            a.normal_(0, 0.7)
    x, y = torch.randn(8, 1, 16, 16), torch.randint(0, 4, (8,))
    alphas = net.arch_parameters()
    sizes = [len(m.candidates) for m in net.mixed]
    with torch.no_grad():
        ce = {path: F.cross_entropy(net(x, indices=list(path)), y) for path in itertools.product(*map(range, sizes))}
    probs = net.probs()
    expected = sum(torch.stack([probs[i][k] for i, k in enumerate(path)]).prod() * v for path, v in ce.items())
    exact = torch.cat([g.flatten() for g in torch.autograd.grad(expected, alphas)])
    baseline = torch.tensor(float("nan"))
    draws = []
    for _ in range({1: 600, 4: 250}[samples]):
        sur, _ = policy_gradient_ce(net, x, y, samples, baseline, decay=0.9)
        draws.append(torch.cat([g.flatten() for g in torch.autograd.grad(sur, alphas)]))
    d = torch.stack(draws)
    if samples == 1:
        d = d[100:]  # the moving-average baseline settles first (a constant baseline adds no bias)
    se = d.std(0) / len(d) ** 0.5
    assert exact.abs().max() > 5 * se.max()  # the gradient stands out of the noise: the check has teeth
    assert ((d.mean(0) - exact).abs() <= 4 * se + 1e-6).all(), (d.mean(0), exact, se)


def test_uniform_weight_sampling_ignores_the_policy(tiny_space):
    torch.manual_seed(0)
    net = SuperNet(tiny_space, "reinforce", weight_sampling="uniform").train()
    with torch.no_grad():
        net.mixed[0].alpha.copy_(torch.tensor([8.0, 0.0, 0.0]))  # the policy all but certain of op 0
    counts = torch.zeros(3)
    for _ in range(300):
        net(torch.randn(1, 1, 16, 16))
        counts[net.mixed[0].last_index] += 1
    assert (counts > 60).all(), counts  # each op about 100 times
    with pytest.raises(ValueError, match="weight_sampling"):
        SuperNet(tiny_space, "reinforce", weight_sampling="fair")


def test_sandwich_paths_are_the_largest_the_smallest_and_uniform_ones(tiny_space):
    torch.manual_seed(0)
    net = SuperNet(tiny_space, "reinforce", weight_sampling="sandwich").train()
    largest_ops, smallest_ops, first_random = set(), set(), []
    for _ in range(40):
        paths = net.sandwich_paths(3)
        assert len(paths) == 5 and all(len(r) == len(net.mixed) for r in paths)
        for m, big, small in zip(net.mixed, paths[0], paths[1]):
            assert m.sizes[big] == max(m.sizes) and m.sizes[small] == min(m.sizes)
            largest_ops.add((m.name, m.candidates[big]))
            smallest_ops.add((m.name, m.candidates[small]))
        first_random.append(tuple(paths[2]))
    assert len(set(first_random)) > 10  # the random paths vary from step to step
    # an op offered with two activations shares its weights: both take their turn as the largest
    for m in net.mixed:
        tied = [c for c, s in zip(m.candidates, m.sizes) if s == max(m.sizes)]
        assert {c for n, c in largest_ops if n == m.name} == set(tied)
        tied_small = [c for c, s in zip(m.candidates, m.sizes) if s == min(m.sizes)]
        assert {c for n, c in smallest_ops if n == m.name} == set(tied_small)
    assert any(len([s for s in m.sizes if s == max(m.sizes)]) > 1 for m in net.mixed)  # ties exist: the check has teeth
    assert SuperNet(tiny_space, "reinforce", weight_sampling="sandwich").sandwich_paths(0)[2:] == []


def test_forward_paths_matches_separate_forwards_and_shares_prefixes(tiny_space):
    """Scoring several paths at once gives every path the logits a separate forward gives (training
    mode, the head's dropout drawing from the same random stream), and runs a shared prefix once."""
    torch.manual_seed(0)
    net = SuperNet(tiny_space, "reinforce").train()
    net.head.dropout = torch.nn.Dropout(0.5)  # randomness in the head: the order of the draws matters
    sizes = [len(m.candidates) for m in net.mixed]
    x = torch.randn(6, 1, 16, 16)
    rows = [[0] * len(sizes), [0] * len(sizes), [s - 1 for s in sizes], [0] * (len(sizes) - 1) + [sizes[-1] - 1]]
    with torch.no_grad():
        torch.manual_seed(1)
        separate = [net(x, indices=r) for r in rows]
        torch.manual_seed(1)
        calls, hooks = _count_calls(net)
        shared = net.forward_paths(x, rows)
        for h in hooks:
            h.remove()
    assert len(shared) == len(rows)
    for a, b in zip(separate, shared):
        assert torch.equal(a, b)
    assert not torch.equal(separate[0], separate[1])  # the dropout draws differ per path, as before
    # rows 0, 1 and 3 share layer 0's op 0; rows 0 and 1 share every layer
    assert calls[(net.mixed[0].name, net.mixed[0].candidates[0])] == 1
    assert calls[(net.mixed[-1].name, net.mixed[-1].candidates[0])] == 1
    assert sum(calls.values()) < len(rows) * len(sizes)
    assert [m.last_index for m in net.mixed] == rows[-1]
    with pytest.raises(ValueError, match="candidate indices"):
        net.forward_paths(x, [[0]])
