"""KuaiRand-Pure loading and validation, and session/request construction (synthetic files only)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from rlur.data.fixtures import BROKEN_VARIANTS, LOG_HEADER, write_fixture
from rlur.data.kuairand import (
    STANDARD_LOG_FILES,
    USER_FILE,
    VIDEO_FILE,
    KuaiRandError,
    load_kuairand,
    resolve_data_dir,
    summarize_features,
)
from rlur.data.sessions import build_sessions, logged_statistics


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory) -> Path:
    return write_fixture(tmp_path_factory.mktemp("fx"), n_users=60, n_videos=40, n_days=16, seed=3,
                         with_random_log=True).root


def test_loads_the_fixture_with_its_quirks(fixture_dir: Path) -> None:
    data = load_kuairand(fixture_dir, include_random=True)
    assert len(data.logs) > 1000
    assert data.log_files[-1].startswith("log_random")
    assert data.logs.flags.shape == (len(data.logs), 8)
    assert set(np.unique(data.logs.flags)) <= {0, 1}
    # is_live_streamer −124 is read as 0; float-formatted categories are normalised, missing → "".
    assert set(np.unique(data.users.columns["is_live_streamer"])) <= {0, 1}
    feat4 = set(data.users.columns["onehot_feat4"].tolist())
    assert "" in feat4 and all("." not in v for v in feat4)
    assert np.isnan(data.videos.columns["video_duration"]).any()
    assert any(t == () for t in data.videos.columns["tag"])
    summary = summarize_features(data.users, data.videos)
    assert summary["users"] == 60 and summary["videos"] == 40


def test_resolves_every_folder_layout(fixture_dir: Path) -> None:
    data_dir = fixture_dir / "data"
    assert resolve_data_dir(fixture_dir) == data_dir
    assert resolve_data_dir(data_dir) == data_dir
    assert resolve_data_dir(fixture_dir.parent) == data_dir
    with pytest.raises(FileNotFoundError, match="holds no KuaiRand-Pure files"):
        resolve_data_dir(fixture_dir.parent.parent)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_kuairand(fixture_dir / "nope")


@pytest.mark.parametrize("variant", sorted(BROKEN_VARIANTS))
def test_schema_errors_name_file_and_column(tmp_path: Path, variant: str) -> None:
    info = write_fixture(tmp_path, n_users=30, n_videos=20, n_days=16, seed=1, broken=variant)
    file, column = BROKEN_VARIANTS[variant]
    with pytest.raises(KuaiRandError) as err:
        load_kuairand(info.root)
    msg = str(err.value)
    assert file in msg and f"'{column}'" in msg, msg
    assert "\n" not in msg
    assert err.value.file == file and err.value.column == column


def test_duplicates_can_be_dropped(tmp_path: Path) -> None:
    info = write_fixture(tmp_path, n_users=30, n_videos=20, n_days=16, seed=1, broken="duplicate_rows")
    with pytest.raises(KuaiRandError, match="--drop-duplicates"):
        load_kuairand(info.root)
    data = load_kuairand(info.root, drop_duplicates=True)
    assert len(data.logs) == info.rows
    assert any("dropped 1 duplicate" in n for n in data.notes)


def test_missing_log_file_and_features_only(tmp_path: Path) -> None:
    info = write_fixture(tmp_path, n_users=30, n_videos=20, n_days=4, seed=1)
    (info.data_dir / STANDARD_LOG_FILES[1]).unlink()
    with pytest.raises(FileNotFoundError, match=STANDARD_LOG_FILES[1]):
        load_kuairand(info.root)
    data = load_kuairand(info.root, features_only=True)
    assert len(data.logs) == 0 and len(data.users) == 30


def test_max_rows_keeps_whole_user_histories(fixture_dir: Path) -> None:
    full = load_kuairand(fixture_dir)
    part = load_kuairand(fixture_dir, max_rows=len(full.logs) // 3, seed=0)
    assert 0 < len(part.logs) <= len(full.logs) // 3
    for u in np.unique(part.logs.user_id)[:5]:
        assert (part.logs.user_id == u).sum() == (full.logs.user_id == u).sum()


def _write_tiny(folder: Path, rows: list[tuple]) -> Path:
    """Two users, three videos; ``rows`` = (user, video, date, hhmm, seconds_of_day, click)."""
    d = folder / "data"
    d.mkdir(parents=True)
    ucols = ["user_id", "user_active_degree", "is_lowactive_period", "is_live_streamer", "is_video_author",
             "follow_user_num", "follow_user_num_range", "fans_user_num", "fans_user_num_range", "friend_user_num",
             "friend_user_num_range", "register_days", "register_days_range", *[f"onehot_feat{i}" for i in range(18)]]
    with (d / USER_FILE).open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(ucols)
        for u in (0, 1):
            w.writerow([u, "full_active", 0, -124, 1, 5, "(0,10]", 5, "[1,10)", 1, "[1,5)", 100, "91-180"] + [0] * 18)
    with (d / VIDEO_FILE).open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video_id", "author_id", "video_type", "upload_dt", "upload_type", "visible_status",
                    "video_duration", "server_width", "server_height", "music_id", "music_type", "tag"])
        for v in range(3):
            w.writerow([v, 1, "NORMAL", "2022-04-01", "Web", "0.0", "10000.0", "720.0", "1280.0", 5, "9.0", "3"])
    for i, name in enumerate(STANDARD_LOG_FILES):
        with (d / name).open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(LOG_HEADER)
            for k, (u, v, date, hm, sec, click) in enumerate(rows):
                if (date < 20220422) == (i == 0):
                    t = 1649347200000 + (date - 20220408) * 86_400_000 + sec * 1000 + k
                    w.writerow([u, v, date, hm, t, click, 0, 0, 0, 0, 0, click, 5000, 10000, 0, 0, 0, 0, 1])
    return folder


def test_requests_sessions_and_return_gaps(tmp_path: Path) -> None:
    rows = [(0, k % 3, 20220408, 1000, 36000 + k, k % 2) for k in range(14)]  # 14 impressions: 6 + 6 + 2
    rows += [(0, 1, 20220408, 2200, 79200, 1)]  # same day, 12 hours later
    rows += [(0, 2, 20220410, 900, 32400, 0), (0, 0, 20220423, 900, 32400, 1)]
    rows += [(1, 0, 20220409, 800, 28800, 1)]
    folder = _write_tiny(tmp_path, rows)
    data = load_kuairand(folder)
    dur = np.full(3, 10_000.0)
    s = build_sessions(data.logs, data.users.ids, data.videos.ids, dur)
    # User-day sessions: user 0 on days 0, 2, 15; user 1 on day 1.
    assert s.n_sessions == 4
    assert s.sess_n_req.tolist() == [3, 1, 1, 1]
    assert s.req_len.tolist()[:3] == [6, 6, 3]
    assert s.sess_return_day.tolist() == [2, 13, -1, -1]
    assert s.row_frac.max() <= 1.0 and np.isclose(s.row_frac[0], 0.5)
    stats = logged_statistics(s, max_return_day=10)
    assert stats["return_gaps"] == 2 and np.isclose(sum(stats["return_day_hist"]), 1.0)
    assert stats["return_day_hist"][1] == 0.5 and stats["return_day_hist"][-1] == 0.5
    # Gap-based sessions: the 12-hour pause splits day 0 in two; the reopen is a same-day return.
    g = build_sessions(data.logs, data.users.ids, data.videos.ids, dur, mode="gap", gap_hours=2)
    assert g.n_sessions == 5
    assert g.sess_return_day.tolist()[:2] == [0, 2]
    assert 0.4 < g.sess_return_time[0] < 0.6
    assert g.sess_opens_today.tolist()[:2] == [0, 1]
    with pytest.raises(ValueError, match="session-gap-hours"):
        build_sessions(data.logs, data.users.ids, data.videos.ids, dur, mode="gap", gap_hours=0)
