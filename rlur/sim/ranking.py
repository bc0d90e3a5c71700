"""The fusion ranking function shared by the simulator, the agents and the ranking service.

Paper Eq. (1): each candidate j gets the score ``f(a, x_j) = Σ_l w_l · x_{j,l}`` where ``x_j`` is its
vector of k point-wise predicted scores, and the top 6 are shown. The policy's action lives in
``[-1, 1]^k`` (a Gymnasium ``Box``); :func:`action_to_weights` maps it to the weights.
"""

from __future__ import annotations

import torch

__all__ = ["action_to_weights", "fuse_and_rank", "fusion_scores"]


def action_to_weights(action: torch.Tensor, weight_max: float = 4.0) -> torch.Tensor:
    """Map an action in ``[-1, 1]^k`` to fusion weights ``w = weight_max · (clip(a) + 1) / 2``.

    The paper's weights live in ``[0, 4]^8``; an action of 0 (the Box's centre) is the uniform
    weighting ``w_l = 2`` for every score.
    """
    return weight_max * (action.clamp(-1.0, 1.0) + 1.0) * 0.5


def fusion_scores(weights: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """``f(a, x_j) = Σ_l w_l x_{j,l}``: ``weights (B, k)``, ``scores (B, C, k)`` → ``(B, C)``."""
    return torch.bmm(scores, weights.unsqueeze(-1)).squeeze(-1)


def fuse_and_rank(weights: torch.Tensor, scores: torch.Tensor, top_k: int = 6) -> torch.Tensor:
    """Indices ``(B, top_k)`` of the candidates with the highest fusion score, best first.

    Ties are broken by the lower candidate index, so rankings are reproducible.
    """
    if scores.shape[1] < top_k:
        raise ValueError(f"need at least {top_k} candidates, got {scores.shape[1]}")
    return fusion_scores(weights, scores).topk(top_k, dim=1, sorted=True).indices
