"""Minari: a live run's log exported as one episode per user and read back (``rlur data export``,
``rlur train --from-minari``), and Minari's ``DataCollector`` on the Gymnasium env. Datasets go to a
temporary ``MINARI_DATASETS_PATH``; nothing is downloaded."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import gymnasium
import minari
import numpy as np
import pytest
import torch

from rlur.cli import main
from rlur.integrations.minari import INFO_KEYS, read_minari_batch
from rlur.live.dataset import read_logged
from rlur.live.events import SqliteEventLog
from rlur.live.joiner import LabelJoiner
from rlur.live.testing import simulated_log
from rlur.sim.gym_env import ENV_ID
from rlur.sim.world import WorldConfig

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"n_videos": 500, "n_candidates": 50}
NAME = "rlur/live-test-v0"


@pytest.fixture(scope="module")
def minari_home(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(tmp_path_factory.mktemp("minari")))
        yield


@pytest.fixture(scope="module")
def live_run(tmp_path_factory) -> Path:
    """A small simulated live log (16 users, 3 days), joined into transitions."""
    out = tmp_path_factory.mktemp("live") / "run"
    simulated_log(out, users=16, days=3, seed=1)
    horizon = json.loads((out / "config.json").read_text())["horizon_days_resolved"]
    log = SqliteEventLog(out / "events.sqlite")
    joiner = LabelJoiner(log, out / "joiner.sqlite", horizon_days=horizon)
    try:
        joiner.run(poll_seconds=0.0)
    finally:
        joiner.close()
        log.close()
    return out


@pytest.fixture(scope="module")
def exported(live_run, minari_home) -> str:
    with pytest.MonkeyPatch.context() as mp:  # the command's output
        lines: list[str] = []
        mp.setattr("builtins.print", lambda *a, **k: lines.append(" ".join(map(str, a))))
        assert main(["data", "export", "--from", str(live_run), "--format", "minari", "--out", NAME]) == 0
    assert lines and lines[-1].startswith(f"wrote the Minari dataset {NAME}: 16 episodes (users)")
    return NAME


def test_export_holds_each_users_requests_in_order(live_run, exported) -> None:
    rows = read_logged(live_run)
    dataset = minari.load_dataset(exported)
    users = np.unique(rows.user_id)
    assert dataset.total_episodes == len(users) and dataset.total_steps == len(rows.batch)
    assert dataset.spec.env_spec.id == ENV_ID and dataset.spec.env_spec.kwargs["world_seed"] == 0
    order = np.lexsort((rows.request_seq, rows.user_id))
    b = {k: v[torch.from_numpy(order)].numpy() for k, v in rows.batch.to_dict().items()}
    episodes = list(dataset.iterate_episodes())
    cat = lambda f: np.concatenate([f(e) for e in episodes])  # noqa: E731
    assert [int(e.infos["user_id"][0]) for e in episodes] == users.tolist()
    np.testing.assert_array_equal(cat(lambda e: e.observations[:-1]), b["obs"])
    np.testing.assert_array_equal(cat(lambda e: e.actions), b["action"])
    np.testing.assert_array_equal(cat(lambda e: e.rewards), np.where(b["session_end"], -b["return_time"], 0.0))
    np.testing.assert_array_equal(cat(lambda e: e.infos["behaviour_logp"][1:]), b["behaviour_logp"])
    np.testing.assert_array_equal(cat(lambda e: e.infos["ts"][1:]), rows.ts[order])
    for e in episodes:
        assert sorted(e.infos) == sorted(INFO_KEYS)
        assert len(e.observations) == len(e.actions) + 1 == len(e.infos["session_end"])
        assert not e.terminations.any() and e.truncations.tolist() == [False] * (len(e.actions) - 1) + [True]
        assert np.isnan(e.infos["behaviour_logp"][0]) and e.infos["ts"][0] == -1  # the reset's sentinels
        assert (np.diff(e.infos["ts"][1:]) >= 0).all() and len(set(e.infos["user_id"])) == 1
    # the episode returns add up to minus the logged returning times
    total = sum(float(e.rewards.sum()) for e in episodes)
    assert total == pytest.approx(-float(rows.batch.return_time[rows.batch.session_end].sum()), rel=1e-6)


def test_round_trip_gives_the_logged_batch_back(live_run, exported) -> None:
    rows = read_logged(live_run)
    order = torch.from_numpy(np.lexsort((rows.request_seq, rows.user_id)))
    back = read_minari_batch(exported)
    assert len(back) == len(rows.batch)
    for name, value in rows.batch.to_dict().items():
        got = getattr(back, name)
        assert got.dtype == value.dtype, name
        assert torch.equal(got, value[order]), name


def test_train_from_minari(exported, tmp_path, capsys) -> None:
    config = tmp_path / "small.json"
    config.write_text(json.dumps({"world": {**WorldConfig().to_dict(), **SMALL}, "learning_starts": 1,
                                  "batch_size": 32}))
    out = tmp_path / "run"
    assert main(["train", "--from-minari", exported, "--algo", "rlur", "--steps", "4", "--eval-every", "4",
                 "--eval-users", "8", "--eval-days", "1", "--config", str(config), "--out", str(out),
                 "--no-progress"]) == 0
    state = torch.load(out / "resume.pt", weights_only=False)
    assert state["collector"] == {"from_log": f"minari:{exported}", "transitions": len(read_minari_batch(exported))}
    assert f"minari:{exported}" in capsys.readouterr().out


def test_data_collector_records_the_gym_infos(minari_home) -> None:
    """Finding 6: Minari's DataCollector(record_infos=True) needs the same info keys at every step."""
    env = minari.DataCollector(gymnasium.make(ENV_ID, world=WorldConfig(**SMALL), n_sessions=2), record_infos=True)
    env.reset(seed=0)
    env.action_space.seed(0)
    episodes = 0
    while episodes < 2:
        *_, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            episodes += 1
            env.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # author, code permalink
        dataset = env.create_dataset("rlur/collected-v0", algorithm_name="random")
    assert dataset.total_episodes == 2
    ep = next(iter(dataset.iterate_episodes()))
    assert ep.infos["session_end"].sum() == 2 and ep.infos["sessions"][-1] == 2
    assert len(ep.infos["return_time"]) == len(ep.rewards) + 1
    np.testing.assert_allclose(ep.rewards.sum(), -ep.infos["return_time"][ep.infos["session_end"]].sum())
    # not an rlur export: no behaviour policy in its infos
    with pytest.raises(ValueError, match="has no behaviour_mu"):
        read_minari_batch("rlur/collected-v0")


