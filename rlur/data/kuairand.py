"""KuaiRand-Pure: schema, chunked loading and validation (numpy + the ``csv`` module, no pandas).

Every problem a user can cause (a missing file or column, a value of the wrong type, duplicate
impressions, ids that no feature file knows) raises :class:`KuaiRandError`, a ``ValueError`` whose
one-line message names the file, the column and, where there is one, the line.

Real-data quirks handled here:

* ``is_live_streamer`` uses −124 for "no" (read as 0);
* ``onehot_feat4`` and ``onehot_feat12..17`` have missing values and are written as floats
  ("1.0"): category values are normalised ("1.0" → "1") and a missing value is its own category;
* ``video_duration`` (239 missing), ``music_type`` (203) and ``tag`` (96) have missing values;
* integer columns written as floats ("20220408.0") are accepted when the value is integral.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

__all__ = [
    "BEHAVIOUR_COLUMNS",
    "LOG_COLUMNS",
    "RANDOM_LOG_FILE",
    "STANDARD_LOG_FILES",
    "USER_COLUMNS",
    "USER_FILE",
    "VIDEO_COLUMNS",
    "VIDEO_FILE",
    "FeatureTable",
    "KuaiRandData",
    "KuaiRandError",
    "LogTable",
    "load_kuairand",
    "read_feature_table",
    "read_log",
    "resolve_data_dir",
    "summarize_features",
]

STANDARD_LOG_FILES: tuple[str, ...] = ("log_standard_4_08_to_4_21_pure.csv", "log_standard_4_22_to_5_08_pure.csv")
RANDOM_LOG_FILE = "log_random_4_22_to_5_08_pure.csv"
USER_FILE = "user_features_pure.csv"
VIDEO_FILE = "video_features_basic_pure.csv"

#: Log columns rlur reads, with their kind. Other columns (``profile_stay_time``,
#: ``comment_stay_time``, ``is_rand``, ``tab``) may be present and are ignored.
#: Kinds: ``int`` (required integer), ``flag`` (0/1), ``float?`` (number, may be missing).
LOG_COLUMNS: dict[str, str] = {
    "user_id": "int", "video_id": "int", "date": "int", "hourmin": "int", "time_ms": "int",
    "is_click": "flag", "long_view": "flag", "is_like": "flag", "is_follow": "flag", "is_comment": "flag",
    "is_forward": "flag", "is_profile_enter": "flag", "is_hate": "flag",
    "play_time_ms": "float?", "duration_ms": "float?",
}
#: Log column of each behaviour, in ``rlur.sim.world.BEHAVIOURS`` order.
BEHAVIOUR_COLUMNS: tuple[str, ...] = (
    "is_click", "long_view", "is_like", "is_follow", "is_comment", "is_forward", "is_profile_enter", "is_hate",
)

#: Kinds: ``id`` (unique integer), ``str`` (category text), ``flag`` (0/1), ``streamer`` (1 or −124),
#: ``num?`` (number, may be missing), ``cat?`` (numeric category, may be missing), ``date?``
#: (YYYY-MM-DD, may be missing), ``tags?`` (comma-separated integers, may be missing).
USER_COLUMNS: dict[str, str] = {
    "user_id": "id", "user_active_degree": "str", "is_lowactive_period": "flag", "is_live_streamer": "streamer",
    "is_video_author": "flag",
    "follow_user_num": "num?", "follow_user_num_range": "str", "fans_user_num": "num?", "fans_user_num_range": "str",
    "friend_user_num": "num?", "friend_user_num_range": "str", "register_days": "num?",
    "register_days_range": "str",
    **{f"onehot_feat{i}": "cat?" for i in range(18)},
}
VIDEO_COLUMNS: dict[str, str] = {
    "video_id": "id", "author_id": "str", "video_type": "str", "upload_dt": "date?", "upload_type": "str",
    "visible_status": "cat?", "video_duration": "num?", "server_width": "num?", "server_height": "num?",
    "music_id": "str", "music_type": "cat?", "tag": "tags?",
}

_CHUNK_ROWS = 100_000


class KuaiRandError(ValueError):
    """A problem in the input files; the message names the file, the column and the line."""

    def __init__(self, file: str, message: str, column: str | None = None, line: int | None = None) -> None:
        self.file, self.column, self.line = file, column, line
        where = file + (f", line {line}" if line is not None else "")
        what = f"column '{column}': " if column else ""
        super().__init__(f"{where}: {what}{message}")


# ----------------------------------------------------------------------------------------------
# Locating the files
# ----------------------------------------------------------------------------------------------
def resolve_data_dir(path: str | Path) -> Path:
    """The folder holding the CSV files: ``KuaiRand-Pure/`` (with ``data/`` inside), ``data/`` itself,
    or the parent of ``KuaiRand-Pure/`` (as written by ``rlur data download``)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist")
    if not p.is_dir():
        raise KuaiRandError(str(p), "expected a folder (KuaiRand-Pure/ or its data/ folder)")
    for cand in (p, p / "data", p / "KuaiRand-Pure" / "data"):
        if (cand / USER_FILE).is_file() or (cand / STANDARD_LOG_FILES[0]).is_file():
            return cand
    raise FileNotFoundError(
        f"{p} holds no KuaiRand-Pure files: expected {USER_FILE} in it, in {p / 'data'} or in "
        f"{p / 'KuaiRand-Pure' / 'data'} (run 'rlur data download kuairand-pure --dest DIR' first)"
    )


