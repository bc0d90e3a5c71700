"""The diagnostics of docs/critic.md: benchmarks/critic_gradients.py, reward_snr.py, metric_weighting.py,
normalised_return.py, session_length.py, and the pooled comparison of benchmarks (pooled_comparison.py)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from rlur.agents.fixed import GROUP_RULE, group_rule_actions, weighting_action
from rlur.evaluation import stats
from rlur.sim.env import RetentionEnv
from rlur.sim.world import GROUPS, SCORE_NAMES, World, WorldConfig
from rlur.training.loop import TrainConfig, Trainer

SMALL = WorldConfig(n_videos=400, n_candidates=40)


def _load(name: str):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


critic_gradients = _load("critic_gradients")
reward_snr = _load("reward_snr")
metric_weighting = _load("metric_weighting")
normalised_return = _load("normalised_return")
habit_tradeoff = _load("habit_tradeoff")
pooled = _load("pooled_comparison")
seed_power = _load("seed_power")
rule_ceiling = _load("rule_ceiling")
session_length = _load("session_length")


def test_agreement_by_hand():
    g = torch.tensor([[1.0, -2.0, 0.5, 3.0], [0.0, 1.0, -1.0, 2.0]])
    same = critic_gradients.agreement(g, 2 * g)
    assert same["twin_cosine"] == pytest.approx(1.0)
    assert same["sign_agreement"] == pytest.approx(1.0)
    opposite = critic_gradients.agreement(g, -g)
    assert opposite["twin_cosine"] == pytest.approx(-1.0)
    assert opposite["sign_agreement"] == pytest.approx(0.0)
    # Orthogonal rows: cosine 0; the CI is the mean ± 1.96 standard errors.
    ortho = critic_gradients.agreement(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    assert ortho["twin_cosine"] == pytest.approx(0.0)
    lo, hi = ortho["twin_cosine_ci"]
    assert lo == pytest.approx(0.0) and hi == pytest.approx(0.0)


def test_action_gradients_of_a_known_critic():
    class Linear(torch.nn.Module):
        def forward(self, obs, action):
            return (action * torch.tensor([1.0, 2.0])).sum(1), (action * torch.tensor([-1.0, 0.0])).sum(1)

    g1, g2 = critic_gradients.action_gradients(Linear(), torch.zeros(3, 4), torch.zeros(3, 2))
    assert torch.equal(g1, torch.tensor([[1.0, 2.0]] * 3))
    assert torch.equal(g2, torch.tensor([[-1.0, 0.0]] * 3))


@pytest.mark.parametrize("algo", ["rlur", "rlur-naive"])
def test_analyse_a_tiny_run(tmp_path, one_thread, algo):
    cfg = TrainConfig(algo=algo, steps=40, n_users=64, batch_size=64, learning_starts=5,
                      world=SMALL, eval_every=10**6, eval_users=32,
                      eval_days=1, checkpoint_every=10**6)
    Trainer(cfg, tmp_path, progress=False).train()
    out = critic_gradients.analyse(tmp_path, n_states=256, seed=0)
    assert -1.0 <= out["Q_T"]["twin_cosine"] <= 1.0
    assert 0.0 <= out["Q_T"]["sign_agreement"] <= 1.0
    assert ("Q_I" in out) == (algo == "rlur")
    assert out["gamma"] == pytest.approx(0.95 if algo == "rlur" else cfg.rlur.gamma)


def test_normalised_return_of_a_tiny_run(tmp_path, one_thread):
    cfg = TrainConfig(algo="rlur", steps=40, n_users=64, batch_size=64, learning_starts=5, world=SMALL,
                      eval_every=10**6, eval_users=32, eval_days=1, checkpoint_every=10**6)
    trainer = Trainer(cfg, tmp_path, progress=False)
    trainer.train()
    out = normalised_return.analyse(tmp_path)
    agent = trainer.learner.agent
    assert out["t_beta"] == pytest.approx(agent.t_beta()) and out["alpha"] == agent.config.clip_alpha
    assert out["session_ends"] == sum(g["session_ends"] for g in out["groups"].values()) > 0
    assert sum(v for v in out["share"].values() if v is not None) == pytest.approx(1.0)
    for g in out["groups"].values():
        if g["session_ends"]:
            assert 0.0 <= g["clipped"] <= 1.0 and 0.0 <= g["mean_p_short"] <= 1.0
            assert all(r is None or 0.0 <= r <= agent.config.clip_alpha for r in g["reward"].values())
            # the bound is (1 − P(T ≤ T_β)) · T_β, per session end, averaged
            assert g["mean_bound"] == pytest.approx((1 - g["mean_p_short"]) * out["t_beta"], rel=1e-4)


def test_normalised_return_refuses_a_run_without_normalisation(tmp_path, one_thread):
    cfg = TrainConfig(algo="rlur-naive", steps=25, n_users=64, batch_size=64, learning_starts=5, world=SMALL,
                      eval_every=10**6, eval_users=32, eval_days=1, checkpoint_every=10**6)
    Trainer(cfg, tmp_path, progress=False).train()
    with pytest.raises(SystemExit, match="does not normalise"):
        normalised_return.analyse(tmp_path)


def test_tradeoff_weightings_and_bests_by_hand():
    assert torch.equal(habit_tradeoff.weighting("uniform"), torch.zeros(len(SCORE_NAMES)))
    a = habit_tradeoff.weighting("long_view+like")
    assert a[SCORE_NAMES.index("long_view")] == 1 and a[SCORE_NAMES.index("like")] == 1 and a.sum() == 2 - (len(a) - 2)
    with pytest.raises(SystemExit, match="unknown score"):
        habit_tradeoff.weighting("long_view+nope")
    # (first return, later returns) per group: "x" is best next time for every group, but for the
    # second group "y" is better later on, by 0.5 days.
    table = {"x": ([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 3.0, 4.0]), "y": ([1.5, 2.5, 3.5, 4.5], [1.2, 2.5, 3.1, 4.1])}
    best = habit_tradeoff.best_per_group(table)
    assert [best[g]["best_next_return"] for g in GROUPS] == ["x"] * 4
    assert [best[g]["best_later_returns"] for g in GROUPS] == ["x", "y", "x", "x"]
    assert best[GROUPS[1]]["cost_of_myopia"] == pytest.approx(0.5) and best[GROUPS[0]]["cost_of_myopia"] == 0


def test_tradeoff_returns_on_a_small_world(one_thread):
    first, late = habit_tradeoff.returns_by_group(World(SMALL), habit_tradeoff.fixed_policy("long_view"), users=128,
                                                  days=8, seed=0)
    assert len(first) == len(late) == len(GROUPS)
    seen = [x for x in first + late if not math.isnan(x)]
    assert len(seen) >= 4 and all(x >= 1.0 for x in seen)  # returns on a later day: at least one day


def test_snr_by_hand():
    a, b = torch.tensor([1.0, 3.0]), torch.tensor([4.0, 6.0])  # means 2 and 5, variances 2 and 2
    signal, noise, ratio = reward_snr.snr(a, b, credit=3.0)
    assert signal == pytest.approx(1.0) and noise == pytest.approx(2**0.5) and ratio == pytest.approx(2**-0.5)


def test_group_rule_table_and_rewards_on_a_small_world(one_thread):
    table = reward_snr.group_rule().act(torch.zeros(4, 1), torch.arange(4))
    assert table[GROUPS.index("high"), SCORE_NAMES.index("watch_time")] == 1.0
    assert table[GROUPS.index("middle")].tolist().count(1.0) == 2
    out = reward_snr.rewards(World(SMALL), reward_snr.group_rule(), users=64, steps=40, seed=0)
    assert out["I"].numel() == 64 * 40
    assert out["T"].numel() == out["depth"].numel() > 0
    assert bool((out["T"] > 0).all()) and bool((out["depth"] >= 1).all())


def test_a_directory_without_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match=r"no config\.json or resume\.pt"):
        critic_gradients.analyse(tmp_path, n_states=8, seed=0)


def test_the_benchmarks_group_rule_is_the_package_rule():
    expected = torch.stack([weighting_action(*GROUP_RULE[g]) for g in GROUPS])
    assert torch.equal(reward_snr.group_rule().mu, expected)
    assert torch.equal(group_rule_actions({**GROUP_RULE, "new": ("follow",)})[3], weighting_action("follow"))
    with pytest.raises(ValueError, match="no weighting for group"):
        group_rule_actions({"high": ("watch_time",)})


def test_metric_weighting_by_group_by_hand():
    num, den = torch.tensor([2.0, 4.0, 9.0, 0.0]), torch.tensor([1.0, 1.0, 3.0, 0.0])
    out = metric_weighting.per_group(num, den, torch.tensor([0, 0, 2, 3]))
    assert out["high"] == pytest.approx(3.0) and out["low"] == pytest.approx(3.0)
    assert math.isnan(out["middle"]) and math.isnan(out["new"])


def test_metric_weighting_on_a_tiny_benchmark(tmp_path, one_thread, capsys):
    for row, algo in (("rlur", "rlur"), ("cem", "cem")):
        for seed in (0, 1):
            cfg = TrainConfig(algo=algo, seed=seed, steps=30, n_users=64, batch_size=64, learning_starts=5,
                              world=SMALL, eval_every=10**6, eval_users=32, eval_days=1, checkpoint_every=10**6)
            Trainer(cfg, tmp_path / "runs" / row / f"seed{seed}", progress=False).train()
    out = tmp_path / "mw.json"
    result = metric_weighting.main([str(tmp_path), "--users", "64", "--days", "3", "--steps", "30", "--out", str(out)])
    assert set(result["per_seed"]) == {"uniform", "watch-time-only", "group-rule", "rlur", "cem"}
    assert len(result["per_seed"]["rlur"]) == 2 and set(result["paired_vs_rlur"]) == {"cem"}
    for runs in result["per_seed"].values():
        for r in runs:
            assert all(r[m]["mean"] > 0 for m in metric_weighting.METRICS)
    assert json.loads(out.read_text())["summary"]["cem"]["per_session"]["n"] == 2
    assert "| rlur | 2 |" in out.with_suffix(".md").read_text() and "| rlur | 2 |" in capsys.readouterr().out
    runs = [str(tmp_path / "runs" / row / "seed0") for row in ("rlur", "cem")]
    single = metric_weighting.main(["--runs", *runs, "--no-reference", "--users", "64", "--days", "3", "--steps", "30"])
    assert set(single["per_seed"]) == {"rlur/seed0", "cem/seed0"}
    assert single["per_seed"]["cem/seed0"][0]["calendar"] == result["per_seed"]["cem"][0]["calendar"]  # deterministic


def test_metric_weighting_needs_a_benchmark_directory(tmp_path):
    with pytest.raises(SystemExit, match="no runs/ directory"):
        metric_weighting.main([str(tmp_path)])


def test_rule_ceiling_share_of_the_room_by_hand():
    # CEM at 2.0, best rule at 1.6: a room of 0.4 days. Seeds at 1.8 and 1.7 find 0.5 and 0.75 of it.
    share = rule_ceiling.room_found([1.8, 1.7], cem=2.0, best=1.6)
    assert share["mean"] == pytest.approx(0.625) and share["n"] == 2
    assert share["ci_low"] < 0.625 < share["ci_high"]
    day1 = rule_ceiling.room_found([0.65, 0.70], cem=0.60, best=0.70, lower_is_better=False)
    assert day1["mean"] == pytest.approx(0.75)
    assert math.isnan(rule_ceiling.room_found([1.8], cem=2.0, best=2.1)["mean"])  # no room: no share
    rules = {"a": {"avg_return_day": 1.9, "day1_retention": 0.6}, "b": {"avg_return_day": 1.6, "day1_retention": 0.7}}
    assert rule_ceiling.best_rule(rules) == "b"
    result = {"summary": {"cem": {"avg_return_day": {"mean": 2.0}, "day1_retention": {"mean": 0.6}}},
              "per_seed": {"cem": [{"avg_return_day": 2.1, "day1_retention": 0.6},
                                   {"avg_return_day": 1.9, "day1_retention": 0.6}],
                           "rlur": [{"avg_return_day": 1.6, "day1_retention": 0.7},
                                    {"avg_return_day": 1.8, "day1_retention": 0.65}]}}
    out = rule_ceiling.share_of_room(result, rules)
    assert out["cem"]["avg_return_day"]["mean"] == pytest.approx(0.0)
    assert out["rlur"]["avg_return_day"]["mean"] == pytest.approx(0.75)
    assert out["rlur"]["day1_retention"]["mean"] == pytest.approx(0.75)
    del result["per_seed"]["cem"]
    with pytest.raises(SystemExit, match="no cem row"):
        rule_ceiling.share_of_room(result, rules)


def test_rule_ceiling_end_to_end(tmp_path, one_thread, capsys):
    out = tmp_path / "ceiling.json"
    report = rule_ceiling.main(["--users", "64", "--days", "2", "--out", str(out)])
    assert set(report["rules"]) == set(rule_ceiling.RULES)
    assert all(r["avg_return_day"] > 0 and 0 <= r["day1_retention"] <= 1 for r in report["rules"].values())
    assert json.loads(out.read_text())["best_rule"] == report["best_rule"]
    md = out.with_suffix(".md").read_text()
    assert "| fatigue_rule |" in md and "| fatigue_rule_middle_lv |" in md
    assert "| group_rule |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"results\.json not found"):
        rule_ceiling.main(["--benchmark", str(tmp_path)])
    with pytest.raises(SystemExit):
        rule_ceiling.main(["--users", "0"])
    assert "expected a positive integer" in capsys.readouterr().err


def _results(rows: dict[str, list[float]], metric: str = "avg_return_day") -> dict:
    return {"per_seed": {row: [{"seed": i, metric: v} for i, v in enumerate(vals)] for row, vals in rows.items()}}


def test_pooled_comparison_by_hand():
    # World 1: A − B = 1, 2, 3; world 2: A − B = 5, 7 (its third seed has no B). Pooled: 1, 2, 3, 5, 7.
    one = _results({"a": [11.0, 12.0, 13.0], "b": [10.0, 10.0, 10.0]})
    two = _results({"a": [5.0, 7.0, 9.0], "b": [0.0, 0.0]})
    out = pooled.pooled_comparison({"w1": one, "w2": two}, "a", "b", "avg_return_day")
    assert out["per_benchmark"]["w1"]["diff"] == pytest.approx(2.0)
    assert out["per_benchmark"]["w2"]["seeds"] == [0, 1]
    assert out["pooled"]["n"] == 5
    assert out["pooled"]["diff"] == pytest.approx(3.6)
    # t = mean / (sd / √n); the differences' sample variance is 23.2 / 4 = 5.8; p: t with 4 dof.
    assert out["pooled"]["t"] == pytest.approx(3.6 / math.sqrt(5.8 / 5))
    assert out["pooled"]["p_value"] == pytest.approx(0.0288, abs=5e-4)
    # Each row's mean over the pooled seeds: a over 11, 12, 13, 5, 7; b over 10, 10, 10, 0, 0.
    assert out["pooled_rows"]["a"]["mean"] == pytest.approx(9.6) and out["pooled_rows"]["a"]["n"] == 5
    assert out["pooled_rows"]["b"]["mean"] == pytest.approx(6.0)


def test_pooled_comparison_writes_json_and_markdown(tmp_path, capsys):
    for name, shift in (("w1", 0.1), ("w2", 0.3)):
        (tmp_path / name).mkdir()
        rows = {"rlur": [1.0, 1.1, 1.2], "cem": [1.0 + shift, 1.2 + shift, 1.1 + shift]}
        (tmp_path / name / "results.json").write_text(json.dumps(_results(rows)))
    code = pooled.main([str(tmp_path / "w1"), str(tmp_path / "w2"), "--rows", "rlur,cem",
                        "--out", str(tmp_path / "p.json"), "--markdown", str(tmp_path / "p.md")])
    assert code == 0
    (comparison,) = json.loads((tmp_path / "p.json").read_text())
    assert comparison["pooled"]["diff"] == pytest.approx(-0.2)
    assert comparison["pooled"]["n"] == 6
    table = (tmp_path / "p.md").read_text()
    assert "| rlur − cem | -0.200 [" in table and "(n = 6; 1.100 − 1.300)" in table
    assert "pooled" in capsys.readouterr().out


def test_pooled_comparison_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "results.json").write_text(json.dumps(_results({"rlur": [1.0, 2.0], "cem": [1.0, 2.0]})))
    assert pooled.main([str(tmp_path / "w"), "--rows", "rlur,td3"]) == 2
    assert "row 'td3' is not in these results" in capsys.readouterr().err
    assert pooled.main([str(tmp_path / "w"), "--rows", "rlur"]) == 2
    assert "two rows" in capsys.readouterr().err
    assert pooled.main([str(tmp_path / "w"), "--rows", "rlur,cem", "--metrics", "watch"]) == 2
    assert "metric 'watch'" in capsys.readouterr().err
    assert pooled.main([str(tmp_path / "nothing"), "--rows", "rlur,cem"]) == 2
    assert "no results.json" in capsys.readouterr().err
    disjoint = {"per_seed": {"rlur": [{"seed": 0, "avg_return_day": 1.0}], "cem": [{"seed": 1, "avg_return_day": 2.0}]}}
    with pytest.raises(ValueError, match="share no seed"):
        pooled.pooled_comparison({"w": disjoint}, "rlur", "cem", "avg_return_day")


def test_seed_power_by_hand():
    # World 1: A − B = 1, 2, 3 (sd 1); world 2: A − B = 11, 13 (sd √2). Within them, pooled:
    # sd² = (2 · 1 + 1 · 2) / 3. Their overall spread (about 5.4) is what a world adds, left out.
    one = _results({"a": [11.0, 12.0, 13.0], "b": [10.0, 10.0, 10.0]})
    two = _results({"a": [11.0, 13.0], "b": [0.0, 0.0]})
    out = seed_power.seed_power({"w1": one, "w2": two}, "a", "b", "avg_return_day", [1.0, 2.0], seeds=5, power=0.8)
    w1 = out["per_benchmark"]["w1"]
    assert w1["n"] == 3 and w1["mean_diff"] == pytest.approx(2.0) and w1["sd"]["sd"] == pytest.approx(1.0)
    assert out["pooled"]["sd"]["sd"] == pytest.approx(math.sqrt(4 / 3)) and out["pooled"]["n"] == 5
    assert out["pooled"]["mean_diff"] == pytest.approx(6.0)  # (1 + 2 + 3 + 11 + 13) / 5
    # Effect 1 at sd 1 (d_z = 1): five seeds find it with power 0.40; 10 seeds give 80 %.
    low_sd, sd, high_sd = w1["sd"]["ci_low"], 1.0, w1["sd"]["ci_high"]
    assert w1["effects"]["1"]["power"] == pytest.approx([stats.paired_power(1.0, s, 5) for s in (low_sd, sd, high_sd)])
    assert w1["effects"]["1"]["power"][1] == pytest.approx(0.401, abs=2e-3)
    assert w1["effects"]["1"]["seeds_needed"][1] == 10
    # A narrower spread gives more power and needs fewer seeds; a wider one the opposite.
    p_low, p_mid, p_high = w1["effects"]["2"]["power"]
    assert p_low > p_mid > p_high
    n_low, n_mid, n_high = w1["effects"]["2"]["seeds_needed"]
    assert n_low <= n_mid <= n_high


def test_seed_power_writes_json_and_markdown(tmp_path, capsys):
    for name, shift in (("w1", 0.0), ("w2", 0.5)):
        (tmp_path / name).mkdir()
        rows = {"rlur-naive-g0.9": [1.9 + shift, 2.0 + shift, 1.95 + shift], "rlur-naive-g0": [2.0, 2.05, 1.98]}
        (tmp_path / name / "results.json").write_text(json.dumps(_results(rows)))
    code = seed_power.main([str(tmp_path / "w1"), str(tmp_path / "w2"), "--rows", "rlur-naive-g0.9,rlur-naive-g0",
                            "--effect", "0.04", "--effect", "0.1", "--out", str(tmp_path / "p.json"),
                            "--markdown", str(tmp_path / "p.md")])
    assert code == 0
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["seeds"] == 5 and set(report["pooled"]["effects"]) == {"0.04", "0.1"}
    # The second world's shift of 0.5 moves its mean difference, not the spread within it.
    assert report["pooled"]["sd"]["sd"] == pytest.approx(report["per_benchmark"][str(tmp_path / "w1")]["sd"]["sd"])
    table = (tmp_path / "p.md").read_text().splitlines()
    header = next(line for line in table if line.startswith("| pairs"))
    rows = [line for line in table if line.startswith("| ") and not line.startswith("| pairs")]
    assert len(rows) == 3 and rows[-1].startswith("| **pooled** | 6 |")
    assert all(line.count("|") == header.count("|") for line in rows)  # no stray pipe breaks the table
    assert "pooled" in capsys.readouterr().out


def test_seed_power_leaves_out_the_pooled_line_for_one_benchmark_and_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "results.json").write_text(json.dumps(_results({"a": [1.0, 2.0, 2.5], "b": [1.1, 2.3, 2.4]})))
    assert seed_power.main([str(tmp_path / "w"), "--rows", "a,b", "--effect", "0.1"]) == 0
    assert "pooled" not in capsys.readouterr().out
    for argv, message in (
        (["--rows", "a,c", "--effect", "0.1"], "row 'c' is not in these results"),
        (["--rows", "a", "--effect", "0.1"], "two rows"),
        (["--rows", "a,b", "--effect", "0"], "--effect 0"),
        (["--rows", "a,b", "--effect", "0.1", "--seeds", "1"], "--seeds must be at least 2"),
        (["--rows", "a,b", "--effect", "0.1", "--power", "1.5"], "--power must lie"),
    ):
        assert seed_power.main([str(tmp_path / "w"), *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    # Two pairs give a spread whose upper bound is ~32 times the estimate: past the search, not an error.
    wide = seed_power.seed_power({"w": _results({"a": [0.0, 1.0], "b": [0.0, 0.0]})}, "a", "b", "avg_return_day",
                                 [0.02], 5, 0.8)
    needed = wide["per_benchmark"]["w"]["effects"]["0.02"]["seeds_needed"]
    assert needed[0] > 1000 and needed[2] is None
    assert "(>100000–" in seed_power.markdown_table(wide)
    one_seed = {"per_seed": {"a": [{"seed": 0, "avg_return_day": 1.0}], "b": [{"seed": 0, "avg_return_day": 2.0}]}}
    with pytest.raises(ValueError, match="share 1 seed"):
        seed_power.seed_power({"w": one_seed}, "a", "b", "avg_return_day", [0.1], 5, 0.8)


def test_the_length_probe_with_no_change_is_the_world(one_thread):
    """No shift and the world's follow gain: the same trajectories as the plain environment, bit for bit."""
    world = World(SMALL)
    policy = session_length.POLICIES["group"]()
    plain, probe = RetentionEnv(world, n_users=64, seed=3), session_length.LengthProbeEnv(world, 64, 3)
    for _ in range(30):
        a, b = (env.step(policy.act(env.observe(), env.group)) for env in (plain, probe))
        assert torch.equal(a.obs, b.obs) and torch.equal(a.return_day, b.return_day)
    assert torch.equal(plain.habit, probe.habit)


