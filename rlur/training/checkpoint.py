"""Atomic checkpoints: write to a temporary file in the same folder, then rename over the target."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from rlur.agents.policy import GaussianPolicy, TablePolicy, policy_to_dict
from rlur.sim.env import OBS_FIELDS
from rlur.sim.world import GROUPS, SCORE_NAMES

__all__ = ["atomic_torch_save", "atomic_write_bytes", "atomic_write_json", "policy_checkpoint"]


def _atomic_replace(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` that never leaves a half-written file behind (write, fsync, rename)."""
    _atomic_replace(Path(path), lambda f: torch.save(obj, f))


def atomic_write_bytes(data: bytes, path: str | Path) -> None:
    _atomic_replace(Path(path), lambda f: f.write(data))


def atomic_write_json(obj: Any, path: str | Path) -> None:
    atomic_write_bytes((json.dumps(obj, indent=2, default=float) + "\n").encode(), path)


def policy_checkpoint(
    policy: GaussianPolicy | TablePolicy, world: Any, algo: str, version: str, **extra: Any,
) -> dict[str, Any]:
    """Everything a server or evaluator needs to rebuild and serve the policy.

    Keys: ``policy`` (see :func:`policy_to_dict`), ``algo``, ``version``, ``world_config``,
    ``obs_fields`` (name, size, description), ``score_names``, ``groups``, ``weight_max`` and
    ``score_ref`` (the fusion score is ``Σ_l w_l x_l / score_ref_l`` with
    ``w = action_to_weights(a, weight_max)``), plus any ``extra`` entries.
    """
    return {
        "policy": policy_to_dict(policy),
        "algo": algo,
        "version": version,
        "world_config": world.config.to_dict(),
        "obs_fields": [list(f) for f in OBS_FIELDS],
        "score_names": list(SCORE_NAMES),
        "groups": list(GROUPS),
        "weight_max": world.config.weight_max,
        "score_ref": world.score_ref.tolist(),
        **extra,
    }
