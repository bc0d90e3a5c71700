"""``rlur abtest --shards N [--backend ray]``: arms, and user shards within an arm, as actors.

The population and its assignment are the local test's (the same salted hash of the user id).
Each arm's users, in id order, are cut into fixed-size blocks; a block is simulated on its own, in
its own :class:`~rlur.sim.env.RetentionEnv` seeded from ``(seed, arm, block)``, with its own copy of
the arm's policy (serving noise seeded per block) and the same calendar-synchronised loop as the
local test. An arm that learns online (``--online`` on an RLUR/TD3/CEM run) is one block: its
learner must see all of its arm's traffic. Each actor serves one arm and steps its share of that
arm's blocks.

Reduction: every block returns its users' per-user × day table (opens, requests, watch seconds,
gaps; counts are integers), scattered back into the population's table by user id. Daily and
whole-test metrics are then computed from that one table, exactly as for the local test: no
average of averages, and the result does not depend on the number of shards. It differs from the
unsharded local test (one environment for all users) only through the simulation's randomness.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from rlur.abtest.assignment import assign_arms
from rlur.abtest.experiment import (
    ARM_NAMES,
    OFF_POLICY_ALGOS,
    ExperimentConfig,
    ExperimentResult,
    UserDayTable,
    build_arm,
    resolve_spec,
    simulate_calendar,
)
from rlur.distributed import require_ray
from rlur.distributed.backend import as_finished
from rlur.distributed.blocks import DEFAULT_BLOCK_USERS, Block, make_blocks, split_shards
from rlur.distributed.shards import MAX_RESTARTS, build_from_spec, crash_once, world_spec

__all__ = ["ArmBlock", "ArmShard", "plan_blocks", "run_sharded_experiment"]

_TABLE_FIELDS = tuple(f.name for f in dataclasses.fields(UserDayTable))


@dataclass(frozen=True)
class ArmBlock:
    """Block ``block`` of arm ``arm``: the users with ids ``users`` (ascending)."""

    arm: int
    block: Block
    users: np.ndarray


def _learns_online(spec: str, cfg: ExperimentConfig) -> bool:
    """Whether the arm keeps learning from its traffic (then it must stay in one block)."""
    if not cfg.online:
        return False
    resolved = resolve_spec(spec)
    if resolved["kind"] == "fixed":
        return False
    from rlur.agents.policy import load_policy

    _, ckpt = load_policy(resolved["path"])
    return ckpt.get("algo") in (*OFF_POLICY_ALGOS, "cem")


def plan_blocks(cfg: ExperimentConfig, arm: np.ndarray, block_users: int) -> list[list[ArmBlock]]:
    """Per arm, its blocks of users (one block for an arm that learns online)."""
    plan = []
    for a, spec in enumerate(cfg.specs):
        users = np.flatnonzero(arm == a)
        if len(users) == 0:
            plan.append([])
            continue
        size = len(users) if _learns_online(spec, cfg) else block_users
        plan.append([ArmBlock(a, b, users[b.start:b.stop]) for b in make_blocks(len(users), size, cfg.seed, a)])
    return plan


class ArmShard:
    """An arm's shard (a Ray actor, or an object in this process): simulates blocks of that arm's users."""

    def __init__(self, spec: tuple[str | None, dict | None], cfg: ExperimentConfig) -> None:
        torch.set_num_threads(1)
        self.world, self.cfg = build_from_spec(spec), cfg

    def run_block(self, ab: ArmBlock, crash_marker: str | None = None) -> dict[str, Any]:
        """The block's per-user × day table, the arm's info and final policy, and timing."""
        from rlur.abtest.experiment import _CEMArm, _LearnerArm
        from rlur.training.loop import make_env

        crash_once(crash_marker)
        n = ab.block.size
        env = make_env(self.world, n, ab.block.seed)
        block_cfg = dataclasses.replace(self.cfg, seed=ab.block.seed)
        arm = build_arm(self.cfg.specs[ab.arm], ab.arm, block_cfg, env, torch.arange(n))
        table, timing = simulate_calendar(env, [arm], torch.zeros(n, dtype=torch.long), self.cfg.days)
        info = copy.deepcopy(arm.info)
        if isinstance(arm, _LearnerArm):
            info["updates"] = arm.updates
        if isinstance(arm, _CEMArm):
            info["generations"] = arm.search.generation
        return {"table": table, "info": info, "policy": arm.final_policy(), "timing": timing}


def _assemble(cfg: ExperimentConfig, n: int, plan: list[list[ArmBlock]], results: dict) -> UserDayTable:
    """The population's table: every block's rows scattered back by user id (exact)."""
    table = UserDayTable.zeros(n, cfg.days, torch.zeros(n, dtype=torch.long))
    for blocks in plan:
        for ab in blocks:
            part, idx = results[(ab.arm, ab.block.index)]["table"], torch.from_numpy(ab.users)
            for name in _TABLE_FIELDS:
                getattr(table, name)[idx] = getattr(part, name)
    return table


def _run_blocks_local(spec, cfg, plan, progress: bool) -> dict:
    shard = ArmShard(spec, cfg)
    results = {}
    with tqdm(total=sum(map(len, plan)), desc="simulated blocks", unit="block", disable=not progress) as bar:
        for blocks in plan:
            for ab in blocks:
                results[(ab.arm, ab.block.index)] = shard.run_block(ab)
                bar.update(1)
    return results


def _run_blocks_ray(spec, cfg, plan, shards: int, progress: bool, crash_marker: str | None) -> tuple[dict, int]:
    """Each arm gets ``shards // arms`` actors (at least one; ``shards`` at most the cluster's CPUs);
    blocks stream back as they finish. Returns the results and the number of actors.

    An actor is ended as soon as its last block is back, which frees its CPU for actors still
    waiting (a cluster with fewer CPUs than actors runs them in turn instead of deadlocking).
    """
    ray = require_ray()
    actor = ray.remote(num_cpus=1, max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS)(ArmShard)
    from rlur.distributed.backend import actor_slots

    per_arm = max(1, actor_slots(shards) // len(plan))
    refs: dict[Any, tuple[int, int]] = {}
    owner: dict[Any, Any] = {}
    left: dict[Any, int] = {}
    for blocks in plan:
        for part in split_shards(blocks, per_arm) if blocks else []:
            handle = actor.remote(spec, cfg)
            left[handle] = len(part)
            for ab in part:
                ref = handle.run_block.remote(ab, crash_marker)
                refs[ref], owner[ref] = (ab.arm, ab.block.index), handle
    results = {}
    try:
        with tqdm(total=len(refs), desc="simulated blocks", unit="block", disable=not progress) as bar:
            for ref in as_finished(refs):
                results[refs[ref]] = ray.get(ref)
                bar.update(1)
                left[owner[ref]] -= 1
                if left[owner[ref]] == 0:
                    ray.kill(owner[ref])
    finally:
        for handle, n in left.items():
            if n:
                ray.kill(handle)
    return results, len(left)


def run_sharded_experiment(
    cfg: ExperimentConfig, shards: int = 1, block_users: int = DEFAULT_BLOCK_USERS, backend: str = "local",
    progress: bool = False, crash_marker: str | None = None,
) -> ExperimentResult:
    """The A/B test over blocks of each arm's users, in this process or on Ray actors (Ray initialised)."""
    from rlur.sim.world import WorldConfig
    from rlur.training.loop import build_world

    for s in cfg.specs:
        resolve_spec(s)
    spec = world_spec(build_world(cfg.world_path, WorldConfig.preset(cfg.world_preset, cfg.world_seed)))
    arm = assign_arms(np.arange(cfg.users), cfg.salt, cfg.shares)
    plan = plan_blocks(cfg, arm, block_users)
    start = time.perf_counter()
    if backend == "ray":
        results, shards = _run_blocks_ray(spec, cfg, plan, shards, progress, crash_marker)
    elif backend == "local":
        results = _run_blocks_local(spec, cfg, plan, progress)
    else:
        raise ValueError(f"unknown backend {backend!r}")
    seconds = time.perf_counter() - start
    table = _assemble(cfg, cfg.users, plan, results)
    infos, policies = [], []
    for a, blocks in enumerate(plan):
        first = results[(a, blocks[0].block.index)] if blocks else None
        info = copy.deepcopy(first["info"]) if first else {"spec": cfg.specs[a]}
        info.update(name=ARM_NAMES[a], users=int((arm == a).sum()), share=cfg.shares[a], blocks=len(blocks))
        infos.append(info)
        policies.append(first["policy"] if first else None)
    requests = sum(r["timing"]["requests"] for r in results.values())
    timing = {"steps": sum(r["timing"]["steps"] for r in results.values()), "requests": requests,
              "seconds": seconds, "requests_per_s": requests / max(seconds, 1e-9), "backend": backend,
              "shards": shards, "blocks": len(results), "block_users": block_users}
    notes = [f"{i['name']}: {i['note']}" for i in infos if "note" in i]
    return ExperimentResult(cfg, arm, table, infos, timing, notes, policies)
