"""``rlur.evaluate``: any policy, rlur's metrics, the held-out users of ``rlur eval``.

A policy can be

* a function ``obs → action``: ``obs`` a ``(B, OBS_DIM)`` float32 NumPy array laid out as the
  Gymnasium environments' observations (``docs/observation.md``), the action ``(B, k)`` (or one
  ``(k,)`` action for everyone) in ``[-1, 1]``;
* an object with ``predict(obs, deterministic=True) → (action, state)`` (a Stable-Baselines3 model),
  called the same way;
* an object with rlur's ``act(obs, group, deterministic)`` on torch tensors
  (:class:`rlur.agents.base.Policy`);
* a checkpoint: an ``rlur train`` run directory or a ``checkpoint.pt`` (evaluated in its own world).

The users step together, so a policy sees a batch of observations at once. Actions are served
deterministically (``deterministic=True``), as ``rlur eval`` serves μ.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlur.sim.gym_env import make_observation_space
from rlur.sim.world import SCORE_NAMES, World, WorldConfig
from rlur.training.loop import build_world, evaluate_policy

__all__ = ["EVAL_DAYS", "EVAL_SEED", "EVAL_USERS", "as_policy", "evaluate", "load_policy_spec"]

#: The held-out users of ``rlur eval`` (its defaults).
EVAL_USERS, EVAL_DAYS, EVAL_SEED = 4096, 14, 2_000_003


class ArrayPolicy:
    """rlur's ``act`` over a function of NumPy observations (clipped to the Gymnasium observation space)."""

    def __init__(self, fn: Callable[[np.ndarray], Any], world: Any) -> None:
        space = make_observation_space(world.config)
        self.fn, self.low, self.high = fn, space.low, space.high

    def act(self, obs: torch.Tensor, group: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        x = np.clip(obs.numpy(), self.low, self.high).astype(np.float32)
        action = np.asarray(self.fn(x), dtype=np.float32)
        k = len(SCORE_NAMES)
        if action.shape == (k,):
            action = np.broadcast_to(action, (len(x), k))
        if action.shape != (len(x), k):
            raise ValueError(f"the policy returned actions of shape {action.shape} for {len(x)} observations; "
                             f"expected ({len(x)}, {k})")
        return torch.from_numpy(np.ascontiguousarray(action))


def as_policy(policy: Any, world: Any) -> Any:
    """An object with rlur's ``act`` for any accepted policy other than a checkpoint."""
    if hasattr(policy, "act"):
        return policy
    if hasattr(policy, "predict"):  # Stable-Baselines3
        return ArrayPolicy(lambda x: policy.predict(x, deterministic=True)[0], world)
    if callable(policy):
        return ArrayPolicy(policy, world)
    raise TypeError(f"cannot evaluate a {type(policy).__name__}: expected a function obs → action, an object with "
                    "act or predict, or a checkpoint path")


def _world(world: World | WorldConfig | str | os.PathLike | None) -> Any:
    """The world to evaluate in: a ``World``, a ``WorldConfig``, a learned world's folder, or the default world."""
    if isinstance(world, World):
        return world
    if world is None or isinstance(world, WorldConfig):
        return build_world(None, world or WorldConfig())
    return build_world(str(world))


def evaluate(
    policy: Any, *, world: World | WorldConfig | str | os.PathLike | None = None, users: int = EVAL_USERS,
    days: int = EVAL_DAYS, seed: int = EVAL_SEED, progress: bool = False,
) -> dict:
    """Evaluate ``policy`` on ``users`` held-out users over ``days`` days; the dictionary of ``rlur eval``.

    Args:
        policy: a function ``obs → action``, an object with ``predict`` (SB3) or ``act`` (rlur), or a
            checkpoint path (see the module docstring).
        world: a ``World``, a ``WorldConfig`` or a learned world's folder. Default: a checkpoint's own
            world, else the built-in default world (``WorldConfig()``).
        users, days, seed: the held-out users (``rlur eval``'s defaults).

    Returns:
        The metrics of ``rlur eval`` (``MetricsRecorder.summary`` plus ``requests_per_s`` and
        ``days``), with ``algo``, ``version`` and ``checkpoint`` (``None`` unless a checkpoint).
    """
    meta: dict[str, Any] = {"algo": None, "version": None, "checkpoint": None}
    if isinstance(policy, (str, os.PathLike)):
        from rlur.agents.policy import load_policy

        path = policy
        policy, ckpt = load_policy(path)
        meta = {"algo": ckpt.get("algo"), "version": ckpt.get("version"), "checkpoint": str(path)}
        if world is None:
            world = ckpt.get("world_path") or WorldConfig.from_dict(ckpt["world_config"])
        env_world = _world(world)
    else:
        env_world = _world(world)
        policy = as_policy(policy, env_world)
    result = evaluate_policy(policy, env_world, users, days, seed, progress=progress)
    result.update(meta)
    return result


def load_policy_spec(spec: str) -> Any:
    """The object named by ``module:attribute`` (or ``path/to/file.py:attribute``): what ``--policy`` takes."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--policy expects module:function (or file.py:function), got {spec!r}")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise FileNotFoundError(f"no policy file {path}")
            loader = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except FileNotFoundError:
        raise
    except Exception as err:  # the module's own error (ImportError, SyntaxError, …): one line, no traceback
        raise ValueError(f"cannot import {module_name!r} for --policy: {type(err).__name__}: {err}") from None
    if not hasattr(module, attr):
        raise ValueError(f"{module_name!r} has no attribute {attr!r}")
    return getattr(module, attr)
