"""Property tests (hypothesis) of the batched simulator's invariants, on small worlds."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest
import torch
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from rlur.sim.env import OBS_DIM, OBS_FIELDS, RetentionEnv, StepResult
from rlur.sim.ranking import action_to_weights, fusion_scores
from rlur.sim.world import BEHAVIOURS, GROUPS, SCORE_NAMES, World, WorldConfig

K = len(SCORE_NAMES)
R = len(BEHAVIOURS)
_CLICK = BEHAVIOURS.index("click")
#: Responses that need a click on the same video (hate does not).
_NEED_CLICK = tuple(BEHAVIOURS.index(b) for b in ("long_view", "like", "follow", "comment", "forward",
                                                  "profile_enter"))

#: Small world variants: the base, short sessions and few opens per day, a short return horizon and
#: small slates from few candidates.
CONFIGS: tuple[WorldConfig, ...] = (
    WorldConfig(n_videos=500, n_candidates=50),
    WorldConfig(n_videos=500, n_candidates=50, max_session_depth=3, max_opens_per_day=2),
    WorldConfig(n_videos=300, n_candidates=50, return_horizon_days=10, max_return_day=10),
    WorldConfig(n_videos=500, n_candidates=12, slate_size=3),
    # every mechanism of the presets on (fatigue regret, habit from time, user-dependent return noise)
    WorldConfig.from_dict({**WorldConfig.preset("tired").to_dict(), "n_videos": 500, "n_candidates": 50}),
    # tired users skipping long videos
    WorldConfig.from_dict({**WorldConfig.preset("weary").to_dict(), "n_videos": 500, "n_candidates": 50}),
)
PROPS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


pytestmark = pytest.mark.usefixtures("one_thread")


@functools.cache
def _world(variant: int, world_seed: int) -> World:
    config = CONFIGS[variant]
    return World(WorldConfig.from_dict({**config.to_dict(), "world_seed": world_seed}))


worlds = st.builds(_world, st.integers(0, len(CONFIGS) - 1), st.integers(0, 3))
users = st.integers(4, 64)
seeds = st.integers(0, 2**20)
_MODES = ("uniform", "corners", "one_hot", "constant", "all_low", "all_high")


@st.composite
def action_plans(draw: st.DrawFn, min_steps: int = 1, max_steps: int = 20) -> tuple[int, list]:
    """A seed and, per step, how to build the action: random inside, corners, one-hot or a constant."""
    plan = []
    for _ in range(draw(st.integers(min_steps, max_steps))):
        mode = draw(st.sampled_from(_MODES))
        const = draw(st.lists(st.floats(-1, 1, width=32), min_size=K, max_size=K)) if mode == "constant" else None
        plan.append((mode, const))
    return draw(seeds), plan


def _actions(plan: tuple[int, list], n: int) -> Iterator[torch.Tensor]:
    seed, steps = plan
    g = torch.Generator().manual_seed(seed)
    for mode, const in steps:
        if mode == "uniform":
            yield torch.rand(n, K, generator=g) * 2 - 1
        elif mode == "corners":
            yield torch.randint(0, 2, (n, K), generator=g).float() * 2 - 1
        elif mode == "one_hot":
            a = -torch.ones(n, K)
            a[torch.arange(n), torch.randint(0, K, (n,), generator=g)] = 1.0
            yield a
        elif mode == "constant":
            yield torch.tensor(const).expand(n, K).clone()
        else:
            yield torch.full((n, K), -1.0 if mode == "all_low" else 1.0)


def _field(obs: torch.Tensor, name: str) -> torch.Tensor:
    start = 0
    for field, size, _ in OBS_FIELDS:
        if field == name:
            return obs[:, start:start + size]
        start += size
    raise KeyError(name)


def _bit_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Exact equality, bit for bit (NaN payloads included)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():
        bits = {torch.float32: torch.int32, torch.float64: torch.int64, torch.float16: torch.int16}[a.dtype]
        return torch.equal(a.view(bits), b.view(bits))
    return torch.equal(a, b)


def _assert_results_equal(x: StepResult, y: StepResult) -> None:
    for name in ("obs", "feedback", "session_end", "return_day", "return_time", "group", "day", "shown"):
        assert _bit_equal(getattr(x, name), getattr(y, name)), name


# ----------------------------------------------------------------------------------------------
@PROPS
@given(world=worlds, n=users, seed=seeds, plan=action_plans(min_steps=3, max_steps=30))
# explicit cases that surely reach the depth cap, same-day reopens, later returns and extreme actions
@example(world=_world(1, 0), n=32, seed=1, plan=(0, [("uniform", None)] * 12))
@example(world=_world(0, 1), n=64, seed=2, plan=(1, [("all_high", None), ("corners", None)] * 15))
def test_step_invariants(world: World, n: int, seed: int, plan: tuple[int, list]) -> None:
    c = world.config
    s, h = c.slate_size, c.return_horizon_days
    env = RetentionEnv(world, n_users=n, seed=seed)
    group = env.group.clone()
    depth = torch.zeros(n, dtype=torch.long)  # requests served in the current session
    opens = torch.ones(n, dtype=torch.long)  # sessions started on the current day
    max_watch = s * float(world.video_duration.max())
    for action in _actions(plan, n):
        day = env.day.clone()
        r = env.step(action)
        # observation
        assert r.obs.shape == (n, OBS_DIM) and r.obs.dtype == torch.float32
        assert torch.isfinite(r.obs).all()
        assert torch.equal(_field(r.obs, "group_onehot").argmax(1), group)
        # slate
        assert r.shown.shape == (n, s) and r.shown.dtype == torch.long
        assert ((r.shown >= 0) & (r.shown < c.n_videos)).all()
        # immediate feedback: watch seconds, then integer counts per behaviour on the slate
        assert r.feedback.shape == (n, 1 + R)
        watch, counts = r.feedback[:, 0], r.feedback[:, 1:]
        assert torch.equal(counts, counts.round()) and ((counts >= 0) & (counts <= s)).all()
        assert (watch >= 0).all() and (watch <= max_watch).all()
        assert (watch <= world.video_duration[r.shown].sum(1) * (1 + 1e-5)).all()
        for b in _NEED_CLICK:  # long view (and engagement) ⇒ click, video by video
            assert (counts[:, b] <= counts[:, _CLICK]).all(), BEHAVIOURS[b]
        # sessions and returns
        end = r.session_end
        assert end.dtype == torch.bool and end.shape == (n,)
        assert torch.equal(r.return_day == -1, ~end)
        assert ((r.return_day[end] >= 0) & (r.return_day[end] <= h)).all()
        assert torch.equal(torch.isfinite(r.return_time), end)
        reopen, later = end & (r.return_day == 0), end & (r.return_day >= 1)
        assert ((r.return_time[reopen] > 0) & (r.return_time[reopen] < 1)).all()
        assert (r.return_time[later] >= r.return_day[later]).all()
        assert (r.return_time[later] < r.return_day[later] + 1).all()
        # calendar: the served day, then a jump of exactly return_day at a session end with a later return
        assert torch.equal(r.day, day)
        assert torch.equal(env.day, day + torch.where(later, r.return_day, 0))
        # session depth and opens per day
        depth += 1
        assert (depth <= c.max_session_depth).all()
        assert end[depth == c.max_session_depth].all()
        depth[end] = 0
        opens = torch.where(reopen, opens + 1, torch.where(later, 1, opens))
        assert (opens <= c.max_opens_per_day).all()
        # static traits do not move
        assert torch.equal(r.group, group) and len(GROUPS) > int(group.max())


@PROPS
@given(world=worlds, n=users, seed=seeds, plan=action_plans(max_steps=8))
def test_shown_are_the_top_candidates_by_fusion_score(world: World, n: int, seed: int, plan) -> None:
    c = world.config
    env = RetentionEnv(world, n_users=n, seed=seed)
    for action in _actions(plan, n):
        state = env.rng.get_state()
        cand, shown = env.rank(action)
        # recompute the fusion scores of the same candidates from the point-wise predictions
        aff = env.interest.gather(1, world.video_topic[cand])
        weights = action_to_weights(action, c.weight_max) / world.score_ref
        score = fusion_scores(weights, world.predicted_scores(cand, aff))
        tol = 1e-5 * (1 + score.abs().amax(1, keepdim=True))
        assert ((world.fused_scores(cand, aff, weights) - score).abs() <= tol).all()
        # every shown video is a candidate whose score reaches the slate_size-th best
        hit = shown.unsqueeze(2) == cand.unsqueeze(1)  # (B, S, C)
        assert hit.any(2).all()
        shown_score = score.gather(1, hit.float().argmax(2))
        kth = score.topk(c.slate_size, dim=1).values[:, -1:]
        assert (shown_score >= kth - tol).all()
        assert (shown_score[:, 1:] <= shown_score[:, :-1] + tol).all()  # best first
        # step() ranks exactly like rank() from the same generator state
        env.rng.set_state(state)
        assert torch.equal(env.step(action).shown, shown)


@settings(PROPS, max_examples=5, phases=[Phase.generate])
@given(world_seed=st.integers(0, 3), n=st.integers(32, 64), seed=seeds, plan=action_plans(3, 6))
def test_shown_videos_are_distinct(world_seed: int, n: int, seed: int, plan) -> None:
    env = RetentionEnv(_world(0, world_seed), n_users=n, seed=seed)
    for action in _actions(plan, n):
        shown = env.step(action).shown.sort(1).values
        assert (shown[:, 1:] != shown[:, :-1]).all(), "a video is shown twice in one slate"


@PROPS
@given(variant=st.integers(0, len(CONFIGS) - 1), world_seed=st.integers(0, 3), n=users, seed=seeds,
       plan=action_plans(max_steps=15))
def test_same_seeds_and_actions_give_bit_identical_results(variant, world_seed, n, seed, plan) -> None:
    config = WorldConfig.from_dict({**CONFIGS[variant].to_dict(), "world_seed": world_seed})
    a = RetentionEnv(World(config), n_users=n, seed=seed)  # two worlds built independently
    b = RetentionEnv(World(WorldConfig.from_dict(config.to_dict())), n_users=n, seed=seed)
    assert _bit_equal(a.reset(), b.reset())
    for action in _actions(plan, n):
        _assert_results_equal(a.step(action), b.step(action.clone()))


@PROPS
@given(world=worlds, n=users, seed=seeds, plan=action_plans(max_steps=15))
def test_chunk_size_does_not_change_results(world: World, n: int, seed: int, plan) -> None:
    a = RetentionEnv(world, n_users=n, seed=seed, chunk_size=3)
    b = RetentionEnv(world, n_users=n, seed=seed, chunk_size=64)
    for action in _actions(plan, n):
        _assert_results_equal(a.step(action), b.step(action))


@PROPS
@given(world=worlds, n=users, seed=seeds, plan=action_plans(max_steps=10), scale=st.floats(1.0, 100.0))
def test_out_of_range_actions_act_as_clipped(world: World, n: int, seed: int, plan, scale: float) -> None:
    a = RetentionEnv(world, n_users=n, seed=seed)
    b = RetentionEnv(world, n_users=n, seed=seed)
    for action in _actions(plan, n):
        big = action * scale
        _assert_results_equal(a.step(big), b.step(big.clamp(-1, 1)))


@PROPS
@given(world=worlds, n=users, seed=seeds, row=st.integers(0, 63), col=st.integers(0, K - 1),
       bad=st.sampled_from([float("nan"), float("inf"), float("-inf")]))
def test_invalid_actions_raise_without_side_effects(world: World, n: int, seed: int, row, col, bad) -> None:
    env = RetentionEnv(world, n_users=n, seed=seed)
    twin = RetentionEnv(world, n_users=n, seed=seed)
    invalid = [torch.zeros(n, K + 1), torch.zeros(n + 1, K), torch.zeros(K), torch.zeros(n, K, 1)]
    nonfinite = torch.zeros(n, K)
    nonfinite[row % n, col] = bad
    for action in [*invalid, nonfinite]:
        with pytest.raises(ValueError):
            env.step(action)
    action = torch.zeros(n, K)
    _assert_results_equal(env.step(action), twin.step(action))
