"""``rlur benchmark --backend ray``: every (row, seed) run of the grid is one Ray task.

A task trains and evaluates one run exactly as the local process pool does (same function, one
torch thread), so the per-seed numbers are the same. Results stream back in completion order. A
task whose worker process dies is retried (``max_retries``); a task that raises is reported as a
:class:`RunFailure` while the other runs go on, and their run directories stay on disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rlur.distributed import require_ray
from rlur.distributed.backend import as_finished
from rlur.distributed.shards import crash_once

__all__ = ["MAX_RETRIES", "RunFailure", "run_grid"]

#: Reruns of a run whose worker process died (a crash, a killed or pre-empted node).
MAX_RETRIES = 2


@dataclass
class RunFailure:
    """A run that could not finish: its row, seed and a one-line reason."""

    row: str
    seed: int
    error: str


def _train_task(row: str, seed: int, cfg: Any, out: str, crash_marker: str | None = None) -> dict[str, Any]:
    crash_once(crash_marker)
    from rlur.evaluation.benchmark import _train_one

    return _train_one(row, seed, cfg, out)


def _reason(err: BaseException) -> str:
    cause = getattr(err, "cause", None)
    text = str(cause if cause is not None else err).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else type(err).__name__


def run_grid(jobs: list[tuple[str, int]], cfg: Any, out: str, max_retries: int = MAX_RETRIES,
             crash_marker: str | None = None) -> Iterator[dict[str, Any] | RunFailure]:
    """Submit every ``(row, seed)`` as a task and yield each result (or failure) as it finishes."""
    ray = require_ray()
    task = ray.remote(num_cpus=1, max_retries=max_retries)(_train_task)
    refs = {task.remote(row, seed, cfg, out, crash_marker): (row, seed) for row, seed in jobs}
    for ref in as_finished(refs):
        try:
            yield ray.get(ref)
        except ray.exceptions.RayError as err:
            row, seed = refs[ref]
            yield RunFailure(row, seed, _reason(err))
