"""Network building blocks shared by the agents: MLPs, per-group MLPs, the Gaussian actor, critics."""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

__all__ = [
    "EnsembleMLP", "GaussianActor", "GroupedMLP", "QCritic", "adam", "gaussian_log_prob", "mlp", "polyak_update",
]

def adam(params, lr: float) -> torch.optim.Adam:
    """Adam with its fused kernel: one pass over each tensor per step instead of a dozen small ops.
    The same update rule; its roundings differ from the per-tensor loop's in the last bit."""
    return torch.optim.Adam(params, lr=lr, fused=True)


def mlp(in_dim: int, out_dim: int, hidden: tuple[int, ...] = (128, 128)) -> nn.Sequential:
    """A plain ReLU MLP."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class EnsembleMLP(nn.Module):
    """``n`` independent ReLU MLPs evaluated together with batched matmuls: ``(n, B, in) → (n, B, out)``.

    Few large ops instead of many small ones: on a CPU the per-op overhead, not the FLOPs, is what
    small RL networks cost.
    """

    def __init__(self, n: int, in_dim: int, out_dim: int, hidden: tuple[int, ...] = (128, 128)) -> None:
        super().__init__()
        dims = (in_dim, *hidden, out_dim)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for d_in, d_out in itertools.pairwise(dims):
            bound = 1.0 / math.sqrt(d_in)  # nn.Linear's default initialisation, per member
            self.weights.append(nn.Parameter(torch.empty(n, d_in, d_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(n, 1, d_out).uniform_(-bound, bound)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, in)`` (shared by all members) or ``(n, B, in)`` → ``(n, B, out)``."""
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.weights[0].shape[0], -1, -1)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = torch.relu(x)
        return x

    def member(self, x: torch.Tensor, m: int) -> torch.Tensor:
        """Member ``m`` alone: ``x (B, in) → (B, out)``, what ``forward(x)[m]`` computes."""
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.addmm(b[m], x, w[m])
            if i < last:
                x = torch.relu(x)
        return x

    def per_row(self, x: torch.Tensor, group: torch.Tensor, members: list[int]) -> torch.Tensor:
        """Row ``r`` through member ``members[group[r]]`` only: ``x (B, in) → (B, out)``.

        The rows are sorted by group and each member runs on its own group's rows (a loop over the
        few groups, never over users): what ``forward(x)[members[group], arange(B)]`` computes,
        without running every member on every row.
        """
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            # An exported graph cannot depend on how many rows each group has: every member on every
            # row, then each row's own member (the same values).
            every = self(x)  # (M, B, out)
            pick = torch.as_tensor(members, device=group.device).index_select(0, group)
            return every.gather(0, pick.view(1, -1, 1).expand(1, -1, every.shape[-1])).squeeze(0)
        order = torch.argsort(group, stable=True)
        counts = torch.bincount(group, minlength=len(members)).tolist()
        rows = x.index_select(0, order).split(counts)  # index_select: 5× faster than x[order] here
        parts = [self.member(r, members[g]) for g, r in enumerate(rows) if counts[g]]
        position = torch.empty_like(order)
        position[order] = torch.arange(order.numel())
        return torch.cat(parts).index_select(0, position)


class GroupedMLP(nn.Module):
    """One MLP per activity group (``n_groups=1``: a single shared MLP).

    The rows are sorted by group and each group's net runs on its own rows only (a loop over the
    few groups, never over users): a quarter of the FLOPs of running every net on the whole batch
    with 4 groups, and the same values.
    """

    def __init__(self, in_dim: int, out_dim: int, n_groups: int = 1, hidden: tuple[int, ...] = (128, 128)):
        super().__init__()
        self.n_groups = n_groups
        self.out_dim = out_dim
        self.nets = EnsembleMLP(n_groups, in_dim, out_dim, hidden)

    def forward(self, x: torch.Tensor, group: torch.Tensor | None = None) -> torch.Tensor:
        if self.n_groups == 1:
            return self.nets(x)[0]
        if group is None:
            raise ValueError("a grouped network needs the users' groups")
        return self.nets.per_row(x, group, list(range(self.n_groups)))


