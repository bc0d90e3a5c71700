"""The Ray-free parts of ``rlur.distributed``: blocks and seeds, exact reduction, flags and messages."""

import json
import sys
from pathlib import Path

import pytest
import torch

from rlur.cli import CliError, main
from rlur.distributed import RAY_MISSING, RayNotInstalledError, require_ray
from rlur.distributed.backend import parse_address
from rlur.distributed.blocks import block_seed, make_blocks, split_shards
from rlur.distributed.shards import merge_recorders, run_sharded_simulation, simulate_block
from rlur.sim.world import World, WorldConfig


def test_blocks_cover_the_population_with_distinct_seeds():
    blocks = make_blocks(2500, 1024, seed=3)
    assert [(b.start, b.size) for b in blocks] == [(0, 1024), (1024, 1024), (2048, 452)]
    assert len({b.seed for b in blocks}) == 3 and blocks == make_blocks(2500, 1024, seed=3)
    assert block_seed(3, 0) != block_seed(4, 0) and block_seed(3, 0, 1) != block_seed(3, 1, 0)
    assert {b.seed for b in make_blocks(2500, 1024, 3, 1)}.isdisjoint({b.seed for b in blocks})  # arm namespace


@pytest.mark.parametrize("n_blocks, shards", [(5, 2), (3, 3), (2, 4), (7, 1)])
def test_split_shards_is_contiguous_and_complete(n_blocks: int, shards: int):
    parts = split_shards(list(range(n_blocks)), shards)
    assert [b for p in parts for b in p] == list(range(n_blocks))
    assert len(parts) == min(n_blocks, shards) and all(parts)


def test_merge_is_exact_sums_not_averaged_averages():
    world = World(WorldConfig())
    blocks = make_blocks(300, 128, seed=1)
    parts = [simulate_block(world, "uniform", b, days=3)[0] for b in blocks]
    merged = merge_recorders(parts).summary(n_boot=0)
    gap_days = sum(float(p.gap_days.sum()) for p in parts)
    gaps = sum(float(p.gaps.sum()) for p in parts)
    assert merged["avg_return_day"]["mean"] == pytest.approx(gap_days / gaps, rel=1e-15)
    assert merged["requests"] == sum(int(p.requests.sum()) for p in parts)
    assert merged["users"] == 300
    hist = sum(p.gap_hist for p in parts)
    assert list(merged["return_day_hist"].values()) == pytest.approx((hist / hist.sum()).tolist(), rel=1e-15)


def test_local_shards_do_not_change_the_metrics():
    world = World(WorldConfig())
    runs = [run_sharded_simulation(world, "random", 700, 2, seed=5, shards=s, block_users=256)[0].summary()
            for s in (1, 3)]
    assert runs[0] == runs[1]


def test_simulate_shards_flag_is_independent_of_n(tmp_path: Path):
    outs = []
    for n in (1, 2):
        out = tmp_path / f"s{n}.json"
        assert main(["simulate", "--users", "600", "--days", "2", "--shards", str(n), "--block-users", "256",
                     "--out", str(out), "--no-progress"]) == 0
        outs.append(json.loads(out.read_text()))
    for key in ("avg_return_day", "day1_retention", "return_day_hist", "behaviour_rates", "requests", "dau"):
        assert outs[0][key] == outs[1][key], key
    assert outs[1]["sharding"] == {"backend": "local", "shards": 2, "blocks": 3, "block_users": 256}


@pytest.mark.parametrize("address", ["auto", "10.0.0.1:6379", "ray://head:10001", "[::1]:6379"])
def test_good_ray_addresses_parse(address: str):
    parse_address(address)


@pytest.mark.parametrize("address", ["nohost", "head:", "head:port", ":6379", "head:70000", "http://x/y:1"])
def test_bad_ray_addresses_are_one_line_errors(address: str):
    with pytest.raises(CliError, match="bad --ray-address"):
        parse_address(address)


def test_missing_ray_says_how_to_install(monkeypatch, capsys, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(RayNotInstalledError, match="pip install 'rlur\\[ray\\]'") as err:
        require_ray()
    assert isinstance(err.value, ImportError) and str(err.value) == RAY_MISSING
    for cmd in (["simulate", "--backend", "ray"], ["benchmark", "--quick", "--backend", "ray"],
                ["train", "--steps", "2", "--backend", "ray"], ["abtest", "--control", "uniform", "--aa",
                                                                "--backend", "ray"]):
        assert main([*cmd, "--out", str(tmp_path / "o")]) == 2
        err_text = capsys.readouterr().err
        assert err_text == f"rlur: error: {RAY_MISSING}\n", cmd


def test_ray_flags_need_the_ray_backend(capsys, tmp_path: Path):
    assert main(["simulate", "--ray-cpus", "2", "--out", str(tmp_path / "o.json")]) == 2
    assert "--ray-cpus need --backend ray" in capsys.readouterr().err
    assert main(["train", "--shards", "2", "--steps", "2", "--out", str(tmp_path / "t")]) == 2
    assert "--shards need --backend ray" in capsys.readouterr().err


def test_sharded_recorder_keeps_per_user_rows_in_block_order():
    world = World(WorldConfig())
    rec, timing = run_sharded_simulation(world, "uniform", 300, 2, seed=0, shards=2, block_users=128)
    assert rec.n_users == 300 and rec.requests.shape == (300,) and rec.opens.shape == (300, 2)
    first = simulate_block(world, "uniform", make_blocks(300, 128, 0)[0], 2)[0]
    assert torch.equal(rec.requests[:128], first.requests)
    assert timing["blocks"] == 3 and timing["requests"] >= int(rec.requests.sum())  # steps past the horizon too


def test_shards_serve_the_candidate_exploration_of_the_learner():
    # What Ray shards serve with (collect.serving_snapshot) explores like OffPolicyLearner.serve.
    from rlur.agents.fixed import candidate_weightings
    from rlur.agents.rlur import RLURConfig
    from rlur.distributed.blocks import Block
    from rlur.distributed.collect import serving_snapshot
    from rlur.sim.env import OBS_DIM, RetentionEnv
    from rlur.training.loop import TrainConfig, make_learner

    cfg = TrainConfig(algo="rlur", rlur=RLURConfig(candidate_explore=1.0), world=WorldConfig(n_videos=400))
    learner = make_learner(cfg, RetentionEnv(World(cfg.world), n_users=4, seed=0))
    server = serving_snapshot(learner)
    served = server.serve(torch.zeros(64, OBS_DIM), torch.zeros(64, dtype=torch.long), Block(0, 0, 64, 1),
                          torch.Generator().manual_seed(0))
    assert (served["action"][:, None] == candidate_weightings()[None]).all(-1).any(-1).all()
    plain = serving_snapshot(make_learner(TrainConfig(algo="rlur", world=WorldConfig(n_videos=400)),
                                          RetentionEnv(World(WorldConfig(n_videos=400)), n_users=4, seed=0)))
    assert plain.share == 0.0
