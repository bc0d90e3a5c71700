"""Sharded simulation (``rlur simulate --shards N [--backend ray]``): user blocks on actors, reduced exactly.

The population is cut into fixed-size blocks (:mod:`rlur.distributed.blocks`). Each block is rolled
out by the batched simulator on its own, a shard being the list of blocks one worker steps: in this
process (``local``) or in a Ray actor holding the world (``ray``). A block returns its
:class:`~rlur.evaluation.metrics.MetricsRecorder`, i.e. per-user *sums* (requests, watch seconds,
sessions, gaps, …) and a return-day histogram of counts; the reduction concatenates the per-user
sums in block order and adds the histograms, then derives every metric from the totals. Nothing is
an average of averages, so 1 and 2 shards (or the local backend) give identical metrics, confidence
intervals included (the bootstrap resamples the same users with the same seed).

Fault tolerance: shard actors restart when their process dies and the block they were stepping is
run again (``max_restarts``/``max_task_retries``); a block is a pure function of its seed, so the
rerun returns the same result.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from rlur.agents.fixed import make_fixed_policy
from rlur.distributed import require_ray
from rlur.distributed.backend import as_finished
from rlur.distributed.blocks import DEFAULT_BLOCK_USERS, Block, make_blocks, split_shards
from rlur.evaluation.metrics import MetricsRecorder
from rlur.evaluation.rollout import rollout

__all__ = ["SimShard", "SimShardPool", "build_from_spec", "crash_once", "merge_recorders", "run_sharded_simulation",
           "simulate_block", "world_spec"]

#: Per-user tensors of a recorder (first dimension: users), concatenated by the reduction.
_PER_USER = ("requests", "watch", "behaviours", "sessions", "session_requests", "gaps", "gap_days", "gap_day1",
             "_depth", "_started")
#: Restarts of a shard actor whose process died, and retries of the block it was running.
MAX_RESTARTS = 3


def crash_once(marker: str | None) -> None:
    """Fault injection for tests: the first caller that finds no file at ``marker`` creates it and
    kills its own process (as a crashed or pre-empted worker would die); later callers go on."""
    if marker is None:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    os._exit(1)


def simulate_block(world: Any, policy: str, block: Block, days: int) -> tuple[MetricsRecorder, dict]:
    """Roll one block out under a fixed policy: its recorder and timing (a pure function of the block)."""
    from rlur.training.loop import make_env

    cpu = time.process_time()
    env = make_env(world, block.size, block.seed)
    torch.manual_seed(block.seed)
    recorder, timing = rollout(env, make_fixed_policy(policy, seed=block.seed), days=days, deterministic=True)
    timing["cpu_seconds"] = time.process_time() - cpu  # this process's CPU, all its threads: the block's cost
    return recorder, timing


def merge_recorders(parts: list[MetricsRecorder]) -> MetricsRecorder:
    """One recorder over all blocks' users, in block order: per-user sums concatenated, counts added."""
    if not parts:
        raise ValueError("nothing to merge")
    first = parts[0]
    out = MetricsRecorder(sum(p.n_users for p in parts), first.max_return_day, first.horizon_days)
    for name in _PER_USER:
        setattr(out, name, torch.cat([getattr(p, name) for p in parts]))
    out.gap_hist = torch.stack([p.gap_hist for p in parts]).sum(0)  # integer counts in float64: exact
    if first.opens is not None:
        out.opens = torch.cat([p.opens for p in parts])
    return out


def world_spec(world: Any) -> tuple[str | None, dict | None]:
    """How an actor rebuilds ``world``: ``(learned world path, None)`` or ``(None, built-in WorldConfig dict)``.

    Actors rebuild the world themselves (milliseconds for the built-in one) rather than take it from
    the object store, so that a restarted actor never depends on an object the driver let go of.
    """
    from rlur.sim.world import World

    if isinstance(world, World):
        return None, world.config.to_dict()
    source = getattr(world, "source", None)
    if source is None:
        raise ValueError("a learned world runs on Ray actors only when loaded from a file (rlur data fit --out)")
    return str(source), None


