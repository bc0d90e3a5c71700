"""The event log of the production loop: what was served, what users did, when sessions began and ended.

In production the retention reward arrives late (paper §1, the third challenge): a session's last
request learns its returning time only when the user opens the app again, hours or days later, or
never. So the loop logs *events* as they happen and a joiner (:mod:`rlur.live.joiner`) turns them
into transitions once their labels are in. The log holds five kinds of event:

* **requests**: one row per served request: the state, the action, the behaviour policy's μ_b, σ_b and
  log-probability, the shown ids, the policy version that served it, the user, session and arm, the
  simulated time ``ts`` (seconds) and calendar ``day``;
* **feedback**: the immediate response to a request (watch seconds, then behaviour counts);
* **session starts** (app opens) and **session ends** (the last request of a session);
* **ticks**: the clock. A tick at ``ts`` says every event before ``ts`` is in the log; the final
  tick closes the log.

Every event gets a sequence number from one counter: the numbers are dense, strictly increasing in
the order the events were appended, and one :meth:`EventLog.append` is one transaction, so a reader
never sees half a batch. :class:`EventLog` is the interface the joiner and the trainer use;
:class:`SqliteEventLog` is the embedded implementation (SQLite in WAL mode: one writer, any number
of readers that never block it). A request's vectors are stored as one blob (:func:`pack_payload`:
float32 state, action, μ, σ, then the int64 shown ids; one blob costs half the insert time of five).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = [
    "SECONDS_PER_DAY",
    "EventBatch",
    "EventLog",
    "Feedback",
    "Requests",
    "SessionEnds",
    "SessionStarts",
    "SqliteEventLog",
    "Ticks",
]

SECONDS_PER_DAY = 86_400
SCHEMA_VERSION = 1


def _i64(x: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x), dtype=np.int64).reshape(-1)


def _f32(x: Any, cols: int | None = None) -> np.ndarray:
    a = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    return a.reshape(-1) if cols is None else a.reshape(-1, cols)


@dataclass
class Requests:
    """Served requests (n rows). ``seq`` and ``wall`` are filled in by the log."""

    request_id: np.ndarray
    """``(n,)`` int64, unique over the log."""
    user_id: np.ndarray
    session_id: np.ndarray
    ts: np.ndarray
    """``(n,)`` int64 simulated seconds."""
    day: np.ndarray
    """``(n,)`` int64 calendar day."""
    arm: np.ndarray
    """``(n,)`` int64: 0 control, 1 treatment."""
    group: np.ndarray
    """``(n,)`` int64 activity group."""
    version: np.ndarray
    """``(n,)`` int64 version of the policy that served it."""
    state: np.ndarray
    """``(n, d)`` float32 the state served."""
    action: np.ndarray
    """``(n, k)`` float32 the served action ``a ~ N(μ_b, σ_b)``."""
    mu: np.ndarray
    sigma: np.ndarray
    logp: np.ndarray
    """``(n,)`` float32 ``log N(a; μ_b, σ_b)``: what the soft regularisation needs (paper §3.5)."""
    shown: np.ndarray
    """``(n, S)`` int64 ids of the shown videos."""
    seq: np.ndarray | None = None
    wall: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.request_id)


@dataclass
class Feedback:
    """Immediate feedback (n rows): ``values (n, 1 + R)`` = watch seconds, then behaviour counts."""

    request_id: np.ndarray
    ts: np.ndarray
    values: np.ndarray
    seq: np.ndarray | None = None
    wall: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.request_id)


@dataclass
class SessionStarts:
    """App opens: the first request of ``session_id`` follows."""

    user_id: np.ndarray
    session_id: np.ndarray
    ts: np.ndarray
    day: np.ndarray
    seq: np.ndarray | None = None
    wall: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.user_id)


@dataclass
class SessionEnds:
    """Session ends: ``request_id`` was the last request of ``session_id``."""

    user_id: np.ndarray
    session_id: np.ndarray
    request_id: np.ndarray
    ts: np.ndarray
    day: np.ndarray
    seq: np.ndarray | None = None
    wall: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.user_id)


@dataclass
class Ticks:
    """Clock ticks: at ``ts`` every earlier event is logged; ``final`` marks the end of the log."""

    ts: np.ndarray
    final: np.ndarray
    seq: np.ndarray | None = None
    wall: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ts)


@dataclass
class EventBatch:
    """The events with sequence numbers in ``(after, upto]``, by kind, each in sequence order."""

    after: int
    upto: int
    requests: Requests
    feedback: Feedback
    starts: SessionStarts
    ends: SessionEnds
    ticks: Ticks

    @property
    def clock(self) -> int | None:
        """The latest tick's time in this batch (None without a tick)."""
        return int(self.ticks.ts.max()) if len(self.ticks) else None

    @property
    def closed_at(self) -> int | None:
        """The time of the final tick when this batch holds it."""
        final = self.ticks.final.astype(bool)
        return int(self.ticks.ts[final][0]) if final.any() else None


