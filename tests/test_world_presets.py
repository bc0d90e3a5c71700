"""World presets (``--world-preset``): the variants' mechanisms, and the flag end to end.

The calibration of every preset is checked in ``tests/test_calibration.py``, the fatigue-dependent
best weighting of the default world and of the ``tired`` and ``weary`` presets in
``tests/test_room_to_learn.py``.
"""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from rlur.agents.policy import TablePolicy
from rlur.evaluation.benchmark import BenchmarkConfig, run_benchmark
from rlur.evaluation.rollout import rollout
from rlur.sim.env import RetentionEnv
from rlur.sim.world import BEHAVIOURS, CLASSIC_LONG_TASTE, GROUPS, SCORE_NAMES, WORLD_PRESETS, World, WorldConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def one_hot(name: str) -> TablePolicy:
    a = -torch.ones(len(SCORE_NAMES))
    a[SCORE_NAMES.index(name)] = 1.0
    return TablePolicy(a.unsqueeze(0))


def test_the_default_preset_is_the_default_world():
    assert WorldConfig.preset("default") == WorldConfig()
    assert WorldConfig.preset("default", world_seed=3) == WorldConfig(world_seed=3)


@pytest.mark.parametrize("name", list(WORLD_PRESETS))
def test_every_preset_is_valid_and_round_trips_through_json(name: str):
    config = WorldConfig.preset(name, world_seed=2)
    config.validate()
    assert config.world_seed == 2
    assert WorldConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_a_config_saved_before_the_presets_loads_as_the_world_it_was_saved_in():
    old = WorldConfig.preset("classic", world_seed=4).to_dict()
    for key in ("fatigue_regret", "habit_from_time", "time_reference", "return_volatility", "user_volatility",
                "watch_value", "score_scale", "long_taste", "long_taste_fatigue"):
        del old[key]
    # Saved before the default world's middle users took to long videos: the classic world, not today's.
    assert WorldConfig.from_dict(old) == WorldConfig.preset("classic", world_seed=4)
    assert WorldConfig.from_dict(old) != WorldConfig(world_seed=4)


def test_every_preset_but_the_default_keeps_the_classic_tastes():
    assert WorldConfig.preset("binge") == WorldConfig()  # the default world's name while it was a variant
    for name in set(WORLD_PRESETS) - {"default", "binge"}:
        config = WorldConfig.preset(name)
        assert (config.long_taste, config.long_taste_fatigue) == tuple(CLASSIC_LONG_TASTE.values()), name
    middle = GROUPS.index("middle")
    assert WorldConfig().long_taste[middle] == 2.0 and CLASSIC_LONG_TASTE["long_taste"][middle] == 0.0


def test_unknown_preset_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown world preset 'nope'; choose from default"):
        WorldConfig.preset("nope")
    with pytest.raises(ValueError, match="unknown world preset"):
        run_benchmark(BenchmarkConfig.quick(world_preset="nope"), Path("unused"), progress=False)


@pytest.mark.parametrize("bad", [{"return_volatility": (1.0, 1.0)}, {"return_volatility": (1.0, -1.0, 1.0, 1.0)},
                                 {"user_volatility": -0.1}, {"fatigue_regret": -1.0}, {"fatigue_skip": -1.0},
                                 {"watch_value": (1.0, 0.3, -0.4)}, {"score_scale": "median"},
                                 {"long_taste": (0.9, 0.0, -0.9)}, {"long_taste_fatigue": (0.4, -0.1, 0.4, 0.4)}])
def test_bad_mechanism_settings_are_refused(bad: dict):
    with pytest.raises(ValueError):
        WorldConfig(**bad).validate()


def spread_per_unit_weight(world: World) -> torch.Tensor:
    """Each predicted score's standard deviation across one request's 200 candidates, divided by its
    ``score_ref`` (so per unit of fusion weight), averaged over 256 requests of fresh users."""
    users = world.sample_users(256, seed=9)
    g = torch.Generator().manual_seed(3)
    video = torch.stack([torch.randperm(world.config.n_videos, generator=g)[:200] for _ in range(256)])
    affinity = users["interest"].gather(1, world.video_topic[video])
    return (world.predicted_scores(video, affinity) / world.score_ref).std(dim=1).mean(dim=0)


