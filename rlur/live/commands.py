"""``rlur live``: the production loop rehearsed (serve → log → join → train → publish), and its roles."""

from __future__ import annotations

import argparse
from pathlib import Path

from rlur.cli import (
    ABLATIONS,
    CliError,
    check_writable,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)

__all__ = ["register"]

#: ``--quick``: a small run (about a minute on 2 cores) that still shows the loop working.
QUICK = {"users": 1024, "days": 8, "learning_starts": 2_000, "explore_anneal": 40_000, "transitions_per_update": 64.0}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "live", help="rehearse the production loop: serve, log, join delayed labels, train, publish, hot-reload",
        description="Simulated users send requests to the ranking service; their feedback and session events "
        "go to an event log; a joiner process turns them into transitions when the return labels arrive; a "
        "trainer process trains RLUR on them and publishes versions that the service hot-reloads. Half the "
        "users (by hash) stay on a frozen copy of the starting policy. See docs/live.md.",
    )
    add = p.add_argument
    add("--out", required=True, metavar="DIR", help="run directory (event log, transitions, policies, report)")
    add("--users", type=positive_int, default=None, help="simulated users, both arms (default 8192)")
    add("--days", type=positive_int, default=None, help="simulated days (default 30)")
    add("--seed", type=int, default=0, help="seed of the users, the simulator and the serving noise")
    add("--world-seed", type=int, default=0)
    add("--start", default="uniform", metavar="POLICY",
        help="starting policy: uniform, click, or a checkpoint (e.g. an `rlur train --algo cem` run directory)")
    add("--algo", default="rlur", choices=("rlur", "rlur-naive", "td3"), help="what the trainer trains")
    add("--server", default="inprocess", choices=("inprocess", "http"),
        help="inprocess: the service's ranker in this process (fast); http: `rlur serve` on loopback")
    add("--horizon", type=positive_int, default=None, metavar="K",
        help="censoring horizon in days (default: the world's max return day, 10)")
    add("--shares", default="0.5,0.5", help="traffic shares control,treatment (default 0.5,0.5)")
    add("--train-arms", default="treatment", choices=("treatment", "all"),
        help="train on the treatment's own traffic (default) or on every arm's, each sample with the logged "
        "behaviour log-prob of the version that served it")
    add("--transitions-per-update", type=positive_float, default=None, metavar="N",
        help="one gradient update per N new transitions (default 256)")
    add("--publish-every", type=positive_int, default=None, metavar="U", help="updates per version (default 25)")
    add("--learning-starts", type=non_negative_int, default=None, help="transitions before the first update")
    add("--explore-anneal", type=positive_int, default=None, metavar="N",
        help="transitions over which σ anneals from 0.3 to 0.05 (default 300000)")
    add("--day-seconds", type=non_negative_float, default=0.0, metavar="S",
        help="minimum wall seconds per simulated day (default 0: as fast as back-pressure allows)")
    add("--max-lag-days", type=non_negative_float, default=1.0, metavar="D",
        help="back-pressure: a day waits until the trainer consumed labels D days old (0: off; default 1)")
    add("--request-seconds", type=positive_int, default=120, help="simulated seconds between requests (120)")
    add("--final-days", type=positive_int, default=None, help="days at the end for the final lift (last third)")
    for flag in ABLATIONS:
        add(f"--no-{flag}", action="store_true", help=f"RLUR ablation: train without {flag}")
    add("--quick", action="store_true", help="a small run: 1024 users × 8 days, faster learning settings")
    add("--no-progress", action="store_true")
    add("--role", choices=("joiner", "trainer"), help=argparse.SUPPRESS)
    p.set_defaults(func=run_live_command)


def build_config(args: argparse.Namespace):
    from rlur.abtest.assignment import parse_shares
    from rlur.agents.rlur import RLURConfig
    from rlur.live.rehearsal import LiveConfig
    from rlur.live.trainer import TrainerConfig

    base = QUICK if args.quick else {}
    pick = lambda name, default: (getattr(args, name) if getattr(args, name) is not None  # noqa: E731
                                  else base.get(name, default))
    off = {field: False for flag, field in ABLATIONS.items() if getattr(args, f"no_{flag.replace('-', '_')}", False)}
    trainer = TrainerConfig(
        algo=args.algo, seed=args.seed, train_arms=args.train_arms, rlur=RLURConfig(**off),
        transitions_per_update=float(pick("transitions_per_update", 256.0)),
        publish_every=pick("publish_every", 25), learning_starts=pick("learning_starts", 5_000),
        explore_anneal=pick("explore_anneal", 300_000),
    )
    return LiveConfig(
        users=pick("users", 8192), days=pick("days", 30), seed=args.seed, world_seed=args.world_seed,
        start=args.start, horizon_days=args.horizon, shares=parse_shares(args.shares), server=args.server,
        request_seconds=args.request_seconds, day_seconds=args.day_seconds, max_lag_days=args.max_lag_days,
        final_days=args.final_days, trainer=trainer,
    )


def run_live_command(args: argparse.Namespace) -> int:
    if args.role:
        from rlur.live.roles import run_role

        return run_role(args.role, args.out)
    from rlur.live.rehearsal import START_POLICIES, run_live

    if args.start not in START_POLICIES and not Path(args.start).exists():
        raise CliError(f"--start {args.start!r}: not one of {', '.join(START_POLICIES)} nor an existing checkpoint")
    cfg = build_config(args)
    if cfg.final_days is not None and cfg.final_days > cfg.days:
        raise CliError(f"--final-days {cfg.final_days} exceeds --days {cfg.days}")
    out = check_writable(args.out, directory=True)
    if (out / "events.sqlite").exists():
        raise CliError(f"{out} already holds a live run; use a new --out")
    try:
        summary = run_live(cfg, out, progress=not args.no_progress)
    except (RuntimeError, TimeoutError) as err:  # a role that keeps failing, a service that does not start
        raise CliError(str(err)) from None
    if not summary["labels"]["conserved"]:
        raise CliError("the label accounting does not balance (see report.md)")
    print(f"wrote {out / 'live.json'}, {out / 'report.md'} and {out / 'curve.png'}")
    return 0
