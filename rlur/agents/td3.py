"""TD3 (Fujimoto et al., 2018) on the retention MDP, as a general-purpose RL user would run it.

The same states, actions and returning-time reward as RLUR (``r = −T`` at a session's last request),
but a *per-request* discount γ and none of RLUR's additions: one actor for everyone, no immediate
critic, no normalisation, no soft regularisation. This is the paper's TD3 row.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rlur.agents.networks import GaussianActor, QCritic, adam, polyak_update
from rlur.agents.policy import GaussianPolicy
from rlur.training.buffer import Batch

__all__ = ["TD3Agent", "TD3Config"]


@dataclass
class TD3Config:
    gamma: float = 0.99
    """Discount per request (every step, not only at session ends)."""
    hidden: tuple[int, ...] = (128, 128)
    actor_lr: float = 3e-4
    critic_lr: float = 1e-3
    tau: float = 0.005
    policy_delay: int = 2
    target_noise: float = 0.1
    target_noise_clip: float = 0.3

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d


class TD3Agent:
    def __init__(self, obs_dim: int, k: int, n_groups: int, config: TD3Config | None = None) -> None:
        self.config = cfg = config or TD3Config()
        self.obs_dim, self.k, self.n_groups = obs_dim, k, n_groups
        self.actor = GaussianActor(obs_dim, k, 1, cfg.hidden)
        self.actor_target = copy.deepcopy(self.actor)
        self.critic = QCritic(obs_dim, k, cfg.hidden)
        self.critic_target = copy.deepcopy(self.critic)
        self.actor_opt = adam(self.actor.parameters(), cfg.actor_lr)
        self.critic_opt = adam(self.critic.parameters(), cfg.critic_lr)
        self.updates = 0

    def update(self, batch: Batch, generator: torch.Generator) -> dict[str, float]:
        cfg = self.config
        reward = torch.where(batch.session_end, -batch.return_time, torch.zeros_like(batch.return_time))
        with torch.no_grad():
            mu_next, _ = self.actor_target(batch.next_obs)
            noise = (torch.randn(mu_next.shape, generator=generator) * cfg.target_noise).clamp(
                -cfg.target_noise_clip, cfg.target_noise_clip)
            q1n, q2n = self.critic_target(batch.next_obs, (mu_next + noise).clamp(-1.0, 1.0))
            y = reward + cfg.gamma * torch.min(q1n, q2n)  # per-request discount, no terminal
        q1, q2 = self.critic(batch.obs, batch.action)
        critic_loss = F.mse_loss(q1, y) + F.mse_loss(q2, y)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        stats = {"train/critic_loss": critic_loss.item(), "train/Q": q1.mean().item()}
        self.updates += 1
        if self.updates % cfg.policy_delay == 0:
            mu, _ = self.actor(batch.obs)
            actor_loss = -self.critic.q1(batch.obs, mu).mean()
            self.actor_opt.zero_grad()
            actor_loss.backward(inputs=list(self.actor.parameters()))  # the critic's would be discarded
            self.actor_opt.step()
            polyak_update(self.actor_target, self.actor, cfg.tau)
            polyak_update(self.critic_target, self.critic, cfg.tau)
            stats["train/actor_loss"] = actor_loss.item()
        return stats

    def observe_returns(self, return_time: torch.Tensor) -> None:
        """TD3 keeps no return statistics."""

    def set_exploration(self, std: float) -> None:
        self.actor.set_std(std)

    def policy(self) -> GaussianPolicy:
        return GaussianPolicy(copy.deepcopy(self.actor))

    def modules(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        names = ("actor", "actor_target", "critic", "critic_target", "actor_opt", "critic_opt")
        return {n: getattr(self, n) for n in names}

    def state_dict(self) -> dict:
        return {**{n: m.state_dict() for n, m in self.modules().items()}, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        for n, m in self.modules().items():
            m.load_state_dict(state[n])
        self.updates = state["updates"]