# ----------------------------------------------------------------------------------------------
# Typed column parsing (vectorised, with a slow path only to name the first bad value)
# ----------------------------------------------------------------------------------------------
def _first_bad(values: np.ndarray, ok) -> int:
    for i, v in enumerate(values.tolist()):
        if not ok(v):
            return i
    return -1


def _is_float(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _parse_float(values: np.ndarray, file: str, column: str, lines: np.ndarray, allow_missing: bool) -> np.ndarray:
    v = np.char.strip(values.astype(str))
    missing = v == ""
    if missing.any():
        if not allow_missing:
            i = int(np.argmax(missing))
            raise KuaiRandError(file, "missing value (expected a number)", column, int(lines[i]))
        v = np.where(missing, "nan", v)
    try:
        out = v.astype(np.float64)
    except ValueError:
        i = _first_bad(v, _is_float)
        raise KuaiRandError(file, f"wrong type: expected a number, got {v[i]!r}", column, int(lines[i])) from None
    return out


def _parse_int(values: np.ndarray, file: str, column: str, lines: np.ndarray) -> np.ndarray:
    v = np.char.strip(values.astype(str))
    try:
        return v.astype(np.int64)
    except ValueError:
        pass
    f = _parse_float(v, file, column, lines, allow_missing=False)
    bad = ~np.isfinite(f) | (f != np.round(f))
    if bad.any():
        i = int(np.argmax(bad))
        raise KuaiRandError(file, f"wrong type: expected an integer, got {v[i]!r}", column, int(lines[i]))
    return f.astype(np.int64)


def _parse_flag(values: np.ndarray, file: str, column: str, lines: np.ndarray) -> np.ndarray:
    x = _parse_int(values, file, column, lines)
    bad = (x != 0) & (x != 1)
    if bad.any():
        i = int(np.argmax(bad))
        raise KuaiRandError(file, f"wrong value: expected 0 or 1, got {values[i]!r}", column, int(lines[i]))
    return x.astype(np.uint8)


def _norm_category(values: np.ndarray, file: str, column: str, lines: np.ndarray) -> np.ndarray:
    """Numeric category → canonical text ("1.0" → "1"); missing stays ""."""
    f = _parse_float(values, file, column, lines, allow_missing=True)
    out = np.full(len(f), "", dtype=object)
    ok = np.isfinite(f)
    integral = ok & (f == np.round(f))
    out[integral] = f[integral].astype(np.int64).astype(str)
    frac = ok & ~integral
    out[frac] = f[frac].astype(str)
    return out


class _Counting(io.RawIOBase):
    """A raw binary reader that counts the bytes read (for a byte-accurate progress bar)."""

    def __init__(self, raw) -> None:
        self.raw, self.n = raw, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        k = self.raw.readinto(b)
        self.n += k or 0
        return k


def _read_rows(path: Path, chunk_rows: int) -> Iterator[tuple[list[str], list[list[str]], int, int]]:
    """Yield ``(header, rows, first_line, bytes_read)``; ``first_line`` is the file line of ``rows[0]``."""
    name = path.name
    with path.open("rb", buffering=0) as raw:
        counter = _Counting(raw)
        fh = io.TextIOWrapper(io.BufferedReader(counter, 1 << 20), encoding="utf-8", newline="")
        reader = csv.reader(fh)
        try:
            header = [h.strip().lstrip("\ufeff") for h in next(reader)]
        except StopIteration:
            raise KuaiRandError(name, "the file is empty (no header line)") from None
        except (csv.Error, UnicodeDecodeError) as err:
            raise KuaiRandError(name, f"not a readable CSV file: {err}") from None
        line = 2
        while True:
            try:
                rows = list(itertools.islice(reader, chunk_rows))
            except (csv.Error, UnicodeDecodeError) as err:
                raise KuaiRandError(name, f"not a readable CSV file: {err}") from None
            if not rows and line > 2:
                return
            yield header, rows, line, counter.n  # a header-only file yields one empty chunk
            if not rows:
                return
            line += len(rows)


def _check_header(name: str, header: list[str], schema: dict[str, str]) -> dict[str, int]:
    missing = [c for c in schema if c not in header]
    if missing:
        raise KuaiRandError(name, f"missing column(s) {', '.join(missing)} (header has: {', '.join(header)})",
                            missing[0])
    return {c: header.index(c) for c in schema}


def _columns_of(name: str, header: list[str], rows: list[list[str]], first_line: int
                ) -> tuple[list[np.ndarray], np.ndarray]:
    """Transpose ``rows`` into text columns; also return each kept row's file line (blank lines skipped)."""
    width = len(header)
    lines = np.arange(first_line, first_line + len(rows), dtype=np.int64)
    if any(not r for r in rows):
        keep = [i for i, r in enumerate(rows) if r]
        rows, lines = [rows[i] for i in keep], lines[keep]
    bad = [i for i, r in enumerate(rows) if len(r) != width]
    if bad:
        i = bad[0]
        raise KuaiRandError(name, f"{len(rows[i])} fields, expected {width} (as in the header)", line=int(lines[i]))
    if not rows:
        return [np.array([], str)] * width, lines
    return [np.array(c, dtype=str) for c in zip(*rows, strict=True)], lines


# ----------------------------------------------------------------------------------------------
# Interaction logs
# ----------------------------------------------------------------------------------------------
@dataclass
class LogTable:
    """Interaction log rows as numpy columns (``n`` rows).

    ``flags (n, 8)`` uint8 holds the behaviours in ``BEHAVIOUR_COLUMNS`` order (that is
    ``rlur.sim.world.BEHAVIOURS``). ``file (n,)`` indexes ``files``; ``line (n,)`` is the CSV line.
    """

    user_id: np.ndarray
    video_id: np.ndarray
    date: np.ndarray
    hourmin: np.ndarray
    time_ms: np.ndarray
    flags: np.ndarray
    play_time_ms: np.ndarray
    duration_ms: np.ndarray
    file: np.ndarray
    line: np.ndarray
    files: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.user_id)

    def take(self, idx: np.ndarray) -> LogTable:
        """The rows ``idx`` (an index or boolean mask), as a new table."""
        return LogTable(
            **{k: getattr(self, k)[idx] for k in ("user_id", "video_id", "date", "hourmin", "time_ms", "flags",
                                                    "play_time_ms", "duration_ms", "file", "line")},
            files=list(self.files),
        )

    @staticmethod
    def concat(tables: list[LogTable]) -> LogTable:
        files: list[str] = []
        parts: dict[str, list[np.ndarray]] = {}
        for t in tables:
            offset = len(files)
            files += t.files
            for k in ("user_id", "video_id", "date", "hourmin", "time_ms", "flags", "play_time_ms", "duration_ms",
                      "line"):
                parts.setdefault(k, []).append(getattr(t, k))
            parts.setdefault("file", []).append(t.file + offset)
        return LogTable(**{k: np.concatenate(v) for k, v in parts.items()}, files=files)


