"""``rlur train``, ``rlur eval`` and ``--resume`` end to end, in subprocesses, on tiny budgets."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

TINY = ["--users", "32", "--eval-users", "32", "--eval-days", "2", "--eval-every", "10", "--no-progress"]


def rlur(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "rlur.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"rlur {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.mark.parametrize("algo", ["rlur", "rlur-naive", "td3", "cem", "uniform", "click"])
def test_train_writes_the_run_directory(tmp_path: Path, algo: str):
    out = tmp_path / algo
    rlur("train", "--algo", algo, "--steps", "20", "--out", str(out), *TINY)
    for name in ("config.json", "metrics.csv", "checkpoint.pt", "eval.json"):
        assert (out / name).exists(), name
    result = json.loads((out / "eval.json").read_text())
    for key in ("avg_return_day", "day1_retention", "return_day_hist", "behaviour_rates", "session_depth",
                "requests", "requests_per_s"):
        assert key in result
    assert result["algo"] == algo
    config = json.loads((out / "config.json").read_text())
    assert config["algo"] == algo and config["steps"] == 20
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert {"eval/avg_return_day", "eval/day1_retention"} <= {r["metric"] for r in rows}

    ev = tmp_path / f"{algo}_eval.json"
    rlur("eval", "--checkpoint", str(out), "--users", "32", "--days", "2", "--out", str(ev), "--no-progress")
    assert json.loads(ev.read_text())["avg_return_day"]["mean"] > 0


def test_ablation_flags_reach_the_config(tmp_path: Path):
    out = tmp_path / "abl"
    rlur("train", "--algo", "rlur", "--steps", "5", "--out", str(out), "--no-rnd", "--no-groups", "--gamma", "0.5",
         *TINY)
    cfg = json.loads((out / "config.json").read_text())["rlur"]
    assert cfg["rnd"] is False and cfg["groups"] is False and cfg["gamma"] == 0.5
    assert cfg["normalise"] is True and cfg["soft_reg"] is True
    assert cfg["heuristic"] == "paper"  # the paper's immediate reward unless asked otherwise


def test_heuristic_flag_reaches_the_config(tmp_path: Path):
    out = tmp_path / "hand"
    rlur("train", "--algo", "rlur", "--steps", "3", "--out", str(out), "--heuristic", "hand-weighted", *TINY)
    assert json.loads((out / "config.json").read_text())["rlur"]["heuristic"] == "hand-weighted"


def test_candidate_flags_reach_the_config_and_the_run_explores_corners(tmp_path: Path):
    out = tmp_path / "cand"
    rlur("train", "--algo", "rlur", "--steps", "12", "--out", str(out), "--candidate-explore", "0.5",
         "--candidate-pull", "2", "--group-critics", *TINY)
    cfg = json.loads((out / "config.json").read_text())["rlur"]
    assert cfg["candidate_explore"] == 0.5 and cfg["candidate_pull"] == 2.0 and cfg["group_critics"]
    critic = torch.load(out / "resume.pt", weights_only=False)["learner"]["agent"]["critic_t"]
    assert critic["twins.weights.0"].shape[0] == 8  # twins for each of the 4 activity groups
    from rlur.agents.fixed import candidate_weightings

    buffer = torch.load(out / "resume.pt", weights_only=False)["learner"]["buffer"]
    actions = buffer["data"]["action"][: buffer["size"]]
    corner = (actions[:, None] == candidate_weightings()[None]).all(-1).any(-1).float().mean().item()
    assert 0.4 < corner < 0.6  # half of the served actions are pure weightings (12 × 32 rows)


def test_same_seed_same_run(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        rlur("train", "--algo", "rlur", "--steps", "30", "--seed", "3", "--out", str(out), *TINY)
    ea, eb = (json.loads((p / "eval.json").read_text()) for p in (a, b))
    assert ea["avg_return_day"] == eb["avg_return_day"]
    sa = torch.load(a / "checkpoint.pt", weights_only=False)["policy"]["state_dict"]
    sb = torch.load(b / "checkpoint.pt", weights_only=False)["policy"]["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path: Path):
    args = ["--algo", "rlur", "--steps", "60", "--seed", "1", *TINY[:-3], "--eval-every", "20", "--no-progress",
            "--checkpoint-every", "20"]
    full = tmp_path / "full"
    rlur("train", *args, "--out", str(full))

    part = tmp_path / "part"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "rlur.cli", "train", *args, "--out", str(part)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 240
    while time.time() < deadline and not (part / "resume.pt").exists():  # first checkpoint at step 20
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (part / "resume.pt").exists()
    assert not (part / "eval.json").exists()  # it really was interrupted

    out = rlur("train", *args, "--out", str(part), "--resume")
    assert "resuming" in out.stdout
    ef, ep = (json.loads((p / "eval.json").read_text()) for p in (full, part))
    assert ef["avg_return_day"] == ep["avg_return_day"]
    assert ef["learning_curve"] == ep["learning_curve"]
    sf = torch.load(full / "checkpoint.pt", weights_only=False)["policy"]["state_dict"]
    sp = torch.load(part / "checkpoint.pt", weights_only=False)["policy"]["state_dict"]
    assert all(torch.equal(sf[k], sp[k]) for k in sf)
    steps = [(r["step"], r["metric"]) for r in csv.DictReader((part / "metrics.csv").open())]
    assert len(steps) == len(set(steps))  # no duplicated log rows after the resume


def test_existing_run_is_not_overwritten(tmp_path: Path):
    out = tmp_path / "run"
    rlur("train", "--algo", "uniform", "--steps", "3", "--out", str(out), *TINY)
    proc = rlur("train", "--algo", "uniform", "--steps", "3", "--out", str(out), *TINY, check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "--resume" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["train", "--algo", "nope", "--out", "x"], "invalid choice"),
    (["train", "--steps", "-5", "--out", "x"], "positive integer"),
    (["train", "--gamma", "1.5", "--out", "{tmp}/g"], "--gamma"),
    (["train", "--candidate-explore", "1.5", "--out", "{tmp}/ce"], "candidate_explore must be in [0, 1]"),
    (["train", "--candidate-pull", "-1", "--out", "{tmp}/cp"], "non-negative number"),
    (["train", "--algo", "td3", "--candidate-pull", "1", "--out", "{tmp}/ct"], "an option of --algo rlur"),
    (["train", "--algo", "cem", "--group-critics", "--out", "{tmp}/gc"], "an option of --algo rlur"),
    (["train", "--algo", "td3", "--heuristic", "paper", "--out", "{tmp}/h"], "an option of --algo rlur"),
    (["train", "--heuristic", "watch", "--out", "{tmp}/hw"], "invalid choice"),
    (["train", "--config", "{tmp}/legacy.json", "--out", "{tmp}/l"], "watch_scale 100"),
    (["train", "--config", "{tmp}/missing.json", "--out", "{tmp}/c"], "does not exist"),
    (["eval", "--checkpoint", "{tmp}/nowhere", "--out", "{tmp}/e.json"], "no checkpoint"),
])
def test_bad_input_gives_one_line_errors(tmp_path: Path, args, message):
    (tmp_path / "legacy.json").write_text(json.dumps({"rlur": {"watch_scale": 100.0}}))
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = rlur(*args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "Traceback" not in proc.stderr
