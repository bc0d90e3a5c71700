"""Helpers for tests, demos and the benchmark: a random-init checkpoint and random ranking requests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlur.agents.networks import GaussianActor
from rlur.agents.policy import GaussianPolicy, TablePolicy
from rlur.sim.env import OBS_DIM
from rlur.sim.world import GROUPS, SCORE_NAMES, World, WorldConfig
from rlur.training.checkpoint import atomic_torch_save, policy_checkpoint

__all__ = ["random_request", "wait_until_ready", "write_demo_checkpoint"]

_WORLDS: dict[int, World] = {}


def write_demo_checkpoint(
    directory: str | Path, seed: int = 0, version: str | None = "demo-0", table: bool = False,
    world_seed: int = 0,
) -> Path:
    """Write ``directory/checkpoint.pt`` holding a random-init policy (``version=None``: no version field).

    ``table=True`` writes a :class:`TablePolicy` with one random ``(μ, σ)`` per group instead of a
    Gaussian actor. Returns the checkpoint file.
    """
    torch.manual_seed(seed)
    if table:
        policy: GaussianPolicy | TablePolicy = TablePolicy(
            torch.rand(len(GROUPS), len(SCORE_NAMES)) * 2 - 1,
            torch.full((len(GROUPS), len(SCORE_NAMES)), 0.2),
        )
    else:
        policy = GaussianPolicy(GaussianActor(OBS_DIM, len(SCORE_NAMES), n_groups=len(GROUPS)))
    if world_seed not in _WORLDS:
        _WORLDS[world_seed] = World(WorldConfig(world_seed=world_seed))
    ckpt = policy_checkpoint(policy, _WORLDS[world_seed], "demo", version or "")
    if version is None:
        del ckpt["version"]
    file = Path(directory) / "checkpoint.pt"
    atomic_torch_save(ckpt, file)
    return file


def random_request(
    rng: np.random.Generator, n_candidates: int = 200, form: str = "objects", id_offset: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """A valid ``/v1/rank`` body with random state and scores.

    ``form``: ``objects`` (``candidates`` with named scores), ``columnar`` (``candidate_ids`` +
    ``scores``) or ``hex`` (``candidate_ids`` + ``scores_hex``). Values are rounded to 6 decimals
    (float32 precision), as a feature service would send them.
    """
    state = rng.random(OBS_DIM).round(6)
    scale = np.array([30.0, 1, 1, 0.05, 0.01, 0.01, 0.01, 0.01])  # watch seconds, then probabilities
    scores = (rng.random((n_candidates, len(SCORE_NAMES))) * scale).astype(np.float32)
    ids = list(range(id_offset, id_offset + n_candidates))
    body: dict[str, Any] = {"state": state.tolist(), "group": GROUPS[int(rng.integers(len(GROUPS)))]}
    if form == "objects":
        rows = scores.round(6).tolist()
        body["candidates"] = [
            {"id": i, "scores": dict(zip(SCORE_NAMES, r, strict=True))}
            for i, r in zip(ids, rows, strict=True)
        ]
    elif form == "columnar":
        body["candidate_ids"] = ids
        body["scores"] = scores.round(6).tolist()
    elif form == "hex":
        body["candidate_ids"] = ids
        body["scores_hex"] = scores.astype("<f4").tobytes().hex()
    else:
        raise ValueError(f"unknown form {form!r}")
    body.update(extra)
    return body


def wait_until_ready(client: Any, timeout: float = 30.0) -> dict[str, Any]:
    """Poll ``GET /readyz`` on a client (TestClient, httpx.Client) until 200; return its body."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        r = client.get("/readyz")
        if r.status_code == 200:
            return r.json()
        if time.monotonic() > deadline:
            raise TimeoutError(f"not ready after {timeout} s: {r.json()}")
        time.sleep(0.02)
