"""``rlur benchmark``: the main job."""

from __future__ import annotations

import argparse

from rlur.cli import CliError, check_writable, non_negative_int, positive_int
from rlur.distributed.backend import add_backend_args, check_backend_args
from rlur.evaluation.benchmark import (
    ALL_ROWS,
    EXTRA_ROWS,
    ROWS,
    BenchmarkConfig,
    load_extendable,
    results_markdown,
    run_benchmark,
)
from rlur.sim.world import WORLD_PRESETS

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark", help="reproduce the paper's offline table over several seeds, with ablations",
        description="Train CEM, TD3, RLUR-naive (γ = 0, 0.9), RLUR and RLUR's ablations over several seeds "
                    "with the same budget, evaluate them on the same held-out users, and write "
                    "results.json, results.md and learning_curves.png.",
    )
    p.add_argument("--seeds", type=positive_int, default=None, help="training seeds per row (default 5; quick: 2)")
    p.add_argument("--first-seed", type=non_negative_int, default=None,
                   help="train seeds FIRST … FIRST + SEEDS − 1 (default 0): more seeds for an earlier benchmark, "
                        "to pool with it (benchmarks/pooled_comparison.py)")
    p.add_argument("--world-seed", type=int, default=0)
    p.add_argument("--world-preset", choices=WORLD_PRESETS, default="default",
                   help="variant of the built-in world (default: default; see docs/simulator.md)")
    p.add_argument("--world", default=None, help="a learned world (from rlur data fit) instead of the built-in one")
    p.add_argument("--algos", default=None, help=f"comma-separated rows (default: all of {', '.join(ROWS)}; "
                                                 f"also: {', '.join(EXTRA_ROWS)})")
    p.add_argument("--out", default="runs/benchmark", help="output directory (default: runs/benchmark)")
    p.add_argument("--quick", action="store_true", help="a cut-down run (minutes) for trying it out; CI runs it")
    p.add_argument("--steps", type=positive_int, default=None, help="batched steps per run (same for every row)")
    p.add_argument("--updates-per-step", type=positive_int, default=None,
                   help="gradient updates per batched step of every off-policy row (default 1): more compute on "
                        "the same simulated requests")
    p.add_argument("--workers", type=positive_int, default=None, help="worker processes (default: CPU cores)")
    p.add_argument("--extend", action="store_true",
                   help="add the rows named in --algos to the benchmark already in --out (re-measuring any it "
                        "holds), keeping its other rows; every other setting must match its results.json")
    p.add_argument("--keep-resume", action="store_true",
                   help="keep each finished run's resume.pt (its replay buffer, ~80 MB a run), which rlur abtest "
                        "--online and the critic diagnostics need; by default it is deleted")
    p.add_argument("--no-progress", action="store_true")
    add_backend_args(p, "a process pool of --workers")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_backend_args(args)
    if args.backend == "ray" and args.workers is not None:
        raise CliError("--workers is for the local backend; with --backend ray the cluster's CPUs are the workers")
    if args.keep_resume and args.backend == "ray":
        raise CliError("--keep-resume is for the local backend")
    if args.extend and not args.algos:
        raise CliError("--extend needs --algos: the rows to add to the benchmark in --out")
    out = check_writable(args.out, directory=True)
    overrides: dict = {"world_seed": args.world_seed, "world_path": args.world, "world_preset": args.world_preset}
    if args.seeds is not None:
        overrides["seeds"] = args.seeds
    if args.first_seed is not None:
        overrides["first_seed"] = args.first_seed
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.updates_per_step is not None:
        overrides["updates_per_step"] = args.updates_per_step
    if args.workers is not None:
        overrides["workers"] = args.workers
    if args.algos:
        rows = tuple(a.strip() for a in args.algos.split(",") if a.strip())
        unknown = [r for r in rows if r not in ALL_ROWS]
        if unknown:
            raise CliError(f"unknown rows {', '.join(unknown)}; choose from {', '.join(ALL_ROWS)}")
        overrides["rows"] = rows
    cfg = BenchmarkConfig.quick(**overrides) if args.quick else BenchmarkConfig(**overrides)
    if args.extend:
        try:
            load_extendable(out, cfg)  # fail before any training
        except (FileNotFoundError, ValueError) as e:
            raise CliError(str(e)) from None
    if args.backend == "ray":
        from rlur.distributed.backend import ray_session

        with ray_session(args.ray_address, args.ray_cpus):
            result = run_benchmark(cfg, out, progress=not args.no_progress, backend="ray", extend=args.extend)
    else:
        result = run_benchmark(cfg, out, progress=not args.no_progress, extend=args.extend,
                               keep_resume=args.keep_resume)
    print(results_markdown(result))
    print(f"wrote {out}/results.json, results.md, learning_curves.png")
    return 0
