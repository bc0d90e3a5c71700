"""Fixed (non-learning) policies: uniform, click-greedy and random fusion weights, and the hand-written
state rules the room-to-learn tests and ``benchmarks/rule_ceiling.py`` compare learners against."""

from __future__ import annotations

import torch

from rlur.agents.policy import TablePolicy
from rlur.sim.env import obs_column
from rlur.sim.world import GROUPS, SCORE_NAMES

__all__ = [
    "BINGE_FRESH_RULE", "FIXED_POLICIES", "GROUP_RULE", "WEARY_TIRED_RULE", "FatigueSwitchRule", "FixedPolicy",
    "RandomPolicy", "binge_rule", "candidate_weightings", "group_rule_actions", "make_fixed_policy", "weary_rule",
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


def candidate_weightings(k: int = len(SCORE_NAMES)) -> torch.Tensor:
    """The pure weightings, ``(1 + k + k(k − 1)/2, k)`` actions: uniform, each score alone, each pair of
    scores (their weights at the top of the box, every other weight 0, as :func:`weighting_action`).

    Each predicted score is divided by its typical value before weighting, so inside the box every
    score counts and the rare behaviours' scores, which vary most, decide much of a ranking. Ranking
    by one or two scores is possible only at the box's corners: these are the weightings a static
    search screens (``tests/test_room_to_learn.py``) and the ones RLUR's candidate options explore.
    """
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    corners = [torch.zeros(k)]
    for i in range(k):
        a = -torch.ones(k)
        a[i] = 1.0
        corners.append(a)
    for i in range(k):
        for j in range(i + 1, k):
            a = -torch.ones(k)
            a[[i, j]] = 1.0
            corners.append(a)
    return torch.stack(corners)


#: The hand-written group rule: the scores that satisfy each activity group (docs/simulator.md), the
#: best weighting per group in the ``classic`` world and, for tired users, in the default one. Heavy
#: consumers want long videos watched through, middle users finished and liked ones, casual and new
#: users short videos they finish.
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


#: The ``weary`` world's rule once tired: heavy users then skip the long videos that ranking by
#: predicted watch time serves them, so long views (shorter videos) suit them better.
WEARY_TIRED_RULE: dict[str, tuple[str, ...]] = {**GROUP_RULE, "high": ("long_view",)}


class FatigueSwitchRule:
    """A hand-written fatigue rule: the group rule ``fresh`` for a session's first ``switch_after``
    requests, ``tired`` after them; with ``reopen_tired``, ``tired`` all through a same-day reopen as
    well (a reopen keeps half the fatigue the last session ended with). It reads only the observation
    (``request_index``, ``opens_today``), so a learner could represent it."""

    def __init__(self, fresh: dict[str, tuple[str, ...]], tired: dict[str, tuple[str, ...]],
                 switch_after: int = 3, reopen_tired: bool = False) -> None:
        if switch_after < 0:
            raise ValueError(f"switch_after must be non-negative, got {switch_after}")
        self.fresh, self.tired = TablePolicy(group_rule_actions(fresh)), TablePolicy(group_rule_actions(tired))
        self.threshold = switch_after / 10  # the observation holds requests / 10
        self.reopen_tired = reopen_tired
        self.request_index, self.opens_today = obs_column("request_index"), obs_column("opens_today")

    def act(self, obs: torch.Tensor, group: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        tired = obs[:, self.request_index] >= self.threshold - 1e-6
        if self.reopen_tired:
            tired |= obs[:, self.opens_today] > 0
        return torch.where(tired[:, None], self.tired.act(obs, group), self.fresh.act(obs, group))


def weary_rule() -> FatigueSwitchRule:
    """The ``weary`` world's fatigue rule: heavy users ranked by watch time for the first 3 requests
    of the day's first session, by long views after that and through every same-day reopen; the
    other groups as in :data:`GROUP_RULE` (docs/simulator.md, ``tests/test_room_to_learn.py``)."""
    return FatigueSwitchRule(GROUP_RULE, WEARY_TIRED_RULE, switch_after=3, reopen_tired=True)


#: The default world's rule while fresh (named after ``binge``, the preset that world was first built
#: as): middle-activity users then finish long videos, so watch time suits them; tired, they drop long
#: videos and their group weighting (long views and likes) wins.
BINGE_FRESH_RULE: dict[str, tuple[str, ...]] = {**GROUP_RULE, "middle": ("watch_time",)}


def binge_rule() -> FatigueSwitchRule:
    """The default (``binge``) world's fatigue rule: middle-activity users ranked by watch time for the first 5
    requests of the day's first session, by their group weighting (:data:`GROUP_RULE`) after that and
    through every same-day reopen; the other groups as in :data:`GROUP_RULE` (docs/simulator.md,
    ``tests/test_room_to_learn.py``)."""
    return FatigueSwitchRule(BINGE_FRESH_RULE, GROUP_RULE, switch_after=5, reopen_tired=True)


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
