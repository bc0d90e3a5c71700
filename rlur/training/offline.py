"""Training from logged transitions (``rlur train --from-log``): the paper's offline set-up on our own logs.

:class:`LoggedTransitions` plugs into :class:`~rlur.training.loop.Trainer` where the environment
would step: at the start it fills the learner's replay buffer with the logged transitions (the last
``buffer_capacity`` of them when there are more) and feeds their returning times to the agent's
running statistics; each "step" is then ``updates_per_step`` gradient updates on batches sampled
from that fixed buffer, with no new data. The soft regularisation uses the logged behaviour
log-probabilities, i.e. those of the versions that really served each request.

Evaluations and checkpoints are the trainer's usual ones: the policy is evaluated on held-out users
of the simulator (the world of ``--world-seed``/``--world``, which should be the one the log came
from when it came from ``rlur live``).
"""

from __future__ import annotations

from typing import Any

from rlur.training.buffer import Batch

__all__ = ["LoggedTransitions"]


class LoggedTransitions:
    """A trainer data source that replays a fixed set of logged transitions (no environment steps)."""

    def __init__(self, batch: Batch, source: str) -> None:
        self.batch, self.source = batch, source

    def start(self, trainer: Any) -> None:
        learner = trainer.learner
        if not hasattr(learner, "buffer"):
            raise ValueError(f"--from-log trains off-policy learners (rlur, rlur-naive, td3), not {trainer.cfg.algo}")
        buffer, b = learner.buffer, self.batch
        if b.obs.shape[1] != buffer.data["obs"].shape[1] or b.action.shape[1] != buffer.data["action"].shape[1]:
            raise ValueError(f"{self.source}: logged states/actions are {b.obs.shape[1]}/{b.action.shape[1]}-"
                             f"dimensional, the learner's {buffer.data['obs'].shape[1]}/"
                             f"{buffer.data['action'].shape[1]}")
        # (Trainer.resume, called after this, replaces the buffer and the statistics with the saved ones.)
        for lo in range(max(0, len(b) - buffer.capacity), len(b), buffer.capacity):
            hi = min(lo + buffer.capacity, len(b))
            buffer.add(Batch(**{name: v[lo:hi] for name, v in b.to_dict().items()}))
        learner.agent.observe_returns(b.return_time[b.session_end])
        learner.agent.set_exploration(trainer.cfg.explore_std_end)

    def describe(self) -> dict[str, int | str]:
        return {"from_log": self.source, "transitions": len(self.batch)}

    def collect(self, learner: Any, limit: int) -> tuple[int, dict[str, float]]:
        """``limit`` steps of ``updates_per_step`` updates each."""
        stats: dict[str, float] = {}
        for _ in range(limit * learner.cfg.updates_per_step):
            stats = learner.agent.update(learner.buffer.sample(learner.cfg.batch_size, learner.rng), learner.rng)
        learner.step += limit
        return limit, stats

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None

    def close(self) -> None:
        return None
