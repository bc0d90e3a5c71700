"""Statistics over seeds: Student-t confidence intervals and paired comparisons.

An RL claim in rlur is made over several training seeds: a row of the benchmark is the mean over
seeds with a 95 % t-interval, and "A beats B" is a paired t-test over seeds (seed i of A against
seed i of B: same evaluation users, same simulated world). ``paired_power`` and
``seeds_for_power`` say how many seeds such a test needs to find a difference of a given size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as _st

__all__ = ["holm_adjust", "mean_ci", "paired_power", "paired_test", "pooled_sd_ci", "seeds_for_power", "slope"]


def mean_ci(values: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """``{mean, ci_low, ci_high, std, n}`` with a Student-t interval (NaN bounds for n < 2)."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = float(x.mean())
    if n < 2:
        return {"mean": mean, "ci_low": math.nan, "ci_high": math.nan, "std": math.nan, "n": n}
    sd = float(x.std(ddof=1))
    half = float(_st.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "std": sd, "n": n}


def paired_test(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Paired t-test of ``a − b`` over matched seeds: ``{diff, ci_low, ci_high, t, p_value, n}``.

    Two-sided. With all differences equal (zero variance) the p-value is 0 if the difference is
    non-zero and 1 otherwise.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired_test needs matched samples, got {x.shape} and {y.shape}")
    d = x - y
    n = len(d)
    ci = mean_ci(d, level)
    if n < 2:
        return {"diff": ci["mean"], "ci_low": math.nan, "ci_high": math.nan, "t": math.nan, "p_value": math.nan, "n": n}
    sd = d.std(ddof=1)
    if sd == 0:
        p = 0.0 if d.mean() != 0 else 1.0
        t = math.copysign(math.inf, d.mean()) if d.mean() != 0 else 0.0
    else:
        t = float(d.mean() / (sd / math.sqrt(n)))
        p = float(2 * _st.t.sf(abs(t), n - 1))
    return {"diff": ci["mean"], "ci_low": ci["ci_low"], "ci_high": ci["ci_high"], "t": t, "p_value": p, "n": n}


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (Holm 1979), in their given order.

    Sorted ascending, the i-th smallest (0-based) of m becomes ``max_{j ≤ i} min(1, (m − j) · p_(j))``:
    rejecting where the adjusted p < α keeps the family-wise error at α. NaN p-values (a test that
    could not be made) stay NaN and do not count in m. Five lines, so no statsmodels dependency.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out.tolist()


def slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of ``y`` on ``x`` (at least two distinct x)."""
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    dx = xs - xs.mean()
    if len(xs) != len(ys) or not (dx**2).sum() > 0:
        raise ValueError(f"slope needs matched x and y with two distinct x, got {len(xs)} and {len(ys)} points")
    return float((dx * (ys - ys.mean())).sum() / (dx**2).sum())


def paired_power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Chance that a two-sided paired t-test over ``n`` seeds finds ``effect`` (p < ``alpha``, right sign).

    The seeds' differences are taken as normal with mean ``effect`` and standard deviation ``sd``.
    The t statistic then follows a noncentral t with ``n − 1`` degrees of freedom and noncentrality
    ``effect · √n / sd``. A significant result of the wrong sign is not counted: it would not show
    the effect.
    """
    if n < 2:
        raise ValueError(f"a paired t-test needs at least 2 seeds, got {n}")
    if not sd > 0:
        raise ValueError(f"the spread of the differences must be positive, got {sd}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    critical = float(_st.t.ppf(1 - alpha / 2, n - 1))
    return float(_st.nct.sf(critical, n - 1, abs(effect) * math.sqrt(n) / sd))


def seeds_for_power(effect: float, sd: float, power: float = 0.8, alpha: float = 0.05, max_n: int = 100_000) -> int:
    """Fewest seeds at which ``paired_power(effect, sd, n, alpha)`` reaches ``power``."""
    if not 0 < power < 1:
        raise ValueError(f"power must lie in (0, 1), got {power}")
    if effect == 0:
        raise ValueError("no number of seeds finds a difference of 0")
    if paired_power(effect, sd, max_n, alpha) < power:
        raise ValueError(f"more than {max_n} seeds are needed")
    lo, hi = 2, max_n  # power grows with n: bisect for the first n that reaches it
    while lo < hi:
        mid = (lo + hi) // 2
        if paired_power(effect, sd, mid, alpha) >= power:
            hi = mid
        else:
            lo = mid + 1
    return lo


def pooled_sd_ci(groups: Sequence[Sequence[float]], level: float = 0.95) -> dict[str, float]:
    """The spread within groups, pooled: ``{sd, ci_low, ci_high, n, df}`` (one group: the sample sd).

    ``sd² = Σ_g Σ_i (x_gi − mean_g)² / df`` with ``df = Σ_g (n_g − 1)``: each group is centred on
    its own mean, so a difference between groups (say, between worlds) does not add to the spread.
    The interval is the chi-square one with ``df`` degrees of freedom (normal values assumed).
    """
    arrays = [np.asarray(g, dtype=np.float64) for g in groups]
    if not arrays or any(len(x) < 2 for x in arrays):
        raise ValueError("a standard deviation needs at least 2 values in every group")
    df = sum(len(x) - 1 for x in arrays)
    sd = math.sqrt(sum(float(((x - x.mean()) ** 2).sum()) for x in arrays) / df)
    low = sd * math.sqrt(df / float(_st.chi2.ppf(0.5 + level / 2, df)))
    high = sd * math.sqrt(df / float(_st.chi2.ppf(0.5 - level / 2, df)))
    return {"sd": sd, "ci_low": low, "ci_high": high, "n": sum(len(x) for x in arrays), "df": df}
