"""Fixed (non-learning) policies: uniform, click-greedy and random fusion weights."""

from __future__ import annotations

import torch

from rlur.sim.world import GROUPS, SCORE_NAMES

__all__ = [
    "FIXED_POLICIES", "GROUP_RULE", "FixedPolicy", "RandomPolicy", "group_rule_actions", "make_fixed_policy",
    "weighting_action",
]


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


def weighting_action(*names: str) -> torch.Tensor:
    """The action that ranks by the named scores only: their weights at the top of the box, every
    other weight 0 (action −1). With no names, uniform weights (action 0)."""
    unknown = [n for n in names if n not in SCORE_NAMES]
    if unknown:
        raise ValueError(f"unknown score(s) {', '.join(unknown)}; choose from {', '.join(SCORE_NAMES)}")
    if not names:
        return torch.zeros(len(SCORE_NAMES))
    a = -torch.ones(len(SCORE_NAMES))
    for n in names:
        a[SCORE_NAMES.index(n)] = 1.0
    return a


#: The hand-written state rule of the default world: the scores that satisfy each activity group
#: (docs/simulator.md). Heavy consumers want long videos watched through, middle users finished and
#: liked ones, casual and new users short videos they finish.
GROUP_RULE: dict[str, tuple[str, ...]] = {
    "high": ("watch_time",), "middle": ("long_view", "like"), "low": ("long_view",), "new": ("long_view",),
}


def group_rule_actions(rule: dict[str, tuple[str, ...]] | None = None) -> torch.Tensor:
    """One action per activity group, ``(G, k)`` in GROUPS order: row g ranks by ``rule[g]``'s
    scores only (``rule`` defaults to :data:`GROUP_RULE`). ``TablePolicy(group_rule_actions())`` is
    the hand-written group rule, the simplest state-dependent policy: the reference the room-to-learn
    test and the diagnostics compare against."""
    rule = GROUP_RULE if rule is None else rule
    missing = [g for g in GROUPS if g not in rule]
    if missing:
        raise ValueError(f"the rule has no weighting for group(s) {', '.join(missing)}")
    return torch.stack([weighting_action(*rule[g]) for g in GROUPS])


FIXED_POLICIES = ("uniform", "click", "random")


def make_fixed_policy(name: str, seed: int = 0):
    """``uniform``: every weight equal (action 0). ``click``: all weight on predicted click (the
    engagement-greedy formula). ``random``: fresh random weights per request."""
    if name == "uniform":
        return FixedPolicy(weighting_action())
    if name == "click":
        return FixedPolicy(weighting_action("click"))
    if name == "random":
        return RandomPolicy(seed=seed)
    raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(FIXED_POLICIES)}")
