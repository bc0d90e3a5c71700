"""Hand-computed checks of every piece of RLUR's maths (paper §3) and of the ranking function."""

import math

import pytest
import torch

from rlur.agents.networks import gaussian_log_prob
from rlur.agents.rlur import (
    RLURConfig,
    candidate_pull,
    explore_candidates,
    immediate_reward,
    normalised_return,
    rnd_error,
    session_discount,
    soft_regularisation_weight,
    td_target,
)
from rlur.sim.ranking import action_to_weights, fuse_and_rank, fusion_scores


def test_session_discount_is_one_inside_and_gamma_at_the_boundary():
    end = torch.tensor([False, False, True, False])
    assert session_discount(end, 0.95).tolist() == pytest.approx([1.0, 1.0, 0.95, 1.0])


def test_td_target_across_a_session_boundary():
    # A 3-request session then the first request of the next one; r = −T at the last request.
    # Inside the session: y = 0 + 1·Q'(s'); at the boundary: y = −T + γ·Q'(s'_next_session).
    reward = torch.tensor([0.0, 0.0, -2.0])
    end = torch.tensor([False, False, True])
    next_q = torch.tensor([-5.0, -4.0, -3.0])
    y = td_target(reward, session_discount(end, 0.95), next_q)
    assert y.tolist() == pytest.approx([-5.0, -4.0, -2.0 + 0.95 * -3.0])


def test_td_target_infinite_horizon_fixed_point():
    # One request per session, constant return time T: Q = −T / (1 − γ) solves y = Q.
    gamma, t = 0.9, 2.0
    q = torch.tensor([-t / (1 - gamma)])
    y = td_target(torch.tensor([-t]), session_discount(torch.tensor([True]), gamma), q)
    assert y.item() == pytest.approx(q.item())


def test_td_target_gamma_zero_stops_at_the_session():
    y = td_target(torch.tensor([-1.5]), session_discount(torch.tensor([True]), 0.0), torch.tensor([-100.0]))
    assert y.item() == pytest.approx(-1.5)


def test_normalised_return_by_hand():
    t = torch.tensor([1.0, 2.0, 4.0, 0.5])
    p = torch.tensor([0.5, 0.5, 0.0, 0.8])
    # T / ((1 − p) · T_β) with T_β = 2: 1/(0.5·2)=1, 2/(0.5·2)=2, 4/(1·2)=2, 0.5/(0.2·2)=1.25
    assert normalised_return(t, p, 2.0, alpha=3.0).tolist() == pytest.approx([1.0, 2.0, 2.0, 1.25])


def test_normalised_return_clips_at_alpha_and_zero():
    t = torch.tensor([10.0, 0.0])
    p = torch.tensor([0.0, 0.3])
    assert normalised_return(t, p, 1.0, alpha=3.0).tolist() == pytest.approx([3.0, 0.0])


def test_normalised_return_when_classifier_is_certain():
    # T'(x) → 1: the Markov bound → 0, the reward saturates at α and stays finite.
    out = normalised_return(torch.tensor([0.1, 1e-9]), torch.tensor([1.0, 1.0]), 1.0, alpha=3.0)
    assert torch.isfinite(out).all()
    assert out[0].item() == pytest.approx(3.0)


def test_rnd_error_is_squared_distance():
    pred = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    target = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert rnd_error(pred, target).tolist() == pytest.approx([5.0, 25.0])


