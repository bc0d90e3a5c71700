"""The data-driven simulator: a world learned from KuaiRand and a drop-in :class:`RetentionEnv`.

:func:`load_world` reads ``WORLD/world.pt`` (written by ``rlur data fit``) into a
:class:`LearnedWorld`; :class:`LearnedRetentionEnv` steps B logged users through it with the same
``reset``/``step``/``observe`` interface, :class:`~rlur.sim.env.StepResult` and observation layout
(:data:`~rlur.sim.env.OBS_FIELDS`) as the built-in environment, so agents run on it unchanged.
:func:`make_env` builds either environment from a world spec.

One step, vectorised over users (no Python loop over users):

1. candidates: ``C`` draws (with replacement) from the logged catalogue, proportional to each video's
   logged exposure; duplicates are dropped from the ranking;
2. the k = 8 point-wise scores (SCORE_NAMES) are the feedback model's predictions plus a fixed
   per-video logit error (``prediction_noise``), the predicted watch time is duration × expected
   watch fraction; the action's fusion weights rank them and the top 6 are shown (``ranking="logged"``
   instead shows the first 6 distinct of 18 exposure-weighted draws, ignoring the action: a replay of the
   logging distribution, used by the fit report);
3. responses are sampled from the feedback model without the error: long views nested in clicks (as
   in KuaiRand, 99.6 %), the other behaviours independently, the watch fraction from the watch head
   given the long view, times U(0.5, 1.5), capped at 1;
4. the leave model decides whether the session ends;
5. the return model draws the next session's day: the same day (only with gap-based sessions),
   day 1..K, or '>K' (a day drawn from the logged tail of gaps beyond K).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from rlur.data.features import EncodedTable, TableEncoding
from rlur.data.models import FEEDBACK_OUTPUTS, build_model, context_features
from rlur.sim.env import RESPONSE_NAMES, RetentionEnv, StepResult
from rlur.sim.ranking import action_to_weights
from rlur.sim.world import BEHAVIOURS, GROUP_OF_ACTIVE_DEGREE, GROUPS, SCORE_NAMES, World, WorldConfig

__all__ = ["WORLD_FILE", "WORLD_FORMAT", "LearnedRetentionEnv", "LearnedWorld", "LearnedWorldConfig", "group_of_degree",
           "load_world", "make_env"]

WORLD_FORMAT = "rlur-learned-world"
WORLD_VERSION = 1
WORLD_FILE = "world.pt"

_R = len(BEHAVIOURS)
_CLICK, _LONG = BEHAVIOURS.index("click"), BEHAVIOURS.index("long_view")
_W_LONG, _W_SHORT = FEEDBACK_OUTPUTS.index("watch_frac_long"), FEEDBACK_OUTPUTS.index("watch_frac_short")
#: Column of each probability-valued score (SCORE_NAMES[1:]) among the feedback outputs.
_SCORED = torch.tensor([BEHAVIOURS.index(n) for n in SCORE_NAMES[1:]])
_TOPIC_DECAY, _TOPIC_SCALE, _EMA = 0.7, 0.3, 0.7


@dataclass
class LearnedWorldConfig:
    """Parameters of a learned world (saved in ``world.pt``; the data-derived ones are set by the fit)."""

    world_seed: int = 0
    """Seed of the fixed per-video prediction error of the point-wise scores."""
    slate_size: int = 6
    n_candidates: int = 200
    """Candidates per request (capped at the catalogue size)."""
    max_return_day: int = 10
    """K: the return model's classes are same day, 1..K and '>K'."""
    return_horizon_days: int = 30
    """Longest gap a '>K' return can draw (the logged tail is cut here)."""
    weight_max: float = 4.0
    prediction_noise: float = 0.3
    """Std of the fixed per-video logit error of the point-wise predicted scores."""
    max_session_depth: int = 60
    """A session is cut after this many requests (set from the logs by the fit)."""
    max_opens_per_day: int = 6
    session_mode: str = "day"
    """'day': a session is a user-day; 'gap': sessions split by an inactivity gap."""
    session_gap_hours: float | None = None
    n_topics: int = 1
    """Primary tags (plus one for 'missing') that the recent-topic memory tracks."""
    candidate_power: float = 1.0
    """Candidates are drawn ∝ logged exposure ** candidate_power."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LearnedWorldConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


class LearnedWorld:
    """Static part of the learned simulator: user and video tables, the three models, tails.

    Users and videos are indexed 0..n−1 in the order of ``user_ids``/``video_ids`` (KuaiRand ids).
    """

    def __init__(self, payload: dict, source: str | None = None) -> None:
        if payload.get("format") != WORLD_FORMAT:
            raise ValueError(f"{source or 'payload'} is not an rlur learned world (format {payload.get('format')!r})")
        if int(payload.get("version", 0)) > WORLD_VERSION:
            raise ValueError(f"{source} was written by a newer rlur (world version {payload['version']})")
        self.payload = payload
        self.source = source
        self.config = LearnedWorldConfig.from_dict(payload["config"])
        c = self.config
        u, v = payload["users"], payload["videos"]
        self.user_encoding = TableEncoding.from_dict(payload["user_encoding"])
        self.video_encoding = TableEncoding.from_dict(payload["video_encoding"])
        self.user_ids, self.video_ids = u["ids"], v["ids"]
        self.user_static = EncodedTable(self.user_encoding, u["codes"].numpy(), u["numeric"].numpy()).dense()
        self.video_static = EncodedTable(self.video_encoding, v["codes"].numpy(), v["numeric"].numpy()).dense()
        self.user_group = u["group"].long()
        self.user_concentration = u["concentration"].float()
        self.sim_users = torch.nonzero(u["simulate"].bool()).squeeze(1)
        if len(self.sim_users) == 0:
            raise ValueError(f"{source}: the world has no users to simulate")
        self.video_duration = v["duration_s"].float()
        self.video_topic = v["topic"].long()
        expo = v["exposure"].double()
        w = torch.where(expo > 0, expo ** c.candidate_power, torch.zeros_like(expo))
        if float(w.sum()) <= 0:
            raise ValueError(f"{source}: no video was exposed in the logs")
        self.candidate_prob = (w / w.sum()).float()
        self.candidate_cdf = (w / w.sum()).cumsum(0).float()
        self.candidate_cdf[int(torch.nonzero(w > 0).max()):] = 1.0  # never past the last exposed video
        # Inverse-CDF lookup table: cell j of [0, 1) → first video whose CDF reaches j / M; a draw
        # u is then refined by stepping while cdf < u (at most the largest count of CDF steps in one cell).
        m = 1 << 16
        self._cdf_table = torch.searchsorted(self.candidate_cdf, torch.arange(m, dtype=torch.float32) / m)
        cells = torch.bincount((self.candidate_cdf[:-1] * m).long().clamp(max=m - 1), minlength=m)
        self._cdf_steps = int(cells.max()) + 1
        self.n_candidates = min(c.n_candidates, int((w > 0).sum()))
        if self.n_candidates < c.slate_size:
            raise ValueError(f"{source}: only {self.n_candidates} exposed videos, fewer than a slate of {c.slate_size}")
        self.tail_days = payload["return_tail"]["days"].long()
        self.tail_cdf = payload["return_tail"]["prob"].double().cumsum(0).float()
        self.same_day_quantiles = payload["same_day_quantiles"].float()
        self.inits = tuple(float(x) for x in payload["inits"])
        self.models: dict[str, torch.nn.Module] = {}
        for name, spec in payload["models"].items():
            m = build_model(spec["arch"])
            m.load_state_dict(spec["state"])
            m.eval().requires_grad_(False)
            self.models[name] = m
        self.feedback, self.leave, self.ret = self.models["feedback"], self.models["leave"], self.models["return"]
        with torch.no_grad():
            idx_u = torch.arange(len(self.user_ids))
            idx_v = torch.arange(len(self.video_ids))
            self.fb_user_part = self.feedback.user(self.user_static, idx_u)
            self.fb_video_part = self.feedback.video(self.video_static, idx_v)
            self.leave_user_part = self.leave.user(self.user_static, idx_u)
            self.return_user_part = self.ret.user(self.user_static, idx_u)
        g = torch.Generator().manual_seed((int(c.world_seed) * 7919 + 23) % (2**63))
        self.pred_noise = c.prediction_noise * torch.randn(len(self.video_ids), _R, generator=g)
        self.score_ref = self._score_reference()

    # ------------------------------------------------------------------------------------------
    @property
    def n_groups(self) -> int:
        return len(GROUPS)

    @property
    def n_videos(self) -> int:
        return len(self.video_ids)

    @property
    def logged(self) -> dict:
        """Statistics of the logs the world was fitted on (see :func:`rlur.data.sessions.logged_statistics`)."""
        return self.payload.get("logged", {})

    def draw_videos(self, u: torch.Tensor) -> torch.Tensor:
        """Videos for uniforms ``u`` in [0, 1) by the inverse exposure CDF (exact, table-accelerated)."""
        cdf = self.candidate_cdf
        idx = self._cdf_table[(u * len(self._cdf_table)).long().clamp_(max=len(self._cdf_table) - 1)]
        last = len(cdf) - 1
        for _ in range(self._cdf_steps):
            idx += (cdf[idx] < u) & (idx < last)
        return idx

    def sample_users(self, n: int, seed: int) -> dict[str, torch.Tensor]:
        """Draw ``n`` logged users uniformly (with replacement): ``uidx``, ``group``, ``concentration``."""
        if n <= 0:
            raise ValueError(f"number of users must be positive, got {n}")
        g = torch.Generator().manual_seed((int(seed) * 104729 + int(self.config.world_seed) * 31 + 7) % (2**63))
        pick = self.sim_users[torch.randint(0, len(self.sim_users), (n,), generator=g)]
        return {"uidx": pick, "group": self.user_group[pick].clone(),
                "concentration": self.user_concentration[pick].clone()}

    def fresh_context(self, n: int) -> torch.Tensor:
        """The context of a user's first request ever (used for reference scores)."""
        z = torch.zeros(n)
        zr = torch.zeros(n, len(RESPONSE_NAMES))
        er, ed, eq = self.inits
        return context_features(z, zr, zr, z, z, z, z, torch.full((n,), er), torch.full((n,), ed),
                                torch.full((n,), eq))

    def feedback_logits(self, uidx: torch.Tensor, video: torch.Tensor, ctx: torch.Tensor,
                        rep: torch.Tensor) -> torch.Tensor:
        """Feedback logits ``(b, C, len(FEEDBACK_OUTPUTS))`` for users ``(b,)``, videos ``(b, C)`` (no grad)."""
        m = self.feedback
        b, c = video.shape
        pre = self.fb_video_part.index_select(0, video.reshape(-1)).view(b, c, -1)
        pre += (self.fb_user_part[uidx] + m.ctx(ctx)).unsqueeze(1)
        pre.addcmul_(rep.unsqueeze(-1), m.rep).relu_()
        return m.head(m.trunk[1:](pre))

    def scores_from_logits(self, logits: torch.Tensor, video: torch.Tensor, noisy: bool = True) -> torch.Tensor:
        """The k point-wise scores ``(…, k)`` in SCORE_NAMES order (watch time in seconds)."""
        beh = logits[..., :_R]
        if noisy:
            beh = beh + self.pred_noise[video]
        p = torch.sigmoid(beh)
        frac = p[..., _LONG] * torch.sigmoid(logits[..., _W_LONG]) \
            + (1 - p[..., _LONG]) * torch.sigmoid(logits[..., _W_SHORT])
        watch = self.video_duration[video] * frac
        return torch.cat((watch.unsqueeze(-1), p[..., _SCORED]), dim=-1)

    def leave_prob(self, uidx: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.leave.head_from(self.leave_user_part[uidx] + self.leave.ctx(ctx)).squeeze(-1))

    def return_probs(self, uidx: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """``(b, K + 2)``: same day, day 1..K, '>K'."""
        return torch.softmax(self.ret.head_from(self.return_user_part[uidx] + self.ret.ctx(ctx)), dim=-1)

    @torch.no_grad()
    def _score_reference(self) -> torch.Tensor:
        users = self.sample_users(256, seed=-1)["uidx"]
        g = torch.Generator().manual_seed(12345)
        video = torch.multinomial(self.candidate_prob, 256 * 32, replacement=True, generator=g).view(256, 32)
        logits = self.feedback_logits(users, video, self.fresh_context(256), torch.zeros(256, 32))
        return self.scores_from_logits(logits, video).mean(dim=(0, 1)).clamp(min=1e-6)


def load_world(path: str | os.PathLike) -> LearnedWorld:
    """Load a learned world from a ``WORLD`` folder (holding ``world.pt``) or the ``world.pt`` file."""
    p = Path(path)
    f = p / WORLD_FILE if p.is_dir() else p
    if not f.is_file():
        raise FileNotFoundError(f"no learned world at {p} (expected {WORLD_FILE}; build one with "
                                "'rlur data fit --kuairand DIR --out WORLD')")
    try:
        payload = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors vary by cause (truncated, not a torch file, …)
        raise ValueError(f"{f} is not a readable rlur world file: {err}") from None
    if not isinstance(payload, dict):
        raise ValueError(f"{f} is not an rlur world file")
    return LearnedWorld(payload, source=str(f))


class LearnedRetentionEnv(RetentionEnv):
    """The batched retention environment on a :class:`LearnedWorld` (same interface as the built-in one).

    Args:
        world: a learned world, or a path for :func:`load_world`.
        n_users: B, users stepped together (drawn from the logged users).
        seed: seed of the users drawn and of every sampled response.
        chunk_size: users scored per chunk in the candidate stage (bounds memory, not results).
        ranking: ``"fusion"`` (rank by the action's fusion weights) or ``"logged"`` (replay the logged
            exposure distribution, ignoring the action).
    """

    def __init__(self, world: LearnedWorld | str | os.PathLike, n_users: int = 1024, seed: int = 0,
                 chunk_size: int = 256, ranking: str = "fusion") -> None:
        if ranking not in ("fusion", "logged"):
            raise ValueError(f"ranking must be 'fusion' or 'logged', got {ranking!r}")
        self.ranking = ranking
        self._bind(world if isinstance(world, LearnedWorld) else load_world(world), n_users, seed, chunk_size)
        self.reset(seed)

    # ------------------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Draw the users again from ``seed`` and start everyone's first session on day 0."""
        if seed is not None:
            self.seed = seed
        b, w = self.n_users, self.world
        users = w.sample_users(b, self.seed)
        self.rng = torch.Generator().manual_seed((int(self.seed) * 2654435761 + 3) % (2**63))
        self.uidx = users["uidx"]
        self.group = users["group"]
        self.interest_concentration = users["concentration"]
        er, ed, eq = w.inits
        self.day = torch.zeros(b, dtype=torch.long)
        self.opens_today = torch.zeros(b)
        self.n_sessions = torch.zeros(b)
        self.last_return_time = torch.zeros(b)
        self.ema_return_time = torch.full((b,), er)
        self.ema_depth = torch.full((b,), ed)
        self.ema_quality = torch.full((b,), eq)
        self.depth = torch.zeros(b)
        self.recent_topic = torch.zeros(b, self.config.n_topics)
        self.session_response = torch.zeros(b, len(RESPONSE_NAMES))
        self.last_response = torch.zeros(b, len(RESPONSE_NAMES))
        self.last_repetition = torch.zeros(b)
        return self.observe()

    def observe(self) -> torch.Tensor:
        """The flat observation ``(B, OBS_DIM)``, laid out as :data:`rlur.sim.env.OBS_FIELDS`."""
        depth = self.depth.clamp(min=1)[:, None]
        parts = [
            torch.nn.functional.one_hot(self.group, len(GROUPS)).float(),
            (self.depth / 10)[:, None],
            (self.opens_today / 3)[:, None],
            (self.last_return_time / 10)[:, None],
            (self.ema_return_time / 10)[:, None],
            (self.ema_depth / 20)[:, None],
            (self.n_sessions.log1p() / 5)[:, None],
            (self.recent_topic.max(1).values * _TOPIC_SCALE).clamp(max=1.0)[:, None],
            self.last_repetition[:, None],
            self.last_response,
            self.session_response / depth,
            self.ema_quality[:, None],
            self.interest_concentration[:, None],
        ]
        return torch.cat(parts, dim=1).float()

    def _context(self) -> torch.Tensor:
        return context_features(
            self.depth, self.session_response, self.last_response, self.last_repetition, self.opens_today,
            self.n_sessions, self.last_return_time, self.ema_return_time, self.ema_depth, self.ema_quality,
        )

    def _repetition(self, video: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        recent = self.recent_topic if rows is None else self.recent_topic[rows]
        return (recent.gather(1, self.world.video_topic[video]) * _TOPIC_SCALE).clamp(max=1.0)

    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def rank(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidate stage + fusion ranking. Returns ``(candidates (B, C), shown (B, S))``."""
        w, b, s = self.world, self.n_users, self.config.slate_size
        if self.ranking == "logged":
            # The first S distinct of 3·S exposure-weighted draws (sampling without replacement).
            draws = 3 * s
            cand = w.draw_videos(torch.rand(b, draws, generator=self.rng))
            srt, order = cand.sort(dim=1, stable=True)
            dup_sorted = torch.zeros_like(cand, dtype=torch.bool)
            dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
            dup = torch.zeros_like(dup_sorted).scatter_(1, order, dup_sorted)
            score = -torch.arange(draws, dtype=torch.float32).expand(b, draws).clone()
            score[dup] = float("-inf")
            return cand, cand.gather(1, score.topk(s, dim=1).indices)
        c = w.n_candidates
        # C exposure-weighted draws with replacement, generated in sorted order (uniform order
        # statistics from exponential spacings, then the inverse CDF), so duplicates are adjacent.
        e = -torch.log1p(-torch.rand(b, c + 1, generator=self.rng))
        u = (e.cumsum(1)[:, :c] / e.sum(1, keepdim=True))
        cand = w.draw_videos(u)
        dup = torch.zeros_like(cand, dtype=torch.bool)
        dup[:, 1:] = cand[:, 1:] == cand[:, :-1]
        top = torch.empty(b, s, dtype=torch.long)
        weights = action_to_weights(action, self.config.weight_max) * self._score_ref_inv
        ctx = self._context()
        for st in range(0, b, self.chunk_size):
            en = min(st + self.chunk_size, b)
            v = cand[st:en]
            logits = w.feedback_logits(self.uidx[st:en], v, ctx[st:en], self._repetition(v, slice(st, en)))
            x = w.scores_from_logits(logits, v, noisy=True)
            score = torch.bmm(x, weights[st:en].unsqueeze(-1)).squeeze(-1)
            score[dup[st:en]] = float("-inf")
            top[st:en] = score.topk(s, dim=1).indices
        return cand, cand.gather(1, top)

    @torch.no_grad()
    def step(self, action: torch.Tensor) -> StepResult:
        """Serve one request to every user with fusion action ``action (B, k)`` in [-1, 1]."""
        action = torch.as_tensor(action, dtype=torch.float32)
        if action.shape != (self.n_users, self.k):
            raise ValueError(f"action must have shape {(self.n_users, self.k)}, got {tuple(action.shape)}")
        if not torch.isfinite(action).all():
            raise ValueError("action contains NaN or inf")
        day = self.day.clone()
        _, shown = self.rank(action)
        responses, watch, frac, repetition = self._respond(shown)
        self._update_session(shown, responses, frac, repetition)
        ctx = self._context()
        session_end = self._leave(ctx)
        return_day, return_time = self._return(session_end, ctx)
        feedback = torch.cat((watch.sum(1, keepdim=True), responses.sum(1)), dim=1)
        return StepResult(
            obs=self.observe(), feedback=feedback, session_end=session_end, return_day=return_day,
            return_time=return_time, group=self.group.clone(), day=day, shown=shown,
        )

    # --- immediate feedback module ------------------------------------------------------------
    def _respond(self, shown: torch.Tensor):
        """Sample responses ``(B, S, R)`` 0/1, watch seconds ``(B, S)``, fraction and repetition."""
        w = self.world
        b, s = shown.shape
        repetition = self._repetition(shown)
        logits = w.feedback_logits(self.uidx, shown, self._context(), repetition)
        p = torch.sigmoid(logits[..., :_R])
        u = torch.rand(b, s, _R + 1, generator=self.rng)
        click = u[..., _CLICK] < p[..., _CLICK]
        long_view = u[..., _CLICK] < torch.minimum(p[..., _LONG], p[..., _CLICK])  # nested in clicks
        responses = (u[..., :_R] < p).float()
        responses[..., _CLICK] = click.float()
        responses[..., _LONG] = long_view.float()
        m = torch.where(long_view, torch.sigmoid(logits[..., _W_LONG]), torch.sigmoid(logits[..., _W_SHORT]))
        frac = (m * (0.5 + u[..., _R])).clamp(max=1.0)
        watch = frac * w.video_duration[shown]
        return responses, watch, frac, repetition

    def _update_session(self, shown, responses, frac, repetition) -> None:
        s = self.config.slate_size
        per_request = torch.cat((frac.mean(1, keepdim=True), responses.mean(1)), dim=1)
        self.last_response = per_request
        self.session_response = self.session_response + per_request
        self.depth = self.depth + 1
        self.last_repetition = repetition.mean(1)
        self.recent_topic = (self.recent_topic * _TOPIC_DECAY).scatter_add_(
            1, self.world.video_topic[shown], torch.full(shown.shape, 1.0 / s))

    # --- leave module -------------------------------------------------------------------------
    def _leave(self, ctx: torch.Tensor) -> torch.Tensor:
        p = self.world.leave_prob(self.uidx, ctx)
        u = torch.rand(self.n_users, generator=self.rng)
        return (u < p) | (self.depth >= self.config.max_session_depth)

    # --- return module ------------------------------------------------------------------------
    def _return(self, end: torch.Tensor, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw the return of every user whose session ended; start their next session."""
        c, w, b = self.config, self.world, self.n_users
        u = torch.rand(b, 3, generator=self.rng)  # class, tail day, same-day time: drawn for everyone
        probs = w.return_probs(self.uidx, ctx)
        no_reopen = (self.opens_today + 1 >= c.max_opens_per_day) | torch.tensor(c.session_mode == "day")
        probs[:, 0] = torch.where(no_reopen, 0.0, probs[:, 0])
        cdf = probs.cumsum(1)
        cdf = cdf / cdf[:, -1:].clamp(min=1e-12)
        cls = (cdf < u[:, :1]).sum(1).clamp(max=c.max_return_day + 1)
        tail = w.tail_days[torch.searchsorted(w.tail_cdf, u[:, 1].contiguous()).clamp(max=len(w.tail_days) - 1)]
        first = torch.where(cls > c.max_return_day, tail, cls).clamp(min=1)
        reopen = cls == 0
        q = w.same_day_quantiles
        pos = u[:, 2] * (len(q) - 1)
        lo = pos.floor().long().clamp(max=len(q) - 1)
        hi = (lo + 1).clamp(max=len(q) - 1)
        same_day_time = q[lo] + (q[hi] - q[lo]) * (pos - lo.float())
        return_day = torch.where(reopen, torch.zeros_like(first), first)
        return_time = torch.where(reopen, same_day_time, first.float())
        return_day = torch.where(end, return_day, torch.full_like(return_day, -1))
        return_time = torch.where(end, return_time, torch.full_like(return_time, float("nan")))
        if bool(end.any()):
            self._end_sessions(end, reopen, first, return_time)
        return return_day, return_time

    def _end_sessions(self, end, reopen, first, return_time) -> None:
        depth = self.depth.clamp(min=1)
        quality = self.session_response[:, 1 + _LONG] / depth
        rt = torch.nan_to_num(return_time)
        ema = lambda old, new: torch.where(end, _EMA * old + (1 - _EMA) * new, old)  # noqa: E731
        self.ema_return_time = ema(self.ema_return_time, rt)
        self.ema_depth = ema(self.ema_depth, self.depth)
        self.ema_quality = ema(self.ema_quality, quality)
        self.last_return_time = torch.where(end, rt, self.last_return_time)
        self.n_sessions = self.n_sessions + end.float()
        same_day = end & reopen
        new_day = end & ~reopen
        self.opens_today = torch.where(same_day, self.opens_today + 1,
                                       torch.where(new_day, 0.0, self.opens_today))
        self.day = torch.where(new_day, self.day + first, self.day)
        keep = (~end).float()
        self.depth = self.depth * keep
        self.session_response = self.session_response * keep[:, None]
        self.last_response = self.last_response * keep[:, None]
        self.last_repetition = self.last_repetition * keep
        self.recent_topic = self.recent_topic * keep[:, None]


def group_of_degree(degree: str) -> int:
    """Index in GROUPS of a KuaiRand ``user_active_degree`` (unknown values → 'low')."""
    return GROUPS.index(GROUP_OF_ACTIVE_DEGREE.get(str(degree), "low"))


def make_env(world_spec: str | os.PathLike | LearnedWorld | World | WorldConfig | None = None,
             n_users: int = 1024, seed: int = 0, **kwargs) -> RetentionEnv:
    """A retention environment: the built-in world for ``None``/a ``WorldConfig``/a ``World``, the
    learned one for a ``WORLD`` path (or ``world.pt``) or a :class:`LearnedWorld`.

    ``kwargs`` go to the environment (``chunk_size``; ``ranking`` for a learned world).
    """
    if world_spec is None or isinstance(world_spec, World | WorldConfig):
        return RetentionEnv(world_spec, n_users=n_users, seed=seed, **kwargs)
    if isinstance(world_spec, LearnedWorld):
        return LearnedRetentionEnv(world_spec, n_users=n_users, seed=seed, **kwargs)
    if isinstance(world_spec, str | os.PathLike):
        return LearnedRetentionEnv(load_world(world_spec), n_users=n_users, seed=seed, **kwargs)
    raise TypeError(f"world_spec must be None, a WorldConfig, a World, a LearnedWorld or a path; "
                    f"got {type(world_spec).__name__}")
