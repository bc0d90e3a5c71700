"""Encoding of the user and video feature tables into dense model inputs.

A table is stored compactly as integer category codes plus standardised numeric columns
(:class:`EncodedTable`); :meth:`EncodedTable.dense` expands it to one-hots for the models. The
encoding (vocabularies, means, standard deviations) is fitted once and saved in ``world.pt``.

* Category vocabularies keep the most frequent values (at most ``max_vocab``, each seen at least
  ``min_count`` times); code 0 is "missing", code 1 is "other".
* Counts (``follow_user_num`` …) enter as standardised ``log1p``; missing numbers become the mean.
* Videos: standardised log duration (seconds), a duration-missing flag, log aspect ratio, age at the
  first log day, and a multi-hot of the tags (missing tag → the ``tag_missing`` column).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from rlur.data.kuairand import USER_COLUMNS, FeatureTable

__all__ = ["EncodedTable", "TableEncoding", "encode_users", "encode_videos", "primary_tags", "tag_vocabulary"]

#: User columns encoded as categories (every column but the id and the four raw counts).
USER_CATEGORICAL: tuple[str, ...] = tuple(
    c for c, kind in USER_COLUMNS.items() if kind in ("str", "flag", "streamer", "cat?")
)
USER_COUNTS: tuple[str, ...] = ("follow_user_num", "fans_user_num", "friend_user_num", "register_days")
VIDEO_CATEGORICAL: tuple[str, ...] = ("video_type", "upload_type", "visible_status", "music_type")


@dataclass
class TableEncoding:
    """Fitted vocabularies and numeric scalings of one table (JSON/pickle-safe)."""

    categorical: list[tuple[str, list[str]]] = field(default_factory=list)
    numeric: list[tuple[str, float, float]] = field(default_factory=list)

    @property
    def sizes(self) -> list[int]:
        return [len(v) + 2 for _, v in self.categorical]

    @property
    def dim(self) -> int:
        return sum(self.sizes) + len(self.numeric)

    def to_dict(self) -> dict:
        return {"categorical": [[n, list(v)] for n, v in self.categorical],
                "numeric": [[n, float(m), float(s)] for n, m, s in self.numeric]}

    @classmethod
    def from_dict(cls, d: dict) -> TableEncoding:
        return cls([(n, list(v)) for n, v in d["categorical"]], [(n, float(m), float(s)) for n, m, s in d["numeric"]])

    # ------------------------------------------------------------------------------------------
    def codes(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        """Category codes ``(n, n_categorical)`` int16 (0 missing, 1 other, 2 + vocabulary index)."""
        out = []
        for name, vocab in self.categorical:
            values = np.asarray(columns[name]).astype(str)
            lookup = {v: i + 2 for i, v in enumerate(vocab)}
            out.append(np.array([0 if v == "" else lookup.get(v, 1) for v in values.tolist()], np.int16))
        return np.stack(out, axis=1) if out else np.zeros((0, 0), np.int16)

    def scaled(self, raw: dict[str, np.ndarray]) -> np.ndarray:
        """Standardised numeric columns ``(n, n_numeric)`` float32 (missing → 0, the mean)."""
        cols = [np.nan_to_num((np.asarray(raw[n], np.float64) - m) / s, nan=0.0) for n, m, s in self.numeric]
        return np.stack(cols, axis=1).astype(np.float32)


def _vocab(values: np.ndarray, max_vocab: int, min_count: int) -> list[str]:
    v = np.asarray(values).astype(str)
    v = v[v != ""]
    if len(v) == 0:
        return []
    uniq, counts = np.unique(v, return_counts=True)
    order = np.lexsort((uniq, -counts))
    return [str(uniq[i]) for i in order[:max_vocab] if counts[i] >= min_count]


def _scaling(name: str, x: np.ndarray, standardise: bool = True) -> tuple[str, float, float]:
    x = np.asarray(x, np.float64)
    if not standardise:
        return (name, 0.0, 1.0)
    ok = np.isfinite(x)
    if not ok.any():
        return (name, 0.0, 1.0)
    m, s = float(x[ok].mean()), float(x[ok].std())
    return (name, m, s if s > 1e-8 else 1.0)


@dataclass
class EncodedTable:
    """A table as codes + numeric columns, with its :class:`TableEncoding`."""

    encoding: TableEncoding
    codes: np.ndarray
    numeric: np.ndarray

    def __len__(self) -> int:
        return len(self.numeric)

    def dense(self) -> torch.Tensor:
        """``(n, encoding.dim)`` float32: one-hot of each category, then the numeric columns."""
        codes = torch.as_tensor(self.codes.astype(np.int64))
        parts = [torch.nn.functional.one_hot(codes[:, j], size).float()
                 for j, size in enumerate(self.encoding.sizes)]
        parts.append(torch.as_tensor(self.numeric, dtype=torch.float32))
        return torch.cat(parts, dim=1)


def _user_raw_numeric(users: FeatureTable) -> dict[str, np.ndarray]:
    return {c: np.log1p(np.clip(users.columns[c], 0, None)) for c in USER_COUNTS}


def encode_users(users: FeatureTable, encoding: TableEncoding | None = None, max_vocab: int = 20) -> EncodedTable:
    """Encode the user table, fitting the encoding unless one is given."""
    raw = _user_raw_numeric(users)
    if encoding is None:
        min_count = max(2, math.ceil(0.002 * len(users)))
        encoding = TableEncoding(
            [(c, _vocab(users.columns[c], max_vocab, min_count)) for c in USER_CATEGORICAL],
            [_scaling(c, raw[c]) for c in USER_COUNTS],
        )
    return EncodedTable(encoding, encoding.codes(users.columns), encoding.scaled(raw))


def tag_vocabulary(videos: FeatureTable, max_tags: int = 64) -> list[int]:
    """Tag ids by decreasing number of videos (ties by id), at most ``max_tags``."""
    counts: dict[int, int] = {}
    for ts in videos.columns["tag"]:
        for t in ts:
            counts[t] = counts.get(t, 0) + 1
    return [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][:max_tags]


def primary_tags(videos: FeatureTable, vocab: list[int]) -> np.ndarray:
    """Each video's first tag as an index into ``vocab``; ``len(vocab)`` for a missing/unknown tag."""
    lookup = {t: i for i, t in enumerate(vocab)}
    return np.array([lookup.get(ts[0], len(vocab)) if ts else len(vocab) for ts in videos.columns["tag"]], np.int64)


