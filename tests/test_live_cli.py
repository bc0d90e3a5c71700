"""``rlur live`` end to end on a tiny budget (a subprocess, with its joiner and trainer processes), the soft
regularisation's behaviour log-probs, and one-line errors on bad input."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rlur.agents.networks import gaussian_log_prob
from rlur.agents.policy import load_policy
from rlur.cli import main
from rlur.live.dataset import read_logged_batch
from rlur.live.events import SqliteEventLog
from rlur.live.joiner import read_transitions
from rlur.live.trainer import ContinuousTrainer, TrainerConfig, build_batch

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def live_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("live") / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "rlur", "live", "--out", str(out), "--users", "96", "--days", "4", "--seed", "1",
         "--learning-starts", "300", "--transitions-per-update", "16", "--publish-every", "3",
         "--explore-anneal", "2000", "--no-progress"],
        env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    assert "wrote" in proc.stdout
    return out


def test_live_end_to_end(live_run):
    s = json.loads((live_run / "live.json").read_text())
    lab = s["labels"]
    assert lab["conserved"] and lab["pending"] == 0
    assert lab["served_requests"] == lab["joined"] + lab["censored"] + lab["closed"] == lab["transitions"]
    assert s["versions"]["published"] >= 2 and s["trainer"]["done"]
    assert s["users"]["control"] + s["users"]["treatment"] == 96
    assert len(s["daily"]["avg_return_day"]["control"]["value"]) == 4
    assert "avg_return_day" in s["final"]["lifts"]
    assert s["timing"]["restarts"] == {"joiner": 0, "trainer": 0}
    for name in ("report.md", "curve.png", "current.pt", "control.pt", "trainer/state.pt"):
        assert (live_run / name).is_file(), name
    assert "conserved" in (live_run / "report.md").read_text()


def test_every_request_names_the_version_that_served_it(live_run):
    """Control: always the frozen version 0. Treatment: versions published during the run (> 1 among them);
    each logged μ, σ and log-prob is what that version's checkpoint computes for the logged state."""
    log = SqliteEventLog(live_run / "events.sqlite", readonly=True)
    versions = dict(log.conn.execute("SELECT arm, GROUP_CONCAT(DISTINCT version) FROM requests GROUP BY arm"))
    assert versions[0] == "0"
    treatment = sorted(int(v) for v in versions[1].split(","))
    assert max(treatment) > 1
    for v in treatment:
        seqs = np.array([r[0] for r in log.conn.execute(
            "SELECT seq FROM requests WHERE arm = 1 AND version = ? LIMIT 50", (v,))])
        req = log.fetch_requests(seqs)
        policy, ckpt = load_policy(live_run / "policies" / f"v{v:05d}.pt")
        assert ckpt["live_version"] == v
        mu, std = policy.distribution(torch.from_numpy(req.state), torch.from_numpy(req.group))
        torch.testing.assert_close(mu, torch.from_numpy(req.mu), rtol=0, atol=1e-6)
        torch.testing.assert_close(std, torch.from_numpy(req.sigma), rtol=0, atol=1e-6)
        logp = gaussian_log_prob(torch.from_numpy(req.action), torch.from_numpy(req.mu), torch.from_numpy(req.sigma))
        torch.testing.assert_close(logp, torch.from_numpy(req.logp), rtol=0, atol=1e-5)
    log.close()


def test_soft_regularisation_gets_the_logged_behaviour_log_probs(live_run, tmp_path, monkeypatch):
    log = SqliteEventLog(live_run / "events.sqlite", readonly=True)
    conn = sqlite3.connect(live_run / "joiner.sqlite")
    rows = read_transitions(conn, 0, 2_000)
    rows_ok = rows.censored != 2
    logged = dict(log.conn.execute("SELECT seq, logp FROM requests"))
    batch = build_batch(rows.subset(rows_ok), log, horizon_days=10)
    want = np.array([logged[s] for s in rows.request_seq[rows_ok]], dtype=np.float32)
    np.testing.assert_array_equal(batch.behaviour_logp.numpy(), want)  # exactly the logged values

    # The actor update receives them: capture the soft-regularisation weight's inputs during training.
    import rlur.agents.rlur as rlur_mod

    seen: list[torch.Tensor] = []
    original = rlur_mod.soft_regularisation_weight

    def spy(logp, behaviour_logp, *args, **kwargs):
        seen.append(behaviour_logp.clone())
        return original(logp, behaviour_logp, *args, **kwargs)

    monkeypatch.setattr(rlur_mod, "soft_regularisation_weight", spy)
    work = tmp_path / "run"
    (work / "policies").mkdir(parents=True)
    (work / "policies" / "v00000.pt").write_bytes((live_run / "policies" / "v00000.pt").read_bytes())
    cfg = TrainerConfig(batch_size=32, transitions_per_update=64, learning_starts=64, publish_every=1000)
    trainer = ContinuousTrainer(work, log, live_run / "joiner.sqlite", cfg, horizon_days=10)
    for _ in range(3):
        trainer.step()
    assert seen and trainer.updates >= 2
    every_logged = set(np.array(list(logged.values()), dtype=np.float32).tolist())
    assert all(set(t.tolist()) <= every_logged for t in seen)
    trainer.close()
    conn.close()
    log.close()


