"""Every learning agent beats random fusion weights on a tiny world within a small budget.

The tiny world is the default one with half of the catalogue click-bait: its best weighting is
known (keep the click weight at 0 and rank by long views / watch time, ``tests/test_room_to_learn.py``),
and random weights per request, which often favour predicted clicks, are far from it. A learner
that works must beat them within a small budget: 700 batched steps of 256 users.
"""

import numpy as np
import pytest
import torch

from rlur.agents.fixed import make_fixed_policy
from rlur.evaluation.rollout import rollout
from rlur.sim.env import RetentionEnv
from rlur.sim.world import World, WorldConfig
from rlur.training.loop import TrainConfig, Trainer

TINY = WorldConfig(clickbait_share=0.5)
EVAL_USERS, EVAL_DAYS, EVAL_SEED = 1024, 7, 99


def per_user(policy) -> tuple[np.ndarray, np.ndarray]:
    """Per-user (sum of return gaps, number of gaps) on the fixed evaluation users."""
    rec, _ = rollout(RetentionEnv(World(TINY), n_users=EVAL_USERS, seed=EVAL_SEED), policy, days=EVAL_DAYS)
    return rec.gap_days.numpy(), rec.gaps.numpy()


@pytest.fixture(scope="module")
def random_run() -> tuple[np.ndarray, np.ndarray]:
    torch.set_num_threads(1)
    return per_user(make_fixed_policy("random", seed=0))


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["rlur", "rlur-naive", "td3", "cem"])
def test_agent_beats_random_weights(tmp_path, random_run, algo):
    # CEM's search ends where a noisy fitness leaves it: at this budget each of its 16 members is
    # judged on 16 users, and single seeds end anywhere between 2.28 and 2.53 days against random
    # weights' 2.55 (seeds 0-3, measured). Its claim is made over 3 seeds; it trains in seconds.
    seeds = range(3) if algo == "cem" else range(1)
    learned = []
    for seed in seeds:
        cfg = TrainConfig(algo=algo, steps=700, n_users=256, batch_size=256, world=TINY, eval_every=10**6,
                          eval_users=64, eval_days=1, checkpoint_every=10**6, seed=seed)
        trainer = Trainer(cfg, tmp_path / f"{algo}{seed}", progress=False)
        trainer.train()
        learned.append(per_user(trainer.learner.policy()))
    # Paired bootstrap over the same evaluation users: the 95 % CI of the difference in average
    # return day (learned, mean over seeds − random) must lie below 0.
    w = np.random.default_rng(0).poisson(1.0, size=(400, EVAL_USERS))
    ratio = lambda gap_days, gaps: (w @ gap_days) / (w @ gaps)  # noqa: E731
    diff = np.mean([ratio(*run) for run in learned], axis=0) - ratio(*random_run)
    assert np.quantile(diff, 0.975) < 0, (np.quantile(diff, [0.025, 0.5, 0.975]), algo)
