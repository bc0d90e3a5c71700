"""The learned simulator's three modules: immediate feedback, leave and return (small torch MLPs).

All three read the same *context* vector (:func:`context_features`), computed from the state the
environment tracks, so that training (state replayed over the logs) and simulation see identical
inputs. Each model's first layer is a sum of separate linear parts (user, video, context), which is
the same function as one linear layer on their concatenation but lets the simulator precompute the
user and video parts once and score ``B × C`` candidates cheaply.
"""

from __future__ import annotations

import torch
from torch import nn

from rlur.sim.world import BEHAVIOURS

__all__ = [
    "CTX_DIM",
    "CTX_FIELDS",
    "FEEDBACK_OUTPUTS",
    "FeedbackModel",
    "SessionModel",
    "build_model",
    "context_features",
]

#: Context layout (name, size, meaning); depth = requests served in the session so far.
CTX_FIELDS: tuple[tuple[str, int, str], ...] = (
    ("depth", 1, "requests served in this session / 10"),
    ("log_depth", 1, "log(1 + requests served) / 3"),
    ("session_response", 1 + len(BEHAVIOURS), "this session so far: mean watch fraction and behaviour rates"),
    ("last_response", 1 + len(BEHAVIOURS), "last request: mean watch fraction and behaviour rates"),
    ("last_repetition", 1, "last request: mean recent-topic share of its videos"),
    ("opens_today", 1, "sessions already started today / 3"),
    ("log_sessions", 1, "log(1 + sessions so far) / 5"),
    ("last_return_time", 1, "returning time before this session, days / 10"),
    ("ema_return_time", 1, "exponential average (0.7) of returning times, days / 10"),
    ("ema_session_depth", 1, "exponential average (0.7) of session depths / 20"),
    ("ema_session_quality", 1, "exponential average (0.7) of sessions' long-view rates"),
)
CTX_DIM = sum(n for _, n, _ in CTX_FIELDS)
#: Feedback heads: the 8 behaviours, then the watch fraction given a long view and given none.
FEEDBACK_OUTPUTS: tuple[str, ...] = (*BEHAVIOURS, "watch_frac_long", "watch_frac_short")


def context_features(
    depth: torch.Tensor, session_sum: torch.Tensor, last_response: torch.Tensor, last_repetition: torch.Tensor,
    opens_today: torch.Tensor, n_sessions: torch.Tensor, last_return: torch.Tensor, ema_return: torch.Tensor,
    ema_depth: torch.Tensor, ema_quality: torch.Tensor,
) -> torch.Tensor:
    """``(n, CTX_DIM)`` float32 context (layout :data:`CTX_FIELDS`); ``session_sum`` is the sum over requests."""
    depth = depth.float()
    col = lambda x: x.float().unsqueeze(-1)  # noqa: E731
    return torch.cat((
        col(depth / 10), col(torch.log1p(depth) / 3), session_sum.float() / col(depth.clamp(min=1)),
        last_response.float(), col(last_repetition), col(opens_today / 3), col(torch.log1p(n_sessions.float()) / 5),
        col(last_return / 10), col(ema_return / 10), col(ema_depth / 20), col(ema_quality),
    ), dim=-1)


class _Tower(nn.Module):
    """Embedding (zero-initialised, so an unseen id means 'average') + static features → hidden."""

    def __init__(self, n_ids: int, d_static: int, emb: int, hidden: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(n_ids, emb)
        nn.init.zeros_(self.emb.weight)
        self.lin = nn.Linear(d_static + emb, hidden, bias=False)

    def forward(self, static: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.cat((static, self.emb(idx)), dim=-1))


class FeedbackModel(nn.Module):
    """Multi-task feedback model: shared trunk, one logit per :data:`FEEDBACK_OUTPUTS` entry."""

    def __init__(self, d_user: int, d_video: int, n_users: int, n_videos: int, emb: int = 8, hidden: int = 64,
                 hidden2: int = 32) -> None:
        super().__init__()
        self.user = _Tower(n_users, d_user, emb, hidden)
        self.video = _Tower(n_videos, d_video, emb, hidden)
        self.ctx = nn.Linear(CTX_DIM, hidden)
        self.rep = nn.Parameter(torch.zeros(hidden))
        self.trunk = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden2), nn.ReLU())
        self.head = nn.Linear(hidden2, len(FEEDBACK_OUTPUTS))

    def head_from(self, pre: torch.Tensor) -> torch.Tensor:
        """Logits from the summed first-layer parts ``pre (…, hidden)``."""
        return self.head(self.trunk(pre))

    def forward(self, user_static, user_idx, video_static, video_idx, ctx, rep) -> torch.Tensor:
        pre = self.user(user_static, user_idx) + self.video(video_static, video_idx) + self.ctx(ctx) \
            + rep.unsqueeze(-1) * self.rep
        return self.head_from(pre)


class SessionModel(nn.Module):
    """User + context → ``n_out`` logits: the leave model (1) and the return model (K + 2 classes)."""

    def __init__(self, d_user: int, n_users: int, n_out: int, emb: int = 8, hidden: int = 64,
                 hidden2: int = 32) -> None:
        super().__init__()
        self.user = _Tower(n_users, d_user, emb, hidden)
        self.ctx = nn.Linear(CTX_DIM, hidden)
        self.trunk = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden2), nn.ReLU())
        self.head = nn.Linear(hidden2, n_out)

    def head_from(self, pre: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(pre))

    def forward(self, user_static, user_idx, ctx) -> torch.Tensor:
        return self.head_from(self.user(user_static, user_idx) + self.ctx(ctx))


def build_model(arch: dict) -> nn.Module:
    """Rebuild a model from its saved ``arch`` dict (``kind`` plus constructor arguments)."""
    arch = dict(arch)
    kind = arch.pop("kind")
    if kind == "feedback":
        return FeedbackModel(**arch)
    if kind == "session":
        return SessionModel(**arch)
    raise ValueError(f"unknown model kind {kind!r} in world file")
