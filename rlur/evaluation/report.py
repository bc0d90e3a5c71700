"""Human-readable tables of metric dicts (as written by ``MetricsRecorder.summary``)."""

from __future__ import annotations

__all__ = ["format_ci", "print_metrics_table"]

_SCALARS = (
    ("avg_return_day", "average return day (↓)"),
    ("avg_return_day_per_user", "  the same, per user (↓)"),
    ("day1_retention", "day-1 retention (↑)"),
    ("day7_retention", "day-7 retention (↑)"),
    ("session_depth", "session depth (requests)"),
    ("watch_time_per_request", "watch time per request (s)"),
    ("dau", "DAU share"),
    ("app_opens_per_user_day", "app opens per user-day"),
)


def format_ci(m: dict, digits: int = 3) -> str:
    """``mean [ci_low, ci_high]``."""
    return f"{m['mean']:.{digits}f} [{m['ci_low']:.{digits}f}, {m['ci_high']:.{digits}f}]"


def print_metrics_table(result: dict, title: str = "") -> None:
    """Print the scalar metrics with 95 % CIs, the behaviour rates and the return-day histogram."""
    if title:
        print(title)
    width = max(len(label) for _, label in _SCALARS) + 2
    for key, label in _SCALARS:
        if key in result:
            print(f"  {label:<{width}}{format_ci(result[key])}")
    rates = result.get("behaviour_rates", {})
    if rates:
        print("  behaviour rates per shown video: " + ", ".join(f"{k} {v:.4f}" for k, v in rates.items()))
    hist = result.get("return_day_hist", {})
    if hist:
        print("  return-day histogram: " + " ".join(f"{k}:{v:.3f}" for k, v in hist.items()))
    for key, label in (("requests", "requests"), ("requests_per_s", "simulated requests/s")):
        if key in result:
            print(f"  {label:<{width}}{result[key]:,.0f}")
