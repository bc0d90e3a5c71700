"""Under the neutral (uniform) policy the default world, and every world preset (each calibrated on
its own), reproduces KuaiRand-Pure's statistics."""

import pytest
import torch

from rlur.agents.fixed import make_fixed_policy
from rlur.evaluation.rollout import rollout
from rlur.sim.env import RetentionEnv
from rlur.sim.world import KUAIRAND_BEHAVIOUR_RATE, KUAIRAND_RETURN_DAY_SHARE, WORLD_PRESETS, World, WorldConfig


@pytest.fixture(scope="module", params=[name for name in WORLD_PRESETS if name != "binge"])  # binge = default
def uniform_run(request) -> dict:
    torch.set_num_threads(1)
    env = RetentionEnv(World(WorldConfig.preset(request.param, world_seed=0)), n_users=4096, seed=123)
    rec, _ = rollout(env, make_fixed_policy("uniform"), days=10)
    return rec.summary(n_boot=100)


def test_return_day_matches_kuairand(uniform_run):
    assert uniform_run["avg_return_day"]["mean"] == pytest.approx(2.0, abs=0.2)
    assert uniform_run["day1_retention"]["mean"] == pytest.approx(0.617, abs=0.04)
    hist = list(uniform_run["return_day_hist"].values())
    tv = 0.5 * sum(abs(a - b) for a, b in zip(hist, KUAIRAND_RETURN_DAY_SHARE, strict=True))
    assert tv < 0.1


def test_return_day_distribution_is_not_geometric(uniform_run):
    h = list(uniform_run["return_day_hist"].values())
    # Successive-day ratios rise (KuaiRand: 0.27, 0.48, 0.60, …); a geometric law has them constant.
    assert h[1] / h[0] < 0.4
    assert h[3] / h[2] > h[1] / h[0] + 0.15


def test_behaviour_rates_match_kuairand(uniform_run):
    rates = uniform_run["behaviour_rates"]
    assert rates["click"] == pytest.approx(KUAIRAND_BEHAVIOUR_RATE["click"], abs=0.03)
    assert rates["long_view"] == pytest.approx(KUAIRAND_BEHAVIOUR_RATE["long_view"], abs=0.03)
    assert rates["like"] == pytest.approx(KUAIRAND_BEHAVIOUR_RATE["like"], rel=0.25)
    for rare in ("follow", "comment", "forward", "hate"):
        assert 0 < rates[rare] < 0.005, rare
        assert rates[rare] == pytest.approx(KUAIRAND_BEHAVIOUR_RATE[rare], rel=0.5), rare
    assert rates["long_view"] <= rates["click"]  # long views are clicks


def test_sessions_vary_and_the_app_is_reopened(uniform_run):
    assert 5 < uniform_run["session_depth"]["mean"] < 12
    assert uniform_run["app_opens_per_user_day"]["mean"] > uniform_run["dau"]["mean"]
