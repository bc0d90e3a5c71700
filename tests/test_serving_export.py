"""``rlur export``: TorchScript and ONNX policies/scorers reproduce the eager policy and the served top-6."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from rlur.serving.commands import register, run_export
from rlur.serving.export import export_policy, scorer_path
from rlur.serving.ranker import Ranker
from rlur.serving.testing import write_demo_checkpoint
from rlur.sim.env import OBS_DIM
from rlur.sim.ranking import action_to_weights, fuse_and_rank

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def cases(seed: int = 0, b: int = 37, c: int = 200) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    valid = torch.ones(b, c, dtype=torch.bool)
    valid[0, 6:] = False  # a request padded down to 6 candidates
    valid[1, 50:] = False
    scale = torch.tensor([30.0, 1, 1, 0.05, 0.01, 0.01, 0.01, 0.01])
    return {
        "obs": torch.rand(b, OBS_DIM, generator=g), "group": torch.randint(0, 4, (b,), generator=g),
        "scores": torch.rand(b, c, 8, generator=g) * scale, "noise": torch.randn(b, 8, generator=g),
        "valid": valid,
    }


def eager_top(
    ranker: Ranker, scores: torch.Tensor, action: torch.Tensor, valid: torch.Tensor,
) -> list[list[int]]:
    """The in-process fusion ranking, request by request on the valid candidates only."""
    w = action_to_weights(action, ranker.weight_max) * (1.0 / ranker.score_ref)  # as RetentionEnv.rank
    return [fuse_and_rank(w[i : i + 1], scores[i : i + 1, valid[i]])[0].tolist() for i in range(len(action))]


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    register(p.add_subparsers(dest="command"))
    return p.parse_args(argv)


@pytest.mark.parametrize("table", [False, True])
def test_torchscript_matches_eager(tmp_path: Path, table: bool) -> None:
    write_demo_checkpoint(tmp_path, seed=4, version="ts", table=table)
    out = tmp_path / "export" / "policy.pt"
    args = parse(["export", "--checkpoint", str(tmp_path), "--format", "torchscript", "--out", str(out)])
    assert run_export(args) == 0
    ranker = Ranker.from_checkpoint(tmp_path)
    extra = {"rlur_meta.json": ""}
    model = torch.jit.load(str(out), _extra_files=extra)
    meta = json.loads(extra["rlur_meta.json"])
    assert meta["policy_version"] == "ts" and meta["weight_max"] == ranker.weight_max
    assert json.loads(out.with_name("policy.pt.meta.json").read_text())["files"] == ["policy.pt"]
    x = cases()
    mu, sigma = model(x["obs"], x["group"])
    mu_e, sigma_e = ranker.policy.distribution(x["obs"], x["group"])
    torch.testing.assert_close(mu, mu_e)
    torch.testing.assert_close(sigma, sigma_e)
    action = mu + sigma * x["noise"]
    top = model.rank(x["scores"], action, x["valid"])
    assert top.shape == (37, 6) and top.dtype == torch.long
    assert top.tolist() == eager_top(ranker, x["scores"], action, x["valid"])


def test_export_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown export format"):
        export_policy(tmp_path, "tflite", tmp_path / "x")
    with pytest.raises(FileNotFoundError):
        export_policy(tmp_path / "missing", "torchscript", tmp_path / "x.pt")


def test_onnx_matches_eager(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    write_demo_checkpoint(tmp_path, seed=5, version="ox")
    out = tmp_path / "policy.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        files = export_policy(tmp_path, "onnx", out)
    assert files == [out, scorer_path(out), tmp_path / "policy.onnx.meta.json"]
    ranker = Ranker.from_checkpoint(tmp_path)
    x = cases(seed=1)
    pol = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    mu, sigma = pol.run(["mu", "sigma"], {"obs": x["obs"].numpy(), "group": x["group"].numpy()})
    mu_e, sigma_e = ranker.policy.distribution(x["obs"], x["group"])
    np.testing.assert_allclose(mu, mu_e.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sigma, sigma_e.numpy(), rtol=1e-5, atol=1e-6)
    action = (mu_e + sigma_e * x["noise"]).numpy()
    scorer = ort.InferenceSession(str(scorer_path(out)), providers=["CPUExecutionProvider"])
    for b, c in ((37, 200), (3, 6)):  # dynamic batch and candidate counts
        valid = x["valid"][:b, :c].clone()
        if c == 6:
            valid[:] = True
        feed = {"scores": x["scores"][:b, :c].numpy(), "action": action[:b], "valid": valid.numpy()}
        (top,) = scorer.run(["top"], feed)
        assert top.tolist() == eager_top(ranker, x["scores"][:b, :c], torch.from_numpy(action[:b]), valid)
    import onnx

    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(props["rlur_meta"])["policy_version"] == "ox"
