"""The optimised simulator step against a straightforward reference: identical results, bit for bit.

``_ReferenceEnv`` is the plain vectorised step the optimised one replaced (per-video tables indexed
with ``[shown]``, the ``(b, C, k)`` scores fused by ``bmm``, a full ``topk`` over the C candidates,
every module computed for every user, ``torch.where`` updates). The optimised step draws the same
random numbers in the same order and does the same float operations in the same order, so every
output and every piece of user state must match exactly, whatever the chunk size. (The one thing
layout can change is which few elements of a tensor fall in the scalar tail of a vectorised
``sigmoid``, which may round them one ulp differently; that changes an output only if a uniform
draw lands within that ulp, or two candidate scores are that close, and these runs check it does
not.) No timings here: ``benchmarks/sim_speed.py`` measures the speed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch

from rlur.evaluation.metrics import MetricsRecorder
from rlur.sim.env import (
    OBS_DIM,
    RetentionEnv,
    StepResult,
    _top_positions,
    env_state_dict,
    load_env_state_dict,
)
from rlur.sim.ranking import action_to_weights, fusion_scores
from rlur.sim.world import BEHAVIOURS, GROUPS, SATIATION, SCORE_NAMES, World, WorldConfig

K = len(SCORE_NAMES)
R = len(BEHAVIOURS)
_CLICK, _LONG, _FOLLOW, _HATE = (BEHAVIOURS.index(b) for b in ("click", "long_view", "follow", "hate"))
FIELDS = ("obs", "feedback", "session_end", "return_day", "return_time", "group", "day", "shown")
CONFIGS = (
    WorldConfig(n_videos=500, n_candidates=50),
    WorldConfig(n_videos=500, n_candidates=50, max_session_depth=3, max_opens_per_day=2, world_seed=1),
    WorldConfig(n_videos=300, n_candidates=50, return_horizon_days=10, max_return_day=10, world_seed=2),
    WorldConfig(n_videos=500, n_candidates=12, slate_size=3, world_seed=3),
    WorldConfig(n_videos=2000, n_candidates=200, world_seed=4),  # the default C: block top-k ranking
    # the presets' mechanisms (fatigue regret, habit from time spent, user-dependent return noise)
    WorldConfig.from_dict({**WorldConfig.preset("tired", world_seed=5).to_dict(), "n_videos": 500,
                           "n_candidates": 50}),
    # tired users skipping long videos (the ``weary`` preset)
    WorldConfig.from_dict({**WorldConfig.preset("weary", world_seed=6).to_dict(), "n_videos": 500,
                           "n_candidates": 50}),
)


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------
# The reference: the straightforward vectorised step
# ----------------------------------------------------------------------------------------------
def _reference_fused_scores(world: World, video, affinity, weights) -> torch.Tensor:
    """``Σ_l w_l x_{j,l}`` as the plain formula: ``(b, C, k-1)`` probabilities, ``bmm``, watch term."""
    p = world.video_pred_logit_scored[video]
    p = torch.sigmoid(torch.addcmul(p, affinity.unsqueeze(-1), world.coef_affinity_scored))
    score = torch.bmm(p, weights[:, 1:].unsqueeze(-1)).squeeze(-1)
    return score.addcmul(world.video_duration[video] * (0.08 + 0.85 * p[..., 1]), weights[:, :1])


class _ReferenceEnv(RetentionEnv):
    """The step written out plainly, module by module, over all users."""

    def observe(self) -> torch.Tensor:
        depth = self.depth.clamp(min=1)[:, None]
        parts = [
            torch.nn.functional.one_hot(self.group, len(GROUPS)).float(),
            (self.depth / 10)[:, None], (self.opens_today / 3)[:, None], (self.last_return_time / 10)[:, None],
            (self.ema_return_time / 10)[:, None], (self.ema_depth / 20)[:, None],
            (self.n_sessions.log1p() / 5)[:, None], (self.recent_topic.max(1).values * 0.3)[:, None],
            self.last_repetition[:, None], self.last_response, self.session_response / depth,
            self.ema_quality[:, None], self.interest_concentration[:, None],
        ]
        return torch.cat(parts, dim=1).float()

    def rank(self, action):
        c, b, w = self.config, self.n_users, self.world
        weights = action_to_weights(action, c.weight_max) * self._score_ref_inv
        perm = torch.randperm(c.n_videos, generator=self.rng)
        windows = torch.cat((perm, perm[: c.n_candidates - 1])).unfold(0, c.n_candidates, 1)
        cand = windows.index_select(0, torch.randint(0, c.n_videos, (b,), generator=self.rng))
        aff = self.interest.gather(1, w.video_topic[cand])
        score = _reference_fused_scores(w, cand, aff, weights)
        return cand, cand.gather(1, score.topk(c.slate_size, dim=1).indices)

    def step(self, action) -> StepResult:
        action = torch.as_tensor(action, dtype=torch.float32)
        day = self.day.clone()
        _, shown = self.rank(action)
        responses, watch, sat, repetition = self._respond(shown)
        self._update_session(shown, responses, watch, sat, repetition)
        session_end = self._leave(sat, responses)
        return_day, return_time = self._return(session_end)
        feedback = torch.cat((watch.sum(1, keepdim=True), responses.sum(1)), dim=1)
        return StepResult(self.observe(), feedback, session_end, return_day, return_time,
                          self.group.clone(), day, shown)

    def _respond(self, shown):
        w, b, s, g = self.world, self.n_users, self.config.slate_size, self.group
        topic = w.video_topic[shown]
        aff = self.interest.gather(1, topic)
        repetition = (self.recent_topic.gather(1, topic) * 0.3).clamp(max=1.0)
        eff_aff = aff * w.group_affinity_mult[g][:, None] - SATIATION * repetition
        logit = (
            w.video_base_logit[shown]
            + eff_aff.unsqueeze(-1) * w.coef_affinity
            + ((w.group_quality_mult[g] - 1)[:, None] * w.video_quality[shown]).unsqueeze(-1) * w.coef_quality
            + ((w.group_bait_mult[g] - 1)[:, None] * w.video_bait[shown]).unsqueeze(-1) * w.coef_bait
            + self.propensity.unsqueeze(1)
            + self.fatigue[:, None, None] * w.coef_fatigue
            + repetition.unsqueeze(-1) * w.coef_repeat
        )
        taste = w.group_duration[g] - w.group_duration_fatigue[g] * self.fatigue
        logit[..., _LONG] += w.video_duration_z[shown] * taste[:, None]
        skip = self.config.fatigue_skip * self.fatigue[:, None] * w.video_duration_z[shown].clamp(min=0)
        logit[..., _CLICK] -= skip
        logit[..., _LONG] -= skip
        p = torch.sigmoid(logit)
        u = torch.rand(b, s, R + 1, generator=self.rng)
        p_click = p[..., _CLICK]
        click = u[..., 0] < p_click
        long_view = u[..., 0] < torch.minimum(p[..., _LONG], p_click)
        cond = (p / p_click.clamp(min=1e-6).unsqueeze(-1)).clamp(max=1.0)
        responses = (click.unsqueeze(-1) & (u[..., :R] < cond)).float()
        responses[..., _CLICK] = click.float()
        responses[..., _LONG] = long_view.float()
        responses[..., _HATE] = (u[..., _HATE] < p[..., _HATE]).float()
        dur = w.video_duration[shown]
        frac = torch.where(long_view, 0.7 + 0.3 * u[..., R],
                           torch.where(click, 0.05 + 0.3 * u[..., R], torch.full_like(dur, 0.02)))
        watch = dur * frac
        clicked = responses[..., _CLICK]
        value = torch.cat(((watch / 81.0).unsqueeze(-1), responses, (w.video_bait[shown] * clicked).unsqueeze(-1),
                           (w.video_duration_z[shown] * clicked).unsqueeze(-1)), dim=-1)
        coef = w.sat_coef[g]
        if self.config.fatigue_regret:
            coef = torch.cat(((coef[:, 0] - self.config.fatigue_regret * self.fatigue)[:, None], coef[:, 1:]), 1)
        sat = (value * coef.unsqueeze(1)).sum(-1).mean(1)
        return responses, watch, sat, repetition

    def _update_session(self, shown, responses, watch, sat, repetition) -> None:
        w, s = self.world, self.config.slate_size
        per_request = torch.cat(((watch / w.video_duration[shown]).mean(1, keepdim=True), responses.mean(1)), dim=1)
        self.last_response = per_request
        self.session_response = self.session_response + per_request
        self.session_sat = self.session_sat + sat
        self.last_sat = sat
        self.session_follows = self.session_follows + responses[..., _FOLLOW].sum(1)
        self.session_time = self.session_time + watch.mean(1) / 81.0
        self.depth = self.depth + 1
        self.last_repetition = repetition.mean(1)
        bait_clicks = (w.video_bait[shown] * responses[..., _CLICK]).mean(1)
        self.fatigue = self.fatigue + (0.06 + w.repeat_fatigue[self.group] * self.last_repetition + 0.6 * bait_clicks)
        self.recent_topic = (self.recent_topic * 0.7).scatter_add(1, w.video_topic[shown],
                                                                  torch.full(shown.shape, 1.0 / s))

    def _leave(self, sat, responses):
        c = self.config
        hate = responses[..., _HATE].sum(1)
        logit = c.leave_bias + 0.9 * self.fatigue - 1.2 * sat - self.patience - 0.4 * self.habit + 1.5 * hate
        u = torch.rand(self.n_users, generator=self.rng)
        return (u < torch.sigmoid(logit)) | (self.depth >= c.max_session_depth)

    def _return(self, end):
        c, w, b, g = self.config, self.world, self.n_users, self.group
        noise = torch.randn(b, generator=self.rng)
        u_reopen = torch.rand(b, generator=self.rng)
        u_day = torch.rand(b, c.return_horizon_days, generator=self.rng)
        u_gap = torch.rand(b, generator=self.rng)
        quality = self.session_sat / self.depth.clamp(min=1) - w.sat_reference[g]
        last = self.last_sat - w.sat_reference[g]
        z = (w.group_return[g] + 0.8 * self.habit + c.quality_effect * (quality + 0.5 * last)
             + c.return_noise * self.volatility * noise)
        reopen_logit = c.reopen_bias + w.group_reopen[g] + 0.8 * quality + 0.5 * self.habit - 0.7 * self.opens_today
        reopen = (u_reopen < torch.sigmoid(reopen_logit)) & (self.opens_today + 1 < c.max_opens_per_day)
        hit = u_day < torch.sigmoid(z[:, None] + w.return_day_bias)
        first = torch.where(hit.any(1), hit.float().argmax(1) + 1, torch.full_like(self.day, c.return_horizon_days))
        return_day = torch.where(end, torch.where(reopen, 0, first), -1)
        return_time = torch.where(end, torch.where(reopen, 0.04 + 0.36 * u_gap, first.float()), float("nan"))
        if bool(end.any()):
            self._end_sessions(end, reopen, first, return_time, quality)
        return return_day, return_time

    def _end_sessions(self, end, reopen, first, return_time, quality) -> None:
        w = self.world
        long_view_rate = self.session_response[:, 1 + _LONG] / self.depth.clamp(min=1)
        target = w.group_habit[self.group] + 0.6 * quality
        if self.config.habit_from_time:
            time_spent = self.session_time / self.depth.clamp(min=1)
            target = target + self.config.habit_from_time * (time_spent - w.time_reference[self.group])
        new_habit = 0.85 * self.habit + 0.15 * target + 0.25 * self.session_follows.clamp(max=3)
        self.habit = torch.where(end, new_habit.clamp(-3, 3), self.habit)
        ema = lambda old, new: torch.where(end, 0.7 * old + 0.3 * new, old)  # noqa: E731
        self.ema_return_time = ema(self.ema_return_time, torch.nan_to_num(return_time))
        self.ema_depth = ema(self.ema_depth, self.depth)
        self.ema_quality = ema(self.ema_quality, long_view_rate)
        self.last_return_time = torch.where(end, torch.nan_to_num(return_time), self.last_return_time)
        self.n_sessions = self.n_sessions + end.float()
        same_day, new_day = end & reopen, end & ~reopen
        self.opens_today = torch.where(same_day, self.opens_today + 1, torch.where(new_day, 0.0, self.opens_today))
        self.day = torch.where(new_day, self.day + first, self.day)
        self._start_sessions(end, fresh_day=new_day)


# ----------------------------------------------------------------------------------------------
def _bit_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():
        bits = {torch.float32: torch.int32, torch.float64: torch.int64}[a.dtype]
        return torch.equal(a.contiguous().view(bits), b.contiguous().view(bits))
    return torch.equal(a, b)


def _state(env: RetentionEnv) -> dict[str, torch.Tensor]:
    return {k: v for k, v in vars(env).items() if isinstance(v, torch.Tensor)}


def _actions(n: int, steps: int, seed: int) -> Iterator[torch.Tensor]:
    """Random actions, with corners, one-hots and all-low actions (every weight 0: every score 0,
    so the ranking is decided by ties) mixed in."""
    g = torch.Generator().manual_seed(seed)
    for t in range(steps):
        a = torch.rand(n, K, generator=g) * 2 - 1
        mode = t % 5
        if mode == 1:
            a = a.sign()  # corners: some users get all-zero weights
        elif mode == 2:
            a = -torch.ones(n, K)
            a[torch.arange(n), torch.randint(0, K, (n,), generator=g)] = 1.0
        elif mode == 3:
            a[: n // 2] = -1.0  # all-low for half the users
        yield a


def _assert_same_run(world: World, n: int, seed: int, steps: int, chunk_size: int) -> None:
    ref = _ReferenceEnv(world, n_users=n, seed=seed)
    env = RetentionEnv(world, n_users=n, seed=seed, chunk_size=chunk_size)
    assert _bit_equal(ref.observe(), env.observe())
    for t, action in enumerate(_actions(n, steps, seed)):
        x, y = ref.step(action), env.step(action)
        for name in FIELDS:
            assert _bit_equal(getattr(x, name), getattr(y, name)), f"step {t}: {name}"
    sx, sy = _state(ref), _state(env)
    assert sx.keys() == sy.keys()
    for name in sx:
        assert _bit_equal(sx[name], sy[name]), f"state {name}"
    assert _bit_equal(ref.rng.get_state(), env.rng.get_state()), "random stream"


@pytest.mark.parametrize("variant", range(len(CONFIGS)))
def test_step_matches_the_reference_bit_for_bit(variant: int) -> None:
    world = World(CONFIGS[variant])
    _assert_same_run(world, n=37, seed=variant, steps=60, chunk_size=512)


@pytest.mark.parametrize(("n", "chunk_size"), [(1, 512), (2, 1), (45, 7), (300, 64), (600, 512)])
def test_chunk_size_and_batch_size_do_not_change_results(n: int, chunk_size: int) -> None:
    _assert_same_run(World(CONFIGS[4]), n=n, seed=n, steps=15, chunk_size=chunk_size)


def test_a_long_run_at_the_default_world_matches() -> None:
    """The default world (N = 5,000, C = 200) for enough steps that many sessions end and restart."""
    _assert_same_run(World(WorldConfig()), n=256, seed=11, steps=40, chunk_size=100)


# ----------------------------------------------------------------------------------------------
def test_fused_scores_equal_the_fusion_of_the_predicted_scores() -> None:
    world = World(CONFIGS[4])
    g = torch.Generator().manual_seed(0)
    b, c = 16, world.config.n_candidates
    video = torch.randint(0, world.config.n_videos, (b, c), generator=g)
    aff = torch.randn(b, c, generator=g)
    weights = action_to_weights(torch.rand(b, K, generator=g) * 2 - 1) / world.score_ref
    fused = world.fused_scores(video, aff, weights)
    # the definition (paper Eq. 1) up to float rounding
    expected = fusion_scores(weights, world.predicted_scores(video, aff))
    assert torch.allclose(fused, expected, rtol=1e-5, atol=1e-6)
    # the plain bmm formulation to a few float32 ulps: bit for bit only where the CPU's bmm kernel sums
    # the 7 products in the same order as the fused loop, which differs between CPUs (the README's
    # "Reproducing it"; seen: equal on one machine, up to 1.7e-7 relative on an AVX-512 one)
    assert torch.allclose(fused, _reference_fused_scores(world, video, aff, weights), rtol=1e-6, atol=0.0)
    # inputs gathered by the caller (as the simulator does) give the same scores
    logits = world.pred_scored_t[:, video].contiguous()
    out = torch.empty(b, c)
    again = world.fused_scores(None, aff, weights, logits=logits, duration=world.video_duration[video], out=out)
    assert again is out and _bit_equal(again, fused)


@pytest.mark.parametrize(("n", "k"), [(200, 6), (50, 6), (12, 3), (120, 5), (7, 6)])
def test_top_positions_equal_topk(n: int, k: int) -> None:
    g = torch.Generator().manual_seed(n + k)
    score = torch.randn(300, n, generator=g)
    score[:20] = 0.0  # every entry tied
    score[20:40] = torch.randint(0, 4, (20, n), generator=g).float()  # many ties
    score[40:60, : n // 2] = score[40:60, n // 2: 2 * (n // 2)]  # duplicated values
    assert torch.equal(_top_positions(score, k), score.topk(k, dim=1).indices)


def test_rank_returns_the_candidates_and_step_shows_the_same_slate() -> None:
    world = World(CONFIGS[4])
    env = RetentionEnv(world, n_users=20, seed=3, chunk_size=6)
    for action in _actions(20, 6, 3):
        state = env.rng.get_state()
        cand, shown = env.rank(action)
        assert cand.shape == (20, world.config.n_candidates) and shown.shape == (20, world.config.slate_size)
        assert (cand.sort(1).values[:, 1:] != cand.sort(1).values[:, :-1]).all()  # distinct candidates
        aff = env.interest.gather(1, world.video_topic[cand])
        weights = action_to_weights(action) / world.score_ref
        top = _reference_fused_scores(world, cand, aff, weights).topk(world.config.slate_size, dim=1).indices
        assert torch.equal(shown, cand.gather(1, top))
        env.rng.set_state(state)
        assert torch.equal(env.step(action).shown, shown)


def test_outputs_are_fresh_tensors_and_state_dicts_resume() -> None:
    world = World(CONFIGS[0])
    env = RetentionEnv(world, n_users=30, seed=5)
    actions = list(_actions(30, 12, 5))
    first = env.step(actions[0])
    kept = copy.deepcopy(first)
    env.step(actions[1])
    for name in FIELDS:  # reused buffers must never leak into what a step hands out
        assert _bit_equal(getattr(first, name), getattr(kept, name)), name
    state = env_state_dict(env)
    assert not any(k.startswith("_scratch") for k in state)  # buffers are not state
    later = [env.step(a) for a in actions[2:]]
    twin = RetentionEnv(world, n_users=30, seed=99)
    load_env_state_dict(twin, state)
    for a, r in zip(actions[2:], later, strict=True):
        x = twin.step(a)
        for name in FIELDS:
            assert _bit_equal(getattr(x, name), getattr(r, name)), name
    assert env.observe().shape == (30, OBS_DIM)


# ----------------------------------------------------------------------------------------------
def _reference_record(rec: MetricsRecorder, r: StepResult) -> None:
    """``MetricsRecorder.record`` written plainly (masks over all users)."""
    live = torch.ones_like(r.session_end) if rec.horizon_days is None else r.day < rec.horizon_days
    if rec.opens is not None and bool((rec._started & live).any()):
        idx = (rec._started & live).nonzero().squeeze(1)
        rec.opens[idx, r.day[idx]] += 1
    lf = live.double()
    rec.requests += lf
    rec.watch += lf * r.feedback[:, 0].double()
    rec.behaviours += lf[:, None] * r.feedback[:, 1:].double()
    rec._depth += 1
    end = r.session_end & live
    rec.sessions += end.double()
    rec.session_requests += torch.where(end, rec._depth, 0.0).double()
    gap = end & (r.return_day >= 1)
    rec.gaps += gap.double()
    rec.gap_days += torch.where(gap, r.return_day.clamp(min=0).double(), 0.0)
    rec.gap_day1 += (gap & (r.return_day == 1)).double()
    if bool(gap.any()):
        b = r.return_day[gap].clamp(max=rec.max_return_day + 1) - 1
        rec.gap_hist += torch.bincount(b, minlength=rec.max_return_day + 1).double()
    rec._depth = torch.where(r.session_end, 0.0, rec._depth)
    rec._started = r.session_end.clone()


@pytest.mark.parametrize("horizon", [None, 3])
def test_metrics_recorder_matches_the_plain_computation(horizon: int | None) -> None:
    world = World(CONFIGS[1])
    env = RetentionEnv(world, n_users=64, seed=8)
    a = MetricsRecorder(64, world.config.max_return_day, horizon_days=horizon)
    b = MetricsRecorder(64, world.config.max_return_day, horizon_days=horizon)
    steps = 0
    for action in _actions(64, 400, 8):
        r = env.step(action)
        a.record(r)
        _reference_record(b, r)
        steps += 1
        if int(env.day.min()) > 5:  # well past the horizon, so rows stop counting
            break
    for name in ("requests", "watch", "behaviours", "sessions", "session_requests", "gaps", "gap_days",
                 "gap_day1", "gap_hist", "_depth", "_started"):
        assert _bit_equal(getattr(a, name), getattr(b, name)), name
    assert (a.opens is None and b.opens is None) or torch.equal(a.opens, b.opens)
    assert a.summary(n_boot=20) == b.summary(n_boot=20)
