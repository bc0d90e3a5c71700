"""``static-best``: the best fixed weighting per activity group that a large search finds.

A reference line for what any *static* policy (one weighting per group, whatever the state) reaches
in a world, not a budget-equal row: it screens far more simulated requests than a learner trains on,
and the benchmark shows it apart with its search budget.

The search runs on training users (its own seed, never the held-out evaluation users) in two stages:

1. **Screen.** ``candidates`` weightings, the pure weightings (``candidate_weightings``: uniform,
   each score alone, each pair) and the rest drawn uniformly from the action box, are each served to
   ``screen_users`` users for ``days`` days, all in one batched rollout.
2. **Final.** For each group, the ``finalists`` best of the screen are served again to
   ``final_users`` fresh users each, and the best of those is the group's weighting.

Users do not interact in the simulator, so a group's result under a weighting does not depend on
what the other groups are served, and one rollout of global weightings scores every group at once.
A group's score is its users' mean per-user return day (``avg_return_day_per_user`` within the group):
the co-primary metric that a policy cannot improve by driving users away.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from rlur.agents.fixed import candidate_weightings
from rlur.agents.policy import TablePolicy
from rlur.evaluation.rollout import rollout
from rlur.sim.world import GROUPS, SCORE_NAMES

__all__ = ["StaticSearchConfig", "group_scores", "search_static_best"]


@dataclass(frozen=True)
class StaticSearchConfig:
    candidates: int = 128
    """Weightings screened: the pure weightings first, then uniform draws from the action box."""
    screen_users: int = 256
    """Training users per weighting in the screen."""
    finalists: int = 6
    """Best weightings per group re-measured in the final stage."""
    final_users: int = 1024
    """Fresh training users per finalist in the final stage."""
    days: int = 7
    """Simulated days per user in both stages."""

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < 1:
                raise ValueError(f"static search: {name} must be at least 1, got {value}")

    @classmethod
    def quick(cls) -> StaticSearchConfig:
        """A tiny search for ``rlur benchmark --quick`` and the tests."""
        return cls(candidates=40, screen_users=32, finalists=2, final_users=64, days=3)


class _BlockPolicy:
    """Users served in blocks: user ``i`` gets ``actions[i // block]`` (one weighting per block)."""

    def __init__(self, actions: torch.Tensor, block: int) -> None:
        self.rows = actions.repeat_interleave(block, 0)

    def act(self, obs: torch.Tensor, group: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.rows


def group_scores(mean_gap: torch.Tensor, has_gap: torch.Tensor, group: torch.Tensor, block: int,
                 n_groups: int) -> torch.Tensor:
    """``(C, G)``: per block of ``block`` users and per group, the mean over users with a return gap of
    their mean gap (``inf`` where a block has no such user of the group)."""
    n_blocks = mean_gap.shape[0] // block
    cell = torch.arange(n_blocks).repeat_interleave(block) * n_groups + group
    size = n_blocks * n_groups
    total = torch.bincount(cell, weights=(mean_gap * has_gap).double(), minlength=size)
    count = torch.bincount(cell, weights=has_gap.double(), minlength=size)
    score = torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, torch.inf))
    return score.view(n_blocks, n_groups)


def _score_weightings(world: Any, actions: torch.Tensor, users: int, days: int, seed: int,
                      n_groups: int) -> tuple[torch.Tensor, int]:
    """Serve each weighting to ``users`` users of one batched env; ``(C, G)`` scores and the requests."""
    from rlur.training.loop import make_env

    env = make_env(world, actions.shape[0] * users, seed)
    recorder, timing = rollout(env, _BlockPolicy(actions, users), days=days)
    mean_gap, has_gap = recorder.per_user_mean_gap()
    return group_scores(mean_gap, has_gap, env.group, users, n_groups), timing["requests"]


def search_static_best(world: Any, seed: int, cfg: StaticSearchConfig | None = None) -> dict[str, Any]:
    """Two-stage search (module docstring). Returns ``{policy, actions, scores, requests, config}``."""
    cfg = cfg or StaticSearchConfig()
    n_groups, k = len(GROUPS), len(SCORE_NAMES)
    rng = torch.Generator().manual_seed(seed * 7919 + 17)
    pure = candidate_weightings(k)[: cfg.candidates]
    drawn = torch.rand(cfg.candidates - pure.shape[0], k, generator=rng) * 2 - 1
    actions = torch.cat((pure, drawn))
    screen, requests = _score_weightings(world, actions, cfg.screen_users, cfg.days, 9_100_000 + seed, n_groups)
    finalists = screen.argsort(0)[: min(cfg.finalists, actions.shape[0])]  # (F, G) candidate indices
    unique = finalists.unique()
    final, more = _score_weightings(world, actions[unique], cfg.final_users, cfg.days, 9_200_000 + seed, n_groups)
    # Each group picks among its own finalists only (another group's finalists were not screened for it).
    eligible = (unique[:, None, None] == finalists[None]).any(1)  # (U, G)
    final = torch.where(eligible, final, torch.full_like(final, torch.inf))
    best = unique[final.argmin(0)]  # (G,)
    table = actions[best]
    return {
        "policy": TablePolicy(table, torch.zeros_like(table)),
        "actions": table.tolist(),
        "scores": final.min(0).values.tolist(),
        "requests": requests + more,
        "config": asdict(cfg),
    }
