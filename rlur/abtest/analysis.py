"""Statistics of a simulated A/B test: relative lifts by the delta method, MDE and SRM.

Users are the randomisation unit, so every metric is written as a ratio of per-user sums,
``R = Σ_u x_u / Σ_u y_u`` (for a per-user mean such as app opens per user-day, ``y_u = D``). Within
an arm the users are i.i.d., and the delta method gives

    Var(R) ≈ (s_xx − 2 R s_xy + R² s_yy) / (n ȳ²)

with the per-user sample (co)variances ``s``. The relative lift ``L = R_T / R_C − 1`` is tested on
the log scale (the arms are independent):

    se = sqrt(Var(R_T) / R_T² + Var(R_C) / R_C²),   z = log(R_T / R_C) / se,   p = 2 Φ(−|z|),
    CI = exp(log(R_T / R_C) ± z_{1−α/2} se) − 1,

so the CI excludes 0 exactly when ``p < α``. The minimum detectable effect at power ``1 − β`` is
``exp((z_{1−α/2} + z_{1−β}) se) − 1``: the smallest lift this test's size detects with that power.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

from rlur.abtest.assignment import srm_test
from rlur.abtest.experiment import ARM_NAMES, UserDayTable

__all__ = ["METRICS", "MetricSpec", "analyze", "metric_arrays", "ratio_stats", "relative_lift"]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    label: str
    higher_is_better: bool
    lag: int = 0
    """Calendar metrics comparing day t with day t + lag (retention): need D > lag."""


#: The metrics of a test, in report order.
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("app_opens", "app opens per user-day", True),
    MetricSpec("dau", "DAU share (active users / assigned users)", True),
    MetricSpec("day1_retention", "day-1 retention (active on t+1 | active on t)", True, lag=1),
    MetricSpec("day7_retention", "day-7 retention (active on t+7 | active on t)", True, lag=7),
    MetricSpec("avg_return_day", "average return day (days between active days)", False),
    MetricSpec("watch_time", "watch seconds per user-day", True),
)


def metric_arrays(table: UserDayTable, name: str, daily: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-user numerator and denominator of a metric.

    ``daily=False``: over the whole test, arrays ``(N, 1)``. ``daily=True``: one column per day it is
    defined on, ``(N, D − lag)``: the day-t column of a retention metric pairs day t with t + lag.
    """
    d = table.days
    active = table.active.numpy()
    spec = next((m for m in METRICS if m.name == name), None)
    if spec is None:
        raise ValueError(f"unknown metric {name!r}")
    if spec.lag:
        if d <= spec.lag:
            raise ValueError(f"{name} needs a test longer than {spec.lag} days, got {d}")
        base = active[:, : d - spec.lag].astype(np.float64)
        num = base * active[:, spec.lag:]
        den = base
    elif name == "avg_return_day":
        num, den = table.gap_days.numpy().astype(np.float64), table.gaps.numpy().astype(np.float64)
    else:
        num = {"app_opens": table.opens, "dau": table.active, "watch_time": table.watch}[name].numpy()
        num = num.astype(np.float64)
        den = np.ones_like(num)
    if daily:
        return num, den
    return num.sum(1, keepdims=True), den.sum(1, keepdims=True)


