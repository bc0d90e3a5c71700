"""The batched retention environment: B users step at once, as torch tensors.

One call to :meth:`RetentionEnv.step` advances every user by one request:

1. the candidate stage draws C videos per user;
2. the point-wise predictors give each candidate k scores ``x_j``; the action's fusion weights rank
   them by ``Σ_l w_l x_{j,l}`` (paper Eq. 1) and the top 6 are shown;
3. the immediate-feedback module samples the user's responses to the shown videos;
4. the leave module decides whether the session ends after this request;
5. for users whose session ended, the return module draws when they come back (the same day, or
   day 1..H later), their long-term state is updated and a new session starts on that day.

Users are never idle: a user whose session ended starts the next one on the next step, at the later
date. Each user carries a calendar day, so day-level metrics (DAU, day-1/day-7 retention) follow.
No Python loop runs over users; candidate scoring is chunked so memory stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlur.sim.ranking import action_to_weights
from rlur.sim.world import BEHAVIOURS, GROUPS, SATIATION, SCORE_NAMES, World, WorldConfig

__all__ = ["OBS_DIM", "OBS_FIELDS", "RetentionEnv", "StepResult", "env_state_dict", "load_env_state_dict"]

_R = len(BEHAVIOURS)
#: How much each unit of fatigue lowers the long-view logit per unit of video duration (z-score).
FATIGUE_DURATION = 0.4
_CLICK, _LONG, _LIKE, _FOLLOW, _COMMENT, _FORWARD, _PROFILE, _HATE = range(_R)
#: Responses summarised per request: mean watch fraction, then each behaviour's rate on the slate.
RESPONSE_NAMES: tuple[str, ...] = ("watch_frac", *BEHAVIOURS)

#: Observation layout (flat float32). ``docs/observation.md`` is generated from this table.
OBS_FIELDS: tuple[tuple[str, int, str], ...] = (
    ("group_onehot", len(GROUPS), "activity group, one-hot in GROUPS order (high, middle, low, new)"),
    ("request_index", 1, "requests already served in this session / 10"),
    ("opens_today", 1, "sessions already started today before this one / 3"),
    ("last_return_time", 1, "returning time before this session, days / 10 (0 for a first session)"),
    ("ema_return_time", 1, "exponential average (0.7) of the user's returning times, days / 10"),
    ("ema_session_depth", 1, "exponential average (0.7) of the user's session depths / 20"),
    ("log_sessions", 1, "log(1 + sessions so far) / 5"),
    ("topic_concentration", 1, "largest topic share among recently shown videos (0..1)"),
    ("last_repetition", 1, "mean recent-topic share of the last slate's videos (0..1)"),
    ("last_response", len(RESPONSE_NAMES), "last request: mean watch fraction and rate of each behaviour"),
    ("session_response", len(RESPONSE_NAMES), "this session so far: the same, averaged over requests"),
    ("ema_session_quality", 1, "exponential average (0.7) of past sessions' long-view rate"),
    ("interest_concentration", 1, "profile feature: share of the user's top-3 topics in its interests"),
)
OBS_DIM = sum(size for _, size, _ in OBS_FIELDS)


@dataclass
class StepResult:
    """What one batched step returns (B users, S = slate size)."""

    obs: torch.Tensor
    """``(B, OBS_DIM)`` float32, the next observation (of the new session if this one ended)."""
    feedback: torch.Tensor
    """``(B, 1 + R)`` the slate's immediate feedback: watch seconds, then counts of BEHAVIOURS."""
    session_end: torch.Tensor
    """``(B,)`` bool: this request was the last of its session."""
    return_day: torch.Tensor
    """``(B,)`` long: −1 if the session goes on; else 0 (same-day reopen) or day 1..H of the return."""
    return_time: torch.Tensor
    """``(B,)`` float: the returning time in days when the session ended (NaN otherwise)."""
    group: torch.Tensor
    """``(B,)`` long: the user's activity group."""
    day: torch.Tensor
    """``(B,)`` long: the calendar day of the request just served."""
    shown: torch.Tensor
    """``(B, S)`` long: ids of the shown videos."""


