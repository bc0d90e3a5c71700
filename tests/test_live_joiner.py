"""The label joiner: feedback join, next state, return label at the next start, censoring after K days,
closing, conservation (served == joined + censored + closed), and independence of batch boundaries."""

from __future__ import annotations

import numpy as np
import pytest

from rlur.live.events import SECONDS_PER_DAY, SqliteEventLog
from rlur.live.joiner import CENSORED, CLOSED, JOINED, LabelJoiner, read_transitions
from rlur.live.rehearsal import LiveConfig
from rlur.live.testing import EventStream, simulated_log

DAY = SECONDS_PER_DAY
META = {"obs_dim": 4, "k": 2, "slate_size": 3, "n_feedback": 5, "groups": ["g"]}


@pytest.fixture
def stream(tmp_path):
    log = SqliteEventLog(tmp_path / "events.sqlite", meta=META)
    s = EventStream(log, 4, 2, 5, 3)
    reader = SqliteEventLog(tmp_path / "events.sqlite", readonly=True)
    joiner = LabelJoiner(reader, tmp_path / "joiner.sqlite", horizon_days=3)
    yield s, joiner
    joiner.close()
    reader.close()
    log.close()


def _by_request(joiner: LabelJoiner) -> dict[int, dict]:
    rows = joiner.conn.execute("SELECT request_id, next_seq, session_end, censored, return_time, label_ts, feedback "
                               "FROM transitions").fetchall()
    return {r[0]: {"next_seq": r[1], "session_end": r[2], "censored": r[3], "return_time": r[4], "label_ts": r[5],
                   "feedback": None if r[6] is None else np.frombuffer(r[6], np.float32)} for r in rows}


def test_feedback_joins_and_next_request_is_the_next_state(stream):
    s, joiner = stream
    sid = s.start(user=7, ts=100)
    r0, _, fb0 = s.request(7, sid, ts=100)
    joiner.step()
    assert _by_request(joiner) == {} and joiner.pending() == 1  # no next request yet
    r1, seq1, _ = s.request(7, sid, ts=220)
    joiner.step()
    t = _by_request(joiner)[r0]
    assert t["next_seq"] == seq1 and t["session_end"] == 0 and t["censored"] == JOINED and t["return_time"] == 0
    assert t["label_ts"] == 220
    np.testing.assert_array_equal(t["feedback"], fb0)
    assert r1 not in _by_request(joiner)


def test_missing_feedback_waits(stream):
    s, joiner = stream
    sid = s.start(0, 10)
    r0, _, _ = s.request(0, sid, ts=10, feedback=False)
    s.request(0, sid, ts=70)
    joiner.step()
    assert r0 not in _by_request(joiner)


def test_return_label_arrives_with_the_next_session_start(stream):
    s, joiner = stream
    sid = s.start(1, 2 * DAY + 100)
    r_end, _, _ = s.request(1, sid, ts=2 * DAY + 100, end=True)
    s.tick(3 * DAY)
    s.tick(4 * DAY)
    joiner.step()
    assert r_end not in _by_request(joiner)  # the label is still in flight
    nxt = s.start(1, 4 * DAY + 9_000)  # back two calendar days later
    _, seq_next, _ = s.request(1, nxt, ts=4 * DAY + 9_000)
    joiner.step()
    t = _by_request(joiner)[r_end]
    assert t["session_end"] == 1 and t["censored"] == JOINED and t["return_time"] == 2.0
    assert t["next_seq"] == seq_next and t["label_ts"] == 4 * DAY + 9_000
    # A same-day reopen: the gap in days.
    r2, _, _ = s.request(1, nxt, ts=4 * DAY + 9_120, end=True)
    again = s.start(1, 4 * DAY + 9_120 + 7_200)
    s.request(1, again, ts=4 * DAY + 9_120 + 7_200)
    joiner.step()
    assert _by_request(joiner)[r2]["return_time"] == pytest.approx(7_200 / DAY)