def _video_raw_numeric(videos: FeatureTable, duration_s: np.ndarray, day0: np.datetime64,
                       tags: list[int]) -> dict[str, np.ndarray]:
    w, h = videos.columns["server_width"], videos.columns["server_height"]
    with np.errstate(divide="ignore", invalid="ignore"):
        aspect = np.where((w > 0) & (h > 0), np.log(h / w), np.nan)
    up = videos.columns["upload_dt"]
    age = np.where(np.isnat(up), np.nan, (day0 - up).astype("timedelta64[D]").astype(np.float64))
    raw = {
        "log_duration": np.log(np.clip(duration_s, 1.0, None)),
        "duration_missing": np.isnan(videos.columns["video_duration"]).astype(np.float64),
        "log_aspect": aspect,
        "age_days": age,
    }
    lookup = {t: i for i, t in enumerate(tags)}
    multi = np.zeros((len(videos), len(tags) + 1))
    for i, ts in enumerate(videos.columns["tag"]):
        known = [lookup[t] for t in ts if t in lookup]
        if known:
            multi[i, known] = 1.0
        else:
            multi[i, len(tags)] = 1.0
    for j, t in enumerate(tags):
        raw[f"tag_{t}"] = multi[:, j]
    raw["tag_missing"] = multi[:, len(tags)]
    return raw


def encode_videos(
    videos: FeatureTable, duration_s: np.ndarray, day0: np.datetime64, tags: list[int],
    encoding: TableEncoding | None = None, max_vocab: int = 20,
) -> EncodedTable:
    """Encode the video table (``duration_s``: each video's duration in seconds, already filled)."""
    raw = _video_raw_numeric(videos, duration_s, day0, tags)
    if encoding is None:
        min_count = max(2, math.ceil(0.002 * len(videos)))
        flags = {"duration_missing", "tag_missing"} | {f"tag_{t}" for t in tags}
        encoding = TableEncoding(
            [(c, _vocab(videos.columns[c], max_vocab, min_count)) for c in VIDEO_CATEGORICAL],
            [_scaling(n, x, standardise=n not in flags) for n, x in raw.items()],
        )
    return EncodedTable(encoding, encoding.codes(videos.columns), encoding.scaled(raw))
