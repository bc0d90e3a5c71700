"""The summary of an ``rlur live`` run: retention per simulated day by arm, the lift with its CI, label
delays, conservation of requests, versions published. Written to ``OUT/live.json``, ``OUT/report.md``
and ``OUT/curve.png``; the statistics are ``rlur.abtest.analysis``'s (delta method, users as units).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy import stats as _st

from rlur.abtest.analysis import analyze, metric_arrays, ratio_stats, relative_lift
from rlur.abtest.experiment import UserDayTable
from rlur.live.events import connect
from rlur.live.joiner import CENSORED, CLOSED, JOINED
from rlur.training.checkpoint import atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:
    from rlur.live.rehearsal import LiveRun

__all__ = ["daily_metrics", "label_stats", "latency_stats", "summarise", "window_lifts"]

_Z = float(_st.norm.ppf(0.975))
DAILY_METRICS = ("avg_return_day", "day1_retention")


def daily_metrics(table: UserDayTable, arm: np.ndarray) -> dict[str, Any]:
    """Per day and arm: each metric's value with a 95 % CI, and the relative lift (treatment / control)."""
    arm = np.asarray(arm)
    out: dict[str, Any] = {"day": list(range(table.days))}
    for name in DAILY_METRICS:
        if name == "day1_retention" and table.days < 2:
            continue
        num, den = metric_arrays(table, name, daily=True)
        entry: dict[str, Any] = {}
        for a, label in ((0, "control"), (1, "treatment")):
            r, var = ratio_stats(num[arm == a], den[arm == a])
            half = _Z * np.sqrt(var)
            entry[label] = {"value": r.tolist(), "ci_low": (r - half).tolist(), "ci_high": (r + half).tolist()}
        lift = relative_lift((num[arm == 0], den[arm == 0]), (num[arm == 1], den[arm == 1]))
        entry["lift"] = {k: lift[k].tolist() for k in ("estimate", "ci_low", "ci_high", "p_value")}
        out[name] = entry
    return out


def _subtable(table: UserDayTable, first: int, last: int) -> UserDayTable:
    cols = {f.name: getattr(table, f.name) for f in dataclasses.fields(table)}
    return UserDayTable(**{k: v if k == "group" else v[:, first:last] for k, v in cols.items()})


def window_lifts(table: UserDayTable, arm: np.ndarray, first: int, last: int) -> dict[str, Any]:
    """Lifts of every A/B metric over days ``first … last − 1`` (``rlur.abtest.analysis.analyze``)."""
    res = analyze(_subtable(table, first, last), np.asarray(arm), daily=False)
    return {"days": [first, last - 1], "lifts": res["lifts"], "srm": res["srm"]}


def label_stats(joiner_db: Path, events_db: Path) -> dict[str, Any]:
    """Conservation (every served request is exactly one transition) and label delays."""
    ev = connect(events_db, readonly=True)
    jn = connect(joiner_db, readonly=True)
    try:
        served = int(ev.execute("SELECT COUNT(*) FROM requests").fetchone()[0])
        rows = np.asarray(jn.execute(
            "SELECT session_end, censored, ts, label_ts, logged_wall, COALESCE(label_wall, joined_wall), joined_wall "
            "FROM transitions").fetchall(), dtype=np.float64).reshape(-1, 7)
        distinct = int(jn.execute("SELECT COUNT(DISTINCT request_id) FROM transitions").fetchone()[0])
        pending = int(jn.execute("SELECT COUNT(*) FROM pending").fetchone()[0])
        by_version = ev.execute("SELECT arm, version, COUNT(*) FROM requests GROUP BY arm, version").fetchall()
    finally:
        ev.close()
        jn.close()
    end, cens = rows[:, 0] == 1, rows[:, 1]
    delay_h = (rows[:, 3] - rows[:, 2]) / 3600.0
    counts = {"joined": int((cens == JOINED).sum()), "censored": int((cens == CENSORED).sum()),
              "closed": int((cens == CLOSED).sum())}
    done = cens != CLOSED
    return {
        "served_requests": served, "transitions": len(rows), "distinct_request_ids": distinct, "pending": pending,
        **counts, "conserved": served == len(rows) == distinct and pending == 0,
        "session_ends": int(end.sum()),
        "censored_share_of_session_ends": counts["censored"] / max(1, int((end & done).sum())),
        "delay_sim_hours": {
            "return_labels": _pct(delay_h[end & (cens == JOINED)]),
            "censored_labels": _pct(delay_h[cens == CENSORED]),
            "within_session": _pct(delay_h[~end & done]),
        },
        "wall_seconds": {
            "request_to_transition": _pct(rows[done, 6] - rows[done, 4]),
            "label_to_transition": _pct(rows[done, 6] - rows[done, 5]),
        },
        "requests_by_version": [{"arm": int(a), "version": int(v), "requests": int(c)} for a, v, c in by_version],
    }


