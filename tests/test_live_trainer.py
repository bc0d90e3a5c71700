"""The continuous trainer's pieces: warm start from the starting policy, publishing, the current pointer after a
crash between the state commit and its update, configuration checks."""

from __future__ import annotations

import pytest
import torch

from rlur.agents.networks import GaussianActor
from rlur.agents.policy import GaussianPolicy, TablePolicy
from rlur.live.events import SqliteEventLog
from rlur.live.joiner import LabelJoiner
from rlur.live.rehearsal import LiveConfig
from rlur.live.testing import simulated_log
from rlur.live.trainer import ContinuousTrainer, PolicyStore, TrainerConfig, make_agent, warm_start_actor
from rlur.sim.env import OBS_DIM
from rlur.sim.world import GROUPS, SCORE_NAMES

K = len(SCORE_NAMES)


def _states(n: int = 64):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, OBS_DIM, generator=g), torch.randint(0, len(GROUPS), (n,), generator=g)


@pytest.mark.parametrize("algo", ["rlur", "rlur-naive", "td3"])
def test_warm_start_serves_the_starting_table(algo):
    table = TablePolicy(torch.rand(len(GROUPS), K) * 1.6 - 0.8, torch.full((len(GROUPS), K), 0.3))
    agent = make_agent(TrainerConfig(algo=algo), OBS_DIM, K, len(GROUPS))
    warm_start_actor(agent, table)
    obs, group = _states()
    mu, _ = agent.actor(obs, group)
    want = table.mu[group] if agent.actor.n_groups > 1 else table.mu.mean(0).expand_as(mu)
    torch.testing.assert_close(mu, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(agent.actor_target(obs, group)[0], mu)


def test_warm_start_copies_a_gaussian_actor_and_rejects_another_shape():
    torch.manual_seed(0)
    src = GaussianPolicy(GaussianActor(OBS_DIM, K, len(GROUPS)))
    agent = make_agent(TrainerConfig(), OBS_DIM, K, len(GROUPS))
    warm_start_actor(agent, src)
    obs, group = _states()
    torch.testing.assert_close(agent.actor(obs, group)[0], src.distribution(obs, group)[0])
    with pytest.raises(ValueError, match="another shape"):
        warm_start_actor(make_agent(TrainerConfig(algo="td3"), OBS_DIM, K, len(GROUPS)), src)


def test_config_checks():
    with pytest.raises(ValueError, match="unknown algorithm"):
        TrainerConfig(algo="ppo")
    with pytest.raises(ValueError, match="train_arms"):
        TrainerConfig(train_arms="control")
    with pytest.raises(ValueError, match="read_chunk"):
        TrainerConfig(read_chunk=10, buffer_capacity=5)
    cfg = TrainerConfig(explore_anneal=100)
    assert cfg.explore_std(0) == 0.3 and cfg.explore_std(50) == pytest.approx(0.175)
    assert cfg.explore_std(10**6) == pytest.approx(0.05)
    assert TrainerConfig.from_dict(cfg.to_dict()) == cfg


def test_restart_brings_current_up_to_date(tmp_path):
    trainer_cfg = TrainerConfig(batch_size=32, transitions_per_update=8, learning_starts=64, publish_every=2,
                                read_chunk=128, buffer_capacity=1_000)
    simulated_log(tmp_path, LiveConfig(users=24, days=3, trainer=trainer_cfg))
    log = SqliteEventLog(tmp_path / "events.sqlite", readonly=True)
    joiner = LabelJoiner(log, tmp_path / "joiner.sqlite")
    joiner.run(poll_seconds=0)
    joiner.close()
    trainer = ContinuousTrainer(tmp_path, log, tmp_path / "joiner.sqlite", trainer_cfg, horizon_days=10)
    while trainer.version < 2:
        assert trainer.step(), "not enough transitions to publish two versions"
    trainer.close()
    store = PolicyStore(tmp_path)
    assert store.current_version() == trainer.version and store.versions()[:3] == [0, 1, 2]
    # A crash after the state commit but before current.pt moved: the restart moves it.
    store.point_current(trainer.version - 1)
    again = ContinuousTrainer(tmp_path, log, tmp_path / "joiner.sqlite", trainer_cfg, horizon_days=10)
    assert store.current_version() == again.version == trainer.version
    assert again.buffer.size == min(trainer.n_trainable, trainer_cfg.buffer_capacity)
    again.close()
    with pytest.raises(ValueError, match="another trainer configuration"):
        ContinuousTrainer(tmp_path, log, tmp_path / "joiner.sqlite", TrainerConfig(), horizon_days=10)
    log.close()
