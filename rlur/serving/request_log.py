"""The request log: every served request, with what training needs to correct for the behaviour policy.

Records are appended by a background writer thread fed through a queue: the request handlers only
enqueue one small batch object per HTTP call, and the thread, waking every 50 ms, serialises and
writes everything queued (one SQLite transaction per up to 4096 rows).
:meth:`RequestLogWriter.close` drains the queue, so a clean shutdown loses no record.

Two formats, chosen by the file suffix:

* SQLite (default, any suffix but ``.jsonl``), WAL mode, table ``requests`` with one row per request;
  vectors are little-endian float32 blobs (``state``, ``action``, ``mu``, ``sigma``), ``shown_pos`` is
  an int32 blob, ``shown_ids`` and ``candidate_ids`` are JSON text. Table ``meta`` holds the schema
  version, ``score_names``, ``groups`` and ``obs_dim``.
* JSON Lines (``.jsonl``): one object per request with the same fields, vectors as lists.

:func:`read_request_log` loads either into tensors for the trainer.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic_core import to_json

from rlur.serving.schemas import SLATE_SIZE
from rlur.sim.env import OBS_DIM
from rlur.sim.world import GROUPS, SCORE_NAMES

__all__ = ["LOG_COLUMNS", "LogBatch", "RequestLogWriter", "open_request_log", "read_request_log"]

log = logging.getLogger("rlur.serving")

SCHEMA_VERSION = 1
#: Columns of the ``requests`` table, in order.
LOG_COLUMNS: tuple[tuple[str, str], ...] = (
    ("request_id", "TEXT NOT NULL"),
    ("ts", "REAL NOT NULL"),
    ("policy_version", "TEXT NOT NULL"),
    ("endpoint", "TEXT NOT NULL"),
    ("user_id", ""),  # no type: SQLite keeps ints as ints and strings as strings
    ("grp", "TEXT NOT NULL"),
    ("state", "BLOB NOT NULL"),
    ("action", "BLOB NOT NULL"),
    ("mu", "BLOB NOT NULL"),
    ("sigma", "BLOB NOT NULL"),
    ("log_prob", "REAL NOT NULL"),
    ("deterministic", "INTEGER NOT NULL"),
    ("seed", "INTEGER"),
    ("shown_ids", "TEXT NOT NULL"),
    ("shown_pos", "BLOB NOT NULL"),
    ("n_candidates", "INTEGER NOT NULL"),
    ("candidate_ids", "TEXT"),
)
_NAMES = tuple(c for c, _ in LOG_COLUMNS)


@dataclass
class LogBatch:
    """The requests served by one HTTP call (B rows), as the handler has them."""

    ts: float
    policy_version: str
    endpoint: str
    request_ids: list[str]
    user_ids: list[Any]
    groups: list[int]
    state: np.ndarray
    action: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    log_prob: np.ndarray
    deterministic: list[bool]
    seeds: list[int | None]
    shown_ids: list[list[Any]]
    shown_pos: np.ndarray
    n_candidates: list[int]
    candidate_ids: list[list[Any]] | None = None

    def __len__(self) -> int:
        return len(self.request_ids)

    def rows(self) -> list[tuple[Any, ...]]:
        """One tuple per request in ``LOG_COLUMNS`` order (SQLite encoding)."""
        state = self.state.astype("<f4")
        action, mu, sigma = (a.astype("<f4") for a in (self.action, self.mu, self.sigma))
        pos = self.shown_pos.astype("<i4")
        cands = self.candidate_ids
        return [
            (
                self.request_ids[i], self.ts, self.policy_version, self.endpoint, self.user_ids[i],
                GROUPS[self.groups[i]], state[i].tobytes(), action[i].tobytes(), mu[i].tobytes(),
                sigma[i].tobytes(), float(self.log_prob[i]), int(self.deterministic[i]), self.seeds[i],
                to_json(self.shown_ids[i]).decode(), pos[i].tobytes(), self.n_candidates[i],
                None if cands is None else to_json(cands[i]).decode(),
            )
            for i in range(len(self))
        ]

    def records(self) -> list[dict[str, Any]]:
        """One dict per request (JSON Lines encoding)."""
        state, action, mu, sigma = (a.tolist() for a in (self.state, self.action, self.mu, self.sigma))
        pos = self.shown_pos.tolist()
        out = []
        for i in range(len(self)):
            rec = {
                "request_id": self.request_ids[i], "ts": self.ts, "policy_version": self.policy_version,
                "endpoint": self.endpoint, "user_id": self.user_ids[i], "group": GROUPS[self.groups[i]],
                "state": state[i], "action": action[i], "mu": mu[i], "sigma": sigma[i],
                "log_prob": float(self.log_prob[i]), "deterministic": bool(self.deterministic[i]),
                "seed": self.seeds[i], "shown_ids": self.shown_ids[i], "shown_pos": pos[i],
                "n_candidates": self.n_candidates[i],
            }
            if self.candidate_ids is not None:
                rec["candidate_ids"] = self.candidate_ids[i]
            out.append(rec)
        return out


class _Sink:
    def write(self, batches: list[LogBatch]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _SqliteSink(_Sink):
    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False, timeout=30.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        with self.db:
            self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            columns = ", ".join(f"{c} {t}" for c, t in LOG_COLUMNS)
            self.db.execute(f"CREATE TABLE IF NOT EXISTS requests ({columns})")
            meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
            if meta and meta.get("schema_version") != str(SCHEMA_VERSION):
                found = meta.get("schema_version")
                raise ValueError(f"{path}: request log schema {found}, this server writes {SCHEMA_VERSION}")
            cols = [r[1] for r in self.db.execute("PRAGMA table_info(requests)").fetchall()]
            if tuple(cols) != _NAMES:
                raise ValueError(f"{path}: the 'requests' table has columns {cols}, expected {list(_NAMES)}")
            self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [
                ("schema_version", str(SCHEMA_VERSION)), ("score_names", json.dumps(SCORE_NAMES)),
                ("groups", json.dumps(GROUPS)), ("obs_dim", str(OBS_DIM)), ("slate_size", str(SLATE_SIZE)),
            ])
        self._sql = f"INSERT INTO requests VALUES ({', '.join('?' * len(_NAMES))})"

    def write(self, batches: list[LogBatch]) -> None:
        with self.db:
            for b in batches:
                self.db.executemany(self._sql, b.rows())

    def close(self) -> None:
        self.db.close()


class _JsonlSink(_Sink):
    def __init__(self, path: Path) -> None:
        self.f = path.open("a", encoding="utf-8")

    def write(self, batches: list[LogBatch]) -> None:
        lines = [json.dumps(rec, separators=(",", ":")) for b in batches for rec in b.records()]
        self.f.write("\n".join(lines) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


class RequestLogWriter:
    """Append-only request log written by a background thread (queue + batching).

    ``submit`` only appends to an in-memory queue: it never blocks on I/O and never wakes the
    thread. The thread wakes every ``flush_interval`` seconds (at once on ``close``), takes everything
    queued and writes it in transactions of up to ``max_batch_rows`` rows. Waking on a timer rather
    than on every submit keeps the thread from competing with the event loop for the GIL after each
    request (measured: a wake per request added ~0.3 ms to every request's latency). ``close`` writes
    what is left and joins the thread; a failed write is logged and counted in ``errors``, never
    raised to callers.
    """

    def __init__(self, path: str | Path, max_batch_rows: int = 4096, flush_interval: float = 0.05) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.format = "jsonl" if self.path.suffix == ".jsonl" else "sqlite"
        self._sink: _Sink = _JsonlSink(self.path) if self.format == "jsonl" else _SqliteSink(self.path)
        self.max_batch_rows = max_batch_rows
        self.flush_interval = flush_interval
        self.rows_written = 0
        self.rows_submitted = 0
        self.errors = 0
        self._queue: queue.SimpleQueue[LogBatch] = queue.SimpleQueue()
        self._lock = threading.Lock()  # submit may be called from several threads
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="rlur-request-log", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Rows submitted but not yet written (or failed)."""
        return self.rows_submitted - self.rows_written - self.errors

    def submit(self, batch: LogBatch) -> None:
        """Queue one batch of served requests."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the request log is closed")
            self.rows_submitted += len(batch)
            self._queue.put(batch)

    def _drain(self) -> None:
        while True:
            batches: list[LogBatch] = []
            rows = 0
            while rows < self.max_batch_rows:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                batches.append(item)
                rows += len(item)
            if not batches:
                return
            try:
                self._sink.write(batches)
                self.rows_written += rows
            except Exception:
                self.errors += rows
                log.exception("request log: failed to write %d rows to %s", rows, self.path)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.flush_interval):
                self._drain()
            self._drain()  # submit refuses new batches once closed: this empties the queue for good
        finally:
            self._sink.close()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every submitted row is written (or failed); ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        while self.pending > 0:
            if time.monotonic() > deadline or not self._thread.is_alive():
                return False
            time.sleep(0.002)
        return True

    def close(self, timeout: float | None = 60.0) -> None:
        """Write everything queued, then stop the thread and close the file."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._thread.join(timeout)

    def __enter__(self) -> RequestLogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_request_log(path: str | Path) -> RequestLogWriter:
    """Open (create or append to) the request log at ``path``; ``.jsonl`` selects JSON Lines."""
    return RequestLogWriter(path)


def read_request_log(path: str | Path) -> dict[str, Any]:
    """Load a request log (SQLite or ``.jsonl``) in write order.

    Returns N rows as:

    * tensors: ``state (N, OBS_DIM)``, ``action``, ``mu``, ``sigma`` ``(N, k)`` float32, ``log_prob (N,)``
      float32, ``group (N,)`` int64 (index into ``GROUPS``), ``shown_pos (N, 6)`` int64 (positions of
      the shown candidates in the request), ``deterministic (N,)`` bool, ``timestamp (N,)`` float64
      (Unix seconds), ``version (N,)`` int64 (index into ``versions``);
    * ``shown``: ``(N, 6)`` int64 shown candidate ids, best first, when every id is an int64 integer;
      otherwise the list of id lists (string ids cannot live in a tensor);
    * lists: ``shown_ids``, ``request_id``, ``user_id``, ``seed``, ``endpoint``, ``candidate_ids``
      (``None`` entries unless the server ran with ``--log-candidates``), ``versions`` (distinct policy
      versions in first-seen order).

    ``mu``, ``sigma`` and ``log_prob`` are the behaviour policy's, as served: what soft regularisation
    and importance weights need. Joining these rows with the feedback that followed (by ``request_id``
    or ``user_id`` and ``timestamp``) gives the rewards and next states of replay-buffer transitions.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no request log at {p}")
    recs = _read_jsonl(p) if p.suffix == ".jsonl" else _read_sqlite(p)
    return _to_tensors(recs)


def _read_sqlite(p: Path) -> dict[str, list[Any]]:
    db = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
    try:
        rows = db.execute(f"SELECT {', '.join(_NAMES)} FROM requests ORDER BY rowid").fetchall()
    finally:
        db.close()
    cols: dict[str, list[Any]] = {c: [r[i] for r in rows] for i, c in enumerate(_NAMES)}
    k = len(SCORE_NAMES)
    out: dict[str, Any] = {
        "request_id": cols["request_id"], "ts": cols["ts"], "policy_version": cols["policy_version"],
        "endpoint": cols["endpoint"], "user_id": cols["user_id"], "group": cols["grp"],
        "log_prob": cols["log_prob"], "deterministic": [bool(v) for v in cols["deterministic"]],
        "seed": cols["seed"], "shown_ids": [json.loads(v) for v in cols["shown_ids"]],
        "candidate_ids": [None if v is None else json.loads(v) for v in cols["candidate_ids"]],
        "n_candidates": cols["n_candidates"],
    }
    for name, width, dtype in (
        ("state", OBS_DIM, "<f4"), ("action", k, "<f4"), ("mu", k, "<f4"), ("sigma", k, "<f4"),
        ("shown_pos", SLATE_SIZE, "<i4"),
    ):
        out[name] = np.frombuffer(b"".join(cols[name]), dtype=dtype).reshape(len(rows), width).copy()
    return out


def _read_jsonl(p: Path) -> dict[str, list[Any]]:
    recs = []
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    recs.append(json.loads(line))
                except json.JSONDecodeError:
                    raise ValueError(f"{p}:{n}: not a JSON record") from None
    keys = (
        "request_id", "ts", "policy_version", "endpoint", "user_id", "group", "state", "action", "mu",
        "sigma", "log_prob", "deterministic", "seed", "shown_ids", "shown_pos", "n_candidates",
    )
    out: dict[str, Any] = {key: [r[key] for r in recs] for key in keys}
    out["candidate_ids"] = [r.get("candidate_ids") for r in recs]
    k = len(SCORE_NAMES)
    for name, width in (("state", OBS_DIM), ("action", k), ("mu", k), ("sigma", k)):
        out[name] = np.asarray(out[name], dtype=np.float32).reshape(-1, width)
    out["shown_pos"] = np.asarray(out["shown_pos"], dtype=np.int64).reshape(-1, SLATE_SIZE)
    return out


def _to_tensors(c: dict[str, Any]) -> dict[str, Any]:
    versions = list(dict.fromkeys(c["policy_version"]))
    code = {v: i for i, v in enumerate(versions)}
    shown_ids = c["shown_ids"]
    integral = all(type(i) is int and -(2**63) <= i < 2**63 for ids in shown_ids for i in ids)
    return {
        "state": torch.as_tensor(np.asarray(c["state"], dtype=np.float32)),
        "group": torch.tensor([GROUPS.index(g) for g in c["group"]], dtype=torch.long),
        "action": torch.as_tensor(np.asarray(c["action"], dtype=np.float32)),
        "mu": torch.as_tensor(np.asarray(c["mu"], dtype=np.float32)),
        "sigma": torch.as_tensor(np.asarray(c["sigma"], dtype=np.float32)),
        "log_prob": torch.tensor(c["log_prob"], dtype=torch.float32),
        "shown": torch.tensor(shown_ids, dtype=torch.long).reshape(-1, SLATE_SIZE) if integral else shown_ids,
        "shown_pos": torch.as_tensor(np.asarray(c["shown_pos"], dtype=np.int64)),
        "deterministic": torch.tensor(c["deterministic"], dtype=torch.bool),
        "timestamp": torch.tensor(c["ts"], dtype=torch.float64),
        "version": torch.tensor([code[v] for v in c["policy_version"]], dtype=torch.long),
        "versions": versions,
        "shown_ids": shown_ids,
        "request_id": c["request_id"],
        "user_id": c["user_id"],
        "seed": c["seed"],
        "endpoint": c["endpoint"],
        "candidate_ids": c["candidate_ids"],
        "n_candidates": torch.tensor(c["n_candidates"], dtype=torch.long),
    }
