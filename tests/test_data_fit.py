"""The learned simulator fitted on a synthetic KuaiRand-format fixture with known hidden rules.

Stated tolerances (the fixture: 200 users, 150 videos, 20 days, ≈ 21k impressions; the simulator
replays the logged exposure with 200 users for 20 days, ≈ 23k impressions):

* held-out AUC of click and long view ≥ 0.65, of leave ≥ 0.56, of day-1 return ≥ 0.55, each with a
  log-loss below the base rate's; the other heads' log-loss at most 2 % above the base rate's, the
  return model's censored log-likelihood loss at most 3 % above the Kaplan–Meier base (the held-out
  days are heavily censored, so it is noisy);
* simulated vs logged behaviour rates: click and long view within 0.03 (absolute), like within 0.015,
  the rarer behaviours within 0.01;
* requests per session within 10 %; return-day histogram total-variation distance ≤ 0.08; day-1
  share of return gaps within 0.07;
* the simulated day-1 share of return gaps for the two largest activity groups within 0.08 of the
  hidden rule (full_active 0.70, high_active 0.50), and ordered like it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rlur.data.fit import FitConfig, censored_class_shares, fit_world
from rlur.data.fixtures import RETURN_GAP_SHARE, write_fixture
from rlur.data.learned_world import LearnedRetentionEnv, LearnedWorld, load_world, make_env
from rlur.sim.env import OBS_DIM, RetentionEnv, StepResult, env_state_dict, load_env_state_dict
from rlur.sim.world import BEHAVIOURS, GROUPS, SCORE_NAMES

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory) -> Path:
    return write_fixture(tmp_path_factory.mktemp("fixture"), seed=0).root


@pytest.fixture(scope="module")
def fitted(fixture_root: Path, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("world")
    summary = fit_world(fixture_root, out, FitConfig(progress=False, sim_users=200))
    return out, summary


def test_models_beat_the_base_rates_on_held_out_days(fitted) -> None:
    _, s = fitted
    m = s["metrics"]
    for b in ("click", "long_view"):
        r = m["feedback"][b]
        assert r["auc"] >= 0.65, (b, r)
        assert r["log_loss"] < r["base_log_loss"] - 0.02, (b, r)
    for b in BEHAVIOURS:
        r = m["feedback"][b]
        assert r["log_loss"] <= 1.02 * r["base_log_loss"], (b, r)
    assert m["leave"]["auc"] >= 0.56 and m["leave"]["log_loss"] < m["leave"]["base_log_loss"]
    r = m["return"]
    assert r["day1_auc"] >= 0.55 and r["day1_log_loss"] < r["day1_base_log_loss"]
    assert r["log_loss"] <= 1.03 * r["base_log_loss"]
    assert m["watch"]["mae"] < 0.5 * m["watch"]["base_mae"]


def test_simulated_statistics_match_the_logs(fitted) -> None:
    _, s = fitted
    logged, sim = s["logged"], s["simulated"]["logged"]
    tol = {"click": 0.03, "long_view": 0.03, "like": 0.015}
    for b in BEHAVIOURS:
        assert abs(sim["behaviour_rates"][b] - logged["behaviour_rates"][b]) <= tol.get(b, 0.01), b
    assert abs(sim["session_depth"] / logged["session_depth"] - 1) <= 0.10
    assert sim["return_day_tv"] <= 0.08
    assert abs(sim["day1_retention"] - logged["day1_retention"]) <= 0.07
    # The fusion ranking (uniform weights) picks better videos than the logged exposure.
    assert s["simulated"]["fusion"]["behaviour_rates"]["click"] > sim["behaviour_rates"]["click"]


def test_simulated_return_days_recover_the_hidden_rule(fitted) -> None:
    """Day-1 share of simulated return gaps per activity group vs the fixture's hidden rule."""
    env = LearnedRetentionEnv(load_world(fitted[0]), n_users=600, seed=7, ranking="logged")
    a = torch.zeros(600, len(SCORE_NAMES))
    gaps, day1 = torch.zeros(len(GROUPS)), torch.zeros(len(GROUPS))
    while int(env.day.min()) < 20:
        r = env.step(a)
        g = r.session_end & (r.return_day >= 1)
        gaps += torch.bincount(r.group[g], minlength=len(GROUPS))
        day1 += torch.bincount(r.group[g & (r.return_day == 1)], minlength=len(GROUPS))
    share = {grp: float(day1[i] / gaps[i]) for i, grp in enumerate(GROUPS)}
    truth = {g: RETURN_GAP_SHARE[d][0] / sum(RETURN_GAP_SHARE[d]) for g, d in
             (("high", "full_active"), ("middle", "high_active"))}
    for g, p in truth.items():
        assert abs(share[g] - p) <= 0.08, (g, share[g], p)
    assert share["high"] > share["middle"] > share["low"]


