"""Does a longer session pay later? An intervention on the session's length alone.

docs/critic.md section 12 finds that at sixteen times the benchmark's budget RLUR-naive γ = 0.9
keeps sessions about 1.2 requests longer than γ = 0 and ends earlier. Whether the longer sessions
are the cause is a question about the world, and this script asks the world directly: it serves a
fixed policy to the same users twice, once as the world is and once with every user's patience
(the per-user term of the leave logit) shifted by ``--shift``, so that sessions are longer (shift
> 0) or shorter (shift < 0) at the same recommendations. It also switches off the habit gained per
follow (``follow_gain`` 0 instead of the world's 0.25 per follow), the one channel through which a
session's length, rather than its mean satisfaction, reaches the long-term habit.

For each setting: the average return day and day-1 retention with a paired bootstrap 95 % interval
of the difference to the world as it is (same users, resampled together), the session depth, and
the mean habit per activity group at the end.

    python benchmarks/session_length.py
    python benchmarks/session_length.py --policies group --shift 0.25 --seeds 41,42,43 --out out.json
"""

from __future__ import annotations

import argparse
import itertools
from typing import Any

import torch

from rlur.agents.fixed import group_rule_actions, weighting_action
from rlur.agents.policy import TablePolicy
from rlur.evaluation.metrics import bootstrap_ratio_difference_ci
from rlur.evaluation.rollout import rollout
from rlur.sim.env import RetentionEnv
from rlur.sim.world import GROUPS, WORLD_PRESETS, World, WorldConfig
from rlur.training.checkpoint import atomic_write_json

#: The world's habit gained per follow at a session's end (``RetentionEnv._end_sessions``).
WORLD_FOLLOW_GAIN = 0.25

POLICIES = {
    "uniform": lambda: TablePolicy(weighting_action().unsqueeze(0)),
    "group": lambda: TablePolicy(group_rule_actions()),
}


class LengthProbeEnv(RetentionEnv):
    """The world with every user's patience shifted by ``patience_shift`` (longer sessions when
    positive) and the habit gained per follow scaled to ``follow_gain`` per follow."""

    def __init__(self, world: World, n_users: int, seed: int, patience_shift: float = 0.0,
                 follow_gain: float = WORLD_FOLLOW_GAIN) -> None:
        if follow_gain < 0:
            raise ValueError(f"follow_gain must be non-negative, got {follow_gain}")
        super().__init__(world, n_users=n_users, seed=seed)
        self.patience = self.patience + patience_shift
        self.follow_scale = follow_gain / WORLD_FOLLOW_GAIN

    def _end_sessions(self, idx, reopen, first, return_time, quality) -> None:
        # The follows are read only here (and reset after): scaling them scales the habit gained.
        if self.follow_scale != 1.0:
            self.session_follows.index_put_((idx,), self.session_follows.index_select(0, idx) * self.follow_scale)
        super()._end_sessions(idx, reopen, first, return_time, quality)


def run(world: World, policy: str, users: int, days: int, seed: int, shift: float, follow_gain: float) -> dict:
    """One rollout: per-user gap sums (for the paired bootstrap) and the summary figures."""
    env = LengthProbeEnv(world, users, seed, patience_shift=shift, follow_gain=follow_gain)
    rec, _ = rollout(env, POLICIES[policy](), days=days)
    depth = rec.summary(n_boot=0)["session_depth"]["mean"]
    return {"gap_days": rec.gap_days.numpy(), "gaps": rec.gaps.numpy(), "day1": rec.gap_day1.numpy(),
            "session_depth": depth,
            "habit": {g: float(env.habit[env.group == k].mean()) for k, g in enumerate(GROUPS)}}


