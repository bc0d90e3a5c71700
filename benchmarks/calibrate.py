"""Calibrate the built-in world's intercepts so that the uniform policy matches KuaiRand.

Fixed-point iteration on logits: each intercept moves by ``logit(target) − logit(observed)``
(damped). Targets: KuaiRand-Pure behaviour rates and return-day histogram (``docs/simulator.md``),
a mean session depth of 8 requests and 1.5 app opens per active day (assumptions: KuaiRand's
Pure logs subsample videos, so they do not give either).

    python benchmarks/calibrate.py --users 8192 --days 14 --rounds 6

It prints the constants to paste into ``WorldConfig``; ``tests/test_calibration.py`` checks them.
"""

from __future__ import annotations

import argparse
import dataclasses
import math

import torch

from rlur.agents.fixed import make_fixed_policy
from rlur.evaluation.rollout import rollout
from rlur.sim.env import RetentionEnv
from rlur.sim.world import (
    BEHAVIOURS,
    GROUPS,
    KUAIRAND_BEHAVIOUR_RATE,
    KUAIRAND_RETURN_DAY_SHARE,
    WORLD_PRESETS,
    WorldConfig,
)

TARGET_RATES = {**KUAIRAND_BEHAVIOUR_RATE, "profile_enter": 0.008}
TARGET_DEPTH = 8.0
TARGET_REOPEN_SHARE = 1 - 1 / 1.5  # share of session ends that reopen the same day


def logit(p: float) -> float:
    p = min(max(p, 1e-7), 1 - 1e-7)
    return math.log(p / (1 - p))


def conditional_hazards(share: list[float]) -> tuple[float, float, float]:
    """Day-1 hazard, day-2 hazard and the pooled hazard of days 3..10 of a histogram."""
    surv = 1.0
    hz = []
    for s in share[:-1]:
        hz.append(s / surv if surv > 0 else 0.0)
        surv -= s
    tail_events = sum(share[2:-1])
    tail_exposure = sum(1 - sum(share[:d]) for d in range(2, len(share) - 1))
    return hz[0], hz[1], tail_events / max(tail_exposure, 1e-9)


def measure(config: WorldConfig, users: int, days: int, seed: int) -> dict:
    env = RetentionEnv(config, n_users=users, seed=seed)
    sat_sum, sat_n = torch.zeros(len(GROUPS)), torch.zeros(len(GROUPS))
    time_sum = torch.zeros(len(GROUPS))
    respond = env._respond

    def spy(shown):  # record each group's per-request satisfaction and time spent on the way
        out = respond(shown)
        sat_sum.add_(torch.bincount(env.group, weights=out[2], minlength=len(GROUPS)))
        time_sum.add_(torch.bincount(env.group, weights=out[1].mean(1) / 81.0, minlength=len(GROUPS)))
        sat_n.add_(torch.bincount(env.group, minlength=len(GROUPS)))
        return out

    env._respond = spy
    rec, _ = rollout(env, make_fixed_policy("uniform"), days=days)
    s = rec.summary(n_boot=0)
    s["reopen_share"] = 1 - s["return_gaps"] / max(s["sessions"], 1)
    s["sat_by_group"] = (sat_sum / sat_n.clamp(min=1)).tolist()
    s["time_by_group"] = (time_sum / sat_n.clamp(min=1)).tolist()
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=8192)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--world-seed", type=int, default=0)
    ap.add_argument("--world-preset", choices=WORLD_PRESETS, default="default",
                    help="calibrate this variant of the world (its constants go in WORLD_PRESETS)")
    ap.add_argument("--damping", type=float, default=0.8)
    args = ap.parse_args()
    cfg = WorldConfig.preset(args.world_preset, world_seed=args.world_seed)
    target_h = conditional_hazards(list(KUAIRAND_RETURN_DAY_SHARE))
    for r in range(args.rounds):
        s = measure(cfg, args.users, args.days, seed=1000 + r)
        hist = list(s["return_day_hist"].values())
        obs_h = conditional_hazards(hist)
        tv = 0.5 * sum(abs(a - b) for a, b in zip(hist, KUAIRAND_RETURN_DAY_SHARE, strict=True))
        print(f"round {r}: avg_return_day={s['avg_return_day']['mean']:.3f} "
              f"day1={s['day1_retention']['mean']:.3f} TV={tv:.3f} depth={s['session_depth']['mean']:.2f} "
              f"reopen={s['reopen_share']:.3f}")
        print("   rates " + " ".join(f"{k}={v:.5f}" for k, v in s["behaviour_rates"].items()))
        print("   satisfaction by group " + " ".join(f"{v:.3f}" for v in s["sat_by_group"]))
        print("   time spent by group " + " ".join(f"{v:.3f}" for v in s["time_by_group"]))
        d = args.damping
        bias = list(cfg.behaviour_bias)
        for i, name in enumerate(BEHAVIOURS):
            bias[i] += d * (logit(TARGET_RATES[name]) - logit(s["behaviour_rates"][name]))
        rbias = [b + d * (logit(t) - logit(o)) for b, t, o in zip(cfg.return_day_bias, target_h, obs_h, strict=True)]
        leave = cfg.leave_bias + d * (logit(1 / TARGET_DEPTH) - logit(1 / s["session_depth"]["mean"]))
        reopen = cfg.reopen_bias + d * (logit(TARGET_REOPEN_SHARE) - logit(s["reopen_share"]))
        sat_ref = [r + (o - r) for r, o in zip(cfg.sat_reference, s["sat_by_group"], strict=True)]
        cfg = dataclasses.replace(
            cfg, behaviour_bias=tuple(round(b, 3) for b in bias), sat_reference=tuple(round(x, 3) for x in sat_ref),
            time_reference=tuple(round(x, 3) for x in s["time_by_group"]),
            return_day_bias=tuple(round(b, 3) for b in rbias),
            leave_bias=round(leave, 3), reopen_bias=round(reopen, 3),
        )
    keys = ("behaviour_bias", "return_day_bias", "reopen_bias", "leave_bias", "sat_reference", "time_reference")
    print(f"\nCalibrated constants of world preset {args.world_preset!r} (WorldConfig fields; the default")
    print("preset's go in WorldConfig's defaults, another preset's in WORLD_PRESETS):")
    for key in keys:
        print(f"    {key} = {getattr(cfg, key)}")


if __name__ == "__main__":
    main()
