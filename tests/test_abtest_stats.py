"""A/B statistics: assignment, SRM, the delta method, A/A calibration and detection of a real lift."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from rlur.abtest import (
    ExperimentConfig,
    analyze,
    assign_arms,
    hash_unit,
    parse_shares,
    ratio_stats,
    relative_lift,
    run_experiment,
    srm_test,
)
from rlur.abtest.analysis import METRICS
from rlur.agents.fixed import make_fixed_policy
from rlur.evaluation.rollout import rollout
from rlur.training.loop import build_world, make_env

pytestmark = pytest.mark.usefixtures("one_thread")


NAMES = [m.name for m in METRICS]


# --- assignment ----------------------------------------------------------------------------------
def test_assignment_is_deterministic_salted_and_follows_shares():
    ids = np.arange(20_000)
    a = assign_arms(ids, "exp-1", (0.5, 0.5))
    assert np.array_equal(a, assign_arms(ids, "exp-1", (0.5, 0.5)))  # same salt, same split
    b = assign_arms(ids, "exp-2", (0.5, 0.5))
    assert abs((a == b).mean() - 0.5) < 0.02  # another salt: an independent split
    assert abs(a.mean() - 0.5) < 0.015
    c = assign_arms(ids, "exp-1", (0.2, 0.8))
    assert abs((c == 0).mean() - 0.2) < 0.012
    u = hash_unit(ids, "exp-1")
    assert u.min() >= 0 and u.max() < 1 and stats.kstest(u, "uniform").pvalue > 1e-3
    # a user's arm depends on its id and the salt only, not on who else is in the test
    assert np.array_equal(assign_arms(ids[5000:6000], "exp-1", (0.5, 0.5)), a[5000:6000])


@pytest.mark.parametrize(("text", "message"), [
    ("0.6,0.6", "sum to 1"), ("-0.5,1.5", "positive"), ("0,1", "positive"), ("0.3,0.3,0.4", "needs 2 values"),
    ("0.5", "needs 2 values"), ("a,b", "comma-separated numbers"),
])
def test_bad_shares_are_rejected(text: str, message: str):
    with pytest.raises(ValueError, match=message):
        parse_shares(text)


def test_srm_flags_a_broken_split_only():
    assert not srm_test([5040, 4960], (0.5, 0.5))["mismatch"]
    bad = srm_test([5300, 4700], (0.5, 0.5))
    assert bad["mismatch"] and bad["p_value"] < 1e-6
    assert not srm_test([2000, 8000], (0.2, 0.8))["mismatch"]


# --- the delta method ----------------------------------------------------------------------------
def test_delta_method_variance_matches_monte_carlo():
    """SE of a ratio of per-user sums (correlated, skewed num and den) vs its sampling spread."""
    rng = np.random.default_rng(0)
    n, reps = 800, 2000
    den = rng.poisson(3.0, size=(reps, n)) + 1.0
    num = rng.binomial(den.astype(int), 0.4) + rng.exponential(0.5, size=(reps, n))
    r = num.sum(1) / den.sum(1)
    se = np.array([np.sqrt(ratio_stats(num[i][:, None], den[i][:, None])[1][0]) for i in range(200)])
    assert se.mean() == pytest.approx(r.std(ddof=1), rel=0.08)
    # per-user means (constant denominator): the usual s / sqrt(n)
    x = rng.exponential(2.0, size=500)
    est, var = ratio_stats(x[:, None], np.ones((500, 1)))
    assert est[0] == pytest.approx(x.mean()) and np.sqrt(var[0]) == pytest.approx(x.std(ddof=1) / np.sqrt(500))


def test_ci_and_p_value_agree_and_mde_has_the_stated_power():
    rng = np.random.default_rng(1)
    n = 2000
    base = 2.0
    a = rng.poisson(base, size=(n, 1)).astype(float)
    ones = np.ones((n, 1))
    mde = float(relative_lift((a, ones), (rng.poisson(base, size=(n, 1)).astype(float), ones))["mde"][0])
    hits, agree = 0, True
    for _ in range(400):
        c = rng.poisson(base, size=(n, 1)).astype(float)
        t = rng.poisson(base * (1 + mde), size=(n, 1)).astype(float)
        res = relative_lift((c, ones), (t, ones))
        p, lo, hi = res["p_value"][0], res["ci_low"][0], res["ci_high"][0]
        agree &= (p < 0.05) == (lo > 0 or hi < 0)
        hits += p < 0.05
    assert agree
    assert abs(hits / 400 - 0.8) < 0.07  # power 0.8 at the MDE (±3.5 binomial sd)


# --- simulated tests -----------------------------------------------------------------------------
N_SEEDS, N_SALTS, USERS, DAYS = 8, 25, 1500, 10


def test_aa_false_positive_rate_is_calibrated():
    """200 A/A tests: 8 independent populations × 25 salts each, α = 0.05, every metric.

    Under A/A both arms serve the same frozen policy, so a user's trajectory does not depend on its
    arm: one simulation per population can be re-split by many salts. Each salt is a fresh random
    assignment of the same users, i.e. a draw from the randomisation distribution the test is
    about; z-statistics from independent random splits are asymptotically independent (their
    correlation is O(1/√N)), so the count of false positives over the 200 tests is
    Binomial(200, 0.05) when the test is calibrated. Tolerance: the central 99.9 % of that
    binomial, [2, 21] rejections per metric (and, per metric, p-values compatible with uniform).
    """
    pvals: dict[str, list[float]] = {m: [] for m in NAMES}
    for seed in range(N_SEEDS):
        res = run_experiment(ExperimentConfig(control="uniform", users=USERS, days=DAYS, seed=100 + seed, aa=True))
        for s in range(N_SALTS):
            arm = assign_arms(np.arange(USERS), f"aa-{seed}-{s}", (0.5, 0.5))
            rep = analyze(res.table, arm, alpha=0.05, daily=False)
            assert not rep["srm"]["mismatch"]
            for m in NAMES:
                pvals[m].append(rep["lifts"][m]["p_value"])
    runs = N_SEEDS * N_SALTS
    lo, hi = stats.binom.ppf(0.0005, runs, 0.05), stats.binom.isf(0.0005, runs, 0.05)
    for m, p in pvals.items():
        p = np.asarray(p)
        rejections = int((p < 0.05).sum())
        assert lo <= rejections <= hi, f"{m}: {rejections} of {runs} A/A tests significant (allowed {lo}–{hi})"
        assert stats.kstest(p, "uniform").pvalue > 1e-3, m


def test_a_real_difference_is_detected():
    """``click`` (all weight on predicted click) hurts retention: the test must say so, with the right sign."""
    res = run_experiment(ExperimentConfig(control="uniform", treatment="click", users=1200, days=9, seed=7))
    rep = analyze(res.table, res.arm)
    for m in ("app_opens", "dau", "day1_retention", "day7_retention", "watch_time"):
        lift = rep["lifts"][m]
        assert lift["p_value"] < 1e-4 and lift["ci_high"] < 0 and lift["verdict"] == "worse", (m, lift)
    assert rep["lifts"]["avg_return_day"]["ci_low"] > 0  # longer returns: worse
    assert rep["lifts"]["avg_return_day"]["verdict"] == "worse"
    daily = rep["daily"]["lift"]["dau"]
    assert len(daily["estimate"]) == 9 and len(rep["daily"]["lift"]["day7_retention"]["estimate"]) == 2
    assert np.nanmean(daily["estimate"][1:]) < 0


def test_calendar_table_matches_the_standard_rollout():
    """Stepping users day by day changes no user's distribution: metrics agree with ``rollout``."""
    users, days = 2000, 6
    res = run_experiment(ExperimentConfig(control="uniform", users=users, days=days, seed=21, aa=True))
    t = res.table
    assert bool(t.active[:, 0].all())  # everyone starts on day 0
    assert int(t.requests.sum()) == res.timing["requests"]
    assert bool((t.opens >= t.active.int()).all()) and bool((t.gaps <= 1).all())
    env = make_env(build_world(None), users, 22)
    rec, _ = rollout(env, make_fixed_policy("uniform"), days)
    ref = rec.summary(n_boot=0)
    opens = t.opens.double().sum(1) / days
    se_diff = float(opens.std()) * np.sqrt(2 / users)  # two independent populations of the same size
    assert abs(float(opens.mean()) - ref["app_opens_per_user_day"]["mean"]) < 4 * se_diff
    ret = float(t.gap_days.sum() / t.gaps.sum())
    assert ret == pytest.approx(ref["avg_return_day"]["mean"], rel=0.05)