def test_censored_after_k_days_and_late_return_is_not_a_duplicate(stream):
    s, joiner = stream  # K = 3
    sid = s.start(2, 500)
    r_end, _, _ = s.request(2, sid, ts=500, end=True)
    for day in (1, 2, 3):
        s.tick(day * DAY)
        joiner.step()
        assert r_end not in _by_request(joiner)
    s.tick(4 * DAY)  # end of day 0 + K: no return, the label is censored
    joiner.step()
    t = _by_request(joiner)[r_end]
    assert t["censored"] == CENSORED and t["return_time"] == 3.0 and t["next_seq"] is None
    assert t["label_ts"] == 4 * DAY and t["session_end"] == 1
    late = s.start(2, 6 * DAY)  # the user comes back after all
    s.request(2, late, ts=6 * DAY)
    joiner.step()
    assert list(_by_request(joiner)) == [r_end] and joiner.pending() == 1


def test_return_after_k_is_censored_even_before_the_tick(stream):
    s, joiner = stream
    sid = s.start(3, 100)
    r_end, _, _ = s.request(3, sid, ts=100, end=True)
    back = s.start(3, 5 * DAY + 1)  # 5 days > K = 3, logged before any tick passed the deadline
    s.request(3, back, ts=5 * DAY + 1)
    joiner.step()
    t = _by_request(joiner)[r_end]
    assert t["censored"] == CENSORED and t["return_time"] == 3.0 and t["label_ts"] == 4 * DAY


def test_close_ends_every_waiting_request(stream):
    s, joiner = stream
    sid = s.start(4, 100)
    s.request(4, sid, ts=100)
    r_last, _, _ = s.request(4, sid, ts=220, end=True)
    s.tick(DAY, final=True)
    st = joiner.step()
    t = _by_request(joiner)
    assert st.finished and joiner.pending() == 0
    assert t[r_last]["censored"] == CLOSED and t[r_last]["return_time"] is None
    assert joiner.counts() == {"joined": 1, "censored": 0, "closed": 1, "pending": 0}


def test_rejects_another_horizon(tmp_path):
    log = SqliteEventLog(tmp_path / "e.sqlite", meta=META)
    LabelJoiner(log, tmp_path / "j.sqlite", horizon_days=3).close()
    with pytest.raises(ValueError, match="K = 3"):
        LabelJoiner(log, tmp_path / "j.sqlite", horizon_days=4)
    with pytest.raises(ValueError):
        LabelJoiner(log, tmp_path / "k.sqlite", horizon_days=0)
    log.close()


@pytest.fixture(scope="module")
def sim_log(tmp_path_factory):
    """A simulator event log: 48 users over 14 days, K = 2 so that some labels are censored."""
    out = tmp_path_factory.mktemp("sim")
    simulated_log(out, LiveConfig(users=48, days=14, seed=3, horizon_days=2))
    return out


def _content(path) -> dict[int, tuple]:
    import sqlite3

    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT request_id, next_seq, session_end, censored, return_time, label_ts, feedback, arm, "
                        "version, ts, day FROM transitions").fetchall()
    conn.close()
    return {r[0]: r[1:] for r in rows}


def test_conservation_and_batch_boundaries_do_not_matter(sim_log, tmp_path):
    log = SqliteEventLog(sim_log / "events.sqlite", readonly=True)
    served = log.count("requests")
    contents = []
    for batch in (7, 1_000, 10**9):
        joiner = LabelJoiner(log, tmp_path / f"j{batch}.sqlite", horizon_days=2, batch_events=batch)
        joiner.run(poll_seconds=0)
        c = joiner.counts()
        assert c["pending"] == 0 and c["joined"] + c["censored"] + c["closed"] == served
        assert c["censored"] > 0 and c["closed"] > 0
        rows = read_transitions(joiner.conn, n_feedback=9)
        assert len(np.unique(rows.request_seq)) == served  # every request exactly once
        end = rows.session_end == 1
        assert np.all(rows.return_time[(rows.censored == JOINED) & ~end] == 0)
        assert np.all(rows.return_time[rows.censored == CENSORED] == 2)
        assert np.all(rows.return_time[(rows.censored == JOINED) & end] <= 2)
        assert np.all(rows.label_ts >= rows.ts)  # labels never come before their request
        joiner.close()
        contents.append(_content(tmp_path / f"j{batch}.sqlite"))
    assert contents[0] == contents[1] == contents[2]
    log.close()