class RetentionEnv:
    """Batched native environment. ``reset()`` then ``step(action)`` with ``action (B, k) ∈ [-1, 1]``.

    Args:
        world: the static world (or a :class:`WorldConfig` to build one).
        n_users: B, the number of users stepped together.
        seed: seed of the users drawn (``world.sample_users``) and of every sampled response.
        chunk_size: users scored per chunk in the candidate stage (bounds memory, not results).
    """

    def __init__(
        self, world: World | WorldConfig | None = None, n_users: int = 1024, seed: int = 0,
        chunk_size: int = 512,
    ) -> None:
        if n_users <= 0:
            raise ValueError(f"n_users must be positive, got {n_users}")
        self.world = world if isinstance(world, World) else World(world)
        self.config = self.world.config
        self.n_users = n_users
        self.chunk_size = chunk_size
        self.seed = seed
        self.k = len(SCORE_NAMES)
        self.obs_dim = OBS_DIM
        self._score_ref_inv = 1.0 / self.world.score_ref
        self.reset(seed)

    # ------------------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Draw the users again from ``seed`` and start everyone's first session on day 0."""
        if seed is not None:
            self.seed = seed
        b = self.n_users
        users = self.world.sample_users(b, self.seed)
        self.rng = torch.Generator().manual_seed((int(self.seed) * 2654435761 + 1) % (2**63))
        self.group = users["group"]
        self.interest = users["interest"]
        self.propensity = users["propensity"]
        self.patience = users["patience"]
        self.habit = users["habit"]
        top3 = self.interest.softmax(1).topk(3, dim=1).values.sum(1)
        self.interest_concentration = top3
        self.day = torch.zeros(b, dtype=torch.long)
        self.opens_today = torch.zeros(b)
        self.n_sessions = torch.zeros(b)
        self.last_return_time = torch.zeros(b)
        self.ema_return_time = torch.full((b,), 2.0)
        self.ema_depth = torch.full((b,), 8.0)
        self.ema_quality = torch.full((b,), 0.33)
        for name in ("depth", "fatigue", "recent_topic"):
            self.__dict__.pop(name, None)
        self._start_sessions(torch.ones(b, dtype=torch.bool), fresh_day=torch.ones(b, dtype=torch.bool))
        return self.observe()

    def _start_sessions(self, mask: torch.Tensor, fresh_day: torch.Tensor) -> None:
        """Reset the session state of ``mask`` users; a same-day reopen keeps half the fatigue."""
        b = self.n_users
        if "depth" not in self.__dict__:  # first session after reset()
            self.depth = torch.zeros(b)
            self.fatigue = torch.zeros(b)
            self.recent_topic = torch.zeros(b, self.config.n_topics)
            self.session_response = torch.zeros(b, len(RESPONSE_NAMES))
            self.session_sat = torch.zeros(b)
            self.session_follows = torch.zeros(b)
            self.last_response = torch.zeros(b, len(RESPONSE_NAMES))
            self.last_repetition = torch.zeros(b)
            self.last_sat = torch.zeros(b)
        keep = torch.where(fresh_day, 0.0, 0.5)[mask]
        self.depth[mask] = 0
        self.fatigue[mask] = self.fatigue[mask] * keep
        self.recent_topic[mask] = self.recent_topic[mask] * keep[:, None]
        self.session_response[mask] = 0
        self.session_sat[mask] = 0
        self.session_follows[mask] = 0
        self.last_response[mask] = 0
        self.last_repetition[mask] = 0

    # ------------------------------------------------------------------------------------------
    def observe(self) -> torch.Tensor:
        """Build the flat observation ``(B, OBS_DIM)`` (layout: :data:`OBS_FIELDS`)."""
        depth = self.depth.clamp(min=1)[:, None]
        parts = [
            torch.nn.functional.one_hot(self.group, len(GROUPS)).float(),
            (self.depth / 10)[:, None],
            (self.opens_today / 3)[:, None],
            (self.last_return_time / 10)[:, None],
            (self.ema_return_time / 10)[:, None],
            (self.ema_depth / 20)[:, None],
            (self.n_sessions.log1p() / 5)[:, None],
            (self.recent_topic.max(1).values * 0.3)[:, None],
            self.last_repetition[:, None],
            self.last_response,
            self.session_response / depth,
            self.ema_quality[:, None],
            self.interest_concentration[:, None],
        ]
        return torch.cat(parts, dim=1).float()

    # ------------------------------------------------------------------------------------------
    def rank(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidate stage + fusion ranking. Returns ``(candidates (B, C), shown (B, S))``."""
        c = self.config
        b = self.n_users
        weights = action_to_weights(action, c.weight_max) * self._score_ref_inv  # (B, k)
        # Candidate stage: each user gets C *distinct* videos, a random window of a catalogue
        # permutation drawn afresh every step (cheaper than sampling C of N per user).
        perm = torch.randperm(c.n_videos, generator=self.rng)
        windows = torch.cat((perm, perm[: c.n_candidates - 1])).unfold(0, c.n_candidates, 1)  # (N, C)
        cand = windows.index_select(0, torch.randint(0, c.n_videos, (b,), generator=self.rng))
        top = torch.empty(b, c.slate_size, dtype=torch.long)
        topic = self.world.video_topic
        for s in range(0, b, self.chunk_size):
            e = min(s + self.chunk_size, b)
            v = cand[s:e]
            aff = self.interest[s:e].gather(1, topic[v])
            score = self.world.fused_scores(v, aff, weights[s:e])  # Σ_l w_l x_{j,l}, (b, C)
            top[s:e] = score.topk(c.slate_size, dim=1).indices
        return cand, cand.gather(1, top)

    def step(self, action: torch.Tensor) -> StepResult:
        """Serve one request to every user with fusion action ``action (B, k)`` in [-1, 1]."""
        action = torch.as_tensor(action, dtype=torch.float32)
        if action.shape != (self.n_users, self.k):
            raise ValueError(f"action must have shape {(self.n_users, self.k)}, got {tuple(action.shape)}")
        if not torch.isfinite(action).all():
            raise ValueError("action contains NaN or inf")
        day = self.day.clone()
        _, shown = self.rank(action)
        responses, watch, sat, repetition = self._respond(shown)
        self._update_session(shown, responses, watch, sat, repetition)
        session_end = self._leave(sat, responses)
        return_day, return_time = self._return(session_end)
        feedback = torch.cat((watch.sum(1, keepdim=True), responses.sum(1)), dim=1)
        return StepResult(
            obs=self.observe(), feedback=feedback, session_end=session_end, return_day=return_day,
            return_time=return_time, group=self.group.clone(), day=day, shown=shown,
        )

    # --- immediate feedback module ------------------------------------------------------------
    def _respond(self, shown: torch.Tensor):
        """Sample responses ``(B, S, R)`` 0/1, watch seconds ``(B, S)``, satisfaction ``(B,)``."""
        w, b, s = self.world, self.n_users, self.config.slate_size
        topic = w.video_topic[shown]
        aff = self.interest.gather(1, topic)
        repetition = (self.recent_topic.gather(1, topic) * 0.3).clamp(max=1.0)  # recent share
        g = self.group
        # Effective affinity: the user's interest in the topic minus its satiation this session.
        eff_aff = aff * w.group_affinity_mult[g][:, None] - SATIATION * repetition
        logit = (
            w.video_base_logit[shown]  # population-average response (what the predictors learned)
            + eff_aff.unsqueeze(-1) * w.coef_affinity
            + ((w.group_quality_mult[g] - 1)[:, None] * w.video_quality[shown]).unsqueeze(-1) * w.coef_quality
            + ((w.group_bait_mult[g] - 1)[:, None] * w.video_bait[shown]).unsqueeze(-1) * w.coef_bait
            + self.propensity.unsqueeze(1)
            + self.fatigue[:, None, None] * w.coef_fatigue
            + repetition.unsqueeze(-1) * w.coef_repeat
        )
        # Whether a long video is watched through depends on who watches it and how tired they
        # are: heavy users finish long videos, casual users do not, and nobody does when tired.
        # The predictors only know the average effect, so the best weight on watch time changes
        # with the user's group and fatigue.
        taste = w.group_duration[g] - FATIGUE_DURATION * self.fatigue
        logit[..., _LONG] += w.video_duration_z[shown] * taste[:, None]
        p = torch.sigmoid(logit)
        u = torch.rand(b, s, _R + 1, generator=self.rng)
        p_click = p[..., _CLICK]
        click = u[..., 0] < p_click
        # Long views are (almost all) clicks: share the click's uniform, as in KuaiRand (99.6 %).
        long_view = u[..., 0] < torch.minimum(p[..., _LONG], p_click)
        cond = (p / p_click.clamp(min=1e-6).unsqueeze(-1)).clamp(max=1.0)
        engaged = click.unsqueeze(-1) & (u[..., :_R] < cond)
        responses = engaged.float()
        responses[..., _CLICK] = click.float()
        responses[..., _LONG] = long_view.float()
        responses[..., _HATE] = (u[..., _HATE] < p[..., _HATE]).float()  # hate needs no click
        dur = w.video_duration[shown]
        frac = torch.where(
            long_view, 0.7 + 0.3 * u[..., _R],
            torch.where(click, 0.05 + 0.3 * u[..., _R], torch.full_like(dur, 0.02)),
        )
        watch = dur * frac
        clicked = responses[..., _CLICK]
        value = torch.cat((
            (watch / 81.0).unsqueeze(-1), responses, (w.video_bait[shown] * clicked).unsqueeze(-1),
            (w.video_duration_z[shown] * clicked).unsqueeze(-1),
        ), dim=-1)
        sat = (value * w.sat_coef[self.group].unsqueeze(1)).sum(-1).mean(1)
        return responses, watch, sat, repetition

    def _update_session(self, shown, responses, watch, sat, repetition) -> None:
        w, s = self.world, self.config.slate_size
        frac = watch / w.video_duration[shown]
        per_request = torch.cat((frac.mean(1, keepdim=True), responses.mean(1)), dim=1)
        self.last_response = per_request
        self.session_response += per_request
        self.session_sat += sat
        self.last_sat = sat
        self.session_follows += responses[..., _FOLLOW].sum(1)
        self.depth += 1
        rep = repetition.mean(1)
        self.last_repetition = rep
        bait_clicks = (w.video_bait[shown] * responses[..., _CLICK]).mean(1)
        self.fatigue += 0.06 + w.repeat_fatigue[self.group] * rep + 0.6 * bait_clicks
        self.recent_topic.mul_(0.7).scatter_add_(
            1, w.video_topic[shown], torch.full(shown.shape, 1.0 / s),
        )

    # --- leave module -------------------------------------------------------------------------
    def _leave(self, sat: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        c = self.config
        hate = responses[..., _HATE].sum(1)
        logit = (
            c.leave_bias + 0.9 * self.fatigue - 1.2 * sat - self.patience - 0.4 * self.habit + 1.5 * hate
        )
        u = torch.rand(self.n_users, generator=self.rng)
        return (u < torch.sigmoid(logit)) | (self.depth >= c.max_session_depth)

    # --- return module ------------------------------------------------------------------------
    def _return(self, end: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw the return of every user whose session ended; start their next session."""
        c, w, b = self.config, self.world, self.n_users
        # Draw the randomness for everyone (fixed stream order), use it only where `end`.
        noise = torch.randn(b, generator=self.rng)
        u_reopen = torch.rand(b, generator=self.rng)
        u_day = torch.rand(b, c.return_horizon_days, generator=self.rng)
        u_gap = torch.rand(b, generator=self.rng)
        depth = self.depth.clamp(min=1)
        # Session quality: mean satisfaction per request, relative to the group's typical level
        # under the uniform policy (WorldConfig.sat_reference), so groups differ in level only
        # through their base return propensity.
        quality = self.session_sat / depth - w.sat_reference[self.group]
        last = self.last_sat - w.sat_reference[self.group]
        # Return propensity: activity group + long-term habit + this session's quality + how it
        # ended (peak-end: the last request's satisfaction) + exogenous noise (uncertainty).
        z = (
            w.group_return[self.group] + 0.8 * self.habit + c.quality_effect * (quality + 0.5 * last)
            + c.return_noise * noise
        )
        reopen_logit = (
            c.reopen_bias + w.group_reopen[self.group] + 0.8 * quality + 0.5 * self.habit
            - 0.7 * self.opens_today
        )
        reopen = (u_reopen < torch.sigmoid(reopen_logit)) & (self.opens_today + 1 < c.max_opens_per_day)
        # Discrete-time hazard over days 1..H: logit h_d = z + bias_d (not geometric).
        hazard = torch.sigmoid(z[:, None] + w.return_day_bias)
        hit = u_day < hazard
        first = torch.where(hit.any(1), hit.float().argmax(1) + 1, torch.full_like(self.day, c.return_horizon_days))
        return_day = torch.where(reopen, torch.zeros_like(first), first)
        return_time = torch.where(reopen, 0.04 + 0.36 * u_gap, first.float())
        return_day = torch.where(end, return_day, torch.full_like(return_day, -1))
        return_time = torch.where(end, return_time, torch.full_like(return_time, float("nan")))
        if bool(end.any()):
            self._end_sessions(end, reopen, first, return_time, quality)
        return return_day, return_time

    def _end_sessions(self, end, reopen, first, return_time, quality) -> None:
        w = self.world
        long_view_rate = self.session_response[:, 1 + _LONG] / self.depth.clamp(min=1)
        # Long-term habit: drifts towards the group level, pulled up by good sessions and by
        # follows (relationships that outlast the session); this is why γ > 0 pays.
        target = w.group_habit[self.group] + 0.6 * quality
        new_habit = 0.85 * self.habit + 0.15 * target + 0.25 * self.session_follows.clamp(max=3)
        self.habit = torch.where(end, new_habit.clamp(-3, 3), self.habit)
        ema = lambda old, new: torch.where(end, 0.7 * old + 0.3 * new, old)  # noqa: E731
        self.ema_return_time = ema(self.ema_return_time, torch.nan_to_num(return_time))
        self.ema_depth = ema(self.ema_depth, self.depth)
        self.ema_quality = ema(self.ema_quality, long_view_rate)
        self.last_return_time = torch.where(end, torch.nan_to_num(return_time), self.last_return_time)
        self.n_sessions += end.float()
        same_day = end & reopen
        new_day = end & ~reopen
        self.opens_today = torch.where(same_day, self.opens_today + 1, torch.where(new_day, 0.0, self.opens_today))
        self.day = torch.where(new_day, self.day + first, self.day)
        self._start_sessions(end, fresh_day=new_day)


def _env_state_names(env: RetentionEnv) -> list[str]:
    return sorted(k for k, v in env.__dict__.items() if isinstance(v, torch.Tensor) and k != "_score_ref_inv")


def env_state_dict(env: RetentionEnv) -> dict:
    """Every per-user tensor and the RNG state: enough to continue bit for bit (``--resume``)."""
    state = {k: env.__dict__[k].clone() for k in _env_state_names(env)}
    state["__rng__"] = env.rng.get_state()
    state["__seed__"] = env.seed
    return state


def load_env_state_dict(env: RetentionEnv, state: dict) -> None:
    for k, v in state.items():
        if k == "__rng__":
            env.rng.set_state(v)
        elif k == "__seed__":
            env.seed = v
        else:
            setattr(env, k, v.clone())