def latency_stats(out: Path) -> dict[str, Any]:
    """End-to-end label latency in wall seconds, from the moment a transition's label was logged to the moment
    the joiner wrote it, the trainer put it in its replay buffer, and a published version had trained on it.

    Uses the joiner's table, ``trainer/consumed.csv`` (cursor and time of every chunk the trainer read) and the
    published versions' cursors in ``trainer/state.pt``; only the transitions the trainer trains on count.
    """
    import json

    cfg = json.loads((out / "config.json").read_text())
    arm = "AND arm = 1" if cfg.get("trainer", {}).get("train_arms") == "treatment" else ""
    jn = connect(out / "joiner.sqlite", readonly=True)
    try:
        rows = np.asarray(jn.execute(
            f"SELECT tseq, COALESCE(label_wall, joined_wall), joined_wall FROM transitions WHERE censored != {CLOSED} "
            f"{arm} ORDER BY tseq").fetchall(), dtype=np.float64).reshape(-1, 3)
    finally:
        jn.close()
    tseq, label, joined = rows[:, 0], rows[:, 1], rows[:, 2]
    res: dict[str, Any] = {"label_to_transition": _pct(joined - label)}
    consumed = out / "trainer" / "consumed.csv"
    if consumed.exists():
        c = np.loadtxt(consumed, delimiter=",", ndmin=2)
        res["label_to_trainer"] = _first_after(tseq, label, c[:, 0], c[:, 1])
    published = _trainer_published(out)
    if published and "cursor" in published[0]:
        res["label_to_published_version"] = _first_after(
            tseq, label, np.array([p["cursor"] for p in published], float), np.array([p["wall"] for p in published]))
    return res


def _first_after(tseq: np.ndarray, label: np.ndarray, cursor: np.ndarray, wall: np.ndarray) -> dict[str, Any]:
    """Latency of each transition to the first event (cursor, wall) whose cursor covers it."""
    cursor = np.maximum.accumulate(cursor)  # after a restart a cursor can repeat: keep the first time it was reached
    pos = np.searchsorted(cursor, tseq, side="left")
    ok = pos < len(cursor)
    return _pct(wall[pos[ok]] - label[ok])


def _pct(x: np.ndarray) -> dict[str, float | int]:
    if len(x) == 0:
        return {"n": 0}
    p = np.percentile(x, [50, 90, 99])
    return {"n": len(x), "mean": float(x.mean()), "p50": float(p[0]), "p90": float(p[1]), "p99": float(p[2]),
            "max": float(x.max())}


