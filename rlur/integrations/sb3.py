"""Stable-Baselines3 on the batched simulator: :class:`RetentionVecEnv` (``pip install 'rlur[sb3]'``).

SB3's own vector envs step one Gymnasium env per user in a Python loop; this ``VecEnv`` steps all
users together in one :class:`~rlur.sim.gym_env.RetentionVectorEnv` (same spaces, reward and
episodes as ``rlur/Retention-v1``), so SB3 gets the simulator's speed::

    from stable_baselines3 import SAC
    from stable_baselines3.common.vec_env import VecMonitor
    from rlur.integrations.sb3 import RetentionVecEnv

    env = VecMonitor(RetentionVecEnv(512, seed=0))  # VecMonitor: SB3's ep_rew_mean
    model = SAC("MlpPolicy", env).learn(60_000)

SB3's conventions: ``reset()`` returns the observations only; an episode end is ``done`` with the
last observation in ``info["terminal_observation"]`` and ``info["TimeLimit.truncated"] = True`` (every
episode end here is a truncation: the user lives on, so SB3 bootstraps from it). SB3 wants one info
dict per env; they are empty except where an episode ended.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

try:
    from stable_baselines3.common.vec_env import VecEnv
    from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn
except ImportError as err:  # pragma: no cover - the extra is installed by `make test`
    raise ImportError("rlur.integrations.sb3 needs Stable-Baselines3: pip install 'rlur[sb3]'") from err

from rlur.sim.gym_env import RetentionVectorEnv
from rlur.sim.world import World, WorldConfig

__all__ = ["RetentionVecEnv"]


class RetentionVecEnv(VecEnv):
    """``num_envs`` simulated users as one SB3 ``VecEnv`` (a :class:`RetentionVectorEnv` inside).

    Args:
        num_envs: users stepped together.
        world: a ``World`` or ``WorldConfig`` (default: ``WorldConfig()``).
        seed: seed of the first ``reset`` (SB3's ``seed()`` sets it too).
        **env_kwargs: the other arguments of :class:`RetentionVectorEnv` (``episode``, ``n_sessions``,
            ``horizon_days``, ``max_requests``, ``world_seed``, ``chunk_size``).
    """

    def __init__(self, num_envs: int = 1024, world: World | WorldConfig | None = None, *, seed: int | None = None,
                 **env_kwargs: Any) -> None:
        self.venv = RetentionVectorEnv(num_envs, world, **env_kwargs)
        super().__init__(num_envs, self.venv.single_observation_space, self.venv.single_action_space)
        self._actions: np.ndarray | None = None
        if seed is not None:
            self.seed(seed)

    def reset(self) -> np.ndarray:
        obs, _ = self.venv.reset(seed=self._seeds[0])
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.float32).reshape(self.venv.action_space.shape)

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, terminated, truncated, info = self.venv.step(self._actions)
        dones = terminated | truncated
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]  # SB3's format: one dict per env
        for i in np.flatnonzero(dones):  # only the users whose episode ended on this step
            infos[i]["terminal_observation"] = info["final_obs"][i]
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        return obs, rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    # The users share one simulator: attributes and methods are the vector env's, the same for every index.
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.venv, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]
