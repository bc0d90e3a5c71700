"""Helpers for the tests and the benchmark: event logs from the simulator, and hand-written event streams."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from rlur.live.events import SECONDS_PER_DAY, Feedback, Requests, SessionEnds, SessionStarts, SqliteEventLog
from rlur.live.rehearsal import LiveConfig, LiveRun

__all__ = ["EventStream", "simulated_log"]


def simulated_log(out: str | Path, cfg: LiveConfig | None = None, **overrides: Any) -> dict:
    """Simulate ``cfg`` and write its event log (and ``config.json``, ``policies/v00000.pt``) in ``out``,
    without joiner or trainer (the treatment keeps serving version 0). Returns the timing."""
    cfg = dataclasses.replace(cfg or LiveConfig(), max_lag_days=0.0, **overrides)
    return LiveRun(cfg, out, progress=False).run(roles=())


class EventStream:
    """Append hand-made events one at a time (unit tests of the joiner)."""

    def __init__(self, log: SqliteEventLog, obs_dim: int, k: int, n_feedback: int, slate: int) -> None:
        self.log, self.d, self.k, self.f, self.s = log, obs_dim, k, n_feedback, slate
        self.next_request = self.next_session = 0
        self.rng = np.random.default_rng(0)

    def start(self, user: int, ts: int, day: int | None = None) -> int:
        sid = self.next_session
        self.next_session += 1
        self.log.append(starts=SessionStarts(user_id=[user], session_id=[sid], ts=[ts], day=[_day(ts, day)]))
        return sid

    def request(self, user: int, session: int, ts: int, end: bool = False, feedback: bool = True,
                day: int | None = None) -> tuple[int, int, np.ndarray]:
        """One request (with its feedback and end event); returns ``(request_id, seq, feedback values)``."""
        rid = self.next_request
        self.next_request += 1
        day = _day(ts, day)
        values = self.rng.random((1, self.f)).astype(np.float32)
        req = Requests(
            request_id=[rid], user_id=[user], session_id=[session], ts=[ts], day=[day], arm=[1], group=[0],
            version=[0], state=self.rng.normal(size=(1, self.d)).astype(np.float32),
            action=np.zeros((1, self.k), np.float32), mu=np.zeros((1, self.k), np.float32),
            sigma=np.ones((1, self.k), np.float32), logp=[0.0], shown=np.zeros((1, self.s), np.int64),
        )
        self.log.append(
            requests=req, feedback=Feedback(request_id=[rid], ts=[ts], values=values) if feedback else None,
            ends=SessionEnds(user_id=[user], session_id=[session], request_id=[rid], ts=[ts], day=[day])
            if end else None)
        return rid, int(req.seq[0]), values[0]

    def tick(self, ts: int, final: bool = False) -> None:
        self.log.append(tick=ts, final=final)


def _day(ts: int, day: int | None) -> int:
    return int(ts // SECONDS_PER_DAY) if day is None else int(day)