def ratio_stats(num: np.ndarray, den: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``R = Σ num / Σ den`` per column and its delta-method variance; rows are i.i.d. users."""
    num, den = np.atleast_2d(np.asarray(num, np.float64)), np.atleast_2d(np.asarray(den, np.float64))
    n = num.shape[0]
    if n == 0:
        nan = np.full(num.shape[1], np.nan)
        return nan, nan.copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        xbar, ybar = num.mean(0), den.mean(0)
        r = xbar / ybar
        if n < 2:
            return r, np.full_like(r, np.nan)
        xc, yc = num - xbar, den - ybar
        sxx, syy, sxy = (xc * xc).sum(0) / (n - 1), (yc * yc).sum(0) / (n - 1), (xc * yc).sum(0) / (n - 1)
        var = (sxx - 2 * r * sxy + r * r * syy) / (n * ybar * ybar)
    return r, np.maximum(var, 0.0)


def relative_lift(
    control: tuple[np.ndarray, np.ndarray], treatment: tuple[np.ndarray, np.ndarray], alpha: float = 0.05,
    power: float = 0.8,
) -> dict[str, np.ndarray]:
    """Relative lift ``R_T / R_C − 1`` per column with its CI, p-value and MDE (log-scale delta method).

    Returns arrays ``{estimate, ci_low, ci_high, p_value, z, se_log, mde, control, treatment,
    control_se, treatment_se}``; NaN where a rate is 0 or undefined.
    """
    rc, vc = ratio_stats(*control)
    rt, vt = ratio_stats(*treatment)
    q, qb = _st.norm.ppf(1 - alpha / 2), _st.norm.ppf(power)
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = (rc > 0) & (rt > 0) & np.isfinite(rc) & np.isfinite(rt)
        d = np.where(ok, np.log(np.where(ok, rt / np.where(ok, rc, 1.0), 1.0)), np.nan)
        se = np.where(ok, np.sqrt(vt / rt**2 + vc / rc**2), np.nan)
        z = np.where(se > 0, d / se, np.where(d == 0, 0.0, np.copysign(np.inf, d)))
        z = np.where(ok & ~np.isnan(se), z, np.nan)
    p = np.where(np.isnan(z), np.nan, 2 * _st.norm.sf(np.abs(z)))
    return {
        "estimate": np.exp(d) - 1, "ci_low": np.exp(d - q * se) - 1, "ci_high": np.exp(d + q * se) - 1,
        "p_value": p, "z": z, "se_log": se, "mde": np.exp((q + qb) * se) - 1,
        "control": rc, "treatment": rt, "control_se": np.sqrt(vc), "treatment_se": np.sqrt(vt),
    }


def _scalar(x: np.ndarray) -> float:
    return float(np.asarray(x).reshape(-1)[0])


def analyze(
    table: UserDayTable, arm: np.ndarray, alpha: float = 0.05, shares: Sequence[float] = (0.5, 0.5),
    power: float = 0.8, daily: bool = True,
) -> dict:
    """Lifts of treatment (arm 1) over control (arm 0) for every metric, over the whole test and per day.

    Returns ``{lifts, mde, arms, srm, daily, alpha, power, method}``; ``lifts.<metric>`` holds
    ``estimate, ci_low, ci_high, p_value`` (relative) plus both arms' values and ``significant``.
    """
    arm = np.asarray(arm)
    rows = [arm == a for a in range(len(ARM_NAMES))]
    counts = [int(r.sum()) for r in rows]
    q = _st.norm.ppf(1 - alpha / 2)
    lifts: dict[str, dict] = {}
    mde: dict[str, float | None] = {}
    arms: dict[str, dict] = {name: {"users": c} for name, c in zip(ARM_NAMES, counts, strict=True)}
    daily_out: dict = {"day": list(range(table.days)), "control": {}, "treatment": {}, "lift": {}}
    for spec in METRICS:
        if spec.lag and table.days <= spec.lag:
            continue
        num, den = metric_arrays(table, spec.name)
        res = relative_lift((num[rows[0]], den[rows[0]]), (num[rows[1]], den[rows[1]]), alpha, power)
        est, p = _scalar(res["estimate"]), _scalar(res["p_value"])
        better = (est > 0) == spec.higher_is_better
        lifts[spec.name] = {
            "estimate": est, "ci_low": _scalar(res["ci_low"]), "ci_high": _scalar(res["ci_high"]), "p_value": p,
            "z": _scalar(res["z"]), "control": _scalar(res["control"]), "treatment": _scalar(res["treatment"]),
            "significant": bool(p < alpha),
            "verdict": "undefined" if np.isnan(p) else ("better" if better else "worse") if p < alpha else "no change",
            "higher_is_better": spec.higher_is_better, "label": spec.label,
        }
        mde[spec.name] = _scalar(res["mde"])
        for name in ARM_NAMES:
            value, se = _scalar(res[name]), _scalar(res[f"{name}_se"])
            arms[name][spec.name] = {"estimate": value, "ci_low": value - q * se, "ci_high": value + q * se}
        if daily:
            dn, dd = metric_arrays(table, spec.name, daily=True)
            res_d = relative_lift((dn[rows[0]], dd[rows[0]]), (dn[rows[1]], dd[rows[1]]), alpha, power)
            for name in ARM_NAMES:
                daily_out[name][spec.name] = res_d[name].tolist()
            daily_out["lift"][spec.name] = {k: res_d[k].tolist() for k in ("estimate", "ci_low", "ci_high", "p_value")}
    return {
        "alpha": alpha, "power": power, "lifts": lifts, "mde": mde, "arms": arms,
        "srm": srm_test(counts, shares), "daily": daily_out if daily else None,
        "method": "delta method on the log ratio of per-user sums (users are the unit); two-sided z-test",
    }
