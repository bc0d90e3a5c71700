"""CEM: cross-entropy search over the fusion weights (the paper's production baseline).

A generation splits the simulated users at random among a population of candidate weightings
drawn from ``N(m, s)`` (clipped to the action box when served), serves each user its member's
weights for ``generation_steps`` batched steps, and scores each member by the mean returning time
of the sessions that started and ended within the window (session-level return). The elite
fraction's unclipped draws then update the smoothed mean and std, which a floor keeps from
collapsing on the noisy fitness; the deployed policy is the mean, clipped to the box. With
``per_group`` one search runs per activity group; with ``stratify`` every member gets the same mix
of activity groups. The budget is counted in the same batched environment steps as every
other algorithm.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from rlur.agents.networks import gaussian_log_prob
from rlur.agents.policy import TablePolicy
from rlur.sim.env import StepResult

__all__ = ["CEMConfig", "CEMSearch"]


@dataclass
class CEMConfig:
    population: int = 16
    """Candidate weightings per generation."""
    elite_frac: float = 0.25
    """Share of the population kept as elite."""
    smoothing: float = 0.7
    """``m ← (1 − α) m + α · mean(elite)`` (and the same for s)."""
    init_std: float = 1.0
    """The first generation's std: 1.0 puts many first candidates on the action box's faces."""
    min_std: float = 0.3
    """A floor on the search std. Judged on a few dozen users each, the members rank mostly by the
    luck of their users; with a floor of 0.02 the std halved every 5 generations and the mean froze
    wherever that luck had left it (docs/critic.md, section 10)."""
    fit_clipped: bool = False
    """Fit the next generation to the elite's box-clipped weightings, as CEM did before these defaults
    (``CEMConfig(init_std=0.5, min_std=0.02, fit_clipped=True)`` is that search, seed for seed). The
    default fits it to the unclipped draws: the box clips only what is served, so the mean can
    settle in a corner."""
    generation_steps: int = 60
    """Batched environment steps per generation."""
    per_group: bool = False
    """One search per activity group (the paper's production CEM is a single search)."""
    stratify: bool = False
    """Split the users among the members stratified by activity group, so every member is judged on
    the same mix of groups (a low-activity user's returning time is ~6× a heavy user's, so a random
    split adds the luck of the draw to each member's fitness). Off by default, as measured: on the
    default world it narrows CEM's spread over seeds but not its mean (docs/critic.md, section 5)."""

    def to_dict(self) -> dict:
        return asdict(self)


class CEMSearch:
    """The learner interface (``serve``/``observe``) around a cross-entropy search."""

    def __init__(self, k: int, n_groups: int, n_users: int, config: CEMConfig | None = None, seed: int = 0) -> None:
        self.config = cfg = config or CEMConfig()
        if cfg.population < 2 or not 0 < cfg.elite_frac <= 1:
            raise ValueError("CEM needs population ≥ 2 and 0 < elite_frac ≤ 1")
        self.k, self.n_users = k, n_users
        self.n_tables = n_groups if cfg.per_group else 1
        self.mean = torch.zeros(self.n_tables, k)
        self.std = torch.full((self.n_tables, k), cfg.init_std)
        self.rng = torch.Generator().manual_seed(seed * 7 + 3)
        self.generation = 0
        self._new_generation()

    def _new_generation(self) -> None:
        cfg = self.config
        eps = torch.randn(cfg.population, self.n_tables, self.k, generator=self.rng)
        self.draws = self.mean + self.std * eps  # (P, G, k)
        self.candidates = self.draws.clamp(-1.0, 1.0)  # what is served
        self.order = torch.randperm(self.n_users, generator=self.rng)  # users in random order
        self.member = self.order % cfg.population  # (B,), re-dealt by group at the first serve
        self.dealt = not cfg.stratify
        self.fit_sum = torch.zeros(cfg.population, self.n_tables)
        self.fit_count = torch.zeros(cfg.population, self.n_tables)
        self.clean = torch.zeros(self.n_users, dtype=torch.bool)  # session started in this generation
        self.steps_in_generation = 0

    def _table(self, group: torch.Tensor) -> torch.Tensor:
        return group if self.n_tables > 1 else torch.zeros_like(group)

    def _deal_by_group(self, group: torch.Tensor) -> None:
        """Stratified split: users sorted by group (random order inside a group), then dealt to the
        members in turn, so each member gets ⌊n_g / P⌋ or ⌈n_g / P⌉ users of every group g."""
        by_group = self.order[torch.argsort(group[self.order], stable=True)]
        self.member = torch.empty_like(self.member)
        self.member[by_group] = torch.arange(self.n_users) % self.config.population
        self.dealt = True

    def serve(self, obs: torch.Tensor, group: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.dealt:
            self._deal_by_group(group)
        action = self.candidates[self.member, self._table(group)]
        mu, std = self.mean[self._table(group)], self.std[self._table(group)]
        return {"action": action, "mu": mu, "std": std, "log_prob": gaussian_log_prob(action, mu, std)}

    def observe(self, obs: torch.Tensor, served: dict, result: StepResult) -> dict[str, float]:
        cfg = self.config
        ended = result.session_end & self.clean
        idx = self.member[ended] * self.n_tables + self._table(result.group[ended])
        size = cfg.population * self.n_tables
        self.fit_sum += torch.bincount(idx, weights=result.return_time[ended], minlength=size).view_as(self.fit_sum)
        self.fit_count += torch.bincount(idx, minlength=size).view_as(self.fit_count).float()
        self.clean |= result.session_end
        self.steps_in_generation += 1
        if self.steps_in_generation < cfg.generation_steps:
            return {}
        return self._update()

    def _update(self) -> dict[str, float]:
        cfg = self.config
        n_elite = max(1, round(cfg.elite_frac * cfg.population))
        # Fitness: mean returning time per member (lower is better); unseen members rank last.
        fitness = torch.where(self.fit_count > 0, self.fit_sum / self.fit_count.clamp(min=1), torch.inf)
        elite = fitness.argsort(dim=0)[:n_elite]  # (E, G)
        searched = self.candidates if cfg.fit_clipped else self.draws
        chosen = searched.gather(0, elite.unsqueeze(-1).expand(-1, -1, self.k))  # (E, G, k)
        a = cfg.smoothing
        self.mean = (1 - a) * self.mean + a * chosen.mean(0)
        elite_std = chosen.std(0, unbiased=False) if n_elite > 1 else torch.zeros_like(self.std)
        self.std = ((1 - a) * self.std + a * elite_std).clamp(min=cfg.min_std)
        self.generation += 1
        stats = {
            "train/cem_best_return_time": float(fitness.min(0).values.mean()),
            "train/cem_mean_return_time": float(fitness[torch.isfinite(fitness)].mean()),
            "train/cem_std": float(self.std.mean()),
        }
        self._new_generation()
        return stats

    def policy(self) -> TablePolicy:
        return TablePolicy(self.mean.clamp(-1.0, 1.0), self.std.clone())

    def state_dict(self) -> dict:
        keys = ("mean", "std", "draws", "candidates", "member", "order", "fit_sum", "fit_count", "clean")
        state = {k: getattr(self, k).clone() for k in keys}
        state.update(rng=self.rng.get_state(), generation=self.generation, steps=self.steps_in_generation,
                     dealt=self.dealt)
        return state

    def load_state_dict(self, state: dict) -> None:
        for k in ("mean", "std", "candidates", "member", "fit_sum", "fit_count", "clean"):
            setattr(self, k, state[k].clone())
        # Checkpoints written before the unclipped search hold only the clipped draws.
        self.draws = state["draws"].clone() if "draws" in state else self.candidates.clone()
        # Checkpoints written before stratification: the split they hold is final.
        self.order = state["order"].clone() if "order" in state else self.member.clone()
        self.dealt = state.get("dealt", True)
        self.rng.set_state(state["rng"])
        self.generation, self.steps_in_generation = state["generation"], state["steps"]