def test_the_length_probe_lengthens_sessions_and_removes_the_follow_habit(one_thread):
    world = World(SMALL)
    base = session_length.run(world, "uniform", users=256, days=3, seed=0, shift=0.0, follow_gain=0.25)
    longer = session_length.run(world, "uniform", users=256, days=3, seed=0, shift=2.0, follow_gain=0.25)
    assert longer["session_depth"] > base["session_depth"] + 1
    # A session end with 2 follows: the habit moves 15 % of the way to its target, plus the
    # follow gain per follow (0.25 in the world, 0 with follow_gain=0).
    for gain in (0.25, 0.0):
        env = session_length.LengthProbeEnv(world, 8, 0, follow_gain=gain)
        env.session_follows.fill_(2.0)
        before, n = env.habit.clone(), torch.arange(8)
        env._end_sessions(n, torch.zeros(8, dtype=torch.bool), torch.ones(8, dtype=torch.long), torch.ones(8),
                          torch.zeros(8))
        expected = 0.85 * before + 0.15 * world.group_habit[env.group] + 2 * gain
        assert torch.allclose(env.habit, expected.clamp(-3, 3))
    with pytest.raises(ValueError, match="follow_gain"):
        session_length.LengthProbeEnv(world, 8, 0, follow_gain=-1.0)


def test_the_length_probe_cli_rejects_bad_input(one_thread):
    with pytest.raises(SystemExit, match="unknown policy"):
        session_length.main(["--policies", "nope"])
    with pytest.raises(SystemExit, match="numbers"):
        session_length.main(["--shift", "x"])


def test_reward_alignment_script_writes_json_and_markdown(tmp_path, one_thread, capsys):
    alignment = _load("reward_alignment")
    rows = alignment.main(["--presets", "default,classic", "--world-seeds", "0", "--users", "128", "--steps", "4",
                           "--out", str(tmp_path)])
    assert [(r["preset"], r["world_seed"]) for r in rows] == [("default", 0), ("classic", 0)]
    saved = json.loads((tmp_path / "alignment.json").read_text())
    assert saved[0]["alignment"]["paper"].keys() == {"high", "middle", "low", "new", "all"}
    md = (tmp_path / "alignment.md").read_text()
    assert md.count("| default 0 |") == 2 and "| hand-weighted |" in md and md in capsys.readouterr().out
    with pytest.raises(SystemExit):
        alignment.main(["--presets", "nope"])
    with pytest.raises(SystemExit):
        alignment.main(["--world-seeds", "x"])
