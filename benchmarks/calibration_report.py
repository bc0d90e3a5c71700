"""The calibration as measured: the uniform policy's statistics next to KuaiRand-Pure's.

    python benchmarks/calibration_report.py [--users 8192] [--days 14] [--world-seed 0] [--out docs/calibration.png]

Prints a markdown table (behaviour rates, return-day histogram, mean return day, day-1 share, TV
distance) and draws the return-day histogram against KuaiRand's.
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from rlur.agents.fixed import make_fixed_policy
from rlur.evaluation.rollout import rollout
from rlur.sim.env import RetentionEnv
from rlur.sim.world import KUAIRAND_BEHAVIOUR_RATE, KUAIRAND_RETURN_DAY_SHARE, World, WorldConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=8192)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--world-seed", type=int, default=0)
    ap.add_argument("--out", default="docs/calibration.png")
    args = ap.parse_args()
    env = RetentionEnv(World(WorldConfig(world_seed=args.world_seed)), n_users=args.users, seed=0)
    rec, _ = rollout(env, make_fixed_policy("uniform"), days=args.days)
    s = rec.summary()
    hist = np.array(list(s["return_day_hist"].values()))
    ref = np.array(KUAIRAND_RETURN_DAY_SHARE)
    tv = 0.5 * np.abs(hist - ref).sum()
    kr_mean = sum((d + 1) * p for d, p in enumerate(ref[:-1])) + 11 * ref[-1]
    print("| statistic | rlur (uniform policy) | KuaiRand-Pure |\n|---|---|---|")
    print(f"| average return day | {s['avg_return_day']['mean']:.3f} | ≈ {kr_mean:.2f} (>10 counted as 11) |")
    print(f"| day-1 share of return gaps | {s['day1_retention']['mean']:.3f} | {ref[0]:.3f} |")
    print(f"| total-variation distance of the return-day histogram | {tv:.3f} | 0 |")
    for name, rate in s["behaviour_rates"].items():
        target = KUAIRAND_BEHAVIOUR_RATE.get(name)
        print(f"| {name} rate | {rate:.5f} | {'—' if target is None else f'{target:.5f}'} |")
    print(f"| session depth (requests) | {s['session_depth']['mean']:.2f} | — (8, assumed) |")
    print(f"| app opens per active user-day | {s['app_opens_per_user_day']['mean'] / s['dau']['mean']:.2f} | "
          "— (1.5, assumed) |")
    labels = list(s["return_day_hist"])
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(x - 0.2, ref, 0.4, label="KuaiRand-Pure (383,995 gaps)")
    ax.bar(x + 0.2, hist, 0.4, label=f"rlur default world, uniform policy ({s['return_gaps']:,} gaps)")
    ax.set_xticks(x, labels)
    ax.set_xlabel("return day")
    ax.set_ylabel("share of return gaps")
    ax.set_yscale("log")
    ax.set_title(f"Return-day histogram (TV distance {tv:.3f})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