def read_log(path: str | Path, progress: bool = False, chunk_rows: int = _CHUNK_ROWS) -> LogTable:
    """Read one interaction log in chunks, checking every column's type."""
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    cols: dict[str, list[np.ndarray]] = {c: [] for c in LOG_COLUMNS}
    lines: list[np.ndarray] = []
    total = path.stat().st_size
    bar = tqdm(total=total, desc=f"reading {name}", unit="B", unit_scale=True, disable=not progress, leave=False)
    index: dict[str, int] | None = None
    for header, rows, first, nbytes in _read_rows(path, chunk_rows):
        if index is None:
            index = _check_header(name, header, LOG_COLUMNS)
        raw, ln = _columns_of(name, header, rows, first)
        for c, kind in LOG_COLUMNS.items():
            v = raw[index[c]]
            if kind == "int":
                cols[c].append(_parse_int(v, name, c, ln))
            elif kind == "flag":
                cols[c].append(_parse_flag(v, name, c, ln))
            else:
                cols[c].append(_parse_float(v, name, c, ln, allow_missing=True).astype(np.float32))
        lines.append(ln)
        bar.update(min(nbytes, total) - bar.n)
    bar.close()
    if index is None:
        raise KuaiRandError(name, "the file is empty (no header line)")
    cat = {c: (np.concatenate(v) if v else np.array([], np.int64)) for c, v in cols.items()}
    n = len(cat["user_id"])
    date = cat["date"]
    bad = (date < 19700101) | (date > 21001231) | (date % 100 < 1) | (date % 100 > 31) | \
          (date // 100 % 100 < 1) | (date // 100 % 100 > 12)
    ln_all = np.concatenate(lines) if lines else np.array([], np.int64)
    if bad.any():
        i = int(np.argmax(bad))
        raise KuaiRandError(name, f"wrong value: expected a date YYYYMMDD, got {date[i]}", "date", int(ln_all[i]))
    for c in ("play_time_ms", "duration_ms"):
        neg = cat[c] < 0
        if neg.any():
            i = int(np.argmax(neg))
            raise KuaiRandError(name, f"negative value {cat[c][i]}", c, int(ln_all[i]))
    flags = np.stack([cat[c] for c in BEHAVIOUR_COLUMNS], axis=1) if n else np.zeros((0, 8), np.uint8)
    return LogTable(
        user_id=cat["user_id"], video_id=cat["video_id"], date=date.astype(np.int32),
        hourmin=cat["hourmin"].astype(np.int32), time_ms=cat["time_ms"], flags=flags,
        play_time_ms=cat["play_time_ms"], duration_ms=cat["duration_ms"],
        file=np.zeros(n, np.int16), line=ln_all, files=[name],
    )


# ----------------------------------------------------------------------------------------------
# Feature tables
# ----------------------------------------------------------------------------------------------
@dataclass
class FeatureTable:
    """A feature file: ``ids (n,)`` int64 (row order) and typed ``columns``.

    Column arrays: ``str`` and ``cat?`` → object arrays of text ("" = missing); ``flag`` and
    ``streamer`` → uint8 0/1; ``num?`` → float64 (NaN = missing); ``date?`` → ``datetime64[D]``
    (NaT = missing); ``tags?`` → object array of tuples of ints (empty = missing).
    """

    name: str
    ids: np.ndarray
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.ids)


