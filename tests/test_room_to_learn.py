"""The default world leaves room to learn, and the room is state-dependent (issue: "Room to learn").

* the click-greedy weighting is clearly worse for retention than uniform weights;
* some fixed weighting is clearly better than uniform;
* the best weighting depends on the user's state: it differs across activity groups, so a
  hand-written rule with one weighting per group beats the best single fixed weighting found by a
  search; and it changes with fatigue, so a rule that switches a user's weighting after a few
  requests beats both of the weightings it switches between. In the default world middle-activity
  users finish long videos while fresh and drop them as they tire (``rlur.agents.fixed.binge_rule``).
  The same holds, for other groups and other reasons, in the ``tired`` preset (tired users regret
  long watching) and the ``weary`` preset (tired users skip long videos). In the ``classic`` preset
  (the default world before its middle users' taste for long videos) the best weighting differs by
  group only: even a rule that sees the true fatigue does not beat the group rule there (see
  docs/simulator.md). Without state dependence, a static search such as CEM would already be optimal
  and no RL method could beat it.

Comparisons run on the same held-out users with the same protocol; "clearly better" means the
paired bootstrap 95 % CI (resampling users) of the difference in average return day excludes 0.
"""

import numpy as np
import pytest
import torch

from rlur.agents.fixed import (
    BINGE_FRESH_RULE,
    GROUP_RULE,
    WEARY_TIRED_RULE,
    FatigueSwitchRule,
    binge_rule,
    candidate_weightings,
    group_rule_actions,
    weary_rule,
    weighting_action,
)
from rlur.agents.policy import TablePolicy
from rlur.evaluation.metrics import bootstrap_ratio_difference_ci
from rlur.evaluation.rollout import rollout
from rlur.sim.env import RetentionEnv
from rlur.sim.world import GROUPS, SCORE_NAMES, World, WorldConfig
from rlur.training.loop import evaluate_policy

USERS, DAYS = 1024, 7


# The hand-written rule (what satisfies each activity group) is rlur.agents.fixed.GROUP_RULE.

#: The ``tired`` world's rule: per group, as fresh (middle: long views) ...
FRESH_RULE = {**GROUP_RULE, "middle": ("long_view",)}
#: ... and once tired: heavy users then regret long watching (fatigue builds with every request), so
#: their best weighting late in a session favours liked and shared short videos (docs/simulator.md).
TIRED_RULE = {**FRESH_RULE, "high": ("like", "forward")}


def group_rule(rule: dict | None = None) -> TablePolicy:
    """The hand-written state rule: one weighting per activity group (``GROUP_RULE`` by default)."""
    return TablePolicy(group_rule_actions(rule))


@pytest.fixture(scope="module")
def world() -> World:
    torch.set_num_threads(1)
    return World(WorldConfig(world_seed=0))


def per_user(world: World, policy, seed: int, users: int = USERS) -> tuple[np.ndarray, np.ndarray]:
    """Per-user (sum of return gaps, number of gaps) over DAYS days for ``users`` users of ``seed``."""
    rec, _ = rollout(RetentionEnv(world, n_users=users, seed=seed), policy, days=DAYS)
    return rec.gap_days.numpy(), rec.gaps.numpy()


def return_day_by_group(world: World, policy, seed: int, users: int = USERS) -> torch.Tensor:
    """Average return day of each activity group (GROUPS order), ``users`` users of ``seed`` over DAYS."""
    env = RetentionEnv(world, n_users=users, seed=seed)
    rec, _ = rollout(env, policy, days=DAYS)
    return torch.stack([rec.gap_days[env.group == g].sum() / rec.gaps[env.group == g].sum().clamp(min=1)
                        for g in range(len(GROUPS))])


def clearly_better(a: tuple, b: tuple, n_boot: int = 400) -> tuple[bool, float, float]:
    """Paired bootstrap over users of ``ratio(a) − ratio(b)``; True when its 95 % CI is below 0."""
    _, lo, hi = bootstrap_ratio_difference_ci(a, b, n_boot=n_boot, seed=0)
    return hi < 0, lo, hi


