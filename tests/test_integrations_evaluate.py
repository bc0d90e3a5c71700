"""``rlur.evaluate`` and ``rlur eval --policy``: any policy, rlur's metrics, the held-out users of ``rlur eval``."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import rlur
from rlur.agents.fixed import FixedPolicy, weighting_action
from rlur.cli import main
from rlur.evaluation.api import load_policy_spec
from rlur.sim.env import OBS_DIM
from rlur.sim.gym_env import make_observation_space
from rlur.sim.world import SCORE_NAMES, WorldConfig

pytestmark = pytest.mark.usefixtures("one_thread")

K = len(SCORE_NAMES)
HELD_OUT = {"users": 48, "days": 3, "seed": 17}
TIMING = ("requests_per_s",)  # measured, so never equal between two runs
POLICY_FILE = """
import numpy as np

def zeros(obs):
    return np.zeros((len(obs), 8), np.float32)

def wrong_shape(obs):
    return np.zeros((len(obs), 3))

not_a_policy = 5
"""


def _metrics(result: dict) -> dict:
    """The metrics of a result (without timing and the policy's description)."""
    return {k: v for k, v in result.items() if k not in (*TIMING, "algo", "version", "checkpoint", "policy")}


@pytest.fixture(scope="module")
def uniform_run(tmp_path_factory) -> Path:
    """An ``rlur train --algo uniform`` run: its checkpoint serves μ = 0 to everyone."""
    out = tmp_path_factory.mktemp("uniform") / "run"
    assert main(["train", "--algo", "uniform", "--steps", "1", "--users", "8", "--eval-users", "8", "--eval-days", "1",
                 "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("policies") / "my_policy.py"
    path.write_text(textwrap.dedent(POLICY_FILE))
    return path


def test_every_kind_of_policy_gives_the_metrics_of_rlur_eval(uniform_run, policy_file, tmp_path, capsys) -> None:
    """μ = 0 as a checkpoint, a function, an SB3-style predict and rlur's act: the same users, the same metrics."""
    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(uniform_run), "--out", str(out), "--no-progress",
                 *[f"--{k}={v}" for k, v in HELD_OUT.items()]]) == 0
    cli = json.loads(out.read_text())
    from_checkpoint = rlur.evaluate(str(uniform_run), **HELD_OUT)
    assert {k: v for k, v in from_checkpoint.items() if k not in TIMING} == {k: v for k, v in cli.items()
                                                                               if k not in TIMING}
    assert cli["algo"] == "uniform" and cli["checkpoint"] == str(uniform_run) and cli["users"] == 48

    seen: list[np.ndarray] = []

    def zeros(obs: np.ndarray) -> np.ndarray:
        seen.append(obs)
        return np.zeros((len(obs), K))

    class Predictor:  # Stable-Baselines3's interface
        def predict(self, obs, deterministic=False):
            assert deterministic
            return np.zeros((len(obs), K), np.float32), None

    space = make_observation_space(WorldConfig())
    for policy in (zeros, lambda obs: np.zeros(K), Predictor(), FixedPolicy(weighting_action())):
        result = rlur.evaluate(policy, **HELD_OUT)
        assert _metrics(result) == _metrics(cli)
        assert result["algo"] is None and result["checkpoint"] is None
    assert seen and all(o.shape == (48, OBS_DIM) and o.dtype == np.float32 for o in seen)
    assert all(((o >= space.low) & (o <= space.high)).all() for o in seen)  # the Gymnasium observations

    # the command line: a file's function
    out2 = tmp_path / "policy.json"
    assert main(["eval", "--policy", f"{policy_file}:zeros", "--out", str(out2), "--no-progress",
                 *[f"--{k}={v}" for k, v in HELD_OUT.items()]]) == 0
    from_policy = json.loads(out2.read_text())
    assert _metrics(from_policy) == _metrics(cli) and from_policy["policy"] == f"{policy_file}:zeros"
    assert "rlur eval" in capsys.readouterr().out


def test_eval_policy_in_another_built_in_world(policy_file, tmp_path) -> None:
    out = tmp_path / "seed1.json"
    assert main(["eval", "--policy", f"{policy_file}:zeros", "--world-seed", "1", "--out", str(out), "--no-progress",
                 *[f"--{k}={v}" for k, v in HELD_OUT.items()]]) == 0
    expected = rlur.evaluate(lambda obs: np.zeros(K), world=WorldConfig(world_seed=1), **HELD_OUT)
    assert _metrics(json.loads(out.read_text())) == _metrics(expected)
    assert _metrics(expected) != _metrics(rlur.evaluate(lambda obs: np.zeros(K), **HELD_OUT))


def test_another_policy_gives_other_metrics() -> None:
    click = rlur.evaluate(lambda obs: weighting_action("click").numpy(), **HELD_OUT)
    uniform = rlur.evaluate(lambda obs: np.zeros(K), **HELD_OUT)
    assert click["watch_time_per_request"]["mean"] != uniform["watch_time_per_request"]["mean"]
    assert click["users"] == uniform["users"] == 48 and click["days"] == 3


def test_module_attribute_spec(policy_file) -> None:
    assert load_policy_spec("rlur.agents.fixed:weighting_action") is weighting_action
    assert load_policy_spec(f"{policy_file}:not_a_policy") == 5


def test_bad_policies_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"shape \(48, 3\)"):
        rlur.evaluate(lambda obs: np.zeros((len(obs), 3)), **HELD_OUT)
    with pytest.raises(ValueError):  # NaN actions: the simulator refuses them
        rlur.evaluate(lambda obs: np.full((len(obs), K), np.nan), **HELD_OUT)
    with pytest.raises(TypeError, match="cannot evaluate a int"):
        rlur.evaluate(5, **HELD_OUT)
    with pytest.raises(FileNotFoundError):
        rlur.evaluate("no/such/run", **HELD_OUT)
    with pytest.raises(AttributeError):
        _ = rlur.no_such_thing


