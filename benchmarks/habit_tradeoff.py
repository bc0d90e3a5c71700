"""The cross-session trade-off of a world: next return against later returns, per activity group.

Serves every user the same fixed weighting and reports, per group, the mean return day after the
users' first session (what a myopic learner, γ = 0, optimises) and the mean return day of the
sessions that end on days 6 .. days − 1 (where the long-term state has moved: what γ > 0 adds).
Then, per group, the best weighting for each of the two, and what serving the next return's best
costs later on. A discount can only pay where the two bests differ by more than the noise.

In the ``habit`` preset middle-activity users return later after a watch-time session but sooner
later on (time spent builds habit); in the ``classic`` world watch time is worse for them both times
(docs/simulator.md, docs/critic.md section 7). The ``longterm`` preset makes that trade-off large
(0.5 days per return a week later) and is what docs/critic.md section 8 tests the discount on.

    python benchmarks/habit_tradeoff.py --world-preset habit
    python benchmarks/habit_tradeoff.py --world-preset longterm --out tradeoff.json
    python benchmarks/habit_tradeoff.py --world-preset classic --weightings uniform,watch_time,long_view+like
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from rlur.agents.fixed import weighting_action
from rlur.agents.policy import TablePolicy
from rlur.sim.env import RetentionEnv
from rlur.sim.world import GROUPS, WORLD_PRESETS, World, WorldConfig
from rlur.training.checkpoint import atomic_write_json

#: Weightings screened by default: uniform, every score alone that matters here, and the pairs the
#: group rule and the diagnostics use.
DEFAULT_WEIGHTINGS = (
    "uniform", "watch_time", "long_view", "like", "click", "follow", "long_view+like", "watch_time+long_view",
    "watch_time+like",
)


def weighting(spec: str) -> torch.Tensor:
    """``"uniform"`` or ``"a+b+…"`` (rank by those scores only), as an action in [-1, 1]^k."""
    try:
        return weighting_action() if spec == "uniform" else weighting_action(*spec.split("+"))
    except ValueError as e:
        raise SystemExit(f"{e} (or uniform)") from None


def fixed_policy(spec: str) -> TablePolicy:
    return TablePolicy(weighting(spec).unsqueeze(0))


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


def best_per_group(table: dict[str, tuple[list, list]]) -> dict[str, dict[str, Any]]:
    """Per group: the weighting with the lowest next return, the one with the lowest later returns,
    and how much later-return time the first one gives up against the second (0: no trade-off)."""
    out = {}
    for k, group in enumerate(GROUPS):
        myopic = min(table, key=lambda w: table[w][0][k])
        long_run = min(table, key=lambda w: table[w][1][k])
        out[group] = {"best_next_return": myopic, "best_later_returns": long_run,
                      "cost_of_myopia": table[myopic][1][k] - table[long_run][1][k]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world-preset", choices=WORLD_PRESETS, default="habit")
    ap.add_argument("--weightings", default=",".join(DEFAULT_WEIGHTINGS),
                    help="comma-separated: uniform, or scores joined by + (e.g. long_view+like)")
    ap.add_argument("--users", type=int, default=4096)
    ap.add_argument("--days", type=int, default=12)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--out", help="write the table and the per-group bests as JSON")
    args = ap.parse_args()
    specs = [w.strip() for w in args.weightings.split(",") if w.strip()]
    if len(specs) < 1 or args.users < 1 or args.days < 7:
        raise SystemExit("need at least one weighting, --users ≥ 1 and --days ≥ 7")
    for spec in specs:
        weighting(spec)  # fail on a bad name before any simulation
    torch.set_num_threads(1)
    world = World(WorldConfig.preset(args.world_preset))
    print(f"world preset {args.world_preset!r}, {args.users} users, {args.days} days, seed {args.seed}")
    width = max(12, *(len(s) for s in specs)) + 1
    print(f"{'ranking by':<{width}}" + "".join(f"{g + ': first / days 6+':>26}" for g in GROUPS))
    table = {}
    for spec in specs:
        table[spec] = returns_by_group(world, fixed_policy(spec), args.users, args.days, args.seed)
        first, late = table[spec]
        print(f"{spec:<{width}}" + "".join(f"{f:>15.2f} / {lt:<8.2f}" for f, lt in zip(first, late, strict=True)))
    best = best_per_group(table)
    print("\nper group: best for the next return | best for later returns | later-return cost of the first")
    for group, b in best.items():
        print(f"{group:<7} {b['best_next_return']:<24} {b['best_later_returns']:<24} {b['cost_of_myopia']:+.3f} days")
    if args.out:
        atomic_write_json({"world_preset": args.world_preset, "users": args.users, "days": args.days,
                           "seed": args.seed, "groups": list(GROUPS),
                           "table": {w: {"first": f, "days_6_plus": lt} for w, (f, lt) in table.items()},
                           "best": best}, args.out)


if __name__ == "__main__":
    main()