def fixed(action: torch.Tensor) -> TablePolicy:
    return TablePolicy(action.unsqueeze(0))


def test_click_greedy_is_clearly_worse_than_uniform(world):
    uniform = per_user(world, fixed(torch.zeros(len(SCORE_NAMES))), seed=11)
    click = per_user(world, fixed(weighting_action("click")), seed=11)
    assert clearly_better(uniform, click)[0]
    assert click[0].sum() / click[1].sum() > uniform[0].sum() / uniform[1].sum() + 0.3


def test_a_fixed_weighting_is_clearly_better_than_uniform(world):
    uniform = per_user(world, fixed(torch.zeros(len(SCORE_NAMES))), seed=12)
    watch_like = per_user(world, fixed(weighting_action("watch_time", "like")), seed=12)
    assert clearly_better(watch_like, uniform)[0]


def best_fixed_weighting(world: World) -> torch.Tensor:
    """The fixed weighting a static search finds: uniform, every one-hot, every pair, random ones."""
    g = torch.Generator().manual_seed(0)
    k = len(SCORE_NAMES)
    candidates = list(candidate_weightings(k)) + list(torch.rand(12, k, generator=g) * 2 - 1)
    screen = [evaluate_policy(fixed(c), world, 256, DAYS, 21)["avg_return_day"]["mean"] for c in candidates]
    return candidates[int(np.argmin(screen))]


@pytest.fixture(scope="module")
def classic_world() -> World:
    return World(WorldConfig.preset("classic"))


def test_in_the_classic_world_the_group_rule_beats_the_best_fixed_weighting(classic_world):
    best = best_fixed_weighting(classic_world)
    best_fixed = per_user(classic_world, fixed(best), seed=22)  # fresh users: no selection bias
    rule = per_user(classic_world, group_rule(), seed=22)
    ok, lo, hi = clearly_better(rule, best_fixed)
    assert ok, (lo, hi, best.tolist())
    assert hi < -0.05  # by a margin, not only significantly


def test_in_the_classic_world_the_best_weighting_differs_across_groups(classic_world):
    watch = return_day_by_group(classic_world, fixed(weighting_action(*GROUP_RULE["high"])), seed=31)
    long_view = return_day_by_group(classic_world, fixed(weighting_action(*GROUP_RULE["low"])), seed=31)
    assert watch[GROUPS.index("high")] < long_view[GROUPS.index("high")]  # watch time wins for heavy users
    assert long_view[GROUPS.index("low")] < watch[GROUPS.index("low")]  # long views win for casual users
    assert long_view[GROUPS.index("new")] < watch[GROUPS.index("new")]


@pytest.fixture(scope="module")
def tired_world() -> World:
    return World(WorldConfig.preset("tired"))


@pytest.mark.parametrize("seed", [41, 42])
def test_the_best_weighting_changes_with_fatigue_in_the_tired_world(tired_world, seed):
    # Switching a heavy user's weighting after 3 requests beats keeping either weighting all session.
    switching = per_user(tired_world, FatigueSwitchRule(FRESH_RULE, TIRED_RULE, switch_after=3), seed=seed)
    for always in (FRESH_RULE, TIRED_RULE):
        ok, lo, hi = clearly_better(switching, per_user(tired_world, group_rule(always), seed=seed))
        assert ok and hi < -0.02, (always["high"], lo, hi)


@pytest.fixture(scope="module")
def weary_world() -> World:
    return World(WorldConfig.preset("weary"))


# The ``weary`` world's rule (rlur.agents.fixed.weary_rule): heavy users ranked by watch time for the
# first 3 requests of the day's first session, by long views (WEARY_TIRED_RULE) after that and
# through every same-day reopen.


