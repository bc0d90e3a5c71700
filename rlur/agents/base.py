"""What every policy offers: ``act(obs, group) → action ∈ [-1, 1]^k``, batched."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

__all__ = ["Policy"]


@runtime_checkable
class Policy(Protocol):
    """A deployable policy: maps a batch of observations (and activity groups) to fusion actions."""

    def act(self, obs: torch.Tensor, group: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """``obs (B, d)`` float32, ``group (B,)`` long → ``action (B, k)`` in [-1, 1]."""
        ...
