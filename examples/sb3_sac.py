"""Stable-Baselines3's SAC on rlur's simulator, evaluated with rlur's metrics next to uniform, CEM and RLUR.

    pip install -e '.[sb3]'          # or: make test (installs every extra)
    python examples/sb3_sac.py       # a few minutes on one core; --quick for a smoke run

SAC gets the project's training budget (1,200 batched steps × 512 users = 614,400 requests, one
gradient update of 512 transitions per step, as ``rlur train`` and ``rlur benchmark``) through
:class:`rlur.integrations.sb3.RetentionVecEnv` (``rlur/Retention-v1``: the paper's reward, episodes of
20 sessions). Every policy is then evaluated by :func:`rlur.evaluate` on the benchmark's held-out
users (4,096 users, 14 days, seed 7,000,001). ``--no-rlur`` skips training CEM and RLUR.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.vec_env import VecMonitor

import rlur
from rlur.integrations.sb3 import RetentionVecEnv
from rlur.sim.world import SCORE_NAMES, World, WorldConfig

METRICS = (("avg_return_day", "avg return day ↓"), ("avg_return_day_per_user", "per user ↓"),
           ("day1_retention", "day-1 retention ↑"), ("watch_time_per_request", "watch s / request"))


def train_sac(world: World, steps: int, users: int, seed: int) -> tuple[SAC, float]:
    """SAC with the project's budget: ``steps`` batched steps of ``users`` users, one update of 512 per step."""
    env = VecMonitor(RetentionVecEnv(users, world, seed=seed))
    model = SAC("MlpPolicy", env, buffer_size=200_000, batch_size=512, learning_starts=20 * users, train_freq=1,
                gradient_steps=1, seed=seed, device="cpu")
    model.learn(total_timesteps=steps * users)
    ep_rew = float(np.mean([ep["r"] for ep in model.ep_info_buffer])) if model.ep_info_buffer else float("nan")
    return model, ep_rew


def train_rlur(algo: str, world_config: WorldConfig, steps: int, users: int, seed: int, out: str) -> object:
    """CEM or RLUR with ``rlur train``'s loop on the same budget; returns the deployable policy."""
    from rlur.training.loop import TrainConfig, Trainer

    cfg = TrainConfig(algo=algo, steps=steps, n_users=users, seed=seed, world=world_config, eval_every=steps,
                      eval_users=256, eval_days=2, checkpoint_every=steps)
    trainer = Trainer(cfg, f"{out}/{algo}", progress=False)
    trainer.train()
    return trainer.learner.policy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1200, help="batched training steps (default 1200)")
    p.add_argument("--users", type=int, default=512, help="users per batched step (default 512)")
    p.add_argument("--eval-users", type=int, default=4096)
    p.add_argument("--eval-days", type=int, default=14)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-rlur", action="store_true", help="skip CEM and RLUR")
    p.add_argument("--quick", action="store_true", help="a smoke run (CI): 20 steps of 32 users, 64 users × 2 days")
    args = p.parse_args()
    if args.quick:
        args.steps, args.users, args.eval_users, args.eval_days = 20, 32, 64, 2
    torch.set_num_threads(1)  # small networks and batches: one thread is fastest, and far faster on a busy machine
    world_config = WorldConfig()
    world = World(world_config)
    held_out = {"world": world, "users": args.eval_users, "days": args.eval_days, "seed": 7_000_001}
    rows: dict[str, tuple[dict, float]] = {}

    t0 = time.perf_counter()
    sac, ep_rew = train_sac(world, args.steps, args.users, args.seed)
    print(f"SAC: {args.steps * args.users:,} requests in {time.perf_counter() - t0:.0f} s; "
          f"ep_rew_mean {ep_rew:.1f} (last 100 episodes of 20 sessions)")
    rows["SB3 SAC"] = rlur.evaluate(sac, **held_out), time.perf_counter() - t0
    t0 = time.perf_counter()
    rows["uniform"] = rlur.evaluate(lambda obs: np.zeros(len(SCORE_NAMES)), **held_out), time.perf_counter() - t0
    if not args.no_rlur:
        with tempfile.TemporaryDirectory() as out:
            for algo in ("cem", "rlur"):
                t0 = time.perf_counter()
                policy = train_rlur(algo, world_config, args.steps, args.users, args.seed, out)
                rows[algo.upper()] = rlur.evaluate(policy, **held_out), time.perf_counter() - t0

    print(f"\nHeld-out evaluation: {args.eval_users:,} users × {args.eval_days} days, seed 7,000,001; training "
          f"{args.steps} steps × {args.users} users, seed {args.seed}")
    print("| policy | " + " | ".join(label for _, label in METRICS) + " | train + eval s |")
    print("|---" * (len(METRICS) + 2) + "|")
    for name, (result, seconds) in rows.items():
        cells = [f"{result[key]['mean']:.3f}" for key, _ in METRICS]
        print(f"| {name} | " + " | ".join(cells) + f" | {seconds:.0f} |")


if __name__ == "__main__":
    main()
