"""The rehearsal's serving interface: both arms, hot reload of a newly published version, in process and over
loopback HTTP (``rlur serve --watch``), with the version that served each request."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rlur.agents.networks import GaussianActor, gaussian_log_prob
from rlur.agents.policy import GaussianPolicy, TablePolicy
from rlur.live.server import CONTROL, TREATMENT, HttpServer, InProcessServer
from rlur.live.trainer import PolicyStore
from rlur.sim.env import OBS_DIM
from rlur.sim.world import GROUPS, SCORE_NAMES, World, WorldConfig
from rlur.training.checkpoint import atomic_torch_save, policy_checkpoint

K = len(SCORE_NAMES)


@pytest.fixture(scope="module")
def world() -> World:
    return World(WorldConfig())


def _publish(store: PolicyStore, world: World, version: int, policy) -> None:
    store.write(version, policy_checkpoint(policy, world, "test", f"v{version:05d}", live_version=version))
    store.point_current(version)


def _setup(tmp_path: Path, world: World) -> PolicyStore:
    store = PolicyStore(tmp_path)
    start = TablePolicy(torch.zeros(1, K), torch.full((1, K), 0.3))
    _publish(store, world, 0, start)
    atomic_torch_save(policy_checkpoint(start, world, "test", "v00000", live_version=0), tmp_path / "control.pt")
    return store


def _batch(n: int = 40):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, OBS_DIM, generator=g), torch.randint(0, len(GROUPS), (n,), generator=g)


def _check(server, arm: int, version: int, policy, timeout: float = 20.0) -> None:
    obs, group = _batch()
    deadline = time.monotonic() + timeout
    while True:
        s = server.serve(arm, obs, group, np.arange(len(obs)), np.arange(len(obs)))
        if (s.version == version).all() or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert (s.version == version).all()
    mu, std = policy.distribution(obs, group)
    torch.testing.assert_close(s.mu, mu, rtol=0, atol=1e-6)
    torch.testing.assert_close(s.sigma, std, rtol=0, atol=1e-6)
    torch.testing.assert_close(s.logp, gaussian_log_prob(s.action, s.mu, s.sigma), rtol=0, atol=1e-5)


def _new_policy() -> GaussianPolicy:
    torch.manual_seed(3)
    actor = GaussianActor(OBS_DIM, K, len(GROUPS))
    actor.set_std(0.1)
    return GaussianPolicy(actor)


def test_in_process_server_hot_reloads(tmp_path, world):
    store = _setup(tmp_path, world)
    server = InProcessServer(tmp_path / "control.pt", store.current, seed=0)
    start = TablePolicy(torch.zeros(1, K), torch.full((1, K), 0.3))
    _check(server, TREATMENT, 0, start)
    new = _new_policy()
    _publish(store, world, 1, new)
    _check(server, TREATMENT, 1, new, timeout=0)  # the next batch after the file changed
    _check(server, CONTROL, 0, start, timeout=0)  # the control arm stays on the frozen copy
    assert server.reloads == 1
    (tmp_path / "current.pt").write_bytes(b"half a file")  # a broken file is not served
    _check(server, TREATMENT, 1, new, timeout=0)
    assert server.reload_failures == 1


def test_http_server_hot_reloads(tmp_path, world):
    store = _setup(tmp_path, world)
    server = HttpServer(tmp_path / "control.pt", store.current, seed=0, log_dir=tmp_path / "logs")
    try:
        start = TablePolicy(torch.zeros(1, K), torch.full((1, K), 0.3))
        _check(server, TREATMENT, 0, start)
        new = _new_policy()
        time.sleep(0.05)  # a new mtime for the watcher
        _publish(store, world, 1, new)
        _check(server, TREATMENT, 1, new)  # the service's --watch picks it up within a poll or two
        _check(server, CONTROL, 0, start, timeout=0)
        assert server.version(TREATMENT) == 1
    finally:
        server.close()
