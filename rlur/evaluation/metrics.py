"""Retention and engagement metrics, in one place, with bootstrap confidence intervals.

Definitions (the glossary in ``docs/metrics.md`` mirrors this):

* **return gap**: days between two consecutive *active days* of a user (KuaiRand's definition); a
  same-day reopen is not a gap. Known at the end of the last session of a day.
* ``avg_return_day``: mean return gap, lower is better (the paper's "returning time"). A mean over
  *gaps*: a user weighs by the number of gaps they have in the window, so frequent users dominate and
  a user driven away for weeks adds one gap.
* ``avg_return_day_per_user``: the same per user (each user's mean gap), then averaged over users:
  every user weighs the same, however rarely they come back.
* ``day1_retention``: share of return gaps equal to 1 (the paper's "user retention").
* ``day7_retention``: share of (user, active day t) pairs with the user active again on day t + 7.
* ``return_day_hist``: share of return gaps at 1..K, then '>K'.
* ``session_depth``: requests per completed session.
* ``watch_time_per_request``: watch seconds summed over the 6 shown videos, per request.
* ``behaviour_rates``: responses per shown video, by behaviour.
* ``dau``: mean over days of the share of users active that day.
* ``app_opens_per_user_day``: sessions started per user per day.

Confidence intervals resample *users* (the independent unit) with a Poisson bootstrap, and each
metric is a ratio of per-user sums, so heavy users weigh as much as their traffic.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from rlur.sim.env import StepResult
from rlur.sim.world import BEHAVIOURS

__all__ = ["MetricsRecorder", "bootstrap_ratio_ci", "bootstrap_ratio_difference_ci"]


def _poisson_weights(n_rows: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Poisson(1) resampling weights ``(m, n_rows)`` per chunk, ``n_boot`` rows in all: one random
    stream (the chunks concatenate to a single draw), chunked so memory stays linear in the rows."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, 2_000_000 // max(1, n_rows)))
    done = 0
    while done < n_boot:
        m = min(chunk, n_boot - done)
        yield rng.poisson(1.0, size=(m, n_rows)).astype(np.float64)
        done += m


def _ratio(w: np.ndarray, num: np.ndarray, den: np.ndarray) -> np.ndarray:
    d = w @ den
    return np.where(d > 0, (w @ num) / np.where(d > 0, d, 1.0), np.nan)


def _interval(reps: list[np.ndarray], level: float) -> tuple[float, float]:
    alpha = (1 - level) / 2
    lo, hi = np.nanquantile(np.concatenate(reps), [alpha, 1 - alpha])
    return float(lo), float(hi)


def bootstrap_ratio_ci(
    num: np.ndarray, den: np.ndarray, n_boot: int = 400, seed: int = 0, level: float = 0.95,
) -> tuple[float, float, float]:
    """Point estimate and bootstrap CI of ``Σ num / Σ den`` resampling the rows (users).

    Poisson(1) weights per user approximate the multinomial bootstrap and are chunked, so the cost
    stays linear in the number of users.
    """
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    total = den.sum()
    est = float(num.sum() / total) if total > 0 else float("nan")
    if len(num) < 2 or total <= 0 or n_boot <= 0:
        return est, float("nan"), float("nan")
    return (est, *_interval([_ratio(w, num, den) for w in _poisson_weights(len(num), n_boot, seed)], level))


def bootstrap_ratio_difference_ci(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], n_boot: int = 400, seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Point estimate and paired bootstrap CI of ``Σ a_num / Σ a_den − Σ b_num / Σ b_den``, where row
    i of ``a = (a_num, a_den)`` and of ``b`` is the same user under two policies: each resample
    weighs a user the same in both, so what the users share cancels out."""
    an, ad, bn, bd = (np.asarray(x, dtype=np.float64) for x in (*a, *b))
    if not len(an) == len(ad) == len(bn) == len(bd):
        raise ValueError("a paired comparison needs the same users (rows) on both sides")
    est = float(an.sum() / ad.sum() - bn.sum() / bd.sum()) if ad.sum() > 0 and bd.sum() > 0 else float("nan")
    if len(an) < 2 or n_boot <= 0 or np.isnan(est):
        return est, float("nan"), float("nan")
    reps = [_ratio(w, an, ad) - _ratio(w, bn, bd) for w in _poisson_weights(len(an), n_boot, seed)]
    return (est, *_interval(reps, level))


