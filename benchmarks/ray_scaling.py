"""Simulated requests per second: in-process against Ray with 1 and 2 workers.

    python benchmarks/ray_scaling.py [--users 8192] [--days 5] [--block-users 1024] [--repeat 3] [--workers 1 2]

Four ways to run the same ``rlur simulate`` job (uniform policy, metrics recorded):

* **in-process, one env**: one :class:`~rlur.sim.env.RetentionEnv` of all users (``rlur simulate``);
* **in-process, blocked**: the same users in fixed-size blocks stepped one after the other
  (``rlur simulate --shards N``): what a shard does, without Ray;
* **Ray, W workers**: the blocks on W shard actors (``rlur simulate --backend ray --shards W``).

Ray is timed with warm actors (started and used once before the timed runs), as a long-lived
simulation service runs; the cold figure (actor start-up included) is printed beside it. Each
figure is the best of ``--repeat`` runs. Two rates per run: requests per wall-clock second, and
requests per CPU-second (all CPU the job used: this process, plus the Ray workers' own CPU while
they stepped their blocks), which stays meaningful when other jobs share the machine. It prints the
scaling efficiency ``r(W) / (W · r(1))``, the overhead of one Ray worker against the in-process runs
``1 − r(1) / r(in-process)``, and, for ``docs/scaling.md``, the learner's single-node figure (RLUR
updates per second, batch 512, one thread). Measure on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch

from rlur.agents.fixed import make_fixed_policy
from rlur.distributed.backend import WORKER_ENV
from rlur.distributed.shards import SimShardPool, run_sharded_simulation
from rlur.evaluation.rollout import rollout
from rlur.sim.env import RetentionEnv
from rlur.sim.world import World, WorldConfig


def _best(runs: list[dict]) -> dict:
    return {"wall": max(r["wall"] for r in runs), "cpu": max(r["cpu"] for r in runs)}


def in_process(world: World, users: int, days: int, repeat: int) -> dict:
    runs = []
    for _ in range(repeat):
        env = RetentionEnv(world, n_users=users, seed=0)
        start, cpu = time.perf_counter(), time.process_time()
        _, timing = rollout(env, make_fixed_policy("uniform"), days=days)
        runs.append({"wall": timing["requests"] / (time.perf_counter() - start),
                     "cpu": timing["requests"] / (time.process_time() - cpu)})
    return _best(runs)


def blocked(world: World, users: int, days: int, block_users: int, repeat: int, **kw) -> dict:
    runs = []
    for _ in range(repeat):
        cpu = time.process_time()
        _, timing = run_sharded_simulation(world, "uniform", users, days, seed=0, block_users=block_users, **kw)
        driver = time.process_time() - cpu
        worker = timing["worker_cpu_seconds"] if kw.get("backend") == "ray" else 0.0  # local: already in driver
        runs.append({"wall": timing["requests_per_s"], "cpu": timing["requests"] / (driver + worker)})
    return _best(runs)


def ray_workers(world: World, workers: int, users: int, days: int, block_users: int, repeat: int) -> dict:
    start = time.perf_counter()
    pool = SimShardPool(world, workers)
    try:
        # Cold: actor start-up (a Python process importing torch) and the first run together.
        _, timing = run_sharded_simulation(world, "uniform", users, days, seed=0, block_users=block_users,
                                           backend="ray", pool=pool)
        cold = timing["requests"] / (time.perf_counter() - start)
        warm = blocked(world, users, days, block_users, repeat, backend="ray", pool=pool)
    finally:
        pool.close()
    return {**warm, "cold": cold}


def learner_updates(seconds: float = 5.0, batch_size: int = 512) -> float:
    """RLUR gradient updates per second on a replay buffer of real transitions."""
    from rlur.training.loop import TrainConfig, Trainer

    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(TrainConfig(algo="rlur", steps=40, n_users=512, eval_every=10_000, learning_starts=10_000),
                          tmp, progress=False)
        for _ in range(40):  # fill the replay buffer
            served = trainer.learner.serve(trainer.obs, trainer.env.group)
            result = trainer.env.step(served["action"])
            trainer.learner.observe(trainer.obs, served, result)
            trainer.obs = result.obs
        agent, buffer = trainer.learner.agent, trainer.learner.buffer
        gen = torch.Generator().manual_seed(0)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            agent.update(buffer.sample(batch_size, gen), gen)
            n += 1
        return n / (time.perf_counter() - start)


def report(figures: dict, args: argparse.Namespace) -> None:
    print(f"torch {torch.__version__}, 1 thread per process, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}, {args.users:,} users x {args.days} days, blocks of {args.block_users:,}, "
          f"best of {args.repeat}")
    print(f"{'run':<24}{'requests/s (wall)':>19}{'requests/CPU-s':>16}{'cold, with start-up':>21}")
    rows = [("in-process, one env", figures["in_process"]), ("in-process, blocked", figures["in_process_blocked"])]
    rows += [(f"Ray, {w} worker{'s' if w > 1 else ''}", figures[f"ray_{w}"]) for w in args.workers]
    for name, f in rows:
        cold = f"{f['cold']:>21,.0f}" if "cold" in f else ""
        print(f"{name:<24}{f['wall']:>19,.0f}{f['cpu']:>16,.0f}{cold}")
    one = figures.get("ray_1")
    if one:
        for w in args.workers:
            if w > 1:
                eff = figures[f"ray_{w}"]["wall"] / (w * one["wall"])
                print(f"scaling efficiency, {w} workers: {eff:.0%} (wall-clock r({w}) / ({w} r(1)))")
        for key, label in (("wall", "wall-clock"), ("cpu", "CPU")):
            print(f"overhead of 1 Ray worker, {label}: {1 - one[key] / figures['in_process'][key]:+.0%} vs one env, "
                  f"{1 - one[key] / figures['in_process_blocked'][key]:+.0%} vs blocked in-process")
    print(f"learner: {figures['learner_updates_per_s']:.0f} RLUR updates/s (batch 512, one thread)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=8192)
    ap.add_argument("--days", type=int, default=5)
    ap.add_argument("--block-users", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()

    import ray

    torch.set_num_threads(1)
    world = World(WorldConfig())
    ray.init(num_cpus=max(args.workers), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": dict(WORKER_ENV)})
    try:
        figures: dict = {
            "in_process": in_process(world, args.users, args.days, args.repeat),
            "in_process_blocked": blocked(world, args.users, args.days, args.block_users, args.repeat),
        }
        for w in args.workers:
            figures[f"ray_{w}"] = ray_workers(world, w, args.users, args.days, args.block_users, args.repeat)
    finally:
        ray.shutdown()
    figures["learner_updates_per_s"] = learner_updates()
    figures["load_average"] = os.getloadavg()[0]
    report(figures, args)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "figures": figures}, fh, indent=2)


if __name__ == "__main__":
    main()
