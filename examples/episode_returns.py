"""The Gymnasium episode return of fixed policies next to rlur's per-user return day, for both episode kinds.

    python examples/episode_returns.py            # 1,024 users; about two minutes on 2 cores

For click, uniform, watch time only and the hand-written group rule: ``avg_return_day_per_user``
(``rlur.evaluate``, 14 days) and the mean first-episode return of ``rlur/Retention-v1`` (20 sessions)
and of ``rlur/Retention-v0``'s calendar episodes (30 days), each ± its standard error. The session
episodes order the policies as the per-user metric does; the calendar episodes barely tell them apart
(``docs/integrations.md``).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import rlur
from rlur.agents.fixed import FixedPolicy, group_rule_actions, make_fixed_policy, weighting_action
from rlur.agents.policy import TablePolicy
from rlur.sim.gym_env import RetentionVectorEnv
from rlur.sim.world import World, WorldConfig


def first_episode_returns(policy, world: World, users: int, seed: int, **episode) -> np.ndarray:
    """Each user's first episode return in the vector env (deterministic actions)."""
    envs = RetentionVectorEnv(users, world, **episode)
    obs, _ = envs.reset(seed=seed)
    running, first = np.zeros(users), np.full(users, np.nan)
    while np.isnan(first).any():
        obs_t = torch.from_numpy(obs)
        obs, rewards, _, truncated, _ = envs.step(policy.act(obs_t, obs_t[:, :4].argmax(1)).numpy())
        running += rewards
        new = truncated & np.isnan(first)
        first[new] = running[new]
        running[truncated] = 0.0
    return first


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    world = World(WorldConfig())
    policies = {"click": make_fixed_policy("click"), "uniform": make_fixed_policy("uniform"),
                "watch time only": FixedPolicy(weighting_action("watch_time")),
                "group rule": TablePolicy(group_rule_actions())}
    print(f"{args.users} users, seed {args.seed}; mean ± standard error over users")
    print("| policy | avg return day per user (14 days) | return, 20 sessions (v1) | return, 30 days (v0) |")
    print("|---|---|---|---|")
    for name, policy in policies.items():
        per_user = rlur.evaluate(policy, world=world, users=args.users, days=14, seed=args.seed)
        cells = [f"{per_user['avg_return_day_per_user']['mean']:.2f}"]
        for episode in ({"episode": "sessions", "n_sessions": 20}, {"episode": "days", "horizon_days": 30}):
            r = first_episode_returns(policy, world, args.users, args.seed, **episode)
            cells.append(f"{r.mean():.1f} ± {r.std(ddof=1) / np.sqrt(len(r)):.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