@pytest.mark.parametrize("seed", [41, 42])
def test_the_best_weighting_changes_with_fatigue_in_the_weary_world(weary_world, seed):
    switching = per_user(weary_world, weary_rule(), seed=seed)
    for always in (GROUP_RULE, WEARY_TIRED_RULE):  # either weighting kept all the time
        ok, lo, hi = clearly_better(switching, per_user(weary_world, group_rule(always), seed=seed))
        assert ok and hi < -0.05, (always["high"], lo, hi)


def test_the_fatigue_rule_beats_the_best_fixed_weighting_in_the_weary_world(weary_world):
    best = best_fixed_weighting(weary_world)
    ok, lo, hi = clearly_better(per_user(weary_world, weary_rule(), seed=22),
                                per_user(weary_world, fixed(best), seed=22))
    assert ok and hi < -0.05, (lo, hi, best.tolist())


def test_in_the_weary_world_the_fresh_best_weighting_differs_across_groups(weary_world):
    # What pays for a fresh heavy user (watch time first) costs a casual user dearly.
    everyone_starts_on_watch_time = {g: ("watch_time",) for g in GROUPS}
    heavy_only = return_day_by_group(weary_world, weary_rule(), seed=43)
    everyone_rule = FatigueSwitchRule(everyone_starts_on_watch_time, WEARY_TIRED_RULE, 3, reopen_tired=True)
    everyone = return_day_by_group(weary_world, everyone_rule, seed=43)
    assert heavy_only[GROUPS.index("high")] == everyone[GROUPS.index("high")]  # the same rule for them
    for group in ("low", "new"):
        assert everyone[GROUPS.index(group)] > heavy_only[GROUPS.index(group)] + 1.0, group


# The default world's fatigue rule (rlur.agents.fixed.binge_rule, named after the preset the world
# was first built as): middle-activity users finish long videos while fresh and drop them as they
# tire, so they are ranked by watch time for the first 5 requests of the day's first session and by
# their group weighting (long views and likes) after that and through every same-day reopen. The
# other groups are as in the ``classic`` world. Middle users are a fifth of the users, so the effect
# on everyone's return day is small; 4,096 users resolve it.
BINGE_USERS = 4096


@pytest.mark.parametrize("seed", [41, 42])
def test_the_best_weighting_changes_with_fatigue(world, seed):
    switching = per_user(world, binge_rule(), seed=seed, users=BINGE_USERS)
    for always in (GROUP_RULE, BINGE_FRESH_RULE):  # either weighting kept all the time
        kept = per_user(world, group_rule(always), seed=seed, users=BINGE_USERS)
        ok, lo, hi = clearly_better(switching, kept)
        assert ok and hi < -0.01, (always["middle"], lo, hi)


def test_the_fatigue_switch_pays_middle_users(world):
    switching = return_day_by_group(world, binge_rule(), seed=43, users=BINGE_USERS)
    kept = return_day_by_group(world, group_rule(), seed=43, users=BINGE_USERS)
    middle = GROUPS.index("middle")
    assert switching[middle] < kept[middle] - 0.1  # about a sixth of a day for them
    for group in ("high", "low", "new"):  # the others are served alike (same weighting, same draws)
        assert switching[GROUPS.index(group)] == kept[GROUPS.index(group)], group


def test_the_rules_beat_the_best_fixed_weighting_and_groups_differ(world):
    best = best_fixed_weighting(world)
    best_fixed = per_user(world, fixed(best), seed=22)
    for rule in (group_rule(), binge_rule()):
        ok, lo, hi = clearly_better(per_user(world, rule, seed=22), best_fixed)
        assert ok and hi < -0.05, (lo, hi, best.tolist())
    watch = return_day_by_group(world, fixed(weighting_action("watch_time")), seed=31)
    long_view = return_day_by_group(world, fixed(weighting_action("long_view")), seed=31)
    assert watch[GROUPS.index("high")] < long_view[GROUPS.index("high")]
    for group in ("low", "new"):
        assert long_view[GROUPS.index(group)] < watch[GROUPS.index(group)], group
