"""Evaluation of a learned world: held-out metrics, calibration, simulated vs logged statistics, report.

``fit_report.md`` (written next to ``world.pt``) holds:

* held-out AUC and log-loss of every feedback head, of the leave model and of the return model,
  each next to the log-loss of predicting the training base rate;
* reliability (calibration) plots;
* simulated vs logged statistics: behaviour rates, session depth and the return-day histogram with
  its total-variation distance, the simulator run in "logged" ranking mode (a replay of the logged
  exposure distribution, so that the models alone are compared) and, for information, with the
  fusion ranking at uniform weights.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from rlur.sim.world import BEHAVIOURS

__all__ = ["auc", "log_loss", "multiclass_log_loss", "reliability", "simulate_statistics", "tv_distance",
           "write_report"]


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN when a class is absent."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, np.float64)
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    _, inv, counts = np.unique(p[order], return_inverse=True, return_counts=True)
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0
    ranks = np.empty(len(p))
    ranks[order] = avg_rank[inv]
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def log_loss(y: np.ndarray, p: np.ndarray | float, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities ``p`` (an array, or one base rate) for labels ``y``."""
    y = np.asarray(y, np.float64)
    if len(y) == 0:
        return float("nan")
    p = np.clip(np.broadcast_to(np.asarray(p, np.float64), y.shape), eps, 1 - eps)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def multiclass_log_loss(y: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Mean −log p(y) for class labels ``y (n,)`` and probabilities ``probs (n, K)`` (or ``(K,)``)."""
    y = np.asarray(y, np.int64)
    if len(y) == 0:
        return float("nan")
    probs = np.broadcast_to(np.asarray(probs, np.float64), (len(y), np.shape(probs)[-1]))
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], eps, 1.0)).mean())


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 10) -> dict[str, list[float]]:
    """Mean prediction and observed rate in ``bins`` equal-count bins of the prediction."""
    y = np.asarray(y, np.float64)
    p = np.asarray(p, np.float64)
    if len(y) == 0:
        return {"pred": [], "obs": [], "count": []}
    order = np.argsort(p, kind="mergesort")
    parts = np.array_split(order, min(bins, len(order)))
    return {"pred": [float(p[i].mean()) for i in parts], "obs": [float(y[i].mean()) for i in parts],
            "count": [len(i) for i in parts]}


def tv_distance(a, b) -> float:
    """Total-variation distance ½ Σ |a − b| between two histograms (each normalised first)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(0.5 * np.abs(a / max(a.sum(), 1e-12) - b / max(b.sum(), 1e-12)).sum())


@torch.no_grad()
def simulate_statistics(world, n_users: int, days: int, seed: int = 0, ranking: str = "logged",
                        depth_bins: int = 10, max_steps: int | None = None) -> dict:
    """Run the learned world at uniform fusion weights for ``days`` days; same statistics as the logs.

    Counting follows :class:`rlur.evaluation.metrics.MetricsRecorder` (only requests on days before
    ``days`` count; a return gap is a session end with a return day ≥ 1), except that, as in logs
    that end on day ``days − 1``, a return gap counts only when the return falls inside the window.
    """
    from rlur.data.learned_world import LearnedRetentionEnv

    env = LearnedRetentionEnv(world, n_users=n_users, seed=seed, ranking=ranking)
    k = world.config.max_return_day
    s = world.config.slate_size
    action = torch.zeros(n_users, env.k)
    beh = torch.zeros(len(BEHAVIOURS), dtype=torch.float64)
    shown = 0
    depth = torch.zeros(n_users)
    depth_hist = torch.zeros(depth_bins, dtype=torch.float64)
    gap_hist = torch.zeros(k + 1, dtype=torch.float64)
    same_day = ends = 0
    active = torch.zeros(n_users, days, dtype=torch.bool)
    cap = max_steps if max_steps is not None else 60 * days
    steps = 0
    while steps < cap and int(env.day.min()) < days:
        r = env.step(action)
        steps += 1
        live = r.day < days
        idx = live.nonzero().squeeze(1)
        active[idx, r.day[idx]] = True
        beh += r.feedback[live, 1:].sum(0).double()
        shown += int(live.sum()) * s
        depth += 1
        end = r.session_end & live
        if bool(end.any()):
            depth_hist += torch.bincount((depth[end].long().clamp(max=depth_bins) - 1), minlength=depth_bins).double()
            gap = end & (r.return_day >= 1) & (r.day + r.return_day < days)
            gap_hist += torch.bincount(r.return_day[gap].clamp(max=k + 1) - 1, minlength=k + 1).double()
            same_day += int((end & (r.return_day == 0)).sum())
            ends += int(end.sum())
        depth = torch.where(r.session_end, 0.0, depth)
    gaps = float(gap_hist.sum())
    days_of_gap = torch.arange(1, k + 2, dtype=torch.float64)
    return {
        "ranking": ranking, "users": n_users, "days": days, "steps": steps,
        "behaviour_rates": {b: float(beh[i] / max(shown, 1)) for i, b in enumerate(BEHAVIOURS)},
        "session_depth": float((depth_hist * torch.arange(1, depth_bins + 1)).sum() / max(depth_hist.sum(), 1)),
        "session_depth_hist": (depth_hist / depth_hist.sum().clamp(min=1)).tolist(),
        "return_gaps": int(gaps),
        "avg_return_day": float((gap_hist * days_of_gap).sum() / max(gaps, 1)),
        "day1_retention": float(gap_hist[0] / max(gaps, 1)),
        "return_day_hist": (gap_hist / max(gaps, 1)).tolist(),
        "same_day_reopen_share": same_day / max(ends, 1),
        "active_days_per_user": float(active.sum(1).double().mean()),
    }


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
def _fmt(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:.{digits}f}"


def _plots(out: Path, summary: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    cal = summary["metrics"]["calibration"]
    keys = list(cal)
    if keys:
        cols = 5
        rows = math.ceil(len(keys) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
        for ax, key in zip(axes.flat, keys, strict=False):
            c = cal[key]
            hi = max(max(c["pred"], default=0), max(c["obs"], default=0), 1e-4) * 1.1
            ax.plot([0, hi], [0, hi], color="0.6", lw=1, ls="--")
            ax.plot(c["pred"], c["obs"], "o-", ms=3)
            ax.set_title(key, fontsize=9)
            ax.set_xlim(0, hi)
            ax.set_ylim(0, hi)
            ax.tick_params(labelsize=7)
        for ax in list(axes.flat)[len(keys):]:
            ax.axis("off")
        fig.supxlabel("mean predicted probability (equal-count bins)")
        fig.supylabel("observed rate")
        fig.tight_layout()
        fig.savefig(out / "calibration.png", dpi=110)
        plt.close(fig)
        names.append("calibration.png")

    logged, sims = summary["logged"], summary["simulated"]
    series = [("logged", logged)] + [(f"simulated ({k})", v) for k, v in sims.items()]
    for key, fname, xlabels, ylabel, logy in (
        ("return_day_hist", "return_days.png",
         [str(d) for d in range(1, len(logged["return_day_hist"]))] + [f">{len(logged['return_day_hist']) - 1}"],
         "share of return gaps", False),
        ("session_depth_hist", "session_depth.png",
         [str(d) for d in range(1, len(logged["session_depth_hist"]))] + [f"{len(logged['session_depth_hist'])}+"],
         "share of sessions", False),
        ("behaviour_rates", "behaviour_rates.png", list(BEHAVIOURS), "rate per shown video", True),
    ):
        fig, ax = plt.subplots(figsize=(8, 3.6))
        width = 0.8 / len(series)
        x = np.arange(len(xlabels))
        for i, (label, st) in enumerate(series):
            vals = st[key]
            vals = [vals[b] for b in BEHAVIOURS] if isinstance(vals, dict) else vals
            ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, label=label)
        ax.set_xticks(x, xlabels, fontsize=8)
        ax.set_ylabel(ylabel)
        if logy:
            ax.set_yscale("log")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
        names.append(fname)
    return names


def write_report(out: str | Path, summary: dict) -> Path:
    """Write ``fit_report.md`` and the PNG plots into ``out``; returns the report path."""
    out = Path(out)
    plots = _plots(out, summary)
    m, logged, sims, meta = summary["metrics"], summary["logged"], summary["simulated"], summary["meta"]
    lines = [
        "# Learned world: fit report",
        "",
        f"Source: {meta['source']} ({', '.join(meta['log_files'])}). {_fmt(logged['rows'])} impressions, "
        f"{_fmt(logged['users'])} users, {_fmt(meta['videos'])} videos, {logged['days']} days; "
        f"{_fmt(logged['requests'])} requests, {_fmt(logged['sessions'])} sessions "
        f"({meta['session_rule']}).",
        f"Held out: {meta['holdout']}. Loaded and trained in {meta['train_seconds']:.0f} s.",
    ]
    lines += [f"- {n}" for n in meta.get("notes", [])]
    lines += ["", "## Held-out prediction quality", "",
              "| model / head | positives | base rate | AUC | log-loss | base-rate log-loss |",
              "|---|---|---|---|---|---|"]
    for name, r in m["feedback"].items():
        lines.append(f"| feedback: {name} | {_fmt(r['positives'])} | {_fmt(r['base_rate'], 5)} | {_fmt(r['auc'], 3)} | "
                     f"{_fmt(r['log_loss'])} | {_fmt(r['base_log_loss'])} |")
    r = m["leave"]
    lines.append(f"| leave (session ends after this request) | {_fmt(r['positives'])} | {_fmt(r['base_rate'], 4)} | "
                 f"{_fmt(r['auc'], 3)} | {_fmt(r['log_loss'])} | {_fmt(r['base_log_loss'])} |")
    r = m["return"]
    lines.append(f"| return: day 1 vs later | {_fmt(r['day1_positives'])} | {_fmt(r['day1_base_rate'], 4)} | "
                 f"{_fmt(r['day1_auc'], 3)} | {_fmt(r['day1_log_loss'])} | {_fmt(r['day1_base_log_loss'])} |")
    w = m["watch"]
    lines += [
        "",
        f"Return model ({r['classes']} classes: same day, 1..K, >K; {_fmt(r['sessions'])} held-out sessions, "
        f"{_fmt(r['observed'])} with an observed return, the rest right-censored): censored log-likelihood loss "
        f"{_fmt(r['log_loss'])} vs {_fmt(r['base_log_loss'])} for the Kaplan–Meier class shares of the training "
        f"sessions; mean predicted class {_fmt(r['mean_pred_day'], 3)} vs {_fmt(r['mean_base_day'], 3)}. "
        "The day-1 row counts sessions whose day-1 status the window reveals.",
        f"Watch fraction: mean absolute error {_fmt(w['mae'])} vs {_fmt(w['base_mae'])} for the training mean.",
        "",
        "## Calibration", "", "![reliability](calibration.png)" if "calibration.png" in plots else "", "",
        "## Simulated vs logged", "",
        "The simulator starts every user on day 0 and runs as many days as the logs span, at uniform fusion "
        "weights. *logged* ranking replays the logged exposure distribution (the models alone are compared); "
        "*fusion* ranks candidates by the predicted scores, as during RL training.", "",
        "| statistic | logged | " + " | ".join(f"simulated ({k})" for k in sims) + " |",
        "|---|---|" + "---|" * len(sims),
    ]
    for b in BEHAVIOURS:
        lines.append(f"| {b} rate | {_fmt(logged['behaviour_rates'][b], 5)} | "
                     + " | ".join(_fmt(v['behaviour_rates'][b], 5) for v in sims.values()) + " |")
    for key, label in (("session_depth", "requests per session"), ("avg_return_day", "mean return day"),
                       ("day1_retention", "day-1 share of return gaps"),
                       ("active_days_per_user", "active days per user")):
        lines.append(f"| {label} | {_fmt(logged[key], 3)} | " + " | ".join(_fmt(v[key], 3) for v in sims.values())
                     + " |")
    lines.append("| return-day TV distance to logged | 0 | "
                 + " | ".join(_fmt(tv_distance(logged["return_day_hist"], v["return_day_hist"]), 3)
                              for v in sims.values()) + " |")
    k = len(logged["return_day_hist"]) - 1
    lines += ["", "Return-day histogram (share of return gaps):", "",
              "| day | " + " | ".join([str(d) for d in range(1, k + 1)] + [f">{k}"]) + " |",
              "|---|" + "---|" * (k + 1),
              "| logged | " + " | ".join(_fmt(x, 3) for x in logged["return_day_hist"]) + " |"]
    lines += [f"| simulated ({n}) | " + " | ".join(_fmt(x, 3) for x in v["return_day_hist"]) + " |"
              for n, v in sims.items()]
    lines += [""] + [f"![{p[:-4]}]({p})" for p in plots if p != "calibration.png"] + [""]
    path = out / "fit_report.md"
    path.write_text("\n".join(lines))
    return path