def test_rnd_predictor_learns_visited_states_and_not_novel_ones():
    torch.manual_seed(0)
    from rlur.agents.networks import mlp

    target, predictor = mlp(4, 8, (16,)).requires_grad_(False), mlp(4, 8, (16,))
    opt = torch.optim.Adam(predictor.parameters(), lr=1e-2)
    seen = torch.randn(256, 4)
    novel = torch.randn(256, 4) * 3 + 5
    before = rnd_error(predictor(seen), target(seen)).mean().item()
    for _ in range(300):
        loss = rnd_error(predictor(seen), target(seen)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after_seen = rnd_error(predictor(seen), target(seen)).mean().item()
    after_novel = rnd_error(predictor(novel), target(novel)).mean().item()
    assert after_seen < 0.2 * before
    assert after_novel > 5 * after_seen  # novel states keep a large intrinsic reward


def test_soft_regularisation_weight_by_hand():
    logp = torch.tensor([0.0, -1.0, 1.0])
    logp_b = torch.tensor([0.0, 0.0, 0.0])
    raw = soft_regularisation_weight(logp, logp_b, lam=1.5, cap=None, normalise=False)
    # exp(max(1.5·Δ, 0)): Δ=0 → 1; Δ=−1 → exp(0) = 1; Δ=1 → exp(1.5)
    assert raw.tolist() == pytest.approx([1.0, 1.0, math.exp(1.5)])
    norm = soft_regularisation_weight(logp, logp_b, lam=1.5, cap=None, normalise=True)
    assert norm.mean().item() == pytest.approx(1.0)
    capped = soft_regularisation_weight(logp, logp_b, lam=1.5, cap=1.5, normalise=True)
    assert capped.max().item() == pytest.approx(1.5)


def test_soft_regularisation_weight_has_no_gradient():
    logp = torch.tensor([0.5, -0.5], requires_grad=True)
    w = soft_regularisation_weight(logp, torch.zeros(2))
    assert not w.requires_grad


def test_gaussian_log_prob_matches_torch_distributions():
    mu, std = torch.tensor([[0.1, -0.2]]), torch.tensor([[0.3, 0.5]])
    a = torch.tensor([[0.0, 0.4]])
    expected = torch.distributions.Normal(mu, std).log_prob(a).sum(-1)
    assert gaussian_log_prob(a, mu, std).item() == pytest.approx(expected.item(), rel=1e-6)


def test_immediate_reward_by_hand():
    # watch 300 s, click 3, long_view 3, like 1, follow 1, comment 0, forward 0, profile 0, hate 1
    fb = torch.tensor([[300.0, 3, 3, 1, 1, 0, 0, 0, 1], [162.34, 6, 4, 2, 0, 1, 1, 5, 0]])
    # The paper's: watch / 81.17 s (KuaiRand-Pure's median duration) + like + follow + comment + forward.
    assert immediate_reward(fb).tolist() == pytest.approx([300.0 / 81.17 + 2.0, 2.0 + 4.0])
    assert immediate_reward(fb, "paper").tolist() == immediate_reward(fb).tolist()
    # The first release's: watch / 300 s + long_view / 6 + the four interactions − 2·hate.
    assert immediate_reward(fb, "hand-weighted").tolist() == pytest.approx(
        [1.0 + 0.5 + 2.0 - 2.0, 162.34 / 300 + 4 / 6 + 4.0])


def test_immediate_reward_rejects_an_unknown_heuristic():
    with pytest.raises(ValueError, match="unknown heuristic 'watch'"):
        immediate_reward(torch.zeros(1, 9), "watch")
    with pytest.raises(ValueError, match="heuristic must be one of paper, hand-weighted"):
        RLURConfig(heuristic="watch")


def test_saved_configs_from_before_the_heuristic_load_as_hand_weighted():
    legacy = {**RLURConfig().to_dict(), "watch_scale": 300.0}
    del legacy["heuristic"]
    assert RLURConfig.from_dict(legacy) == RLURConfig(heuristic="hand-weighted")
    assert RLURConfig.from_dict(RLURConfig().to_dict()) == RLURConfig()  # the paper's, by default
    with pytest.raises(ValueError, match="watch_scale 100"):
        RLURConfig.from_dict({**legacy, "watch_scale": 100.0})


def test_action_to_weights_maps_the_box():
    a = torch.tensor([[-1.0, 0.0, 1.0, 5.0]])
    assert action_to_weights(a, 4.0).tolist() == [[0.0, 2.0, 4.0, 4.0]]


def test_fusion_score_and_top6_by_hand():
    # 8 candidates, k = 2: score = 1·x0 + 3·x1
    scores = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 0.5], [5.0, 0.0],
                            [0.0, 2.0], [0.1, 0.1], [0.2, 0.0]]])
    w = torch.tensor([[1.0, 3.0]])
    assert fusion_scores(w, scores).tolist()[0] == pytest.approx([1, 3, 2, 1.5, 5, 6, 0.4, 0.2])
    assert fuse_and_rank(w, scores, 6).tolist() == [[5, 4, 1, 2, 3, 0]]