def summarise(run: LiveRun, table: UserDayTable, arm: np.ndarray, sim: dict[str, Any]) -> dict[str, Any]:
    """Build, print and write the run's summary."""
    from rlur.live.rehearsal import read_progress
    from rlur.live.trainer import PolicyStore

    cfg, out = run.cfg, run.out
    days = cfg.days
    w = cfg.final_window
    trainer_state = _trainer_published(out)
    summary: dict[str, Any] = {
        "config": {**cfg.to_dict(), "horizon_days_resolved": run.k_horizon},
        "users": {"control": int((arm == 0).sum()), "treatment": int((arm == 1).sum())},
        "daily": daily_metrics(table, arm),
        "final": window_lifts(table, arm, days - w, days),
        "whole_run": window_lifts(table, arm, 0, days),
        "first_day": window_lifts(table, arm, 0, 1) if days > 1 else None,
        "labels": label_stats(run.paths["joiner"], run.paths["events"]),
        "latency_wall_seconds": latency_stats(out),
        "versions": {"published": len(PolicyStore(out).versions()) - 1, "timeline": trainer_state,
                     "served_at_end_of_day": sim.pop("versions_served")},
        "trainer": read_progress(out),
        "timing": {**sim, "requests_per_s": sim["requests"] / max(sim["sim_seconds"], 1e-9)},
    }
    atomic_write_json(summary, out / "live.json")
    atomic_write_bytes(render_markdown(summary).encode(), out / "report.md")
    try:
        plot_curve(summary, out / "curve.png")
    except Exception as err:  # pragma: no cover - plotting is a convenience
        summary["plot_error"] = str(err)
    if run.progress:
        print(render_markdown(summary))
    return summary


def _trainer_published(out: Path) -> list[dict[str, Any]]:
    path = out / "trainer" / "state.pt"
    if not path.exists():
        return []
    return list(torch.load(path, map_location="cpu", weights_only=False).get("published", []))


