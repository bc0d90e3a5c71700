"""Logged transitions as a replay :class:`~rlur.training.buffer.Batch`: what ``rlur train --from-log`` reads.

A ``rlur live`` run directory holds the event log (``events.sqlite``: every served request with its
state, action and the serving version's μ_b, σ_b and log p_b) and the joiner's database
(``joiner.sqlite``: one transition per request, joined, censored or closed). :func:`read_logged_batch`
turns the trainable ones (joined or censored; never closed) into one batch, with the rewards and
behaviour densities exactly as the continuous trainer builds them (:func:`rlur.live.trainer.build_batch`).
:func:`read_logged` adds who and when (user id, request sequence number, simulated time, arm) to each
row, so that each user's episode can be rebuilt (``rlur data export``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rlur.live.events import SqliteEventLog, connect
from rlur.live.joiner import CLOSED, read_transitions
from rlur.live.trainer import build_batch
from rlur.training.buffer import Batch

__all__ = ["ARMS", "LoggedRows", "read_logged", "read_logged_batch"]

#: ``arms`` choices: every arm's traffic, or one arm's (the arm codes of the event log).
ARMS = {"all": None, "control": 0, "treatment": 1}


@dataclass
class LoggedRows:
    """The trainable transitions of a live run (N rows, the joiner's order) and who served them when."""

    batch: Batch
    user_id: np.ndarray
    """``(N,)`` int64: the user of each request."""
    request_seq: np.ndarray
    """``(N,)`` int64: the request's sequence number in the event log (a user's requests are in this order)."""
    ts: np.ndarray
    """``(N,)`` int64: simulated seconds since the run's start when the request was served."""
    arm: np.ndarray
    """``(N,)`` int64: the A/B arm (0 control, 1 treatment)."""
    has_next: np.ndarray
    """``(N,)`` bool: ``s'`` is the user's next request; False where ``s' = s`` (a censored session end)."""
    config: dict
    """The run's ``config.json``."""


def read_logged_batch(run_dir: str | Path, arms: str = "all", chunk: int = 50_000) -> Batch:
    """All trainable transitions of the live run in ``run_dir`` (in the joiner's order) as one batch.

    Raises ``FileNotFoundError`` when ``run_dir`` is not a joined live run, ``ValueError`` when it holds
    no trainable transition (e.g. the joiner has not run yet).
    """
    return read_logged(run_dir, arms, chunk).batch


def read_logged(run_dir: str | Path, arms: str = "all", chunk: int = 50_000) -> LoggedRows:
    """:func:`read_logged_batch` with each row's user id, request sequence number, time, arm and next request."""
    run = Path(run_dir)
    events, joined, config = run / "events.sqlite", run / "joiner.sqlite", run / "config.json"
    for path, what in ((events, "an event log"), (joined, "joined transitions"), (config, "config.json")):
        if not path.is_file():
            raise FileNotFoundError(
                f"{run} has no {path.name} ({what}): expected an `rlur live` run directory whose "
                "joiner has run (see docs/live.md)")
    if arms not in ARMS:
        raise ValueError(f"arms must be one of {', '.join(ARMS)}, got {arms!r}")
    cfg = json.loads(config.read_text())
    horizon = int(cfg["horizon_days_resolved"])
    log, conn = SqliteEventLog(events, readonly=True), connect(joined, readonly=True)
    n_feedback = int(log.meta()["n_feedback"])
    parts: list[Batch] = []
    ids: list[tuple[np.ndarray, ...]] = []
    try:
        after = 0
        while True:
            rows = read_transitions(conn, after, chunk, n_feedback)
            if not len(rows):
                break
            users = _user_ids(conn, after, int(rows.tseq[-1]))
            after = int(rows.tseq[-1])
            keep = rows.censored != CLOSED
            if ARMS[arms] is not None:
                keep &= rows.arm == ARMS[arms]
            if keep.any():
                parts.append(build_batch(rows.subset(keep), log, horizon))
                ids.append((users[keep], rows.request_seq[keep], rows.ts[keep], rows.arm[keep],
                            rows.next_seq[keep] >= 0))
    finally:
        conn.close()
        log.close()
    if not parts:
        raise ValueError(f"{run} holds no trainable transition for arms={arms!r} (has the joiner run?)")
    batch = Batch(**{name: torch.cat([getattr(p, name) for p in parts]) for name in parts[0].to_dict()})
    user_id, request_seq, ts, arm, has_next = (np.concatenate(c) for c in zip(*ids, strict=True))
    return LoggedRows(batch, user_id, request_seq, ts, arm, has_next, cfg)


def _user_ids(conn, after: int, last: int) -> np.ndarray:
    """The user of each transition with ``after < tseq ≤ last``, in ``tseq`` order (read_transitions' rows)."""
    rows = conn.execute("SELECT user_id FROM transitions WHERE tseq > ? AND tseq <= ? ORDER BY tseq",
                        (after, last)).fetchall()
    return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
