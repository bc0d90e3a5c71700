"""``--backend ray`` on a local 2-CPU Ray cluster: same numbers as local, shard-count independence, faults.

One cluster for the module (``ray.init(num_cpus=2, include_dashboard=False)``); the CLI calls made
in this process join it. Budgets are tiny: these tests check plumbing and exactness, not learning.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from rlur.cli import main  # noqa: E402
from rlur.distributed.backend import WORKER_ENV  # noqa: E402
from rlur.distributed.shards import run_sharded_simulation  # noqa: E402
from rlur.evaluation.benchmark import BenchmarkConfig, run_benchmark  # noqa: E402
from rlur.sim.world import World, WorldConfig  # noqa: E402

#: Keys of `rlur simulate`'s JSON that are measurements of the machine, not of the simulated world.
TIMING_KEYS = {"requests_per_s", "sharding"}


@pytest.fixture(scope="module", autouse=True)
def cluster():
    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": dict(WORKER_ENV)})
    yield
    ray.shutdown()


def _bench_cfg(**kw) -> BenchmarkConfig:
    return BenchmarkConfig.quick(seeds=2, rows=("rlur",), steps=10, **kw)


@pytest.fixture(scope="module")
def local_benchmark(tmp_path_factory) -> dict:
    return run_benchmark(_bench_cfg(workers=1), tmp_path_factory.mktemp("local"), progress=False)


def test_benchmark_ray_gives_the_local_per_seed_numbers(tmp_path: Path, local_benchmark: dict, capsys):
    out = tmp_path / "ray"
    assert main(["benchmark", "--quick", "--algos", "rlur", "--seeds", "2", "--steps", "10", "--backend", "ray",
                 "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["backend"] == "ray" and result["workers"] == 2
    assert result["per_seed"] == json.loads(json.dumps(local_benchmark["per_seed"]))
    assert result["per_seed"]["rlur"][0] != result["per_seed"]["rlur"][1]  # two different seeds really ran
    assert "rlur" in capsys.readouterr().out


def test_benchmark_survives_a_killed_worker(tmp_path: Path, local_benchmark: dict):
    marker = tmp_path / "crashed"
    result = run_benchmark(_bench_cfg(), tmp_path / "ray", progress=False, backend="ray", crash_marker=str(marker))
    assert marker.exists()  # one task's worker process did die (os._exit) and the task was retried
    assert result["per_seed"] == local_benchmark["per_seed"]


def _simulate(tmp_path: Path, name: str, *args: str) -> dict:
    out = tmp_path / f"{name}.json"
    assert main(["simulate", "--policy", "random", "--users", "1200", "--days", "3", "--seed", "4",
                 "--block-users", "512", "--out", str(out), "--no-progress", *args]) == 0
    return {k: v for k, v in json.loads(out.read_text()).items() if k not in TIMING_KEYS}


def test_simulate_one_and_two_shards_give_identical_metrics(tmp_path: Path):
    one = _simulate(tmp_path, "one", "--backend", "ray", "--shards", "1")
    two = _simulate(tmp_path, "two", "--backend", "ray", "--shards", "2")
    local = _simulate(tmp_path, "local", "--shards", "3")
    assert one == two == local  # every metric, CIs included
    assert one["users"] == 1200 and one["requests"] > 0


def test_simulation_survives_a_killed_shard_actor(tmp_path: Path):
    world = World(WorldConfig())
    kw = dict(world=world, policy="uniform", users=1200, days=2, seed=1, block_users=512)
    expected = run_sharded_simulation(shards=1, backend="local", **kw)[0].summary()
    marker = tmp_path / "crashed"
    got, timing = run_sharded_simulation(shards=2, backend="ray", crash_marker=marker, **kw)
    assert marker.exists()  # a shard actor's process died mid-block; Ray restarted it and reran the block
    assert got.summary() == expected and timing["shards"] == 2


def _train_args(tmp_path: Path, out: Path, *extra: str, backend: str = "ray") -> list[str]:
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"learning_starts": 2, "batch_size": 32}))
    ray_flags = ["--backend", "ray", "--block-users", "32"] if backend == "ray" else []
    return ["train", "--algo", "rlur", "--steps", "8", "--users", "96", "--seed", "2", "--config", str(config),
            "--eval-every", "4", "--checkpoint-every", "4", "--eval-users", "64", "--eval-days", "2",
            "--out", str(out), "--no-progress", *ray_flags, *extra]


def _train(tmp_path: Path, name: str, *extra: str) -> Path:
    out = tmp_path / name
    assert main(_train_args(tmp_path, out, *extra)) == 0
    return out


def _policy(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", weights_only=False)["policy"]["state_dict"]


def test_train_ray_is_deterministic_and_independent_of_the_shard_count(tmp_path: Path):
    a = _train(tmp_path, "a", "--shards", "2")
    b = _train(tmp_path, "b", "--shards", "1", "--sync-every", "1")
    ea, eb = (json.loads((p / "eval.json").read_text()) for p in (a, b))
    assert ea["avg_return_day"] == eb["avg_return_day"] and ea["learning_curve"] == eb["learning_curve"]
    pa, pb = _policy(a), _policy(b)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    state = torch.load(a / "resume.pt", weights_only=False)
    assert state["collector"] == {"backend": "ray", "block_users": 32, "sync_every": 1} and len(state["env"]) == 3
    assert state["learner"]["buffer"]["size"] > 0  # transitions from the shards reached the learner's buffer
    assert state["learner"]["agent"] != {}


def test_train_ray_resume_continues_bit_for_bit(tmp_path: Path, monkeypatch):
    from rlur.distributed import collect

    full = _train(tmp_path, "full")
    real = collect.ShardedCollector.collect

    def interrupted(self, learner, limit):  # the run dies right after its step-4 checkpoint
        if learner.step >= 4:
            raise KeyboardInterrupt
        return real(self, learner, limit)

    part = tmp_path / "part"
    monkeypatch.setattr(collect.ShardedCollector, "collect", interrupted)
    assert main(_train_args(tmp_path, part)) == 130
    monkeypatch.setattr(collect.ShardedCollector, "collect", real)
    assert (part / "resume.pt").exists() and not (part / "eval.json").exists()
    assert main(_train_args(tmp_path, part, "--resume")) == 0
    pf, pp = _policy(full), _policy(part)
    assert all(torch.equal(pf[k], pp[k]) for k in pf)
    ef, ep = (json.loads((p / "eval.json").read_text()) for p in (full, part))
    assert ef["learning_curve"] == ep["learning_curve"] and ef["avg_return_day"] == ep["avg_return_day"]
    # The local backend refuses to resume a Ray run (its environments are the shards' blocks).
    assert main(_train_args(tmp_path, part, "--resume", backend="local")) == 2


def _abtest(tmp_path: Path, name: str, *args: str) -> dict:
    out = tmp_path / name
    assert main(["abtest", "--control", "uniform", "--treatment", "click", "--users", "1000", "--days", "8",
                 "--block-users", "400", "--out", str(out), "--no-progress", *args]) == 0
    report = json.loads((out / "report.json").read_text())
    return {k: v for k, v in report.items() if k != "timing"}


def test_abtest_arms_as_actors_reduce_exactly(tmp_path: Path):
    one = _abtest(tmp_path, "one", "--backend", "ray", "--shards", "1")
    four = _abtest(tmp_path, "four", "--backend", "ray", "--shards", "4")
    local = _abtest(tmp_path, "local", "--shards", "1")
    assert one == four == local  # lifts, CIs, daily series, totals: all identical
    assert one["arms"]["control"]["blocks"] == 2 and one["arms"]["treatment"]["blocks"] == 2
    assert one["lifts"]["watch_time"]["estimate"] < 0  # click-greedy loses watch time, as in the local test
    assert len(one["daily"]["control"]["dau"]) == 8


def test_bad_ray_address_is_a_one_line_error(tmp_path: Path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    for address, message in (("127.0.0.1:1", "cannot reach the Ray cluster at 127.0.0.1:1"),
                             ("no-port", "bad --ray-address 'no-port'")):
        proc = subprocess.run([sys.executable, "-m", "rlur.cli", "simulate", "--backend", "ray", "--ray-address",
                               address, "--out", str(tmp_path / "o.json")], capture_output=True, text=True,
                              env=env, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