class EventLog(Protocol):
    """What the rehearsal appends to and the joiner and trainer read from (another store can plug in)."""

    def append(
        self, *, starts: SessionStarts | None = None, requests: Requests | None = None,
        feedback: Feedback | None = None, ends: SessionEnds | None = None, tick: int | None = None,
        final: bool = False,
    ) -> int:
        """Append in this order (starts, requests, feedback, ends, tick) atomically; return the last seq."""
        ...

    def head(self) -> int:
        """The sequence number of the last committed event (0 for an empty log)."""
        ...

    def read(self, after: int, upto: int, payload: bool = False) -> EventBatch:
        """Events with ``after < seq ≤ upto``; request vectors only with ``payload``."""
        ...

    def fetch_requests(self, seqs: np.ndarray) -> Requests:
        """The requests with these sequence numbers, in the order given (payload included)."""
        ...

    def meta(self) -> dict[str, Any]:
        ...

    def close(self) -> None:
        ...


# ---------------------------------------------------------------------------------------------
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    seq INTEGER PRIMARY KEY, request_id INTEGER NOT NULL UNIQUE, user_id INTEGER NOT NULL,
    session_id INTEGER NOT NULL, ts INTEGER NOT NULL, day INTEGER NOT NULL, arm INTEGER NOT NULL,
    grp INTEGER NOT NULL, version INTEGER NOT NULL, logp REAL NOT NULL, wall REAL NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback (
    seq INTEGER PRIMARY KEY, request_id INTEGER NOT NULL UNIQUE, ts INTEGER NOT NULL, vals BLOB NOT NULL,
    wall REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS session_starts (
    seq INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, session_id INTEGER NOT NULL UNIQUE,
    ts INTEGER NOT NULL, day INTEGER NOT NULL, wall REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS session_ends (
    seq INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, session_id INTEGER NOT NULL UNIQUE,
    request_id INTEGER NOT NULL UNIQUE, ts INTEGER NOT NULL, day INTEGER NOT NULL, wall REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ticks (
    seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, final INTEGER NOT NULL, wall REAL NOT NULL
);
"""
_TABLES = ("requests", "feedback", "session_starts", "session_ends", "ticks")
_REQ_COLS = "seq, request_id, user_id, session_id, ts, day, arm, grp, version, logp, wall"
_REQ_PAYLOAD = ", payload"


def connect(path: str | Path, readonly: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL journal, 60 s busy timeout."""
    p = Path(path)
    if readonly:
        if not p.exists():
            raise FileNotFoundError(f"no log at {p}")
        conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True, timeout=60, isolation_level=None,
                               check_same_thread=False)
    else:
        p.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(p), timeout=60, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit is durable against a process crash (what the tests kill); only an OS
        # crash can lose the last transactions, never corrupt the file.
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=60000")
    return conn


def _split_rows(a: np.ndarray) -> list[bytes]:
    """Row ``i`` of a 2-D array as bytes (one ``tobytes`` for the array, then slices)."""
    a = np.ascontiguousarray(a)
    b, step = a.tobytes(), a.itemsize * (a.shape[1] if a.ndim > 1 else 1)
    return [b[i:i + step] for i in range(0, len(b), step)]


def pack_payload(r: Requests) -> np.ndarray:
    """A request's vectors as one row of bytes: state, action, μ, σ (float32), then the shown ids (int64)."""
    n, k = len(r), np.shape(r.action)[-1]
    parts = [_f32(r.state, np.shape(r.state)[-1]), _f32(r.action, k), _f32(r.mu, k), _f32(r.sigma, k),
             _i64(r.shown).reshape(n, -1)]
    return np.hstack([p.view(np.uint8).reshape(n, -1) for p in parts])


def unpack_payload(blobs: list[bytes], d: int, k: int, s: int) -> tuple[np.ndarray, ...]:
    """Inverse of :func:`pack_payload`: ``(state, action, mu, sigma, shown)``."""
    widths = (4 * d, 4 * k, 4 * k, 4 * k, 8 * s)
    buf = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(len(blobs), sum(widths))
    out, at = [], 0
    for w, dtype in zip(widths, (np.float32,) * 4 + (np.int64,), strict=True):
        out.append(np.ascontiguousarray(buf[:, at:at + w]).view(dtype))
        at += w
    return tuple(out)


def _blobs(rows: list[bytes], dtype: Any, cols: int) -> np.ndarray:
    return np.frombuffer(b"".join(rows), dtype=dtype).reshape(len(rows), cols) if rows else \
        np.zeros((0, cols), dtype=dtype)


class SqliteEventLog:
    """:class:`EventLog` in one SQLite file (WAL). Open one writer (``readonly=False``) per log.

    Args:
        path: the database file.
        readonly: open for reading only (the joiner, the trainer, reports).
        meta: written once when the log is created (dimensions, configuration).
    """

    def __init__(self, path: str | Path, readonly: bool = False, meta: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.conn = connect(self.path, readonly)
        if not readonly:
            self.conn.executescript(_SCHEMA)
            if meta is not None and not self.meta():
                with self.conn:
                    self.conn.executemany(
                        "INSERT INTO meta VALUES (?, ?)",
                        [(k, json.dumps(v)) for k, v in {"schema_version": SCHEMA_VERSION, **meta}.items()],
                    )
        self._next = self.head() + 1

    # --- writing ---------------------------------------------------------------------------------
    def _seqs(self, n: int) -> np.ndarray:
        s = np.arange(self._next, self._next + n, dtype=np.int64)
        self._next += n
        return s

    def append(
        self, *, starts: SessionStarts | None = None, requests: Requests | None = None,
        feedback: Feedback | None = None, ends: SessionEnds | None = None, tick: int | None = None,
        final: bool = False,
    ) -> int:
        if self.readonly:
            raise PermissionError(f"{self.path} is open read-only")
        first = self._next
        wall = time.time()
        c = self.conn
        try:
            c.execute("BEGIN IMMEDIATE")
            if starts is not None and len(starts):
                starts.seq, starts.wall = self._seqs(len(starts)), np.full(len(starts), wall)
                c.executemany("INSERT INTO session_starts VALUES (?, ?, ?, ?, ?, ?)", zip(
                    starts.seq.tolist(), _i64(starts.user_id).tolist(), _i64(starts.session_id).tolist(),
                    _i64(starts.ts).tolist(), _i64(starts.day).tolist(), [wall] * len(starts), strict=True))
            if requests is not None and len(requests):
                self._insert_requests(requests, wall)
            if feedback is not None and len(feedback):
                feedback.seq, feedback.wall = self._seqs(len(feedback)), np.full(len(feedback), wall)
                c.executemany("INSERT INTO feedback VALUES (?, ?, ?, ?, ?)", zip(
                    feedback.seq.tolist(), _i64(feedback.request_id).tolist(), _i64(feedback.ts).tolist(),
                    _split_rows(_f32(feedback.values, np.shape(feedback.values)[-1])), [wall] * len(feedback),
                    strict=True))
            if ends is not None and len(ends):
                ends.seq, ends.wall = self._seqs(len(ends)), np.full(len(ends), wall)
                c.executemany("INSERT INTO session_ends VALUES (?, ?, ?, ?, ?, ?, ?)", zip(
                    ends.seq.tolist(), _i64(ends.user_id).tolist(), _i64(ends.session_id).tolist(),
                    _i64(ends.request_id).tolist(), _i64(ends.ts).tolist(), _i64(ends.day).tolist(),
                    [wall] * len(ends), strict=True))
            if tick is not None:
                c.execute("INSERT INTO ticks VALUES (?, ?, ?, ?)", (int(self._seqs(1)[0]), int(tick), int(final), wall))
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            self._next = first
            raise
        return self._next - 1

    def _insert_requests(self, r: Requests, wall: float) -> None:
        n = len(r)
        r.seq, r.wall = self._seqs(n), np.full(n, wall)
        payload = pack_payload(r)
        self.conn.executemany(f"INSERT INTO requests ({_REQ_COLS}{_REQ_PAYLOAD}) VALUES ({', '.join('?' * 12)})", zip(
            r.seq.tolist(), _i64(r.request_id).tolist(), _i64(r.user_id).tolist(), _i64(r.session_id).tolist(),
            _i64(r.ts).tolist(), _i64(r.day).tolist(), _i64(r.arm).tolist(), _i64(r.group).tolist(),
            _i64(r.version).tolist(), _f32(r.logp).astype(np.float64).tolist(), [wall] * n, _split_rows(payload),
            strict=True))

    # --- reading ---------------------------------------------------------------------------------
    def head(self) -> int:
        row = self.conn.execute(
            "SELECT MAX(m) FROM (" + " UNION ALL ".join(f"SELECT MAX(seq) AS m FROM {t}" for t in _TABLES) + ")"
        ).fetchone()
        return int(row[0] or 0)

    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM meta")}

    def read(self, after: int, upto: int, payload: bool = False) -> EventBatch:
        c = self.conn
        c.execute("BEGIN")  # one snapshot for every table
        try:
            rng = (int(after), int(upto))
            cols = _REQ_COLS + (_REQ_PAYLOAD if payload else "")
            req = self._requests(c.execute(f"SELECT {cols} FROM requests WHERE seq > ? AND seq <= ? ORDER BY seq",
                                           rng).fetchall(), payload)
            fb = c.execute("SELECT seq, request_id, ts, vals, wall FROM feedback WHERE seq > ? AND seq <= ? "
                           "ORDER BY seq", rng).fetchall()
            st = c.execute("SELECT seq, user_id, session_id, ts, day, wall FROM session_starts "
                           "WHERE seq > ? AND seq <= ? ORDER BY seq", rng).fetchall()
            en = c.execute("SELECT seq, user_id, session_id, request_id, ts, day, wall FROM session_ends "
                           "WHERE seq > ? AND seq <= ? ORDER BY seq", rng).fetchall()
            ti = c.execute("SELECT seq, ts, final, wall FROM ticks WHERE seq > ? AND seq <= ? ORDER BY seq",
                           rng).fetchall()
        finally:
            c.execute("COMMIT")
        n_fb = self._n_feedback()
        return EventBatch(
            after=int(after), upto=int(upto), requests=req,
            feedback=Feedback(seq=_col(fb, 0), request_id=_col(fb, 1), ts=_col(fb, 2),
                              values=_blobs([r[3] for r in fb], np.float32, n_fb), wall=_col(fb, 4, np.float64)),
            starts=SessionStarts(seq=_col(st, 0), user_id=_col(st, 1), session_id=_col(st, 2), ts=_col(st, 3),
                                 day=_col(st, 4), wall=_col(st, 5, np.float64)),
            ends=SessionEnds(seq=_col(en, 0), user_id=_col(en, 1), session_id=_col(en, 2), request_id=_col(en, 3),
                             ts=_col(en, 4), day=_col(en, 5), wall=_col(en, 6, np.float64)),
            ticks=Ticks(seq=_col(ti, 0), ts=_col(ti, 1), final=_col(ti, 2), wall=_col(ti, 3, np.float64)),
        )

    def fetch_requests(self, seqs: np.ndarray) -> Requests:
        seqs = _i64(seqs)
        uniq = np.unique(seqs)
        rows = self.conn.execute(
            f"SELECT {_REQ_COLS}{_REQ_PAYLOAD} FROM requests WHERE seq IN (SELECT value FROM json_each(?)) "
            "ORDER BY seq", (json.dumps(uniq.tolist()),)).fetchall()
        got = self._requests(rows, payload=True)
        if len(got) != len(uniq):
            missing = np.setdiff1d(uniq, got.seq)[:5].tolist()
            raise KeyError(f"requests not in the log: seq {missing}")
        pos = np.searchsorted(got.seq, seqs)
        return Requests(**{f.name: None if getattr(got, f.name) is None else getattr(got, f.name)[pos]
                           for f in fields(Requests)})

    def count(self, table: str) -> int:
        if table not in _TABLES:
            raise ValueError(f"unknown table {table!r}")
        return int(self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def _n_feedback(self) -> int:
        m = getattr(self, "_meta_cache", None)
        if m is None:
            m = self._meta_cache = self.meta()
        return int(m.get("n_feedback", 9))

    def _requests(self, rows: list[tuple], payload: bool) -> Requests:
        m = getattr(self, "_meta_cache", None) or self.meta()
        self._meta_cache = m
        d, k, s = int(m.get("obs_dim", 0)), int(m.get("k", 0)), int(m.get("slate_size", 0))
        if payload:
            state, action, mu, sigma, shown = unpack_payload([r[11] for r in rows], d, k, s)
        else:
            state = np.zeros((len(rows), 0), np.float32)
            action = mu = sigma = np.zeros((len(rows), 0), np.float32)
            shown = np.zeros((len(rows), 0), np.int64)
        return Requests(
            seq=_col(rows, 0), request_id=_col(rows, 1), user_id=_col(rows, 2), session_id=_col(rows, 3),
            ts=_col(rows, 4), day=_col(rows, 5), arm=_col(rows, 6), group=_col(rows, 7), version=_col(rows, 8),
            logp=_col(rows, 9, np.float32), wall=_col(rows, 10, np.float64), state=state, action=action, mu=mu,
            sigma=sigma, shown=shown,
        )

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> SqliteEventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _col(rows: list[tuple], i: int, dtype: Any = np.int64) -> np.ndarray:
    return np.fromiter((r[i] for r in rows), dtype=dtype, count=len(rows))
