"""The statistics helpers on inputs whose answers are known."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats as st

from rlur.evaluation.metrics import MetricsRecorder, bootstrap_ratio_ci, bootstrap_ratio_difference_ci
from rlur.evaluation.stats import (
    holm_adjust,
    mean_ci,
    paired_power,
    paired_test,
    pooled_sd_ci,
    seeds_for_power,
    slope,
)


def test_mean_ci_by_hand():
    # mean 2, sd 1 (values 1, 2, 3), n = 3: half-width = t_{0.975, 2} · 1 / √3 = 4.3027 / 1.7321
    ci = mean_ci([1.0, 2.0, 3.0])
    assert ci["mean"] == pytest.approx(2.0)
    half = 4.302652729911275 / math.sqrt(3)
    assert ci["ci_low"] == pytest.approx(2.0 - half)
    assert ci["ci_high"] == pytest.approx(2.0 + half)


def test_mean_ci_single_value_has_no_interval():
    ci = mean_ci([5.0])
    assert ci["mean"] == 5.0 and math.isnan(ci["ci_low"])


def test_paired_test_matches_scipy():
    a = [1.9, 2.0, 1.85, 1.95, 1.88]
    b = [2.05, 2.02, 2.01, 2.1, 2.0]
    res = paired_test(a, b)
    ref = st.ttest_rel(a, b)
    assert res["p_value"] == pytest.approx(ref.pvalue)
    assert res["t"] == pytest.approx(ref.statistic)
    assert res["diff"] == pytest.approx(np.mean(np.subtract(a, b)))
    assert res["ci_high"] < 0  # a is clearly lower


def test_holm_adjust_on_known_p_values():
    # Sorted 0.01, 0.03, 0.04 → 3·0.01, max(0.03, 2·0.03), max(0.06, 1·0.04), back in the given order.
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm_adjust([0.02, 0.5]) == pytest.approx([0.04, 0.5])
    assert holm_adjust([0.6, 0.7]) == [1.0, 1.0]  # capped at 1, never below an earlier step
    assert holm_adjust([0.2]) == [0.2]  # a family of one is not adjusted
    adjusted = holm_adjust([math.nan, 0.03])  # a test that could not be made does not count
    assert math.isnan(adjusted[0]) and adjusted[1] == pytest.approx(0.03)
    assert holm_adjust([]) == []


def test_slope_by_hand():
    assert slope([0, 1, 2], [1.0, 3.0, 5.0]) == pytest.approx(2.0)
    assert slope([-150, 0, 150], [1.907, 1.855, 1.773]) == pytest.approx((1.773 - 1.907) / 300)
    with pytest.raises(ValueError, match="two distinct x"):
        slope([1, 1], [0.0, 1.0])
    with pytest.raises(ValueError, match="matched"):
        slope([0, 1], [0.0])


def test_paired_test_constant_difference():
    assert paired_test([1.0, 2.0], [0.5, 1.5])["p_value"] == 0.0
    assert paired_test([1.0, 2.0], [1.0, 2.0])["p_value"] == 1.0


def test_paired_test_false_positive_rate_is_nominal():
    rng = np.random.default_rng(0)
    hits = sum(paired_test(rng.normal(size=5), rng.normal(size=5))["p_value"] < 0.05 for _ in range(2000))
    assert abs(hits / 2000 - 0.05) < 3 * math.sqrt(0.05 * 0.95 / 2000)


def test_seeds_for_power_matches_the_textbook_paired_design():
    # G*Power, matched pairs, d_z = 0.5, two-sided α = 0.05, power 0.8: 34 pairs (power 0.808).
    assert seeds_for_power(0.5, 1.0) == 34
    assert paired_power(0.5, 1.0, 34) == pytest.approx(0.8078, abs=1e-3)
    assert paired_power(0.5, 1.0, 33) < 0.8
    # Only the ratio effect / sd matters, and the sign of the effect does not.
    assert paired_power(-0.04, 0.08, 12) == pytest.approx(paired_power(0.5, 1.0, 12))


def test_paired_power_is_the_rate_at_which_paired_test_finds_the_effect():
    rng = np.random.default_rng(3)
    effect, sd, n, trials = -0.04, 0.05, 5, 4000
    found = 0
    for _ in range(trials):
        d = rng.normal(effect, sd, size=n)
        r = paired_test(d, np.zeros(n))
        found += r["p_value"] < 0.05 and r["diff"] < 0
    expected = paired_power(effect, sd, n)
    assert 0.2 < expected < 0.5  # a case where the test misses often
    assert abs(found / trials - expected) < 4 * math.sqrt(expected * (1 - expected) / trials)


def test_paired_power_grows_with_seeds_and_starts_at_half_alpha():
    powers = [paired_power(0.04, 0.07, n) for n in range(2, 40)]
    assert all(b > a for a, b in itertools.pairwise(powers))
    # A vanishing effect is found (in one direction) at half the test's size.
    assert paired_power(1e-12, 1.0, 8) == pytest.approx(0.025, abs=1e-6)


def test_power_helpers_reject_what_no_test_can_do():
    with pytest.raises(ValueError, match="at least 2 seeds"):
        paired_power(0.1, 1.0, 1)
    with pytest.raises(ValueError, match="positive"):
        paired_power(0.1, 0.0, 5)
    with pytest.raises(ValueError, match="difference of 0"):
        seeds_for_power(0.0, 1.0)
    with pytest.raises(ValueError, match="power must lie"):
        seeds_for_power(0.1, 1.0, power=1.0)
    with pytest.raises(ValueError, match="more than 100 seeds"):
        seeds_for_power(0.01, 1.0, max_n=100)


def test_pooled_sd_ci_by_hand_for_one_group_and_within_groups():
    # 1, 2, 3: sd 1 with 2 dof; interval sd · √(2 / χ²_{2, 0.975}) .. sd · √(2 / χ²_{2, 0.025}).
    r = pooled_sd_ci([[1.0, 2.0, 3.0]])
    assert r["sd"] == pytest.approx(1.0) and r["df"] == 2 and r["n"] == 3
    assert r["ci_low"] == pytest.approx(math.sqrt(2 / st.chi2.ppf(0.975, 2)))
    assert r["ci_high"] == pytest.approx(math.sqrt(2 / st.chi2.ppf(0.025, 2)))
    # Two groups far apart, each with sd 1: pooled within them the spread is 1, not their overall spread.
    pooled = pooled_sd_ci([[1.0, 2.0, 3.0], [101.0, 102.0, 103.0]])
    assert pooled["sd"] == pytest.approx(1.0) and pooled["df"] == 4 and pooled["n"] == 6
    # Unequal sizes weigh each group by its degrees of freedom: (2 · 1 + 1 · 8) / 3.
    assert pooled_sd_ci([[1.0, 2.0, 3.0], [0.0, 4.0]])["sd"] == pytest.approx(math.sqrt(10 / 3))
    for groups in ([[1.0, 2.0], [3.0]], []):
        with pytest.raises(ValueError, match="at least 2 values"):
            pooled_sd_ci(groups)


def test_bootstrap_ratio_ci_covers_the_truth():
    rng = np.random.default_rng(1)
    den = rng.integers(1, 20, size=500).astype(float)
    num = rng.binomial(den.astype(int), 0.3).astype(float)
    est, lo, hi = bootstrap_ratio_ci(num, den, n_boot=400, seed=0)
    assert est == pytest.approx(num.sum() / den.sum())
    assert lo < 0.3 < hi
    assert hi - lo < 0.05


def test_paired_ratio_difference_by_hand():
    a = (np.array([2.0, 4.0]), np.array([1.0, 1.0]))  # ratio 3
    b = (np.array([1.0, 1.0]), np.array([1.0, 1.0]))  # ratio 1
    est, lo, hi = bootstrap_ratio_difference_ci(a, b, n_boot=50)
    assert est == pytest.approx(2.0) and lo <= 2.0 <= hi
    assert bootstrap_ratio_difference_ci(a, a, n_boot=50) == (0.0, 0.0, 0.0)  # every resample: 0
    with pytest.raises(ValueError, match="same users"):
        bootstrap_ratio_difference_ci(a, (np.ones(3), np.ones(3)))


def test_paired_ratio_difference_is_tighter_than_unpaired_when_users_share_the_noise():
    """Users differ a lot; the two policies differ by a constant 0.1 per unit: the paired interval
    is narrow and excludes 0, where the users' own spread would swamp two separate intervals."""
    rng = np.random.default_rng(2)
    den = rng.integers(1, 10, size=400).astype(float)
    base = den * rng.uniform(1.0, 5.0, size=400)
    est, lo, hi = bootstrap_ratio_difference_ci((base + 0.1 * den, den), (base, den), n_boot=400)
    assert est == pytest.approx(0.1) and 0.0 < lo <= 0.1 <= hi < 0.2
    _, a_lo, a_hi = bootstrap_ratio_ci(base + 0.1 * den, den)
    assert a_hi - a_lo > 5 * (hi - lo)


def test_per_user_return_day_weighs_every_user_once():
    """A daily user (10 gaps of 1 day) and one driven away for 21 days (1 gap): by gaps the mean is
    31 / 11; per user it is (1 + 21) / 2. A user without a gap does not count."""
    rec = MetricsRecorder(n_users=3)
    rec.gaps = torch.tensor([10.0, 1.0, 0.0], dtype=torch.float64)
    rec.gap_days = torch.tensor([10.0, 21.0, 0.0], dtype=torch.float64)
    out = rec.summary(n_boot=50)
    assert out["avg_return_day"]["mean"] == pytest.approx(31 / 11)
    assert out["avg_return_day_per_user"]["mean"] == pytest.approx(11.0)
    assert out["avg_return_day_per_user"]["ci_low"] <= 11.0 <= out["avg_return_day_per_user"]["ci_high"]
