"""Standalone exports of a served policy: TorchScript (one file) or ONNX (policy and scorer graphs).

Both formats carry two functions:

* the policy: ``obs (B, OBS_DIM) float32, group (B,) int64 → mu (B, k), sigma (B, k)``;
* the scorer: ``scores (B, C, k) float32, action (B, k) float32, valid (B, C) bool → top (B, 6) int64``
  (positions of the shown candidates, best first; ``valid`` masks padding), i.e. the fusion ranking
  ``Σ_l w_l x_l / score_ref_l`` with ``w = action_to_weights(a, weight_max)``.

Sampling stays outside: draw ``a = mu + sigma * noise`` (or ``a = mu``) and pass it to the scorer.

TorchScript: ``torch.jit.load(FILE)``; ``m(obs, group)`` is the policy and ``m.rank(scores, action,
valid)`` the scorer; metadata in the extra file ``rlur_meta.json``. ONNX: ``FILE`` is the policy graph
and ``FILE`` with suffix ``.scorer.onnx`` the scorer; metadata in each model's ``metadata_props``
(key ``rlur_meta``). Both also write ``FILE.meta.json``: version, algo, score names, groups, obs_dim,
weight_max, score_ref and the input/output names.
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlur.agents.policy import GaussianPolicy, TablePolicy
from rlur.serving.ranker import Ranker
from rlur.serving.schemas import SLATE_SIZE
from rlur.sim.env import OBS_DIM
from rlur.sim.ranking import action_to_weights
from rlur.sim.world import GROUPS, SCORE_NAMES

__all__ = ["EXPORT_FORMATS", "PolicyModule", "ScorerModule", "export_policy", "scorer_path"]

EXPORT_FORMATS = ("torchscript", "onnx")
K = len(SCORE_NAMES)


class PolicyModule(nn.Module):
    """``(obs, group) → (mu, sigma)`` for a Gaussian actor or a per-group table."""

    def __init__(self, policy: GaussianPolicy | TablePolicy) -> None:
        super().__init__()
        self.table = isinstance(policy, TablePolicy)
        if isinstance(policy, TablePolicy):
            self.register_buffer("mu", policy.mu.clone())
            self.register_buffer("std", policy.std.clone())
            self.actor = None
        else:
            self.actor = copy.deepcopy(policy.actor).eval()

    def forward(self, obs: torch.Tensor, group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.actor is not None:
            return self.actor(obs, group)
        idx = group if self.mu.shape[0] > 1 else torch.zeros_like(group)
        return self.mu[idx], self.std[idx]


class ScorerModule(nn.Module):
    """``(scores, action, valid) → top`` positions: the fusion ranking of :mod:`rlur.sim.ranking`.

    Ties go to the lower position: ``stable=True`` sorts stably (TorchScript); ONNX's ``TopK``, used
    with ``stable=False``, breaks ties by the lower index by specification.
    """

    def __init__(self, weight_max: float, score_ref: torch.Tensor, stable: bool = True) -> None:
        super().__init__()
        self.weight_max = float(weight_max)
        self.stable = stable
        self.register_buffer("score_ref_inv", 1.0 / torch.as_tensor(score_ref, dtype=torch.float32))

    def forward(self, scores: torch.Tensor, action: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        weights = action_to_weights(action, self.weight_max) * self.score_ref_inv
        fused = torch.bmm(scores, weights.unsqueeze(-1)).squeeze(-1)
        fused = fused.masked_fill(~valid, float("-inf"))
        if self.stable:
            return torch.sort(fused, dim=1, descending=True, stable=True).indices[:, :SLATE_SIZE]
        return torch.topk(fused, SLATE_SIZE, dim=1).indices


class _Combined(nn.Module):
    def __init__(self, policy: PolicyModule, scorer: ScorerModule) -> None:
        super().__init__()
        self.policy = policy
        self.scorer = scorer

    def forward(self, obs: torch.Tensor, group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.policy(obs, group)

    def rank(self, scores: torch.Tensor, action: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.scorer(scores, action, valid)


def scorer_path(out: str | Path) -> Path:
    """Where the ONNX scorer graph goes: ``policy.onnx`` → ``policy.scorer.onnx``."""
    p = Path(out)
    return p.with_name(p.stem + ".scorer" + (p.suffix or ".onnx"))


def _examples(b: int = 3, c: int = 9) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    valid = torch.ones(b, c, dtype=torch.bool)
    valid[0, -2:] = False
    return {
        "obs": torch.rand(b, OBS_DIM, generator=g), "group": torch.arange(b) % len(GROUPS),
        "scores": torch.rand(b, c, K, generator=g), "action": torch.rand(b, K, generator=g) * 2 - 1,
        "valid": valid,
    }


def _meta(ranker: Ranker, fmt: str, files: list[str]) -> dict[str, Any]:
    return {
        "format": fmt, "files": files, "policy_version": ranker.version, "algo": ranker.algo,
        "sha256": ranker.sha256, "obs_dim": OBS_DIM, "score_names": list(SCORE_NAMES), "groups": list(GROUPS),
        "weight_max": ranker.weight_max, "score_ref": ranker.score_ref.tolist(), "slate_size": SLATE_SIZE,
        "policy": {"inputs": ["obs", "group"], "outputs": ["mu", "sigma"]},
        "scorer": {"inputs": ["scores", "action", "valid"], "outputs": ["top"]},
    }


def export_policy(checkpoint: str | Path, fmt: str, out: str | Path) -> list[Path]:
    """Export the checkpoint's policy and scorer; returns the files written."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {', '.join(EXPORT_FORMATS)}")
    ranker = Ranker.from_checkpoint(checkpoint)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    policy = PolicyModule(ranker.policy).eval()
    if fmt == "torchscript":
        files = _export_torchscript(ranker, policy, out)
    else:
        files = _export_onnx(ranker, policy, out)
    meta = _meta(ranker, fmt, [f.name for f in files])
    sidecar = out.with_name(out.name + ".meta.json")
    sidecar.write_text(json.dumps(meta, indent=2) + "\n")
    return [*files, sidecar]


