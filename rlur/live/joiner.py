"""The label joiner: events in, training transitions out, exactly once.

A request becomes a transition ``(s, a, μ_b, σ_b, log p_b, feedback, s', session_end, T)`` when its
labels are in:

* its **immediate feedback** joins it (by request id);
* the user's **next request** is ``s'``. Within a session that is the next request of the session;
  after a session's last request it is the first request of the next session (paper §2: the state
  chain runs across sessions);
* the **last request of a session** gets its **returning time** ``T`` when the user's next session
  starts. ``T`` is counted in days, as the simulator and the paper count it: the number of calendar
  days between the two sessions when they fall on different days, else the gap in days
  (``(ts_start − ts_end) / 86400``);
* **censoring**: when no session has started by the end of day ``day_end + K`` (``K`` = the
  censoring horizon, default the simulator's ``max_return_day`` = 10), the label is *censored*:
  ``censored = 1``, ``T = K``, ``s' = s``. A return after ``K`` days is censored the same way, so the
  outcome does not depend on when the joiner ran. RLUR's reward then treats the session as the
  worst return it can label (``r = −K``, or ``−clip(K / …)`` normalised: the largest ``T``), in the
  trainer as here;
* when the log is **closed** (the rehearsal ends), requests still waiting get ``censored = 2``
  (``T`` unknown): they are counted, never trained on.

So every logged request ends as exactly one transition: joined (``censored = 0``), censored (1) or
closed (2).

**Crash safety.** The joiner's state (its offset in the event log, the requests still waiting, the
session starts it has seen) lives in its own SQLite file, and each round writes the new transitions,
the changed state and the new offset in **one transaction**. A joiner killed at any point restarts
from the last committed offset and redoes the interrupted round: nothing is lost, and since
``transitions.request_id`` is UNIQUE nothing can be written twice. A round's output depends only on
the events (in sequence order), never on timing, so an interrupted run writes the same transitions
as an uninterrupted one. The joining itself is set-based SQL (one statement per step, no Python loop
over requests).
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlur.live.events import SECONDS_PER_DAY, EventBatch, EventLog, connect

__all__ = ["JoinerStats", "LabelJoiner", "TransitionRows", "read_transitions"]

#: ``censored`` values of a transition.
JOINED, CENSORED, CLOSED = 0, 1, 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS joiner_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
    request_seq INTEGER PRIMARY KEY, request_id INTEGER NOT NULL UNIQUE, user_id INTEGER NOT NULL,
    session_id INTEGER NOT NULL, ts INTEGER NOT NULL, day INTEGER NOT NULL, arm INTEGER NOT NULL,
    version INTEGER NOT NULL, wall REAL NOT NULL, feedback BLOB, is_end INTEGER NOT NULL DEFAULT 0,
    next_seq INTEGER, next_session INTEGER, next_ts INTEGER, next_wall REAL
);
CREATE INDEX IF NOT EXISTS pending_user ON pending (user_id, request_seq);
CREATE TABLE IF NOT EXISTS starts (
    seq INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, session_id INTEGER NOT NULL, ts INTEGER NOT NULL,
    day INTEGER NOT NULL, wall REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS starts_user ON starts (user_id, seq);
CREATE TABLE IF NOT EXISTS transitions (
    tseq INTEGER PRIMARY KEY, request_seq INTEGER NOT NULL UNIQUE, request_id INTEGER NOT NULL UNIQUE,
    next_seq INTEGER, user_id INTEGER NOT NULL, session_id INTEGER NOT NULL, arm INTEGER NOT NULL,
    version INTEGER NOT NULL, ts INTEGER NOT NULL, day INTEGER NOT NULL, session_end INTEGER NOT NULL,
    censored INTEGER NOT NULL, return_time REAL, label_ts INTEGER NOT NULL, feedback BLOB,
    logged_wall REAL NOT NULL, label_wall REAL, joined_wall REAL NOT NULL
);
"""

