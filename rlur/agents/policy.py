"""Deployable policies: state → ``(μ, σ)`` → action. No optimiser, no buffer (Tianshou's split).

Two kinds cover every algorithm in rlur:

* :class:`GaussianPolicy` wraps a trained :class:`~rlur.agents.networks.GaussianActor`
  (RLUR, RLUR-naive, TD3);
* :class:`TablePolicy` serves one ``(μ, σ)`` per activity group (CEM's search result, uniform,
  click-greedy).

Both serialise to a plain dict (``policy_to_dict``/``policy_from_dict``) stored in ``checkpoint.pt``;
the ranking service, ``rlur eval`` and ``rlur abtest`` load them through :func:`load_policy`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rlur.agents.networks import GaussianActor, gaussian_log_prob

__all__ = ["GaussianPolicy", "TablePolicy", "load_policy", "policy_from_dict", "policy_to_dict"]


class _Stochastic:
    """Shared sampling logic: ``a ~ N(μ, σ)``, or ``a = μ`` when deterministic."""

    def distribution(self, obs: torch.Tensor, group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, group: torch.Tensor, deterministic: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        mu, std = self.distribution(obs, group)
        if deterministic:
            return mu
        return mu + std * torch.randn(mu.shape, generator=generator)

    @torch.no_grad()
    def sample(
        self, obs: torch.Tensor, group: torch.Tensor, generator: torch.Generator | None = None,
        deterministic: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Serve a batch: ``{action, mu, std, log_prob}`` (what the request log must keep)."""
        mu, std = self.distribution(obs, group)
        action = mu if deterministic else mu + std * torch.randn(mu.shape, generator=generator)
        return {"action": action, "mu": mu, "std": std, "log_prob": gaussian_log_prob(action, mu, std)}


class GaussianPolicy(_Stochastic):
    """A trained Gaussian actor behind the deployable interface."""

    def __init__(self, actor: GaussianActor) -> None:
        self.actor = actor.eval()

    @torch.no_grad()
    def distribution(self, obs: torch.Tensor, group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.actor(obs, group)


class TablePolicy(_Stochastic):
    """``(μ, σ)`` looked up by activity group: ``mu (G, k)``, ``std (G, k)`` (G = 1: everyone)."""

    def __init__(self, mu: torch.Tensor, std: torch.Tensor | None = None) -> None:
        mu = torch.as_tensor(mu, dtype=torch.float32)
        self.mu = mu if mu.dim() == 2 else mu.unsqueeze(0)
        if std is None:
            self.std = torch.full_like(self.mu, 0.05)
        else:
            self.std = torch.as_tensor(std, dtype=torch.float32).expand_as(self.mu).clone()

    def distribution(self, obs: torch.Tensor, group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = group if self.mu.shape[0] > 1 else torch.zeros_like(group)
        return self.mu[idx], self.std[idx]


def policy_to_dict(policy: GaussianPolicy | TablePolicy) -> dict[str, Any]:
    if isinstance(policy, GaussianPolicy):
        a = policy.actor
        return {
            "type": "gaussian", "obs_dim": a.obs_dim, "k": a.k, "n_groups": a.n_groups,
            "hidden": list(a.hidden), "state_dict": a.state_dict(),
        }
    if isinstance(policy, TablePolicy):
        return {"type": "table", "mu": policy.mu.clone(), "std": policy.std.clone()}
    raise TypeError(f"cannot serialise a {type(policy).__name__}")


def policy_from_dict(d: dict[str, Any]) -> GaussianPolicy | TablePolicy:
    kind = d.get("type")
    if kind == "gaussian":
        actor = GaussianActor(d["obs_dim"], d["k"], d["n_groups"], tuple(d["hidden"]))
        actor.load_state_dict(d["state_dict"])
        return GaussianPolicy(actor)
    if kind == "table":
        return TablePolicy(d["mu"], d["std"])
    raise ValueError(f"unknown policy type {kind!r} in checkpoint")


def load_policy(path: str | Path) -> tuple[GaussianPolicy | TablePolicy, dict[str, Any]]:
    """Load the deployable policy from a run directory (or a ``checkpoint.pt`` file).

    Returns ``(policy, checkpoint)``; the checkpoint also holds ``world_config``, ``algo`` and
    ``version``.
    """
    p = Path(path)
    file = p / "checkpoint.pt" if p.is_dir() else p
    if not file.exists():
        raise FileNotFoundError(f"no checkpoint at {file}")
    ckpt = torch.load(file, map_location="cpu", weights_only=False)
    if "policy" not in ckpt:
        raise ValueError(f"{file} is not an rlur checkpoint (no 'policy' entry)")
    return policy_from_dict(ckpt["policy"]), ckpt
