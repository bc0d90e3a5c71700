"""``rlur abtest`` end to end (subprocess, tiny sizes), its errors, and online learning inside the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import rlur.cli as cli
from rlur.abtest import ExperimentConfig, run_experiment
from rlur.training.loop import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


MODULE = "rlur.abtest.commands"
# Runs the CLI with the abtest command registered (whether or not rlur.cli lists it yet).
_DRIVER = (f"import sys, rlur.cli as c; m = {MODULE!r}; "
           "c.COMMAND_MODULES = tuple(c.COMMAND_MODULES) + (() if m in c.COMMAND_MODULES else (m,)); "
           "sys.exit(c.main(sys.argv[1:]))")


def rlur(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", _DRIVER, *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture
def main(monkeypatch):
    if MODULE not in cli.COMMAND_MODULES:
        monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, MODULE))
    return cli.main


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Tiny trained run directories (RLUR, TD3, CEM): seconds each."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for algo in ("rlur", "td3", "cem"):
        cfg = TrainConfig(algo=algo, steps=20, n_users=32, batch_size=32, eval_users=32, eval_days=2, eval_every=10,
                          checkpoint_every=10)
        cfg.cem.generation_steps = 5
        Trainer(cfg, root / algo, progress=False).train()
        out[algo] = root / algo
    return out


def test_cli_end_to_end(tmp_path: Path, runs):
    out = tmp_path / "ab"
    proc = rlur("abtest", "--control", "uniform", "--treatment", str(runs["rlur"]), "--users", "300", "--days", "9",
                "--seed", "3", "--world-seed", "0", "--shares", "0.4,0.6", "--salt", "exp-42", "--out", str(out),
                "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "relative lift" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    for metric in ("app_opens", "dau", "day1_retention", "day7_retention", "avg_return_day", "watch_time"):
        lift = report["lifts"][metric]
        assert {"estimate", "ci_low", "ci_high", "p_value"} <= set(lift)
        assert lift["ci_low"] <= lift["estimate"] <= lift["ci_high"]
        assert 0 <= lift["p_value"] <= 1 and report["mde"][metric] > 0
        assert len(report["daily"]["control"][metric]) == len(report["daily"]["lift"][metric]["estimate"])
    assert len(report["daily"]["control"]["dau"]) == 9
    assert report["srm"]["df"] == 1 and sum(report["srm"]["counts"]) == 300
    assert report["arms"]["treatment"]["kind"] == "frozen" and report["arms"]["control"]["kind"] == "fixed"
    assert report["config"]["shares"] == [0.4, 0.6]
    assert (out / "report.md").read_text().startswith("# Simulated A/B test")
    assert (out / "daily.png").stat().st_size > 10_000


def test_a_test_runs_in_the_world_preset_asked_for(tmp_path: Path, runs):
    reports = {}
    for preset in ("default", "classic"):
        out = tmp_path / preset
        proc = rlur("abtest", "--control", "uniform", "--treatment", str(runs["rlur"]), "--users", "200", "--days",
                    "3", "--world-preset", preset, "--out", str(out), "--no-progress")
        assert proc.returncode == 0, proc.stderr
        reports[preset] = json.loads((out / "report.json").read_text())
    assert reports["classic"]["config"]["world_preset"] == "classic"
    assert "world seed 0 (preset `classic`)" in (tmp_path / "classic" / "report.md").read_text()
    assert "preset" not in (tmp_path / "default" / "report.md").read_text().splitlines()[2]
    # the RLUR run was trained in the default world: tested in another one, the report says so
    assert "'classic'" in reports["classic"]["arms"]["treatment"]["note"]
    assert "note" not in reports["default"]["arms"]["treatment"]
    assert reports["classic"]["lifts"] != reports["default"]["lifts"]  # same users, another world


def test_cli_aa_runs_control_in_both_arms(tmp_path: Path):
    out = tmp_path / "aa"
    proc = rlur("abtest", "--control", "random", "--aa", "--users", "200", "--days", "3", "--out", str(out),
                "--no-progress")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "A/A" and report["arms"]["treatment"]["spec"] == "random"
    assert "day7_retention" not in report["lifts"]  # a 3-day test cannot measure it


@pytest.mark.parametrize(("args", "message"), [
    (["--control", "no/such/run", "--treatment", "uniform"], "--control: unknown policy 'no/such/run'"),
    (["--control", "uniform", "--treatment", "greedy"], "--treatment: unknown policy 'greedy'"),
    (["--control", "uniform", "--treatment", "click", "--shares", "0.6,0.6"], "must sum to 1"),
    (["--control", "uniform", "--treatment", "click", "--shares=-0.5,1.5"], "must all be positive"),
    (["--control", "uniform", "--treatment", "click", "--shares", "0.2,0.3,0.5"], "needs 2 values"),
    (["--control", "uniform", "--treatment", "click", "--shares", "half,half"], "comma-separated numbers"),
    (["--control", "uniform"], "--treatment is required"),
    (["--control", "uniform", "--aa", "--alpha", "1.5"], "--alpha must be in (0, 1)"),
    (["--control", "uniform", "--aa", "--world", "no/such/world"], "no learned world at no/such/world"),
])
def test_bad_input_fails_with_one_line(main, capsys, tmp_path: Path, args: list[str], message: str):
    rc = main(["abtest", *args, "--users", "10", "--days", "2", "--out", str(tmp_path / "x"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("rlur: error: ") and len(err.strip().splitlines()) == 1
    assert message in err


def test_run_dir_without_checkpoint_and_online_without_resume(main, capsys, tmp_path: Path, runs):
    empty = tmp_path / "empty_run"
    empty.mkdir()
    assert main(["abtest", "--control", str(empty), "--aa", "--users", "10", "--days", "2",
                 "--out", str(tmp_path / "o1"), "--no-progress"]) == 2
    assert "has no checkpoint.pt" in capsys.readouterr().err
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "checkpoint.pt").write_bytes((runs["td3"] / "checkpoint.pt").read_bytes())
    assert main(["abtest", "--control", str(partial), "--aa", "--online", "--users", "10", "--days", "2",
                 "--out", str(tmp_path / "o2"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--online needs" in err and "resume.pt" in err and len(err.strip().splitlines()) == 1


def test_learned_world(tmp_path: Path):
    """``--world``: the test runs in a world fitted from logs (here the tiny KuaiRand-shaped fixture)."""
    from rlur.data.fit import FitConfig, fit_world
    from rlur.data.fixtures import write_fixture

    root = write_fixture(tmp_path / "fixture", seed=0).root
    fit_world(root, tmp_path / "world", FitConfig(progress=False, sim_users=100, epochs=3))
    res = run_experiment(ExperimentConfig(control="uniform", treatment="click", users=300, days=8, seed=1,
                                          world_path=str(tmp_path / "world")))
    assert res.table.requests.sum() == res.timing["requests"] > 0
    assert bool(res.table.active[:, 0].all())


# --- online learning -----------------------------------------------------------------------------
def _changed(before: dict, after: dict) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("algo", ["rlur", "td3"])
def test_online_off_policy_arm_learns_from_its_traffic(runs, algo: str):
    cfg = ExperimentConfig(control="uniform", treatment=str(runs[algo]), users=200, days=2, seed=4, online=True)
    res = run_experiment(cfg)
    info = res.arms[1]
    assert info["kind"] == "online" and info["updates"] > 0
    start = torch.load(runs[algo] / "checkpoint.pt", weights_only=False)["policy"]["state_dict"]
    assert _changed(start, res.final_policies[1].actor.state_dict())
    assert res.arms[0]["kind"] == "fixed"
    frozen = run_experiment(ExperimentConfig(control="uniform", treatment=str(runs[algo]), users=200, days=2, seed=4))
    assert frozen.arms[1]["kind"] == "frozen"
    assert not _changed(start, frozen.final_policies[1].actor.state_dict())


def test_online_cem_keeps_searching_and_runs_are_reproducible(runs):
    cfg = ExperimentConfig(control=str(runs["cem"]), treatment=str(runs["td3"]), users=200, days=2, seed=5, online=True)
    a, b = run_experiment(cfg), run_experiment(cfg)
    assert a.arms[0]["kind"] == "online" and a.arms[0]["generations"] > 0
    start = torch.load(runs["cem"] / "checkpoint.pt", weights_only=False)["policy"]["mu"]
    assert not torch.equal(start, a.final_policies[0].mu)
    for name in ("opens", "requests", "watch", "gaps", "gap_days"):
        assert torch.equal(getattr(a.table, name), getattr(b.table, name)), name
    assert np.array_equal(a.arm, b.arm)


def test_online_aa_gives_each_arm_its_own_learner(runs):
    res = run_experiment(ExperimentConfig(control=str(runs["rlur"]), users=200, days=2, seed=6, online=True, aa=True))
    p0, p1 = (p.actor.state_dict() for p in res.final_policies)
    assert res.arms[0]["updates"] > 0 and res.arms[1]["updates"] > 0
    assert _changed(p0, p1)  # two learners, two streams of traffic
