"""How far the agent's heuristic reward lines up with the world's hidden satisfaction.

RLUR's immediate critic learns a heuristic reward (``rlur.agents.rlur.immediate_reward``, from
logged watch time and interactions). The simulator's users leave and return according to a hidden
per-request satisfaction that no agent sees. Where the two are nearly the same signal, the paper's
premise (immediate feedback predicts retention) holds almost exactly and the immediate critic
carries most of a result; where they are not, it should not. Every benchmark records this
correlation for its world, per activity group, so a reader can see how much of a result the
heuristic explains.

The correlation is measured per request under uniformly random actions (no policy's preference
colours it): Pearson's r between the heuristic of the served slate and the slate's satisfaction.
"""

from __future__ import annotations

from typing import Any

import torch

from rlur.agents.fixed import RandomPolicy
from rlur.agents.rlur import HEURISTICS, immediate_reward
from rlur.sim.env import RetentionEnv
from rlur.sim.world import GROUPS, World

__all__ = ["pearson_by_group", "reward_alignment"]


def pearson_by_group(x: torch.Tensor, y: torch.Tensor, group: torch.Tensor, n_groups: int) -> list[float]:
    """Pearson's r of ``x`` and ``y`` within each group (NaN where a group has < 2 rows or no spread)."""
    out = []
    for g in range(n_groups):  # a handful of groups, not users
        mask = group == g
        if int(mask.sum()) < 2:
            out.append(float("nan"))
            continue
        pair = torch.stack((x[mask], y[mask])).double()
        out.append(float(torch.corrcoef(pair)[0, 1]))
    return out


def reward_alignment(world: World, users: int = 2048, steps: int = 60, seed: int = 5_300_001,
                     heuristics: tuple[str, ...] = HEURISTICS) -> dict[str, Any]:
    """Per heuristic, the per-request correlation with the hidden satisfaction by activity group
    (``{heuristic: {group: r}}``) and overall, under random actions, over ``steps`` batched requests."""
    if users < 2 or steps < 1:
        raise ValueError(f"reward alignment needs at least 2 users and 1 step, got {users} and {steps}")
    env = RetentionEnv(world, n_users=users, seed=seed)
    policy = RandomPolicy(env.k, seed=seed)
    feedback, satisfaction, group = [], [], []
    obs = env.observe()
    for _ in range(steps):  # batched requests: every step serves all users at once
        result = env.step(policy.act(obs, env.group))
        feedback.append(result.feedback)
        satisfaction.append(env.last_sat.clone())  # the world's hidden truth, read for this report only
        group.append(result.group)
        obs = result.obs
    fb, sat, grp = torch.cat(feedback), torch.cat(satisfaction), torch.cat(group)
    report: dict[str, Any] = {"users": users, "steps": steps, "seed": seed, "policy": "random"}
    for name in heuristics:
        reward = immediate_reward(fb, name)
        by_group = pearson_by_group(reward, sat, grp, len(GROUPS))
        overall = float(torch.corrcoef(torch.stack((reward, sat)).double())[0, 1])
        report[name] = {**dict(zip(GROUPS, by_group, strict=True)), "all": overall}
    return report