def _fmt_ci(v: float, lo: float, hi: float, pct: bool = False) -> str:
    if pct:
        return f"{100 * v:+.2f} % [{100 * lo:+.2f}, {100 * hi:+.2f}]"
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def render_markdown(s: dict[str, Any]) -> str:
    """The summary as Markdown tables."""
    d, lines = s["daily"], []
    cfg = s["config"]
    lines += [f"# rlur live: {cfg['users']} users × {cfg['days']} simulated days, start `{cfg['start']}`, "
              f"algo `{cfg['trainer']['algo']}`, server `{cfg['server']}`", ""]
    lines += ["## Retention per simulated day (95 % CIs; control = frozen starting policy)", "",
              "| day | return day: control | treatment | day-1 retention: control | treatment | treatment version |",
              "|---|---|---|---|---|---|"]
    rd, r1 = d["avg_return_day"], d.get("day1_retention")
    for t in d["day"]:
        cells = [str(t)]
        for m in (rd, r1):
            for a in ("control", "treatment"):
                if m is None or t >= len(m[a]["value"]) or not np.isfinite(m[a]["value"][t]):
                    cells.append("—")
                else:
                    cells.append(_fmt_ci(m[a]["value"][t], m[a]["ci_low"][t], m[a]["ci_high"][t]))
        cells.append(str(s["versions"]["served_at_end_of_day"][t]))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Lift of treatment over control (relative, delta method, 95 % CI)", "",
              "| window | avg return day ↓ | day-1 retention ↑ | app opens ↑ | DAU ↑ |", "|---|---|---|---|---|"]
    for key, label in (("first_day", "first day"), ("final", "final"), ("whole_run", "whole run")):
        win = s.get(key)
        if not win:
            continue
        cells = [f"{label} (days {win['days'][0]}–{win['days'][1]})"]
        for m in ("avg_return_day", "day1_retention", "app_opens", "dau"):
            lift = win["lifts"].get(m)
            cells.append("—" if lift is None else _fmt_ci(lift["estimate"], lift["ci_low"], lift["ci_high"], pct=True)
                         + f", p={lift['p_value']:.2g}")
        lines.append("| " + " | ".join(cells) + " |")
    fin = s["final"]["lifts"]
    ctrl, trt = fin["avg_return_day"]["control"], fin["avg_return_day"]["treatment"]
    lines += ["", f"Final window: average return day {ctrl:.3f} (control) → {trt:.3f} (treatment); day-1 retention "
              + (f"{fin['day1_retention']['control']:.3f} → {fin['day1_retention']['treatment']:.3f}."
                 if "day1_retention" in fin else "n/a (window of one day).")]
    lab = s["labels"]
    lines += ["", "## Labels", "",
              f"Served requests {lab['served_requests']:,} = joined {lab['joined']:,} + censored {lab['censored']:,} + "
              f"closed at the end {lab['closed']:,} (transitions {lab['transitions']:,}, distinct request ids "
              f"{lab['distinct_request_ids']:,}, pending {lab['pending']}): "
              + ("**conserved**." if lab["conserved"] else "**NOT conserved**."),
              f"Censored (no return within K = {cfg['horizon_days_resolved']} days): "
              f"{100 * lab['censored_share_of_session_ends']:.2f} % of session ends.", "",
              "| label delay | n | mean | p50 | p90 | p99 |", "|---|---|---|---|---|---|"]
    for key, label in (("return_labels", "return label, simulated hours"),
                       ("censored_labels", "censored label, simulated hours"),
                       ("within_session", "next request in session, simulated hours")):
        lines.append(_pct_row(label, lab["delay_sim_hours"][key]))
    lines.append(_pct_row("request logged → transition written, wall s",
                          lab["wall_seconds"]["request_to_transition"]))
    for key, label in (("label_to_transition", "label logged → transition written, wall s"),
                       ("label_to_trainer", "label logged → in the trainer's buffer, wall s"),
                       ("label_to_published_version", "label logged → in a published version, wall s")):
        if key in s.get("latency_wall_seconds", {}):
            lines.append(_pct_row(label, s["latency_wall_seconds"][key]))
    tm, vs = s["timing"], s["versions"]
    lines += ["", "## Versions and timing", "",
              f"Versions published: {vs['published']} (trainer: {s['trainer'].get('updates', 0)} updates on "
              f"{s['trainer'].get('transitions', 0):,} transitions). Simulated {tm['requests']:,} requests in "
              f"{tm['steps']:,} batched steps at {tm['requests_per_s']:,.0f} requests/s; back-pressure waits "
              f"{tm['wait_seconds']:.1f} s; drain {tm.get('drain_seconds', 0):.1f} s; wall {tm['wall_seconds']:.1f} s; "
              f"role restarts {tm['restarts']}."]
    return "\n".join(lines) + "\n"


def _pct_row(label: str, p: dict[str, Any]) -> str:
    if not p.get("n"):
        return f"| {label} | 0 | — | — | — | — |"
    return f"| {label} | {p['n']:,} | {p['mean']:.3g} | {p['p50']:.3g} | {p['p90']:.3g} | {p['p99']:.3g} |"


def plot_curve(s: dict[str, Any], path: Path) -> None:
    """Average return day and day-1 retention per simulated day, both arms with 95 % CI bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = s["daily"]
    metrics = [m for m in DAILY_METRICS if m in d]
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4), squeeze=False)
    for ax, m in zip(axes[0], metrics, strict=True):
        for a, colour in (("control", "tab:blue"), ("treatment", "tab:red")):
            v = np.asarray(d[m][a]["value"], dtype=float)
            x = np.arange(len(v))
            ax.plot(x, v, color=colour, label=f"{a}" + (" (frozen start)" if a == "control" else " (live RLUR)"))
            ax.fill_between(x, d[m][a]["ci_low"], d[m][a]["ci_high"], color=colour, alpha=0.2)
        ax.set_xlabel("simulated day")
        ax.set_ylabel({"avg_return_day": "average return day (↓)", "day1_retention": "day-1 retention (↑)"}[m])
        ax.grid(alpha=0.3)
        ax.legend()
    cfg = s["config"]
    fig.suptitle(f"rlur live: {cfg['users']} users, start {cfg['start']}, {s['versions']['published']} versions")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