# Link each waiting request to the user's next request (the smallest later request sequence number);
# a next request in another session makes it the last of its session.
_LINK = """
UPDATE pending SET next_seq = n.request_seq, next_session = n.session_id, next_ts = n.ts, next_wall = n.wall,
    is_end = CASE WHEN n.session_id != pending.session_id THEN 1 ELSE pending.is_end END
FROM (SELECT p.request_seq AS prev,
             (SELECT MIN(q.request_seq) FROM pending q WHERE q.user_id = p.user_id AND q.request_seq > p.request_seq)
             AS nxt
      FROM pending p WHERE p.next_seq IS NULL) AS link
JOIN pending n ON n.request_seq = link.nxt
WHERE pending.request_seq = link.prev
"""

# Every waiting request whose transition is complete, with its outcome and labels. The returning time
# of a session end comes from the user's first session start after it.
_READY = """
WITH c AS (
    SELECT p.*, s.ts AS s_ts, s.wall AS s_wall,
           CASE WHEN s.seq IS NULL THEN NULL
                WHEN s.day > p.day THEN CAST(s.day - p.day AS REAL)
                ELSE (s.ts - p.ts) / 86400.0 END AS rt
    FROM pending p LEFT JOIN starts s ON s.seq = (
        SELECT MIN(seq) FROM starts WHERE user_id = p.user_id AND seq > p.request_seq)
), d AS (
    SELECT c.*, CASE
        WHEN feedback IS NOT NULL AND is_end = 0 AND next_seq IS NOT NULL THEN 0
        WHEN feedback IS NOT NULL AND is_end = 1 AND rt IS NOT NULL AND rt <= :k AND next_seq IS NOT NULL THEN 0
        WHEN feedback IS NOT NULL AND is_end = 1 AND rt IS NOT NULL AND rt > :k THEN 1
        WHEN feedback IS NOT NULL AND is_end = 1 AND rt IS NULL AND :clock >= (day + :k + 1) * 86400 THEN 1
        WHEN :closed THEN 2
        END AS outcome
    FROM c
)
INSERT INTO transitions (request_seq, request_id, next_seq, user_id, session_id, arm, version, ts, day,
                         session_end, censored, return_time, label_ts, feedback, logged_wall, label_wall,
                         joined_wall)
SELECT request_seq, request_id,
       CASE WHEN outcome = 0 THEN next_seq END,
       user_id, session_id, arm, version, ts, day,
       CASE WHEN outcome = 0 THEN is_end ELSE 1 END,
       outcome,
       CASE WHEN outcome = 0 AND is_end = 1 THEN rt WHEN outcome = 0 THEN 0.0 WHEN outcome = 1 THEN :k END,
       CASE WHEN outcome = 0 AND is_end = 1 THEN s_ts WHEN outcome = 0 THEN next_ts
            WHEN outcome = 1 THEN (day + :k + 1) * 86400 ELSE :closed_ts END,
       feedback, wall,
       CASE WHEN outcome = 0 AND is_end = 1 THEN s_wall WHEN outcome = 0 THEN next_wall ELSE :wall END,
       :wall
FROM d WHERE outcome IS NOT NULL ORDER BY request_seq
"""


@dataclass
class JoinerStats:
    """What one round did."""

    events: int
    transitions: int
    offset: int
    pending: int
    finished: bool