class GaussianActor(nn.Module):
    """``π(a|s) = N(μ(s), σ)`` over the k fusion weights (paper §3: the actor outputs μ and σ).

    ``μ(s)`` is an MLP (one per group when ``n_groups > 1``) squashed by tanh into the action box
    [-1, 1]. ``σ`` is the exploration scale, a per-group buffer the trainer anneals
    (:meth:`set_std`); it is saved with the weights, so a served policy reports the σ it samples
    with. A sampled action is clipped to the box by the ranking function, but its log-density is
    the Gaussian's, as served and logged.
    """

    def __init__(
        self, obs_dim: int, k: int, n_groups: int = 1, hidden: tuple[int, ...] = (128, 128), std: float = 0.3,
    ):
        super().__init__()
        self.obs_dim, self.k, self.n_groups, self.hidden = obs_dim, k, n_groups, tuple(hidden)
        self.body = GroupedMLP(obs_dim, k, n_groups, hidden)
        self.register_buffer("log_std", torch.full((n_groups, k), math.log(std)))

    def set_std(self, std: float) -> None:
        self.log_std.fill_(math.log(std))

    def forward(self, obs: torch.Tensor, group: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(μ (B, k), σ (B, k))``."""
        mu = torch.tanh(self.body(obs, group))
        if self.n_groups == 1 or group is None:
            log_std = self.log_std[0].expand_as(mu)
        else:
            log_std = self.log_std[group]
        return mu, log_std.exp()


def gaussian_log_prob(action: torch.Tensor, mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``log N(a; μ, diag σ²)`` summed over the k dimensions → ``(B,)``."""
    z = (action - mu) / std
    return (-0.5 * z.pow(2) - std.log() - 0.5 * math.log(2 * math.pi)).sum(-1)


class QCritic(nn.Module):
    """Twin Q-networks ``Q_1, Q_2 (s, a)`` (TD3-style clipped double Q), evaluated as one ensemble.

    With ``n_groups > 1`` each activity group has its own twins (as :class:`GroupedMLP`: every pair
    runs on the whole batch and each row keeps its own group's values).
    """

    def __init__(self, obs_dim: int, k: int, hidden: tuple[int, ...] = (128, 128), n_groups: int = 1):
        super().__init__()
        self.n_groups = n_groups
        self.twins = EnsembleMLP(2 * n_groups, obs_dim + k, 1, hidden)

    def forward(
        self, obs: torch.Tensor, action: torch.Tensor, group: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.twins(torch.cat((obs, action), dim=-1)).squeeze(-1)  # (2G, B)
        if self.n_groups == 1:
            return q[0], q[1]
        if group is None:
            raise ValueError("a grouped critic needs the users' groups")
        q = q.view(self.n_groups, 2, -1)[group, :, torch.arange(obs.shape[0])]  # (B, 2)
        return q[:, 0], q[:, 1]

    def q1(self, obs: torch.Tensor, action: torch.Tensor, group: torch.Tensor | None = None) -> torch.Tensor:
        """``Q_1(s, a)`` alone (the first of ``forward``'s twins), at half the cost: what the actor's
        loss uses (TD3)."""
        x = torch.cat((obs, action), dim=-1)
        if self.n_groups == 1:
            return self.twins.member(x, 0).squeeze(-1)
        if group is None:
            raise ValueError("a grouped critic needs the users' groups")
        return self.twins.per_row(x, group, list(range(0, 2 * self.n_groups, 2))).squeeze(-1)


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """``θ' ← (1 − τ) θ' + τ θ`` (soft target update)."""
    targets, sources = list(target.parameters()), list(source.parameters())
    if len(targets) != len(sources):
        raise ValueError("target and source differ in their parameters")
    torch._foreach_mul_(targets, 1 - tau)  # the same two roundings per element as t.mul_(1 − τ).add_(s, alpha=τ)
    torch._foreach_add_(targets, sources, alpha=tau)
