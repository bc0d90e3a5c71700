"""Crash recovery: the joiner and the trainer, each run as its own process (``python -m rlur.live --role …``), are
killed with SIGKILL mid-run and restarted; nothing is lost and nothing is duplicated. The interrupted run
ends exactly where an uninterrupted one does."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rlur.agents.rlur import RLURConfig
from rlur.live.events import SqliteEventLog
from rlur.live.joiner import LabelJoiner
from rlur.live.rehearsal import LiveConfig
from rlur.live.testing import simulated_log
from rlur.live.trainer import ContinuousTrainer, PolicyStore, TrainerConfig

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _role(role: str, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rlur.live", "--role", role, "--out", str(out)],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen, timeout: float = 120) -> None:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out.decode()[-2000:]


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 60) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (fail if it finished first)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the role finished before it could be killed; make the test's run longer"
        assert time.monotonic() < deadline, "no progress to interrupt"
        time.sleep(0.003)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _joiner_meta(path: Path) -> dict:
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            return {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM joiner_meta")}
        finally:
            conn.close()
    except sqlite3.Error:
        return {}


def _transitions(path: Path) -> list[tuple]:
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT request_id, request_seq, next_seq, session_end, censored, return_time, label_ts, "
                        "feedback, arm, version FROM transitions ORDER BY request_id").fetchall()
    conn.close()
    return rows


TRAINER = TrainerConfig(  # small and fast; the treatment arm's traffic only (the default)
    batch_size=64, transitions_per_update=4.0, publish_every=10, learning_starts=256, buffer_capacity=500,
    read_chunk=256, explore_anneal=2_000, rlur=RLURConfig(hidden=(32, 32)),
)


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory) -> Path:
    """An event log of 64 users over 6 days (K = 3), with small joiner rounds and a small, fast trainer."""
    out = tmp_path_factory.mktemp("live")
    simulated_log(out, LiveConfig(users=64, days=6, seed=5, horizon_days=3, joiner_batch=60, trainer=TRAINER))
    return out


def test_joiner_killed_mid_run_loses_and_duplicates_nothing(log_dir, tmp_path):
    ref = tmp_path / "reference.sqlite"
    log = SqliteEventLog(log_dir / "events.sqlite", readonly=True)
    head = log.head()
    reference = LabelJoiner(log, ref, horizon_days=3, batch_events=60)
    reference.run(poll_seconds=0)
    reference.close()

    run = tmp_path / "run"
    run.mkdir()
    for name in ("events.sqlite", "config.json"):
        shutil.copy(log_dir / name, run / name)
    db = run / "joiner.sqlite"
    kills = 0
    for fraction in (0.2, 0.6):  # kill twice, at two different points
        proc = _role("joiner", run)
        _kill_when(proc, lambda f=fraction: _joiner_meta(db).get("offset", 0) > f * head)
        kills += 1
        assert not _joiner_meta(db).get("finished")
    _finish(_role("joiner", run))
    assert kills == 2 and _joiner_meta(db)["finished"] and _joiner_meta(db)["offset"] == head

    got, want = _transitions(db), _transitions(ref)
    assert len(got) == len(want) == log.count("requests")  # every request exactly once
    assert got == want  # the same transitions, labels and all
    log.close()


@pytest.fixture(scope="module")
def joined(log_dir, tmp_path_factory) -> Path:
    """``log_dir`` with every transition joined (what the trainer consumes)."""
    out = tmp_path_factory.mktemp("joined")
    for name in ("events.sqlite", "config.json"):
        shutil.copy(log_dir / name, out / name)
    shutil.copytree(log_dir / "policies", out / "policies")
    shutil.copy(log_dir / "current.pt", out / "current.pt")
    log = SqliteEventLog(out / "events.sqlite", readonly=True)
    j = LabelJoiner(log, out / "joiner.sqlite", horizon_days=3)
    j.run(poll_seconds=0)
    j.close()
    log.close()
    return out


def _state(out: Path) -> dict:
    return torch.load(out / "trainer" / "state.pt", map_location="cpu", weights_only=False)


def _actor(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)["policy"]["state_dict"]


def _published_versions(out: Path) -> int:
    try:
        return len(PolicyStore(out).versions()) - 1
    except OSError:
        return 0


def test_trainer_killed_mid_run_ends_where_an_uninterrupted_run_ends(joined, tmp_path):
    ref, run = tmp_path / "reference", tmp_path / "run"
    shutil.copytree(joined, ref)
    shutil.copytree(joined, run)
    torch.set_num_threads(1)
    log = SqliteEventLog(ref / "events.sqlite", readonly=True)
    reference = ContinuousTrainer(ref, log, ref / "joiner.sqlite", TRAINER, horizon_days=3)  # uninterrupted
    reference.run()
    reference.close()
    log.close()

    proc = _role("trainer", run)  # killed once its replay buffer has wrapped around
    _kill_when(proc, lambda: _published_versions(run) >= 12, timeout=90)
    killed_at = _state(run)["version"]  # v12's file may be written while the state still says 11
    assert 11 <= killed_at < _state(ref)["version"] and _state(run)["n_trainable"] > TRAINER.buffer_capacity
    _finish(_role("trainer", run))

    a, b = _state(run), _state(ref)
    for key in ("cursor", "n_trainable", "updates", "version", "credit", "label_ts"):
        assert a[key] == b[key], key
    assert [(p["version"], p["updates"], p["transitions"]) for p in a["published"]] == \
        [(p["version"], p["updates"], p["transitions"]) for p in b["published"]]
    conn = sqlite3.connect(run / "joiner.sqlite")
    total = conn.execute("SELECT COUNT(*) FROM transitions WHERE censored != 2 AND arm = 1").fetchone()[0]
    last = conn.execute("SELECT MAX(tseq) FROM transitions").fetchone()[0]
    conn.close()
    assert a["n_trainable"] == total and a["cursor"] == last  # every transition consumed, none twice
    for name, tensor in a["agent"]["actor"].items():  # bit for bit
        assert torch.equal(tensor, b["agent"]["actor"][name]), name
    for name, tensor in a["agent"]["critic_t"].items():
        assert torch.equal(tensor, b["agent"]["critic_t"][name]), name
    # Versions 0..N, each once, each identical to the uninterrupted run's; current.pt names the last.
    store, ref_store = PolicyStore(run), PolicyStore(ref)
    assert store.versions() == list(range(a["version"] + 1)) == ref_store.versions()
    for v in store.versions()[1:]:
        for name, tensor in _actor(store.path(v)).items():
            assert torch.equal(tensor, _actor(ref_store.path(v))[name]), (v, name)
    assert store.current_version() == a["version"]
