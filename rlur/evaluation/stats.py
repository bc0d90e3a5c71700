"""Statistics over seeds: Student-t confidence intervals and paired comparisons.

An RL claim in rlur is made over several training seeds: a row of the benchmark is the mean over
seeds with a 95 % t-interval, and "A beats B" is a paired t-test over seeds (seed i of A against
seed i of B: same evaluation users, same simulated world).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as _st

__all__ = ["mean_ci", "paired_test"]


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
