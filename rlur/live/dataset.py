"""Logged transitions as a replay :class:`~rlur.training.buffer.Batch`: what ``rlur train --from-log`` reads.

A ``rlur live`` run directory holds the event log (``events.sqlite``: every served request with its
state, action and the serving version's μ_b, σ_b and log p_b) and the joiner's database
(``joiner.sqlite``: one transition per request, joined, censored or closed). :func:`read_logged_batch`
turns the trainable ones (joined or censored; never closed) into one batch, with the rewards and
behaviour densities exactly as the continuous trainer builds them (:func:`rlur.live.trainer.build_batch`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rlur.live.events import SqliteEventLog, connect
from rlur.live.joiner import CLOSED, read_transitions
from rlur.live.trainer import build_batch
from rlur.training.buffer import Batch

__all__ = ["ARMS", "read_logged_batch"]

#: ``arms`` choices: every arm's traffic, or one arm's (the arm codes of the event log).
ARMS = {"all": None, "control": 0, "treatment": 1}


def read_logged_batch(run_dir: str | Path, arms: str = "all", chunk: int = 50_000) -> Batch:
    """All trainable transitions of the live run in ``run_dir`` (in the joiner's order) as one batch.

    Raises ``FileNotFoundError`` when ``run_dir`` is not a joined live run, ``ValueError`` when it holds
    no trainable transition (e.g. the joiner has not run yet).
    """
    run = Path(run_dir)
    events, joined, config = run / "events.sqlite", run / "joiner.sqlite", run / "config.json"
    for path, what in ((events, "an event log"), (joined, "joined transitions"), (config, "config.json")):
        if not path.is_file():
            raise FileNotFoundError(
                f"{run} has no {path.name} ({what}): --from-log reads an `rlur live` run directory whose "
                "joiner has run (see docs/live.md)")
    if arms not in ARMS:
        raise ValueError(f"arms must be one of {', '.join(ARMS)}, got {arms!r}")
    horizon = int(json.loads(config.read_text())["horizon_days_resolved"])
    log, conn = SqliteEventLog(events, readonly=True), connect(joined, readonly=True)
    n_feedback = int(log.meta()["n_feedback"])
    parts: list[Batch] = []
    try:
        after = 0
        while True:
            rows = read_transitions(conn, after, chunk, n_feedback)
            if not len(rows):
                break
            after = int(rows.tseq[-1])
            keep = rows.censored != CLOSED
            if ARMS[arms] is not None:
                keep &= rows.arm == ARMS[arms]
            if keep.any():
                parts.append(build_batch(rows.subset(keep), log, horizon))
    finally:
        conn.close()
        log.close()
    if not parts:
        raise ValueError(f"{run} holds no trainable transition for arms={arms!r} (has the joiner run?)")
    return Batch(**{name: torch.cat([getattr(p, name) for p in parts]) for name in parts[0].to_dict()})
