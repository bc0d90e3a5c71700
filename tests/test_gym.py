"""Gymnasium wrappers: API conformance, registration, seeding, episodes, stable info keys and autoreset."""

from __future__ import annotations

import copy
import itertools
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

from rlur.sim import gym_env
from rlur.sim.env import OBS_DIM, OBS_FIELDS, RetentionEnv
from rlur.sim.gym_env import (
    ENV_ID,
    ENV_ID_DAYS,
    FEEDBACK_NAMES,
    RetentionGymEnv,
    RetentionVectorEnv,
    make_observation_space,
    observation_table_markdown,
    register_envs,
)
from rlur.sim.world import SCORE_NAMES, World, WorldConfig

K = len(SCORE_NAMES)
SMALL = WorldConfig(n_videos=500, n_candidates=50)
DAYS = {"episode": "days"}  # the calendar-horizon episodes
STEP_KEYS = {"session_end", "return_day", "return_time", "feedback", "group", "day", "sessions"}
DOC = Path(__file__).resolve().parents[1] / "docs" / "observation.md"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small_world() -> World:
    return World(SMALL)


def _assert_same(a: Any, b: Any, path: str = "") -> None:
    """Recursive exact equality of nested dicts / arrays / scalars (NaN equals NaN)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for key in a:
            _assert_same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype, path
        np.testing.assert_array_equal(a, b, err_msg=path)
    else:
        assert type(a) is type(b) and (a == b or (a != a and b != b)), f"{path}: {a!r} != {b!r}"


# ----------------------------------------------------------------------------------------------
# API conformance
# ----------------------------------------------------------------------------------------------
def test_check_env_passes_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = gymnasium.make(ENV_ID, world=SMALL)  # spec set, so the render and close checks run too
        check_env(env.unwrapped)
        check_env(RetentionGymEnv(SMALL, horizon_days=5), skip_render_check=True)
        # the passive checker that make() adds stays quiet on reset and step
        env.reset(seed=0)
        env.action_space.seed(0)
        for _ in range(5):
            env.step(env.action_space.sample())
        env.close()


def test_make_single_env_spaces_and_types() -> None:
    env = gymnasium.make(ENV_ID)
    assert isinstance(env.unwrapped, RetentionGymEnv)
    assert env.observation_space.shape == (OBS_DIM,) and env.observation_space.dtype == np.float32
    assert env.action_space == gymnasium.spaces.Box(-1, 1, (K,), np.float32)
    obs, info = env.reset(seed=1)
    assert obs.shape == (OBS_DIM,) and obs.dtype == np.float32 and obs in env.observation_space
    assert set(info) == STEP_KEYS and info["day"] == 0 and info["sessions"] == 0
    assert info["return_time"] == -1.0 and info["return_day"] == -1 and not any(info["feedback"].values())
    obs, reward, terminated, truncated, info = env.step(np.zeros(K, np.float32))
    assert obs.dtype == np.float32 and obs in env.observation_space
    assert isinstance(reward, float) and terminated is False and truncated is False
    assert set(info) == STEP_KEYS
    assert tuple(info["feedback"]) == FEEDBACK_NAMES
    assert all(isinstance(info["feedback"][n], int) for n in FEEDBACK_NAMES[1:])


def test_make_vec_shapes_and_dtypes() -> None:
    envs = gymnasium.make_vec(ENV_ID, num_envs=8, vectorization_mode="vector_entry_point", world=SMALL)
    assert isinstance(envs, RetentionVectorEnv) and envs.num_envs == 8
    assert envs.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
    assert envs.single_observation_space.shape == (OBS_DIM,)
    assert envs.single_action_space.shape == (K,)
    assert envs.observation_space.shape == (8, OBS_DIM) and envs.action_space.shape == (8, K)
    obs, info = envs.reset(seed=0)
    assert obs.shape == (8, OBS_DIM) and obs.dtype == np.float32 and obs in envs.observation_space
    assert info["group"].shape == (8,) and info["_group"].all() and (info["day"] == 0).all()
    assert STEP_KEYS <= set(info) and not info["_session_end"].any() and (info["return_time"] == -1).all()
    envs.action_space.seed(0)
    for _ in range(10):
        obs, rewards, terminated, truncated, info = envs.step(envs.action_space.sample())
        assert obs.shape == (8, OBS_DIM) and obs.dtype == np.float32 and obs in envs.observation_space
        assert rewards.shape == (8,) and rewards.dtype == np.float64
        assert terminated.dtype == np.bool_ and truncated.dtype == np.bool_ and not terminated.any()
        assert info["session_end"].dtype == np.bool_ and info["return_day"].dtype == np.int64
        assert info["return_time"].dtype == np.float64 and info["day"].dtype == np.int64
        assert info["feedback"]["watch_time"].dtype == np.float64
        assert all(info["feedback"][n].dtype == np.int64 for n in FEEDBACK_NAMES[1:])
        assert all(info[f"_{k}"].shape == (8,) for k in ("session_end", "return_day", "feedback", "day"))
        np.testing.assert_array_equal(info["_return_time"], info["session_end"])
        np.testing.assert_array_equal(info["return_time"] >= 0, info["session_end"])
        np.testing.assert_array_equal(rewards, np.where(info["session_end"], -info["return_time"], 0.0))
    envs.close()


def test_register_is_idempotent() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gymnasium warns when overriding a registered id
        register_envs()
        register_envs()
    for env_id, episode in ((ENV_ID, "sessions"), (ENV_ID_DAYS, "days")):
        spec = gymnasium.spec(env_id)
        assert spec.entry_point == "rlur.sim.gym_env:RetentionGymEnv"
        assert spec.vector_entry_point == "rlur.sim.gym_env:RetentionVectorEnv"
        assert spec.kwargs == {"episode": episode}
    assert gymnasium.make(ENV_ID, world=SMALL).unwrapped.episode == "sessions"
    with pytest.warns(DeprecationWarning, match="out of date"):  # v0 keeps the calendar episodes
        assert gymnasium.make(ENV_ID_DAYS, world=SMALL).unwrapped.episode == "days"
    with pytest.warns(DeprecationWarning, match="out of date"):
        envs = gymnasium.make_vec(ENV_ID_DAYS, num_envs=2, vectorization_mode="vector_entry_point", world=SMALL)
    assert envs.episode == "days"


def test_import_rlur_registers_without_importing_the_simulator() -> None:
    code = ("import sys, gymnasium, rlur; assert 'rlur.sim.gym_env' not in sys.modules; "
            "print(type(gymnasium.make('rlur/Retention-v1').unwrapped).__name__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "RetentionGymEnv"


def test_render_mode_none_or_a_type_error(small_world: World) -> None:
    assert gymnasium.make(ENV_ID, world=small_world, render_mode=None).unwrapped.render_mode is None
    for make in (lambda m: RetentionGymEnv(small_world, render_mode=m),
                 lambda m: RetentionVectorEnv(2, small_world, render_mode=m)):
        with pytest.raises(TypeError, match="render nothing"):  # SB3's make_vec_env retries on a TypeError
            make("rgb_array")


def test_world_arguments(small_world: World) -> None:
    a = RetentionGymEnv(SMALL, world_seed=1)
    b = RetentionGymEnv(small_world)
    assert a.world.config.world_seed == 1 and b.world is small_world
    assert not torch.equal(a.world.video_quality, b.world.video_quality)
    with pytest.raises(ValueError):
        RetentionGymEnv(small_world, world_seed=5)
    for bad in ({"horizon_days": 0}, {"n_sessions": 0}, {"max_requests": 0}, {"episode": "weeks"}):
        with pytest.raises(ValueError):
            RetentionGymEnv(SMALL, **bad)
        with pytest.raises(ValueError):
            RetentionVectorEnv(2, SMALL, **bad)
    with pytest.raises(ValueError):
        RetentionVectorEnv(0, SMALL)


def test_invalid_actions_raise(small_world: World) -> None:
    env = RetentionGymEnv(small_world)
    env.reset(seed=0)
    for bad in (np.zeros(K + 1), np.zeros((1, K)), np.full(K, np.nan), np.full(K, np.inf)):
        with pytest.raises(ValueError):
            env.step(bad)
    envs = RetentionVectorEnv(4, small_world)
    envs.reset(seed=0)
    for bad in (np.zeros((3, K)), np.zeros(K), np.full((4, K), np.nan)):
        with pytest.raises(ValueError):
            envs.step(bad)
    with pytest.raises(ValueError):
        envs.reset(options={"reset_mask": np.ones(3, dtype=bool)})


# ----------------------------------------------------------------------------------------------
# Seeding
# ----------------------------------------------------------------------------------------------
def _single_trajectory(env: RetentionGymEnv, seed: int | None, steps: int) -> list:
    out: list = [env.reset(seed=seed)]
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, K)).astype(np.float32)
    out += [env.step(a) for a in actions]
    return out


def test_single_same_seed_same_trajectory(small_world: World) -> None:
    a = _single_trajectory(RetentionGymEnv(small_world), 7, 60)
    b = _single_trajectory(RetentionGymEnv(small_world), 7, 60)
    for x, y in zip(a, b, strict=True):
        for u, v in zip(x, y, strict=True):
            _assert_same(u, v)
    # another seed, or an unseeded reset continuing the generator, gives another trajectory
    env = RetentionGymEnv(small_world)
    _single_trajectory(env, 7, 1)
    c = _single_trajectory(env, None, 60)
    d = _single_trajectory(RetentionGymEnv(small_world), 8, 60)
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a, c, strict=True))
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a, d, strict=True))


def _vector_trajectory(envs: RetentionVectorEnv, seed: int, steps: int) -> list:
    out: list = [envs.reset(seed=seed)]
    actions = np.random.default_rng(1).uniform(-1, 1, (steps, envs.num_envs, K)).astype(np.float32)
    out += [envs.step(a) for a in actions]
    return out


def test_vector_same_seed_same_trajectory(small_world: World) -> None:
    kw = {"n_sessions": 2, "max_requests": 25}  # several autoresets within the run
    a = _vector_trajectory(RetentionVectorEnv(6, small_world, **kw), 3, 60)
    b = _vector_trajectory(RetentionVectorEnv(6, small_world, **kw), 3, 60)
    assert any("final_obs" in x[-1] for x in a[1:])
    for x, y in zip(a, b, strict=True):
        for u, v in zip(x, y, strict=True):
            _assert_same(u, v)
    c = _vector_trajectory(RetentionVectorEnv(6, small_world, **kw), 4, 5)
    assert not np.array_equal(a[0][0], c[0][0])


# ----------------------------------------------------------------------------------------------
# Sessions, truncation, autoreset
# ----------------------------------------------------------------------------------------------
def test_session_end_in_info_without_terminating(small_world: World) -> None:
    env = RetentionGymEnv(small_world, n_sessions=10**6)
    env.reset(seed=2)
    ends = 0
    for t in range(300):
        _, reward, terminated, truncated, info = env.step(np.zeros(K, np.float32))
        assert terminated is False and truncated is False
        if info["session_end"]:
            ends += 1
            assert info["return_day"] >= 0 and reward == -info["return_time"] < 0
        else:
            assert info["return_day"] == -1 and reward == 0.0 and info["return_time"] == -1.0
        assert env.requests == t + 1 and info["sessions"] == ends
    assert ends >= 3


def test_single_truncation_after_n_sessions(small_world: World) -> None:
    env = RetentionGymEnv(small_world, n_sessions=3)
    env.reset(seed=4)
    total, ends = 0.0, []
    for _ in range(2000):
        _, reward, terminated, truncated, info = env.step(np.zeros(K, np.float32))
        total += reward
        if info["session_end"]:
            ends.append(info["return_time"])
        assert not terminated and truncated == (len(ends) == 3)
        if truncated:
            break
    assert truncated and info["session_end"] and info["sessions"] == 3
    assert total == pytest.approx(-sum(ends))  # the episode return is −3 × the user's mean return time


def test_single_truncation_at_horizon(small_world: World) -> None:
    env = RetentionGymEnv(small_world, horizon_days=3, **DAYS)
    env.reset(seed=0)
    for _ in range(2000):
        _, _, terminated, truncated, info = env.step(np.zeros(K, np.float32))
        assert not terminated
        assert info["day"] < 3  # the request just served was before the horizon
        next_day = info["day"] + (info["return_day"] if info["session_end"] else 0)
        assert truncated == (next_day >= 3)
        if truncated:
            break
    assert truncated and info["session_end"] and info["return_day"] >= 1
    env = RetentionGymEnv(small_world, n_sessions=10**6, max_requests=5)
    env.reset(seed=0)
    flags = [env.step(np.zeros(K, np.float32))[3] for _ in range(5)]
    assert flags == [False] * 4 + [True]
    env.reset()
    assert env.requests == 0


def test_vector_per_user_truncation_and_same_step_autoreset(small_world: World) -> None:
    horizon, n = 2, 8
    envs = RetentionVectorEnv(n, small_world, horizon_days=horizon, **DAYS)
    obs, _ = envs.reset(seed=5)
    requests = np.zeros(n, dtype=np.int64)
    rng = np.random.default_rng(0)
    seen = np.zeros(n, dtype=bool)
    for _ in range(400):
        obs, _, terminated, truncated, info = envs.step(rng.uniform(-1, 1, (n, K)))
        requests += 1
        step_info = info.get("final_info", info)  # the step's own info (before any reset)
        advance = np.where(step_info["session_end"], np.maximum(step_info["return_day"], 0), 0)
        np.testing.assert_array_equal(truncated, step_info["day"] + advance >= horizon)
        assert not terminated.any()
        if truncated.any():
            assert info["_final_obs"].tolist() == truncated.tolist() == info["_final_info"].tolist()
            np.testing.assert_array_equal(info["final_obs"][~truncated], obs[~truncated])
            assert info["final_info"]["_session_end"].tolist() == truncated.tolist()
            assert info["final_info"]["feedback"]["_click"].tolist() == truncated.tolist()
            for key in ("session_end", "return_day", "feedback"):  # top level: the reset info
                assert info[f"_{key}"].tolist() == (~truncated).tolist(), key
            np.testing.assert_array_equal(info["session_end"], info["final_info"]["session_end"])
            # reset users start afresh: day 0, first request of a first session
            assert (info["day"][truncated] == 0).all() and (envs.sim.day.numpy()[truncated] == 0).all()
            assert (envs.sim.n_sessions.numpy()[truncated] == 0).all() and (envs.requests[truncated] == 0).all()
            assert (obs[truncated, 4] == 0).all()  # request_index
            requests[truncated] = 0
            seen |= truncated
        else:
            assert "final_obs" not in info and "final_info" not in info
        np.testing.assert_array_equal(envs.requests, requests)
        if seen.all():
            break
    assert seen.all(), "every user should reach the horizon"


def test_vector_max_requests_truncation(small_world: World) -> None:
    envs = RetentionVectorEnv(4, small_world, n_sessions=10**6, max_requests=3)
    envs.reset(seed=0)
    flags = [envs.step(np.zeros((4, K)))[3] for _ in range(7)]
    expected = [False, False, True, False, False, True, False]
    assert [bool(f.all()) for f in flags] == expected == [bool(f.any()) for f in flags]


def test_record_episode_statistics_under_same_step(small_world: World) -> None:
    envs = gymnasium.wrappers.vector.RecordEpisodeStatistics(
        RetentionVectorEnv(4, small_world, n_sessions=2, max_requests=40),
    )
    envs.reset(seed=1)
    returns, lengths, done_any = np.zeros(4), np.zeros(4, dtype=np.int64), False
    for _ in range(200):
        _, rewards, _, truncated, info = envs.step(np.zeros((4, K)))
        returns += rewards
        lengths += 1
        if truncated.any():
            done_any = True
            np.testing.assert_allclose(info["episode"]["r"][truncated], returns[truncated])
            np.testing.assert_array_equal(info["episode"]["l"][truncated], lengths[truncated])
            returns[truncated], lengths[truncated] = 0.0, 0
    assert done_any


def test_reset_splices_complete_fresh_users(small_world: World) -> None:
    """A (partial) reset copies every per-user state tensor of freshly drawn users."""
    n = 6
    envs = RetentionVectorEnv(n, small_world)
    envs.reset(seed=0)
    for _ in range(15):
        envs.step(np.full((n, K), 0.3))
    before = {k: v.clone() for k, v in vars(envs.sim).items() if isinstance(v, torch.Tensor)}
    obs_before = envs._obs()
    mask = np.array([True, False, True, True, False, False])
    seed = gym_env._draw_seed(copy.deepcopy(envs.np_random))
    obs, info = envs.reset(options={"reset_mask": mask})
    fresh = RetentionEnv(small_world, n_users=int(mask.sum()), seed=seed)
    rows = torch.from_numpy(mask)
    per_user = 0
    for name, value in vars(fresh).items():
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == mask.sum() != n:
            per_user += 1
            now = getattr(envs.sim, name)
            assert torch.equal(now[rows], value), name
            assert torch.equal(now[~rows], before[name][~rows]), name
    assert per_user >= 10  # group, interest, habit, day, depth, fatigue, …
    np.testing.assert_array_equal(obs[mask], np.clip(fresh.observe().numpy(), envs._low, envs._high))
    np.testing.assert_array_equal(obs[~mask], obs_before[~mask])
    assert info["_group"].tolist() == mask.tolist()


# ----------------------------------------------------------------------------------------------
# Observation space and its documentation
# ----------------------------------------------------------------------------------------------
def test_observation_bounds_hold_before_clipping(small_world: World) -> None:
    """The Box bounds hold for the raw simulator output (clipping only trims float rounding)."""
    steps = 150
    space = make_observation_space(small_world.config, max_requests=steps)
    env = RetentionEnv(small_world, n_users=32, seed=0)
    g = torch.Generator().manual_seed(0)
    one_hot = -torch.ones(32, K)
    one_hot[torch.arange(32), torch.arange(32) % K] = 1.0  # extreme actions: repetitive slates
    lo, hi = torch.from_numpy(space.low) - 1e-5, torch.from_numpy(space.high) + 1e-5
    for t in range(steps):
        action = one_hot if t % 2 else torch.rand(32, K, generator=g) * 2 - 1
        obs = env.step(action).obs
        assert ((obs >= lo) & (obs <= hi)).all(), (obs < lo).any(0) | (obs > hi).any(0)
    assert np.isfinite(space.high).all()


def test_observation_doc_table_is_current() -> None:
    table = observation_table_markdown()
    assert table.count("\n") == len(OBS_FIELDS) + 3
    assert all(f"`{name}`" in table for name, _, _ in OBS_FIELDS) and f"**{OBS_DIM}**" in table
    text = DOC.read_text(encoding="utf-8")
    found = re.search(r"<!-- obs-table:start -->\n(.*?)<!-- obs-table:end -->", text, re.S)
    assert found, "docs/observation.md lost its obs-table markers"
    assert found.group(1) == table, (
        "docs/observation.md is stale: paste rlur.sim.gym_env.observation_table_markdown() between the markers"
    )


# ----------------------------------------------------------------------------------------------
# Stable info keys
# ----------------------------------------------------------------------------------------------
def _structure(info: dict) -> dict:
    """Keys and value types of a (nested) info dict."""
    return {k: _structure(v) if isinstance(v, dict) else type(v) for k, v in info.items()}


def test_single_info_has_the_same_keys_and_types_at_every_step(small_world: World) -> None:
    env = RetentionGymEnv(small_world, n_sessions=4)
    _, info = env.reset(seed=3)
    first, ends, truncations = _structure(info), 0, 0
    for _ in range(400):
        _, _, _, truncated, info = env.step(np.full(K, 0.2, np.float32))
        assert _structure(info) == first
        ends += info["session_end"]
        if truncated:
            truncations += 1
            _, info = env.reset()
            assert _structure(info) == first
    assert ends >= 4 and truncations >= 1


def test_vector_info_has_the_same_keys_at_every_step(small_world: World) -> None:
    envs = RetentionVectorEnv(4, small_world, n_sessions=2)
    _, info = envs.reset(seed=3)
    keys = set(info)
    assert keys == STEP_KEYS | {f"_{k}" for k in STEP_KEYS}
    resets = 0
    for _ in range(150):
        _, _, _, truncated, info = envs.step(np.zeros((4, K)))
        assert set(info) - {"final_obs", "_final_obs", "final_info", "_final_info"} == keys
        assert set(info["feedback"]) == set(FEEDBACK_NAMES) | {f"_{n}" for n in FEEDBACK_NAMES}
        np.testing.assert_array_equal(info["return_time"][~info["session_end"]], -1.0)
        resets += int(truncated.sum())
    assert resets >= 4


# ----------------------------------------------------------------------------------------------
# The episode return ranks policies
# ----------------------------------------------------------------------------------------------
def _first_episode_returns(policy: Any, world: World, n_envs: int, n_sessions: int) -> np.ndarray:
    """Each slot's first episode return (the vector env, ``n_sessions`` sessions per episode)."""
    envs = RetentionVectorEnv(n_envs, world, n_sessions=n_sessions)
    obs, _ = envs.reset(seed=11)
    running, first = np.zeros(n_envs), np.full(n_envs, np.nan)
    while np.isnan(first).any():
        obs_t = torch.from_numpy(obs)
        action = policy.act(obs_t, obs_t[:, :4].argmax(1), deterministic=True).numpy()
        obs, rewards, _, truncated, _ = envs.step(action)
        running += rewards
        new = truncated & np.isnan(first)
        first[new] = running[new]
        running[truncated] = 0.0
    return first


def test_episode_return_ranks_policies_as_the_per_user_return_day() -> None:
    from rlur.agents.fixed import FixedPolicy, group_rule_actions, make_fixed_policy, weighting_action
    from rlur.agents.policy import TablePolicy
    from rlur.training.loop import evaluate_policy

    world = World(WorldConfig())
    policies = {"click": make_fixed_policy("click"), "uniform": make_fixed_policy("uniform"),
                "watch_time": FixedPolicy(weighting_action("watch_time")),
                "group_rule": TablePolicy(group_rule_actions())}
    per_user, returns = {}, {}
    for name, policy in policies.items():
        per_user[name] = evaluate_policy(policy, world, 512, 7, seed=5)["avg_return_day_per_user"]["mean"]
        returns[name] = _first_episode_returns(policy, world, 512, n_sessions=10)  # the same users, paired
    by_metric = sorted(policies, key=lambda n: per_user[n])  # best (fewest days) first
    assert sorted(policies, key=lambda n: -returns[n].mean()) == by_metric, (per_user, returns)
    for better, worse in itertools.pairwise(by_metric):
        gap = returns[better] - returns[worse]
        assert gap.mean() > 4 * gap.std(ddof=1) / np.sqrt(len(gap)), (better, worse)
