"""Gymnasium wrappers of the retention simulator: one user (``Env``) or a batch (``VectorEnv``).

* **Action**: ``a ∈ [-1, 1]^k`` (``Box(-1, 1, (8,), float32)``, :data:`SCORE_NAMES` order), mapped inside to
  fusion weights ``w = weight_max · (a + 1) / 2`` (:func:`rlur.sim.ranking.action_to_weights`); each
  predicted score is divided by ``world.score_ref`` (its typical value, or its typical spread across a
  request's candidates with ``score_scale="spread"``) before weighting.
* **Reward** (the paper's): ``-return_time`` (days until the user comes back, a same-day reopen
  counting a fraction of a day) on the request that ends a session, 0 on every other request.
  Everything else (immediate feedback, return day, group, calendar day) goes into ``info``.
* **Episodes**: a session end is not an episode end. There is no absorbing state, so ``terminated`` is
  always False. With ``episode="sessions"`` (the default) ``truncated`` becomes True at the end of
  the user's ``n_sessions``-th session, so the episode return is ``-n_sessions`` times the user's mean
  return time and ranks policies as ``avg_return_day_per_user`` does. With ``episode="days"`` it
  becomes True once the user's calendar day reaches ``horizon_days``; the return gaps of a fixed
  calendar window add up to about the window, so that return hardly differs between policies.
  Either way ``max_requests`` requests also truncate.
* **Info**: the same keys after every ``reset`` and ``step``, with sentinels where there is no value
  (``return_time`` −1.0 and ``return_day`` −1 while a session goes on, zero feedback after a reset;
  not NaN, which Gymnasium's determinism checks cannot compare).

Registered (:mod:`rlur.sim.registration`, on ``import rlur``) as ``rlur/Retention-v1`` (sessions) and
``rlur/Retention-v0`` (days): ``gymnasium.make("rlur/Retention-v1")`` and
``gymnasium.make_vec("rlur/Retention-v1", num_envs=B, vectorization_mode="vector_entry_point")``.
See ``docs/observation.md`` and ``docs/integrations.md``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import gymnasium
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from rlur.sim.env import OBS_DIM, OBS_FIELDS, RetentionEnv, StepResult
from rlur.sim.registration import ENV_ID, ENV_ID_DAYS, register_envs
from rlur.sim.world import BEHAVIOURS, SCORE_NAMES, World, WorldConfig

__all__ = [
    "ENV_ID",
    "ENV_ID_DAYS",
    "EPISODES",
    "FEEDBACK_NAMES",
    "RetentionGymEnv",
    "RetentionVectorEnv",
    "make_action_space",
    "make_observation_space",
    "observation_table_markdown",
    "register_envs",
]

#: Episode kinds: a fixed number of sessions, or a fixed calendar horizon.
EPISODES = ("sessions", "days")
#: Keys of ``info["feedback"]``: watch seconds of the slate, then the count of each behaviour on it.
FEEDBACK_NAMES: tuple[str, ...] = ("watch_time", *BEHAVIOURS)

_SEED_HIGH = 2**31 - 1  # simulator seeds are multiplied inside; keep them well within int64


def _resolve_world(world: World | WorldConfig | dict | None, world_seed: int | None) -> World:
    """Build the world from a ``World``, a ``WorldConfig`` (or its dict: an env spec read back from JSON,
    e.g. Minari's ``recover_environment``) or the defaults, with ``world_seed`` applied."""
    if isinstance(world, World):
        if world_seed is not None and world_seed != world.config.world_seed:
            raise ValueError(f"world_seed={world_seed} contradicts the World's {world.config.world_seed}")
        return world
    if isinstance(world, dict):
        world = WorldConfig.from_dict(world)
    config = world if world is not None else WorldConfig()
    if world_seed is not None:
        config = dataclasses.replace(config, world_seed=int(world_seed))
    return World(config)


def _check_limits(episode: str, n_sessions: int, horizon_days: int, max_requests: int) -> None:
    if episode not in EPISODES:
        raise ValueError(f"episode must be one of {', '.join(EPISODES)}, got {episode!r}")
    if n_sessions <= 0:
        raise ValueError(f"n_sessions must be positive, got {n_sessions}")
    if horizon_days <= 0:
        raise ValueError(f"horizon_days must be positive, got {horizon_days}")
    if max_requests <= 0:
        raise ValueError(f"max_requests must be positive, got {max_requests}")


def _check_render_mode(render_mode: str | None) -> None:
    """Only ``None``: a ``TypeError`` otherwise, on which SB3's ``make_vec_env`` retries without one."""
    if render_mode is not None:
        raise TypeError(f"render_mode={render_mode!r}: the retention environments render nothing; "
                        "pass render_mode=None")


def _feedback_sentinel() -> dict[str, float | int]:
    return {name: 0.0 if name == "watch_time" else 0 for name in FEEDBACK_NAMES}


def _draw_seed(rng: np.random.Generator) -> int:
    """A simulator seed drawn from the Gymnasium generator (so ``reset(seed=s)`` is reproducible)."""
    return int(rng.integers(0, _SEED_HIGH))


# ----------------------------------------------------------------------------------------------
# Spaces
# ----------------------------------------------------------------------------------------------
def _field_bounds(name: str, config: WorldConfig, max_requests: int) -> tuple[float, float]:
    """Bounds of one observation field (see ``OBS_FIELDS``); unknown fields are unbounded."""
    bounds = {
        "group_onehot": (0.0, 1.0),
        "request_index": (0.0, config.max_session_depth / 10),
        "opens_today": (0.0, config.max_opens_per_day / 3),
        "last_return_time": (0.0, config.return_horizon_days / 10),
        "ema_return_time": (0.0, max(config.return_horizon_days, 10) / 10),
        "ema_session_depth": (0.0, max(config.max_session_depth, 20) / 20),
        # sessions ≤ requests ≤ max_requests within an episode
        "log_sessions": (0.0, math.log1p(max_requests) / 5),
        "topic_concentration": (0.0, 1.0),
        "last_repetition": (0.0, 1.0),
        "last_response": (0.0, 1.0),
        "session_response": (0.0, 1.0),
        "ema_session_quality": (0.0, 1.0),
        "interest_concentration": (0.0, 1.0),
    }
    return bounds.get(name, (-math.inf, math.inf))


def make_observation_space(config: WorldConfig | None = None, max_requests: int = 2000) -> spaces.Box:
    """``Box((OBS_DIM,), float32)`` with per-field bounds (layout: ``rlur.sim.env.OBS_FIELDS``).

    The bounds hold by construction within an episode of at most ``max_requests`` requests; the
    wrappers clip observations to them, which only ever trims float rounding.
    """
    config = config or WorldConfig()
    low, high = [], []
    for name, size, _ in OBS_FIELDS:
        lo, hi = _field_bounds(name, config, max_requests)
        low += [lo] * size
        high += [hi] * size
    return spaces.Box(np.array(low, np.float32), np.array(high, np.float32), (OBS_DIM,), np.float32)


def make_action_space() -> spaces.Box:
    """``Box(-1, 1, (k,), float32)``; ``a`` maps to fusion weights ``w = weight_max · (a + 1) / 2``."""
    return spaces.Box(-1.0, 1.0, (len(SCORE_NAMES),), np.float32)


def observation_table_markdown() -> str:
    """The Markdown table of the observation layout, generated from ``OBS_FIELDS``."""
    lines = ["| Field | Indices | Size | Meaning |", "|---|---|---|---|"]
    start = 0
    for name, size, description in OBS_FIELDS:
        idx = f"`obs[{start}]`" if size == 1 else f"`obs[{start}:{start + size}]`"
        lines.append(f"| `{name}` | {idx} | {size} | {description.replace('|', '/')} |")
        start += size
    lines.append(f"| **total** | | **{OBS_DIM}** | `OBS_DIM` |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# Single user
# ----------------------------------------------------------------------------------------------
class RetentionGymEnv(gymnasium.Env[np.ndarray, np.ndarray]):
    """One simulated user as a Gymnasium ``Env`` (an internal :class:`RetentionEnv` with one user).

    Each ``reset`` draws a new user from the world's population, seeded from ``self.np_random``.
    ``step`` serves one request; the reward is ``-return_time`` (days) at a session end, else 0.

    ``info`` after ``reset`` and ``step`` (the same keys every time): ``session_end`` (bool),
    ``return_day`` (int: -1 while the session goes on, 0 for a same-day reopen, else days until the
    return), ``return_time`` (float days, −1.0 while the session goes on), ``feedback`` (dict over
    :data:`FEEDBACK_NAMES`: watch seconds, behaviour counts on the slate; zeros after a reset),
    ``group`` (int index into ``GROUPS``), ``day`` (calendar day of the request just served, 0 after
    a reset) and ``sessions`` (sessions ended in this episode).

    Args:
        world: a ``World`` or ``WorldConfig`` (default: ``WorldConfig()``).
        world_seed: overrides the config's ``world_seed``.
        episode: ``"sessions"`` (truncate after ``n_sessions`` sessions) or ``"days"`` (truncate once
            the user's calendar day reaches ``horizon_days``).
        n_sessions: sessions per episode with ``episode="sessions"``.
        horizon_days: calendar days per episode with ``episode="days"``.
        max_requests: truncate after this many requests in any case.
        render_mode: only ``None`` (a ``TypeError`` otherwise: nothing to render).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(
        self, world: World | WorldConfig | None = None, *, world_seed: int | None = None,
        episode: str = "sessions", n_sessions: int = 20, horizon_days: int = 30, max_requests: int = 2000,
        render_mode: str | None = None,
    ) -> None:
        _check_render_mode(render_mode)
        _check_limits(episode, n_sessions, horizon_days, max_requests)
        self.world = _resolve_world(world, world_seed)
        self.episode = episode
        self.n_sessions = int(n_sessions)
        self.horizon_days = int(horizon_days)
        self.max_requests = int(max_requests)
        self.render_mode = render_mode
        self.observation_space = make_observation_space(self.world.config, self.max_requests)
        self.action_space = make_action_space()
        self.sim = RetentionEnv(self.world, n_users=1, seed=0)
        self.requests = 0
        self.sessions = 0

    def _obs(self, obs: torch.Tensor) -> np.ndarray:
        space = self.observation_space
        return np.clip(obs[0].numpy(), space.low, space.high).astype(np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        obs = self.sim.reset(_draw_seed(self.np_random))
        self.requests = self.sessions = 0
        info = {"session_end": False, "return_day": -1, "return_time": -1.0, "feedback": _feedback_sentinel(),
                "group": int(self.sim.group[0]), "day": int(self.sim.day[0]), "sessions": 0}
        return self._obs(obs), info

    def _episode_over(self) -> bool:
        if self.requests >= self.max_requests:
            return True
        if self.episode == "sessions":
            return self.sessions >= self.n_sessions
        return int(self.sim.day[0]) >= self.horizon_days

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        a = np.asarray(action, dtype=np.float32)
        if a.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {a.shape}")
        r = self.sim.step(torch.tensor(a).unsqueeze(0))  # raises ValueError on NaN / inf
        self.requests += 1
        end = bool(r.session_end[0])
        self.sessions += end
        return_time = float(r.return_time[0]) if end else -1.0
        info: dict[str, Any] = {
            "session_end": end,
            "return_day": int(r.return_day[0]),
            "return_time": return_time,
            "feedback": {
                name: (float(v) if name == "watch_time" else round(v))
                for name, v in zip(FEEDBACK_NAMES, r.feedback[0].tolist(), strict=True)
            },
            "group": int(r.group[0]),
            "day": int(r.day[0]),
            "sessions": self.sessions,
        }
        reward = -return_time if end else 0.0
        return self._obs(r.obs), reward, False, self._episode_over(), info


# ----------------------------------------------------------------------------------------------
# Batch of users
# ----------------------------------------------------------------------------------------------
def _per_user_fields(world: World) -> tuple[str, ...]:
    """Names of the simulator's per-user state tensors (leading dimension = number of users).

    Found by comparing a 1-user and a 2-user simulator, so new state added to ``RetentionEnv`` is
    picked up without listing it here.
    """
    one, two = RetentionEnv(world, n_users=1), RetentionEnv(world, n_users=2)
    names = []
    for name, v1 in vars(one).items():
        v2 = getattr(two, name, None)
        if isinstance(v1, torch.Tensor) and isinstance(v2, torch.Tensor) and v1.dim() >= 1:
            if v1.shape[0] == 1 and v2.shape[0] == 2 and v1.shape[1:] == v2.shape[1:]:
                names.append(name)
    return tuple(names)


def _with_masks(values: dict[str, Any], mask: np.ndarray) -> dict[str, Any]:
    """Add Gymnasium's ``_key`` mask next to every key (recursively for nested dicts)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        out[key] = _with_masks(value, mask) if isinstance(value, dict) else value
        out[f"_{key}"] = mask.copy()
    return out


def _restrict_masks(info: dict[str, Any], mask: np.ndarray) -> dict[str, Any]:
    """Copy of a step info whose ``_key`` masks are and-ed with ``mask`` (for ``final_info``)."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        if isinstance(value, dict):
            out[key] = _restrict_masks(value, mask)
        elif key.startswith("_"):
            out[key] = value & mask
        else:
            out[key] = value.copy()
    return out


class RetentionVectorEnv(VectorEnv):
    """``num_envs`` users stepped together by one :class:`RetentionEnv` (no Python loop over users).

    Same spaces (batched), reward, episodes and info keys as :class:`RetentionGymEnv`, as NumPy
    arrays: ``info[key]`` is ``(num_envs, …)`` with Gymnasium's mask ``info["_key"]``; every key is
    present after every ``reset`` and ``step``, holding its sentinel where the mask is False.
    ``info["return_time"]`` is −1.0 where ``info["_return_time"]`` (= ``session_end``) is False. After
    a reset, the step keys (``session_end``, ``return_day``, ``return_time``, ``feedback``) hold
    their sentinels and are masked out.

    **Autoreset: ``AutoresetMode.SAME_STEP``.** A user whose episode is truncated on this step is
    replaced by a freshly drawn user *within the same step*: the returned observation is the new
    user's first one; ``info["final_obs"]`` (``(num_envs, OBS_DIM)`` float32, only present when some
    user was truncated) holds the observation reached before the reset (identical to the returned
    one for users not reset); ``info["final_info"]`` holds the step's info for the reset users, and
    ``info["_final_obs"]`` / ``info["_final_info"]`` mark them. As with ``SyncVectorEnv`` in this
    mode, a reset user's top-level info is its reset info: ``group`` and ``day`` describe the new
    user, ``sessions`` is 0, and the masks of the step keys (``_session_end``, ``_return_day``,
    ``_return_time``, ``_feedback``) are False for it, although the arrays keep the transition's
    values. The reward
    is the transition's. ``reset(options={"reset_mask": mask})`` replaces only the masked users.
    """

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self, num_envs: int = 1, world: World | WorldConfig | None = None, *, world_seed: int | None = None,
        episode: str = "sessions", n_sessions: int = 20, horizon_days: int = 30, max_requests: int = 2000,
        chunk_size: int = 512, render_mode: str | None = None,
    ) -> None:
        if num_envs <= 0:
            raise ValueError(f"num_envs must be positive, got {num_envs}")
        _check_render_mode(render_mode)
        _check_limits(episode, n_sessions, horizon_days, max_requests)
        self.world = _resolve_world(world, world_seed)
        self.num_envs = int(num_envs)
        self.episode = episode
        self.n_sessions = int(n_sessions)
        self.horizon_days = int(horizon_days)
        self.max_requests = int(max_requests)
        self.chunk_size = int(chunk_size)
        self.render_mode = render_mode
        self.single_observation_space = make_observation_space(self.world.config, self.max_requests)
        self.single_action_space = make_action_space()
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.sim = RetentionEnv(self.world, n_users=self.num_envs, seed=0, chunk_size=self.chunk_size)
        self.requests = np.zeros(self.num_envs, dtype=np.int64)
        self.sessions = np.zeros(self.num_envs, dtype=np.int64)
        self._user_fields = _per_user_fields(self.world)
        self._low = self.single_observation_space.low
        self._high = self.single_observation_space.high

    def _obs(self) -> np.ndarray:
        return np.clip(self.sim.observe().numpy(), self._low, self._high).astype(np.float32)

    def _reset_users(self, mask: np.ndarray) -> None:
        """Replace the users where ``mask`` by freshly drawn ones (seeded from ``self.np_random``)."""
        n = int(mask.sum())
        if n == 0:
            return
        seed = _draw_seed(self.np_random)
        fresh = RetentionEnv(self.world, n_users=n, seed=seed, chunk_size=self.chunk_size)
        rows = torch.from_numpy(mask.copy())
        for name in self._user_fields:
            value = getattr(self.sim, name).clone()  # never mutate tensors handed out earlier
            value[rows] = getattr(fresh, name)
            setattr(self.sim, name, value)
        self.requests[mask] = 0
        self.sessions[mask] = 0

    def _reset_info(self, mask: np.ndarray) -> dict[str, Any]:
        """Every key: ``group``, ``day`` and ``sessions`` (0) where ``mask``, sentinels for the step keys."""
        n = self.num_envs
        info = _with_masks({
            "session_end": np.zeros(n, dtype=np.bool_),
            "return_day": np.full(n, -1, dtype=np.int64),
            "return_time": np.full(n, -1.0),
            "feedback": {name: np.zeros(n, dtype=np.float64 if i == 0 else np.int64)
                         for i, name in enumerate(FEEDBACK_NAMES)},
        }, np.zeros(n, dtype=np.bool_))
        info.update(_with_masks({"group": self.sim.group.numpy().copy(), "day": self.sim.day.numpy().copy(),
                                 "sessions": self.sessions.copy()}, mask))
        return info

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every user (or only ``options["reset_mask"]``); ``seed`` seeds ``self.np_random``."""
        super().reset(seed=seed)
        mask = (options or {}).get("reset_mask")
        if mask is None:
            self.sim.reset(_draw_seed(self.np_random))
            self.requests[:] = 0
            self.sessions[:] = 0
            mask = np.ones(self.num_envs, dtype=np.bool_)
        else:
            mask = np.asarray(mask)
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
                raise ValueError(f"reset_mask must be a bool array of shape ({self.num_envs},)")
            self._reset_users(mask)
        return self._obs(), self._reset_info(mask)

    def _step_info(self, r: StepResult) -> dict[str, Any]:
        everyone = np.ones(self.num_envs, dtype=np.bool_)
        end = r.session_end.numpy().copy()
        feedback = r.feedback.double().numpy()
        info = _with_masks({
            "session_end": end,
            "return_day": r.return_day.numpy().copy(),
            "feedback": {
                name: feedback[:, i].copy() if i == 0 else np.rint(feedback[:, i]).astype(np.int64)
                for i, name in enumerate(FEEDBACK_NAMES)
            },
            "group": r.group.numpy().copy(),
            "day": r.day.numpy().copy(),
            "sessions": self.sessions.copy(),
        }, everyone)
        info["return_time"] = np.where(end, r.return_time.double().numpy(), -1.0)
        info["_return_time"] = end.copy()
        return info

    def step(
        self, actions: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        a = np.asarray(actions, dtype=np.float32)
        if a.shape != self.action_space.shape:
            raise ValueError(f"actions must have shape {self.action_space.shape}, got {a.shape}")
        r = self.sim.step(torch.tensor(a))  # raises ValueError on NaN / inf
        self.requests += 1
        self.sessions += r.session_end.numpy()
        info = self._step_info(r)
        end = info["session_end"]
        rewards = np.where(end, -info["return_time"], 0.0)
        terminations = np.zeros(self.num_envs, dtype=np.bool_)
        truncations = self._episode_over()
        obs = self._obs()
        if truncations.any():
            info["final_info"] = _restrict_masks(info, truncations)
            info["_final_info"] = truncations.copy()
            info["final_obs"], info["_final_obs"] = obs, truncations.copy()
            self._reset_users(truncations)
            obs = self._obs()
            # As in SyncVectorEnv: a reset user's top-level info is its reset info (group, day); its
            # step keys keep the transition's values but are masked out (they live in final_info).
            kept = ~truncations
            for key in ("session_end", "return_day", "return_time", "feedback"):
                if isinstance(info[key], dict):
                    info[key] = _restrict_masks(info[key], kept)
                info[f"_{key}"] = info[f"_{key}"] & kept
            info["group"] = np.where(truncations, self.sim.group.numpy(), info["group"])
            info["day"] = np.where(truncations, self.sim.day.numpy(), info["day"])
            info["sessions"] = np.where(truncations, 0, info["sessions"])
        return obs, rewards, terminations, truncations, info

    def _episode_over(self) -> np.ndarray:
        """``(num_envs,)`` bool: the users whose episode ends on this step."""
        if self.episode == "sessions":
            over = self.sessions >= self.n_sessions
        else:
            over = self.sim.day.numpy() >= self.horizon_days
        return over | (self.requests >= self.max_requests)