def _parse_dates(v: np.ndarray, name: str, c: str, ln: np.ndarray) -> np.ndarray:
    s = np.char.strip(v.astype(str))
    d = np.full(len(s), np.datetime64("NaT"), dtype="datetime64[D]")
    for i, t in enumerate(s.tolist()):
        if t:
            try:
                d[i] = np.datetime64(t[:10], "D")
            except ValueError:
                raise KuaiRandError(name, f"wrong type: expected a date YYYY-MM-DD, got {t!r}", c, int(ln[i])) from None
    return d


def _parse_tags(v: np.ndarray, name: str, c: str, ln: np.ndarray) -> np.ndarray:
    tags = np.empty(len(v), dtype=object)
    for i, t in enumerate(v.tolist()):
        parts = [p.strip() for p in t.split(",") if p.strip()]
        try:
            tags[i] = tuple(int(float(p)) for p in parts)
        except ValueError:
            raise KuaiRandError(name, f"wrong type: expected comma-separated tag ids, got {t!r}", c,
                                int(ln[i])) from None
    return tags


def _parse_streamer(v: np.ndarray, name: str, c: str, ln: np.ndarray) -> np.ndarray:
    x = _parse_int(v, name, c, ln)
    bad = ~np.isin(x, (1, 0, -124))
    if bad.any():
        i = int(np.argmax(bad))
        raise KuaiRandError(name, f"wrong value: expected 1 or -124 (no), got {v[i]!r}", c, int(ln[i]))
    return (x == 1).astype(np.uint8)


