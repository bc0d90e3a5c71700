"""Stable-Baselines3: ``make_vec_env`` on the registered env, the batched ``VecEnv`` adapter, SAC end to end."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from stable_baselines3.common.env_util import make_vec_env  # the `sb3` extra, installed by `make test`
from stable_baselines3.common.vec_env import VecMonitor

import rlur
from rlur.integrations.sb3 import RetentionVecEnv
from rlur.sim.env import OBS_DIM
from rlur.sim.gym_env import ENV_ID, RetentionGymEnv, RetentionVectorEnv
from rlur.sim.world import SCORE_NAMES, World, WorldConfig

pytestmark = pytest.mark.usefixtures("one_thread")

K = len(SCORE_NAMES)
SMALL = WorldConfig(n_videos=500, n_candidates=50)


@pytest.fixture(scope="module")
def small_world() -> World:
    return World(SMALL)


def test_sb3_check_env_passes_without_warnings(small_world: World) -> None:
    from stable_baselines3.common.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(RetentionGymEnv(small_world), warn=True)


def test_make_vec_env_on_the_registered_id(small_world: World) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gymnasium notes that render_mode="rgb_array" is not a render mode
        venv = make_vec_env(ENV_ID, n_envs=3, seed=0, env_kwargs={"world": small_world, "n_sessions": 2})
    assert venv.num_envs == 3 and venv.render_mode is None
    obs = venv.reset()
    assert obs.shape == (3, OBS_DIM)
    dones = 0
    for _ in range(60):
        obs, rewards, done, infos = venv.step(np.zeros((3, K), np.float32))
        assert obs.shape == (3, OBS_DIM) and rewards.shape == (3,) and (rewards <= 0).all()
        for i in np.flatnonzero(done):
            dones += 1
            assert "terminal_observation" in infos[i] and infos[i]["TimeLimit.truncated"]
            assert "episode" in infos[i]  # make_vec_env's Monitor
    assert dones > 0
    venv.close()


def test_vec_env_matches_the_gymnasium_vector_env(small_world: World) -> None:
    """The adapter serves the same users, rewards and episode ends as the vector env it wraps."""
    kw = {"n_sessions": 2}
    adapter, reference = RetentionVecEnv(5, small_world, seed=3, **kw), RetentionVectorEnv(5, small_world, **kw)
    obs = adapter.reset()
    ref_obs, _ = reference.reset(seed=3)
    np.testing.assert_array_equal(obs, ref_obs)
    actions = np.random.default_rng(0).uniform(-1, 1, (80, 5, K)).astype(np.float32)
    ends = 0
    for a in actions:
        obs, rewards, dones, infos = adapter.step(a)
        ref_obs, ref_rewards, terminated, truncated, info = reference.step(a)
        np.testing.assert_array_equal(obs, ref_obs)
        np.testing.assert_allclose(rewards, ref_rewards.astype(np.float32))
        np.testing.assert_array_equal(dones, terminated | truncated)
        assert rewards.dtype == np.float32 and dones.dtype == np.bool_ and len(infos) == 5
        for i, done in enumerate(dones):
            if done:
                ends += 1
                np.testing.assert_array_equal(infos[i]["terminal_observation"], info["final_obs"][i])
                assert infos[i]["TimeLimit.truncated"] is True
            else:
                assert infos[i] == {}
    assert ends >= 5
    assert adapter.get_attr("render_mode") == [None] * 5 and adapter.env_is_wrapped(gymnasium.Wrapper) == [False] * 5
    results = adapter.env_method("reset", seed=9, indices=[0, 1])  # one simulator: one call, its result per index
    assert len(results) == 2 and results[0][0].shape == (5, OBS_DIM)


def test_sac_trains_and_rlur_evaluates_it(small_world: World) -> None:
    """SAC on the adapter (a tiny budget), its episodes in ep_info_buffer, then rlur's metrics for it."""
    from stable_baselines3 import SAC

    env = VecMonitor(RetentionVecEnv(16, small_world, seed=0, n_sessions=2))
    model = SAC("MlpPolicy", env, learning_starts=64, batch_size=32, buffer_size=2_000, train_freq=1,
                gradient_steps=1, policy_kwargs={"net_arch": [16, 16]}, seed=0, device="cpu")
    model.learn(total_timesteps=16 * 40)
    assert model.num_timesteps == 16 * 40 and len(model.ep_info_buffer) > 0
    assert all(ep["r"] < 0 for ep in model.ep_info_buffer)  # −Σ return times of the episode's sessions
    result = rlur.evaluate(model, world=small_world, users=16, days=2, seed=1)
    assert result["users"] == 16 and result["avg_return_day"]["mean"] > 0
    again = rlur.evaluate(model, world=small_world, users=16, days=2, seed=1)
    assert again["avg_return_day"] == result["avg_return_day"]  # deterministic actions


def test_example_runs_from_the_checkout() -> None:
    """examples/sb3_sac.py on a smoke budget: SAC, uniform, CEM and RLUR with rlur's metrics."""
    example = Path(__file__).resolve().parents[1] / "examples" / "sb3_sac.py"
    proc = subprocess.run([sys.executable, str(example), "--quick"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "policy" not in line]
    assert [r.split("|")[1].strip() for r in rows] == ["SB3 SAC", "uniform", "CEM", "RLUR"]
    assert all(0 < float(r.split("|")[2]) < 30 for r in rows)  # avg return day, in days