def test_spread_scaling_gives_every_score_the_same_say_per_unit_of_weight():
    mean_scaled = spread_per_unit_weight(World(WorldConfig()))
    spread_scaled = spread_per_unit_weight(World(WorldConfig.preset("spread")))
    like, watch, click = (SCORE_NAMES.index(n) for n in ("like", "watch_time", "click"))
    # Divided by its typical value, a rare behaviour's score varies most across candidates: a unit of
    # weight on likes moves the ranking about 3 times as much as one on watch time (docs/simulator.md).
    assert mean_scaled[like] > 2.5 * mean_scaled[watch] and mean_scaled[like] > 5 * mean_scaled[click]
    assert spread_scaled.tolist() == pytest.approx([1.0] * len(SCORE_NAMES), abs=0.1)
    # Only the scale changes: the same world otherwise (users, videos, responses).
    a, b = World(WorldConfig()), World(WorldConfig(score_scale="spread"))
    assert torch.equal(a.video_base_logit, b.video_base_logit) and torch.equal(a.sat_coef, b.sat_coef)
    assert not torch.allclose(a.score_ref, b.score_ref)


def test_watch_value_is_the_first_column_of_the_response_value_table():
    default = World(WorldConfig(n_videos=500, n_candidates=50))
    longterm = World(WorldConfig.from_dict({**WorldConfig.preset("longterm").to_dict(), "n_videos": 500,
                                            "n_candidates": 50}))
    assert default.sat_coef[:, 0].tolist() == pytest.approx([1.0, 0.3, -0.4, -0.1])
    assert longterm.sat_coef[:, 0].tolist() == pytest.approx(list(WORLD_PRESETS["longterm"]["watch_value"]))
    assert torch.equal(default.sat_coef[:, 1:], longterm.sat_coef[:, 1:])  # nothing else changes


def test_return_noise_is_user_dependent_only_where_asked():
    plain = World(WorldConfig()).sample_users(4096, seed=1)
    assert torch.equal(plain["volatility"], torch.ones(4096))
    config = WorldConfig.preset("habit")
    users = World(config).sample_users(4096, seed=1)
    vol, group = users["volatility"], users["group"]
    for g, scale in enumerate(config.return_volatility):
        mine = vol[group == g]
        # log-normal around the group's scale: the median sits near it, and users differ
        assert mine.median().item() == pytest.approx(scale, rel=0.25), GROUPS[g]
        assert mine.log().std().item() == pytest.approx(config.user_volatility, rel=0.3), GROUPS[g]
    # the other user traits are drawn exactly as without the volatility (it is drawn last)
    for key in ("group", "interest", "propensity", "patience", "habit"):
        assert torch.equal(users[key], plain[key]), key


def _respond_in_both(variant: dict, n: int, action: torch.Tensor, base: dict | None = None):
    """The same ``n`` users, tired from 0 to 3, served the same slates in a small world (the default
    one, or with the overrides ``base``) without and with the mechanism ``variant``:
    ``(env without, shown, responses without, responses with)``."""
    base = dataclasses.replace(WorldConfig(n_videos=500, n_candidates=50), **(base or {}))
    envs = [RetentionEnv(World(c), n_users=n, seed=3) for c in (base, dataclasses.replace(base, **variant))]
    for env in envs:
        env.fatigue = torch.linspace(0.0, 3.0, n)
    shown, shown_too = (env.rank(action.expand(n, -1))[1] for env in envs)
    assert torch.equal(shown, shown_too)  # same users, same draws: the predictors do not see fatigue
    return envs[0], shown, envs[0]._respond(shown), envs[1]._respond(shown)


def test_fatigue_regret_lowers_the_value_of_watching_by_exactly_its_term():
    env, _, (r0, w0, sat0, _), (r1, w1, sat1, _) = _respond_in_both(
        {"fatigue_regret": 0.85}, 64, torch.zeros(len(SCORE_NAMES)))
    assert torch.equal(r0, r1) and torch.equal(w0, w1)  # the responses do not change, only their value
    expected = sat0 - 0.85 * env.fatigue * (w0 / 81.0).mean(1)
    torch.testing.assert_close(sat1, expected, rtol=1e-5, atol=1e-5)
    assert (sat1[1:] < sat0[1:]).all()


def test_tired_users_skip_long_videos_only_where_asked():
    watch_time = one_hot("watch_time").mu[0]
    env, shown, (r0, w0, _, _), (r1, w1, _, _) = _respond_in_both({"fatigue_skip": 6.0}, 256, watch_time)
    click, long_view = BEHAVIOURS.index("click"), BEHAVIOURS.index("long_view")
    dur_z = env.world.video_duration_z[shown]
    # Same uniforms, lower probabilities: skipping only ever turns a click (or long view) into none,
    for b in (click, long_view):
        assert (r1[..., b] <= r0[..., b]).all()
    # only for videos longer than average, shown to a tired user (user 0 is fresh: untouched),
    changed = r1[..., click] != r0[..., click]
    assert changed.any() and (dur_z[changed] > 0).all()
    assert torch.equal(r1[0], r0[0]) and torch.equal(w1[0], w0[0])
    # and the skipped seconds show in the watch time, which RLUR's heuristic reward counts.
    assert w1.sum() < 0.8 * w0.sum()


