"""Simulator throughput: simulated user-requests per second through the full batched step.

    python benchmarks/sim_speed.py [--sizes 1024 8192 65536] [--steps 20] [--repeat 3] [--threads N]

Each size builds the default world (C = 200 candidates), warms up for 3 steps, then times
``--steps`` steps of ``RetentionEnv.step`` with random actions (candidate stage, ranking, feedback,
leave and return modules: the whole step), ``--repeat`` times, and reports the best run. It also
reports the peak resident memory of the process and the throughput of ``rlur simulate``'s rollout
loop (policy, step and ``MetricsRecorder.record``) at B = 8,192 next to that of its bare
``RetentionEnv.step`` calls, to show what the bookkeeping costs.

Figures depend on the machine and its load: run it on a quiet machine. On a shared 2-core machine
``--threads 1`` is usually the fastest (and much steadier) setting: when the other core is busy,
every multi-threaded op waits for it.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from rlur.agents.fixed import make_fixed_policy
from rlur.evaluation.metrics import MetricsRecorder
from rlur.evaluation.rollout import rollout
from rlur.sim.env import RetentionEnv
from rlur.sim.world import World, WorldConfig


def step_throughput(world: World, users: int, steps: int, repeat: int = 1) -> float:
    env = RetentionEnv(world, n_users=users, seed=0)
    g = torch.Generator().manual_seed(0)
    actions = [torch.rand(users, env.k, generator=g) * 2 - 1 for _ in range(4)]
    for i in range(3):
        env.step(actions[i % 4])
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        for i in range(steps):
            env.step(actions[i % 4])
        best = max(best, users * steps / (time.perf_counter() - start))
    return best


def _timed(fn, spent: dict, key: str):
    """``fn``, adding the seconds each call takes to ``spent[key]``."""
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        spent[key] += time.perf_counter() - start
        return out
    return wrapper


def rollout_vs_step(world: World, users: int = 8192, days: int = 3, repeat: int = 1) -> dict:
    """``rlur simulate``'s loop (uniform policy, metrics recorded) against the bare step inside it.

    The env's ``step`` and ``MetricsRecorder.record`` are timed during the rollout itself, so the
    comparison does not depend on the machine's load changing between two runs. Returns the
    rollout's throughput, the throughput of its ``step`` calls alone, and ``record``'s time per step.
    """
    policy = make_fixed_policy("uniform")
    best: dict = {}
    for _ in range(repeat):
        env = RetentionEnv(world, n_users=users, seed=1)
        spent = {"step": 0.0, "record": 0.0}
        env.step = _timed(env.step, spent, "step")
        record = MetricsRecorder.record
        MetricsRecorder.record = _timed(record, spent, "record")
        try:
            _, info = rollout(env, policy, days=days)
        finally:
            MetricsRecorder.record = record
        run = {
            "rollout": info["requests_per_s"], "step": info["requests"] / spent["step"],
            "record_ms": spent["record"] / info["steps"] * 1e3,
            "overhead": (info["seconds"] - spent["step"]) / spent["step"],
        }
        if not best or run["rollout"] > best["rollout"]:
            best = run
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 8192, 65536])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per size; the best is reported")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--no-rollout", action="store_true", help="skip the rollout-with-metrics comparison")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    world = World(WorldConfig())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, C = {world.config.n_candidates}, "
          f"best of {args.repeat} runs of {args.steps} steps")
    print(f"{'users B':>10} {'user-requests/s':>16} {'peak RSS (MiB)':>15}")
    for b in args.sizes:
        rate = step_throughput(world, b, args.steps, args.repeat)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{b:>10,} {rate:>16,.0f} {rss:>15,.0f}", flush=True)
    if args.no_rollout:
        return
    r = rollout_vs_step(world, repeat=min(args.repeat, 2))
    print(f"rollout with metrics (B = 8,192, 3 days): {r['rollout']:,.0f} user-requests/s")
    print(f"  its RetentionEnv.step calls alone:      {r['step']:,.0f} user-requests/s; the rest of the loop "
          f"(policy, MetricsRecorder.record {r['record_ms']:.2f} ms/step, bookkeeping) adds "
          f"{100 * r['overhead']:.1f} % to the step time")


if __name__ == "__main__":
    main()
