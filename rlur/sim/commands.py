"""``rlur simulate``: run a fixed policy in the built-in world and report the metrics."""

from __future__ import annotations

import argparse
import json

import torch

from rlur.agents.fixed import FIXED_POLICIES, make_fixed_policy
from rlur.cli import check_writable, positive_int
from rlur.evaluation.report import print_metrics_table
from rlur.evaluation.rollout import rollout
from rlur.sim.world import WorldConfig
from rlur.training.loop import build_world, make_env

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate", help="run a fixed policy in the simulator and report retention metrics",
        description="Run a fixed fusion policy for D simulated days and report retention and engagement.",
    )
    p.add_argument("--policy", choices=FIXED_POLICIES, default="uniform", help="fusion policy (default: uniform)")
    p.add_argument("--users", type=positive_int, default=8192, help="simulated users (default: 8192)")
    p.add_argument("--days", type=positive_int, default=14, help="simulated calendar days (default: 14)")
    p.add_argument("--seed", type=int, default=0, help="seed of the users and their responses")
    p.add_argument("--world-seed", type=int, default=0, help="seed of the world (videos, predictors)")
    p.add_argument("--world", default=None, help="a learned world (from rlur data fit) instead of the built-in one")
    p.add_argument("--out", default="runs/simulate.json", help="JSON output file (default: runs/simulate.json)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = check_writable(args.out)
    world = build_world(args.world, WorldConfig(world_seed=args.world_seed))
    env = make_env(world, args.users, args.seed)
    policy = make_fixed_policy(args.policy, seed=args.seed)
    torch.manual_seed(args.seed)
    recorder, timing = rollout(env, policy, days=args.days, deterministic=True, progress=not args.no_progress)
    result = recorder.summary(seed=args.seed)
    result.update({
        "policy": args.policy, "days": args.days, "seed": args.seed,
        "requests_per_s": timing["requests_per_s"], "simulated_requests": timing["requests"],
        "world_config": world.config.to_dict(),
    })
    print_metrics_table(result, title=f"rlur simulate --policy {args.policy}")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0