@pytest.mark.parametrize("argv, message", [
    (["--users", "0"], "expected a positive integer"),
    (["--start", "no-such-policy"], "--start 'no-such-policy'"),
    (["--shares", "0.3,0.3"], "--shares must sum to 1"),
    (["--days", "3", "--final-days", "5"], "final_days must be in 1..3"),
    (["--day-seconds", "-1"], "expected a non-negative number"),
])
def test_bad_input_is_a_one_line_error(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) if argv[0] in ("--users", "--day-seconds") else _no_raise():
        code = main(["live", "--out", str(tmp_path / "x"), *argv])
        assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_existing_run_and_missing_role_config_are_one_line_errors(live_run, tmp_path, capsys):
    assert main(["live", "--out", str(live_run)]) == 2
    assert "already holds a live run" in capsys.readouterr().err
    assert main(["live", "--role", "joiner", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "config.json not found" in err and err.count("\n") == 1


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_train_from_log_replays_the_logged_transitions(live_run, tmp_path, capsys):
    """``rlur train --from-log``: the replay buffer is every trainable logged transition, with the behaviour
    log-probs the serving versions logged, and the offline run trains, evaluates and checkpoints."""
    conn = sqlite3.connect(live_run / "joiner.sqlite")
    rows = read_transitions(conn, n_feedback=9)
    conn.close()
    keep = rows.censored != 2
    batch = read_logged_batch(live_run)
    assert len(batch) == int(keep.sum()) > 0
    assert len(read_logged_batch(live_run, "treatment")) == int((keep & (rows.arm == 1)).sum())
    log = SqliteEventLog(live_run / "events.sqlite", readonly=True)
    req = log.fetch_requests(rows.request_seq[keep])
    log.close()
    assert torch.equal(batch.behaviour_logp, torch.from_numpy(req.logp))
    assert torch.equal(batch.obs, torch.from_numpy(req.state))
    assert torch.equal(batch.session_end, torch.from_numpy(rows.session_end[keep] == 1))

    out = tmp_path / "offline"
    code = main(["train", "--from-log", str(live_run), "--algo", "rlur", "--steps", "50", "--eval-every", "25",
                 "--eval-users", "64", "--eval-days", "2", "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert f"{len(batch)} logged transitions" in capsys.readouterr().out
    state = torch.load(out / "resume.pt", weights_only=False)
    assert state["collector"] == {"from_log": str(live_run), "transitions": len(batch)}
    buffer = state["learner"]["buffer"]
    assert buffer["size"] == len(batch)
    assert torch.equal(buffer["data"]["behaviour_logp"], batch.behaviour_logp)  # unchanged by training
    metrics = (out / "metrics.csv").read_text()
    assert "train/critic_T_loss" in metrics and "train/soft_reg_weight_max" in metrics
    assert json.loads((out / "eval.json").read_text())["avg_return_day"]["mean"] > 0
    assert load_policy(out)[1]["algo"] == "rlur"


@pytest.mark.parametrize("argv, message", [
    (["--from-log", "missing-dir"], "has no events.sqlite"),
    (["--from-log", ".", "--algo", "cem"], "--from-log trains off-policy agents"),
])
def test_train_from_log_bad_input_is_a_one_line_error(tmp_path, capsys, argv, message):
    assert main(["train", "--out", str(tmp_path / "x"), "--no-progress", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_ablation_flags_reach_the_trainer_config():
    from rlur.cli import build_parser
    from rlur.live.commands import build_config

    cfg = build_config(build_parser().parse_args(["live", "--out", "x", "--no-soft-reg", "--no-rnd"]))
    rl = cfg.trainer.rlur
    assert not rl.soft_reg and not rl.rnd and rl.normalise and rl.immediate and rl.groups
    assert build_config(build_parser().parse_args(["live", "--out", "x"])).trainer.rlur.soft_reg
