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

import functools
from dataclasses import dataclass

import torch

from rlur.sim.ranking import action_to_weights
from rlur.sim.world import BEHAVIOURS, GROUPS, SATIATION, SCORE_NAMES, World, WorldConfig

__all__ = [
    "OBS_DIM", "OBS_FIELDS", "RetentionEnv", "StepResult", "env_state_dict", "load_env_state_dict", "obs_column",
]

_R = len(BEHAVIOURS)
#: Users scored per chunk in the candidate stage, at most: a chunk's buffers (a few MB) stay in cache,
#: and chunks this large keep the number of ops (each a parallel region with several threads) low.
_RANK_CHUNK = 512
#: Users whose candidate scores are ranked together (one top-S pass over their scores).
_TOPK_CHUNK = 2048
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


def obs_column(field: str) -> int:
    """The first column of ``field`` in the flat observation (layout: ``OBS_FIELDS``)."""
    names = [name for name, _, _ in OBS_FIELDS]
    if field not in names:
        raise ValueError(f"unknown observation field {field!r}; choose from {', '.join(names)}")
    return sum(size for _, size, _ in OBS_FIELDS[: names.index(field)])


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
        self._bind(world if isinstance(world, World) else World(world), n_users, seed, chunk_size)
        self.reset(seed)

    def _bind(self, world, n_users: int, seed: int, chunk_size: int) -> None:
        """Attach ``world`` and the batch geometry (shared by every world's environment)."""
        if n_users <= 0:
            raise ValueError(f"n_users must be positive, got {n_users}")
        self.world = world
        self.config = world.config
        self.n_users = n_users
        self.chunk_size = chunk_size
        self.seed = seed
        self.k = len(SCORE_NAMES)
        self.obs_dim = OBS_DIM
        self._score_ref_inv = 1.0 / world.score_ref

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
        self.volatility = users["volatility"]
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
            self.session_time = torch.zeros(b)
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
        self.session_time[mask] = 0
        self.last_response[mask] = 0
        self.last_repetition[mask] = 0

    # ------------------------------------------------------------------------------------------
    def observe(self) -> torch.Tensor:
        """Build the flat observation ``(B, OBS_DIM)`` (layout: :data:`OBS_FIELDS`)."""
        b, n_groups, n_resp = self.n_users, len(GROUPS), len(RESPONSE_NAMES)
        obs = torch.empty(b, OBS_DIM)  # a fresh tensor every call: callers keep observations
        col = obs.t()  # col[i] is observation column i (a strided view)
        obs[:, :n_groups].zero_().scatter_(1, self.group[:, None], 1.0)  # one-hot group
        i = n_groups
        for value, scale in ((self.depth, 10), (self.opens_today, 3), (self.last_return_time, 10),
                             (self.ema_return_time, 10), (self.ema_depth, 20)):
            torch.div(value, scale, out=col[i])
            i += 1
        torch.div(self.n_sessions.log1p(), 5, out=col[i])
        torch.mul(self.recent_topic.amax(1), 0.3, out=col[i + 1])
        col[i + 2].copy_(self.last_repetition)
        i += 3
        obs[:, i:i + n_resp] = self.last_response
        i += n_resp
        torch.div(self.session_response, self.depth.clamp(min=1)[:, None], out=obs[:, i:i + n_resp])
        i += n_resp
        col[i].copy_(self.ema_quality)
        col[i + 1].copy_(self.interest_concentration)
        return obs

    # ------------------------------------------------------------------------------------------
    def _scratch(self) -> dict:
        """Buffers reused across steps (a dict, so state dicts and the Gym wrappers ignore it)."""
        scratch = self.__dict__.get("_scratch_buffers")
        if scratch is None or scratch["n_users"] != self.n_users:
            scratch = self.__dict__["_scratch_buffers"] = {"n_users": self.n_users}
        return scratch

    def _draw_candidates(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidate stage: each user gets C *distinct* videos, a random window of a catalogue
        permutation drawn afresh every step (cheaper than sampling C of N per user).

        Returns ``ext (N + C - 1,)``, the permutation followed by its first C - 1 entries, and
        ``start (B,)``: user u's candidates are ``ext[start[u] : start[u] + C]``.
        """
        c = self.config
        perm = torch.randperm(c.n_videos, generator=self.rng)
        ext = torch.cat((perm, perm[: c.n_candidates - 1]))
        start = torch.randint(0, c.n_videos, (self.n_users,), generator=self.rng)
        return ext, start

    def _rank_windows(self, weights: torch.Tensor, ext: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """Positions ``(B, S)`` in each user's candidate window of the slate (best first).

        Fusion ranking, chunked over users: the inputs of a chunk are copied from per-step
        permuted tables (a window of C consecutive entries per user, so plain row copies) into
        buffers reused across chunks and steps; ``World.fused_scores`` scores them in place, and
        the top S are taken every few chunks (:func:`_top_positions`).
        """
        c, w, b = self.config, self.world, self.n_users
        n_cand, n_win = c.n_candidates, c.n_videos
        k1 = w.pred_scored_t.shape[0]
        m = ext.shape[0]
        # Per-step table in permutation order: the k-1 prediction logits, then the duration, one
        # row of N + C - 1 entries each, flattened. Row i of the strided view `window` is
        # table[i : i + C], so (quantity q, user u) is window row q · (N + C - 1) + start[u].
        table = torch.cat((w.pred_scored_t.index_select(1, ext), w.video_duration.index_select(0, ext)[None]))
        window = table.view(-1).as_strided((table.numel() - n_cand + 1, n_cand), (1, 1))
        row_offset = torch.arange(0, (k1 + 1) * m, m)[:, None]  # (k, 1)
        topic_win = w.video_topic.index_select(0, ext).as_strided((n_win, n_cand), (1, 1))
        pos = torch.empty(b, c.slate_size, dtype=torch.long)
        chunk = max(1, min(self.chunk_size, _RANK_CHUNK, b))
        group = chunk * max(1, _TOPK_CHUNK // chunk)  # users whose scores are kept for one topk
        scratch = self._scratch()
        key = ("rank", chunk, group, n_cand, k1)
        if key not in scratch:
            scratch[key] = _RankBuffers(chunk, min(group, b), n_cand, k1)
        full = scratch[key]
        for g0 in range(0, b, group):
            g1 = min(g0 + group, b)
            for s in range(g0, g1, chunk):
                e = min(s + chunk, g1)
                buf = full if e - s == chunk else _RankBuffers(e - s, 0, n_cand, k1)  # a last, short chunk
                rows = start[s:e]
                torch.add(row_offset, rows, out=buf.rows)
                torch.index_select(window, 0, buf.rows.view(-1), out=buf.inputs_2d)
                torch.index_select(topic_win, 0, rows, out=buf.topic)
                torch.gather(self.interest[s:e], 1, buf.topic, out=buf.aff)
                w.fused_scores(None, buf.aff, weights[s:e], logits=buf.logits, duration=buf.duration,
                               out=full.score[s - g0:e - g0])
            pos[g0:g1] = _top_positions(full.score[:g1 - g0], c.slate_size)
        return pos

    def _rank_positions(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw the candidates and rank them: ``(ext, start, positions (B, S))`` (see above)."""
        weights = action_to_weights(action, self.config.weight_max) * self._score_ref_inv  # (B, k)
        ext, start = self._draw_candidates()
        return ext, start, self._rank_windows(weights, ext, start)

    def rank(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidate stage + fusion ranking. Returns ``(candidates (B, C), shown (B, S))``."""
        with torch.no_grad():
            ext, start, pos = self._rank_positions(action)
            cand = ext.unfold(0, self.config.n_candidates, 1).index_select(0, start)
            return cand, cand.gather(1, pos)

    def _shown(self, action: torch.Tensor) -> torch.Tensor:
        """``rank(action)[1]`` without building the ``(B, C)`` candidate matrix."""
        if type(self).rank is not RetentionEnv.rank:  # a subclass ranks its own way
            return self.rank(action)[1]
        ext, start, pos = self._rank_positions(action)
        return ext.index_select(0, (pos + start[:, None]).view(-1)).view_as(pos)

    def step(self, action: torch.Tensor) -> StepResult:
        """Serve one request to every user with fusion action ``action (B, k)`` in [-1, 1]."""
        action = torch.as_tensor(action, dtype=torch.float32)
        if action.shape != (self.n_users, self.k):
            raise ValueError(f"action must have shape {(self.n_users, self.k)}, got {tuple(action.shape)}")
        with torch.no_grad():
            if not torch.isfinite(action).all():
                raise ValueError("action contains NaN or inf")
            day = self.day.clone()
            shown = self._shown(action)
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
        """Sample responses ``(B, S, R)`` 0/1, watch seconds ``(B, S)``, satisfaction ``(B,)``.

        Computed behaviour-major, ``(R, B·S)``, so each op has unit stride; ``responses`` is
        returned as a ``(B, S, R)`` view of that layout.
        """
        w, b, s = self.world, self.n_users, self.config.slate_size
        n = b * s
        flat = shown.reshape(-1)
        video = w.video_response_t.index_select(1, flat)  # (R + 4, B·S)
        base, quality, bait, dur_z, dur = video[:_R], video[_R], video[_R + 1], video[_R + 2], video[_R + 3]
        topic = w.video_topic.index_select(0, flat).view(b, s)
        aff = self.interest.gather(1, topic)
        repetition = self.recent_topic.gather(1, topic).mul_(0.3).clamp_(max=1.0)  # recent share
        g = self.group
        # Effective affinity: the user's interest in the topic minus its satiation this session.
        eff_aff = aff.mul_(w.group_affinity_mult.index_select(0, g)[:, None]).sub_(SATIATION * repetition)
        # logit = base + affinity + quality + bait + propensity + fatigue + repetition terms, in
        # this order (each term a rounded product, then added: the same floats as term by term).
        col = lambda t: t.view(_R, 1)  # noqa: E731
        logit = torch.mul(eff_aff.view(1, n), col(w.coef_affinity)).add_(base)
        term = torch.empty(_R, n)
        q = (w.group_quality_mult.index_select(0, g) - 1)[:, None] * quality.view(b, s)
        logit.add_(torch.mul(q.view(1, n), col(w.coef_quality), out=term))
        q = (w.group_bait_mult.index_select(0, g) - 1)[:, None] * bait.view(b, s)
        logit.add_(torch.mul(q.view(1, n), col(w.coef_bait), out=term))
        logit3 = logit.view(_R, b, s)
        logit3.add_(self.propensity.t()[:, :, None])
        logit3.add_(torch.mul(self.fatigue.view(1, b, 1), w.coef_fatigue.view(_R, 1, 1)))
        logit.add_(torch.mul(repetition.view(1, n), col(w.coef_repeat), out=term))
        # Whether a long video is watched through depends on who watches it and how tired they
        # are: heavy users finish long videos, casual users do not, and nobody does when tired.
        # The predictors only know the average effect, so the best weight on watch time changes
        # with the user's group and fatigue.
        taste = w.group_duration.index_select(0, g) - w.group_duration_fatigue.index_select(0, g) * self.fatigue
        logit3[_LONG].add_(dur_z.view(b, s) * taste[:, None])
        if self.config.fatigue_skip:  # tired users skip long videos (0 in the default world)
            skip = dur_z.view(b, s).clamp(min=0).mul_((self.config.fatigue_skip * self.fatigue)[:, None])
            logit3[_CLICK].sub_(skip)
            logit3[_LONG].sub_(skip)
        p = logit.sigmoid_()
        u = torch.rand(b, s, _R + 1, generator=self.rng).view(n, _R + 1).t()  # (R + 1, B·S) view
        p_click = p[_CLICK]
        click = u[0] < p_click
        # Long views are (almost all) clicks: share the click's uniform, as in KuaiRand (99.6 %).
        long_view = u[0] < torch.minimum(p[_LONG], p_click)
        responses = term  # reuse: (R, B·S) 0/1
        # Engagement (like .. profile_enter, the rows between long view and hate) needs a click:
        # P(engaged | click) = p / p_click, capped at 1.
        cond = p[_LONG + 1:_HATE].div(p_click.clamp(min=1e-6)).clamp_(max=1.0)
        torch.lt(u[_LONG + 1:_HATE], cond, out=responses[_LONG + 1:_HATE])
        responses[_LONG + 1:_HATE].mul_(click)
        responses[_CLICK] = click
        responses[_LONG] = long_view
        torch.lt(u[_HATE], p[_HATE], out=responses[_HATE])  # hate needs no click
        u_watch = 0.3 * u[_R]
        frac = torch.where(long_view, 0.7 + u_watch, torch.where(click, 0.05 + u_watch, 0.02))
        watch = (dur * frac).view(b, s)
        clicked = responses[_CLICK]
        bait_clicks = bait * clicked
        # Satisfaction: per video, the group's value of each response (watch seconds / 81 s, the
        # behaviours, click-bait clicks, duration of clicked videos), averaged over the slate. The
        # products go straight into one (B, S, R + 3) tensor, summed over its last dimension.
        coef = w.sat_coef.index_select(0, g).unsqueeze(1)  # (B, 1, R + 3)
        value = torch.empty(b, s, _R + 3)
        watch_value = coef[..., 0]
        if self.config.fatigue_regret:  # a tired user regrets long watching (0 in the default world)
            watch_value = watch_value - self.config.fatigue_regret * self.fatigue[:, None]
        torch.mul(watch / 81.0, watch_value, out=value[..., 0])
        torch.mul(responses.view(_R, b, s).permute(1, 2, 0), coef[..., 1:_R + 1], out=value[..., 1:_R + 1])
        torch.mul(bait_clicks.view(b, s), coef[..., _R + 1], out=value[..., _R + 1])
        torch.mul(dur_z.view(b, s) * clicked.view(b, s), coef[..., _R + 2], out=value[..., _R + 2])
        sat = value.sum(-1).mean(1)
        self._scratch()["respond"] = (shown, dur.view(b, s), bait_clicks.view(b, s), topic)
        return responses.view(_R, b, s).permute(1, 2, 0), watch, sat, repetition

    def _update_session(self, shown, responses, watch, sat, repetition) -> None:
        w, s = self.world, self.config.slate_size
        b = shown.shape[0]
        cached = self._scratch().pop("respond", None)
        if cached is not None and cached[0] is shown:
            _, dur, bait_clicks, topic = cached
        else:  # called on its own: look the videos up again
            dur, topic = w.video_duration[shown], w.video_topic[shown]
            bait_clicks = w.video_bait[shown] * responses[..., _CLICK]
        per_request = torch.empty(b, len(RESPONSE_NAMES))
        torch.mean(watch / dur, 1, out=per_request[:, 0])
        per_request[:, 1:] = responses.mean(1)
        self.last_response = per_request
        self.session_response += per_request
        self.session_sat += sat
        self.last_sat = sat
        self.session_follows += responses[..., _FOLLOW].sum(1)
        self.session_time += watch.mean(1) / 81.0
        self.depth += 1
        rep = repetition.mean(1)
        self.last_repetition = rep
        bait_clicks = bait_clicks.mean(1)
        self.fatigue += 0.06 + w.repeat_fatigue.index_select(0, self.group) * rep + 0.6 * bait_clicks
        scratch = self._scratch()
        share = scratch.get(("share", b, s))
        if share is None:
            share = scratch[("share", b, s)] = torch.full((b, s), 1.0 / s)
        self.recent_topic.mul_(0.7).scatter_add_(1, topic, share)

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
        """Draw the return of every user whose session ended; start their next session.

        The random numbers are drawn for everyone (a fixed stream order); the return module is
        computed only for the users whose session ended (index tensors).
        """
        c, w, b = self.config, self.world, self.n_users
        noise = torch.randn(b, generator=self.rng)
        u_reopen = torch.rand(b, generator=self.rng)
        u_day = torch.rand(b, c.return_horizon_days, generator=self.rng)
        u_gap = torch.rand(b, generator=self.rng)
        return_day = torch.full((b,), -1, dtype=torch.long)
        return_time = torch.full((b,), float("nan"))
        idx = end.nonzero().squeeze(1)
        if len(idx) == 0:
            return return_day, return_time
        g = self.group.index_select(0, idx)
        habit = self.habit.index_select(0, idx)
        opens = self.opens_today.index_select(0, idx)
        depth = self.depth.index_select(0, idx).clamp_(min=1)
        # Session quality: mean satisfaction per request, relative to the group's typical level
        # under the uniform policy (WorldConfig.sat_reference), so groups differ in level only
        # through their base return propensity.
        sat_ref = w.sat_reference.index_select(0, g)
        quality = self.session_sat.index_select(0, idx) / depth - sat_ref
        last = self.last_sat.index_select(0, idx) - sat_ref
        # Return propensity: activity group + long-term habit + this session's quality + how it
        # ended (peak-end: the last request's satisfaction) + exogenous noise (uncertainty).
        z = (
            w.group_return.index_select(0, g) + 0.8 * habit + c.quality_effect * (quality + 0.5 * last)
            + c.return_noise * self.volatility.index_select(0, idx) * noise.index_select(0, idx)
        )
        reopen_logit = (
            c.reopen_bias + w.group_reopen.index_select(0, g) + 0.8 * quality + 0.5 * habit - 0.7 * opens
        )
        reopen = (u_reopen.index_select(0, idx) < torch.sigmoid(reopen_logit)) & (opens + 1 < c.max_opens_per_day)
        # Discrete-time hazard over days 1..H: logit h_d = z + bias_d (not geometric).
        hazard = torch.sigmoid(z[:, None] + w.return_day_bias)
        hit = u_day.index_select(0, idx) < hazard
        first = torch.where(hit.any(1), hit.float().argmax(1) + 1, c.return_horizon_days)
        return_day[idx] = torch.where(reopen, 0, first)
        time_ended = torch.where(reopen, 0.04 + 0.36 * u_gap.index_select(0, idx), first.float())
        return_time[idx] = time_ended
        self._end_sessions(idx, reopen, first, time_ended, quality)
        return return_day, return_time

    def _end_sessions(self, idx, reopen, first, return_time, quality) -> None:
        """Update the long-term state of the users ``idx`` whose session ended (``reopen``,
        ``first``, ``return_time`` and ``quality`` are theirs) and start their next session."""
        w = self.world
        depth = self.depth.index_select(0, idx)
        long_view_rate = self.session_response[idx, 1 + _LONG] / depth.clamp(min=1)
        # Long-term habit: drifts towards the group level, pulled up by good sessions and by
        # follows (relationships that outlast the session); this is why γ > 0 pays.
        g = self.group.index_select(0, idx)
        target = w.group_habit.index_select(0, g) + 0.6 * quality
        if self.config.habit_from_time:  # habits form from time spent (0 in the default world)
            time_spent = self.session_time.index_select(0, idx) / depth.clamp(min=1)
            target = target + self.config.habit_from_time * (time_spent - w.time_reference.index_select(0, g))
        habit = self.habit.index_select(0, idx)
        new_habit = 0.85 * habit + 0.15 * target + 0.25 * self.session_follows.index_select(0, idx).clamp(max=3)
        # The long-term fields get new tensors (as before: a caller may hold the old ones).
        put = lambda old, new: old.index_put((idx,), new)  # noqa: E731
        ema = lambda old, new: put(old, 0.7 * old.index_select(0, idx) + 0.3 * new)  # noqa: E731
        self.habit = put(self.habit, new_habit.clamp(-3, 3))
        self.ema_return_time = ema(self.ema_return_time, return_time)
        self.ema_depth = ema(self.ema_depth, depth)
        self.ema_quality = ema(self.ema_quality, long_view_rate)
        self.last_return_time = put(self.last_return_time, return_time)
        self.n_sessions.index_add_(0, idx, torch.ones(len(idx)))
        opens = self.opens_today.index_select(0, idx)
        self.opens_today = put(self.opens_today, torch.where(reopen, opens + 1, 0.0))
        day = self.day.index_select(0, idx)
        self.day = put(self.day, torch.where(reopen, day, day + first))
        # Start the next session (what _start_sessions does, for index tensors): a same-day
        # reopen keeps half the fatigue and of the recent topics, a new day starts afresh.
        keep = torch.where(reopen, 0.5, 0.0)
        self.depth.index_fill_(0, idx, 0)
        self.fatigue.index_put_((idx,), self.fatigue.index_select(0, idx) * keep)
        self.recent_topic.index_put_((idx,), self.recent_topic.index_select(0, idx) * keep[:, None])
        for name in ("session_response", "session_sat", "session_follows", "session_time", "last_response",
                     "last_repetition"):
            getattr(self, name).index_fill_(0, idx, 0)


class _RankBuffers:
    """Buffers of the candidate stage for ``n`` users (and scores for ``group`` users), with the
    views the chunk loop uses, made once."""

    def __init__(self, n: int, group: int, n_cand: int, k1: int) -> None:
        self.rows = torch.empty(k1 + 1, n, dtype=torch.long)  # rows of the window table to copy
        inputs = torch.empty(k1 + 1, n, n_cand)  # the k-1 prediction logits, then the duration
        self.inputs_2d = inputs.view(-1, n_cand)
        self.logits, self.duration = inputs[:k1], inputs[k1]
        self.topic = torch.empty(n, n_cand, dtype=torch.long)
        self.aff = torch.empty(n, n_cand)
        self.score = torch.empty(group, n_cand)


@functools.lru_cache(maxsize=64)
def _block_layout(n: int, k: int) -> int:
    """Number of blocks for :func:`_top_positions` on rows of ``n`` (0: rank the rows directly)."""
    best, best_cost = 0, 0.6 * n  # below this much work the plain top-k wins
    for blocks in range(k + 1, n):
        cost = blocks + (k + 1) * (n // blocks)  # entries the two top-k passes look at
        if n % blocks == 0 and cost < best_cost:
            best, best_cost = blocks, cost
    return best


def _top_positions(score: torch.Tensor, k: int) -> torch.Tensor:
    """``score.topk(k, dim=1).indices`` (best first), found with two top-k passes over fewer entries.

    The columns are split into interleaved blocks (block r holds columns r, r + blocks, …). The
    k + 1 best entries of a row lie in the k + 1 blocks with the highest maxima (the j-th best
    entry has at most j - 1 greater ones, so at most j - 1 blocks have a greater maximum), so it
    is enough to rank the block maxima, then the entries of the k + 1 best blocks. Where the
    k + 1 best values of a row are distinct, its top k (set and order) is unique, so this is
    exactly what ``topk`` gives. Rows with a tie among them (e.g. all weights 0: every score
    is 0) are ranked again by ``topk`` itself, whose choice among equal values we keep.
    """
    m, n = score.shape
    blocks = _block_layout(n, k)
    if blocks == 0:
        return score.topk(k, dim=1).indices
    size = n // blocks
    best_blocks = score.view(m, size, blocks).amax(1).topk(k + 1, dim=1, sorted=False).indices
    cols = (best_blocks.unsqueeze(-1) + torch.arange(0, n, blocks)).view(m, (k + 1) * size)
    values, order = score.gather(1, cols).topk(k + 1, dim=1)
    top = cols.gather(1, order[:, :k])
    tied = (values[:, 1:] == values[:, :-1]).any(1)
    if bool(tied.any()):
        rows = tied.nonzero().squeeze(1)
        top[rows] = score.index_select(0, rows).topk(k, dim=1).indices
    return top


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