def probe(world: World, policies: list[str], shifts: list[float], users: int, days: int,
          seeds: list[int]) -> list[dict[str, Any]]:
    """Every (policy, seed, shift, follows on/off), each compared with the same users' world as it is."""
    rows = []
    for policy, seed in itertools.product(policies, seeds):
        base = run(world, policy, users, days, seed, 0.0, WORLD_FOLLOW_GAIN)
        for shift, gain in itertools.product([0.0, *shifts], (WORLD_FOLLOW_GAIN, 0.0)):
            as_is = (shift, gain) == (0.0, WORLD_FOLLOW_GAIN)
            r = base if as_is else run(world, policy, users, days, seed, shift, gain)
            rows.append({
                "policy": policy, "seed": seed, "patience_shift": shift, "follow_gain": gain,
                "avg_return_day": float(r["gap_days"].sum() / r["gaps"].sum()),
                "day1_retention": float(r["day1"].sum() / r["gaps"].sum()),
                "session_depth": r["session_depth"], "habit": r["habit"],
                "vs_world": {metric: dict(zip(("diff", "ci_low", "ci_high"), bootstrap_ratio_difference_ci(
                    (r[num], r["gaps"]), (base[num], base["gaps"]), n_boot=1000), strict=True))
                    for metric, num in (("avg_return_day", "gap_days"), ("day1_retention", "day1"))},
            })
            print(_line(rows[-1]), flush=True)
    return rows


def _line(r: dict[str, Any]) -> str:
    d, d1 = r["vs_world"]["avg_return_day"], r["vs_world"]["day1_retention"]
    habit = " ".join(f"{v:+.2f}" for v in r["habit"].values())
    return (f"{r['policy']:<8} {r['seed']:>4} {r['patience_shift']:>+6.2f} {r['follow_gain']:>6.2f} "
            f"{r['session_depth']:>6.2f} {r['avg_return_day']:>7.3f} {d['diff']:>+7.3f} "
            f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] {r['day1_retention']:>6.3f} {d1['diff']:>+7.3f} "
            f"[{d1['ci_low']:+.3f}, {d1['ci_high']:+.3f}]  {habit}")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world-preset", choices=WORLD_PRESETS, default="default")
    ap.add_argument("--world-seed", type=int, default=0)
    ap.add_argument("--policies", default="uniform,group", help=f"comma-separated, of {', '.join(POLICIES)}")
    ap.add_argument("--shift", default="0.5,-0.5", help="comma-separated patience shifts (> 0: longer sessions)")
    ap.add_argument("--users", type=int, default=4096)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--seeds", default="41,42", help="comma-separated user seeds")
    ap.add_argument("--out", help="write every row as JSON")
    args = ap.parse_args(argv)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = [p for p in policies if p not in POLICIES]
    if not policies or unknown:
        raise SystemExit(f"unknown policy {', '.join(unknown) or '(none given)'}; choose from {', '.join(POLICIES)}")
    try:
        shifts = [float(s) for s in args.shift.split(",") if s.strip()]
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError as e:
        raise SystemExit(f"--shift takes numbers and --seeds integers: {e}") from None
    if args.users < 2 or args.days < 1 or not seeds:
        raise SystemExit("need --users ≥ 2, --days ≥ 1 and at least one seed")
    torch.set_num_threads(1)
    world = World(WorldConfig.preset(args.world_preset, world_seed=args.world_seed))
    print(f"world preset {args.world_preset!r}, world seed {args.world_seed}, {args.users} users × {args.days} "
          f"days; differences are to the same users in the world as it is (paired bootstrap, 95 %)")
    print(f"{'policy':<8} {'seed':>4} {'shift':>6} {'follow':>6} {'depth':>6} {'return':>7} {'Δ return day':>24} "
          f"{'day-1':>6} {'Δ day-1':>24}  habit ({', '.join(GROUPS)})")
    rows = probe(world, policies, shifts, args.users, args.days, seeds)
    if args.out:
        atomic_write_json({"world_preset": args.world_preset, "world_seed": args.world_seed, "users": args.users,
                           "days": args.days, "seeds": seeds, "world_follow_gain": WORLD_FOLLOW_GAIN,
                           "rows": rows}, args.out)
    return rows


if __name__ == "__main__":
    main()