def _parse_ids(v: np.ndarray, name: str, c: str, ln: np.ndarray) -> np.ndarray:
    ids = _parse_int(v, name, c, ln)
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1][0]
        where = np.nonzero(ids == dup)[0]
        raise KuaiRandError(name, f"duplicate id {dup} (lines {', '.join(str(ln[i]) for i in where[:3])})", c,
                            int(ln[where[1]]))
    return ids


_PARSERS = {
    "id": _parse_ids,
    "str": lambda v, name, c, ln: np.array([s.strip() for s in v.tolist()], dtype=object),
    "flag": _parse_flag,
    "streamer": _parse_streamer,
    "num?": lambda v, name, c, ln: _parse_float(v, name, c, ln, allow_missing=True),
    "cat?": _norm_category,
    "date?": _parse_dates,
    "tags?": _parse_tags,
}


def read_feature_table(path: str | Path, schema: dict[str, str]) -> FeatureTable:
    """Read a user or video feature file against ``schema`` (``USER_COLUMNS`` or ``VIDEO_COLUMNS``)."""
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    chunks = list(_read_rows(path, 10**9))
    if not chunks:
        raise KuaiRandError(name, "no rows after the header")
    header, rows, first, _ = chunks[0]
    index = _check_header(name, header, schema)
    raw, ln = _columns_of(name, header, rows, first)
    if len(ln) == 0:
        raise KuaiRandError(name, "no rows after the header")
    cols = {c: _PARSERS[kind](raw[index[c]], name, c, ln) for c, kind in schema.items()}
    id_col = next(c for c, kind in schema.items() if kind == "id")
    ids = cols.pop(id_col)
    return FeatureTable(name=name, ids=ids, columns=cols)


# ----------------------------------------------------------------------------------------------
# Whole data set
# ----------------------------------------------------------------------------------------------
@dataclass
class KuaiRandData:
    """Validated KuaiRand-Pure: logs (possibly empty with ``features_only``) and both feature tables."""

    users: FeatureTable
    videos: FeatureTable
    logs: LogTable
    data_dir: Path
    log_files: list[str]
    notes: list[str] = field(default_factory=list)


def _check_ids(logs: LogTable, column: str, known: np.ndarray, table: str) -> None:
    values = logs.user_id if column == "user_id" else logs.video_id
    unknown = ~np.isin(values, known)
    if unknown.any():
        i = int(np.argmax(unknown))
        n = int(unknown.sum())
        raise KuaiRandError(
            logs.files[logs.file[i]], f"{n} row(s) with an id missing from {table}, first {values[i]}", column,
            int(logs.line[i]),
        )


def _dedupe(logs: LogTable, drop: bool, notes: list[str]) -> LogTable:
    order = np.lexsort((logs.time_ms, logs.video_id, logs.user_id))
    u, v, t = logs.user_id[order], logs.video_id[order], logs.time_ms[order]
    same = (u[1:] == u[:-1]) & (v[1:] == v[:-1]) & (t[1:] == t[:-1])
    if not same.any():
        return logs
    n = int(same.sum())
    j = int(np.argmax(same))
    a, b = order[j], order[j + 1]
    if not drop:
        raise KuaiRandError(
            logs.files[logs.file[b]],
            f"{n} duplicate row(s) (same user_id, video_id, time_ms), first user {u[j]} video {v[j]} at "
            f"time_ms {t[j]} (also {logs.files[logs.file[a]]} line {logs.line[a]}); pass --drop-duplicates "
            "to keep the first of each", "time_ms", int(logs.line[b]),
        )
    keep = np.ones(len(logs), bool)
    keep[order[1:][same]] = False
    notes.append(f"dropped {n} duplicate row(s) (same user_id, video_id, time_ms)")
    return logs.take(keep)


