"""Conformance tests applied to every learning agent, plus RLUR-specific invariants."""

import copy
import dataclasses

import pytest
import torch

from rlur.agents.cem import CEMConfig, CEMSearch
from rlur.agents.rlur import RLURAgent, RLURConfig, rnd_error
from rlur.agents.td3 import TD3Agent
from rlur.sim.env import OBS_DIM, RetentionEnv
from rlur.sim.world import BEHAVIOURS, WorldConfig
from rlur.training.buffer import Batch, DelayedReturnCollector, ReplayBuffer

K, G = 8, 4
SMALL = WorldConfig(n_videos=400, n_candidates=40)


def random_batch(n: int = 64, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    end = torch.rand(n, generator=g) < 0.3
    return Batch(
        obs=torch.randn(n, OBS_DIM, generator=g), action=torch.rand(n, K, generator=g) * 2 - 1,
        behaviour_mu=torch.zeros(n, K), behaviour_std=torch.full((n, K), 0.3),
        behaviour_logp=torch.randn(n, generator=g) - 2, feedback=torch.rand(n, 1 + len(BEHAVIOURS), generator=g) * 3,
        session_end=end, return_time=torch.where(end, torch.rand(n, generator=g) * 5, 0.0),
        next_obs=torch.randn(n, OBS_DIM, generator=g), group=torch.randint(0, G, (n,), generator=g),
    )


AGENTS = {
    "rlur": lambda: RLURAgent(OBS_DIM, K, G, RLURConfig(policy_delay=1)),
    "rlur-candidates": lambda: RLURAgent(OBS_DIM, K, G, RLURConfig(
        policy_delay=1, candidate_explore=0.2, candidate_pull=1.0)),
    "rlur-naive": lambda: RLURAgent(OBS_DIM, K, G, RLURConfig(
        policy_delay=1, immediate=False, rnd=False, normalise=False, groups=False, soft_reg=False)),
    "rlur-group-critics": lambda: RLURAgent(OBS_DIM, K, G, RLURConfig(policy_delay=1, group_critics=True)),
    "td3": lambda: TD3Agent(OBS_DIM, K, G),
}


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


@pytest.mark.parametrize("name", ["rlur", "rlur-naive", "rlur-group-critics"])
def test_rlur_actor_loss_moves_only_actor_and_critic_loss_only_critics(name):
    torch.manual_seed(0)
    agent = AGENTS[name]()
    batch = random_batch()
    critics = [agent.critic_t] + ([agent.critic_i] if agent.config.immediate else [])
    actor_before = _params(agent.actor)
    critic_before = [_params(c) for c in critics]
    agent.update_actor(batch)
    assert _changed(actor_before, agent.actor)
    assert not any(_changed(b, c) for b, c in zip(critic_before, critics, strict=True))

    agent2 = AGENTS[name]()
    agent2.config.policy_delay = 10**9  # critic step only
    actor_before = _params(agent2.actor)
    critics2 = [agent2.critic_t] + ([agent2.critic_i] if agent2.config.immediate else [])
    critic_before = [_params(c) for c in critics2]
    agent2.update(batch, torch.Generator().manual_seed(0))
    assert not _changed(actor_before, agent2.actor)
    assert all(_changed(b, c) for b, c in zip(critic_before, critics2, strict=True))


def test_td3_critic_step_leaves_actor_alone():
    torch.manual_seed(0)
    agent = TD3Agent(OBS_DIM, K, G)
    before = _params(agent.actor)
    agent.update(random_batch(), torch.Generator().manual_seed(0))  # updates=1: critic only
    assert not _changed(before, agent.actor)
    agent.update(random_batch(seed=1), torch.Generator().manual_seed(0))  # updates=2: actor too
    assert _changed(before, agent.actor)


def test_rnd_reward_never_enters_the_retention_critic():
    torch.manual_seed(0)
    batch = random_batch()
    a = RLURAgent(OBS_DIM, K, G, RLURConfig(rnd=True, normalise=False))
    r_with, _ = a.retention_reward(batch)
    b = RLURAgent(OBS_DIM, K, G, RLURConfig(rnd=False, normalise=False))
    r_without, _ = b.retention_reward(batch)
    assert torch.equal(r_with, r_without)
    assert torch.equal(r_with, torch.where(batch.session_end, -batch.return_time, 0.0))


@pytest.mark.parametrize("rnd_state", ["current", "next"])
def test_rnd_bonus_pays_the_novelty_of_the_state_it_names(rnd_state):
    torch.manual_seed(0)
    agent = RLURAgent(OBS_DIM, K, G, RLURConfig(rnd_state=rnd_state))
    twin = copy.deepcopy(agent)
    batch = random_batch()
    named = batch.obs if rnd_state == "current" else batch.next_obs
    expected = rnd_error(agent.rnd_predictor(named), agent.rnd_target(named)).detach()
    bonus, _ = agent.intrinsic_reward(batch)
    assert torch.allclose(bonus, expected / agent.rnd_scale)  # scaled by the running mean error
    # Only the named states enter: replacing the other ones changes nothing.
    other = "next_obs" if rnd_state == "current" else "obs"
    changed = dataclasses.replace(batch, **{other: torch.randn_like(getattr(batch, other))})
    assert torch.equal(twin.intrinsic_reward(changed)[0], bonus)
    with pytest.raises(ValueError, match="rnd_state"):
        RLURConfig(rnd_state="previous")


def test_grouped_actor_keeps_groups_apart():
    torch.manual_seed(0)
    agent = RLURAgent(OBS_DIM, K, G, RLURConfig())
    batch = random_batch(128)
    batch.group = torch.zeros(128, dtype=torch.long)  # only group 0 in the batch
    other = [p.detach().clone() for p in agent.actor.parameters()]
    agent.update_actor(batch)
    mu0 = agent.actor.body.nets
    # Only member 0 of the grouped weights may change.
    for before, after in zip(other, mu0.parameters(), strict=True):
        assert torch.equal(before[1:], after.detach()[1:])
        assert not torch.equal(before[0], after.detach()[0])


def test_grouped_critics_give_each_row_its_own_groups_twins():
    from rlur.agents.networks import QCritic

    torch.manual_seed(0)
    critic = QCritic(OBS_DIM, K, (16,), n_groups=G)
    obs, action = torch.randn(12, OBS_DIM), torch.rand(12, K) * 2 - 1
    group = torch.arange(12) % G
    q1, q2 = critic(obs, action, group)
    every = critic.twins(torch.cat((obs, action), -1)).squeeze(-1)  # (2G, B): member 2g + j is group g's twin j
    rows = torch.arange(12)
    assert torch.equal(q1, every[2 * group, rows]) and torch.equal(q2, every[2 * group + 1, rows])
    with pytest.raises(ValueError, match="needs the users' groups"):
        critic(obs, action)
    shared = QCritic(OBS_DIM, K, (16,))  # n_groups=1: the group, if given, is ignored
    assert torch.equal(shared(obs, action)[0], shared(obs, action, group)[0])


def test_grouped_critics_learn_only_from_their_own_groups_rows():
    torch.manual_seed(0)
    agent = RLURAgent(OBS_DIM, K, G, RLURConfig(group_critics=True, policy_delay=10**9))
    batch = random_batch(128)
    batch.group = torch.full((128,), 2, dtype=torch.long)  # only group 2 in the batch
    before = {n: _params(getattr(agent, n)) for n in ("critic_t", "critic_i")}
    agent.update(batch, torch.Generator().manual_seed(0))
    for name, params in before.items():
        for old, new in zip(params, getattr(agent, name).parameters(), strict=True):
            members = [m for m in range(2 * G) if not torch.equal(old[m], new.detach()[m])]
            assert members == [4, 5], (name, members)  # group 2's twins, nobody else's


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_agent_updates_are_deterministic_and_state_roundtrips(name):
    def run():
        torch.manual_seed(3)
        agent = AGENTS[name]()
        g = torch.Generator().manual_seed(5)
        for i in range(4):
            agent.update(random_batch(seed=i), g)
        return agent

    a, b = run(), run()
    for pa, pb in zip(a.actor.parameters(), b.actor.parameters(), strict=True):
        assert torch.equal(pa, pb)
    c = AGENTS[name]()
    c.load_state_dict(copy.deepcopy(a.state_dict()))
    obs = torch.randn(5, OBS_DIM)
    group = torch.arange(5) % G
    assert torch.equal(a.policy().act(obs, group), c.policy().act(obs, group))


def test_delayed_return_collector_attaches_returns_one_step_later():
    env = RetentionEnv(SMALL, n_users=16, seed=0)
    buf = ReplayBuffer(1000, OBS_DIM, K, 1 + len(BEHAVIOURS))
    col = DelayedReturnCollector(buf)
    obs = env.observe()
    returns = []
    for _ in range(30):
        served = {"action": torch.zeros(16, K), "mu": torch.zeros(16, K), "std": torch.ones(16, K),
                  "log_prob": torch.zeros(16)}
        r = env.step(served["action"])
        col.stage(obs, served, r)
        assert buf.size == len(returns) * 16  # the current step is still staged
        returns.append(torch.nan_to_num(r.return_time))
        obs = r.obs
    col.flush()
    stored = buf.data["return_time"][: buf.size].view(30, 16)
    assert torch.equal(stored, torch.stack(returns))
    assert torch.equal(buf.data["session_end"][: buf.size], stored.flatten() > 0)


def test_cem_stratified_split_gives_every_member_the_same_group_mix():
    group = torch.tensor([0] * 40 + [1] * 13 + [2] * 7 + [3] * 4)
    n, population = len(group), 4
    counts = {}
    for stratify in (False, True):
        search = CEMSearch(K, G, n_users=n, config=CEMConfig(population=population, stratify=stratify), seed=3)
        search.serve(torch.zeros(n, OBS_DIM), group)
        counts[stratify] = torch.stack([torch.bincount(group[search.member == m], minlength=G)
                                        for m in range(population)])  # (members, groups)
        # every member still gets a quarter of the users
        assert torch.bincount(search.member, minlength=population).tolist() == [n // population] * population
        again = CEMSearch(K, G, n_users=n, config=CEMConfig(population=population, stratify=stratify), seed=3)
        again.serve(torch.zeros(n, OBS_DIM), group)
        assert torch.equal(again.member, search.member)  # same seed, same split
    spread = lambda c: (c.max(0).values - c.min(0).values).max().item()  # noqa: E731
    assert spread(counts[True]) <= 1  # 40, 13, 7, 4 users dealt to 4 members: ⌊n_g/4⌋ or ⌈n_g/4⌉ each
    assert spread(counts[False]) > 1  # the random split of this seed is uneven
    # A checkpoint taken before the first serve of a generation resumes to the same split.
    cfg = CEMConfig(population=population, stratify=True)
    fresh = CEMSearch(K, G, n_users=n, config=cfg, seed=3)
    resumed = CEMSearch(K, G, n_users=n, config=cfg, seed=99)
    resumed.load_state_dict(fresh.state_dict())
    a, b = (s.serve(torch.zeros(n, OBS_DIM), group)["action"] for s in (fresh, resumed))
    assert torch.equal(a, b) and torch.equal(fresh.member, resumed.member)


def _cem_on_toy_fitness(config: CEMConfig, generations: int = 15) -> CEMSearch:
    """A toy fitness: members whose first weight is high get short returns."""
    from rlur.sim.env import StepResult

    search = CEMSearch(K, G, n_users=64, config=config, seed=0)
    for _ in range(generations):
        served = search.serve(torch.zeros(64, OBS_DIM), torch.zeros(64, dtype=torch.long))
        assert served["action"].abs().max() <= 1.0  # what is served stays in the action box
        search.clean[:] = True
        result = StepResult(
            obs=torch.zeros(64, OBS_DIM), feedback=torch.zeros(64, 9), session_end=torch.ones(64, dtype=torch.bool),
            return_day=torch.ones(64, dtype=torch.long), return_time=2.0 - served["action"][:, 0],
            group=torch.zeros(64, dtype=torch.long), day=torch.zeros(64, dtype=torch.long),
            shown=torch.zeros(64, 6, dtype=torch.long),
        )
        search.observe(None, served, result)
    return search


def _cem_on_groups_that_differ(config: CEMConfig, generations: int = 20) -> CEMSearch:
    """A toy world whose groups differ: group 0 returns sooner the higher its first weight, group 1 the
    lower. No single weighting suits both."""
    from rlur.sim.env import StepResult

    n = 64
    group = torch.arange(n) % 2
    search = CEMSearch(K, G, n_users=n, config=config, seed=0)
    for _ in range(generations):
        served = search.serve(torch.zeros(n, OBS_DIM), group)
        search.clean[:] = True
        sign = 1.0 - 2.0 * group.float()  # +1 for group 0, −1 for group 1
        result = StepResult(
            obs=torch.zeros(n, OBS_DIM), feedback=torch.zeros(n, 9), session_end=torch.ones(n, dtype=torch.bool),
            return_day=torch.ones(n, dtype=torch.long), return_time=2.0 - sign * served["action"][:, 0],
            group=group, day=torch.zeros(n, dtype=torch.long), shown=torch.zeros(n, 6, dtype=torch.long),
        )
        search.observe(None, served, result)
    return search


def test_cem_per_group_keeps_a_table_per_group_and_finds_what_each_group_wants():
    config = CEMConfig(population=8, generation_steps=1, per_group=True)
    search = _cem_on_groups_that_differ(config)
    assert search.mean.shape == (G, K) and search.n_tables == G
    assert search.mean[0, 0] > 0.5 and search.mean[1, 0] < -0.5  # each group's own best direction
    group = torch.tensor([0, 1])
    per_group = search.policy().act(torch.zeros(2, OBS_DIM), group)[:, 0]
    single = _cem_on_groups_that_differ(dataclasses.replace(config, per_group=False))
    assert single.mean.shape == (1, K)
    one = single.policy().act(torch.zeros(2, OBS_DIM), group)[:, 0]
    # The deployed toy return time, 2 − sign·a₀, averaged over the two groups: per group is better.
    toy_return = lambda a0: (2.0 - a0[0] + 2.0 + a0[1]) / 2  # noqa: E731
    assert toy_return(per_group) < toy_return(one) - 0.5


def test_cem_moves_towards_the_better_weighting():
    search = _cem_on_toy_fitness(CEMConfig(population=8, generation_steps=1, init_std=0.5))
    assert search.mean[0, 0] > 0.5


def test_cem_searches_past_the_box_and_deploys_its_clipped_mean():
    # The best weighting is on the box's face (a_0 = 1): the unclipped search mean goes past it, so
    # every later draw is served at the face, whereas a search fitted to clipped draws stays inside.
    config = CEMConfig(population=8, generation_steps=1)
    search = _cem_on_toy_fitness(config)
    assert search.mean[0, 0] > 1.0 and search.std.min() >= config.min_std  # the floor holds
    deployed = search.policy().act(torch.zeros(3, OBS_DIM), torch.zeros(3, dtype=torch.long))
    assert deployed[:, 0].eq(1.0).all() and deployed.abs().max() <= 1.0
    boxed = _cem_on_toy_fitness(dataclasses.replace(config, fit_clipped=True))
    assert boxed.mean.abs().max() <= 1.0
    # The search state, unclipped draws included, survives a checkpoint.
    resumed = CEMSearch(K, G, n_users=64, config=config, seed=5)
    resumed.load_state_dict(search.state_dict())
    assert torch.equal(resumed.draws, search.draws) and torch.equal(resumed.candidates, search.candidates)
    # A state saved before the unclipped search existed holds the clipped draws only.
    old = {k: v for k, v in search.state_dict().items() if k != "draws"}
    resumed.load_state_dict(old)
    assert torch.equal(resumed.draws, search.candidates)


def test_resume_accepts_a_state_saved_before_a_config_field_existed(tmp_path):
    from rlur.sim.world import WorldConfig
    from rlur.training.loop import TrainConfig, Trainer

    small = WorldConfig(n_videos=400, n_candidates=40)
    cfg = TrainConfig(algo="cem", steps=6, n_users=32, world=small, eval_every=10**6, eval_users=16,
                      eval_days=1, checkpoint_every=3)
    Trainer(cfg, tmp_path, progress=False).train()
    state = torch.load(tmp_path / "resume.pt", weights_only=False)
    del state["config"]["cem"]["stratify"]  # as written before the field existed (its default applies)
    torch.save(state, tmp_path / "resume.pt")
    assert Trainer(cfg, tmp_path, progress=False).resume()
    changed = dataclasses.replace(cfg, cem=dataclasses.replace(cfg.cem, stratify=True))
    with pytest.raises(ValueError, match="different configuration"):
        Trainer(changed, tmp_path, progress=False).resume()


def test_weighting_action_ranks_by_the_named_scores_only():
    from rlur.agents.fixed import make_fixed_policy, weighting_action
    from rlur.sim.world import SCORE_NAMES

    assert torch.equal(weighting_action(), torch.zeros(len(SCORE_NAMES)))  # uniform weights
    a = weighting_action("long_view", "like")
    top = {SCORE_NAMES.index("long_view"), SCORE_NAMES.index("like")}
    assert all(a[i] == (1.0 if i in top else -1.0) for i in range(len(SCORE_NAMES)))
    assert torch.equal(make_fixed_policy("click").action, weighting_action("click"))
    with pytest.raises(ValueError, match="unknown score"):
        weighting_action("like", "nope")


def test_the_fatigue_switch_rule_reads_the_request_index_and_same_day_opens():
    from rlur.agents.fixed import GROUP_RULE, WEARY_TIRED_RULE, FatigueSwitchRule, weary_rule, weighting_action
    from rlur.sim.env import obs_column
    from rlur.sim.world import GROUPS

    assert obs_column("group_onehot") == 0 and obs_column("request_index") == len(GROUPS)
    assert obs_column("opens_today") == len(GROUPS) + 1
    with pytest.raises(ValueError, match="unknown observation field"):
        obs_column("fatigue")  # latent: not in the observation
    # Four heavy users: the 1st and 3rd request of a day's first session, the 4th, and a reopen's 1st.
    obs = torch.zeros(4, OBS_DIM)
    obs[:, obs_column("request_index")] = torch.tensor([0.0, 0.2, 0.3, 0.0])
    obs[3, obs_column("opens_today")] = 1 / 3
    heavy = torch.full((4,), GROUPS.index("high"))
    watch, long_view = weighting_action("watch_time"), weighting_action("long_view")
    expected = torch.stack([watch, watch, long_view, long_view])
    assert torch.equal(weary_rule().act(obs, heavy), expected)
    no_reopen = FatigueSwitchRule(GROUP_RULE, WEARY_TIRED_RULE, switch_after=3)
    assert torch.equal(no_reopen.act(obs, heavy)[3], watch)  # a reopen alone does not count as tired
    low = torch.full((4,), GROUPS.index("low"))  # the other groups keep their group weighting
    assert torch.equal(weary_rule().act(obs, low), weighting_action(*GROUP_RULE["low"]).expand(4, -1))
    with pytest.raises(ValueError, match="non-negative"):
        FatigueSwitchRule(GROUP_RULE, WEARY_TIRED_RULE, switch_after=-1)


def test_candidate_weightings_are_the_box_corners_a_static_search_screens():
    from rlur.agents.fixed import candidate_weightings, weighting_action
    from rlur.sim.world import SCORE_NAMES

    c = candidate_weightings()
    k = len(SCORE_NAMES)
    assert c.shape == (1 + k + k * (k - 1) // 2, k)
    assert len({tuple(row.tolist()) for row in c}) == c.shape[0]  # no duplicates
    assert torch.equal(c[0], weighting_action())
    assert torch.equal(c[1 + SCORE_NAMES.index("like")], weighting_action("like"))
    assert any(torch.equal(row, weighting_action("watch_time", "long_view")) for row in c)
    with pytest.raises(ValueError, match="positive"):
        candidate_weightings(0)


def test_rlur_config_rejects_bad_candidate_options():
    with pytest.raises(ValueError, match="candidate_explore"):
        RLURConfig(candidate_explore=1.5)
    with pytest.raises(ValueError, match="candidate_pull"):
        RLURConfig(candidate_pull=-1.0)


def test_candidate_pull_moves_the_actor_towards_the_corner_the_critics_prefer():
    # An objective with a small bump where the actor starts (the box's centre) and a higher one at the
    # corner "long views only": the policy gradient alone stays on the near bump, the pull jumps.
    from rlur.agents.fixed import weighting_action

    corner = weighting_action("long_view")

    def objective(obs, a, group=None):
        return torch.exp(-a.pow(2).sum(-1)) + 2.0 * torch.exp(-(a - corner).pow(2).sum(-1))

    def distance(pull: float) -> float:
        torch.manual_seed(0)
        agent = RLURAgent(OBS_DIM, K, G, RLURConfig(policy_delay=1, candidate_pull=pull, soft_reg=False,
                                                    actor_lr=1e-2))
        agent.actor_objective = objective
        batch = random_batch(256)
        for _ in range(100):
            agent.update_actor(batch)
        mu, _ = agent.actor(batch.obs, batch.group)
        return float((mu.detach() - corner).pow(2).sum(-1).mean())

    start = float((torch.zeros(K) - corner).pow(2).sum())  # 8: the centre's distance to the corner
    assert distance(0.0) > 0.8 * start  # the gradient alone stays near the centre
    assert distance(1.0) < 0.1 * start
