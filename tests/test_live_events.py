"""The event log: a round trip of every kind of event, dense monotone sequence numbers, atomic batches."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from rlur.live.events import Feedback, Requests, SessionEnds, SessionStarts, SqliteEventLog

D, K, S, F = 5, 3, 2, 4
META = {"obs_dim": D, "k": K, "slate_size": S, "n_feedback": F, "groups": ["a", "b"]}


def requests(ids, rng: np.random.Generator) -> Requests:
    n = len(ids)
    return Requests(
        request_id=np.asarray(ids), user_id=np.arange(n) % 3, session_id=np.arange(n) + 100, ts=np.arange(n) * 60,
        day=np.zeros(n, dtype=np.int64), arm=np.arange(n) % 2, group=np.arange(n) % 2, version=np.full(n, 7),
        state=rng.normal(size=(n, D)).astype(np.float32), action=rng.normal(size=(n, K)).astype(np.float32),
        mu=rng.normal(size=(n, K)).astype(np.float32), sigma=rng.random((n, K)).astype(np.float32),
        logp=rng.normal(size=n).astype(np.float32), shown=rng.integers(0, 10**9, (n, S)),
    )


def test_round_trip_every_kind(tmp_path):
    rng = np.random.default_rng(0)
    log = SqliteEventLog(tmp_path / "e.sqlite", meta=META)
    req = requests([10, 11, 12, 13], rng)
    fb = Feedback(request_id=req.request_id, ts=req.ts, values=rng.random((4, F)).astype(np.float32))
    starts = SessionStarts(user_id=np.array([0, 1]), session_id=np.array([100, 101]), ts=np.array([0, 5]),
                           day=np.array([0, 0]))
    ends = SessionEnds(user_id=np.array([2]), session_id=np.array([102]), request_id=np.array([12]),
                       ts=np.array([120]), day=np.array([0]))
    last = log.append(starts=starts, requests=req, feedback=fb, ends=ends, tick=86_400)
    assert last == 2 + 4 + 4 + 1 + 1 == log.head()
    # Sequence numbers are dense and follow the append order: starts, requests, feedback, ends, tick.
    assert starts.seq.tolist() == [1, 2] and req.seq.tolist() == [3, 4, 5, 6]
    assert fb.seq.tolist() == [7, 8, 9, 10] and ends.seq.tolist() == [11]

    reader = SqliteEventLog(tmp_path / "e.sqlite", readonly=True)
    b = reader.read(0, reader.head(), payload=True)
    for name in ("request_id", "user_id", "session_id", "ts", "day", "arm", "group", "version", "shown"):
        np.testing.assert_array_equal(getattr(b.requests, name), getattr(req, name))
    for name in ("state", "action", "mu", "sigma", "logp"):
        np.testing.assert_array_equal(getattr(b.requests, name), getattr(req, name))  # float32 bit for bit
    np.testing.assert_array_equal(b.feedback.values, fb.values)
    np.testing.assert_array_equal(b.feedback.request_id, req.request_id)
    np.testing.assert_array_equal(b.starts.session_id, [100, 101])
    np.testing.assert_array_equal(b.ends.request_id, [12])
    assert b.clock == 86_400 and b.closed_at is None
    assert reader.meta()["obs_dim"] == D

    # A range read sees only its events; fetch_requests returns rows in the order asked.
    part = reader.read(4, 8)
    assert part.requests.seq.tolist() == [5, 6] and part.feedback.seq.tolist() == [7, 8] and len(part.starts) == 0
    got = reader.fetch_requests(np.array([6, 3, 6]))
    assert got.request_id.tolist() == [13, 10, 13]
    np.testing.assert_array_equal(got.state[1], req.state[0])
    with pytest.raises(KeyError):
        reader.fetch_requests(np.array([99]))

    log.append(tick=2 * 86_400, final=True)
    end = reader.read(last, reader.head())
    assert end.closed_at == 2 * 86_400
    with pytest.raises(PermissionError):
        reader.append(tick=1)
    reader.close()
    log.close()


def test_append_is_atomic_and_reopen_continues_the_sequence(tmp_path):
    rng = np.random.default_rng(1)
    log = SqliteEventLog(tmp_path / "e.sqlite", meta=META)
    log.append(requests=requests([1, 2], rng))
    with pytest.raises(sqlite3.IntegrityError):  # request 2 again: the whole batch is rolled back
        log.append(requests=requests([3, 2], rng), tick=5)
    assert log.head() == 2 and log.count("requests") == 2 and log.count("ticks") == 0
    log.append(requests=requests([3], rng))
    assert log.head() == 3
    log.close()
    again = SqliteEventLog(tmp_path / "e.sqlite")  # a new writer continues after the last committed event
    assert again.append(tick=9) == 4
    assert again.meta()["k"] == K
    again.close()