def _subsample_users(logs: LogTable, max_rows: int, seed: int, notes: list[str]) -> LogTable:
    if len(logs) <= max_rows:
        return logs
    users, counts = np.unique(logs.user_id, return_counts=True)
    perm = np.random.default_rng(seed).permutation(len(users))
    cum = np.cumsum(counts[perm])
    keep_users = users[perm[: max(1, int(np.searchsorted(cum, max_rows, side="right")))]]
    mask = np.isin(logs.user_id, keep_users)
    notes.append(f"--max-rows {max_rows}: kept {int(mask.sum())} rows of {len(keep_users)} random users "
                 f"(of {len(users)}), with their complete histories")
    return logs.take(mask)


def load_kuairand(
    path: str | Path, *, include_random: bool = False, drop_duplicates: bool = False, max_rows: int | None = None,
    seed: int = 0, features_only: bool = False, progress: bool = False,
) -> KuaiRandData:
    """Load and validate KuaiRand-Pure from ``path`` (see :func:`resolve_data_dir`).

    Reads both standard logs (and the random-exposure log with ``include_random``) and both feature
    files; checks column types, duplicate impressions (same ``user_id, video_id, time_ms``) and ids
    unknown to the feature files. ``max_rows`` keeps a random subset of users (whole histories)
    holding at most that many rows.
    """
    d = resolve_data_dir(path)
    for f in (USER_FILE, VIDEO_FILE):
        if not (d / f).is_file():
            raise FileNotFoundError(f"{d / f} does not exist (a KuaiRand-Pure folder needs {USER_FILE} and "
                                    f"{VIDEO_FILE})")
    users = read_feature_table(d / USER_FILE, USER_COLUMNS)
    videos = read_feature_table(d / VIDEO_FILE, VIDEO_COLUMNS)
    notes: list[str] = []
    files = [] if features_only else list(STANDARD_LOG_FILES) + ([RANDOM_LOG_FILE] if include_random else [])
    for f in files:
        if not (d / f).is_file():
            raise FileNotFoundError(f"{d / f} does not exist (KuaiRand-Pure needs {' and '.join(STANDARD_LOG_FILES)})")
    if files:
        logs = LogTable.concat([read_log(d / f, progress=progress) for f in files])
        _check_ids(logs, "user_id", users.ids, USER_FILE)
        _check_ids(logs, "video_id", videos.ids, VIDEO_FILE)
        logs = _dedupe(logs, drop_duplicates, notes)
        if max_rows is not None:
            logs = _subsample_users(logs, max_rows, seed, notes)
        if len(logs) == 0:
            raise KuaiRandError(files[0], "the logs hold no rows")
    else:
        e = np.array([], np.int64)
        logs = LogTable(e, e, e.astype(np.int32), e.astype(np.int32), e, np.zeros((0, 8), np.uint8),
                        e.astype(np.float32), e.astype(np.float32), e.astype(np.int16), e, files=[])
    return KuaiRandData(users=users, videos=videos, logs=logs, data_dir=d, log_files=files, notes=notes)


def summarize_features(users: FeatureTable, videos: FeatureTable) -> dict:
    """Counts a person can check against the published statistics (JSON-ready)."""
    deg, cnt = np.unique(users.columns["user_active_degree"].astype(str), return_counts=True)
    dur = videos.columns["video_duration"]
    vt, vtc = np.unique(videos.columns["video_type"].astype(str), return_counts=True)
    tags = videos.columns["tag"]
    all_tags = sorted({t for ts in tags for t in ts})
    return {
        "users": len(users),
        "user_active_degree": {str(k): int(v) for k, v in sorted(zip(deg, cnt, strict=True), key=lambda x: -x[1])},
        "is_live_streamer_yes": int(users.columns["is_live_streamer"].sum()),
        "missing_onehot_feat": {c: int((users.columns[c] == "").sum()) for c in USER_COLUMNS
                                if c.startswith("onehot") and (users.columns[c] == "").any()},
        "videos": len(videos),
        "video_type": {str(k): int(v) for k, v in zip(vt, vtc, strict=True)},
        "video_duration_missing": int(np.isnan(dur).sum()),
        "video_duration_median_s": float(np.nanmedian(dur) / 1000) if np.isfinite(dur).any() else float("nan"),
        "tag_missing": int(sum(1 for t in tags if not t)),
        "distinct_tags": len(all_tags),
        "music_type_missing": int((videos.columns["music_type"] == "").sum()),
    }
