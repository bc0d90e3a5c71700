"""``rlur simulate``: run a fixed policy in the built-in world and report the metrics."""

from __future__ import annotations

import argparse
import json

import torch

from rlur.agents.fixed import FIXED_POLICIES, make_fixed_policy
from rlur.cli import check_writable, positive_int
from rlur.distributed.backend import add_backend_args, check_backend_args
from rlur.evaluation.report import print_metrics_table
from rlur.evaluation.rollout import rollout
from rlur.sim.world import WORLD_PRESETS, WorldConfig
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
    p.add_argument("--world-preset", choices=WORLD_PRESETS, default="default",
                   help="variant of the built-in world (default: default; see docs/simulator.md)")
    p.add_argument("--world", default=None, help="a learned world (from rlur data fit) instead of the built-in one")
    p.add_argument("--out", default="runs/simulate.json", help="JSON output file (default: runs/simulate.json)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--shards", type=positive_int, default=None,
                   help="simulate the users in fixed-size blocks, each seeded from (seed, block), on N workers "
                        "(default with --backend ray: the cluster's CPUs); the metrics do not depend on N, "
                        "but differ from the unsharded run, which draws all users from one seed")
    p.add_argument("--block-users", type=positive_int, default=None,
                   help="users per block with --shards or --backend ray (default 1024)")
    add_backend_args(p, "one process")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_backend_args(args)
    out = check_writable(args.out)
    world = build_world(args.world, WorldConfig.preset(args.world_preset, world_seed=args.world_seed))
    if args.shards is None and args.block_users is None and args.backend == "local":
        env = make_env(world, args.users, args.seed)
        policy = make_fixed_policy(args.policy, seed=args.seed)
        torch.manual_seed(args.seed)
        recorder, timing = rollout(env, policy, days=args.days, deterministic=True, progress=not args.no_progress)
    else:
        recorder, timing = _run_sharded(args, world)
    result = recorder.summary(seed=args.seed)
    result.update({
        "policy": args.policy, "days": args.days, "seed": args.seed,
        "requests_per_s": timing["requests_per_s"], "simulated_requests": timing["requests"],
        "world_config": world.config.to_dict(),
    })
    if "blocks" in timing:
        result["sharding"] = {k: timing[k] for k in ("backend", "shards", "blocks", "block_users")}
    print_metrics_table(result, title=f"rlur simulate --policy {args.policy}")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def _run_sharded(args: argparse.Namespace, world) -> tuple:
    """The blocked simulation (``rlur.distributed.shards``), in this process or on Ray actors."""
    from rlur.distributed.blocks import DEFAULT_BLOCK_USERS
    from rlur.distributed.shards import run_sharded_simulation

    block_users = args.block_users or DEFAULT_BLOCK_USERS
    kw = dict(world=world, policy=args.policy, users=args.users, days=args.days, seed=args.seed,
              block_users=block_users, progress=not args.no_progress)
    if args.backend == "local":
        return run_sharded_simulation(shards=args.shards or 1, backend="local", **kw)
    from rlur.distributed.backend import cluster_cpus, ray_session

    with ray_session(args.ray_address, args.ray_cpus):
        return run_sharded_simulation(shards=args.shards or cluster_cpus(), backend="ray", **kw)
