"""Small synthetic KuaiRand-Pure folders with known hidden rules (for tests, demos and benchmarks).

:func:`write_fixture` writes ``DEST/KuaiRand-Pure/data/`` with the real file names and columns
(including the real quirks: ``is_live_streamer`` −124 for "no", float-formatted categories with
missing values, missing ``video_duration``, ``music_type`` and ``tag``), generated from rules that a
learned simulator should recover:

* **click**: users have a hidden taste (``onehot_feat0``) and videos a primary tag; a video whose tag
  parity matches the taste is clicked far more often (logit +1.8);
* **long view**: only after a click, less likely for long videos;
* **like**, **profile entry** rise with the match; **hate** falls with it; **follow** is higher for
  new users;
* **sessions** are user-days of requests of exactly 6 impressions; after each request the user
  leaves with a probability that falls with the request's clicks;
* **return gap** (days to the next active day) is drawn from a distribution that depends only on
  ``user_active_degree`` (``RETURN_GAP_SHARE``).

The logging policy shows 6 distinct videos drawn in proportion to a hidden popularity, so a learned
world replaying the logged exposure should reproduce the logged rates. :data:`BROKEN_VARIANTS` lists
damaged variants (``broken=…``) and the file and column their error must name.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rlur.data.kuairand import RANDOM_LOG_FILE, STANDARD_LOG_FILES, USER_FILE, VIDEO_FILE

__all__ = ["BROKEN_VARIANTS", "RETURN_GAP_SHARE", "FixtureInfo", "write_fixture"]

LOG_HEADER: tuple[str, ...] = (
    "user_id", "video_id", "date", "hourmin", "time_ms", "is_click", "is_like", "is_follow", "is_comment",
    "is_forward", "is_hate", "long_view", "play_time_ms", "duration_ms", "profile_stay_time", "comment_stay_time",
    "is_profile_enter", "is_rand", "tab",
)
DAY0 = np.datetime64("2022-04-08")
#: Days of the first standard log (2022-04-08 .. 04-21); later days go to the second one.
FIRST_LOG_DAYS = 14
DEGREES: tuple[str, ...] = ("full_active", "high_active", "middle_active", "low_active", "2_14_day_new")
DEGREE_SHARE: tuple[float, ...] = (0.45, 0.25, 0.12, 0.08, 0.10)
#: Hidden return-gap distribution (days 1..12) per ``user_active_degree``.
RETURN_GAP_SHARE: dict[str, tuple[float, ...]] = {
    "full_active": (0.70, 0.14, 0.06, 0.03, 0.02, 0.015, 0.01, 0.005, 0.005, 0.005, 0.005, 0.005),
    "high_active": (0.50, 0.20, 0.10, 0.06, 0.04, 0.03, 0.02, 0.015, 0.01, 0.01, 0.01, 0.005),
    "middle_active": (0.30, 0.20, 0.14, 0.10, 0.07, 0.05, 0.04, 0.03, 0.02, 0.02, 0.02, 0.01),
    "low_active": (0.25, 0.18, 0.14, 0.11, 0.08, 0.06, 0.05, 0.04, 0.03, 0.02, 0.02, 0.02),
    "2_14_day_new": (0.35, 0.20, 0.12, 0.08, 0.06, 0.05, 0.04, 0.03, 0.02, 0.02, 0.02, 0.01),
}
_TAG_IDS = (39, 3, 9, 6, 20, 7, 28, 11)

#: ``broken`` variant → (file, column) that the loader's error message must name.
BROKEN_VARIANTS: dict[str, tuple[str, str]] = {
    "missing_column": (STANDARD_LOG_FILES[0], "is_like"),
    "wrong_type": (STANDARD_LOG_FILES[1], "time_ms"),
    "bad_flag": (STANDARD_LOG_FILES[0], "is_click"),
    "duplicate_rows": (STANDARD_LOG_FILES[0], "time_ms"),
    "unknown_user": (STANDARD_LOG_FILES[1], "user_id"),
    "unknown_video": (STANDARD_LOG_FILES[0], "video_id"),
    "user_wrong_type": (USER_FILE, "register_days"),
    "streamer_value": (USER_FILE, "is_live_streamer"),
    "video_missing_column": (VIDEO_FILE, "tag"),
    "video_wrong_type": (VIDEO_FILE, "video_duration"),
}


@dataclass
class FixtureInfo:
    """Where the fixture was written and what it holds."""

    root: Path
    """The ``KuaiRand-Pure`` folder (``data/`` is inside)."""
    rows: int
    users: int
    videos: int
    days: int
    truth: dict = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"


def _write(path: Path, header, rows) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def _users(rng: np.random.Generator, n: int) -> tuple[list[list], np.ndarray, np.ndarray]:
    deg = rng.choice(len(DEGREES), n, p=DEGREE_SHARE)
    taste = rng.integers(0, 2, n)
    rows = []
    ranges = lambda x, cuts: next((lab for c, lab in cuts if x <= c), cuts[-1][1])  # noqa: E731
    for i in range(n):
        follow, fans, friend = (int(rng.lognormal(m, 1.0)) for m in (4.0, 3.0, 2.0))
        reg = int(rng.integers(20, 2000))
        opt = lambda v, miss=0.03: "" if rng.random() < miss else f"{float(v):.1f}"  # noqa: E731
        rows.append([
            i, DEGREES[deg[i]], 0, 1 if rng.random() < 0.2 else -124, int(rng.random() < 0.8),
            follow, ranges(follow, ((10, "(0,10]"), (50, "(10,50]"), (250, "(50,250]"), (10**9, "250+"))),
            fans, ranges(fans, ((0, "0"), (10, "[1,10)"), (100, "[10,100)"), (10**9, "[100,1k)"))),
            friend, ranges(friend, ((0, "0"), (5, "[1,5)"), (30, "[5,30)"), (10**9, "30+"))),
            reg, ranges(reg, ((180, "91-180"), (365, "181-365"), (730, "366-730"), (10**9, "730+"))),
            int(taste[i]), int(rng.integers(1, 7)), int(rng.integers(0, 12)), int(rng.integers(800, 1200)),
            opt(rng.integers(0, 5)), 0, int(rng.integers(0, 3)), int(rng.integers(0, 40)), int(rng.integers(0, 90)),
            int(rng.integers(1, 7)), int(rng.integers(0, 5)), int(rng.integers(0, 3)),
            *[opt(rng.integers(0, 2)) for _ in range(6)],
        ])
    return rows, deg, taste


def _videos(rng: np.random.Generator, n: int) -> tuple[list[list], dict[str, np.ndarray]]:
    ptag = rng.integers(0, len(_TAG_IDS), n)
    has_tag = rng.random(n) >= 0.05
    dur = np.exp(np.log(60_000) + 0.6 * rng.standard_normal(n))
    dur_missing = rng.random(n) < 0.03
    pop = rng.lognormal(0.0, 0.8, n)
    quality = 0.5 * rng.standard_normal(n)
    rows = []
    for j in range(n):
        tags = ""
        if has_tag[j]:
            tags = str(_TAG_IDS[ptag[j]])
            if rng.random() < 0.25:
                tags += "," + str(_TAG_IDS[(ptag[j] + 3) % len(_TAG_IDS)])
        portrait = rng.random() < 0.7
        rows.append([
            j, int(rng.integers(10**6, 10**7)), "AD" if rng.random() < 0.02 else "NORMAL",
            f"2022-04-{int(rng.integers(1, 8)):02d}", str(rng.choice(["LongImport", "Web", "ShortImport", "Kmovie"])),
            "0.0", "" if dur_missing[j] else f"{dur[j]:.1f}", "720.0" if portrait else "1280.0",
            "1280.0" if portrait else "720.0", int(rng.integers(10**9, 10**10)),
            "" if rng.random() < 0.03 else str(rng.choice(["9.0", "4.0"])), tags,
        ])
    return rows, {"ptag": ptag, "has_tag": has_tag, "dur_ms": dur, "pop": pop, "quality": quality}


def _slates(rng: np.random.Generator, pop: np.ndarray, n: int) -> np.ndarray:
    """``n`` slates of 6 distinct videos drawn ∝ ``pop`` (Efraimidis–Spirakis keys on a small catalogue;
    on a large one, draws with replacement whose rare repeats are redrawn uniformly)."""
    if len(pop) <= 2000:
        keys = np.log(rng.random((n, len(pop)))) / pop
        return np.argsort(-keys, axis=1)[:, :6]
    vid = np.searchsorted(np.cumsum(pop), rng.random((n, 6)) * pop.sum()).clip(max=len(pop) - 1)
    srt = np.sort(vid, axis=1)
    for row in np.nonzero((srt[:, 1:] == srt[:, :-1]).any(1))[0]:
        vid[row] = rng.choice(len(pop), 6, replace=False)
    return vid


def write_fixture(
    dest: str | Path, n_users: int = 200, n_videos: int = 150, n_days: int = 20, seed: int = 0,
    with_random_log: bool = False, broken: str | None = None, max_requests: int = 8,
) -> FixtureInfo:
    """Write a synthetic KuaiRand-Pure folder at ``dest/KuaiRand-Pure`` (see the module docstring)."""
    if broken is not None and broken not in BROKEN_VARIANTS:
        raise ValueError(f"unknown broken variant {broken!r}; choose one of {', '.join(BROKEN_VARIANTS)}")
    rng = np.random.default_rng(seed)
    root = Path(dest) / "KuaiRand-Pure"
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    user_rows, deg, taste = _users(rng, n_users)
    video_rows, v = _videos(rng, n_videos)
    parity = np.where(v["has_tag"], v["ptag"] % 2, -1)
    dur_z = (np.log(v["dur_ms"]) - np.log(60_000)) / 0.6
    group_click = np.array([0.2, 0.0, -0.2, -0.4, 0.0])
    group_leave = np.array([-0.3, 0.0, 0.2, 0.4, 0.1])
    gap_share = np.array([RETURN_GAP_SHARE[d] for d in DEGREES])
    gap_share /= gap_share.sum(1, keepdims=True)
    gap_cdf = gap_share.cumsum(1)
    pop = v["pop"] / v["pop"].sum()

    rows: list[np.ndarray] = []
    next_day = np.zeros(n_users, np.int64)
    for day in range(n_days):
        users = np.nonzero(next_day == day)[0]
        hour = rng.integers(8, 23, len(users))
        start_ms = ((DAY0 + day - np.datetime64("1970-01-01")).astype(np.int64) * 86_400_000
                    - 8 * 3_600_000 + hour * 3_600_000 + rng.integers(0, 3_000_000, len(users)))
        alive = np.ones(len(users), bool)
        for r in range(max_requests):
            idx = np.nonzero(alive)[0]
            if len(idx) == 0:
                break
            u = users[idx]
            vid = _slates(rng, pop, len(idx))
            match = (parity[vid] == taste[u][:, None]).astype(np.float64)
            g = deg[u][:, None]
            click = rng.random(vid.shape) < _sig(-1.2 + 1.8 * match + 0.8 * v["quality"][vid] + group_click[g])
            long_view = click & (rng.random(vid.shape) < _sig(0.6 - 0.8 * dur_z[vid]))
            like = rng.random(vid.shape) < _sig(-3.2 + 1.2 * match)
            follow = rng.random(vid.shape) < _sig(-4.5 + 1.5 * (g == 4))
            comment = rng.random(vid.shape) < _sig(-4.2 + 0 * match)
            forward = rng.random(vid.shape) < _sig(-5.0 + 0 * match)
            profile = rng.random(vid.shape) < _sig(-3.8 + 1.0 * match)
            hate = rng.random(vid.shape) < _sig(-4.5 + 1.2 * (1 - match))
            dur = v["dur_ms"][vid]
            frac = np.where(long_view, rng.uniform(0.6, 1.0, vid.shape),
                            np.where(click, rng.uniform(0.05, 0.5, vid.shape), rng.uniform(0.0, 0.15, vid.shape)))
            t = start_ms[idx][:, None] + r * 90_000 + np.arange(6) * 1_000
            date = int(str(DAY0 + day).replace("-", ""))
            hm = (hour[idx][:, None] + (t - start_ms[idx][:, None]) // 3_600_000) % 24 * 100
            block = np.stack(np.broadcast_arrays(
                u[:, None], vid, date, hm, t, click, like, follow, comment, forward, hate, long_view,
                np.round(frac * dur), np.round(dur), 0, 0, profile, 0, 1), axis=-1).reshape(-1, len(LOG_HEADER))
            rows.append(block.astype(np.int64))
            leave_p = _sig(0.3 - 0.6 * (click.sum(1) - 2.5) + group_leave[deg[u]])
            alive[idx[rng.random(len(idx)) < leave_p]] = False
        gap = 1 + (gap_cdf[deg[users]] < rng.random((len(users), 1))).sum(1)
        next_day[users] = day + np.minimum(gap, gap_cdf.shape[1])
    log = np.concatenate(rows)
    first = log[:, 2] < int(str(DAY0 + FIRST_LOG_DAYS).replace("-", ""))
    files = {STANDARD_LOG_FILES[0]: log[first], STANDARD_LOG_FILES[1]: log[~first]}
    logs_txt = {name: [list(map(str, r)) for r in part.tolist()] for name, part in files.items()}
    if with_random_log:
        later = log[~first]
        pick = later[rng.choice(len(later), size=min(len(later), 200), replace=False)].copy()
        pick[:, 1] = rng.integers(0, n_videos, len(pick))
        pick[:, 4] += 500
        pick[:, 17] = 1
        logs_txt[RANDOM_LOG_FILE] = [list(map(str, r)) for r in pick.tolist()]
    user_header = ["user_id", "user_active_degree", "is_lowactive_period", "is_live_streamer", "is_video_author",
                   "follow_user_num", "follow_user_num_range", "fans_user_num", "fans_user_num_range",
                   "friend_user_num", "friend_user_num_range", "register_days", "register_days_range",
                   *[f"onehot_feat{i}" for i in range(18)]]
    video_header = ["video_id", "author_id", "video_type", "upload_dt", "upload_type", "visible_status",
                    "video_duration", "server_width", "server_height", "music_id", "music_type", "tag"]
    headers = {USER_FILE: list(user_header), VIDEO_FILE: list(video_header)}
    tables = {USER_FILE: user_rows, VIDEO_FILE: video_rows}
    for name, rws in logs_txt.items():
        headers[name], tables[name] = list(LOG_HEADER), rws
    _damage(broken, headers, tables, rng)
    for name in tables:
        _write(data / name, headers[name], tables[name])
    truth = {"return_gap_share": {d: list(RETURN_GAP_SHARE[d]) for d in DEGREES},
             "degree_share": dict(zip(DEGREES, DEGREE_SHARE, strict=True))}
    return FixtureInfo(root=root, rows=len(log), users=n_users, videos=n_videos, days=n_days, truth=truth)


def _damage(broken: str | None, headers: dict, tables: dict, rng: np.random.Generator) -> None:
    """Apply one ``BROKEN_VARIANTS`` damage in place."""
    if broken is None:
        return
    file, column = BROKEN_VARIANTS[broken]
    head, rows = headers[file], tables[file]
    j = head.index(column)
    i = len(rows) // 2
    if broken in ("missing_column", "video_missing_column"):
        del head[j]
        for r in rows:
            del r[j]
    elif broken in ("wrong_type", "user_wrong_type", "video_wrong_type"):
        rows[i][j] = "abc"
    elif broken == "bad_flag":
        rows[i][j] = "2"
    elif broken == "streamer_value":
        rows[i][j] = "5"
    elif broken == "duplicate_rows":
        rows.insert(i + 1, list(rows[i]))
    elif broken == "unknown_user":
        rows[i][j] = "999999"
    elif broken == "unknown_video":
        rows[i][j] = "999999"