@dataclass
class MetricsRecorder:
    """Accumulates per-user sums from :class:`StepResult`s; only events before ``horizon_days`` count.

    Args:
        n_users: B.
        max_return_day: K, the last individual bin of the return-day histogram.
        horizon_days: days counted (needed for the calendar metrics DAU and day-7 retention).
    """

    n_users: int
    max_return_day: int = 10
    horizon_days: int | None = None
    requests: torch.Tensor = field(init=False)
    watch: torch.Tensor = field(init=False)
    behaviours: torch.Tensor = field(init=False)
    sessions: torch.Tensor = field(init=False)
    session_requests: torch.Tensor = field(init=False)
    gaps: torch.Tensor = field(init=False)
    gap_days: torch.Tensor = field(init=False)
    gap_day1: torch.Tensor = field(init=False)
    gap_hist: torch.Tensor = field(init=False)
    opens: torch.Tensor | None = field(init=False)

    def __post_init__(self) -> None:
        b = self.n_users
        z = lambda *s: torch.zeros(*s, dtype=torch.float64)  # noqa: E731
        self.requests, self.watch, self.sessions = z(b), z(b), z(b)
        self.session_requests = z(b)
        self.behaviours = z(b, len(BEHAVIOURS))
        self.gaps, self.gap_days, self.gap_day1 = z(b), z(b), z(b)
        self.gap_hist = z(self.max_return_day + 1)
        self.opens = None if self.horizon_days is None else torch.zeros(b, self.horizon_days, dtype=torch.int32)
        self._depth = torch.zeros(b)
        self._started = torch.ones(b, dtype=torch.bool)  # the first session starts at reset

    def record(self, r: StepResult) -> None:
        """Add one batched step (vectorised over users).

        Per-user sums only change where something happened: rows outside the horizon add nothing
        and the session/gap sums only move for the users whose session ended (index tensors).
        """
        live = None if self.horizon_days is None else r.day < self.horizon_days
        if live is not None and bool(live.all()):
            live = None  # everyone is inside the horizon (the common case): no masking needed
        started = self._started if live is None else self._started & live
        if self.opens is not None and bool(started.any()):
            idx = started.nonzero().squeeze(1)
            self.opens[idx, r.day[idx]] += 1
        feedback = r.feedback.double()
        if live is None:
            self.requests += 1.0
            self.watch += feedback[:, 0]
            self.behaviours += feedback[:, 1:]
            end = r.session_end
        else:
            lf = live.double()
            self.requests += lf
            self.watch += lf * feedback[:, 0]
            self.behaviours += lf[:, None] * feedback[:, 1:]
            end = r.session_end & live
        self._depth += 1
        ended = end.nonzero().squeeze(1)
        if len(ended):
            ones = torch.ones(len(ended), dtype=torch.float64)
            self.sessions.index_add_(0, ended, ones)
            self.session_requests.index_add_(0, ended, self._depth.index_select(0, ended).double())
            return_day = r.return_day.index_select(0, ended)
            later = return_day >= 1
            if bool(later.any()):
                gap_users, gap_days = ended[later], return_day[later]
                ones = ones[: len(gap_users)]
                self.gaps.index_add_(0, gap_users, ones)
                self.gap_days.index_add_(0, gap_users, gap_days.double())
                self.gap_day1.index_add_(0, gap_users, (gap_days == 1).double())
                bins = gap_days.clamp(max=self.max_return_day + 1) - 1
                self.gap_hist += torch.bincount(bins, minlength=self.max_return_day + 1).double()
        self._depth.masked_fill_(r.session_end, 0.0)
        self._started = r.session_end.clone()

    # ------------------------------------------------------------------------------------------
    def summary(self, n_boot: int = 400, seed: int = 0) -> dict:
        """All metrics as a JSON-ready dict; scalar metrics carry ``{mean, ci_low, ci_high}``."""
        np_ = lambda t: t.numpy()  # noqa: E731
        ci = lambda n, d: dict(zip(("mean", "ci_low", "ci_high"), bootstrap_ratio_ci(np_(n), np_(d), n_boot, seed), strict=True))  # noqa: E731,E501
        shown = self.requests * 6
        out: dict = {
            "avg_return_day": ci(self.gap_days, self.gaps),
            "avg_return_day_per_user": ci(*self.per_user_mean_gap()),
            "day1_retention": ci(self.gap_day1, self.gaps),
            "session_depth": ci(self.session_requests, self.sessions),
            "watch_time_per_request": ci(self.watch, self.requests),
        }
        hist = self.gap_hist / self.gap_hist.sum().clamp(min=1)
        labels = [str(d) for d in range(1, self.max_return_day + 1)] + [f">{self.max_return_day}"]
        out["return_day_hist"] = dict(zip(labels, hist.tolist(), strict=True))
        out["behaviour_rates"] = {
            name: float(self.behaviours[:, i].sum() / shown.sum().clamp(min=1)) for i, name in enumerate(BEHAVIOURS)
        }
        out["requests"] = int(self.requests.sum())
        out["sessions"] = int(self.sessions.sum())
        out["return_gaps"] = int(self.gaps.sum())
        out["users"] = self.n_users
        if self.opens is not None:
            out.update(self._calendar(ci))
        return out

    def per_user_mean_gap(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Numerator and denominator of the mean over users (with at least one gap) of their mean gap."""
        has_gap = self.gaps > 0
        mean_gap = torch.where(has_gap, self.gap_days / self.gaps.clamp(min=1), torch.zeros_like(self.gap_days))
        return mean_gap, has_gap.double()

    def _calendar(self, ci) -> dict:
        active = (self.opens > 0).double()
        days = active.shape[1]
        out = {
            "dau": ci(active.sum(1), torch.full((self.n_users,), float(days), dtype=torch.float64)),
            "app_opens_per_user_day": ci(
                self.opens.double().sum(1), torch.full((self.n_users,), float(days), dtype=torch.float64)
            ),
        }
        if days > 7:
            base = active[:, : days - 7]
            out["day7_retention"] = ci((base * active[:, 7:]).sum(1), base.sum(1))
        return out
