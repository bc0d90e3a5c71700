"""Sharded collection for ``rlur train --backend ray``: shard actors step user blocks, the learner learns.

The training population (``n_users``) is cut into fixed-size blocks (:mod:`rlur.distributed.blocks`);
each :class:`TrainShard` actor owns a few blocks, one :class:`~rlur.sim.env.RetentionEnv` each, seeded
from ``(seed, block)``. A round:

1. the learner publishes its current serving policy once (``ray.put``): the actor network with the
   exploration σ of this step (RLUR, TD3), the CEM generation's candidates and user split, or a
   fixed table;
2. every shard serves and steps each of its blocks ``n`` times with that policy, sampling the
   exploration noise from the block's own generator, and returns the transitions
   ``(obs, served, StepResult)``;
3. the learner concatenates the blocks in block order, step by step, and feeds them to its usual
   ``observe`` (delayed-return staging, replay buffer, updates), exactly as the local loop does.

``n`` is ``--sync-every`` (1 by default: the policy is never behind the learner), cut short at
evaluations, checkpoints and CEM generation boundaries. The run is deterministic for a fixed seed
and block size, and does not depend on the number of shards; it is not bit-identical to the local
loop, whose single environment draws all users from one seed. ``resume.pt`` holds every block's
environment, so ``--resume`` continues a Ray run bit for bit (with the same block size).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch

from rlur.cli import CliError
from rlur.distributed import require_ray
from rlur.distributed.blocks import Block, make_blocks, split_shards
from rlur.distributed.shards import build_from_spec, world_spec
from rlur.sim.env import StepResult, env_state_dict, load_env_state_dict

__all__ = ["DEFAULT_TRAIN_BLOCK_USERS", "ShardedCollector", "TrainShard", "serving_snapshot"]

#: Users per block in training (the default 512 training users make 2 blocks).
DEFAULT_TRAIN_BLOCK_USERS = 256


# --- what a shard serves with ----------------------------------------------------------------------
class _ActorServer:
    """RLUR / TD3: ``a = μ(s) + σ ε`` from a copy of the learner's actor (σ: this step's exploration),
    with a ``share`` of the rows replaced by pure weightings (``RLURConfig.candidate_explore``)."""

    def __init__(self, actor: torch.nn.Module, candidates: torch.Tensor | None = None, share: float = 0.0) -> None:
        self.actor, self.candidates, self.share = actor, candidates, share

    @torch.no_grad()
    def serve(self, obs: torch.Tensor, group: torch.Tensor, block: Block, gen: torch.Generator) -> dict:
        from rlur.agents.networks import gaussian_log_prob
        from rlur.agents.rlur import explore_candidates

        mu, std = self.actor(obs, group)
        action = mu + std * torch.randn(mu.shape, generator=gen)
        if self.share:
            action = explore_candidates(action, self.candidates, self.share, gen)
        return {"action": action, "mu": mu, "std": std, "log_prob": gaussian_log_prob(action, mu, std)}


class _CEMServer:
    """CEM: each user gets its population member's candidate weights (the block's slice of the split)."""

    def __init__(self, search: Any) -> None:
        self.candidates, self.member = search.candidates.clone(), search.member.clone()
        self.mean, self.std, self.n_tables = search.mean.clone(), search.std.clone(), search.n_tables

    def serve(self, obs: torch.Tensor, group: torch.Tensor, block: Block, gen: torch.Generator) -> dict:
        from rlur.agents.networks import gaussian_log_prob

        table = group if self.n_tables > 1 else torch.zeros_like(group)
        action = self.candidates[self.member[block.start:block.stop], table]
        mu, std = self.mean[table], self.std[table]
        return {"action": action, "mu": mu, "std": std, "log_prob": gaussian_log_prob(action, mu, std)}


class _TableServer:
    """Fixed baselines (uniform, click): the table policy's μ."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def serve(self, obs: torch.Tensor, group: torch.Tensor, block: Block, gen: torch.Generator) -> dict:
        return self.policy.sample(obs, group, deterministic=True)


def serving_snapshot(learner: Any) -> Any:
    """What the shards serve with now; sets the learner's exploration σ as its own ``serve`` would."""
    from rlur.training.loop import CEMLearner, OffPolicyLearner

    if isinstance(learner, OffPolicyLearner):
        learner.agent.set_exploration(learner.cfg.explore_std(learner.step))  # as OffPolicyLearner.serve
        return _ActorServer(copy.deepcopy(learner.agent.actor).eval(), getattr(learner.agent, "candidates", None),
                            learner.candidate_share)
    if isinstance(learner, CEMLearner):
        return _CEMServer(learner.search)
    return _TableServer(learner.policy())


