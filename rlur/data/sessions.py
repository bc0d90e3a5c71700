"""Sessions, requests and return gaps from the interaction logs; replay of the simulator's state.

Construction (documented in ``docs/data.md``):

* **Order**: a user's impressions sorted by ``date``, ``time_ms`` and ``video_id``.
* **Session**: a user-day (KuaiRand's convention, ``mode="day"``), or a run of impressions with no
  inactivity gap longer than ``gap_hours`` (``mode="gap"``; a session belongs to the day it starts).
* **Request**: the log has no request id (``hourmin`` is hour-granular), so a session's impressions
  are cut in time order into consecutive chunks of ``slate_size`` (6, KuaiRand's maximum per request);
  the last chunk may be shorter.
* **Return gap** of a session: days from its day to the day of the user's next session (0 = a
  same-day reopen, only with ``mode="gap"``); ``return_time`` is that many days, or for a same-day
  reopen the fractional days between the two sessions. A user's last session is censored (−1).

:func:`replay_history` recomputes, request by request, the state that
:class:`rlur.data.learned_world.LearnedRetentionEnv` tracks (so the models see the same inputs in
training and in simulation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlur.data.kuairand import LogTable

__all__ = ["History", "Sessions", "build_sessions", "logged_statistics", "replay_history", "return_classes"]

MS_PER_DAY = 86_400_000.0
#: Decay per request of the recent-topic memory and its scale, as in the built-in environment.
TOPIC_DECAY = 0.7
TOPIC_SCALE = 0.3
#: Exponential-average weight of the across-session history features (new value weight 1 − EMA).
EMA = 0.7


def _dates_to_days(date: np.ndarray) -> tuple[np.ndarray, np.datetime64]:
    uniq, inv = np.unique(date, return_inverse=True)
    as_dt = np.array([f"{d // 10000:04d}-{d // 100 % 100:02d}-{d % 100:02d}" for d in uniq.tolist()],
                     dtype="datetime64[D]")
    day0 = as_dt.min()
    return (as_dt - day0).astype(np.int64)[inv].astype(np.int32), day0


@dataclass
class Sessions:
    """Logged impressions grouped into requests and sessions (rows sorted; all indices 0-based).

    Rows: ``row_user``/``row_video`` index the feature tables; ``row_flags (n, 8)`` in BEHAVIOURS order;
    ``row_frac`` watch fraction ``clip(play_time / duration, 0, 1)`` (NaN if unknown); ``row_request``.
    Requests: ``req_session``, ``req_pos`` (index within its session), ``req_start``/``req_len`` (rows),
    ``req_resp (n_req, 9)``: mean watch fraction, then each behaviour's rate on the request.
    Sessions: ``sess_user``, ``sess_day``, ``sess_start_req``, ``sess_n_req``, ``sess_opens_today``,
    ``sess_ordinal`` (index within its user), ``sess_return_day`` (−1 censored), ``sess_return_time``.
    """

    mode: str
    gap_hours: float | None
    slate_size: int
    day0: np.datetime64
    n_days: int
    row_user: np.ndarray
    row_video: np.ndarray
    row_flags: np.ndarray
    row_frac: np.ndarray
    row_day: np.ndarray
    row_request: np.ndarray
    req_session: np.ndarray
    req_pos: np.ndarray
    req_start: np.ndarray
    req_len: np.ndarray
    req_resp: np.ndarray
    sess_user: np.ndarray
    sess_day: np.ndarray
    sess_start_req: np.ndarray
    sess_n_req: np.ndarray
    sess_opens_today: np.ndarray
    sess_ordinal: np.ndarray
    sess_return_day: np.ndarray
    sess_return_time: np.ndarray

    @property
    def n_rows(self) -> int:
        return len(self.row_user)

    @property
    def n_requests(self) -> int:
        return len(self.req_session)

    @property
    def n_sessions(self) -> int:
        return len(self.sess_user)


def build_sessions(
    logs: LogTable, user_ids: np.ndarray, video_ids: np.ndarray, video_duration_ms: np.ndarray,
    mode: str = "day", gap_hours: float | None = None, slate_size: int = 6,
) -> Sessions:
    """Group validated logs into requests and sessions (see the module docstring)."""
    if mode not in ("day", "gap"):
        raise ValueError(f"session mode must be 'day' or 'gap', got {mode!r}")
    if mode == "gap" and (gap_hours is None or gap_hours <= 0):
        raise ValueError(f"--session-gap-hours must be positive, got {gap_hours}")
    if len(logs) == 0:
        raise ValueError("no log rows to build sessions from")
    day, day0 = _dates_to_days(logs.date)
    if mode == "day":
        order = np.lexsort((logs.video_id, logs.time_ms, day, logs.user_id))
    else:
        order = np.lexsort((logs.video_id, logs.time_ms, logs.user_id))
    user = _index_of(user_ids, logs.user_id[order])
    video = _index_of(video_ids, logs.video_id[order])
    t = logs.time_ms[order]
    rday = day[order]
    n = len(order)
    new_user = np.ones(n, bool)
    new_user[1:] = user[1:] != user[:-1]
    if mode == "day":
        new_sess = new_user.copy()
        new_sess[1:] |= rday[1:] != rday[:-1]
    else:
        new_sess = new_user.copy()
        new_sess[1:] |= (t[1:] - t[:-1]) > gap_hours * 3_600_000.0
    sess_of_row = np.cumsum(new_sess) - 1
    sess_start_row = np.nonzero(new_sess)[0]
    pos_in_sess = np.arange(n) - sess_start_row[sess_of_row]
    new_req = (pos_in_sess % slate_size) == 0
    row_request = np.cumsum(new_req) - 1
    req_start = np.nonzero(new_req)[0]
    req_len = np.diff(np.append(req_start, n))
    req_session = sess_of_row[req_start]
    req_pos = pos_in_sess[req_start] // slate_size

    flags = logs.flags[order]
    dur = logs.duration_ms[order].astype(np.float64)
    vdur = video_duration_ms[video]
    dur = np.where(np.isfinite(dur) & (dur > 0), dur, vdur)
    play = logs.play_time_ms[order].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(np.isfinite(play) & (dur > 0), np.clip(play / dur, 0.0, 1.0), np.nan)
    fill = float(np.nanmean(frac)) if np.isfinite(frac).any() else 0.0
    per_row = np.concatenate((np.nan_to_num(frac, nan=fill)[:, None], flags.astype(np.float64)), axis=1)
    req_resp = (np.add.reduceat(per_row, req_start, axis=0) / req_len[:, None]).astype(np.float32)

    n_sess = len(sess_start_row)
    sess_start_req = np.nonzero(req_pos == 0)[0]
    sess_n_req = np.diff(np.append(sess_start_req, len(req_start)))
    sess_user = user[sess_start_row]
    sess_day = rday[sess_start_row]
    sess_end_row = np.append(sess_start_row[1:], n) - 1
    # Next session of the same user → return gap.
    same_next = np.zeros(n_sess, bool)
    same_next[:-1] = sess_user[1:] == sess_user[:-1]
    ret_day = np.full(n_sess, -1, np.int64)
    ret_time = np.full(n_sess, np.nan)
    nxt = np.nonzero(same_next)[0]
    gap_days = sess_day[nxt + 1] - sess_day[nxt]
    ret_day[nxt] = gap_days
    frac_days = np.clip((t[sess_start_row[nxt + 1]] - t[sess_end_row[nxt]]) / MS_PER_DAY, 1e-4, 0.9999)
    ret_time[nxt] = np.where(gap_days >= 1, gap_days.astype(np.float64), frac_days)
    # Ordinals: session within its user, and within its (user, day).
    first_of_user = np.ones(n_sess, bool)
    first_of_user[1:] = sess_user[1:] != sess_user[:-1]
    grp = np.cumsum(first_of_user) - 1
    sess_ordinal = np.arange(n_sess) - np.nonzero(first_of_user)[0][grp]
    first_of_day = first_of_user.copy()
    first_of_day[1:] |= sess_day[1:] != sess_day[:-1]
    grp_d = np.cumsum(first_of_day) - 1
    opens = np.arange(n_sess) - np.nonzero(first_of_day)[0][grp_d]
    return Sessions(
        mode=mode, gap_hours=gap_hours if mode == "gap" else None, slate_size=slate_size, day0=day0,
        n_days=int(day.max()) + 1, row_user=user, row_video=video, row_flags=flags,
        row_frac=frac.astype(np.float32), row_day=rday, row_request=row_request, req_session=req_session,
        req_pos=req_pos, req_start=req_start, req_len=req_len, req_resp=req_resp, sess_user=sess_user,
        sess_day=sess_day, sess_start_req=sess_start_req, sess_n_req=sess_n_req, sess_opens_today=opens,
        sess_ordinal=sess_ordinal, sess_return_day=ret_day, sess_return_time=ret_time,
    )


def _index_of(table_ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    order = np.argsort(table_ids, kind="stable")
    return order[np.searchsorted(table_ids[order], values)]


# ----------------------------------------------------------------------------------------------
@dataclass
class History:
    """The environment's state replayed over the logs (inputs of the models).

    Per request: ``*_before`` is the state when the request is served (feedback model); ``*_after``
    after it (leave model, and return model at a session's last request). ``row_rep`` is each
    impression's recent-topic share before its request; ``req_rep`` the mean over the request.
    Per session (before it starts): ``n_sessions``, ``last_return``, ``ema_return``, ``ema_depth``,
    ``ema_quality``. ``user_concentration`` is each user's top-3 topic share among clicked videos.
    """

    row_rep: np.ndarray
    req_rep: np.ndarray
    req_sum_before: np.ndarray
    req_last_before: np.ndarray
    req_last_rep_before: np.ndarray
    req_sum_after: np.ndarray
    req_leave: np.ndarray
    sess_n_sessions: np.ndarray
    sess_last_return: np.ndarray
    sess_ema_return: np.ndarray
    sess_ema_depth: np.ndarray
    sess_ema_quality: np.ndarray
    user_concentration: np.ndarray


def replay_history(s: Sessions, row_topic: np.ndarray, n_topics: int, n_users: int,
                   inits: tuple[float, float, float]) -> History:
    """Replay the per-user state; ``inits`` = initial (ema_return, ema_depth, ema_quality)."""
    # Recent-topic memory within a session: loop over request positions, vectorised over sessions.
    state = np.zeros((s.n_sessions, n_topics), np.float32)
    row_pos = s.req_pos[s.row_request]
    by_pos = np.argsort(row_pos, kind="stable")
    bounds = np.searchsorted(row_pos[by_pos], np.arange(int(row_pos.max()) + 2))
    req_by_pos = np.argsort(s.req_pos, kind="stable")
    rbounds = np.searchsorted(s.req_pos[req_by_pos], np.arange(int(row_pos.max()) + 2))
    row_rep = np.zeros(s.n_rows, np.float32)
    row_sess = s.req_session[s.row_request]
    for t in range(len(bounds) - 1):
        rows = by_pos[bounds[t]:bounds[t + 1]]
        reqs = req_by_pos[rbounds[t]:rbounds[t + 1]]
        rs, tp = row_sess[rows], row_topic[rows]
        row_rep[rows] = np.minimum(state[rs, tp] * TOPIC_SCALE, 1.0)
        state[s.req_session[reqs]] *= TOPIC_DECAY
        np.add.at(state, (rs, tp), 1.0 / s.slate_size)
    req_rep = (np.add.reduceat(row_rep, s.req_start) / s.req_len).astype(np.float32)

    # Within-session sums before/after each request.
    cum = np.cumsum(s.req_resp.astype(np.float64), axis=0)
    start_cum = np.where(s.sess_start_req[:, None] > 0, cum[np.maximum(s.sess_start_req - 1, 0)], 0.0)
    after = cum - start_cum[s.req_session]
    before = after - s.req_resp
    first = s.req_pos == 0
    prev = np.maximum(np.arange(s.n_requests) - 1, 0)
    last_before = np.where(first[:, None], 0.0, s.req_resp[prev])
    last_rep_before = np.where(first, 0.0, req_rep[prev])
    leave = np.zeros(s.n_requests, np.uint8)
    leave[np.append(s.sess_start_req[1:], s.n_requests) - 1] = 1

    # Across-session history, a loop over each user's session ordinal (vectorised over users).
    n = s.n_sessions
    depth = s.sess_n_req.astype(np.float64)
    sess_last_req = s.sess_start_req + s.sess_n_req - 1
    quality = (after[sess_last_req, 2] / depth)  # mean long-view rate over the session's requests
    n_sess = s.sess_ordinal.astype(np.float64)
    last_ret = np.zeros(n)
    ema_ret, ema_dep, ema_q = (np.full(n, v, np.float64) for v in inits)
    prev_s = np.nonzero(s.sess_ordinal > 0)[0]
    by_ord = prev_s[np.argsort(s.sess_ordinal[prev_s], kind="stable")]
    obounds = np.searchsorted(s.sess_ordinal[by_ord], np.arange(1, int(s.sess_ordinal.max()) + 2))
    for k in range(len(obounds) - 1):
        cur = by_ord[obounds[k]:obounds[k + 1]]
        p = cur - 1
        rt = np.nan_to_num(s.sess_return_time[p])
        last_ret[cur] = rt
        ema_ret[cur] = EMA * ema_ret[p] + (1 - EMA) * rt
        ema_dep[cur] = EMA * ema_dep[p] + (1 - EMA) * depth[p]
        ema_q[cur] = EMA * ema_q[p] + (1 - EMA) * quality[p]

    # Each user's top-3 topic share among clicked impressions (all impressions if none clicked).
    clicked = s.row_flags[:, 0] > 0
    counts = np.zeros((n_users, n_topics))
    np.add.at(counts, (s.row_user[clicked], row_topic[clicked]), 1.0)
    none = counts.sum(1) == 0
    if none.any():
        all_counts = np.zeros((n_users, n_topics))
        np.add.at(all_counts, (s.row_user, row_topic), 1.0)
        counts[none] = all_counts[none]
    tot = counts.sum(1)
    top3 = np.sort(counts, axis=1)[:, -3:].sum(1)
    conc = np.where(tot > 0, top3 / np.maximum(tot, 1), np.nan)
    conc = np.nan_to_num(conc, nan=float(np.nanmean(conc)) if np.isfinite(conc).any() else 0.5)
    f32 = np.float32
    return History(
        row_rep=row_rep, req_rep=req_rep, req_sum_before=before.astype(f32), req_last_before=last_before.astype(f32),
        req_last_rep_before=last_rep_before.astype(f32), req_sum_after=after.astype(f32), req_leave=leave,
        sess_n_sessions=n_sess.astype(f32), sess_last_return=last_ret.astype(f32), sess_ema_return=ema_ret.astype(f32),
        sess_ema_depth=ema_dep.astype(f32), sess_ema_quality=ema_q.astype(f32), user_concentration=conc.astype(f32),
    )


def return_classes(return_day: np.ndarray, max_return_day: int) -> np.ndarray:
    """Return day → class: 0 same day, 1..K, K + 1 for '>K'."""
    return np.minimum(return_day, max_return_day + 1)


def logged_statistics(s: Sessions, max_return_day: int = 10, depth_bins: int = 10) -> dict:
    """Statistics the simulator should reproduce: behaviour rates, session depth, return days."""
    from rlur.sim.world import BEHAVIOURS

    gaps = s.sess_return_day[s.sess_return_day >= 1]
    k = max_return_day
    hist = np.bincount(np.minimum(gaps, k + 1) - 1, minlength=k + 1)[: k + 1].astype(np.float64)
    depth_hist = np.bincount(np.minimum(s.sess_n_req, depth_bins) - 1, minlength=depth_bins).astype(np.float64)
    observed = s.sess_return_day >= 0
    active_days = len(np.unique(s.sess_user.astype(np.int64) * 100_000 + s.sess_day))
    return {
        "rows": s.n_rows, "requests": s.n_requests, "sessions": s.n_sessions,
        "users": len(np.unique(s.sess_user)), "days": s.n_days,
        "behaviour_rates": {b: float(s.row_flags[:, i].mean()) for i, b in enumerate(BEHAVIOURS)},
        "watch_fraction": float(np.nanmean(s.row_frac)) if np.isfinite(s.row_frac).any() else float("nan"),
        "impressions_per_request": float(s.req_len.mean()),
        "session_depth": float(s.sess_n_req.mean()),
        "session_depth_hist": (depth_hist / depth_hist.sum()).tolist(),
        "return_gaps": len(gaps),
        "avg_return_day": float(gaps.mean()) if len(gaps) else float("nan"),
        "day1_retention": float((gaps == 1).mean()) if len(gaps) else float("nan"),
        "return_day_hist": (hist / max(hist.sum(), 1)).tolist(),
        "same_day_reopen_share": float((s.sess_return_day[observed] == 0).mean()) if observed.any() else 0.0,
        "active_days_per_user": active_days / max(1, len(np.unique(s.sess_user))),
    }