def test_world_files_and_report(fitted) -> None:
    out, _ = fitted
    meta = json.loads((out / "world.json").read_text())
    assert meta["format"] == "rlur-learned-world" and meta["config"]["max_return_day"] == 10
    report = (out / "fit_report.md").read_text()
    assert "Held-out prediction quality" in report and "TV distance" in report
    for png in ("calibration.png", "return_days.png", "session_depth.png", "behaviour_rates.png"):
        assert (out / png).stat().st_size > 1000


def test_learned_env_steps_like_the_builtin_one(fitted) -> None:
    env = make_env(fitted[0], n_users=64, seed=1)
    assert isinstance(env, LearnedRetentionEnv) and isinstance(env, RetentionEnv)
    assert env.observe().shape == (64, OBS_DIM) and env.obs_dim == OBS_DIM and env.k == len(SCORE_NAMES)
    g = torch.Generator().manual_seed(0)
    ends = 0
    for _ in range(50):
        r = env.step(torch.rand(64, env.k, generator=g) * 2 - 1)
        assert isinstance(r, StepResult)
        assert r.obs.shape == (64, OBS_DIM) and torch.isfinite(r.obs).all()
        assert r.feedback.shape == (64, 1 + len(BEHAVIOURS)) and (r.feedback >= 0).all()
        assert r.shown.shape == (64, 6)
        assert (r.shown.sort(1).values.diff(dim=1) > 0).all()  # distinct videos in a slate
        assert (r.feedback[:, 1 + BEHAVIOURS.index("long_view")] <= r.feedback[:, 1]).all()  # nested in clicks
        assert ((r.return_day >= 1) == r.session_end).all()  # user-day sessions: no same-day reopen
        assert torch.isnan(r.return_time[~r.session_end]).all()
        ends += int(r.session_end.sum())
    assert ends > 0 and int(env.day.max()) > 0
    with pytest.raises(ValueError, match="shape"):
        env.step(torch.zeros(3, env.k))


def test_env_is_reproducible_and_resumable(fitted) -> None:
    world = load_world(fitted[0])
    a = torch.zeros(16, len(SCORE_NAMES))
    e1, e2 = LearnedRetentionEnv(world, 16, seed=5), LearnedRetentionEnv(world, 16, seed=5)
    for _ in range(5):
        e1.step(a)
        e2.step(a)
    state = env_state_dict(e1)
    r1 = e1.step(a)
    e3 = LearnedRetentionEnv(world, 16, seed=99)
    load_env_state_dict(e3, state)
    r3 = e3.step(a)
    assert torch.equal(r1.obs, r3.obs) and torch.equal(r1.shown, r3.shown)
    assert torch.equal(e2.step(a).shown, r1.shown)


def test_rollout_and_an_rlur_learner_run_unchanged(fitted) -> None:
    from rlur.agents.fixed import FixedPolicy
    from rlur.evaluation.rollout import rollout
    from rlur.training.loop import TrainConfig, make_learner

    env = make_env(str(fitted[0]), n_users=128, seed=2)
    recorder, timing = rollout(env, FixedPolicy(torch.zeros(len(SCORE_NAMES))), days=5)
    out = recorder.summary(n_boot=20)
    assert out["return_gaps"] > 0 and 1.0 <= out["avg_return_day"]["mean"] <= 12
    assert 0 < out["behaviour_rates"]["click"] < 1 and np.isfinite(out["dau"]["mean"])
    assert timing["steps"] > 0
    learner = make_learner(TrainConfig(algo="rlur", steps=30, n_users=64, batch_size=64, learning_starts=5),
                           env2 := make_env(fitted[0], n_users=64, seed=3))
    obs = env2.observe()
    for _ in range(12):
        served = learner.serve(obs, env2.group)
        result = env2.step(served["action"])
        learner.observe(obs, served, result)
        obs = result.obs
    assert torch.isfinite(obs).all()