class LabelJoiner:
    """Turns the events of an :class:`~rlur.live.events.EventLog` into transitions in ``path`` (SQLite).

    Args:
        log: the event log (read only).
        path: the joiner's own database (transitions, offset, waiting requests).
        horizon_days: K, the censoring horizon in days.
        batch_events: events read per round (a round is one transaction).
    """

    def __init__(self, log: EventLog, path: str | Path, horizon_days: int = 10, batch_events: int = 50_000) -> None:
        if horizon_days < 1:
            raise ValueError(f"the censoring horizon must be at least 1 day, got {horizon_days}")
        self.log, self.path, self.k = log, Path(path), int(horizon_days)
        self.batch_events = int(batch_events)
        self.conn = connect(self.path)
        self.conn.executescript(_SCHEMA)
        state = self._state()
        if "horizon_days" in state and int(state["horizon_days"]) != self.k:
            raise ValueError(f"{self.path} was joined with K = {state['horizon_days']} days, not {self.k}")
        self._set({"horizon_days": self.k}, commit=True)

    # --- durable state -------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM joiner_meta")}

    def _set(self, values: dict[str, Any], commit: bool = False) -> None:
        sql = "INSERT INTO joiner_meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"
        rows = [(k, json.dumps(v)) for k, v in values.items()]
        if commit:
            with self.conn:
                self.conn.executemany(sql, rows)
        else:
            self.conn.executemany(sql, rows)

    @property
    def offset(self) -> int:
        return int(self._state().get("offset", 0))

    @property
    def finished(self) -> bool:
        return bool(self._state().get("finished", False))

    # --- one round -----------------------------------------------------------------------------
    def step(self) -> JoinerStats:
        """Read the next events, join what is complete, commit transitions and offset together."""
        state = self._state()
        offset, clock = int(state.get("offset", 0)), int(state.get("clock", 0))
        closed_ts = state.get("closed_ts")
        head = self.log.head()
        upto = min(head, offset + self.batch_events)
        if upto <= offset:
            return JoinerStats(0, 0, offset, self.pending(), bool(state.get("finished", False)))
        batch = self.log.read(offset, upto)
        clock = max(clock, batch.clock or 0)
        if batch.closed_at is not None:
            closed_ts = batch.closed_at
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            self._apply(batch)
            before = c.execute("SELECT COALESCE(MAX(tseq), 0) FROM transitions").fetchone()[0]
            c.execute(_READY, {"k": self.k, "clock": clock, "closed": int(closed_ts is not None),
                               "closed_ts": closed_ts, "wall": time.time()})
            c.execute("DELETE FROM pending WHERE request_seq IN (SELECT request_seq FROM transitions WHERE tseq > ?)",
                      (before,))
            written = c.execute("SELECT COALESCE(MAX(tseq), 0) FROM transitions").fetchone()[0] - before
            finished = closed_ts is not None and c.execute("SELECT COUNT(*) FROM pending").fetchone()[0] == 0
            values: dict[str, Any] = {"offset": upto, "clock": clock, "finished": finished}
            if closed_ts is not None:
                values["closed_ts"] = closed_ts
            self._set(values)
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        return JoinerStats(upto - offset, int(written), upto, self.pending(), finished)

    def _apply(self, b: EventBatch) -> None:
        """Put a batch's events into the joiner's tables (inside the round's transaction)."""
        c, r = self.conn, b.requests
        if len(r):
            c.executemany("INSERT INTO pending (request_seq, request_id, user_id, session_id, ts, day, arm, version, "
                          "wall) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", zip(
                              r.seq.tolist(), r.request_id.tolist(), r.user_id.tolist(), r.session_id.tolist(),
                              r.ts.tolist(), r.day.tolist(), r.arm.tolist(), r.version.tolist(), r.wall.tolist(),
                              strict=True))
        f = b.feedback
        if len(f):
            rows = np.ascontiguousarray(f.values, dtype=np.float32)
            c.executemany("UPDATE pending SET feedback = ? WHERE request_id = ?",
                          zip([row.tobytes() for row in rows], f.request_id.tolist(), strict=True))
        if len(b.ends):
            c.executemany("UPDATE pending SET is_end = 1 WHERE request_id = ?",
                          ((i,) for i in b.ends.request_id.tolist()))
        s = b.starts
        if len(s):
            c.executemany("INSERT INTO starts VALUES (?, ?, ?, ?, ?, ?)", zip(
                s.seq.tolist(), s.user_id.tolist(), s.session_id.tolist(), s.ts.tolist(), s.day.tolist(),
                s.wall.tolist(), strict=True))
        if len(r):
            c.execute(_LINK)

    def pending(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM pending").fetchone()[0])

    def counts(self) -> dict[str, int]:
        """Transitions by outcome: ``joined``, ``censored``, ``closed``, and ``pending`` requests."""
        rows = dict(self.conn.execute("SELECT censored, COUNT(*) FROM transitions GROUP BY censored").fetchall())
        return {"joined": int(rows.get(JOINED, 0)), "censored": int(rows.get(CENSORED, 0)),
                "closed": int(rows.get(CLOSED, 0)), "pending": self.pending()}

    # --- the process -----------------------------------------------------------------------------
    def run(self, poll_seconds: float = 0.05, until_finished: bool = True, max_rounds: int | None = None,
            on_round: Any = None) -> int:
        """Join rounds until the log is closed and nothing waits (or SIGTERM); returns transitions written."""
        stop = _StopFlag()
        total = rounds = 0
        while not stop.set:
            st = self.step()
            total += st.transitions
            rounds += 1
            if on_round is not None:
                on_round(st)
            if (until_finished and st.finished) or (max_rounds is not None and rounds >= max_rounds):
                break
            if st.events < self.batch_events:
                time.sleep(poll_seconds)
        return total

    def close(self) -> None:
        self.conn.close()


class _StopFlag:
    """Set by SIGTERM/SIGINT so a role process finishes its round and exits (SIGKILL needs no help)."""

    def __init__(self) -> None:
        self.set = False
        try:
            signal.signal(signal.SIGTERM, self._handler)
        except ValueError:  # not the main thread
            pass

    def _handler(self, *_: object) -> None:
        self.set = True


# ---------------------------------------------------------------------------------------------
@dataclass
class TransitionRows:
    """Joined transitions (n rows) as the joiner wrote them, plus the request payloads they reference."""

    tseq: np.ndarray
    request_seq: np.ndarray
    next_seq: np.ndarray
    """``(n,)`` int64, −1 where ``s' = s`` (censored)."""
    arm: np.ndarray
    version: np.ndarray
    ts: np.ndarray
    session_end: np.ndarray
    censored: np.ndarray
    return_time: np.ndarray
    """``(n,)`` float64 days; NaN for closed rows."""
    label_ts: np.ndarray
    feedback: np.ndarray
    """``(n, 1 + R)`` float32 (zeros where no feedback arrived)."""
    logged_wall: np.ndarray
    label_wall: np.ndarray
    joined_wall: np.ndarray

    def __len__(self) -> int:
        return len(self.tseq)

    def subset(self, keep: np.ndarray) -> TransitionRows:
        """The rows where ``keep`` (a boolean mask or indices)."""
        return TransitionRows(**{f.name: getattr(self, f.name)[keep] for f in dataclasses.fields(self)})


def read_transitions(conn: sqlite3.Connection, after: int = 0, limit: int = -1, n_feedback: int = 9) -> TransitionRows:
    """Transitions with ``tseq > after`` in ``tseq`` order (at most ``limit``; −1: all)."""
    rows = conn.execute(
        "SELECT tseq, request_seq, COALESCE(next_seq, -1), arm, version, ts, session_end, censored, return_time, "
        "label_ts, feedback, logged_wall, label_wall, joined_wall FROM transitions WHERE tseq > ? ORDER BY tseq "
        "LIMIT ?", (int(after), int(limit))).fetchall()
    zeros = bytes(4 * n_feedback)
    fb = np.frombuffer(b"".join(r[10] if r[10] is not None else zeros for r in rows), dtype=np.float32)

    def col(i: int, dtype: Any = np.int64) -> np.ndarray:
        return np.fromiter((np.nan if r[i] is None else r[i] for r in rows), dtype=dtype, count=len(rows))

    return TransitionRows(
        tseq=col(0), request_seq=col(1), next_seq=col(2), arm=col(3), version=col(4), ts=col(5),
        session_end=col(6), censored=col(7), return_time=col(8, np.float64), label_ts=col(9),
        feedback=fb.reshape(len(rows), n_feedback), logged_wall=col(11, np.float64),
        label_wall=col(12, np.float64), joined_wall=col(13, np.float64),
    )


def horizon_deadline(day: np.ndarray, k: int) -> np.ndarray:
    """When a session end on ``day`` is censored: the start of day ``day + K + 1`` (simulated seconds)."""
    return (np.asarray(day, dtype=np.int64) + k + 1) * SECONDS_PER_DAY
