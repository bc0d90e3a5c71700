"""The request log: background writer (batching, flush on close), SQLite/JSONL formats, the loader."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rlur.serving.request_log import LOG_COLUMNS, LogBatch, RequestLogWriter, read_request_log
from rlur.sim.env import OBS_DIM


def make_batch(b: int, start: int = 0, string_ids: bool = False, version: str = "v1") -> LogBatch:
    rng = np.random.default_rng(start)
    ids = [[f"s{start + i}-{j}" if string_ids else (start + i) * 10 + j for j in range(6)] for i in range(b)]
    return LogBatch(
        ts=1_700_000_000.0 + start, policy_version=version, endpoint="/v1/rank",
        request_ids=[f"r{start + i}" for i in range(b)],
        user_ids=[None if i % 3 == 0 else (i if i % 3 == 1 else f"user-{i}") for i in range(b)],
        groups=[i % 4 for i in range(b)], state=rng.random((b, OBS_DIM), dtype=np.float32),
        action=rng.standard_normal((b, 8), dtype=np.float32), mu=rng.random((b, 8), dtype=np.float32),
        sigma=rng.random((b, 8), dtype=np.float32) + 0.1, log_prob=rng.standard_normal(b, dtype=np.float32),
        deterministic=[i % 2 == 0 for i in range(b)], seeds=[i if i % 2 else None for i in range(b)],
        shown_ids=ids, shown_pos=np.tile(np.arange(6), (b, 1)), n_candidates=[200] * b,
    )


@pytest.mark.parametrize("suffix", [".sqlite", ".jsonl"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"log{suffix}"
    batches = [make_batch(3, 0), make_batch(2, 3, version="v2")]
    with RequestLogWriter(path) as w:
        for b in batches:
            w.submit(b)
    out = read_request_log(path)
    assert out["state"].shape == (5, OBS_DIM) and out["state"].dtype == torch.float32
    for key in ("state", "action", "mu", "sigma"):
        expected = np.concatenate([getattr(b, key) for b in batches])
        assert torch.equal(out[key], torch.from_numpy(expected)), key
    assert torch.equal(out["log_prob"], torch.from_numpy(np.concatenate([b.log_prob for b in batches])))
    assert out["group"].tolist() == [0, 1, 2, 0, 1]
    assert out["shown"].dtype == torch.long
    assert out["shown"].tolist() == [x for b in batches for x in b.shown_ids]
    assert out["shown_pos"].tolist() == [list(range(6))] * 5
    assert out["versions"] == ["v1", "v2"] and out["version"].tolist() == [0, 0, 0, 1, 1]
    assert out["timestamp"].tolist() == [1_700_000_000.0] * 3 + [1_700_000_003.0] * 2
    assert out["user_id"] == [None, 1, "user-2", None, 1]
    assert out["seed"] == [None, 1, None, None, 1]
    assert out["deterministic"].tolist() == [True, False, True, True, False]
    assert out["request_id"] == ["r0", "r1", "r2", "r3", "r4"]


def test_string_or_huge_ids_stay_a_list(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    with RequestLogWriter(path) as w:
        w.submit(make_batch(2, string_ids=True))
    out = read_request_log(path)
    assert out["shown"] == out["shown_ids"] == [[f"s{i}-{j}" for j in range(6)] for i in range(2)]
    big = make_batch(1, 5)
    big.shown_ids = [[2**64 + j for j in range(6)]]
    with RequestLogWriter(tmp_path / "big.jsonl") as w:
        w.submit(big)
    assert read_request_log(tmp_path / "big.jsonl")["shown"] == [[2**64 + j for j in range(6)]]


def test_close_flushes_everything_and_reopen_appends(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    w = RequestLogWriter(path, max_batch_rows=7)
    n = 0
    threads = []

    def submit_many(k: int) -> None:
        for j in range(50):
            w.submit(make_batch(1 + j % 4, k * 1000 + j))

    for k in range(4):
        threads.append(threading.Thread(target=submit_many, args=(k,)))
        n += sum(1 + j % 4 for j in range(50))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    assert w.rows_written == n and w.errors == 0 and w.pending == 0
    with pytest.raises(RuntimeError):
        w.submit(make_batch(1))
    with RequestLogWriter(path) as w2:
        w2.submit(make_batch(2, 9999))
        assert w2.flush(10)
    assert len(read_request_log(path)["request_id"]) == n + 2


def test_sqlite_layout_is_wal_and_documented(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    with RequestLogWriter(path) as w:
        w.submit(make_batch(1))
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    cols = [r[1] for r in db.execute("PRAGMA table_info(requests)")]
    assert cols == [c for c, _ in LOG_COLUMNS]
    meta = dict(db.execute("SELECT key, value FROM meta"))
    assert meta["schema_version"] == "1" and meta["obs_dim"] == str(OBS_DIM)
    db.close()


def test_incompatible_or_missing_logs(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE requests (x INTEGER)")
    db.commit()
    db.close()
    with pytest.raises(ValueError, match="columns"):
        RequestLogWriter(path)
    with pytest.raises(FileNotFoundError):
        read_request_log(tmp_path / "nope.sqlite")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        read_request_log(bad)


def test_write_failure_is_counted_not_raised(tmp_path: Path) -> None:
    w = RequestLogWriter(tmp_path / "log.sqlite")
    w._sink.db.execute("DROP TABLE requests")  # simulate a broken database under the writer
    w.submit(make_batch(3))
    deadline = time.monotonic() + 10
    while w.errors < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    w.close()
    assert w.errors == 3 and w.rows_written == 0
