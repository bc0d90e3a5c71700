"""The faster network paths compute what the plain ones do (issue #34: faster updates, the same maths)."""

import copy

import torch

from rlur.agents.networks import EnsembleMLP, GroupedMLP, QCritic, polyak_update

OBS, K, G, B = 12, 3, 4, 64


def _rows(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(B, OBS, generator=g)
    action = torch.rand(B, K, generator=g) * 2 - 1
    group = torch.randint(0, G, (B,), generator=g)
    group[:3] = torch.tensor([3, 0, 3])  # unsorted, repeated groups at the front
    return obs, action, group


def test_grouped_mlp_runs_each_row_through_its_own_groups_net_only():
    torch.manual_seed(0)
    net = GroupedMLP(OBS, K, G, (16, 16))
    obs, _, group = _rows()
    every = net.nets(obs)  # (G, B, K): every net on every row
    expected = every[group, torch.arange(B)]
    torch.testing.assert_close(net(obs, group), expected, rtol=1e-6, atol=1e-7)
    # Row by row by hand: row 1 (group 0) through net 0 alone.
    torch.testing.assert_close(net(obs, group)[1], net.nets.member(obs[1:2], 0)[0], rtol=1e-6, atol=1e-7)


def test_grouped_mlp_gradients_match_the_every_net_path():
    torch.manual_seed(0)
    net = GroupedMLP(OBS, K, G, (16,))
    obs, _, group = _rows(1)
    group[group == 2] = 1  # one group absent from the batch: its net gets zero gradient
    weight = torch.randn(B, K)
    (net(obs, group) * weight).sum().backward()
    fast = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    (net.nets(obs)[group, torch.arange(B)] * weight).sum().backward()
    for a, b in zip(fast, net.parameters(), strict=True):
        torch.testing.assert_close(a, b.grad, rtol=1e-5, atol=1e-6)
    assert all(torch.count_nonzero(p.grad[2]) == 0 for p in net.parameters())


def test_first_twin_alone_equals_the_twins_first_value():
    torch.manual_seed(0)
    obs, action, group = _rows(2)
    for n_groups in (1, G):
        critic = QCritic(OBS, K, (16, 16), n_groups)
        q1, _ = critic(obs, action, group)
        torch.testing.assert_close(critic.q1(obs, action, group), q1, rtol=1e-6, atol=1e-6)


def test_member_equals_the_ensembles_member():
    torch.manual_seed(0)
    ens = EnsembleMLP(3, OBS, 2, (8,))
    obs, _, _ = _rows(3)
    torch.testing.assert_close(ens.member(obs, 2), ens(obs)[2], rtol=1e-6, atol=1e-6)


def test_polyak_update_is_the_per_tensor_rule_bit_for_bit():
    torch.manual_seed(0)
    source, target = GroupedMLP(OBS, K, G, (8,)), GroupedMLP(OBS, K, G, (8,))
    expected = copy.deepcopy(target)
    with torch.no_grad():
        for t, s in zip(expected.parameters(), source.parameters(), strict=True):
            t.mul_(1 - 0.005).add_(s, alpha=0.005)
    polyak_update(target, source, 0.005)
    for a, b in zip(target.parameters(), expected.parameters(), strict=True):
        assert torch.equal(a, b)
    # By hand on one entry: θ' ← 0.995 θ' + 0.005 θ.
    t0, s0 = torch.tensor([2.0]), torch.tensor([4.0])
    t0m, s0m = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        t0m.weight.copy_(t0.view(1, 1))
        s0m.weight.copy_(s0.view(1, 1))
    polyak_update(t0m, s0m, 0.005)
    torch.testing.assert_close(t0m.weight.view(1), torch.tensor([2.01]))


def test_actor_only_backward_gives_the_actor_the_full_backwards_gradient():
    from rlur.agents.rlur import RLURAgent, RLURConfig
    from rlur.sim.env import OBS_DIM

    torch.manual_seed(0)
    agent = RLURAgent(OBS_DIM, 8, G, RLURConfig())
    obs, group = torch.randn(B, OBS_DIM), torch.randint(0, G, (B,))
    mu, _ = agent.actor(obs, group)
    loss = -agent.actor_objective(obs, mu, group).mean()
    loss.backward(inputs=list(agent.actor.parameters()))
    only = [p.grad.clone() for p in agent.actor.parameters()]
    assert all(p.grad is None for p in agent.critic_t.parameters())
    agent.actor.zero_grad()
    mu, _ = agent.actor(obs, group)
    full = -(agent.critic_t(obs, mu, group)[0] + agent.config.beta_immediate * agent.critic_i(obs, mu, group)[0])
    full.mean().backward()
    for a, p in zip(only, agent.actor.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-5, atol=1e-7)


def test_quantile_is_torch_quantile_bit_for_bit():
    from rlur.agents.rlur import quantile

    # By hand: 0.6 of [1, 2, 3, 4, 5, 6] sits at rank 0.6 · 5 = 3 → 4; of [4, 1, 3, 2] at rank 1.8 → 2.8.
    assert quantile(torch.tensor([6.0, 1, 5, 2, 4, 3]), 0.6) == 4.0
    assert abs(quantile(torch.tensor([4.0, 1, 3, 2]), 0.6) - 2.8) < 1e-6
    assert quantile(torch.tensor([7.0]), 0.6) == 7.0
    g = torch.Generator().manual_seed(0)
    for n in (2, 3, 17, 1000, 20_000):
        x = (torch.rand(n, generator=g) * 5).round(decimals=1)  # with ties
        for q in (0.0, 0.33, 0.6, 0.9, 1.0):
            assert quantile(x, q) == float(torch.quantile(x, q)), (n, q)