def test_fuse_and_rank_needs_enough_candidates():
    with pytest.raises(ValueError):
        fuse_and_rank(torch.ones(1, 2), torch.ones(1, 3, 2), 6)


def test_candidate_pull_by_hand():
    # V(s, a) = −‖a − t(s)‖²: the best of three candidates is the one nearest t(s).
    candidates = torch.tensor([[0.0, 0.0], [1.0, -1.0], [-1.0, 1.0]])
    target = torch.tensor([[0.9, -0.9], [0.1, 0.0]])
    obs = target.clone()  # the "state" carries its own target

    def value(o, a):
        return -(a - o).pow(2).sum(-1)

    # Row 0: μ = (−1, 1) is worse than the candidate (1, −1): pulled by ‖μ − c*‖² = 8.
    # Row 1: μ = (0.1, 0) is better than every candidate (V = 0 > −0.01): no pull.
    mu = torch.tensor([[-1.0, 1.0], [0.1, 0.0]], requires_grad=True)
    pull = candidate_pull(value, obs, mu, candidates)
    assert pull.tolist() == pytest.approx([8.0, 0.0])
    pull.sum().backward()
    assert mu.grad.flatten().tolist() == pytest.approx([-4.0, 4.0, 0.0, 0.0])  # 2 (μ − c*), towards c*


def test_candidate_pull_gradient_reaches_only_mu():
    critic = torch.nn.Linear(4, 1)
    candidates = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    obs, mu = torch.randn(6, 2), torch.zeros(6, 2, requires_grad=True)
    pull = candidate_pull(lambda o, a: critic(torch.cat((o, a), -1)).squeeze(-1), obs, mu, candidates)
    pull.sum().backward()
    assert critic.weight.grad is None and mu.grad is not None


def test_explore_candidates_replaces_the_given_share_by_candidates():
    candidates = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0]])
    action = torch.full((4000, 3), 0.25)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(explore_candidates(action, candidates, 0.0, g), action)
    everyone = explore_candidates(action, candidates, 1.0, g)
    assert ((everyone[:, None] == candidates[None]).all(-1).any(-1)).all()
    mixed = explore_candidates(action, candidates, 0.2, torch.Generator().manual_seed(1))
    replaced = (mixed != action).any(-1).float().mean().item()
    assert replaced == pytest.approx(0.2, abs=0.03)  # binomial sd 0.006
    again = explore_candidates(action, candidates, 0.2, torch.Generator().manual_seed(1))
    assert torch.equal(mixed, again)


def test_exploration_schedule_anneals_over_80_percent_of_the_budget_or_the_steps_given():
    from rlur.training.loop import TrainConfig

    cfg = TrainConfig(algo="rlur-naive", steps=1000)  # σ from 0.3 to 0.05 over the first 800 steps
    assert cfg.explore_std(0) == pytest.approx(0.3)
    assert cfg.explore_std(400) == pytest.approx(0.175)
    assert cfg.explore_std(800) == pytest.approx(0.05) and cfg.explore_std(1000) == pytest.approx(0.05)
    short = TrainConfig(algo="rlur-naive", steps=19200, explore_anneal_steps=960)  # the 1,200-step schedule
    assert short.explore_std(480) == pytest.approx(0.175) and short.explore_std(5000) == pytest.approx(0.05)
    assert TrainConfig.from_dict(short.to_dict()).explore_anneal_steps == 960
    with pytest.raises(ValueError, match="explore_anneal_steps must be positive"):
        TrainConfig(algo="rlur-naive", explore_anneal_steps=0)
