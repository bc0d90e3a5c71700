"""Simulator throughput: simulated user-requests per second through the full batched step.

    python benchmarks/sim_speed.py [--sizes 1024 8192 65536] [--steps 20] [--threads N]

Each size builds the default world (C = 200 candidates), warms up for 3 steps, then times
``--steps`` steps of ``RetentionEnv.step`` with random actions (candidate stage, ranking, feedback,
leave and return modules: the whole step). It also reports the peak resident memory of the process
and the throughput of ``rlur simulate``'s rollout loop (recording metrics) at B = 8,192, to show
what bookkeeping costs. Figures depend on the machine and its load: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from rlur.agents.fixed import make_fixed_policy
from rlur.evaluation.rollout import rollout
from rlur.sim.env import RetentionEnv
from rlur.sim.world import World, WorldConfig


def step_throughput(world: World, users: int, steps: int) -> float:
    env = RetentionEnv(world, n_users=users, seed=0)
    g = torch.Generator().manual_seed(0)
    actions = [torch.rand(users, env.k, generator=g) * 2 - 1 for _ in range(4)]
    for i in range(3):
        env.step(actions[i % 4])
    start = time.perf_counter()
    for i in range(steps):
        env.step(actions[i % 4])
    return users * steps / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 8192, 65536])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    world = World(WorldConfig())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, C = {world.config.n_candidates}")
    print(f"{'users B':>10} {'user-requests/s':>16} {'peak RSS (MiB)':>15}")
    for b in args.sizes:
        rate = step_throughput(world, b, args.steps)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{b:>10,} {rate:>16,.0f} {rss:>15,.0f}")
    env = RetentionEnv(world, n_users=8192, seed=1)
    _, info = rollout(env, make_fixed_policy("uniform"), days=3)
    print(f"rollout with metrics (B = 8,192, 3 days): {info['requests_per_s']:,.0f} user-requests/s")


if __name__ == "__main__":
    main()