@pytest.mark.parametrize(("argv", "message"), [
    (["data", "export", "--from", "{tmp}", "--out", "rlur/x-v0"], "is neither an `rlur live` run"),
    (["data", "export", "--from", "{live}", "--out", "no_version"], "bad Minari dataset id"),
    (["data", "export", "--from", "{live}", "--out", NAME], "exists already"),
    (["data", "export", "--from", "{live}", "--format", "parquet", "--out", "rlur/x-v0"], "invalid choice"),
    (["train", "--from-minari", "rlur/none-v0", "--out", "{tmp}/r"], "no local Minari dataset rlur/none-v0"),
    (["train", "--from-minari", NAME, "--from-log", "{live}", "--out", "{tmp}/r"], "two sources"),
    (["train", "--from-minari", NAME, "--algo", "cem", "--out", "{tmp}/r"], "off-policy agents"),
    (["train", "--from-minari", NAME, "--log-arms", "control", "--out", "{tmp}/r"], "--log-arms is for --from-log"),
])
def test_bad_input_is_one_line(argv, message, live_run, exported, tmp_path, capsys) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{live}", str(live_run)) for a in argv]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert err.count("\n") == 1


@pytest.mark.parametrize("capacity", [200, 44])  # 44: the ring buffer has wrapped (and 44 % 8 ≠ 0)
def test_training_replay_exports_one_episode_per_user(capacity, minari_home, tmp_path) -> None:
    config = tmp_path / "small.json"
    config.write_text(json.dumps({"world": {**WorldConfig().to_dict(), **SMALL}, "buffer_capacity": capacity,
                                  "learning_starts": 100}))
    run = tmp_path / "run"
    assert main(["train", "--algo", "td3", "--steps", "8", "--users", "8", "--eval-every", "8", "--eval-users", "4",
                 "--eval-days", "1", "--config", str(config), "--out", str(run), "--no-progress"]) == 0
    name = f"rlur/replay{capacity}-v0"
    assert main(["data", "export", "--from", str(run), "--out", name]) == 0
    dataset = minari.load_dataset(name)
    buffer = torch.load(run / "resume.pt", weights_only=False)["learner"]["buffer"]
    assert dataset.total_steps == buffer["size"] == min(capacity, 7 * 8)  # 7 steps flushed, the 8th staged
    assert dataset.total_episodes == 8
    lengths = []
    for episode in dataset.iterate_episodes():  # a user's requests, one after the other (export checks they chain)
        assert len(set(episode.infos["user_id"])) == 1
        assert episode.infos["group"][1:].min() == episode.infos["group"][1:].max()
        lengths.append(len(episode.actions))
    assert sum(lengths) == buffer["size"] and max(lengths) - min(lengths) <= 1
    back = read_minari_batch(name)
    assert torch.equal(back.obs.sort(0).values, buffer["data"]["obs"].sort(0).values)  # the same rows
    assert dataset.spec.env_spec.kwargs["world"]["n_videos"] == 500


def test_runs_without_a_per_user_replay_are_refused(minari_home, tmp_path, capsys) -> None:
    config = tmp_path / "small.json"
    config.write_text(json.dumps({"world": {**WorldConfig().to_dict(), **SMALL}}))
    run = tmp_path / "cem"
    assert main(["train", "--algo", "uniform", "--steps", "2", "--users", "4", "--eval-users", "4", "--eval-days",
                 "1", "--config", str(config), "--out", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["data", "export", "--from", str(run), "--out", "rlur/u-v0"]) == 2
    assert "keeps no replay buffer" in capsys.readouterr().err
    assert main(["data", "export", "--from", str(run), "--arms", "control", "--out", "rlur/u-v0"]) == 2
    assert "--arms is for live runs" in capsys.readouterr().err


def test_read_logged_names_the_user_and_time_of_each_request(live_run) -> None:
    """Finding 6: each logged row carries its request's user id, time and arm, as the event log has them."""
    rows = read_logged(live_run)
    log = SqliteEventLog(live_run / "events.sqlite", readonly=True)
    try:
        requests = log.fetch_requests(rows.request_seq)
    finally:
        log.close()
    np.testing.assert_array_equal(rows.user_id, requests.user_id)
    np.testing.assert_array_equal(rows.ts, requests.ts)
    np.testing.assert_array_equal(rows.arm, requests.arm)
    assert torch.equal(rows.batch.obs, torch.from_numpy(np.asarray(requests.state)))
    assert len(np.unique(rows.user_id)) == 16