@pytest.mark.parametrize(("argv", "message"), [
    (["--policy", "no_such_module_xyz:f"], "cannot import 'no_such_module_xyz'"),
    (["--policy", "rlur.agents.fixed:nothing"], "has no attribute 'nothing'"),
    (["--policy", "no_colon"], "expects module:function"),
    (["--policy", "missing_file.py:f"], "no policy file"),
    (["--policy", "{file}:wrong_shape"], "shape (48, 3)"),
    (["--policy", "{file}:not_a_policy"], "cannot evaluate a int"),
    (["--policy", "{file}:zeros", "--checkpoint", "x"], "not allowed with argument"),
    (["--checkpoint", "x", "--world-seed", "1"], "a checkpoint has its own world"),
    (["--policy", "{file}:zeros", "--world-preset", "nope"], "invalid choice"),
    ([], "one of the arguments --checkpoint --policy is required"),
])
def test_eval_policy_bad_input_is_one_line(argv, message, policy_file, tmp_path, capsys) -> None:
    argv = [a.replace("{file}", str(policy_file)) for a in argv]
    try:
        code = main(["eval", *argv, "--out", str(tmp_path / "x.json"), "--no-progress",
                     *[f"--{k}={v}" for k, v in HELD_OUT.items()]])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert err.count("\n") == 1


def test_evaluate_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    table = rng.uniform(-1, 1, (4, K)).astype(np.float32)

    def by_group(obs: np.ndarray) -> np.ndarray:  # reads the group one-hot, as a real policy would
        return table[obs[:, :4].argmax(1)]

    a, b = rlur.evaluate(by_group, **HELD_OUT), rlur.evaluate(by_group, **HELD_OUT)
    assert _metrics(a) == _metrics(b)
    torch_policy = rlur.evaluate(lambda obs: torch.from_numpy(table[obs[:, :4].argmax(1)]), **HELD_OUT)
    assert _metrics(torch_policy) == _metrics(a)
