"""Network building blocks shared by the agents: MLPs, per-group MLPs, the Gaussian actor, critics."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["GaussianActor", "GroupedMLP", "QCritic", "mlp", "polyak_update"]

LOG_STD_MIN, LOG_STD_MAX = -5.0, 0.5


def mlp(in_dim: int, out_dim: int, hidden: tuple[int, ...] = (128, 128)) -> nn.Sequential:
    """A plain ReLU MLP."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class GroupedMLP(nn.Module):
    """One MLP per activity group (``n_groups=1``: a single shared MLP).

    The forward pass loops over the few *groups*, never over users: each group's net runs on its
    own rows, selected with a boolean mask.
    """

    def __init__(self, in_dim: int, out_dim: int, n_groups: int = 1, hidden: tuple[int, ...] = (128, 128)):
        super().__init__()
        self.n_groups = n_groups
        self.out_dim = out_dim
        self.nets = nn.ModuleList(mlp(in_dim, out_dim, hidden) for _ in range(n_groups))

    def forward(self, x: torch.Tensor, group: torch.Tensor | None = None) -> torch.Tensor:
        if self.n_groups == 1:
            return self.nets[0](x)
        if group is None:
            raise ValueError("a grouped network needs the users' groups")
        out = x.new_empty(x.shape[0], self.out_dim)
        for g, net in enumerate(self.nets):
            mask = group == g
            if bool(mask.any()):
                out[mask] = net(x[mask])
        return out


class GaussianActor(nn.Module):
    """``π(a|s) = N(μ(s), σ(s))`` over the k fusion weights (paper §3: the actor outputs μ and σ).

    ``μ`` is squashed by tanh into the action box [-1, 1]; ``log σ`` is clamped to
    ``[LOG_STD_MIN, LOG_STD_MAX]``. A sampled action is clipped to the box by the ranking function,
    but its log-density is the Gaussian's, as served and logged.
    """

    def __init__(self, obs_dim: int, k: int, n_groups: int = 1, hidden: tuple[int, ...] = (128, 128)):
        super().__init__()
        self.obs_dim, self.k, self.n_groups, self.hidden = obs_dim, k, n_groups, tuple(hidden)
        self.body = GroupedMLP(obs_dim, 2 * k, n_groups, hidden)

    def forward(self, obs: torch.Tensor, group: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(μ (B, k), σ (B, k))``."""
        out = self.body(obs, group)
        mu_raw, log_std = out.split(self.k, dim=-1)
        log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        return torch.tanh(mu_raw), log_std.exp()


def gaussian_log_prob(action: torch.Tensor, mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``log N(a; μ, diag σ²)`` summed over the k dimensions → ``(B,)``."""
    z = (action - mu) / std
    return (-0.5 * z.pow(2) - std.log() - 0.5 * math.log(2 * math.pi)).sum(-1)


class QCritic(nn.Module):
    """Twin Q-networks ``Q_1, Q_2 (s, a)`` (TD3-style clipped double Q), optionally per group."""

    def __init__(self, obs_dim: int, k: int, n_groups: int = 1, hidden: tuple[int, ...] = (128, 128)):
        super().__init__()
        self.q1 = GroupedMLP(obs_dim + k, 1, n_groups, hidden)
        self.q2 = GroupedMLP(obs_dim + k, 1, n_groups, hidden)

    def forward(self, obs: torch.Tensor, action: torch.Tensor, group: torch.Tensor | None = None):
        x = torch.cat((obs, action), dim=-1)
        return self.q1(x, group).squeeze(-1), self.q2(x, group).squeeze(-1)


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """``θ' ← (1 − τ) θ' + τ θ`` (soft target update)."""
    for t, s in zip(target.parameters(), source.parameters(), strict=True):
        t.mul_(1 - tau).add_(s, alpha=tau)