# --- the shard actor ---------------------------------------------------------------------------------
class TrainShard:
    """A Ray actor stepping a few user blocks (one environment each) with the policy it is sent."""

    def __init__(self, spec: tuple[str | None, dict | None], blocks: list[Block]) -> None:
        from rlur.training.loop import make_env

        torch.set_num_threads(1)
        world = build_from_spec(spec)
        self.blocks = blocks
        self.envs = [make_env(world, b.size, b.seed) for b in blocks]
        self.gens = [torch.Generator().manual_seed(b.seed * 31 + 7) for b in blocks]
        self.obs = [env.observe() for env in self.envs]

    def run(self, server: Any, steps: int) -> list[list[tuple[torch.Tensor, dict, StepResult]]]:
        """``steps`` steps of every block: ``[block][step] = (obs, served, result)``."""
        out = []
        for i, (block, env, gen) in enumerate(zip(self.blocks, self.envs, self.gens, strict=True)):
            traj = []
            for _ in range(steps):
                obs = self.obs[i]
                served = server.serve(obs, env.group, block, gen)
                result = env.step(served["action"])
                traj.append((obs, served, result))
                self.obs[i] = result.obs
            out.append(traj)
        return out

    def state_dict(self) -> list[dict]:
        return [{"env": env_state_dict(env), "rng": gen.get_state(), "obs": obs}
                for env, gen, obs in zip(self.envs, self.gens, self.obs, strict=True)]

    def load_state_dict(self, states: list[dict]) -> None:
        for i, state in enumerate(states):
            load_env_state_dict(self.envs[i], state["env"])
            self.gens[i].set_state(state["rng"])
            self.obs[i] = state["obs"]


def _concat(trajs: list[list[tuple]], i: int) -> tuple[torch.Tensor, dict, StepResult]:
    """Step ``i`` of every block, rows in block order (= the population's user order)."""
    obs = torch.cat([t[i][0] for t in trajs])
    served = {k: torch.cat([t[i][1][k] for t in trajs]) for k in trajs[0][i][1]}
    result = StepResult(**{f.name: torch.cat([getattr(t[i][2], f.name) for t in trajs])
                           for f in dataclasses.fields(StepResult)})
    return obs, served, result


# --- the learner side ----------------------------------------------------------------------------------
class ShardedCollector:
    """The ``Trainer``'s collection hook: shard actors step the blocks, the learner observes.

    Args:
        shards: actors (at most one per block and one per CPU of the cluster).
        block_users: users per block (the result depends on it, not on ``shards``).
        sync_every: environment steps each shard runs per policy broadcast.
    """

    def __init__(self, shards: int, block_users: int = DEFAULT_TRAIN_BLOCK_USERS, sync_every: int = 1) -> None:
        if shards < 1 or block_users < 1 or sync_every < 1:
            raise ValueError("shards, block_users and sync_every must be positive")
        self.shards, self.block_users, self.sync_every = shards, block_users, sync_every
        self.actors: list[Any] = []
        self.n_blocks = 0

    def start(self, trainer: Any) -> None:
        """Start one actor per shard, each with its blocks of ``trainer``'s population."""
        from rlur.distributed.backend import actor_slots

        ray = require_ray()
        cfg = trainer.cfg
        blocks = make_blocks(cfg.n_users, self.block_users, cfg.seed)
        self.n_blocks = len(blocks)
        self.shards = min(actor_slots(self.shards), len(blocks))
        actor = ray.remote(num_cpus=1)(TrainShard)
        spec = world_spec(trainer.world)
        self.actors = [actor.remote(spec, shard) for shard in split_shards(blocks, self.shards)]

    def describe(self) -> dict[str, int | str]:
        """The layout a run's results depend on (stored in ``resume.pt``; the shard count is not part of it)."""
        return {"backend": "ray", "block_users": self.block_users, "sync_every": self.sync_every}

    def collect(self, learner: Any, limit: int) -> tuple[int, dict[str, float]]:
        """One round of at most ``limit`` steps; returns the steps taken and the last update's stats."""
        ray = require_ray()
        n = min(self.sync_every, limit)
        search = getattr(learner, "search", None)
        if search is not None:  # a CEM generation ends inside observe: never serve across it
            n = min(n, search.config.generation_steps - search.steps_in_generation)
        server = ray.put(serving_snapshot(learner))
        parts = self._get([a.run.remote(server, n) for a in self.actors])
        trajs = [traj for part in parts for traj in part]
        stats: dict[str, float] = {}
        for i in range(n):
            stats = learner.observe(*_concat(trajs, i)) or stats
        return n, stats

    def state_dict(self) -> list[dict]:
        return [s for part in self._get([a.state_dict.remote() for a in self.actors]) for s in part]

    def load_state_dict(self, states: list[dict]) -> None:
        if len(states) != self.n_blocks:
            raise ValueError(f"the checkpoint holds {len(states)} blocks, this run has {self.n_blocks}")
        calls, i = [], 0
        for actor, size in zip(self.actors, self._sizes(), strict=True):
            calls.append(actor.load_state_dict.remote(states[i:i + size]))
            i += size
        self._get(calls)

    def _sizes(self) -> list[int]:
        return [len(s) for s in split_shards(list(range(self.n_blocks)), self.shards)]

    def _get(self, refs: list[Any]) -> list[Any]:
        ray = require_ray()
        try:
            return ray.get(refs)
        except ray.exceptions.RayActorError as err:
            raise CliError(f"a simulation shard died ({type(err).__name__}); continue from the last checkpoint "
                           "with --resume") from None

    def close(self) -> None:
        ray = require_ray()
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
