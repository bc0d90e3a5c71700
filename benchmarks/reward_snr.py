"""How loud each of RLUR's rewards is about the action, per transition: signal against noise.

Two fixed policies are served to the same users: uniform weights, and the hand-written rule with
one weighting per activity group (the best state rule known for the ``classic`` world,
``tests/test_room_to_learn.py``). For each reward this reports

* **retention** (``T``, the returning time at a session's end): the difference in mean ``T`` per
  session between the two policies, divided by the mean session depth (what one request's action
  can be credited with, if every request of a session shares the effect), against the standard
  deviation of ``T`` per session;
* **immediate** (``I``, RLUR's heuristic reward per request: watch time and interactions): the
  difference in mean ``I`` per request, against its standard deviation per request.

The ratio of the two signal-to-noise ratios, squared, is roughly how many more transitions the
retention critic needs than the immediate critic to see the same action effect.

    python benchmarks/reward_snr.py [--world-seed 0] [--world-preset default] [--users 4096] [--steps 300]
"""

from __future__ import annotations

import argparse

import torch

from rlur.agents.fixed import group_rule_actions, weighting_action
from rlur.agents.policy import TablePolicy
from rlur.agents.rlur import immediate_reward
from rlur.sim.env import RetentionEnv
from rlur.sim.world import WORLD_PRESETS, World, WorldConfig


def group_rule() -> TablePolicy:
    """The hand-written group rule (``rlur.agents.fixed.GROUP_RULE``: what satisfies each group)."""
    return TablePolicy(group_rule_actions())


def rewards(world: World, policy: TablePolicy, users: int, steps: int, seed: int) -> dict[str, torch.Tensor]:
    """Per-session returning times, per-request immediate rewards, and the mean session depth."""
    env = RetentionEnv(world, n_users=users, seed=seed)
    obs = env.observe()
    returns, immediate, depths = [], [], []
    with torch.no_grad():
        for _ in range(steps):
            depth = env.depth.clone()
            r = env.step(policy.act(obs, env.group))
            returns.append(r.return_time[r.session_end])
            depths.append(depth[r.session_end] + 1)
            immediate.append(immediate_reward(r.feedback.float()))
            obs = r.obs
    return {"T": torch.cat(returns), "I": torch.cat(immediate), "depth": torch.cat(depths).float()}


def snr(a: torch.Tensor, b: torch.Tensor, credit: float = 1.0) -> tuple[float, float, float]:
    """(signal, noise, signal / noise): ``|mean(a) − mean(b)| / credit`` against the pooled std."""
    signal = abs(float(a.mean() - b.mean())) / credit
    noise = float(torch.sqrt((a.var() + b.var()) / 2))
    return signal, noise, signal / noise


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world-seed", type=int, default=0)
    p.add_argument("--world-preset", choices=WORLD_PRESETS, default="default")
    p.add_argument("--users", type=int, default=4096)
    p.add_argument("--steps", type=int, default=300, help="batched requests per policy")
    p.add_argument("--seed", type=int, default=7, help="seed of the users (the same for both policies)")
    args = p.parse_args()
    torch.set_num_threads(1)
    world = World(WorldConfig.preset(args.world_preset, world_seed=args.world_seed))
    uniform = rewards(world, TablePolicy(weighting_action()[None]), args.users, args.steps, args.seed)
    rule = rewards(world, group_rule(), args.users, args.steps, args.seed)
    depth = float(torch.cat((uniform["depth"], rule["depth"])).mean())
    t = snr(uniform["T"], rule["T"], credit=depth)
    i = snr(uniform["I"], rule["I"])
    print(f"{args.users} users × {args.steps} requests per policy, world seed {args.world_seed} ({args.world_preset}); "
          f"uniform vs the group rule")
    t_u, t_r = float(uniform["T"].mean()), float(rule["T"].mean())
    print(f"mean T per session: uniform {t_u:.3f}, group rule {t_r:.3f} days ({uniform['T'].numel()} and "
          f"{rule['T'].numel()} sessions); mean session depth {depth:.2f}")
    print(f"mean I per request: uniform {float(uniform['I'].mean()):.3f}, group rule {float(rule['I'].mean()):.3f}")
    print("| reward | signal per request | noise per transition | signal / noise |")
    print("|---|---|---|---|")
    print(f"| retention T (at session ends) | {t[0]:.4f} days | {t[1]:.3f} days | {t[2]:.4f} |")
    print(f"| immediate I (every request) | {i[0]:.4f} | {i[1]:.3f} | {i[2]:.4f} |")
    print(f"(SNR_I / SNR_T)² = {(i[2] / t[2]) ** 2:.0f}: about that many times more transitions for the same "
          "evidence about the action")


if __name__ == "__main__":
    main()