def test_make_env_and_load_world_errors(tmp_path: Path, fitted) -> None:
    assert type(make_env(None, n_users=8)) is RetentionEnv
    with pytest.raises(FileNotFoundError, match="rlur data fit"):
        load_world(tmp_path)
    (tmp_path / "world.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a readable rlur world file"):
        load_world(tmp_path)
    with pytest.raises(TypeError):
        make_env(3.5, n_users=8)  # type: ignore[arg-type]
    payload = torch.load(fitted[0] / "world.pt", weights_only=True)
    with pytest.raises(ValueError, match="not an rlur learned world"):
        LearnedWorld({**payload, "format": "other"})
    with pytest.raises(ValueError, match="ranking"):
        LearnedRetentionEnv(LearnedWorld(payload), 4, ranking="best")


def test_gap_sessions_allow_same_day_reopens(tmp_path: Path) -> None:
    root = write_fixture(tmp_path / "fx", n_users=40, n_videos=30, n_days=16, seed=4).root
    # Requests are 90 s apart: a 72-second gap makes every request its own session.
    s = fit_world(root, tmp_path / "w", FitConfig(progress=False, sim_users=64, session_gap_hours=0.02, epochs=3))
    assert s["logged"]["session_depth"] == 1.0 and s["logged"]["same_day_reopen_share"] > 0.3
    world = load_world(tmp_path / "w")
    assert world.config.session_mode == "gap" and world.config.max_opens_per_day >= 6
    env = LearnedRetentionEnv(world, 64, seed=0)
    reopen = 0
    for _ in range(30):
        r = env.step(torch.zeros(64, len(SCORE_NAMES)))
        same = r.return_day == 0
        assert ((r.return_day >= 0) == r.session_end).all() and (r.return_time[same] < 1).all()
        reopen += int(same.sum())
    assert reopen > 0 and float(env.opens_today.max()) < world.config.max_opens_per_day


def test_kaplan_meier_class_shares() -> None:
    # Observed classes 1, 1, 2, 3; one censored as "≥ 2": at risk for class 1 only. h1 = 2/5, then
    # classes 2 and 3 have 2 then 1 at risk: h2 = 1/2, h3 = 1 → shares 0, .4, .3, .3, 0.
    shares = censored_class_shares(np.array([1, 1, 2, 3, -1]), np.array([1, 1, 2, 3, 2]), 5)
    assert np.allclose(shares, [0.0, 0.4, 0.3, 0.3, 0.0])


def test_cli_fit_end_to_end(fixture_root: Path, tmp_path: Path) -> None:
    from rlur import cli

    if "rlur.data.commands" in cli.COMMAND_MODULES:
        cmd = [str(REPO / ".venv" / "bin" / "rlur")] if (REPO / ".venv" / "bin" / "rlur").exists() else \
            [sys.executable, "-m", "rlur.cli"]
    else:
        cmd = [sys.executable, "-m", "rlur.data.commands"]
    out = tmp_path / "world"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([*cmd, "data", "fit", "--kuairand", str(fixture_root / "data"), "--out", str(out),
                        "--epochs", "4", "--sim-users", "100", "--threads", "1", "--no-progress"],
                       capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "held-out click AUC" in p.stdout and (out / "world.pt").is_file() and (out / "fit_report.md").is_file()
    p = subprocess.run([*cmd, "data", "fit", "--kuairand", str(tmp_path / "missing"), "--out", str(out)],
                       capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 2 and p.stderr.startswith("rlur: error:") and p.stderr.count("\n") == 1
