"""The cross-session trade-off of a world: next return against later returns, per activity group.

Serves every user the same fixed weighting (ranking by predicted watch time, or by long views) and
reports, per group, the mean return day after the users' first session and the mean return day of
the sessions that end on days 6–11. In the ``habit`` preset middle-activity users return later after
a watch-time session but sooner later on (time spent builds habit); in the default world watch time
is worse for them both times (docs/simulator.md).

    python benchmarks/habit_tradeoff.py --world-preset habit
"""

from __future__ import annotations

import argparse

import torch

from rlur.agents.policy import TablePolicy
from rlur.sim.env import RetentionEnv
from rlur.sim.world import GROUPS, SCORE_NAMES, WORLD_PRESETS, World, WorldConfig


def one_hot(name: str) -> TablePolicy:
    a = -torch.ones(len(SCORE_NAMES))
    a[SCORE_NAMES.index(name)] = 1.0
    return TablePolicy(a.unsqueeze(0))


def returns_by_group(world: World, policy: TablePolicy, users: int, days: int, seed: int) -> tuple[list, list]:
    """Mean return day (returns on a later day only) after each user's first session, and of the
    sessions that end on days 6 .. days - 1, per group."""
    env = RetentionEnv(world, n_users=users, seed=seed)
    obs = env.observe()
    n_groups = len(GROUPS)
    first, late = torch.zeros(n_groups, 2), torch.zeros(n_groups, 2)
    with torch.no_grad():
        for _ in range(60 * days):
            if int(env.day.min()) >= days:
                break
            r = env.step(policy.act(obs, env.group))
            obs = r.obs
            returned = r.session_end & (r.return_day >= 1)
            for acc, mask in ((first, returned & (env.n_sessions <= 1)), (late, returned & (r.day >= 6))):
                acc[:, 0] += torch.bincount(r.group[mask], weights=r.return_day[mask].float(), minlength=n_groups)
                acc[:, 1] += torch.bincount(r.group[mask], minlength=n_groups)
    return (first[:, 0] / first[:, 1]).tolist(), (late[:, 0] / late[:, 1]).tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world-preset", choices=WORLD_PRESETS, default="habit")
    ap.add_argument("--users", type=int, default=4096)
    ap.add_argument("--days", type=int, default=12)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    world = World(WorldConfig.preset(args.world_preset))
    print(f"world preset {args.world_preset!r}, {args.users} users, {args.days} days, seed {args.seed}")
    print(f"{'ranking by':<12}" + "".join(f"{g + ': first / days 6+':>26}" for g in GROUPS))
    for name in ("watch_time", "long_view"):
        first, late = returns_by_group(world, one_hot(name), args.users, args.days, args.seed)
        print(f"{name:<12}" + "".join(f"{f:>15.2f} / {lt:<8.2f}" for f, lt in zip(first, late, strict=True)))


if __name__ == "__main__":
    main()
