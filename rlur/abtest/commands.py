"""``rlur abtest``: a simulated online A/B (or A/A) test between two policies."""

from __future__ import annotations

import argparse
from pathlib import Path

from rlur.cli import CliError, check_writable, positive_int
from rlur.distributed.backend import add_backend_args, check_backend_args
from rlur.sim.world import WORLD_PRESETS

__all__ = ["build_config", "register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "abtest", help="simulate a live A/B test between two policies (RLUR vs CEM, …)",
        description="Split one simulated population between a control and a treatment policy by a salted hash "
                    "of the user id, run both in the same calendar, and report each metric's relative lift "
                    "with a 95 % CI and p-value (delta method over users), the MDE and a sample-ratio check. "
                    "Writes report.json, report.md and daily.png. A SPEC is a run directory (with "
                    "checkpoint.pt) or a fixed policy: uniform, click, random.",
    )
    p.add_argument("--control", required=True, metavar="SPEC", help="control arm: run directory or fixed policy")
    p.add_argument("--treatment", metavar="SPEC", default=None,
                   help="treatment arm: run directory or fixed policy (not needed with --aa)")
    p.add_argument("--users", type=positive_int, default=10_000, help="simulated users in the test (default 10,000)")
    p.add_argument("--days", type=positive_int, default=14, help="simulated calendar days (default 14)")
    p.add_argument("--seed", type=int, default=0, help="seed of the population and of all simulated randomness")
    p.add_argument("--world-seed", type=int, default=0, help="seed of the built-in world")
    p.add_argument("--world-preset", choices=WORLD_PRESETS, default="default",
                   help="variant of the built-in world, e.g. the one the arms were trained in (default: default)")
    p.add_argument("--world", default=None, help="a learned world (from rlur data fit) instead of the built-in one")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--shares", default="0.5,0.5",
                   help="traffic shares control,treatment, summing to 1 (default 0.5,0.5)")
    p.add_argument("--salt", default="rlur-abtest", help="experiment salt of the assignment hash")
    p.add_argument("--online", action="store_true",
                   help="arms keep learning from their own traffic (RLUR/TD3 learners, CEM search); "
                        "fixed policies stay fixed")
    p.add_argument("--aa", action="store_true", help="A/A test: both arms run the control policy")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument("--no-progress", action="store_true")
    add_backend_args(p, "one environment in this process")
    p.add_argument("--shards", type=positive_int, default=None,
                   help="simulate each arm's users in fixed-size blocks, each seeded from (seed, arm, block), on N "
                        "workers (default with --backend ray: the cluster's CPUs); the report does not depend on N")
    p.add_argument("--block-users", type=positive_int, default=None,
                   help="users per block with --shards or --backend ray (default 1024)")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    """Validate the flags into an :class:`~rlur.abtest.experiment.ExperimentConfig` (``CliError`` on bad input)."""
    from rlur.abtest.assignment import parse_shares
    from rlur.abtest.experiment import ExperimentConfig, resolve_spec

    if not args.aa and args.treatment is None:
        raise CliError("--treatment is required (or pass --aa for an A/A test)")
    if not 0 < args.alpha < 1:
        raise CliError(f"--alpha must be in (0, 1), got {args.alpha:g}")
    if args.users < 2:
        raise CliError(f"--users must be at least 2, got {args.users}")
    if args.world and not Path(args.world).exists():
        raise CliError(f"no learned world at {args.world} (build one with `rlur data fit`)")
    try:
        shares = parse_shares(args.shares)
        for flag, spec in (("--control", args.control), ("--treatment", None if args.aa else args.treatment)):
            if spec is not None:
                try:
                    resolve_spec(spec)
                except ValueError as err:
                    raise ValueError(f"{flag}: {err}") from None
        return ExperimentConfig(
            control=args.control, treatment=args.treatment, users=args.users, days=args.days, seed=args.seed,
            world_seed=args.world_seed, world_preset=args.world_preset, world_path=args.world, shares=shares,
            salt=args.salt, online=args.online, aa=args.aa, alpha=args.alpha,
        )
    except ValueError as err:
        raise CliError(str(err)) from None


def run(args: argparse.Namespace) -> int:
    from rlur.abtest.experiment import run_experiment
    from rlur.abtest.report import report_markdown, write_report

    check_backend_args(args)
    cfg = build_config(args)
    out = check_writable(args.out, directory=True)
    try:
        if args.shards is None and args.block_users is None and args.backend == "local":
            result = run_experiment(cfg, progress=not args.no_progress)
        else:
            result = _run_sharded(args, cfg)
    except ValueError as err:  # e.g. --online on a run without resume.pt
        raise CliError(str(err)) from None
    report = write_report(result, out)
    print(report_markdown(report))
    print(f"wrote {out}/report.json, report.md, daily.png")
    return 0


def _run_sharded(args: argparse.Namespace, cfg):
    """Arms and their user shards as blocks (``rlur.distributed.abtest``), here or on Ray actors."""
    from rlur.distributed.abtest import run_sharded_experiment
    from rlur.distributed.blocks import DEFAULT_BLOCK_USERS

    kw = dict(block_users=args.block_users or DEFAULT_BLOCK_USERS, progress=not args.no_progress)
    if args.backend == "local":
        return run_sharded_experiment(cfg, shards=args.shards or 1, backend="local", **kw)
    from rlur.distributed.backend import cluster_cpus, ray_session

    with ray_session(args.ray_address, args.ray_cpus):
        return run_sharded_experiment(cfg, shards=args.shards or cluster_cpus(), backend="ray", **kw)
