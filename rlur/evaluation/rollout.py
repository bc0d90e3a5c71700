"""Run a policy in the batched environment for a number of calendar days and record metrics."""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from rlur.agents.base import Policy
from rlur.evaluation.metrics import MetricsRecorder
from rlur.sim.env import RetentionEnv

__all__ = ["rollout"]


def rollout(
    env: RetentionEnv, policy: Policy, days: int, *, deterministic: bool = True, progress: bool = False,
    max_steps: int | None = None,
) -> tuple[MetricsRecorder, dict]:
    """Reset-free rollout from the env's current state until every user has passed ``days``.

    Users who are done keep stepping (their events are not recorded) until the slowest user is
    done; ``max_steps`` (default 60 requests per day) is a safety cap. Returns the recorder and
    timing info ``{steps, requests, seconds, requests_per_s}``.
    """
    if days <= 0:
        raise ValueError(f"days must be positive, got {days}")
    recorder = MetricsRecorder(env.n_users, env.config.max_return_day, horizon_days=days)
    cap = max_steps if max_steps is not None else 60 * days
    obs = env.observe()
    start = time.perf_counter()
    steps = 0
    bar = tqdm(total=days, desc="simulated days", unit="day", disable=not progress, leave=False)
    with torch.no_grad():
        while steps < cap:
            done_day = int(env.day.min())
            if done_day >= days:
                break
            if bar.n < done_day:
                bar.update(done_day - bar.n)
            action = policy.act(obs, env.group, deterministic=deterministic)
            result = env.step(action)
            recorder.record(result)
            obs = result.obs
            steps += 1
    bar.update(max(0, days - bar.n))
    bar.close()
    seconds = time.perf_counter() - start
    requests = steps * env.n_users
    return recorder, {
        "steps": steps, "requests": requests, "seconds": seconds,
        "requests_per_s": requests / max(seconds, 1e-9),
    }
