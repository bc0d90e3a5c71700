"""Fixed (non-learning) policies: uniform, click-greedy and random fusion weights."""

from __future__ import annotations

import torch

from rlur.sim.world import SCORE_NAMES

__all__ = ["FIXED_POLICIES", "FixedPolicy", "RandomPolicy", "make_fixed_policy"]


class FixedPolicy:
    """Serve the same action to everyone (the static fusion formula of a production system)."""

    def __init__(self, action: torch.Tensor) -> None:
        self.action = torch.as_tensor(action, dtype=torch.float32).clamp(-1, 1)

    def act(self, obs: torch.Tensor, group: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.action.expand(obs.shape[0], -1).clone()


class RandomPolicy:
    """Uniformly random actions in [-1, 1]^k, fresh at every request (seeded)."""

    def __init__(self, k: int = len(SCORE_NAMES), seed: int = 0) -> None:
        self.k = k
        self.rng = torch.Generator().manual_seed(seed)

    def act(self, obs: torch.Tensor, group: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return torch.rand(obs.shape[0], self.k, generator=self.rng) * 2 - 1


def _one_hot_action(name: str) -> torch.Tensor:
    a = -torch.ones(len(SCORE_NAMES))
    a[SCORE_NAMES.index(name)] = 1.0
    return a


FIXED_POLICIES = ("uniform", "click", "random")


def make_fixed_policy(name: str, seed: int = 0):
    """``uniform``: every weight equal (action 0). ``click``: all weight on predicted click (the
    engagement-greedy formula). ``random``: fresh random weights per request."""
    if name == "uniform":
        return FixedPolicy(torch.zeros(len(SCORE_NAMES)))
    if name == "click":
        return FixedPolicy(_one_hot_action("click"))
    if name == "random":
        return RandomPolicy(seed=seed)
    raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(FIXED_POLICIES)}")