def _export_torchscript(ranker: Ranker, policy: PolicyModule, out: Path) -> list[Path]:
    ex = _examples()
    model = _Combined(policy, ScorerModule(ranker.weight_max, ranker.score_ref, stable=True)).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit is deprecated upstream, still the one-file format
        traced = torch.jit.trace_module(model, {
            "forward": (ex["obs"], ex["group"]), "rank": (ex["scores"], ex["action"], ex["valid"]),
        })
        meta = json.dumps(_meta(ranker, "torchscript", [out.name]))
        torch.jit.save(traced, str(out), _extra_files={"rlur_meta.json": meta})
    return [out]


def _export_onnx(ranker: Ranker, policy: PolicyModule, out: Path) -> list[Path]:
    try:
        import onnxscript  # noqa: F401  (torch.onnx.export needs it)
    except ImportError:
        msg = "ONNX export needs the 'onnx' extra: pip install onnx onnxruntime onnxscript"
        raise ValueError(msg) from None
    from torch.export import Dim

    ex = _examples()
    scorer = ScorerModule(ranker.weight_max, ranker.score_ref, stable=False).eval()
    batch, cands = Dim("batch", min=1), Dim("candidates", min=SLATE_SIZE)
    meta = json.dumps(_meta(ranker, "onnx", [out.name, scorer_path(out).name]))
    jobs = (
        (policy, (ex["obs"], ex["group"]), {"obs": {0: batch}, "group": {0: batch}},
         ["obs", "group"], ["mu", "sigma"], out),
        (scorer, (ex["scores"], ex["action"], ex["valid"]),
         {"scores": {0: batch, 1: cands}, "action": {0: batch}, "valid": {0: batch, 1: cands}},
         ["scores", "action", "valid"], ["top"], scorer_path(out)),
    )
    written = []
    # The exporter logs a warning per missing optional torchvision op; they are irrelevant here.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    for module, args, dynamic, inputs, outputs, path in jobs:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module, args, dynamo=True, dynamic_shapes=dynamic, input_names=inputs, output_names=outputs,
                verbose=False,
            )
        program.model.metadata_props["rlur_meta"] = meta
        program.save(str(path))
        written.append(path)
    return written
