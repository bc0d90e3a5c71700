"""The serving core: a loaded policy plus the fusion ranking, applied to a batch of requests at once.

For B requests the ranker runs one forward pass of the actor on ``(B, OBS_DIM)``, draws the action
noise (per-request seeded generators where a seed is given, the server's generator otherwise), and
scores all candidates of all requests with one batched matmul on a ``(B, C_max, k)`` array padded
with ``-inf`` fusion scores. The fusion is :mod:`rlur.sim.ranking`'s:
``f(a, x_j) = Σ_l w_l x_{j,l} / score_ref_l`` with ``w = action_to_weights(a, weight_max)``; the top
``SLATE_SIZE`` are shown, ties going to the lower candidate position (:func:`top_positions`).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlur.agents.networks import gaussian_log_prob
from rlur.agents.policy import GaussianPolicy, TablePolicy, policy_from_dict
from rlur.serving.schemas import SLATE_SIZE, RankInput
from rlur.sim.env import OBS_DIM
from rlur.sim.ranking import action_to_weights, fusion_scores
from rlur.sim.world import GROUPS, SCORE_NAMES

__all__ = ["RankOutput", "Ranker", "checkpoint_file", "top_positions"]


def checkpoint_file(path: str | Path) -> Path:
    """``DIR/checkpoint.pt`` for a run directory, the path itself for a file."""
    p = Path(path)
    return p / "checkpoint.pt" if p.is_dir() else p


@dataclass
class RankOutput:
    """What the ranker served for B requests (numpy, float32 unless stated)."""

    obs: np.ndarray
    """``(B, OBS_DIM)`` float32 the states served (the actor's input)."""
    action: np.ndarray
    """``(B, k)`` the served actions."""
    mu: np.ndarray
    """``(B, k)`` behaviour policy means."""
    sigma: np.ndarray
    """``(B, k)`` behaviour policy standard deviations."""
    log_prob: np.ndarray
    """``(B,)`` log-density of the served action under ``N(μ, σ)``."""
    top: np.ndarray
    """``(B, SLATE_SIZE)`` int64 positions of the shown candidates in each request, best first."""


@dataclass
class Ranker:
    """A deployable policy with its fusion parameters and version. Stateless: safe to swap atomically."""

    policy: GaussianPolicy | TablePolicy
    weight_max: float
    score_ref: torch.Tensor
    version: str
    sha256: str = ""
    algo: str = ""
    source: str = ""
    score_ref_inv: torch.Tensor = field(init=False, repr=False)
    _score_ref_inv_np: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.score_ref = torch.as_tensor(self.score_ref, dtype=torch.float32)
        if self.score_ref.shape != (len(SCORE_NAMES),):
            raise ValueError(f"score_ref must have {len(SCORE_NAMES)} entries, got {self.score_ref.numel()}")
        self.score_ref_inv = 1.0 / self.score_ref
        self._score_ref_inv_np = self.score_ref_inv.numpy()

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> Ranker:
        """Load ``DIR/checkpoint.pt`` (or a file); ``version`` falls back to the file's SHA-256 prefix.

        The file is read once, so the hash and the loaded weights always belong to the same bytes even
        when a trainer replaces the file meanwhile.
        """
        file = checkpoint_file(path)
        if not file.exists():
            raise FileNotFoundError(f"no checkpoint at {file}")
        data = file.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        try:
            ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
        except Exception as err:  # a truncated or foreign file: report it as a bad checkpoint
            raise ValueError(f"{file} is not a readable torch checkpoint: {err}") from None
        if not isinstance(ckpt, dict) or "policy" not in ckpt:
            raise ValueError(f"{file} is not an rlur checkpoint (no 'policy' entry)")
        _check_compatible(ckpt, file)
        policy = policy_from_dict(ckpt["policy"])
        version = str(ckpt.get("version") or "") or f"sha256:{sha[:12]}"
        return cls(
            policy=policy, weight_max=float(ckpt["weight_max"]), score_ref=torch.as_tensor(ckpt["score_ref"]),
            version=version, sha256=sha, algo=str(ckpt.get("algo", "")), source=str(file),
        )

    @property
    def info(self) -> dict[str, Any]:
        return {
            "policy_version": self.version, "algo": self.algo, "sha256": self.sha256, "source": self.source,
            "policy_type": type(self.policy).__name__, "weight_max": self.weight_max,
        }

    def weights(self, action: torch.Tensor) -> torch.Tensor:
        """Fusion weights including the score normalisation: ``action_to_weights(a) / score_ref``."""
        return action_to_weights(action, self.weight_max) * self.score_ref_inv

    @torch.no_grad()
    def rank(self, inputs: Sequence[RankInput], generator: torch.Generator | None = None) -> RankOutput:
        """Serve B validated requests with one forward pass and one batched scoring.

        The actor and the fusion matmul run in torch (bit for bit what ``policy.sample`` and
        :func:`rlur.sim.ranking.fuse_and_rank` compute); the element-wise steps between them run in
        numpy on the few ``(B, k)`` values, where a call costs about a microsecond instead of several.
        """
        b, k = len(inputs), len(SCORE_NAMES)
        obs = np.asarray([r.state for r in inputs], dtype=np.float32)
        group = torch.tensor([r.group for r in inputs], dtype=torch.long)
        mu_t, std_t = self.policy.distribution(torch.from_numpy(obs), group)
        mu, std = mu_t.numpy(), std_t.numpy()

        noise = np.zeros((b, k), dtype=np.float32)
        free = [i for i, r in enumerate(inputs) if not r.deterministic and r.seed is None]
        if free:
            noise[free] = torch.randn((len(free), k), generator=generator).numpy()
        for i, r in enumerate(inputs):
            if not r.deterministic and r.seed is not None:
                # The same draw as ``policy.sample(obs[i:i+1], …, generator=manual_seed(seed))``.
                noise[i] = torch.randn((1, k), generator=torch.Generator().manual_seed(r.seed)).numpy()[0]
        action = mu + std * noise
        det = [i for i, r in enumerate(inputs) if r.deterministic]
        if det:
            action[det] = mu[det]
        # The project's density function (in torch), so the logged log-prob is exactly policy.sample's.
        log_prob = gaussian_log_prob(torch.from_numpy(action), mu_t, std_t).numpy()
        # action_to_weights(a, weight_max) / score_ref, in the same float32 operation order.
        weights = self.weight_max * (np.clip(action, -1.0, 1.0) + 1.0) * 0.5 * self._score_ref_inv_np

        sizes = [len(r.ids) for r in inputs]
        c_max = max(sizes)
        if min(sizes) == c_max:
            scores = np.stack([r.scores for r in inputs])
            pad = None
        else:
            scores = np.zeros((b, c_max, k), dtype=np.float32)
            for i, r in enumerate(inputs):
                scores[i, : sizes[i]] = r.scores
            pad = torch.from_numpy(np.arange(c_max)[None, :] >= np.asarray(sizes)[:, None])
        fused = fusion_scores(torch.from_numpy(weights), torch.from_numpy(scores))
        if pad is not None:
            fused.masked_fill_(pad, float("-inf"))
        return RankOutput(
            obs=obs, action=action, mu=mu, sigma=std, log_prob=log_prob, top=top_positions(fused).numpy(),
        )


def top_positions(fused: torch.Tensor, n: int = SLATE_SIZE) -> torch.Tensor:
    """The ``n`` best positions per row, best first, ties going to the lower position.

    Same result as a stable descending sort, at ``topk`` cost: only rows whose best ``n + 1`` values
    hold a tie (where the order or the membership could depend on tie-breaking) are sorted.
    """
    k = min(fused.shape[1], n + 1)
    vals, idx = fused.topk(k, dim=1, sorted=True)
    v = vals.numpy()
    tied = np.flatnonzero((v[:, 1:] == v[:, :-1]).any(axis=1))
    if tied.size:
        rows = torch.from_numpy(tied)
        idx[rows] = torch.sort(fused[rows], dim=1, descending=True, stable=True).indices[:, :k]
    return idx[:, :n]


def _check_compatible(ckpt: dict[str, Any], file: Path) -> None:
    """Refuse checkpoints whose score names, groups or observation size differ from this server's."""
    names = ckpt.get("score_names", list(SCORE_NAMES))
    if list(names) != list(SCORE_NAMES):
        raise ValueError(f"{file}: score names {list(names)} differ from this server's {list(SCORE_NAMES)}")
    groups = ckpt.get("groups", list(GROUPS))
    if list(groups) != list(GROUPS):
        raise ValueError(f"{file}: groups {list(groups)} differ from this server's {list(GROUPS)}")
    if "obs_fields" in ckpt:
        obs_dim = sum(int(f[1]) for f in ckpt["obs_fields"])
        if obs_dim != OBS_DIM:
            raise ValueError(f"{file}: observation size {obs_dim} differs from this server's {OBS_DIM}")
    pol = ckpt["policy"]
    gaussian = isinstance(pol, dict) and pol.get("type") == "gaussian"
    if gaussian and int(pol.get("obs_dim", OBS_DIM)) != OBS_DIM:
        raise ValueError(f"{file}: the actor expects {pol['obs_dim']} state features, the server {OBS_DIM}")
    for key in ("weight_max", "score_ref"):
        if key not in ckpt:
            raise ValueError(f"{file}: checkpoint lacks '{key}'")