def test_middle_users_finish_long_videos_while_fresh_and_drop_them_tired_unlike_in_the_classic_world():
    taste = {key: getattr(WorldConfig(), key) for key in CLASSIC_LONG_TASTE}
    env, shown, (r0, w0, _, _), (r1, w1, _, _) = _respond_in_both(taste, 256, one_hot("watch_time").mu[0],
                                                                 base=CLASSIC_LONG_TASTE)
    middle = env.group == GROUPS.index("middle")
    assert middle.sum() > 20
    assert torch.equal(r1[~middle], r0[~middle]) and torch.equal(w1[~middle], w0[~middle])  # only they change
    long_view, long_video = BEHAVIOURS.index("long_view"), env.world.video_duration_z[shown] > 0
    # Their taste for long videos, 2 − 2 · fatigue, falls below the classic world's −0.4 · fatigue at 1.25.
    fresh = (middle & (env.fatigue < 1.25))[:, None] & long_video
    tired = (middle & (env.fatigue > 1.25))[:, None] & long_video
    lv0, lv1 = r0[..., long_view], r1[..., long_view]
    assert (lv1[fresh] >= lv0[fresh]).all() and lv1[fresh].sum() > lv0[fresh].sum()  # same uniforms
    assert (lv1[tired] <= lv0[tired]).all() and lv1[tired].sum() < lv0[tired].sum()
    # and the watch seconds follow, which RLUR's heuristic reward counts
    assert w1[fresh].sum() > w0[fresh].sum() and w1[tired].sum() < w0[tired].sum()


def _mean_habit(config: WorldConfig, policy: TablePolicy) -> float:
    env = RetentionEnv(World(config), n_users=1024, seed=5)
    rollout(env, policy, days=5)
    return env.habit.mean().item()


def test_time_spent_builds_habit_in_the_habit_preset():
    habit = WorldConfig.preset("habit")
    without = dataclasses.replace(habit, habit_from_time=0.0)
    gap = _mean_habit(habit, one_hot("watch_time")) - _mean_habit(habit, one_hot("long_view"))
    gap_without = _mean_habit(without, one_hot("watch_time")) - _mean_habit(without, one_hot("long_view"))
    assert gap > 0.3  # watch-time-heavy ranking spends more time, and time spent builds habit
    assert gap > gap_without + 0.25


def test_the_flag_reaches_simulate_and_train(tmp_path: Path, rlur_cli):
    out = tmp_path / "sim.json"
    proc = rlur_cli("simulate", "--users", "64", "--days", "2", "--world-preset", "tired", "--out", str(out),
                    "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert WorldConfig.from_dict(json.loads(out.read_text())["world_config"]) == WorldConfig.preset("tired")

    run = tmp_path / "run"
    proc = rlur_cli("train", "--algo", "uniform", "--steps", "4", "--users", "16", "--eval-users", "16",
                    "--eval-days", "1", "--world-preset", "habit", "--world-seed", "1", "--out", str(run),
                    "--no-progress")
    assert proc.returncode == 0, proc.stderr
    world = WorldConfig.from_dict(json.loads((run / "config.json").read_text())["world"])
    assert world == WorldConfig.preset("habit", world_seed=1)


def test_an_unknown_preset_is_a_one_line_error(rlur_cli):
    proc = rlur_cli("simulate", "--users", "8", "--days", "1", "--world-preset", "nope")
    assert proc.returncode != 0 and "invalid choice" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_ab_test_notes_a_policy_trained_in_another_variant():
    from rlur.abtest.experiment import _other_variant

    default = WorldConfig(world_seed=1)
    assert _other_variant(WorldConfig.preset("tired").to_dict(), default)
    saved_in_classic = {k: v for k, v in WorldConfig.preset("classic").to_dict().items() if "long_taste" not in k}
    assert _other_variant(saved_in_classic, default)  # trained before the default world changed
    assert not _other_variant(WorldConfig.preset("binge", world_seed=1).to_dict(), default)
    assert not _other_variant(WorldConfig(world_seed=0).to_dict(), default)  # the seed is noted on its own
    assert not _other_variant({"kind": "learned"}, default)  # a learned world's config: not comparable
