"""The joiner and trainer processes: ``python -m rlur.live --role joiner|trainer --out DIR`` (or the same through
``rlur live --role …``). A role reads ``DIR/config.json``, runs until the event log is closed and drained, and
exits 0; SIGTERM makes it stop after its current round. Both are crash-safe: a killed role restarted with the
same command continues where its last commit left off. This module imports only what the role needs (the
joiner needs no torch), so a role starts fast.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

__all__ = ["ROLES", "run_role"]

ROLES = ("joiner", "trainer")


def _config(out: Path) -> dict:
    path = out / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: start the run with `rlur live --out {out}` first")
    return json.loads(path.read_text())


def run_role(role: str, out: str | Path) -> int:
    """Run ``role`` on the run directory ``out`` until the log is closed and everything is consumed."""
    from rlur.live.events import SqliteEventLog

    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    out = Path(out)
    raw = _config(out)
    k = int(raw["horizon_days_resolved"])
    log = SqliteEventLog(out / "events.sqlite", readonly=True)
    try:
        if role == "joiner":
            from rlur.live.joiner import LabelJoiner

            joiner = LabelJoiner(log, out / "joiner.sqlite", horizon_days=k, batch_events=int(raw["joiner_batch"]))
            try:
                joiner.run()
            finally:
                joiner.close()
        else:
            import torch

            from rlur.live.trainer import ContinuousTrainer, TrainerConfig

            torch.set_num_threads(1)
            _wait_for(out / "joiner.sqlite")
            trainer = ContinuousTrainer(out, log, out / "joiner.sqlite", TrainerConfig.from_dict(raw["trainer"]), k)
            try:
                trainer.run()
            finally:
                trainer.close()
    finally:
        log.close()
    return 0


def _wait_for(path: Path, timeout: float = 120.0) -> None:
    """The trainer starts with the joiner: wait until the joiner has created its tables."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            try:
                conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
                try:
                    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'transitions'").fetchone():
                        return
                finally:
                    conn.close()
            except sqlite3.Error:
                pass
        time.sleep(0.05)
    raise TimeoutError(f"{path} did not appear within {timeout} s (is the joiner running?)")