def build_from_spec(spec: tuple[str | None, dict | None]) -> Any:
    from rlur.sim.world import WorldConfig
    from rlur.training.loop import build_world

    path, config = spec
    return build_world(path, None if config is None else WorldConfig.from_dict(config))


class SimShard:
    """A simulation shard (a Ray actor): holds the world and rolls out the blocks it is given."""

    def __init__(self, spec: tuple[str | None, dict | None]) -> None:
        torch.set_num_threads(1)
        self.world = build_from_spec(spec)

    def run_block(self, policy: str, block: Block, days: int, crash_marker: str | None = None):
        crash_once(crash_marker)
        return simulate_block(self.world, policy, block, days)

    def pid(self) -> int:
        return os.getpid()


class SimShardPool:
    """``shards`` :class:`SimShard` actors (at most the cluster's CPUs), each with its own copy of the world.

    Kept alive across runs (the scaling benchmark reuses it); ``close()`` ends the actors.
    """

    def __init__(self, world: Any, shards: int, max_restarts: int = MAX_RESTARTS) -> None:
        from rlur.distributed.backend import actor_slots

        ray = require_ray()
        shards = actor_slots(shards)
        actor = ray.remote(num_cpus=1, max_restarts=max_restarts, max_task_retries=max_restarts)(SimShard)
        spec = world_spec(world)
        self.actors = [actor.remote(spec) for _ in range(shards)]

    def run(self, policy: str, blocks: list[Block], days: int, progress: bool = False,
            crash_marker: str | None = None) -> list[tuple[MetricsRecorder, dict]]:
        """Every block's result, in block order; blocks stream back as they finish."""
        ray = require_ray()
        plan = split_shards(blocks, len(self.actors))
        index = {actor.run_block.remote(policy, b, days, crash_marker): b.index
                 for actor, shard in zip(self.actors, plan, strict=False) for b in shard}
        results: dict[int, tuple[MetricsRecorder, dict]] = {}
        with tqdm(total=len(blocks), desc="simulated blocks", unit="block", disable=not progress) as bar:
            for ref in as_finished(index):
                results[index[ref]] = ray.get(ref)
                bar.update(1)
        return [results[b.index] for b in blocks]

    def close(self) -> None:
        ray = require_ray()
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []


def _run_local(world: Any, policy: str, blocks: list[Block], days: int, progress: bool):
    with tqdm(total=len(blocks), desc="simulated blocks", unit="block", disable=not progress) as bar:
        out = []
        for b in blocks:
            out.append(simulate_block(world, policy, b, days))
            bar.update(1)
    return out


def run_sharded_simulation(
    world: Any, policy: str, users: int, days: int, seed: int, shards: int = 1,
    block_users: int = DEFAULT_BLOCK_USERS, backend: str = "local", progress: bool = False,
    pool: SimShardPool | None = None, crash_marker: str | Path | None = None,
) -> tuple[MetricsRecorder, dict]:
    """Simulate ``users`` users in blocks on ``shards`` workers; the merged recorder and timing.

    ``backend="ray"`` needs Ray initialised (:func:`rlur.distributed.backend.ray_session`); ``pool``
    reuses live actors (its size is then the shard count). ``crash_marker`` is a test hook (see
    :func:`crash_once`).
    """
    blocks = make_blocks(users, block_users, seed)
    marker = None if crash_marker is None else str(crash_marker)
    start = time.perf_counter()
    if backend == "ray":
        own = pool is None
        pool = pool or SimShardPool(world, min(shards, len(blocks)))
        shards = len(pool.actors)
        try:
            parts = pool.run(policy, blocks, days, progress, marker)
        finally:
            if own:
                pool.close()
    elif backend == "local":
        parts = _run_local(world, policy, blocks, days, progress)
    else:
        raise ValueError(f"unknown backend {backend!r}")
    seconds = time.perf_counter() - start
    requests = sum(t["requests"] for _, t in parts)
    timing = {"requests": requests, "seconds": seconds, "requests_per_s": requests / max(seconds, 1e-9),
              "worker_cpu_seconds": sum(t["cpu_seconds"] for _, t in parts),
              "backend": backend, "shards": min(shards, len(blocks)), "blocks": len(blocks),
              "block_users": block_users}
    return merge_recorders([r for r, _ in parts]), timing
